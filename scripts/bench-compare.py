#!/usr/bin/env python3
"""Compares tether-bench runs of two libraries: the table of
scripts/bench.sh --against REV.

    scripts/bench-compare.py NAME OUT RUNS

reads OUT/before-1 .. OUT/before-RUNS and OUT/after-1 .. OUT/after-RUNS
(each a tether-bench --out directory: results.json) and prints a Markdown
table: for every row, the ratio (tether / baseline, each side against its
own baseline in its own run) of every run before and after, and the
target's result.  NAME is what the "before" library is called in the
heading.  Rows are matched by their id; a row one side lacks is shown
missing there.  A group that failed in a run (its rows may hold part of
the repetitions, or none) is named in that run's line.
"""
import json
import sys


def load(path):
    try:
        with open(path + "/results.json") as f:
            return json.load(f)
    except FileNotFoundError:
        sys.exit("bench-compare: no %s/results.json: that run wrote no "
                 "results" % path)


def ratio(row):
    r = row.get("ratio")
    return "—" if r is None else "%.3g×" % r


def fmt_value(row):
    t = row.get("tether") or {}
    m = t.get("median")
    if m is None:
        return "—"
    unit = row.get("unit")
    if unit == "ns":
        for div, name in ((1e6, "ms"), (1e3, "µs")):
            if m >= div:
                return "%.3g %s" % (m / div, name)
        return "%.3g ns" % m
    if unit == "per_s":
        for div, name in ((1e6, "M/s"), (1e3, "k/s")):
            if m >= div:
                return "%.4g %s" % (m / div, name)
        return "%.4g /s" % m
    if unit == "bytes":
        for div, name in ((1e6, "MB"), (1e3, "kB")):
            if m >= div:
                return "%.3g %s" % (m / div, name)
        return "%.3g B" % m
    return "%.3g" % m


def target(row):
    t = row.get("target") or {}
    kind, v = t.get("kind"), t.get("value")
    return {
        "ratio_max": "≤ %g×", "ratio_min": "≥ %g×",
        "abs_max": "≤ %g", "abs_min": "≥ %g",
    }.get(kind, "report") % ((v,) if kind in (
        "ratio_max", "ratio_min", "abs_max", "abs_min") else ())


def main():
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    name, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    before = [load("%s/before-%d" % (out, i)) for i in range(1, runs + 1)]
    after = [load("%s/after-%d" % (out, i)) for i in range(1, runs + 1)]

    def key(row):
        return (row["id"], row.get("baseline"))

    index = [{key(r): r for r in run["rows"]} for run in before + after]
    order = []
    for run in after + before:
        for r in run["rows"]:
            if key(r) not in order:
                order.append(key(r))

    print("Before: the library of %s (tether %s); after: this tree's "
          "(tether %s).  The same tether-bench binary, %d run%s of each, "
          "alternating, before first." % (
              name, before[0]["machine"]["tether"],
              after[0]["machine"]["tether"], runs, "" if runs == 1 else "s"))
    print()
    for side, runs_ in (("before", before), ("after", after)):
        for i, run in enumerate(runs_, 1):
            m = run["machine"]
            failed = run.get("failed_groups") or []
            print("- %s %d: %s, load average %.2f at the start, %.2f at the "
                  "end%s" % (side, i, m["date"], m["load"][0], m["load"][1],
                             "; groups that failed: " + "; ".join(failed)
                             if failed else ""))
    print()
    print("| benchmark | baseline | target | tether before | ratio before "
          "| tether after | ratio after | result before → after |")
    print("|---|---|---|---|---|---|---|---|")
    n = len(before)
    for k in order:
        rows = [ix.get(k) for ix in index]
        b, a = rows[:n], rows[n:]
        some = next(r for r in rows if r)

        def cells(side, f):
            return ", ".join(f(r) if r else "—" for r in side)

        def results(side):
            return "/".join(r["result"] if r else "—" for r in side)

        print("| %s | %s | %s | %s | %s | %s | %s | %s → %s |" % (
            some["what"], k[1], target(some), cells(b, fmt_value),
            cells(b, ratio), cells(a, fmt_value), cells(a, ratio),
            results(b), results(a)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
