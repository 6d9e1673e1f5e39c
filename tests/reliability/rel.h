/*
 * rel.h - helpers of the reliability suites: a counting allocator for exact
 * leak accounting, the process's resident size and OS thread count, and
 * sizes scaled for the sanitizer builds.
 */
#ifndef TETHER_REL_H
#define TETHER_REL_H

#include <stdint.h>

/* Installs an allocator that counts the library's blocks (it must be called
   while no runtime exists).  From then on rel_live_blocks() is the number of
   blocks the library holds and rel_allocs() the number it ever took, in
   every build, not only under LeakSanitizer. */
void rel_count_allocations(void);
long rel_live_blocks(void);
long rel_allocs(void);

/* Resident set size of the process in KiB (/proc/self/statm). */
long rel_rss_kib(void);

/* Number of OS threads of the process (/proc/self/status). */
int rel_os_threads(void);

/* Waits, sleeping a millisecond at a time, until `pred(arg)` holds; fails
   the case after `seconds` (scaled by TETHER_TEST_TIMEOUT_SCALE).  For
   things that end asynchronously, like detached threads exiting: this is
   an eventual-state check with a generous bound, not a timing assertion. */
void rel_wait_until(int (*pred)(void *), void *arg, int seconds,
                    const char *what);

/* Waits until the process has at most `n` OS threads. */
void rel_wait_os_threads(int n);

/* Waits until the library holds at most `n` blocks. */
void rel_wait_live_blocks(long n);

/* 1 in the builds made with a sanitizer (the suites skip RSS checks there:
   quarantines and shadow memory make RSS meaningless). */
int rel_sanitized(void);

/* A small xorshift generator, so runs are reproducible from a seed. */
uint32_t rel_rand(uint32_t *state);

#endif
