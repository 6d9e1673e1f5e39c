#!/usr/bin/env python3
"""test_checker.py - the docs checker fails where it must (docs.checker).

  test_checker.py CHECKER FIXTURE_DIR [checker options...]

Runs the checker over each fixture.  good.md must pass.  Every other
fixture starts with "<!-- expect-fail: L1 L2 ... -->": the checker must
exit 1 and report a failure at exactly those lines (each seeded defect is
caught, and nothing else is).
"""
import os
import re
import subprocess
import sys


def main(argv):
    checker, fixtures, opts = argv[1], argv[2], argv[3:]
    bad = 0
    names = sorted(f for f in os.listdir(fixtures) if f.endswith(".md"))
    if "good.md" not in names or len(names) < 2:
        print("not ok: the fixtures are missing")
        return 1
    for name in names:
        path = os.path.join(fixtures, name)
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        m = re.match(r"<!--\s*expect-fail:\s*([\d\s]*)-->", first)
        want = sorted(int(x) for x in m.group(1).split()) if m else []
        p = subprocess.run([sys.executable, checker] + opts + [path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout.decode("utf-8", "replace")
        got = sorted(int(x) for x in
                     re.findall(r"^FAIL \S+?:(\d+) ", out, re.M))
        ok = (p.returncode == 0 and not got) if not want else \
            (p.returncode == 1 and got == want)
        print("%s %s: expected failures at %s, got %s (exit %d)" % (
            "ok" if ok else "not ok", name, want or "none", got or "none",
            p.returncode))
        if not ok:
            bad += 1
            print(out)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
