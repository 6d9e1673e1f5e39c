#!/usr/bin/env python3
"""Header discipline of tether's public headers.

  check_headers.py compile INCLUDE_DIR CC... -- CXX...
      Each public header compiles alone (first in its translation unit, and
      twice, for its include guard) as C99 and C11 with every C compiler
      given and as C++17 with every C++ compiler given, with -Wall -Wextra
      -Wpedantic -Werror.

  check_headers.py types INCLUDE_DIR CC
      Every ABI-visible signature (exported functions, typedefs, members of
      public structs, and the parameters of every function pointer among
      them) uses only fixed-width integers, int, size_t, pointers and the
      headers' own types: no enum, long, short, bare unsigned, bool,
      floating point, bitfield or varargs.  Public structs begin with
      `size_t size`.  Every exported function has a doc comment with a
      thread tag.  Then the parser's model of the headers is rendered back
      to C and compiled against the real headers with every size, offset,
      constant and prototype asserted, so everything derived from the model
      (version-script check, docs table, LuaJIT cdefs, ctypes prototypes)
      is derived from what the compiler sees.
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "abi"))
import tether_header as th  # noqa: E402

WARNINGS = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"]
C_EXTRA = ["-Wstrict-prototypes", "-Wmissing-prototypes", "-Wshadow"]

# Integer types whose width is the same on every platform tether supports.
# `int` is the status type of the whole API (32 bits on every ILP32, LP64
# and LLP64 system) and size_t is the size of objects, which is what it
# describes wherever it appears.
ALLOWED_WORDS = {"void", "char", "int", "size_t", "int8_t", "uint8_t",
                 "int16_t", "uint16_t", "int32_t", "uint32_t", "int64_t",
                 "uint64_t"}

WHY_NOT = {
    "long": "its width differs between LP64 and LLP64",
    "short": "use int16_t/uint16_t",
    "unsigned": "use uint32_t and friends",
    "signed": "use int32_t and friends",
    "enum": "an enum's size is the compiler's choice",
    "bool": "its size is the compiler's choice; use int or uint8_t",
    "_Bool": "its size is the compiler's choice; use int or uint8_t",
    "float": "floating point is not part of the v1 ABI",
    "double": "floating point is not part of the v1 ABI",
}


def run(cmd, cwd=None):
    res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    return res.returncode, res.stdout


# ---------------------------------------------------------------------------
# compile
# ---------------------------------------------------------------------------

def compile_alone(include_dir, ccs, cxxs):
    failures = 0
    jobs = [(cc, std, "c", C_EXTRA) for cc in ccs for std in ("c99", "c11")]
    jobs += [(cxx, "c++17", "cpp", []) for cxx in cxxs]
    with tempfile.TemporaryDirectory(prefix="tether-hdr-") as tmp:
        for header in th.public_headers(include_dir):
            name = os.path.basename(header)
            for compiler, std, ext, extra in jobs:
                src = os.path.join(tmp, "first.%s" % ext)
                with open(src, "w") as fh:
                    # First in its TU, and twice: the include guard works.
                    fh.write("#include <tether/%s>\n" % name)
                    fh.write("#include <tether/%s>\n" % name)
                    # ISO C wants a declaration; version.h is all macros.
                    fh.write("typedef int header_check_nonempty;\n")
                cmd = [compiler, "-std=" + std, "-fsyntax-only",
                       "-I", include_dir] + WARNINGS + extra + [src]
                rc, out = run(cmd)
                label = "%s as %s with %s" % (name, std,
                                              os.path.basename(compiler))
                if rc == 0:
                    print("ok      %s" % label)
                else:
                    failures += 1
                    print("FAILED  %s\n  %s\n%s" % (label, " ".join(cmd),
                                                   out))
    return failures


# ---------------------------------------------------------------------------
# types
# ---------------------------------------------------------------------------

def type_problems(ctype, where, public_names):
    """Yields a sentence for each way `ctype` breaks the type discipline."""
    if ctype.bits is not None:
        yield "%s is a bitfield (layout is the compiler's choice)" % where
    if ctype.fn is not None:
        sig = ctype.fn
        if sig.varargs:
            yield "%s takes varargs (no FFI can call it portably)" % where
        yield from type_problems(sig.ret, where + " return", public_names)
        for i, p in enumerate(sig.params):
            yield from type_problems(p.type, "%s parameter %d (%s)" % (
                where, i + 1, p.name or "unnamed"), public_names)
        return
    for word in ctype.words:
        if word in ("struct", "union"):
            continue
        if word in WHY_NOT:
            yield "%s uses %s: %s" % (where, word, WHY_NOT[word])
        elif word not in ALLOWED_WORDS and word not in public_names:
            yield "%s uses %s, which is neither a fixed-width type nor " \
                  "one of the headers' own" % (where, word)
    if ctype.base == "char" and ctype.ptr == 0:
        yield "%s is a plain char (its signedness varies)" % where


def check_types(api):
    """Returns the list of problems of the whole ABI-visible surface."""
    names = set(api.typedefs) | set(api.structs)
    problems = []
    for fn in api.functions:
        problems += type_problems(th.CType(["<fn>"], fn=fn.sig),
                                  fn.name, names)
        if fn.marker == "TETHER_API" and not fn.tags:
            problems.append("%s: its doc comment has no thread tag (%s)" % (
                fn.name, ", ".join("[%s]" % t for t in th.THREAD_TAGS)))
    for td in api.typedefs.values():
        problems += type_problems(td.type, "typedef " + td.name, names)
    for st in api.structs.values():
        first = st.members[0] if st.members else None
        if not first or first.name != "size" or first.type.base != "size_t":
            problems.append("struct %s must begin with `size_t size` so it "
                            "can grow" % st.name)
        for m in st.members:
            problems += type_problems(m.type, "%s.%s" % (st.name, m.name),
                                      names)
    return problems


def model_source(api, headers):
    """C11 that asserts the parser's model is what the compiler sees."""
    out = ["#include <stddef.h>"]
    out += ["#include <tether/%s>" % os.path.basename(h) for h in headers]
    out.append("/* Prototypes: a redeclaration must be compatible. */")
    out += [fn.render() + ";" for fn in api.functions]
    out.append("/* Typedefs: C11 allows an identical redefinition. */")
    out += ["typedef %s;" % td.type.render(td.name)
            for td in api.typedefs.values()]
    out.append("/* Structs: same size and same offset of every member. */")
    for st in api.structs.values():
        twin = "model_" + st.name
        out.append("struct %s {" % twin)
        out += ["    %s;" % m.type.render(m.name) for m in st.members]
        out.append("};")
        out.append('_Static_assert(sizeof(struct %s) == sizeof(%s), '
                   '"size of %s");' % (twin, st.name, st.name))
        for m in (m for m in st.members if m.type.bits is None):
            out.append('_Static_assert(offsetof(struct %s, %s) == '
                       'offsetof(%s, %s), "offset of %s.%s");' % (
                           twin, m.name, st.name, m.name, st.name, m.name))
    out.append("/* Constants. */")
    consts = dict(api.constants)
    consts.update(api.statuses)
    for name, value in consts.items():
        out.append('_Static_assert((%s) == (%d), "value of %s");' % (
            name, value, name))
    return "\n".join(out) + "\n"


def check_model(api, include_dir, headers, cc):
    with tempfile.TemporaryDirectory(prefix="tether-model-") as tmp:
        src = os.path.join(tmp, "model.c")
        with open(src, "w") as fh:
            fh.write(model_source(api, headers))
        cmd = [cc, "-std=c11", "-fsyntax-only", "-I", include_dir,
               "-Wall", "-Wextra", "-Werror", src]
        rc, out = run(cmd)
    if rc != 0:
        return ["the parser's model of the headers disagrees with the "
                "compiler:\n" + out]
    return []


def main(argv):
    if len(argv) >= 3 and argv[1] == "compile":
        args = argv[3:]
        split = args.index("--") if "--" in args else len(args)
        failures = compile_alone(argv[2], args[:split], args[split + 1:])
        print("%d failure(s)" % failures)
        return 1 if failures else 0
    if len(argv) == 4 and argv[1] == "types":
        headers = th.public_headers(argv[2])
        try:
            api = th.parse(headers)
        except th.HeaderError as exc:
            print("FAILED  %s" % exc)
            return 1
        problems = check_types(api) + check_model(api, argv[2], headers,
                                                  argv[3])
        for p in problems:
            print("FAILED  " + p)
        print("%d exported functions, %d structs, %d typedefs checked; "
              "%d problem(s)" % (len(api.exports()), len(api.structs),
                                 len(api.typedefs), len(problems)))
        return 1 if problems else 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
