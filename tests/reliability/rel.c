/*
 * rel.c - helpers of the reliability suites (see rel.h).
 */
#include "rel.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tether/tether.h>

#include "runner.h"
#include "sanitizers.h"

/* Synchronization: atomic.  Updated by every thread the library allocates
   or frees on. */
static atomic_long g_live, g_allocs;

static void *count_malloc(size_t n, void *ud)
{
    (void)ud;
    void *p = malloc(n);
    if (p) {
        atomic_fetch_add(&g_live, 1);
        atomic_fetch_add(&g_allocs, 1);
    }
    return p;
}

static void count_free(void *p, void *ud)
{
    (void)ud;
    if (p)
        atomic_fetch_sub(&g_live, 1);
    free(p);
}

void rel_count_allocations(void)
{
    static const tether_allocator a = {sizeof a, count_malloc, count_free, NULL};
    ASSERT_OK(tether_set_allocator(&a));
}

long rel_live_blocks(void) { return atomic_load(&g_live); }
long rel_allocs(void) { return atomic_load(&g_allocs); }

long rel_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    ASSERT(f != NULL);
    long size = 0, resident = 0;
    ASSERT_EQ(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * 4; /* pages of 4 KiB */
}

int rel_os_threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    ASSERT(f != NULL);
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0)
            n = atoi(line + 8);
    fclose(f);
    ASSERT(n > 0);
    return n;
}

void rel_wait_until(int (*pred)(void *), void *arg, int seconds,
                    const char *what)
{
    long limit_ms = (long)seconds * 1000 * runner_timeout_scale();
    struct timespec ms = {0, 1000000};
    for (long waited = 0; !pred(arg); waited++) {
        if (waited >= limit_ms)
            runner_fail(__FILE__, __LINE__, "still waiting after %d s for %s",
                        seconds * runner_timeout_scale(), what);
        nanosleep(&ms, NULL);
    }
}

static int few_threads(void *arg) { return rel_os_threads() <= *(int *)arg; }

void rel_wait_os_threads(int n)
{
    rel_wait_until(few_threads, &n, 30, "the OS threads to exit");
}

static int few_blocks(void *arg) { return rel_live_blocks() <= *(long *)arg; }

void rel_wait_live_blocks(long n)
{
    rel_wait_until(few_blocks, &n, 30, "the library to free its blocks");
}

int rel_sanitized(void)
{
    return TEST_SANITIZER_THREAD || TEST_SANITIZER_ADDRESS;
}

uint32_t rel_rand(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}
