#!/bin/sh
# against_script.sh SRC BENCH LIBTETHER OUTDIR - scripts/bench.sh --against
# itself (docs/performance.md), with a stand-in for cmake that builds
# nothing: this build's tether-bench and libtether.so.1 are put where the
# script's own build and its cached build of the revision (HEAD) would be.
# The script must refuse a bad argument before it builds anything, must not
# table an earlier invocation's runs when a run writes nothing, and must
# load each run's library whatever LD_LIBRARY_PATH already holds.
set -eu
src=$1 bench=$2 lib=$3 work=$4
rev=$(git -C "$src" rev-parse --verify --quiet HEAD) ||
  { echo "skip: $src is not a git checkout"; exit 77; }
short=$(printf %.12s "$rev")
rm -rf "$work"
mkdir -p "$work/bin" "$work/build/bench" "$work/build/core" \
  "$work/build-against-$short/build/core" "$work/bogus"
printf '#!/bin/sh\necho "$*" >> "%s/cmake.log"\n' "$work" > "$work/bin/cmake"
chmod +x "$work/bin/cmake"
ln -s "$bench" "$work/build/bench/tether-bench"
ln -s "$lib" "$work/build/core/libtether.so.1"
ln -s "$lib" "$work/build-against-$short/build/core/libtether.so.1"
: > "$work/bogus/libtether.so.1" # not a library: loading it fails
PATH="$work/bin:$PATH" TETHER_BENCH_BUILD="$work/build"
TETHER_BENCH_OUT="$work/out"
export PATH TETHER_BENCH_BUILD TETHER_BENCH_OUT
fail() { cat "$work/log" >&2; echo "FAIL: $*" >&2; exit 1; }
quick="--smoke --reps 2 --only gilstate --runs 1"

# A bad argument: usage status 2, and no build started.
for args in "--against" "--against HEAD --runs" "--against HEAD --runs abc" \
            "--against HEAD --runs 0" "--against no-such-revision" \
            "--runs 2"; do
  rc=0
  # shellcheck disable=SC2086 # the words of args are the arguments
  "$src/scripts/bench.sh" $args >"$work/log" 2>&1 || rc=$?
  [ "$rc" = 2 ] || fail "bench.sh $args: status $rc, not 2"
  [ ! -e "$work/cmake.log" ] || fail "bench.sh $args: built before refusing"
done
rc=0
"$src/scripts/bench.sh" --against "" >"$work/log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "bench.sh --against '': status $rc, not 2"
[ ! -e "$work/cmake.log" ] || fail "bench.sh --against '': built"

# shellcheck disable=SC2086
"$src/scripts/bench.sh" --against HEAD $quick >"$work/log" 2>&1 ||
  fail "bench.sh --against HEAD $quick"
grep -q '^| ensure/release on a brand-new thread |' "$work/out/against.md" ||
  fail "no table"

# A library named libtether.so.1 already on LD_LIBRARY_PATH.
# shellcheck disable=SC2086
LD_LIBRARY_PATH="$work/bogus" "$src/scripts/bench.sh" --against HEAD $quick \
  >"$work/log" 2>&1 || fail "a run loaded LD_LIBRARY_PATH's libtether"

# Runs that write nothing (tether-bench refuses --reps 0): an error, and no
# table of the runs above.
rc=0
"$src/scripts/bench.sh" --against HEAD --smoke --reps 0 --only gilstate \
  --runs 1 >"$work/log" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "runs that wrote nothing: status 0"
if grep -qs '^| ensure/release' "$work/out/against.md"; then
  fail "runs that wrote nothing: against.md tables the earlier runs"
fi
echo "ok: bad arguments refused before the build; each run's own results" \
  "and library"
