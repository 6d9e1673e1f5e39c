"""TETHER_DEBUG=1: finalize names what was leaked, and only that."""

import os
import subprocess
import sys

from conftest import DEADLINE

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     "leak_child.py")


def run_child(mode, debug):
    env = dict(os.environ)
    env.pop("TETHER_DEBUG", None)
    if debug:
        env["TETHER_DEBUG"] = "1"
    res = subprocess.run([sys.executable, "-B", CHILD, mode], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=DEADLINE)
    assert res.returncode == 0, res.stderr
    idents = dict(line.split("=") for line in res.stdout.split())
    report = [line for line in res.stderr.splitlines()
              if "TETHER_DEBUG" in line]
    return idents, report


def test_leaks_are_reported():
    import re
    idents, report = run_child("leak", debug=True)
    text = "\n".join(report)
    made_by_main = "made by thread %s" % idents["main"]
    assert re.search(r"lock handle 0x[0-9a-f]+ still open, " + made_by_main,
                     text), text
    assert re.search(r'thread handle 0x[0-9a-f]+ "leaky" still open, ' +
                     made_by_main, text), text
    assert re.search(r"thread %s never released 1 ensure" % idents["leaker"],
                     text), text
    assert len(report) == 3, text


def test_no_report_without_leaks():
    _, report = run_child("clean", debug=True)
    assert report == []


def test_no_report_without_tether_debug():
    _, report = run_child("leak", debug=False)
    assert report == []
