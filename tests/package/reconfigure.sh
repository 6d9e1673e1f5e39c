#!/usr/bin/env bash
# reconfigure.sh SOURCE_DIR - a build tree follows version.h (label
# "package").
#
# CMake reads the version from abi/include/tether/version.h when it
# configures; tether.pc, tetherConfigVersion.cmake and the library's file
# name (libtether.so.X.Y.Z) come from it.  Editing version.h must make the
# next build configure again, in every build tree, including one with
# BUILD_TESTING=OFF (README "From source"), where no test fixture happens to
# depend on version.h.  In a copy of the tree: configure with
# BUILD_TESTING=OFF, raise the patch version in the copy's version.h, run
# the generator's own up-to-date check, and read tether.pc's Version.
set -uo pipefail
src="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "FAILED: $*"; exit 1; }
work="$(mktemp -d /tmp/tether-reconf.XXXXXX)"
trap 'rm -rf "$work"' EXIT

"$here/copy_tree.sh" "$src" "$work/src" || fail "could not copy the tree"
cmake -S "$work/src" -B "$work/build" -G "Unix Makefiles" -DBUILD_TESTING=OFF \
  >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; fail "configure"; }
before="$(sed -n 's/^Version: //p' "$work/build/tether.pc")"
vh="$work/src/abi/include/tether/version.h"
patch="$(sed -n 's/^#define TETHER_VERSION_PATCH \([0-9]*\).*/\1/p' "$vh")"
[ -n "$patch" ] || fail "no TETHER_VERSION_PATCH in version.h"
sed -i "s/^#define TETHER_VERSION_PATCH $patch/#define TETHER_VERSION_PATCH $((patch + 1))/" "$vh"
want="${before%.*}.$((patch + 1))"
echo "tether.pc: $before; version.h raised to $want"
cmake --build "$work/build" --target cmake_check_build_system >"$work/check.log" 2>&1 ||
  { cat "$work/check.log"; fail "the build system's up-to-date check failed"; }
after="$(sed -n 's/^Version: //p' "$work/build/tether.pc")"
echo "tether.pc after the build system's check: $after"
[ "$after" = "$want" ] ||
  fail "editing version.h did not configure again (tether.pc still says $after, want $want)"
echo "ok: editing version.h configures the build tree again"
