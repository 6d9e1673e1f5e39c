#!/usr/bin/env python3
"""The exported surface: headers, version script and library agree.

  check_exports.py LIBRARY VERSION_SCRIPT INCLUDE_DIR

Fails, naming each offending symbol, when
  - a public header declares a TETHER_API function the version script does
    not list, or the version script lists a name no header declares;
  - the library's dynamic symbol table (nm -D --defined-only) exports
    anything but the version script's names (data, a helper without hidden
    visibility, a symbol of a static dependency), or lacks one of them;
  - a symbol is bound to another version node than the script's;
  - a version node is not TETHER_<ABI major>.<minor> with a minor up to
    TETHER_ABI_MINOR of version.h;
  - the SONAME is not libtether.so.<ABI major>.
"""

import os
import re
import subprocess
import sys
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "abi"))
import tether_header as th  # noqa: E402


def dynamic_symbols(library):
    """{name: (nm type letter, version node)} of the defined dynamic
    symbols, without the version-node definitions themselves."""
    out = subprocess.run(["nm", "-D", "--defined-only", library],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    syms = {}
    for line in out.splitlines():
        m = re.match(r"\s*[0-9a-fA-F]*\s+(\w)\s+([^@\s]+)(?:@@?([\w.]+))?$",
                     line)
        if not m:
            raise SystemExit("unexpected nm output: %r" % line)
        kind, name, node = m.groups()
        if kind == "A" and node is None:
            continue          # the definition of a version node
        syms[name] = (kind, node)
    return syms


def soname(library):
    out = subprocess.run(["readelf", "-d", library], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    return m.group(1) if m else None


def script_vs_headers(declared, nodes):
    """The version script lists exactly the TETHER_API functions."""
    listed = [n for _, names in nodes for n in names]
    problems = ["%s is listed more than once in the version script" % n
                for n, c in Counter(listed).items() if c > 1]
    problems += ["version script: %r is a pattern; list names one by one"
                 % n for n in listed if "*" in n]
    problems += ["%s is declared TETHER_API in a header but missing from "
                 "abi/tether.map (add it to the newest node)" % n
                 for n in declared if n not in listed]
    problems += ["%s is in abi/tether.map but no public header declares it"
                 % n for n in listed if n not in declared and "*" not in n]
    return problems


def library_vs_script(exported, listed, declared):
    """The library exports exactly the listed functions, each in its node."""
    problems = []
    for name, (kind, node) in sorted(exported.items()):
        if name not in listed:
            problems.append("the library exports %s (nm type %s), which is "
                            "not in the public set" % (name, kind))
        elif kind not in "TW":
            problems.append("%s is exported as nm type %s, not a function"
                            % (name, kind))
        elif node != listed[name]:
            problems.append("%s is bound to version %s, the script says %s"
                            % (name, node, listed[name]))
    return problems + ["%s is declared public but the library does not "
                       "export it" % n for n in declared if n not in exported]


def versions(nodes, major, minor, library):
    """Version nodes belong to this ABI, and the SONAME to its major."""
    problems = []
    for node, _ in nodes:
        m = re.fullmatch(r"TETHER_(\d+)\.(\d+)", node)
        if not m or int(m.group(1)) != major or int(m.group(2)) > minor:
            problems.append("version node %s does not belong to ABI %d.%d "
                            "(version.h): name nodes TETHER_<major>.<minor> "
                            "and bump TETHER_ABI_MINOR with a new node"
                            % (node, major, minor))
    want, got = "libtether.so.%d" % major, soname(library)
    if got != want:
        problems.append("SONAME is %s, expected %s" % (got, want))
    return problems


def check(library, map_path, include_dir):
    api = th.parse(th.public_headers(include_dir))
    declared = [f.name for f in api.exports()]
    nodes = th.parse_version_script(map_path)
    listed = {name: node for node, names in nodes for name in names}
    exported = dynamic_symbols(library)
    problems = script_vs_headers(declared, nodes)
    problems += library_vs_script(exported, listed, declared)
    problems += versions(nodes, api.constants["TETHER_ABI_MAJOR"],
                         api.constants["TETHER_ABI_MINOR"], library)
    return problems, len(declared), len(exported)


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    problems, n_declared, n_exported = check(*argv[1:])
    for p in problems:
        print("FAILED  " + p)
    print("%d declared, %d exported, %d problem(s)" % (
        n_declared, n_exported, len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
