/*
 * delay.c - named delay points (delay.h): the test hook, TETHER_DELAY and
 * the random-delay mode TETHER_CHAOS.  Compiled to nothing unless the build
 * defines TETHER_DELAY_POINTS.
 */
#include "delay.h"

#ifdef TETHER_DELAY_POINTS

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Defined by a test program that wants to see the points (weak: absent in
   every other program).  Default visibility, so that the dynamic linker
   binds it to the executable's definition. */
extern void tether_test_delay_hook(const char *name)
    __attribute__((weak, visibility("default")));

#define MAX_RULES 16
#define CHAOS_MAX_US 100
#define CHAOS_ONE_IN 2048

struct rule {
    char name[64];
    unsigned long us;
    unsigned long nth;      /* 0: every pass */
    _Atomic unsigned long passes;
};

/* Written once by init (under pthread_once), read-only afterwards. */
static struct rule g_rules[MAX_RULES];
static int g_nrules;
static int g_chaos;
static uint64_t g_chaos_seed;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t g_chaos_threads;

/* Parses TETHER_DELAY=name:us[:nth],...; a malformed entry is reported
   once on stderr and ignored. */
static void parse_rules(const char *spec)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *e = strtok_r(buf, ",", &save); e && g_nrules < MAX_RULES;
         e = strtok_r(NULL, ",", &save)) {
        char name[64];
        unsigned long us = 0, nth = 0;
        int n = sscanf(e, "%63[^:]:%lu:%lu", name, &us, &nth);
        if (n < 2) {
            fprintf(stderr, "tether: TETHER_DELAY: ignoring '%s' (want "
                    "name:us[:nth])\n", e);
            continue;
        }
        struct rule *r = &g_rules[g_nrules++];
        snprintf(r->name, sizeof r->name, "%s", name);
        r->us = us;
        r->nth = n == 3 ? nth : 0;
        atomic_init(&r->passes, 0);
    }
}

static void init(void)
{
    const char *spec = getenv("TETHER_DELAY");
    if (spec && *spec)
        parse_rules(spec);
    const char *chaos = getenv("TETHER_CHAOS");
    if (chaos && *chaos && strcmp(chaos, "0") != 0) {
        g_chaos = 1;
        g_chaos_seed = strtoull(chaos, NULL, 0);
    }
}

static void sleep_us(unsigned long us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Per-thread generator state for chaos mode: seeded from the seed and the
   order in which threads first reach a point (splitmix64, then xorshift). */
static _Thread_local uint64_t t_rng;

static uint64_t chaos_next(void)
{
    if (!t_rng) {
        uint64_t z = g_chaos_seed + 0x9e3779b97f4a7c15ull *
                     (atomic_fetch_add(&g_chaos_threads, 1) + 1);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        t_rng = (z ^ (z >> 31)) | 1;
    }
    t_rng ^= t_rng << 13;
    t_rng ^= t_rng >> 7;
    t_rng ^= t_rng << 17;
    return t_rng;
}

void delay_point(const char *name)
{
    int saved = errno;
    if (tether_test_delay_hook)
        tether_test_delay_hook(name);
    pthread_once(&g_once, init);
    for (int i = 0; i < g_nrules; i++) {
        struct rule *r = &g_rules[i];
        if (strcmp(r->name, name) != 0)
            continue;
        unsigned long pass = atomic_fetch_add(&r->passes, 1) + 1;
        if (r->nth == 0 || r->nth == pass)
            sleep_us(r->us);
    }
    if (g_chaos) {
        /* Rare enough that the stress suites stay within their timeouts:
           some points are passed on every GIL take and drop, some with the
           GIL's mutex held (no yields: under 64 runnable threads one costs
           a time slice, with everybody queued on that mutex). */
        uint64_t x = chaos_next();
        if (x % CHAOS_ONE_IN == 0)
            sleep_us(1 + (unsigned long)((x >> 12) % CHAOS_MAX_US));
    }
    errno = saved;
}

#else
/* ISO C wants a translation unit to declare something. */
typedef int tether_delay_points_compiled_out;
#endif
