-- The LuaRocks rockspec of tether: `luarocks make` in a checkout (or
-- `luarocks install` of the source rock) builds the library and the Lua 5.4
-- module with CMake and installs both into the rock tree, so that
-- `require "tether"` works through `luarocks path`.
--
-- The name and `version` follow abi/include/tether/version.h (the one
-- version source); tests/package/check_versions.py fails when they differ.
rockspec_format = "3.0"
package = "tether"
version = "1.3.0-1"

source = {
   url = "git+https://example.invalid/tether.git",
   tag = "v1.3.0",
}

description = {
   summary = "Real OS threads for Lua 5.4, with a GIL as in Python",
   detailed = [[
tether runs Lua on many OS threads of one Lua state, as Python runs its
threads: a GIL handed over at blocking calls and at a switch interval,
asynchronous exceptions and cancellation that also interrupt blocked waits,
joinable threads, locks, events, conditions, queues, channels between
interpreters, C callbacks through libffi and plugin loading.  The module is
a binding of libtether, a C library with a stable ABI, which the rock builds
and installs beside it.
]],
   labels = { "threads", "concurrency", "gil", "ffi" },
   -- As debian/copyright says: the authors have not chosen a license yet.
   license = "not yet chosen",
}

dependencies = {
   "lua >= 5.4, < 5.5",
}

build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      BUILD_TESTING = "OFF",
      TETHER_BENCH_CPYTHON = "OFF",
      -- The Lua headers of the Lua LuaRocks builds for.
      TETHER_LUA_INCLUDE_DIR = "$(LUA_INCDIR)",
      -- No module, no rock: headers CMake cannot use fail the build.
      TETHER_LUA_REQUIRED = "ON",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      -- tether.so goes to the rock's lib/ ($(LIBDIR)), which LuaRocks
      -- deploys to the tree's C module directory; libtether.so.1 and the
      -- rest stay in the rock's own directory, found through an absolute
      -- RUNPATH, and go with `luarocks remove`.
      TETHER_LUA_CMOD_DIR = "lib",
      -- tether/socket.lua goes to the rock's lua/, which LuaRocks deploys
      -- to the tree's Lua module directory (it needs LuaSocket at run time).
      TETHER_LUA_LMOD_DIR = "lua",
      CMAKE_INSTALL_LIBDIR = "libtether",
      CMAKE_INSTALL_BINDIR = "libtether/bin",
      TETHER_LUA_INSTALL_RPATH = "$(PREFIX)/libtether",
   },
}
