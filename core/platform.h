/*
 * platform.h - the thin layer over pthreads and the clock.
 *
 * Everything else in core/ reads without clock_gettime or pthread_attr_*:
 * they live here.  Times are int64_t nanoseconds on CLOCK_MONOTONIC.
 */
#ifndef TETHER_PLATFORM_H
#define TETHER_PLATFORM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Nanoseconds on the monotonic clock. */
int64_t plat_now_ns(void);

/* The absolute deadline for a relative timeout; -1 (forever) stays -1. */
int64_t plat_deadline(int64_t timeout_ns);

/* The calling thread's identifier, the value tether_thread_ident reports. */
uint64_t plat_thread_ident(void);

/* Initialises a condition variable that measures on CLOCK_MONOTONIC. */
void plat_cond_init(pthread_cond_t *c);

/* Waits on `c` until signalled or the absolute monotonic `deadline_ns`
   (-1 = no deadline).  Returns 1 if the deadline has passed. */
int plat_cond_wait(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline_ns);

/* Starts an OS thread; honours TETHER_FAULT_THREAD_CREATE.  Returns 0 or an
   errno value. */
int plat_thread_create(pthread_t *pt, size_t stack_size, void *(*fn)(void *),
                       void *arg);

/* Sleeps the calling thread without any lock held. */
void plat_sleep_ns(int64_t ns);

/* One CPU pause of a spin-wait (x86 `pause`, AArch64 `yield`; nothing
   elsewhere): tells the CPU that this is a busy-wait, so that it spends
   less power and leaves the core's other hardware thread its share. */
static inline void plat_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Step `i` (1, 2, ...) of a bounded spin-wait: a CPU pause, and every
   PLAT_SPIN_YIELD_EVERY steps a yield of the CPU, so that a spinner on a
   busy machine lets the thread it waits for (or anyone else) run.  Returns
   1 on the steps where the caller should look at the clock. */
#define PLAT_SPIN_YIELD_EVERY 8
int plat_spin_step(unsigned i);

/* Reaps the OS thread `pt` if it has ended: 0 when reaped, EBUSY while it
   runs.  Where the C library has no non-blocking join, waits for it. */
int plat_thread_tryjoin(pthread_t pt);

/* Reaps the OS thread `pt`, waiting for its end until the absolute
   monotonic `deadline_ns` (-1 = no deadline): 0 when reaped, ETIMEDOUT
   (not reaped; a later join may reap it).  Under ThreadSanitizer, which
   does not see pthread_clockjoin_np, it polls pthread_tryjoin_np (naps of
   50 us growing to 1 ms).  Without pthread_clockjoin_np (glibc before
   2.31, other C libraries, and under helgrind and DRD, which see a
   thread's end only through pthread_join) it waits without a deadline. */
int plat_thread_join_until(pthread_t pt, int64_t deadline_ns);

#endif
