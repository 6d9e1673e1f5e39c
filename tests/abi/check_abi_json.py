#!/usr/bin/env python3
"""abi/tether-abi.json, the ABI as data, is current and true.

  check_abi_json.py check JSON MAP INCLUDE_DIR CC [COPY...]
      Fails when JSON differs from what abi/tether_header.py makes of the
      public headers and the version script now (it is stale: regenerate
      it with the build target `abi-json`), when a COPY (the one the
      Python package ships) differs from JSON, or when the C compiler
      disagrees with any struct size, alignment, member offset or member
      size, or any constant or status value, that JSON states.

  check_abi_json.py generate JSON MAP INCLUDE_DIR [COPY...]
      Writes JSON (and each COPY) from the headers.  The `abi-json` target
      runs this.
"""

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "abi"))
import tether_header as th  # noqa: E402


def fresh(map_path, include_dir):
    headers = th.public_headers(include_dir)
    api = th.parse(headers)
    return th.render_json(api, th.parse_version_script(map_path), headers)


def read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def first_difference(old, new):
    a, b = old.splitlines(), new.splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "line %d: checked in %r, headers say %r" % (i + 1, x, y)
    return "line %d: one of them ends there" % (min(len(a), len(b)) + 1)


def compiler_source(doc):
    """C11 that static-asserts every layout and value `doc` states."""
    out = ["#include <stddef.h>", "#include <stdint.h>"]
    out += ["#include <%s>" % h for h in doc["headers"]]
    out.append('_Static_assert(sizeof(void *) == 8 && sizeof(size_t) == 8, '
               '"the JSON describes the LP64 data model");')
    for st in doc["structs"]:
        n = st["name"]
        out.append('_Static_assert(sizeof(%s) == %d, "size of %s");' % (
            n, st["size"], n))
        out.append('_Static_assert(_Alignof(%s) == %d, "alignment of %s");'
                   % (n, st["align"], n))
        for f in st["fields"]:
            out.append('_Static_assert(offsetof(%s, %s) == %d, '
                       '"offset of %s.%s");' % (n, f["name"], f["offset"],
                                                n, f["name"]))
            out.append('_Static_assert(sizeof(((%s *)0)->%s) == %d, '
                       '"size of %s.%s");' % (n, f["name"], f["size"],
                                              n, f["name"]))
    for td in doc["typedefs"]:
        bits = td["type"].get("bits")
        if bits:
            out.append('_Static_assert(sizeof(%s) * 8 == %d, "width of %s");'
                       % (td["name"], bits, td["name"]))
    for c in doc["constants"] + doc["statuses"]:
        out.append('_Static_assert((%s) == (%d), "value of %s");' % (
            c["name"], c["value"], c["name"]))
    return "\n".join(out) + "\n"


def check(json_path, map_path, include_dir, cc, copies):
    problems = []
    text = fresh(map_path, include_dir)
    have = read(json_path)
    if have is None:
        problems.append("%s is missing" % json_path)
    elif have != text:
        problems.append(
            "%s is stale: it is not what the headers and abi/tether.map "
            "say now (%s).  Regenerate it with `cmake --build <build> "
            "--target abi-json` and commit it with the header change"
            % (json_path, first_difference(have, text)))
    for copy in copies:
        if read(copy) != have:
            problems.append("%s is not a copy of %s (the `abi-json` target "
                            "writes both)" % (copy, json_path))
    doc = json.loads(text)
    with tempfile.TemporaryDirectory(prefix="tether-abi-json-") as tmp:
        src = os.path.join(tmp, "layout.c")
        with open(src, "w") as fh:
            fh.write(compiler_source(doc))
        res = subprocess.run([cc, "-std=c11", "-fsyntax-only", "-I",
                              include_dir, "-Wall", "-Wextra", "-Werror",
                              src], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        problems.append("the compiler disagrees with the JSON:\n" +
                        res.stdout)
    for p in problems:
        print("FAILED  " + p)
    print("%d functions, %d structs, %d callback types, %d constants "
          "checked; %d problem(s)" % (
              len(doc["functions"]), len(doc["structs"]),
              len(doc["callbacks"]),
              len(doc["constants"]) + len(doc["statuses"]), len(problems)))
    return 1 if problems else 0


def generate(json_path, map_path, include_dir, copies):
    text = fresh(map_path, include_dir)
    for path in [json_path] + copies:
        if read(path) != text:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            print("wrote %s" % path)
        else:
            print("%s is current" % path)
    return 0


def main(argv):
    if len(argv) >= 6 and argv[1] == "check":
        return check(argv[2], argv[3], argv[4], argv[5], argv[6:])
    if len(argv) >= 5 and argv[1] == "generate":
        return generate(argv[2], argv[3], argv[4], argv[5:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
