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

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <tether/tether.h>

static int fail(const char *what, const char *why)
{
    fprintf(stderr, "tether_lua_host_late: %s: %s\n", what, why);
    return 1;
}

int main(int argc, char **argv)
{
    tether_runtime rt;
    if (argc != 3)
        return fail("usage", "tether_lua_host_late script.lua seconds");
    if (tether_runtime_create(NULL, &rt) != TETHER_OK)
        return fail("tether_runtime_create", tether_last_error());
    lua_State *L = luaL_newstate();
    if (!L)
        return fail("luaL_newstate", "out of memory");
    luaL_openlibs(L);
    lua_pushinteger(L, (lua_Integer)rt);
    lua_setfield(L, LUA_REGISTRYINDEX, "tether.runtime");
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
