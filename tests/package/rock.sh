#!/usr/bin/env bash
# rock.sh SOURCE_DIR - the LuaRocks rock (label "package").
#
#   1. luarocks lint on the rockspec (there is exactly one, rockspecs/);
#   2. luarocks --lua-version 5.4 --tree <tmp> make in a copy of the tree
#      (the cmake build type writes build.luarocks/ into the tree it runs
#      in): the library and the module, built and installed into the tree,
#      with tether/socket.lua and tether/lua.h;
#   3. with nothing but `luarocks path` in the environment, lua5.4 runs
#      require "tether" from that tree and a thread on it, and finds
#      tether.socket there;
#   4. luarocks remove leaves no file of tether in the tree;
#   5. luarocks make with LUA_INCDIR holding lua.h but not lauxlib.h (which
#      LuaRocks' own check accepts) fails, installing nothing: no rock
#      without its module.
#
# Skips (exit 77) when luarocks or lua5.4 is missing.
set -uo pipefail

src="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*"; exit 1; }
step() { echo; echo "=== $* ==="; }

for t in luarocks lua5.4 cmake; do
  command -v "$t" >/dev/null || skip "$t is not installed (scripts/deps.sh all installs it)"
done

work="$(mktemp -d /tmp/tether-rock.XXXXXX)"
trap 'rm -rf "$work"' EXIT
tree="$work/tree"
lr=(luarocks --lua-version 5.4 --tree "$tree")

"$here/copy_tree.sh" "$src" "$work/tether" || fail "could not copy the tree"
cd "$work/tether" || exit 1
shopt -s nullglob
specs=(rockspecs/*.rockspec)
[ "${#specs[@]}" -eq 1 ] || fail "want exactly one rockspec in rockspecs/, found ${#specs[@]}"
spec="${specs[0]}"

step "1. luarocks lint $spec"
out="$(luarocks --lua-version 5.4 lint "$spec" 2>&1)"
rc=$?
echo "$out"
[ "$rc" -eq 0 ] && [ -z "$out" ] || fail "luarocks lint is not clean"
echo "lint: clean"

step "2. luarocks make (tree $tree)"
t0=$SECONDS
CMAKE_BUILD_PARALLEL_LEVEL=2 "${lr[@]}" make "$spec" >"$work/make.log" 2>&1 ||
  { tail -n 60 "$work/make.log"; fail "luarocks make failed (the end of its log above)"; }
tail -n 3 "$work/make.log"
echo "built and installed in $((SECONDS - t0)) s"
"${lr[@]}" list --porcelain
# The files of issue 18: tether/socket.lua in the tree's Lua module
# directory, tether/lua.h (the C interface for other Lua C modules) in the
# rock's include directory.
sock="$tree/share/lua/5.4/tether/socket.lua"
[ -f "$sock" ] || fail "the rock did not install $sock"
echo "installed: $sock"
luah="$(find "$tree" -path '*/include/tether/lua.h' -type f)"
[ -n "$luah" ] || fail "the rock did not install include/tether/lua.h"
echo "installed: $luah"

step "3. require \"tether\" through luarocks path"
paths="$("${lr[@]}" path)" || fail "luarocks path failed"
echo "$paths"
out="$(env -i PATH=/usr/bin:/bin HOME="$work" sh -c "$paths
exec lua5.4 '$here/check.lua'" 2>&1)" || { echo "$out"; fail "require \"tether\" failed"; }
echo "$out"
case "$out" in *"$tree/"*"/tether.so"*) ;;
  *) fail "the module was not loaded from the rock tree" ;; esac
# tether.socket is found through the same paths (it needs LuaSocket only
# when it is loaded).
out="$(env -i PATH=/usr/bin:/bin HOME="$work" sh -c "$paths
exec lua5.4 -e 'print(package.searchpath(\"tether.socket\", package.path))'" 2>&1)"
echo "tether.socket: $out"
[ "$out" = "$sock" ] || fail "luarocks path does not find tether.socket in the rock tree"

step "4. luarocks remove"
"${lr[@]}" remove tether >"$work/remove.log" 2>&1 ||
  { cat "$work/remove.log"; fail "luarocks remove failed"; }
left="$(find "$tree" -iname '*tether*' ! -name manifest)"
[ -z "$left" ] || fail "left in the tree after luarocks remove: $left"

step "5. luarocks make with Lua headers CMake cannot use"
# lua.h alone: LuaRocks' own check (lua.h, LUA_VERSION_NUM) passes, the
# binding's (lauxlib.h too) does not; the make must fail, not install a
# rock without its module.
mkdir -p "$work/badinc"
incdir="$(luarocks --lua-version 5.4 config variables.LUA_INCDIR 2>/dev/null)"
cp "$incdir/lua.h" "$incdir/luaconf.h" "$work/badinc/" ||
  fail "no lua.h in LuaRocks' LUA_INCDIR ($incdir) to copy"
rm -rf build.luarocks
if CMAKE_BUILD_PARALLEL_LEVEL=2 luarocks --lua-version 5.4 --tree "$work/tree2" make "$spec" \
     LUA_INCDIR="$work/badinc" >"$work/make2.log" 2>&1; then
  tail -n 5 "$work/make2.log"
  fail "luarocks make succeeded with no usable Lua headers (a rock without its module)"
fi
grep -m1 'Lua 5.4 headers' "$work/make2.log"
[ -z "$(find "$work/tree2" -name 'tether.so*' 2>/dev/null)" ] ||
  fail "a failed make left tether installed in $work/tree2"
echo "ok: luarocks make fails without usable Lua headers"

echo "ok: the rock built, loaded and went away"
