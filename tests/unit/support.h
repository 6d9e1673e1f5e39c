/*
 * support.h - helpers shared by the unit and stress suites.
 *
 * Each helper asserts its own calls, so a case reads as the behaviour it
 * checks: rt = t_runtime(NULL); t = t_start(interp, fn, arg); t_join(t).
 * Every suite in C (unit, interp, stress, reliability, plugin, delay, abi)
 * links it: a fixture two suites need lives here, not in either.
 */
#ifndef TETHER_TEST_SUPPORT_H
#define TETHER_TEST_SUPPORT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <tether/tether.h>

#include "runner.h"

#define MS(n) ((int64_t)(n) * 1000000)
#define SECONDS(n) ((int64_t)(n) * 1000000000)

/* What an out-parameter is set to before a call that must fail: tether
   writes out-parameters only on success, so it must still hold this after
   the call (ASSERT_EQ(out, UNTOUCHED)). */
#define UNTOUCHED 0x5e5e5e5eu

/* `expr` fails with `want` and leaves a last-error sentence naming `func`. */
#define ASSERT_FAILS(expr, want, func)                                        \
    do {                                                                      \
        ASSERT_STATUS((expr), (want));                                        \
        ASSERT_CONTAINS(tether_last_error(), (func));                         \
    } while (0)

/* A runtime with `cfg` (NULL = defaults); the caller holds its GIL. */
tether_runtime t_runtime(const tether_config *cfg);
/* The same, with its main interpreter in *main_interp: the usual start of
   a case, rt = t_runtime_main(NULL, &g_interp). */
tether_runtime t_runtime_main(const tether_config *cfg, tether_interp *main_interp);
/* A runtime made on a helper thread, which leaves it: the calling thread
   is not attached to it.  *main_interp (may be NULL) gets its main
   interpreter. */
tether_runtime t_runtime_elsewhere(tether_interp *main_interp);
/* The configuration of a runtime whose interpreters each have their own
   GIL (TETHER_CONFIG_PER_INTERP_GIL, the rest defaults). */
extern const tether_config t_per_interp_gil;
/* A runtime whose switch interval is `us` microseconds. */
tether_runtime t_runtime_interval(uint32_t us);
tether_interp t_main_interp(tether_runtime rt);
/* Finalizes `rt`, which must succeed within 30 s. */
void t_finalize(tether_runtime rt);

/* Starts fn(arg) in `interp` (opts may be NULL). */
tether_thread t_start_opts(tether_interp interp, tether_thread_fn fn, void *arg,
                           const tether_thread_opts *opts);
tether_thread t_start(tether_interp interp, tether_thread_fn fn, void *arg);
tether_thread t_start_daemon(tether_interp interp, tether_thread_fn fn, void *arg);
/* Joins without a timeout, returns the thread's result, releases `t`. */
int t_join(tether_thread t);

/* Live threads of `interp` (thread_list's count). */
size_t t_thread_count(tether_interp interp);
/* tether_gil_stats_get, asserted. */
tether_gil_stats t_gil_stats(tether_interp interp);

/* A thread function returning its argument: t_start(interp, t_return_arg,
   RESULT(TETHER_EXIT)).  NULL gives TETHER_OK. */
int t_return_arg(void *arg);
#define RESULT(status) ((void *)(intptr_t)(status))

/* The monotonic clock, for lower bounds only: a wait never returns before
   its timeout. */
int64_t t_now_ns(void);

/* Plain pthreads, the kind a host or plugin makes. */
pthread_t t_pthread(void *(*fn)(void *), void *arg);
void t_pthread_join(pthread_t th);
/* Joins the `n` pthreads of `th`, with the caller's GIL released meanwhile
   if it holds one (they may need it), and taken back afterwards. */
void t_join_foreign(const pthread_t *th, int n);
/* Runs fn(arg) on a new pthread and waits for it, with the caller's GIL
   released meanwhile if it holds one. */
void t_run_foreign(void *(*fn)(void *), void *arg);
/* A case on a foreign thread: makes a default runtime, stores its main
   interpreter in *main_interp (fn reaches it there), runs fn(arg) on a new
   pthread with the GIL released, and finalizes the runtime. */
void t_foreign_case(tether_interp *main_interp, void *(*fn)(void *), void *arg);

/* A counting semaphore made of a pthread mutex and condvar, for handshakes
   that must not involve tether itself (e.g. after finalize). */
typedef struct t_sem {
    pthread_mutex_t mu; /* protects count */
    pthread_cond_t cv;
    unsigned count;
} t_sem;
void t_sem_init(t_sem *s);
void t_sem_destroy(t_sem *s);
void t_sem_post(t_sem *s);
void t_sem_wait(t_sem *s);

/* Reads everything from `fd` until EOF into a NUL-terminated heap string. */
char *t_read_all(int fd);

/* A payload destructor that counts its calls and remembers the last
   payload it was given. */
extern atomic_int t_dtor_calls;
extern _Atomic(void *) t_dtor_last;
void t_count_dtor(void *payload);

#endif
