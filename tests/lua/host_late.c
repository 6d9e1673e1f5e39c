/*
 * host_late.c - a C host whose Lua state closes while a daemon thread is
 * still blocked in an io call that nothing can interrupt (a pclose), and
 * that lives on after lua_close until that call has returned.
 *
 *   tether_lua_host_late script.lua seconds
 *
 * Runs the script (which leaves such a thread), finalizes the runtime,
 * closes the state and then sleeps `seconds`, so that the thread comes
 * back from its call into a process where the state is gone.  It must
 * leave without touching what lua_close freed (under AddressSanitizer, a
 * use after free fails the test).  Exits 0 when everything ran.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <time.h>

#define HOST_NAME "tether_lua_host_late"
#include "host_common.h"

int main(int argc, char **argv)
{
    tether_runtime rt;
    if (argc != 3)
        return fail("usage", "tether_lua_host_late script.lua seconds");
    lua_State *L = host_open(&rt);
    if (!L)
        return 1;
    if (luaL_dofile(L, argv[1]) != LUA_OK)
        return fail(argv[1], lua_tostring(L, -1));
    (void)tether_runtime_finalize(rt, 0);
    lua_close(L);
    double s = atof(argv[2]);
    struct timespec d = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&d, &d) != 0)
        ;
    puts("host_late: done");
    return 0;
}
