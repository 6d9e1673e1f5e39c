/*
 * runner.h - the test runner (libuv's runner is the model).
 *
 * Each test case is a small named function.  runner_main runs every case
 * (or the ones named on the command line) in a forked child with a timeout,
 * so a deadlock fails with the case's name instead of hanging CI.  It prints
 * one "ok"/"not ok" line per case and closes with "N passed, M failed".
 *
 *   TEST(join_timeout) { ...; ASSERT_OK(tether_thread_join(t, 0)); }
 *   RUNNER_MAIN(TEST_ENTRY(join_timeout), TEST_ENTRY_T(slow_case, 120))
 *
 * Environment: TETHER_TEST_TIMEOUT_SCALE multiplies every timeout (the
 * sanitizer builds set it); TETHER_TEST_NOFORK=1 runs cases in-process (for
 * a debugger); TETHER_TEST_ROUNDS_DIV divides the iteration counts of stress
 * loops that go through runner_rounds(); TETHER_TEST_TIMEOUT_CAP (seconds)
 * caps every case's timeout, scaled or not (scripts/mutate.sh sets it, so
 * that a mutant that hangs costs seconds).  `--list` prints the case names.
 */
#ifndef TETHER_TEST_RUNNER_H
#define TETHER_TEST_RUNNER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct test_case {
    const char *name;
    void (*fn)(void);
    int timeout_s; /* 0 = the default, 60 s */
} test_case;

#define TEST(name) static void name(void)
#define TEST_ENTRY(name) {#name, name, 0}
#define TEST_ENTRY_T(name, seconds) {#name, name, (seconds)}

int runner_main(int argc, char **argv, const test_case *cases, size_t n);

#define RUNNER_MAIN(...)                                                      \
    int main(int argc, char **argv)                                           \
    {                                                                         \
        static const test_case runner__cases[] = {__VA_ARGS__};               \
        return runner_main(argc, argv, runner__cases,                         \
                           sizeof runner__cases / sizeof runner__cases[0]);   \
    }

/* Fails the case (the child exits 1) after printing file, line and text. */
void runner_fail(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4), noreturn))
#endif
    ;

#define ASSERT(cond)                                                          \
    do {                                                                      \
        if (!(cond))                                                          \
            runner_fail(__FILE__, __LINE__, "assertion failed: %s", #cond);   \
    } while (0)

#define ASSERT_EQ(a, b)                                                       \
    do {                                                                      \
        long long runner__a = (long long)(a), runner__b = (long long)(b);     \
        if (runner__a != runner__b)                                           \
            runner_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, \
                        runner__a, runner__b);                                \
    } while (0)

/* `expr` returns a tether status; prints its name and tether_last_error(). */
#define ASSERT_STATUS(expr, want)                                             \
    do {                                                                      \
        int runner__rc = (expr);                                              \
        if (runner__rc != (want))                                             \
            runner_fail(__FILE__, __LINE__, "%s: got %s (%d), want %s: %s",   \
                        #expr, tether_status_name(runner__rc), runner__rc,    \
                        tether_status_name(want), tether_last_error());       \
    } while (0)

#define ASSERT_OK(expr) ASSERT_STATUS((expr), TETHER_OK)

#define ASSERT_NE(a, b)                                                       \
    do {                                                                      \
        long long runner__a = (long long)(a), runner__b = (long long)(b);     \
        if (runner__a == runner__b)                                           \
            runner_fail(__FILE__, __LINE__, "%s != %s: both are %lld", #a,    \
                        #b, runner__a);                                       \
    } while (0)

/* Compares two C strings (neither may be NULL). */
#define ASSERT_STREQ(a, b)                                                    \
    do {                                                                      \
        const char *runner__a = (a), *runner__b = (b);                        \
        if (!runner__a || !runner__b || strcmp(runner__a, runner__b) != 0)    \
            runner_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"",     \
                        #a, #b, runner__a ? runner__a : "(null)",             \
                        runner__b ? runner__b : "(null)");                    \
    } while (0)

/* `haystack` contains `needle` (neither may be NULL). */
#define ASSERT_CONTAINS(haystack, needle)                                     \
    do {                                                                      \
        const char *runner__h = (haystack), *runner__n = (needle);            \
        if (!runner__h || !runner__n || !strstr(runner__h, runner__n))        \
            runner_fail(__FILE__, __LINE__, "%s does not contain \"%s\": %s", \
                        #haystack, runner__n ? runner__n : "(null)",          \
                        runner__h ? runner__h : "(null)");                    \
    } while (0)

/* The timeout scale (>= 1) from TETHER_TEST_TIMEOUT_SCALE. */
int runner_timeout_scale(void);

/* `n` divided by TETHER_TEST_ROUNDS_DIV (the sanitizer builds set it, so
   stress loops stay within their timeouts), never below 1. */
int runner_rounds(int n);

#endif
