/*
 * runner.c - runs test cases, each in a forked child with a timeout.
 *
 * The parent stays single-threaded and blocks SIGCHLD, so it can wait for a
 * child with sigtimedwait against a deadline on the monotonic clock.  Each
 * child leads its own process group: on timeout the whole group is killed,
 * including any helper processes the case forked, and a child that outlives
 * the runner (because CTest killed the runner) dies with it on Linux.
 *
 * Output is TAP-shaped: a "1..N" plan, then one line per case,
 *
 *   ok 3 join_timeout
 *   not ok 4 join_many # exit code 1
 *   not ok 5 fork_child # killed by signal 11 (Segmentation fault)
 *   not ok 6 finalize_hang # timeout after 60s
 *
 * and a closing "N passed, M failed" line.  The exit status is 0 only if
 * every case that ran passed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strsignal, prctl */
#endif
#include "runner.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

enum { DEFAULT_TIMEOUT_S = 60, MAX_SCALE = 100 };

/* Set once by runner_main before any case runs; read by runner_fail, which
   may run on any thread of a case. */
static int g_nofork;

static int env_int(const char *name, int fallback, int lo, int hi)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return fallback;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < lo)
        return fallback;
    return v > hi ? hi : (int)v;
}

int runner_timeout_scale(void)
{
    return env_int("TETHER_TEST_TIMEOUT_SCALE", 1, 1, MAX_SCALE);
}

int runner_rounds(int n)
{
    int div = env_int("TETHER_TEST_ROUNDS_DIV", 1, 1, 1000000);
    return n / div > 0 ? n / div : 1;
}

void runner_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(NULL);
    if (g_nofork)
        abort(); /* in-process: stop where the debugger can see it */
    _exit(1);    /* from any thread of the case; skips the case's atexit */
}

/* ------------------------------------------------------------------------
 * Running one case in a child
 * ---------------------------------------------------------------------- */

/* The case's child: its own process group, SIGCHLD as the case expects it,
   dead if the runner dies. */
static void child_run(const test_case *t, const sigset_t *old_mask)
{
    (void)setpgid(0, 0);
#if defined(__linux__)
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    sigprocmask(SIG_SETMASK, old_mask, NULL);
    t->fn();
    fflush(NULL);
    exit(0); /* normal exit, so LeakSanitizer and atexit handlers run */
}

/* Seconds left until `deadline` into *left; 0 once it has passed. */
static int time_left(const struct timespec *deadline, struct timespec *left)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (deadline->tv_sec - now.tv_sec) * 1000000000LL +
                   (deadline->tv_nsec - now.tv_nsec);
    if (ns <= 0)
        return 0;
    left->tv_sec = (time_t)(ns / 1000000000LL);
    left->tv_nsec = (long)(ns % 1000000000LL);
    return 1;
}

/* Reaps `pid` into *status before `deadline`.  Returns 1 if it exited (or
   cannot be waited for: *status is then -1), 0 on timeout. */
static int wait_child(pid_t pid, const struct timespec *deadline, int *status)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR) {
            perror("runner: waitpid");
            *status = -1;
            return 1;
        }
        struct timespec left;
        if (!time_left(deadline, &left))
            return 0;
        (void)sigtimedwait(&chld, NULL, &left); /* SIGCHLD, EINTR or EAGAIN */
    }
}

/* Describes a failed `status` after the " # " of a "not ok" line. */
static void describe_status(int status, char *buf, size_t cap)
{
    if (status == -1)
        snprintf(buf, cap, "lost the child");
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "exit code %d", WEXITSTATUS(status));
}

/* Runs one case in a child; returns 1 if it passed.  Prints its line. */
static int run_forked(const test_case *t, size_t num, const sigset_t *old_mask)
{
    int seconds = (t->timeout_s > 0 ? t->timeout_s : DEFAULT_TIMEOUT_S) *
                  runner_timeout_scale();
    int cap = env_int("TETHER_TEST_TIMEOUT_CAP", 0, 0, 1000000);
    if (cap > 0 && seconds > cap) /* scripts/mutate.sh: a hang costs little */
        seconds = cap;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += seconds;

    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        printf("not ok %zu %s # fork failed: %s\n", num, t->name, strerror(errno));
        return 0;
    }
    if (pid == 0)
        child_run(t, old_mask);
    (void)setpgid(pid, pid); /* also done by the child: whoever is first */

    int status = 0;
    int exited = wait_child(pid, &deadline, &status);
    (void)kill(-pid, SIGKILL); /* the case's leftovers, or the hung case */
    if (!exited) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        printf("not ok %zu %s # timeout after %ds\n", num, t->name, seconds);
        return 0;
    }
    if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok %zu %s\n", num, t->name);
        return 1;
    }
    char why[128];
    describe_status(status, why, sizeof why);
    printf("not ok %zu %s # %s\n", num, t->name, why);
    return 0;
}

static int run_in_process(const test_case *t, size_t num)
{
    t->fn();
    printf("ok %zu %s\n", num, t->name);
    return 1;
}

/* ------------------------------------------------------------------------
 * Selecting cases
 * ---------------------------------------------------------------------- */

static const test_case *find_case(const test_case *cases, size_t n,
                                  const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(cases[i].name, name) == 0)
            return &cases[i];
    return NULL;
}

/* Checks every name on the command line before anything runs.  Returns 0
   and prints why if one is not a case. */
static int check_args(int argc, char **argv, const test_case *cases, size_t n)
{
    for (int i = 1; i < argc; i++) {
        if (!find_case(cases, n, argv[i])) {
            fprintf(stderr, "%s: no test case named '%s' (--list shows them)\n",
                    argv[0], argv[i]);
            return 0;
        }
    }
    return 1;
}

int runner_main(int argc, char **argv, const test_case *cases, size_t n)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", cases[i].name);
        return 0;
    }
    if (!check_args(argc, argv, cases, n))
        return 2;

    const char *nofork = getenv("TETHER_TEST_NOFORK");
    g_nofork = nofork && strcmp(nofork, "1") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* SIGCHLD must be catchable by sigtimedwait and not auto-reaped. */
    sigset_t chld, old_mask;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_BLOCK, &chld, &old_mask);

    size_t total = argc > 1 ? (size_t)(argc - 1) : n;
    size_t passed = 0;
    printf("1..%zu\n", total);
    for (size_t i = 0; i < total; i++) {
        const test_case *t = argc > 1 ? find_case(cases, n, argv[i + 1]) : &cases[i];
        passed += (size_t)(g_nofork ? run_in_process(t, i + 1)
                                    : run_forked(t, i + 1, &old_mask));
    }
    printf("%zu passed, %zu failed\n", passed, total - passed);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    return passed == total ? 0 : 1;
}
