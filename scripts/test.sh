#!/usr/bin/env bash
# Builds tether and runs its tests under each preset: dev, asan-ubsan, tsan,
# valgrind.
#
#   scripts/test.sh [preset...]      (default: dev asan-ubsan tsan valgrind)
#
# The valgrind preset runs only the tests labelled "valgrind" (the unit and
# stress programs under helgrind and DRD); its other tests are the dev
# preset's again.
#
# Every preset is configured, built and tested even when an earlier one
# failed; a summary with one line per preset comes last, and the exit status
# is non-zero if any build or test failed.
#
# The dev preset also runs the stress and reliability suites a second time
# in chaos mode (TETHER_CHAOS, random sleeps at the core's delay points).
#
# The package tests (label "package": the Debian packages and the LuaRocks
# rock, built from the tree, installed and removed; tests/package) run once,
# in the dev preset: the sanitizer builds do not register them, and the
# other presets leave them out.
#
# Environment:
#   TETHER_BUILD_ROOT     where the build trees go (default: build, as in
#                         CMakePresets.json), e.g. build/mine on a shared box
#   TETHER_CTEST_TIMEOUT  seconds after which ctest kills one test (default 600)
#   TETHER_JOBS           parallel compile jobs (default: nproc)
#   TETHER_CHAOS          the chaos run's seed (default: a random one)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

scripts/deps.sh all || exit 1

if [ "$#" -gt 0 ]; then presets=("$@"); else presets=(dev asan-ubsan tsan valgrind); fi
root="${TETHER_BUILD_ROOT:-build}"
ctest_timeout="${TETHER_CTEST_TIMEOUT:-600}"
jobs="${TETHER_JOBS:-$(nproc)}"

summary=()
failed=0

# Configures, builds and tests one preset; sets $stage to the step that
# failed (or "ok") and $build_s / $test_s to the seconds each part took.
run_preset() {
  local preset="$1" dir="$root/$1" t0="$SECONDS"
  build_s=0 test_s=0
  stage=configure
  cmake --preset "$preset" -B "$dir" || return 1
  stage=build
  cmake --build "$dir" -j"$jobs" || { build_s=$((SECONDS - t0)); return 1; }
  build_s=$((SECONDS - t0))
  stage="test"
  t0="$SECONDS"
  local only=()
  [ "$preset" = valgrind ] && only=(-L valgrind)
  [ "$preset" = dev ] || only+=(-LE package)
  # Not `ctest --preset`: it ignores --test-dir and would test the preset's
  # own binaryDir.  The test presets add nothing but --output-on-failure
  # and the valgrind preset's label filter, both repeated here.
  ctest --test-dir "$dir" --output-on-failure -j2 --timeout "$ctest_timeout" \
    --no-tests=error "${only[@]}" || { test_s=$((SECONDS - t0)); return 1; }
  # The random-delay pass (dev only, about a minute): the stress and
  # reliability suites again with the delay points sleeping at random
  # (core/delay.h, docs/testing.md "Ordering tests").  The seed is printed;
  # TETHER_CHAOS=seed gives each thread the same random choices again (the
  # thread schedule itself still varies).
  if [ "$preset" = dev ]; then
    stage=chaos
    local seed="${TETHER_CHAOS:-$(( (RANDOM << 15) | RANDOM | 1 ))}"
    echo "=== dev: chaos run, TETHER_CHAOS=$seed ==="
    TETHER_CHAOS="$seed" ctest --test-dir "$dir" --output-on-failure -j2 \
      --timeout "$ctest_timeout" --no-tests=error -L 'stress|reliability' \
      -LE valgrind ||
      { test_s=$((SECONDS - t0)); return 1; }
  fi
  test_s=$((SECONDS - t0))
  stage=ok
}

total0="$SECONDS"
for preset in "${presets[@]}"; do
  echo
  echo "=== $preset ==="
  if run_preset "$preset"; then
    result="ok"
  else
    result="FAILED at $stage"
    failed=1
  fi
  summary+=("$(printf '%-12s %-20s build %4ds  test %4ds' \
    "$preset" "$result" "$build_s" "$test_s")")
done

echo
echo "=== summary ($((SECONDS - total0)) s in all) ==="
printf '%s\n' "${summary[@]}"
exit "$failed"
