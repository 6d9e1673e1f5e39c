/*
 * alloc.c - the replaceable allocator and the fault-injection switches.
 */
#include "alloc.h"
#include "annotate.h"
#include "lockrank.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static void *default_malloc(size_t n, void *ud) { (void)ud; return malloc(n); }
static void default_free(void *p, void *ud) { (void)ud; free(p); }

/* The allocator, and the blocks it made that are still alive.

   The rule (tether.h): the allocator is replaced only while no block made
   with the current one is alive, so every block is freed by the allocator
   that made it.  g_live counts the blocks t_malloc handed out and t_free
   has not taken back; bit 63 (SWAPPING) is set while tether_set_allocator
   writes g_alloc, which it may do only by moving g_live from 0 to
   SWAPPING.  An allocation counts itself in first, waits if the bit was
   set, and only then reads g_alloc; a block's own count keeps g_alloc
   from changing until it is freed.  So g_alloc is written only while no
   thread reads it.  Synchronization: g_alloc through g_live (atomic,
   acquire/release); g_live atomic. */
static tether_allocator g_alloc = {sizeof(tether_allocator), default_malloc,
                                   default_free, NULL};
#define SWAPPING (1ull << 63)
static _Atomic uint64_t g_live;
/* Synchronization: atomic.  Runtimes alive. */
static atomic_int g_runtimes;

/* One fault switch per kind.  `armed` is read without the lock on every
   allocation (Synchronization: atomic); `skip` and `left` are
   Synchronization: g_fault_lock (RANK_FAULT, the innermost lock). */
struct fault {
    atomic_bool armed;
    uint64_t skip;  /* operations that still succeed before the first failure */
    int64_t left;   /* failures still to come; -1 = forever */
};
static struct fault g_faults[3];
static pthread_mutex_t g_fault_lock = PTHREAD_MUTEX_INITIALIZER;

void alloc_atfork_child(void)
{
    pthread_mutex_init(&g_fault_lock, NULL);
}

void alloc_runtime_add(int delta)
{
    ann_atomic(g_runtimes); /* atomics only (helgrind, DRD: annotate.h) */
    atomic_fetch_add(&g_runtimes, delta);
}

int fault_hit(uint32_t what)
{
    struct fault *f = &g_faults[what];
    if (!atomic_load_explicit(&f->armed, memory_order_relaxed))
        return 0;
    int hit = 0;
    rank_lock(&g_fault_lock, RANK_FAULT);
    if (atomic_load_explicit(&f->armed, memory_order_relaxed)) {
        if (f->skip > 0) {
            f->skip--;
        } else {
            hit = 1;
            if (f->left > 0 && --f->left == 0)
                atomic_store(&f->armed, 0);
        }
    }
    rank_unlock(&g_fault_lock, RANK_FAULT);
    return hit;
}

int tether_fault_inject(uint32_t what, uint64_t nth, uint64_t count)
{
    if (what != TETHER_FAULT_ALLOC && what != TETHER_FAULT_THREAD_CREATE)
        return err_set(TETHER_EINVAL, "tether_fault_inject",
                       "unknown fault kind %u", what);
    struct fault *f = &g_faults[what];
    rank_lock(&g_fault_lock, RANK_FAULT);
    f->skip = nth ? nth - 1 : 0;
    f->left = count ? (int64_t)count : -1;
    ann_atomic(f->armed); /* read by every allocation: atomics only */
    atomic_store(&f->armed, nth != 0);
    rank_unlock(&g_fault_lock, RANK_FAULT);
    return TETHER_OK;
}

int tether_set_allocator(const tether_allocator *a)
{
    static const char fn[] = "tether_set_allocator";
    if (a && (a->size < sizeof(tether_allocator) || !a->malloc_fn || !a->free_fn))
        return err_set(TETHER_EINVAL, fn,
                       "the allocator needs size = sizeof(tether_allocator) "
                       "and both functions");
    if (atomic_load(&g_runtimes) != 0)
        return err_set(TETHER_ESTATE, fn,
                       "the allocator can only be replaced while no runtime exists");
    uint64_t zero = 0;
    ann_atomic(g_live); /* atomics only (helgrind, DRD: annotate.h) */
    if (!atomic_compare_exchange_strong_explicit(&g_live, &zero, SWAPPING,
                                                 memory_order_acquire,
                                                 memory_order_relaxed))
        return err_set(TETHER_ESTATE, fn,
                       "%llu block(s) made with the current allocator are "
                       "still alive (locks, events, channels, messages, "
                       "callbacks, thread states of threads that have not "
                       "exited, ...); free them first",
                       (unsigned long long)(zero & ~SWAPPING));
    ann_happens_after(&g_live); /* every free made with the old allocator */
    if (a)
        g_alloc = *a;
    else
        g_alloc = (tether_allocator){sizeof(tether_allocator), default_malloc,
                                     default_free, NULL};
    ann_happens_before(&g_live);
    atomic_fetch_and_explicit(&g_live, ~SWAPPING, memory_order_release);
    return TETHER_OK;
}

void *t_malloc(size_t n)
{
    if (fault_hit(TETHER_FAULT_ALLOC))
        return NULL;
    ann_atomic(g_live); /* atomics only (helgrind, DRD: annotate.h) */
    uint64_t live = atomic_fetch_add_explicit(&g_live, 1, memory_order_acq_rel);
    while (live & SWAPPING) { /* tether_set_allocator is writing g_alloc */
        sched_yield();
        live = atomic_load_explicit(&g_live, memory_order_acquire);
    }
    ann_happens_after(&g_live);
    void *p = g_alloc.malloc_fn(n ? n : 1, g_alloc.ud);
    if (!p)
        atomic_fetch_sub_explicit(&g_live, 1, memory_order_release);
    return p;
}

void *t_calloc(size_t count, size_t n)
{
    if (n && count > SIZE_MAX / n)
        return NULL;
    void *p = t_malloc(count * n);
    if (p)
        memset(p, 0, count * n);
    return p;
}

void t_free(void *p)
{
    if (p) {
        g_alloc.free_fn(p, g_alloc.ud);
        ann_happens_before(&g_live);
        atomic_fetch_sub_explicit(&g_live, 1, memory_order_release);
    }
}

char *t_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = t_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
