/*
 * lockrank.h - the lock order, checked.
 *
 * Every core mutex has a rank (the list in internal.h says what each
 * protects).  A thread may take a mutex only while every mutex it holds has
 * a lower rank, so two threads can never wait for each other in a cycle.
 * Debug builds (no NDEBUG) keep a per-thread count of the ranks held and
 * abort with a message on the first violation, which turns a deadlock that
 * needs an unlucky interleaving into a failure on the first run of the
 * offending path (jemalloc's witnesses are the model).  Release builds
 * compile to the plain pthread calls.
 *
 * The fork handlers take every lock at once by design and use the plain
 * calls.
 */
#ifndef TETHER_LOCKRANK_H
#define TETHER_LOCKRANK_H

#include <pthread.h>

enum lock_rank {
    RANK_RT_LIST, /* g_rt_lock */
    RANK_RUNTIME, /* runtime->mutex */
    RANK_INTERP,  /* interp->mutex */
    RANK_GIL,     /* gil->mutex */
    RANK_OBJECT,  /* a thread's sentinel, a lock, an event, a channel, a
                     thread state's sleep cond */
    RANK_PLUGIN,  /* the plugin registry (pluginreg.c) */
    RANK_LEAF,    /* the handle table */
    RANK_FAULT,   /* the fault switches (taken by allocations, also under
                     the handle table's lock) */
    RANK_TRACE,   /* the trace recorder (trace.c): nothing is taken under it */
    RANK__COUNT
};

#ifdef NDEBUG
static inline void rank_lock(pthread_mutex_t *m, enum lock_rank r)
{
    (void)r;
    pthread_mutex_lock(m);
}
static inline void rank_unlock(pthread_mutex_t *m, enum lock_rank r)
{
    (void)r;
    pthread_mutex_unlock(m);
}
#else
/* Aborts if the calling thread holds a lock of rank >= r, then counts r. */
void rank_check_take(enum lock_rank r);
void rank_note_give(enum lock_rank r);
static inline void rank_lock(pthread_mutex_t *m, enum lock_rank r)
{
    rank_check_take(r);
    pthread_mutex_lock(m);
}
static inline void rank_unlock(pthread_mutex_t *m, enum lock_rank r)
{
    pthread_mutex_unlock(m);
    rank_note_give(r);
}
#endif

#endif
