/*
 * debug_helper.c - a small host for test_debug.c: it leaks what argv[1]
 * names, finalizes its runtime and exits 0, so that the test can read the
 * TETHER_DEBUG=1 leak report on its stderr.
 *
 *   clean        leaks nothing
 *   lock         leaves a lock handle open
 *   ensure-exit  a foreign thread ensures and exits without releasing
 *   ensure-open  a foreign thread still holds an unreleased ensure at
 *                finalize (it is parked, detached, until finalize is done)
 */
#include <tether/tether.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(expr)                                                           \
    do {                                                                      \
        int rc_ = (expr);                                                     \
        if (rc_ != TETHER_OK) {                                               \
            fprintf(stderr, "debug_helper: %s: %s\n", #expr,                  \
                    tether_status_name(rc_));                                 \
            exit(2);                                                          \
        }                                                                     \
    } while (0)

static tether_interp g_interp;
static tether_event g_saved, g_finalized;

static void *ensure_and_exit(void *arg)
{
    (void)arg;
    tether_gilstate st;
    CHECK(tether_ensure(g_interp, &st));
    return NULL; /* never released */
}

static void *ensure_and_park(void *arg)
{
    (void)arg;
    tether_gilstate st;
    tether_tstate ts;
    CHECK(tether_ensure(g_interp, &st));
    CHECK(tether_save_thread(&ts));
    CHECK(tether_event_set(g_saved));
    CHECK(tether_event_wait(g_finalized, -1));
    (void)tether_restore_thread(ts); /* EFINALIZING: the runtime is gone */
    return NULL;
}

static void clean(void)
{
    tether_lock l;
    tether_gilstate st;
    CHECK(tether_lock_new(&l));
    CHECK(tether_lock_free(l));
    CHECK(tether_ensure(g_interp, &st));
    CHECK(tether_release(st));
}

/* Runs fn on a pthread with the GIL released; joins it unless `park`. */
static pthread_t on_thread(void *(*fn)(void *), int park)
{
    pthread_t th;
    tether_tstate ts;
    CHECK(tether_save_thread(&ts));
    if (pthread_create(&th, NULL, fn, NULL) != 0)
        exit(2);
    if (park)
        CHECK(tether_event_wait(g_saved, -1));
    else
        pthread_join(th, NULL);
    CHECK(tether_restore_thread(ts));
    return th;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "clean";
    int park = strcmp(mode, "ensure-open") == 0;
    tether_runtime rt;
    tether_lock leaked;
    pthread_t parked = 0;
    CHECK(tether_runtime_create(NULL, &rt));
    CHECK(tether_runtime_main_interp(rt, &g_interp));

    if (strcmp(mode, "clean") == 0) {
        clean();
    } else if (strcmp(mode, "lock") == 0) {
        CHECK(tether_lock_new(&leaked));
    } else if (strcmp(mode, "ensure-exit") == 0) {
        on_thread(ensure_and_exit, 0);
    } else if (park) {
        CHECK(tether_event_new(&g_saved));
        CHECK(tether_event_new(&g_finalized));
        parked = on_thread(ensure_and_park, 1);
    } else {
        return 2;
    }

    CHECK(tether_runtime_finalize(rt, 10 * 1000000000LL));
    if (park) {
        CHECK(tether_event_set(g_finalized));
        pthread_join(parked, NULL);
        CHECK(tether_event_free(g_saved));
        CHECK(tether_event_free(g_finalized));
    }
    return 0;
}
