/*
 * notrace.c - tether-bench-notrace: the loop of the row trace.acquire_off
 * against the library built with the trace hooks compiled out
 * (TETHER_NO_TRACE; bench/CMakeLists.txt), in a process of its own.
 *
 *   tether-bench-notrace N
 *
 * Runs N save/restore pairs (one drop and one take of an uncontended GIL)
 * and prints the nanoseconds per pair.  b_trace.c runs it as the baseline
 * side of trace.acquire_off, whose tether side is the same loop in the
 * normal library with no trace recording.
 */
#include <stdio.h>
#include <stdlib.h>
#include <tether/tether.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    char *end;
    unsigned long long n = argc == 2 ? strtoull(argv[1], &end, 10) : 0;
    if (argc != 2 || *end || n == 0) {
        fprintf(stderr, "usage: tether-bench-notrace N (N > 0)\n");
        return 2;
    }
    tether_runtime rt;
    if (tether_runtime_create(NULL, &rt) != TETHER_OK) {
        fprintf(stderr, "tether-bench-notrace: %s\n", tether_last_error());
        return 1;
    }
    double t0 = now_ns();
    for (unsigned long long i = 0; i < n; i++) {
        tether_tstate ts;
        if (tether_save_thread(&ts) != TETHER_OK ||
            tether_restore_thread(ts) != TETHER_OK) {
            fprintf(stderr, "tether-bench-notrace: %s\n", tether_last_error());
            return 1;
        }
    }
    double t1 = now_ns();
    printf("%.3f\n", (t1 - t0) / (double)n);
    return tether_runtime_finalize(rt, -1) == TETHER_OK ? 0 : 1;
}
