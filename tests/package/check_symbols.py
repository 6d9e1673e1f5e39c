#!/usr/bin/env python3
"""check_symbols.py - the Debian symbols file holds the ABI promise too
(label "package").

  check_symbols.py SOURCE_DIR LIBRARY

debian/libtether1.symbols lists every symbol libtether.so.1 exports, with
its version node and the first upstream version that exported it;
dpkg-gensymbols checks it at every package build (debian/rules, level 4).
This test checks, without building a package:

  1. the file lists exactly the names of abi/tether.map, each at the map's
     node, and each node's own symbol (TETHER_1.y@TETHER_1.y);
  2. each minimal version is no older than its node (TETHER_1.y: 1.y.0)
     and no newer than abi/include/tether/version.h;
  3. `dpkg-gensymbols -c4` accepts LIBRARY (the one this build made) with
     the file, as the package build does;
  4. and refuses it with a copy of the file that misses one symbol, and
     with one that lists a symbol the library does not export: the level-4
     check fails the build when an export appears or disappears.

Exit status 0 when all hold, 1 when one does not, 77 (skipped) when
dpkg-gensymbols is not installed and 1-2 hold, 2 on bad usage.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def vkey(v):
    return tuple(int(x) for x in re.findall(r"\d+", v))


def map_symbols(src):
    """{name: node} of abi/tether.map, and its nodes."""
    text = re.sub(r"/\*.*?\*/", "", read(os.path.join(src, "abi/tether.map")),
                  flags=re.S)
    names, nodes = {}, []
    for node, body in re.findall(r"\b(TETHER_\d+\.\d+)\s*\{(.*?)\}", text,
                                 re.S):
        nodes.append(node)
        body = body.split("local:")[0].replace("global:", "")
        for n in body.split(";"):
            if n.strip():
                names[n.strip()] = node
    return names, nodes


def file_symbols(path):
    """[(name, node, minver)] of a symbols file."""
    out = []
    for line in read(path).splitlines():
        if not line.startswith(" "):
            continue
        spec, minver = line.split()[:2]
        name, _, node = spec.partition("@")
        out.append((name, node, minver))
    return out


def check_file(src, path):
    version = ".".join(re.findall(
        r"#define TETHER_VERSION_(?:MAJOR|MINOR|PATCH)\s+(\d+)",
        read(os.path.join(src, "abi/include/tether/version.h"))))
    names, nodes = map_symbols(src)
    listed = file_symbols(path)
    bad = []
    want = {(n, node) for n, node in names.items()}
    want |= {(node, node) for node in nodes}
    have = {(n, node) for n, node, _ in listed}
    for n, node in sorted(want - have):
        bad.append("%s@%s is in abi/tether.map but not in the symbols file"
                   % (n, node))
    for n, node in sorted(have - want):
        if n in names:
            bad.append("%s is at %s in the symbols file but at %s in "
                       "abi/tether.map" % (n, node, names[n]))
        else:
            bad.append("%s@%s is in the symbols file but not in "
                       "abi/tether.map" % (n, node))
    if len(listed) != len(have):
        bad.append("a symbol is listed twice")
    for n, node, minver in listed:
        floor = node.split("_", 1)[1] + ".0"
        if vkey(minver) < vkey(floor):
            bad.append("%s@%s: %s is older than its node (%s)"
                       % (n, node, minver, floor))
        if vkey(minver) > vkey(version):
            bad.append("%s@%s: %s is newer than version.h's %s"
                       % (n, node, minver, version))
    print("symbols file: %d symbols in %d nodes, versions %s" % (
        len(listed), len(nodes),
        ", ".join(sorted({m for _, _, m in listed}, key=vkey))))
    return bad, version


def gensymbols(tool, version, symbols, lib, work, tag):
    """Runs dpkg-gensymbols -c4 as debian/rules does; returns (rc, output)."""
    pkgdir = os.path.join(work, "pkg-" + tag)
    os.makedirs(pkgdir, exist_ok=True)
    cmd = [tool, "-plibtether1", "-v" + version, "-P" + pkgdir,
           "-I" + symbols, "-e" + lib, "-c4",
           "-O" + os.path.join(work, "out-" + tag)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, cwd=work)
    return res.returncode, "$ " + " ".join(cmd) + "\n" + res.stdout


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    src, lib = argv[1], argv[2]
    symbols = os.path.join(src, "debian/libtether1.symbols")
    bad, version = check_file(src, symbols)
    if bad:
        print("FAILED: debian/libtether1.symbols disagrees with "
              "abi/tether.map or version.h:")
        for b in bad:
            print("  " + b)
        return 1
    print("ok: the symbols file lists abi/tether.map, node for node")

    tool = shutil.which("dpkg-gensymbols")
    if not tool:
        print("SKIPPED: dpkg-gensymbols is not installed (Debian's "
              "dpkg-dev); the level-4 check was not run")
        return SKIP
    work = tempfile.mkdtemp(prefix="tether-symbols-")
    try:
        rc, out = gensymbols(tool, version, symbols, lib, work, "real")
        print(out.rstrip())
        if rc != 0:
            print("FAILED: dpkg-gensymbols -c4 refuses %s with "
                  "debian/libtether1.symbols" % lib)
            return 1
        print("ok: dpkg-gensymbols -c4 accepts the library")

        text = read(symbols)
        # One export gone from the file (as if the library gained it), and
        # one extra (as if the library lost it).
        fewer = re.sub(r"^ tether_version_string@\S+ \S+\n", "", text,
                       count=1, flags=re.M)
        more = text + " tether_not_exported@TETHER_1.0 1.0.0\n"
        for tag, body, what in (("fewer", fewer, "new symbol"),
                                ("more", more, "lost symbol")):
            if body == text:
                print("FAILED: could not edit the copy (%s)" % tag)
                return 1
            path = os.path.join(work, "libtether1.symbols." + tag)
            with open(path, "w", encoding="utf-8") as f:
                f.write(body)
            rc, out = gensymbols(tool, version, path, lib, work, tag)
            if rc == 0:
                print(out.rstrip())
                print("FAILED: dpkg-gensymbols -c4 accepted a symbols file "
                      "with a %s" % what)
                return 1
            diff = [l for l in out.splitlines() if l[:2] in ("+ ", "- ", "+#", "-#")
                    or l.startswith(("+ ", "- "))]
            print("ok: dpkg-gensymbols -c4 fails on a %s (exit %d): %s"
                  % (what, rc, " | ".join(diff) or out.splitlines()[-1]))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
