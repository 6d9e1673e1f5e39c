#!/usr/bin/env python3
"""check_points.py - the core's named delay points are in the library
exactly when the build says so.

    check_points.py on|off <libtether.so> <core source dir>

Collects every TETHER_DELAY_POINT("name") in the core's sources.  "on" (a
build with TETHER_DELAY_POINTS): every name is in the library and the test
hook tether_test_delay_hook is a weak undefined dynamic symbol.  "off":
no name, no hook, no delay_point symbol: the points are compiled out.
"""
import pathlib
import re
import subprocess
import sys


def names(src):
    found = set()
    for f in sorted(pathlib.Path(src).glob("*.c")):
        for line in f.read_text().splitlines():
            if "TETHER_DELAY_POINT(" in line and "#define" not in line:
                found.update(re.findall(r'"([a-z0-9_.]+)"', line))
    return found


def main():
    mode, lib, src = sys.argv[1], sys.argv[2], sys.argv[3]
    points = names(src)
    if len(points) < 10:
        print(f"only {len(points)} delay points found in {src}")
        return 1
    data = pathlib.Path(lib).read_bytes()
    present = {n for n in points if n.encode() + b"\0" in data}
    dyn = subprocess.run(["objdump", "-T", lib], check=True,
                         capture_output=True, text=True).stdout
    syms = subprocess.run(["objdump", "-t", lib], check=True,
                          capture_output=True, text=True).stdout
    hook = [l for l in dyn.splitlines() if l.endswith(" tether_test_delay_hook")]
    has_fn = re.search(r"\sdelay_point$", syms, re.M) is not None
    bad = []
    if mode == "on":
        bad += [f"point '{n}' missing" for n in sorted(points - present)]
        if not hook or " w " not in hook[0]:
            bad.append(f"tether_test_delay_hook is not a weak dynamic symbol: {hook}")
    else:
        bad += [f"point '{n}' compiled in" for n in sorted(present)]
        if hook:
            bad.append("tether_test_delay_hook referenced")
        if has_fn:
            bad.append("delay_point compiled in")
    for b in bad:
        print(b)
    print(f"{len(points)} points, mode {mode}: {'FAIL' if bad else 'ok'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
