#!/usr/bin/env python3
"""check_manpage.py - tether-tools' man page documents the tool it ships
with (label "package").

  check_manpage.py MANPAGE TOOL

  1. every option the tool's usage message names (TOOL run with no
     argument prints it and exits 2) is in the man page's SYNOPSIS and has
     an entry under OPTIONS, and neither names an option the tool does
     not take;
  2. man renders the page without a warning (what lintian's
     groff-message check sees), when man is installed.

Exit status 0 when both hold, 1 when one does not, 2 on bad usage.
"""

import re
import shutil
import subprocess
import sys


def section(text, name):
    m = re.search(r"^\.SH %s\s*$(.*?)(?=^\.SH |\Z)" % name, text, re.M | re.S)
    return m.group(1) if m else ""


def man_options(body):
    # Options are written \-\-name in roff.
    return set(re.findall(r"\\-\\-([a-z][a-z0-9-]*)", body))


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    page, tool = argv[1], argv[2]
    res = subprocess.run([tool], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    usage = res.stdout
    m = re.search(r"usage:.*", usage, re.S)
    if res.returncode != 2 or not m:
        print("FAILED: %s with no argument did not print its usage and exit 2 "
              "(exit %d): %s" % (tool, res.returncode, usage))
        return 1
    want = set(re.findall(r"--([a-z][a-z0-9-]*)", m.group(0)))
    print("usage: %s -> options %s" % (m.group(0).strip(),
                                       ", ".join(sorted(want))))
    with open(page, encoding="utf-8") as f:
        text = f.read()
    synopsis = man_options(section(text, "SYNOPSIS"))
    options = set(re.findall(r"^\.BI? \\-\\-([a-z][a-z0-9-]*)",
                             section(text, "OPTIONS"), re.M))
    bad = []
    for o in sorted(want - synopsis):
        bad.append("--%s is not in the SYNOPSIS" % o)
    for o in sorted(want - options):
        bad.append("--%s has no entry under OPTIONS" % o)
    for o in sorted((synopsis | options) - want):
        bad.append("--%s is in the man page but the tool does not take it" % o)

    man = shutil.which("man")
    if man:
        r = subprocess.run([man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8",
                            "-Z", page], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True,
                           env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                                "MANROFFSEQ": "", "MANWIDTH": "80"})
        if r.returncode != 0 or r.stderr.strip():
            bad.append("man --warnings: exit %d: %s"
                       % (r.returncode, r.stderr.strip()))
        else:
            print("man --warnings -l: no warning")
    else:
        print("(man is not installed: the rendering was not checked)")
    if bad:
        print("FAILED: %s disagrees with %s:" % (page, tool))
        for b in bad:
            print("  " + b)
        return 1
    print("ok: the man page documents every option of the tool, and only those")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
