#!/usr/bin/env python3
"""check_versions.py - one version, everywhere it is written (label "package").

  check_versions.py SOURCE_DIR BUILD_DIR
  check_versions.py --self-test SOURCE_DIR BUILD_DIR

abi/include/tether/version.h is the one source of the library's version
(CMake parses it into project(VERSION), tether_version_string() reports
it).  Everything else that states a version must say the same:

  debian/changelog        the upstream part of the top entry's version
  rockspecs/              exactly one rockspec, tether-<version>-<rev>.rockspec,
                          whose `version` is "<version>-<rev>" and whose
                          source tag, if any, is v<version>
  BUILD_DIR/tether.pc     Version: (pkg-config --modversion tether)
  BUILD_DIR/tetherConfigVersion.cmake   PACKAGE_VERSION (find_package)
  abi/tether.map          its newest node is TETHER_<ABI_MAJOR>.<ABI_MINOR>
  debian/libtether1.symbols   no symbol introduced by a later version
  bindings/rust/*/Cargo.toml   the Rust crates' `version` (when present)
  abi/*.json              (the ABI as data, when present) every top-level
                          "...version..." string: <version>, or
                          <ABI_MAJOR>.<ABI_MINOR> for an ABI version

--self-test copies these files, breaks each in turn, and fails unless the
check catches every break (so this test can fail).

Exit status 0 when all agree, 1 when one does not, 2 on bad usage.
"""

import glob
import json
import os
import re
import shutil
import sys
import tempfile


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def header_versions(src):
    text = read(os.path.join(src, "abi/include/tether/version.h"))
    def num(name):
        m = re.search(r"#define TETHER_%s\s+(\d+)" % name, text)
        if not m:
            raise SystemExit("version.h: no TETHER_%s" % name)
        return int(m.group(1))
    version = "%d.%d.%d" % (num("VERSION_MAJOR"), num("VERSION_MINOR"),
                            num("VERSION_PATCH"))
    abi = "%d.%d" % (num("ABI_MAJOR"), num("ABI_MINOR"))
    return version, abi


def vkey(v):
    return tuple(int(x) for x in re.findall(r"\d+", v))


def check(src, build):
    """Returns the list of disagreements."""
    version, abi = header_versions(src)
    print("abi/include/tether/version.h: version %s, ABI %s" % (version, abi))
    bad = []

    def agree(where, found, want=version):
        if found == want:
            print("  ok   %-40s %s" % (where, found))
        else:
            bad.append("%s says %s, version.h says %s" % (where, found, want))
            print("  FAIL %-40s %s (want %s)" % (where, found, want))

    # debian/changelog: "tether (1.2.0-1) unstable; urgency=medium"
    first = read(os.path.join(src, "debian/changelog")).splitlines()[0]
    m = re.match(r"^tether \(([^)\s]+)\)", first)
    if not m:
        bad.append("debian/changelog: cannot read %r" % first)
    else:
        full = m.group(1)
        upstream = full.split(":", 1)[-1].rsplit("-", 1)[0]
        agree("debian/changelog (%s)" % full, upstream)

    rocks = sorted(glob.glob(os.path.join(src, "rockspecs", "*.rockspec")))
    if len(rocks) != 1:
        bad.append("rockspecs/: want exactly one rockspec, found %d" % len(rocks))
    for r in rocks:
        name = os.path.basename(r)
        m = re.match(r"^tether-(.+)-(\d+)\.rockspec$", name)
        if not m:
            bad.append("rockspecs/%s: not named tether-<version>-<rev>.rockspec"
                       % name)
            continue
        agree("rockspecs/%s (name)" % name, m.group(1))
        text = read(r)
        mv = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
        agree("rockspecs/%s (version)" % name, mv.group(1) if mv else None,
              "%s-%s" % (version, m.group(2)))
        mt = re.search(r'^\s*tag\s*=\s*"([^"]+)"', text, re.M)
        if mt:
            agree("rockspecs/%s (source tag)" % name, mt.group(1),
                  "v" + version)

    pc = os.path.join(build, "tether.pc")
    m = re.search(r"^Version:\s*(\S+)", read(pc), re.M)
    agree("tether.pc (Version)", m.group(1) if m else None)
    cv = os.path.join(build, "tetherConfigVersion.cmake")
    m = re.search(r'set\(PACKAGE_VERSION "([^"]+)"\)', read(cv))
    agree("tetherConfigVersion.cmake", m.group(1) if m else None)

    mapt = re.sub(r"/\*.*?\*/", "", read(os.path.join(src, "abi/tether.map")),
                  flags=re.S)
    nodes = re.findall(r"\bTETHER_(\d+\.\d+)\s*\{", mapt)
    newest = max(nodes, key=vkey) if nodes else None
    agree("abi/tether.map (newest node)", newest, abi)

    syms = read(os.path.join(src, "debian/libtether1.symbols"))
    later = [l.split()[0] for l in syms.splitlines()
             if l.startswith(" ") and len(l.split()) >= 2 and
             vkey(l.split()[1]) > vkey(version)]
    if later:
        bad.append("debian/libtether1.symbols: introduced after %s: %s"
                   % (version, ", ".join(later)))
    else:
        print("  ok   %-40s no symbol newer than %s"
              % ("debian/libtether1.symbols", version))

    for c in sorted(glob.glob(os.path.join(src, "bindings/rust/*/Cargo.toml"))):
        m = re.search(r'^version\s*=\s*"([^"]+)"', read(c), re.M)
        agree(os.path.relpath(c, src) + " (version)", m.group(1) if m else None)

    for j in sorted(glob.glob(os.path.join(src, "abi", "*.json"))):
        try:
            data = json.loads(read(j))
        except ValueError as e:
            bad.append("%s: not JSON: %s" % (j, e))
            continue
        if not isinstance(data, dict):
            continue
        for k, v in sorted(data.items()):
            if "version" not in k.lower() or not isinstance(v, str) or \
                    not re.fullmatch(r"\d+\.\d+(\.\d+)?", v):
                continue
            want = abi if (v.count(".") == 1 or "abi" in k.lower()) else version
            agree("abi/%s (%s)" % (os.path.basename(j), k), v, want)
    return bad


# (file, pattern, replacement) - each one break the check must catch.
BREAKS = [
    ("debian/changelog", r"^tether \((\d+)\.", r"tether (\g<1>9."),
    ("ROCKSPEC", r'^version = "(\d+)\.', r'version = "\g<1>9.'),
    ("ROCKSPEC", r'tag = "v', r'tag = "v9'),
    ("BUILD/tether.pc", r"^Version: ", r"Version: 9"),
    ("BUILD/tetherConfigVersion.cmake", r'set\(PACKAGE_VERSION "',
     r'set(PACKAGE_VERSION "9'),
    ("abi/tether.map", r"\Z", "\nTETHER_1.99 { global: tether_x; } TETHER_1.0;\n"),
    ("debian/libtether1.symbols", r"^ (tether_abi_version@\S+) \S+",
     r" \1 99.0.0"),
    ("bindings/rust/tether/Cargo.toml", r'^version = "', r'version = "9'),
]


def self_test(src, build):
    """Copies what check() reads and breaks each part in turn."""
    work = tempfile.mkdtemp(prefix="tether-versions-")
    try:
        s, b = os.path.join(work, "src"), os.path.join(work, "build")
        for d in ("abi/include/tether", "debian", "rockspecs",
                  "bindings/rust/tether"):
            os.makedirs(os.path.join(s, d))
        os.makedirs(b)
        rock = os.path.relpath(glob.glob(os.path.join(src, "rockspecs",
                                                      "*.rockspec"))[0], src)
        files = ["abi/include/tether/version.h", "abi/tether.map",
                 "debian/changelog", "debian/libtether1.symbols", rock,
                 "bindings/rust/tether/Cargo.toml"]
        for f in files:
            shutil.copy(os.path.join(src, f), os.path.join(s, f))
        for f in ("tether.pc", "tetherConfigVersion.cmake"):
            shutil.copy(os.path.join(build, f), os.path.join(b, f))
        if check(s, b):
            print("FAILED: the unbroken copy does not pass")
            return 1
        missed = 0
        for f, pat, rep in BREAKS + [("RENAME", None, None)]:
            if f == "RENAME":
                os.rename(os.path.join(s, rock),
                          os.path.join(s, "rockspecs", "tether-9.9.9-1.rockspec"))
                bad = check(s, b)
                os.rename(os.path.join(s, "rockspecs", "tether-9.9.9-1.rockspec"),
                          os.path.join(s, rock))
                what = "the rockspec renamed"
            else:
                path = f.replace("ROCKSPEC", os.path.join(s, rock)).replace(
                    "BUILD", b)
                if not os.path.isabs(path):
                    path = os.path.join(s, path)
                orig = read(path)
                broken, n = re.subn(pat, rep, orig, count=1, flags=re.M)
                if n != 1:
                    print("FAILED: cannot break %s (%s)" % (f, pat))
                    return 1
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(broken)
                bad = check(s, b)
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(orig)
                what = "%s broken (%s)" % (f, pat)
            if bad:
                print("caught: %s -> %s" % (what, bad[0]))
            else:
                print("MISSED: %s" % what)
                missed += 1
        if missed:
            print("FAILED: %d break(s) not caught" % missed)
            return 1
        print("ok: every break was caught")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv):
    if len(argv) == 4 and argv[1] == "--self-test":
        return self_test(argv[2], argv[3])
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    bad = check(argv[1], argv[2])
    if bad:
        print("FAILED: %d disagreement(s):" % len(bad))
        for b in bad:
            print("  " + b)
        return 1
    print("ok: every version agrees with abi/include/tether/version.h")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
