/*
 * test_debug.c - the TETHER_DEBUG=1 report at finalize.  A helper program
 * (debug_helper.c) leaks one thing and finalizes; its stderr must name the
 * leak with TETHER_DEBUG=1, and be empty without it or without a leak.
 */
#include <tether/tether.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"
#include "support.h"

extern char **environ;

/* environ without TETHER_DEBUG, plus `extra` if not NULL. */
static char **make_env(char *extra)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    ASSERT(env != NULL);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "TETHER_DEBUG=", 13) != 0)
            env[k++] = environ[i];
    if (extra)
        env[k++] = extra;
    env[k] = NULL;
    return env;
}

/* Runs the helper in `mode` with `setting` ("TETHER_DEBUG=..." or NULL)
   in its environment; it must exit 0.  Returns its stderr (to free). */
static char *run_helper_env(const char *mode, char *setting)
{
    char *argv[] = {(char *)TETHER_DEBUG_HELPER, (char *)mode, NULL};
    char **env = make_env(setting);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    pid_t pid;
    int rc = posix_spawn(&pid, TETHER_DEBUG_HELPER, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    close(fds[1]);
    ASSERT_EQ(rc, 0);

    char *err = t_read_all(fds[0]);
    close(fds[0]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        runner_fail(__FILE__, __LINE__, "helper %s: wait status 0x%x; stderr: %s",
                    mode, status, err);
    return err;
}

/* The same with TETHER_DEBUG=1 if `debug`, else without the variable. */
static char *run_helper(const char *mode, int debug)
{
    static char debug_on[] = "TETHER_DEBUG=1";
    return run_helper_env(mode, debug ? debug_on : NULL);
}

static void expect_report(const char *mode, const char *needle)
{
    char *err = run_helper(mode, 1);
    ASSERT_CONTAINS(err, needle);
    free(err);
}

static void expect_silence(const char *mode, int debug)
{
    char *err = run_helper(mode, debug);
    ASSERT_STREQ(err, "");
    free(err);
}

TEST(clean_run_reports_nothing) { expect_silence("clean", 1); }

TEST(leaked_lock_reported) { expect_report("lock", "lock"); }

TEST(unreleased_ensure_at_exit_reported) { expect_report("ensure-exit", "ensure"); }

TEST(unreleased_ensure_at_finalize_reported)
{
    expect_report("ensure-open", "ensure");
}

/* Without TETHER_DEBUG the same leaks are silent. */
TEST(no_report_without_debug)
{
    expect_silence("lock", 0);
    expect_silence("ensure-exit", 0);
}

/* TETHER_DEBUG=0 (or empty) is off for every report alike: the line for a
   thread that exits attached as well as the finalize report (issue 12 F18:
   the first was printed for any value). */
TEST(debug_zero_is_off)
{
    static char zero[] = "TETHER_DEBUG=0", empty[] = "TETHER_DEBUG=";
    const char *modes[] = {"ensure-exit", "ensure-open", "lock"};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        char *err = run_helper_env(modes[i], zero);
        ASSERT_STREQ(err, "");
        free(err);
        err = run_helper_env(modes[i], empty);
        ASSERT_STREQ(err, "");
        free(err);
    }
}

RUNNER_MAIN(TEST_ENTRY(clean_run_reports_nothing), TEST_ENTRY(leaked_lock_reported),
            TEST_ENTRY(unreleased_ensure_at_exit_reported),
            TEST_ENTRY(unreleased_ensure_at_finalize_reported),
            TEST_ENTRY(no_report_without_debug), TEST_ENTRY(debug_zero_is_off))
