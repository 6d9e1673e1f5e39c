#!/usr/bin/env bash
# Mutation testing: applies each mutant of scripts/mutants.txt, one at a
# time, to the source tree, builds, runs the fast labels and reports which
# mutants the suite killed (a test failed) and which survived.
#
#   scripts/mutate.sh [ID...]       run these mutants (default: all)
#   scripts/mutate.sh --check       every mutant still applies (exactly one
#                                   match per hunk); no build
#   scripts/mutate.sh --apply ID    apply one mutant to the tree and stop
#                                   (to watch a test fail); --revert ID
#                                   undoes it
#   scripts/mutate.sh --list        the mutants' ids and descriptions
#
# Not in CI: each mutant costs a build and a run of the labels unit,
# stress, lua, plugin and ffi (not valgrind), each test capped at
# TETHER_MUTATE_TIMEOUT seconds (default 120; the cap overrides the tests'
# own TIMEOUT, which ctest's --timeout does not); the run of a mutant stops
# at its first failing test.  Run it before resolving
# an issue that touches the core and record the score in docs/testing.md.
#
# Environment:
#   TETHER_MUTATE_BUILD    build tree (default build/mutate, dev preset)
#   TETHER_MUTATE_TIMEOUT  per-test cap in seconds (default 120)
#   TETHER_MUTATE_CASE_TIMEOUT  per-case cap of the C test programs
#                          (TETHER_TEST_TIMEOUT_CAP, default 100 s: the
#                          storms take 10-20 s alone, more under load)
#   TETHER_JOBS            compile jobs (default 2)
#
# The tree is restored after each mutant, and on exit or interrupt.  Do not
# edit the sources while it runs.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
list=scripts/mutants.txt
build="${TETHER_MUTATE_BUILD:-build/mutate}"
cap="${TETHER_MUTATE_TIMEOUT:-120}"
jobs="${TETHER_JOBS:-2}"
case_cap="${TETHER_MUTATE_CASE_TIMEOUT:-100}"

# mut <apply|revert|check|ids|describe> [ID]: the mutant file's parser.
# apply keeps the original file under $build/orig for revert.
mut() {
  MUTATE_ORIG="$build/orig" python3 -B - "$list" "$@" <<'PY'
import sys, re
path, op = sys.argv[1], sys.argv[2]
mid = sys.argv[3] if len(sys.argv) > 3 else None
muts, cur, hunk, side = [], None, None, None
for line in open(path).read().split("\n"):
    if side is None and line.startswith("@@ "):
        m = re.match(r"@@ (\S+) (\S+): (.*)", line)
        cur = {"id": m[1], "file": m[2], "what": m[3], "hunks": []}
        muts.append(cur)
    elif side is None and line == "<<<":
        hunk, side = [[], []], 0
    elif side == 0 and line == "===":
        side = 1
    elif side == 1 and line == ">>>":
        cur["hunks"].append(("\n".join(hunk[0]) + "\n", "\n".join(hunk[1]) + "\n"))
        side = None
    elif side is not None:
        hunk[side].append(line)
if op == "ids":
    print(" ".join(m["id"] for m in muts)); sys.exit(0)
if op == "describe":
    for m in muts:
        if mid in (None, m["id"]):
            print(f'{m["id"]:4} {m["file"]}: {m["what"]}')
    sys.exit(0)
import os
keep = os.environ["MUTATE_ORIG"]
bad = 0
for m in muts:
    if mid not in (None, m["id"]):
        continue
    saved = os.path.join(keep, m["id"])
    if op == "revert":
        # The original, kept by apply: mutated text need not be unique.
        if os.path.exists(saved):
            open(m["file"], "w").write(open(saved).read())
            os.remove(saved)
        else:
            print(f'{m["id"]}: not applied', file=sys.stderr); bad = 1
        continue
    src, mbad = open(m["file"]).read(), 0
    orig = src
    for old, new in m["hunks"]:
        n = src.count(old)
        if n != 1:
            print(f'{m["id"]}: a hunk matches {n} times in {m["file"]}', file=sys.stderr)
            bad = mbad = 1
            continue
        src = src.replace(old, new)
    if op == "apply" and not mbad:
        os.makedirs(keep, exist_ok=True)
        open(saved, "w").write(orig)
        open(m["file"], "w").write(src)
    if op == "check" and not mbad:
        print(f'{m["id"]}: applies')
if mid and not any(m["id"] == mid for m in muts):
    print(f"no mutant {mid}", file=sys.stderr); bad = 1
sys.exit(bad)
PY
}

case "${1:-}" in
  --check) mut check; exit ;;
  --list) mut describe; exit ;;
  --apply) mut apply "$2"; exit ;;
  --revert) mut revert "$2"; exit ;;
esac

if [ "$#" -gt 0 ]; then ids=("$@"); else read -r -a ids <<<"$(mut ids)"; fi
mut check >/dev/null || { echo "mutate.sh: mutants do not apply; fix $list"; exit 1; }
if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet -- core bindings; then
  echo "mutate.sh: core/ or bindings/ has uncommitted changes; commit or stash them first"
  exit 1
fi

current=""
restore() { [ -n "$current" ] && mut revert "$current" >/dev/null; current=""; }
trap 'restore; exit 130' INT TERM
trap restore EXIT

cmake --preset dev -B "$build" >/dev/null || exit 1
cmake --build "$build" -j"$jobs" >/dev/null || { echo "mutate.sh: the unmutated tree does not build"; exit 1; }

# Caps every test's TIMEOUT in the generated test files (a test's own
# TIMEOUT would override ctest --timeout).
cap_timeouts() {
  find "$build" -name CTestTestfile.cmake -exec \
    sed -i -E "s/TIMEOUT \"([0-9]+)\"/TIMEOUT \"$cap\"/g" {} +
}

killed=() survived=() stillborn=()
t0="$SECONDS"
for id in "${ids[@]}"; do
  mut apply "$id" || exit 1
  current="$id"
  m0="$SECONDS"
  if ! cmake --build "$build" -j"$jobs" >"$build/mutant-$id.build.log" 2>&1; then
    stillborn+=("$id")
    verdict="does not build"
  else
    cap_timeouts
    if TETHER_TEST_TIMEOUT_CAP="$case_cap" ctest --test-dir "$build" -L 'unit|stress|lua|plugin|ffi' -LE valgrind \
         -j2 --timeout "$cap" --output-on-failure --stop-on-failure >"$build/mutant-$id.log" 2>&1; then
      survived+=("$id")
      verdict="SURVIVED"
    else
      killed+=("$id")
      verdict="killed by: $(grep -E '^\s+[0-9]+ - ' "$build/mutant-$id.log" |
        sed -E 's/^\s+[0-9]+ - //' | tr '\n' ' ')"
    fi
  fi
  restore
  echo "$id  ($((SECONDS - m0)) s)  $verdict"
done
cmake --build "$build" -j"$jobs" >/dev/null 2>&1 # back to the real tree

total=$(( ${#killed[@]} + ${#survived[@]} ))
echo
echo "mutation score: ${#killed[@]}/$total killed ($((SECONDS - t0)) s)"
[ "${#survived[@]}" -gt 0 ] && { echo "survivors:"; for id in "${survived[@]}"; do mut describe "$id"; done; }
[ "${#stillborn[@]}" -gt 0 ] && echo "did not build (fix the list): ${stillborn[*]}"
[ "${#survived[@]}" -eq 0 ] && [ "${#stillborn[@]}" -eq 0 ]
