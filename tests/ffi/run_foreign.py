#!/usr/bin/env python3
"""Runs an FFI client (python3, luajit) on a sanitizer build of libtether.

  run_foreign.py [--preload LIB]... [--ours TEXT]... -- COMMAND...

The interpreters are not instrumented, so the sanitizer runtime must be
preloaded (--preload) before they load libtether.  AddressSanitizer errors
and UndefinedBehaviorSanitizer errors fail the test as usual, and so do
ThreadSanitizer reports (TSAN_OPTIONS comes from the test environment).

Leaks need care: CPython and LuaJIT keep some of their own memory until the
process ends (`python3 -c "import ctypes"` alone has LeakSanitizer report
about 90 kB), which says nothing about libtether.  So leak detection stays
on, its report goes to a file, and the test fails on every leak whose
allocation stack passes through libtether (a frame containing one of the
--ours texts, e.g. "libtether" and the path of core/); the interpreter's
own leaks are counted and named in one line.  Without --preload the
command just runs.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile


def leak_blocks(report):
    """The 'Direct/Indirect leak of ...' blocks of a LeakSanitizer report."""
    return re.findall(r"^(?:Direct|Indirect) leak of .*?(?=^\S|\Z)", report,
                      re.M | re.S)


def main(argv):
    split = argv.index("--")
    opts = {"--preload": [], "--ours": ["libtether"]}
    for i in range(1, split, 2):
        opts[argv[i]].append(argv[i + 1])
    preload, ours_marks = opts["--preload"], opts["--ours"]
    cmd = argv[split + 1:]
    if not preload:
        return subprocess.call(cmd)
    env = dict(os.environ, LD_PRELOAD=":".join(preload))
    logdir = tempfile.mkdtemp(prefix="tether-san-")
    try:
        if "ASAN_OPTIONS" in env:
            # Reports go to a file and do not decide the exit status; the
            # file is judged below.
            env["ASAN_OPTIONS"] += ":abort_on_error=0:exitcode=0:log_path=" + \
                os.path.join(logdir, "asan")
        rc = subprocess.call(cmd, env=env)
        reports = ""
        for path in glob.glob(os.path.join(logdir, "asan.*")):
            with open(path) as fh:
                reports += fh.read()
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    if "ERROR: AddressSanitizer" in reports:
        sys.stdout.write(reports)
        print("FAILED: AddressSanitizer found an error")
        return 1
    blocks = leak_blocks(reports)
    ours = [b for b in blocks if any(m in b for m in ours_marks)]
    if ours:
        sys.stdout.write("".join(ours))
        print("FAILED: %d leak(s) allocated through libtether" % len(ours))
        return 1
    if blocks:
        print("run_foreign: %d leak report(s) of %s itself ignored (no "
              "libtether frame)" % (len(blocks), os.path.basename(cmd[0])))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
