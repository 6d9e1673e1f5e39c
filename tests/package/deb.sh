#!/usr/bin/env bash
# deb.sh SOURCE_DIR CC - the Debian packages, built, linted, installed,
# used and removed (label "package").
#
#   1. dpkg-buildpackage -us -uc -b in a copy of the tree (in a temporary
#      directory: the .debs land next to it); the build itself fails when
#      the library's exports differ from debian/libtether1.symbols
#      (dpkg-gensymbols -c4) or debian/changelog's version from version.h;
#      libtether-dev holds /usr/include/tether/lua.h and lua-tether
#      /usr/share/lua/5.4/tether/socket.lua;
#   2. lintian on the .changes: no error and no warning (an accepted one is
#      overridden in debian/*.lintian-overrides with its reason);
#   3. apt-get install ./*.deb, then against /usr, with no environment:
#      tests/abi/consumer built with find_package(tether 1) and with
#      pkg-config (whose flags, --static too, are -ltether alone: tether.pc
#      says prefix=/usr, so the system -I and -L are dropped), each run
#      and loading /usr's libtether.so.1; the plugin
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
    # dpkg alone is quicker (no apt resolver); apt-get waits for the dpkg
    # lock if someone else holds it.
    echo "\$ dpkg --purge ${present[*]}"
    if ! DEBIAN_FRONTEND=noninteractive timeout 300 dpkg --purge "${present[@]}" </dev/null; then
      echo "\$ apt-get purge -y ${present[*]}"
      DEBIAN_FRONTEND=noninteractive timeout 300 apt-get purge -y -q \
        -o DPkg::Lock::Timeout=240 -o Dpkg::Use-Pty=0 "${present[@]}" </dev/null || return 1
    fi
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
# The files of issue 18 in the package that must hold them: the C
# interface for other Lua C modules and the socket module.
for pf in libtether-dev:./usr/include/tether/lua.h \
          lua-tether:./usr/share/lua/5.4/tether/socket.lua; do
  p="${pf%%:*}" f="${pf#*:}"
  dpkg-deb -c "$work/${p}_"*.deb | awk '{print $6}' | grep -qxF "$f" ||
    fail "$p does not hold ${f#.}"
  echo "$p holds ${f#.}"
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
clean_env=(env -i PATH=/usr/bin:/bin HOME="$work" LANG=C.UTF-8)
# The consumer prints "tether X from PATH"; PATH may be /lib/... (merged
# /usr), the same file.
loaded_from_usr() {
  local path="${1##* from }"
  [ -n "$path" ] && [ "$(realpath "$path")" = "$(realpath "/usr/lib/$triplet/libtether.so.1")" ]
}

# Everything the window needs is prepared before it opens: the CMake
# consumers are configured once against the packages' files unpacked into
# a staging directory (compiler checks and all), so that in the window
# they only search again, in /usr alone.
stage="$work/stage"
for d in "$work"/*.deb; do dpkg-deb -x "$d" "$stage"; done
cp -r "$stage/usr/share/doc/libtether-dev/examples/plugin-template" "$work/template"
# tether.pc as installed in /usr: pkg-config drops the system directories
# from its flags only when they are spelled /usr/include and
# /usr/lib/<triplet> (a relocatable .pc says .../pkgconfig/../../..).
pcfile="$stage/usr/lib/$triplet/pkgconfig/tether.pc"
echo "--- $(basename "$pcfile") (libtether-dev)"
grep -v '^#' "$pcfile" | sed 's/^/  /'
grep -qx 'prefix=/usr' "$pcfile" ||
  fail "tether.pc's prefix is not /usr: pkg-config would pass the system directories as -I and -L"
for pair in "$src/tests/abi/consumer:$work/consumer-cmake" "$work/template:$work/plugin"; do
  "${clean_env[@]}" cmake -S "${pair%%:*}" -B "${pair#*:}" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_PREFIX_PATH="$stage/usr" >"$work/stage.log" 2>&1 ||
    { cat "$work/stage.log"; fail "${pair%%:*} did not configure against the staged packages"; }
done

# Configures the project in source $1, build tree $2 again, against /usr
# only, builds it, and checks that find_package found tether there.
reconfigure() {
  run "${clean_env[@]}" cmake -S "$1" -B "$2" -U 'tether_DIR' -DCMAKE_PREFIX_PATH= \
    >"$2.log" 2>&1 || { cat "$2.log"; echo "FAILED: configure $2"; return 1; }
  shift
  local dir
  dir="$(sed -n 's/^tether_DIR:PATH=//p' "$1/CMakeCache.txt")"
  echo "find_package(tether): $dir"
  [ "$(realpath "$dir")" = "$(realpath "/usr/lib/$triplet/cmake/tether")" ] ||
    { echo "FAILED: found tether in $dir, not /usr/lib/$triplet/cmake/tether"; return 1; }
  run "${clean_env[@]}" cmake --build "$1" >"$1.log" 2>&1 ||
    { cat "$1.log"; echo "FAILED: build $1"; return 1; }
}
# find_package(tether 1) + tether::tether, with nothing but /usr to search.
consume_cmake() {
  echo "--- tests/abi/consumer with find_package"
  reconfigure "$src/tests/abi/consumer" "$work/consumer-cmake" || return 1
  out="$(run "${clean_env[@]}" "$work/consumer-cmake/consumer")" ||
    { echo "$out"; echo "FAILED: the find_package consumer"; return 1; }
  echo "$out"
  loaded_from_usr "$out" ||
    { echo "FAILED: it did not load /usr/lib/$triplet/libtether.so.1"; return 1; }
}
# pkg-config tether, with the system's search path only.
consume_pc() {
  echo "--- tests/abi/consumer with pkg-config"
  echo "\$ pkg-config --cflags --libs tether"
  flags="$(timeout 60 "${clean_env[@]}" pkg-config --cflags --libs tether)" ||
    { echo "FAILED: pkg-config does not know tether"; return 1; }
  echo "$flags (--modversion: $("${clean_env[@]}" pkg-config --modversion tether))"
  static="$(timeout 60 "${clean_env[@]}" pkg-config --static --cflags --libs tether)"
  echo "\$ pkg-config --static --cflags --libs tether: $static"
  # /usr/include and /usr/lib/<triplet> are the compiler's own: no -I, no -L.
  for f in "$flags" "$static"; do
    [ "$(echo $f)" = "-ltether" ] ||
      { echo "FAILED: pkg-config gives '$f', not just -ltether"; return 1; }
  done
  run "${clean_env[@]}" "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror \
    "$src/tests/abi/consumer/consumer.c" -o "$work/consumer-pc" $flags ||
    { echo "FAILED: the pkg-config consumer did not build"; return 1; }
  out="$(run "${clean_env[@]}" "$work/consumer-pc")" ||
    { echo "$out"; echo "FAILED: the pkg-config consumer"; return 1; }
  echo "$out"
  loaded_from_usr "$out" ||
    { echo "FAILED: it did not load /usr/lib/$triplet/libtether.so.1"; return 1; }
}
# The plugin template libtether-dev ships, built with the installed
# tether_add_plugin and passed by the installed tether-plugin-check.
consume_template() {
  echo "--- the plugin template (libtether-dev's examples)"
  local tpl=/usr/share/doc/libtether-dev/examples/plugin-template
  [ -f "$tpl/CMakeLists.txt" ] || { echo "FAILED: libtether-dev has no $tpl"; return 1; }
  reconfigure "$work/template" "$work/plugin" || return 1
  out="$(run "${clean_env[@]}" tether-plugin-check --exports "$tpl/exports.txt" \
    "$work/plugin/template_plugin.so")" ||
    { echo "$out"; echo "FAILED: tether-plugin-check"; return 1; }
  echo "$out" | grep -E 'tether-plugin-check|verdict'
}
# The stock interpreter, no LUA_CPATH, no LUA_INIT.
consume_lua() {
  echo "--- lua5.4, no LUA_CPATH"
  out="$(run "${clean_env[@]}" lua5.4 "$here/check.lua" 2>&1)" ||
    { echo "$out"; echo "FAILED: lua5.4 could not require \"tether\""; return 1; }
  echo "$out"
  case "$out" in *"/usr/lib/$triplet/lua/5.4/tether.so"*) ;;
    *) echo "FAILED: lua5.4 did not load /usr/lib/$triplet/lua/5.4/tether.so"; return 1 ;; esac
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

echo "(apt-get install: $((SECONDS - t0)) s)"

# The four consumers, side by side (their output follows, in order).
t1=$SECONDS
consume_cmake >"$work/c1.log" 2>&1 & p1=$!
consume_pc >"$work/c2.log" 2>&1 & p2=$!
consume_template >"$work/c3.log" 2>&1 & p3=$!
consume_lua >"$work/c4.log" 2>&1 & p4=$!
bad=0
for j in 1 2 3 4; do
  pid_var="p$j"
  wait "${!pid_var}" || bad=1
  cat "$work/c$j.log"
done
echo "(consumers: $((SECONDS - t1)) s)"
[ "$bad" -eq 0 ] || fail "a consumer failed against /usr (above)"

step "4. purge, nothing left"
purge || fail "the purge failed"
installed=0
echo "installed for $((SECONDS - t0)) s (from apt-get install to the end of the purge)"
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
# The lock is held until here: another run's install must not show up in
# this run's scan.
flock -u 9
echo "ok: $(wc -l <"$work/files") paths installed and all removed; nothing of tether left under /usr"
