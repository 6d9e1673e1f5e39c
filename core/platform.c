/*
 * platform.c - pthreads and the monotonic clock (see platform.h).
 */
#include "platform.h"

#include <errno.h>
#include <sched.h>
#include <time.h>

#include "alloc.h"
#include "tether/tether.h"

int64_t plat_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t plat_deadline(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return -1;
    int64_t now = plat_now_ns();
    return timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
}

uint64_t plat_thread_ident(void) { return (uint64_t)pthread_self(); }

void plat_cond_init(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

int plat_cond_wait(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline_ns)
{
    if (deadline_ns < 0) {
        pthread_cond_wait(c, m);
        return 0;
    }
    struct timespec ts = {(time_t)(deadline_ns / 1000000000),
                          (long)(deadline_ns % 1000000000)};
    if (pthread_cond_timedwait(c, m, &ts) == ETIMEDOUT)
        return 1;
    return plat_now_ns() >= deadline_ns;
}

int plat_thread_create(pthread_t *pt, size_t stack_size, void *(*fn)(void *),
                       void *arg)
{
    if (fault_hit(TETHER_FAULT_THREAD_CREATE))
        return EAGAIN;
    pthread_attr_t a;
    pthread_attr_init(&a);
    int rc = 0;
    if (stack_size)
        rc = pthread_attr_setstacksize(&a, stack_size);
    if (rc == 0)
        rc = pthread_create(pt, &a, fn, arg);
    pthread_attr_destroy(&a);
    return rc;
}

void plat_sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
        ;
}

int plat_spin_step(unsigned i)
{
    plat_cpu_relax();
    if (i % PLAT_SPIN_YIELD_EVERY != 0)
        return 0;
    sched_yield();
    return 1;
}

/* ThreadSanitizer sees a thread's end through pthread_join and
   pthread_tryjoin_np, not pthread_clockjoin_np (a thread reaped by it is
   reported leaked): under it, a timed reap polls. */
#if defined(__SANITIZE_THREAD__)
#define PLAT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PLAT_TSAN 1
#endif
#endif

int plat_thread_join_until(pthread_t pt, int64_t deadline_ns)
{
#if defined(__GLIBC__) && !defined(TETHER_VALGRIND) && defined(PLAT_TSAN)
    for (int64_t nap = 50000; deadline_ns >= 0; nap *= nap < 1000000 ? 2 : 1) {
        if (pthread_tryjoin_np(pt, NULL) != EBUSY)
            return 0;
        int64_t left = deadline_ns - plat_now_ns();
        if (left <= 0)
            return ETIMEDOUT;
        plat_sleep_ns(left < nap ? left : nap);
    }
#elif defined(__GLIBC__) && !defined(TETHER_VALGRIND) &&                     \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 31))
    if (deadline_ns >= 0) {
        struct timespec ts = {(time_t)(deadline_ns / 1000000000),
                              (long)(deadline_ns % 1000000000)};
        int rc;
        while ((rc = pthread_clockjoin_np(pt, NULL, CLOCK_MONOTONIC, &ts)) ==
               EINTR)
            ;
        return rc == ETIMEDOUT ? ETIMEDOUT : 0;
    }
#else
    (void)deadline_ns;
#endif
    pthread_join(pt, NULL);
    return 0;
}

int plat_thread_tryjoin(pthread_t pt)
{
    /* Not under helgrind and DRD: they see a thread's end only through
       pthread_join. */
#if defined(__GLIBC__) && !defined(TETHER_VALGRIND)
    int rc = pthread_tryjoin_np(pt, NULL);
    return rc == EBUSY ? EBUSY : 0;
#else
    pthread_join(pt, NULL);
    return 0;
#endif
}
