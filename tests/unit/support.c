/*
 * support.c - helpers shared by the unit and stress suites (support.h).
 */
#include "support.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

atomic_int t_dtor_calls;
_Atomic(void *) t_dtor_last;

tether_runtime t_runtime(const tether_config *cfg)
{
    tether_runtime rt = 0;
    ASSERT_OK(tether_runtime_create(cfg, &rt));
    ASSERT_NE(rt, 0);
    return rt;
}

tether_runtime t_runtime_main(const tether_config *cfg, tether_interp *main_interp)
{
    tether_runtime rt = t_runtime(cfg);
    *main_interp = t_main_interp(rt);
    return rt;
}

static void *runtime_left(void *arg)
{
    tether_runtime rt = t_runtime(NULL);
    tether_tstate left;
    ASSERT_OK(tether_save_thread(&left)); /* freed with this thread */
    *(tether_runtime *)arg = rt;
    return NULL;
}

tether_runtime t_runtime_elsewhere(tether_interp *main_interp)
{
    tether_runtime rt = 0;
    t_pthread_join(t_pthread(runtime_left, &rt));
    if (main_interp)
        *main_interp = t_main_interp(rt);
    return rt;
}

const tether_config t_per_interp_gil = {.size = sizeof(tether_config),
                                        .flags = TETHER_CONFIG_PER_INTERP_GIL};

tether_runtime t_runtime_interval(uint32_t us)
{
    tether_config cfg = {.size = sizeof cfg, .switch_interval_us = us};
    return t_runtime(&cfg);
}

tether_interp t_main_interp(tether_runtime rt)
{
    tether_interp interp = 0;
    ASSERT_OK(tether_runtime_main_interp(rt, &interp));
    return interp;
}

void t_finalize(tether_runtime rt)
{
    ASSERT_OK(tether_runtime_finalize(rt, SECONDS(30)));
}

tether_thread t_start_opts(tether_interp interp, tether_thread_fn fn, void *arg,
                           const tether_thread_opts *opts)
{
    tether_thread t = 0;
    ASSERT_OK(tether_thread_start(interp, fn, arg, opts, &t));
    ASSERT_NE(t, 0);
    return t;
}

tether_thread t_start(tether_interp interp, tether_thread_fn fn, void *arg)
{
    return t_start_opts(interp, fn, arg, NULL);
}

tether_thread t_start_daemon(tether_interp interp, tether_thread_fn fn, void *arg)
{
    tether_thread_opts opts = {.size = sizeof opts, .daemon = 1};
    return t_start_opts(interp, fn, arg, &opts);
}

int t_join(tether_thread t)
{
    int result = -1000;
    ASSERT_OK(tether_thread_join(t, -1));
    ASSERT_OK(tether_thread_result(t, &result));
    ASSERT_OK(tether_thread_release(t));
    return result;
}

size_t t_thread_count(tether_interp interp)
{
    size_t count = 0;
    ASSERT_OK(tether_thread_list(interp, NULL, 0, &count));
    return count;
}

tether_gil_stats t_gil_stats(tether_interp interp)
{
    tether_gil_stats st = {.size = sizeof st};
    ASSERT_OK(tether_gil_stats_get(interp, &st));
    return st;
}

int t_return_arg(void *arg) { return (int)(intptr_t)arg; }

int64_t t_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

pthread_t t_pthread(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    int rc = pthread_create(&th, NULL, fn, arg);
    if (rc != 0)
        runner_fail(__FILE__, __LINE__, "pthread_create: %s", strerror(rc));
    return th;
}

void t_pthread_join(pthread_t th)
{
    int rc = pthread_join(th, NULL);
    if (rc != 0)
        runner_fail(__FILE__, __LINE__, "pthread_join: %s", strerror(rc));
}

void t_join_foreign(const pthread_t *th, int n)
{
    int held = tether_gil_held();
    tether_tstate ts = 0;
    if (held)
        ASSERT_OK(tether_save_thread(&ts));
    for (int i = 0; i < n; i++)
        t_pthread_join(th[i]);
    if (held)
        ASSERT_OK(tether_restore_thread(ts));
}

void t_run_foreign(void *(*fn)(void *), void *arg)
{
    int held = tether_gil_held();
    tether_tstate ts = 0;
    if (held)
        ASSERT_OK(tether_save_thread(&ts));
    t_pthread_join(t_pthread(fn, arg)); /* started with the GIL free */
    if (held)
        ASSERT_OK(tether_restore_thread(ts));
}

void t_foreign_case(tether_interp *main_interp, void *(*fn)(void *), void *arg)
{
    tether_runtime rt = t_runtime_main(NULL, main_interp);
    t_run_foreign(fn, arg);
    t_finalize(rt);
}

void t_sem_init(t_sem *s)
{
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->count = 0;
}

void t_sem_destroy(t_sem *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

void t_sem_post(t_sem *s)
{
    pthread_mutex_lock(&s->mu);
    s->count++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void t_sem_wait(t_sem *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->count == 0)
        pthread_cond_wait(&s->cv, &s->mu);
    s->count--;
    pthread_mutex_unlock(&s->mu);
}

char *t_read_all(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ASSERT(buf != NULL);
    for (;;) {
        if (cap - len < 1024) {
            cap *= 2;
            buf = realloc(buf, cap);
            ASSERT(buf != NULL);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        ASSERT(n >= 0);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

void t_count_dtor(void *payload)
{
    atomic_store(&t_dtor_last, payload);
    atomic_fetch_add(&t_dtor_calls, 1);
}
