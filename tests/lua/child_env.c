/*
 * child_env.c - preloaded with the sanitizer runtime in the sanitizer runs
 * of the Lua suite.
 *
 * The suite's scripts start child lua5.4 processes through io.popen, that is
 * through /bin/sh, and shells crash when the ThreadSanitizer runtime is
 * preloaded into them.  So this constructor moves LD_PRELOAD out of the
 * environment once the process is loaded (the runtime is in place by then)
 * into TETHER_CHILD_PRELOAD, and testlib.lua puts it back on the lua5.4
 * command line of each child, past the shell.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>

__attribute__((constructor)) static void move_preload(void)
{
    const char *preload = getenv("LD_PRELOAD");
    if (!preload)
        return;
    setenv("TETHER_CHILD_PRELOAD", preload, 1);
    unsetenv("LD_PRELOAD");
}
