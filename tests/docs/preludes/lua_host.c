/* For a fragment of a C host that embeds Lua: a state, the runtime's
   handles, and the module's entry point as docs/host.md declares it. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <tether/tether.h>

int luaopen_tether(lua_State *L);
void fragment(lua_State *L, tether_runtime rt, tether_interp interp);

void fragment(lua_State *L, tether_runtime rt, tether_interp interp)
{
@BLOCK@
}
