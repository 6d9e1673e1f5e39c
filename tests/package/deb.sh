#!/usr/bin/env bash
# deb.sh SOURCE_DIR CC - the Debian packages, built, linted, installed,
# used and removed (label "package").
#
#   1. dpkg-buildpackage -us -uc -b in a copy of the tree (in a temporary
#      directory: the .debs land next to it); the build itself fails when
#      the library's exports differ from debian/libtether1.symbols
#      (dpkg-gensymbols -c4) or debian/changelog's version from version.h;
#   2. lintian on the .changes: no error and no warning (an accepted one is
#      overridden in debian/*.lintian-overrides with its reason);
#   3. apt-get install ./*.deb, then against /usr, with no environment:
#      tests/abi/consumer built with find_package(tether 1) and with
#      pkg-config, each run and loading /usr's libtether.so.1; the plugin
#      template from libtether-dev's examples built with tether_add_plugin
#      and passed by tether-plugin-check; lua5.4 -e 'require "tether"'
#      with no LUA_CPATH running a thread;
#   4. the packages purged; nothing of tether is left under /usr (every file
#      the packages installed is gone, and no name with "tether" in it is
#      there that was not there before; /usr/local, which the packages never
#      touch and where others may `cmake --install` meanwhile, is left out).
#
# Other people's tests may run on the same machine: the install-to-purge
# window is short (everything is built before it), taken under a machine-
# wide lock (two runs never overlap), each step in it has a timeout, and
# the purge runs from a trap.  A run killed outright (SIGKILL) leaves a
# marker; the next run purges what that one left.
#
# Skips (exit 77) unless run as root with dpkg-buildpackage, lintian and
# apt-get present.
set -uo pipefail

src="$(cd "$1" && pwd)"
cc="${2:-cc}"
here="$(cd "$(dirname "$0")" && pwd)"
pkgs=(libtether1 libtether-dev lua-tether tether-tools)
lockdir=/run/lock
[ -d "$lockdir" ] || lockdir=/tmp
lock="$lockdir/tether-package-test.lock"
# Outlives a reboot, as the installed packages would.
marker=/var/tmp/tether-package-test.installed

skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*"; exit 1; }
step() { echo; echo "=== $* ==="; }
# A command inside the install window: bounded, so the trap always runs
# before CTest's own timeout would kill this script.
run() { echo "\$ $*"; timeout 120 "$@"; }

[ "$(id -u)" -eq 0 ] || skip "not root (the test installs packages into /usr)"
for t in dpkg-buildpackage dh lintian apt-get dpkg-query flock; do
  command -v "$t" >/dev/null || skip "$t is not installed (scripts/deps.sh all installs it)"
done

work="$(mktemp -d /tmp/tether-deb.XXXXXX)"
chmod 755 "$work" # apt's _apt user reads the .debs from here
installed=0

# Purges the packages if this run (or a killed earlier one) installed them.
purge() {
  local present=()
  for p in "${pkgs[@]}"; do
    if dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null |
         grep -qv '^not-installed$'; then
      present+=("$p")
    fi
  done
  if [ "${#present[@]}" -gt 0 ]; then
    echo "\$ apt-get purge -y ${present[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get purge -y -q \
      -o DPkg::Lock::Timeout=240 -o Dpkg::Use-Pty=0 "${present[@]}" </dev/null || return 1
  fi
  rm -f "$marker"
}
cleanup() {
  local rc=$?
  if [ "$installed" -eq 1 ]; then
    echo "--- cleanup: purging the packages"
    purge || echo "cleanup: the purge failed; run: apt-get purge ${pkgs[*]}"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

step "1. build the packages from a copy of the tree ($work)"
"$here/copy_tree.sh" "$src" "$work/tether" || fail "could not copy the tree"
t0=$SECONDS
(cd "$work/tether" &&
   DEB_BUILD_OPTIONS="parallel=2 nocheck noautodbgsym" dpkg-buildpackage -us -uc -b) \
  >"$work/build.log" 2>&1 || {
  tail -n 80 "$work/build.log"
  fail "dpkg-buildpackage failed (the last lines of its log above)"
}
grep -E '^dpkg-gensymbols|^dpkg-buildpackage: info|warning' "$work/build.log" || true
echo "built in $((SECONDS - t0)) s:"
(cd "$work" && ls -l ./*.deb) || fail "no .deb was built"
for p in "${pkgs[@]}"; do
  ls "$work/${p}_"*.deb >/dev/null 2>&1 || fail "no package $p was built"
done
for d in "$work"/*.deb; do
  echo "--- $(basename "$d")"
  dpkg-deb -I "$d" | sed -n 's/^ \(Package\|Version\|Depends\|Multi-Arch\|Provides\):/  \1:/p'
  dpkg-deb -c "$d" | awk '{print "  " $6 ($7 ? " " $7 " " $8 : "")}'
done
echo "--- libtether1's DEBIAN/symbols (head)"
dpkg-deb -I "$work"/libtether1_*.deb symbols | head -n 6

step "2. lintian"
t0=$SECONDS
# (Not --show-overrides: with it, lintian 2.116 counts overridden warnings
# towards --fail-on.)
echo "\$ lintian --fail-on error,warning --display-info --pedantic *.changes"
(cd "$work" && lintian --fail-on error,warning --display-info --pedantic \
   ./*.changes) || fail "lintian reported an error or a warning (above)"
echo "lintian: no error, no warning ($((SECONDS - t0)) s)"
echo "overridden, each with its reason (debian/*.lintian-overrides):"
for f in "$work"/tether/debian/*.lintian-overrides; do
  grep -v '^#' "$f" | sed "s|^|  $(basename "$f" .lintian-overrides): |"
done

# Everything the window needs, ready before it opens.
triplet="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
cat >"$work/check.lua" <<'LUA'
local tether = require "tether"
local where = package.searchpath("tether", package.cpath)
local t = tether.thread(function(a, b) return a * b end, 6, 7)
local ok, v = t:join()
assert(ok and v == 42, "the thread did not run: " .. tostring(v))
print("lua: require \"tether\" from " .. where .. ", a thread returned " .. v)
LUA
clean_env=(env -i PATH=/usr/bin:/bin HOME="$work" LANG=C.UTF-8)
# The consumer prints "tether X from PATH"; PATH may be /lib/... (merged
# /usr), the same file.
loaded_from_usr() {
  local path="${1##* from }"
  [ -n "$path" ] && [ "$(realpath "$path")" = "$(realpath "/usr/lib/$triplet/libtether.so.1")" ]
}

step "3. install, use against /usr"
exec 9>"$lock"
echo "waiting for the machine-wide lock $lock"
flock -w 1200 9 || fail "another run held $lock for 20 minutes"
if [ -e "$marker" ]; then
  echo "a killed earlier run left the packages installed: purging them first"
  installed=1
  purge || fail "could not purge what an earlier run left"
  installed=0
fi
for p in "${pkgs[@]}"; do
  if dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null |
       grep -qv '^not-installed$'; then
    fail "$p is already installed, not by this test: not touching it"
  fi
done
find /usr -xdev -path /usr/local -prune -o -iname '*tether*' -print 2>/dev/null | sort >"$work/before"
t0=$SECONDS
touch "$marker"
installed=1
echo "\$ apt-get install -y ./*.deb"
(cd "$work" && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q \
   --no-install-recommends -o DPkg::Lock::Timeout=240 -o Dpkg::Use-Pty=0 ./*.deb </dev/null) ||
  fail "apt-get install failed"
for p in "${pkgs[@]}"; do dpkg -L "$p"; done | sort -u >"$work/files"
dpkg-query -W -f='${Package} ${Version} ${db:Status-Status}\n' "${pkgs[@]}"

# find_package(tether 1) with nothing but /usr to search.
run "${clean_env[@]}" cmake -S "$src/tests/abi/consumer" -B "$work/consumer-cmake" \
  -DCMAKE_C_COMPILER="$cc" >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "find_package(tether 1) did not configure"; }
grep -i "tether" "$work/consumer-cmake/CMakeCache.txt" | grep -i "tether_DIR" || true
run "${clean_env[@]}" cmake --build "$work/consumer-cmake" >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "the find_package consumer did not build"; }
out="$(run "${clean_env[@]}" "$work/consumer-cmake/consumer")" ||
  fail "the find_package consumer failed: $out"
echo "$out"
loaded_from_usr "$out" || fail "the find_package consumer did not load /usr/lib/$triplet/libtether.so.1"

# pkg-config tether, with the system's search path only.
echo "\$ pkg-config --cflags --libs tether"
flags="$(timeout 60 "${clean_env[@]}" pkg-config --cflags --libs tether)" ||
  fail "pkg-config does not know tether"
echo "$flags (--modversion: $("${clean_env[@]}" pkg-config --modversion tether))"
run "${clean_env[@]}" "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror \
  "$src/tests/abi/consumer/consumer.c" -o "$work/consumer-pc" $flags ||
  fail "the pkg-config consumer did not build"
out="$(run "${clean_env[@]}" "$work/consumer-pc")" ||
  fail "the pkg-config consumer failed: $out"
echo "$out"
loaded_from_usr "$out" || fail "the pkg-config consumer did not load /usr/lib/$triplet/libtether.so.1"

# The plugin template libtether-dev ships, checked by tether-tools.
tpl=/usr/share/doc/libtether-dev/examples/plugin-template
[ -f "$tpl/CMakeLists.txt" ] || fail "libtether-dev has no $tpl"
run "${clean_env[@]}" cmake -S "$tpl" -B "$work/plugin" -DCMAKE_C_COMPILER="$cc" \
  >"$work/cmake.log" 2>&1 &&
  run "${clean_env[@]}" cmake --build "$work/plugin" >>"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "the plugin template did not build against /usr"; }
out="$(run "${clean_env[@]}" tether-plugin-check --exports "$tpl/exports.txt" \
  "$work/plugin/template_plugin.so")" || { echo "$out"; fail "tether-plugin-check failed"; }
echo "$out" | grep -E 'tether-plugin-check|verdict'

# The stock interpreter, no LUA_CPATH, no LUA_INIT.
echo "\$ env -i lua5.4 -e 'require \"tether\" ...'"
out="$(run "${clean_env[@]}" lua5.4 "$work/check.lua" 2>&1)" ||
  { echo "$out"; fail "lua5.4 could not use require \"tether\""; }
echo "$out"
case "$out" in *"/usr/lib/$triplet/lua/5.4/tether.so"*) ;;
  *) fail "lua5.4 did not load /usr/lib/$triplet/lua/5.4/tether.so" ;; esac

step "4. purge, nothing left"
purge || fail "the purge failed"
installed=0
echo "installed for $((SECONDS - t0)) s"
flock -u 9
left=()
while IFS= read -r f; do
  [ -d "$f" ] && [ ! -L "$f" ] && continue # shared directories stay
  if [ -e "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
done <"$work/files"
[ "${#left[@]}" -eq 0 ] || fail "left after the purge: ${left[*]}"
find /usr -xdev -path /usr/local -prune -o -iname '*tether*' -print 2>/dev/null | sort >"$work/after"
if ! diff -u "$work/before" "$work/after"; then
  fail "names with 'tether' under /usr that were not there before (above)"
fi
for p in "${pkgs[@]}"; do
  if dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null |
       grep -qv '^not-installed$'; then
    fail "$p is still known to dpkg after the purge"
  fi
done
echo "ok: $(wc -l <"$work/files") paths installed and all removed; nothing of tether left under /usr"
