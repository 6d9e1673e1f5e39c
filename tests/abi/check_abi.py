#!/usr/bin/env python3
"""The ABI gate: the built library against the baseline abi/libtether.abi.

  check_abi.py check    LIBRARY BASELINE INCLUDE_DIR SOURCE_DIR BUILD_DIR
  check_abi.py generate LIBRARY BASELINE INCLUDE_DIR SOURCE_DIR

`generate` writes the baseline with abidw; it is what the `abi-baseline`
CMake target runs.  The baseline holds every type the public headers
define (also those no exported function reaches, such as the plugin host
table), without source locations, so it changes only when the ABI does.

`check` runs abidiff (the libabigail report is printed), then compares the
baseline with a fresh abidw dump of the library under tether's own rule:
within a major version the ABI only grows.  Functions and version nodes
are never removed or changed; a struct never changes, except that one whose
first member is `size_t size` may gain members at its end.  The test fails

  - on an incompatible change (abidiff exit bit 8, or a break of the rule),
    always: regenerating the baseline does not help, because the provenance
    check below applies the same rule to the baseline's own history;
  - on any other change (abidiff exit bit 4, or growth), with the command
    that regenerates the baseline;
  - when the baseline changed without a CHANGELOG.md line in the same
    commit that names every function it adds.  "The same commit" is the
    working tree while the baseline has uncommitted changes, else the last
    commit that touched it (git, read-only; outside a git checkout this
    part is skipped with a note).

abidw needs DWARF: a library without debug info is skipped (exit 77) with a
message.  Debug and RelWithDebInfo builds have it.
"""

import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "abi"))
import tether_header as th  # noqa: E402

SKIP = 77
BASELINE_REL = "abi/libtether.abi"
CHANGELOG_REL = "CHANGELOG.md"

ABIDIFF_ERROR, ABIDIFF_USAGE, ABIDIFF_CHANGE, ABIDIFF_INCOMPATIBLE = 1, 2, 4, 8


def run(cmd, cwd=None):
    res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    return res.returncode, res.stdout


def has_debug_info(library):
    rc, out = run(["readelf", "-S", "-W", library])
    return rc == 0 and ".debug_info" in out


def abidw(library, out_file, include_dir, source_dir):
    """Dumps the public ABI of `library` to `out_file`; returns None, or
    abidw's complaint."""
    with tempfile.TemporaryDirectory(prefix="tether-abidw-") as tmp:
        raw = os.path.join(tmp, "raw.abi")
        cmd = ["abidw", "--load-all-types", "--drop-undefined-syms",
               "--no-corpus-path", "--no-comp-dir-path", "--no-show-locs",
               "--no-elf-needed", "--type-id-style", "hash",
               "--out-file", raw, library]
        rc, out = run(cmd)
        if rc != 0:
            return "$ %s\n%s" % (" ".join(cmd), out)
        tree = ET.parse(raw)
    public_only(tree.getroot(),
                set(th.parse(th.public_headers(include_dir)).structs),
                os.path.abspath(source_dir).rstrip("/") + "/")
    ET.indent(tree, "  ")
    tree.write(out_file, encoding="unicode")
    return None


def public_only(root, public_structs, source_prefix):
    """Keeps the exported functions and the types they reach, plus the
    public structs no function reaches (the plugin host table and the
    plugin descriptor), and drops everything internal.  (abidw's own
    --exported-interfaces-only cannot keep unreached public types, and its
    --drop-private-types keeps internal ones when all types are loaded.)"""
    exported = {s.get("name") for s in root.iter("elf-symbol")}
    instrs = list(root.iter("abi-instr"))

    def is_root(el):
        return (el.tag == "function-decl" and el.get("name") in exported) or \
            (el.tag == "class-decl" and el.get("name") in public_structs)

    keep = _reachable(instrs, is_root)
    for instr in instrs:
        for el in list(instr):
            if el.get("id") not in keep and not is_root(el):
                instr.remove(el)
        instr.attrib.pop("comp-dir-path", None)
        if instr.get("path", "").startswith(source_prefix):
            instr.set("path", instr.get("path")[len(source_prefix):])
    for parent in root.iter("abi-corpus"):
        for instr in [i for i in parent if i.tag == "abi-instr"]:
            if not len(instr):
                parent.remove(instr)


def _reachable(instrs, is_root):
    """The ids of every type the root elements refer to, transitively."""
    by_id, todo = {}, []
    for instr in instrs:
        for el in instr:
            if el.get("id"):
                by_id.setdefault(el.get("id"), []).append(el)
            if is_root(el):
                todo.append(el)
    keep = set()
    while todo:
        for sub in todo.pop().iter():
            tid = sub.get("type-id")
            if tid and tid not in keep:
                keep.add(tid)
                todo += by_id.get(tid, [])
    return keep


# ---------------------------------------------------------------------------
# Reading an abidw corpus
# ---------------------------------------------------------------------------

class Corpus:
    """The parts of an abidw XML dump that tether's rule looks at."""

    def __init__(self, xml_text):
        root = ET.fromstring(xml_text)
        self.soname = root.get("soname")
        self.symbols = {}          # name -> version node
        for sym in root.iter("elf-symbol"):
            self.symbols[sym.get("name")] = sym.get("version")
        self.functions = {}        # name -> function-decl element
        self.types = {}            # type id -> element
        for instr in root.iter("abi-instr"):
            for el in instr:
                if el.tag == "function-decl":
                    self.functions.setdefault(el.get("name"), el)
                elif el.get("id"):
                    old = self.types.get(el.get("id"))
                    if old is None or (old.get("is-declaration-only") and
                                       not el.get("is-declaration-only")):
                        self.types[el.get("id")] = el

    def describe(self, type_id, depth=0):
        """A C-like name for a type id, for messages."""
        el = self.types.get(type_id)
        if el is None or depth > 6:
            return "?"
        if el.tag == "pointer-type-def":
            return self.describe(el.get("type-id"), depth + 1) + "*"
        if el.tag == "qualified-type-def":
            return "const " + self.describe(el.get("type-id"), depth + 1)
        if el.tag == "function-type":
            params, ret = self.signature(el, depth + 1)
            return "%s (%s)" % (ret, params)
        if el.tag == "class-decl":
            return "struct " + el.get("name")
        return el.get("name") or el.tag

    def signature(self, el, depth=0):
        """("param, param", "return") types of a function or function type."""
        params = [self.describe(c.get("type-id"), depth) for c in el
                  if c.tag == "parameter"]
        ret = [c for c in el if c.tag == "return"]
        return (", ".join(params) or "void",
                self.describe(ret[0].get("type-id"), depth) if ret else "?")


def _shape(el):
    """An element with names of parameters and visibility left out."""
    attrs = {k: v for k, v in el.attrib.items()
             if k not in ("visibility", "is-non-reachable")
             and not (el.tag == "parameter" and k == "name")}
    return (el.tag, tuple(sorted(attrs.items())),
            tuple(_shape(c) for c in el))


def _members(el):
    out = []
    for dm in el.iter("data-member"):
        var = dm.find("var-decl")
        out.append((var.get("name"), dm.get("layout-offset-in-bits"),
                    var.get("type-id")))
    return out


def compare(old, new):
    """Returns (breaks, growth): sentences about what changed."""
    breaks, growth = [], []
    if old.soname and new.soname and old.soname != new.soname:
        return [], ["SONAME %s -> %s: a new major version" % (
            old.soname, new.soname)]
    for name, node in old.symbols.items():
        if name not in new.symbols:
            breaks.append("%s was removed" % name)
        elif new.symbols[name] != node:
            breaks.append("%s moved from version %s to %s" % (
                name, node, new.symbols[name]))
    growth += ["%s was added (version %s)" % (n, v)
               for n, v in new.symbols.items() if n not in old.symbols]
    for name, el in old.functions.items():
        nel = new.functions.get(name)
        if nel is not None and _shape_sig(el) != _shape_sig(nel):
            breaks.append("%s changed type: %s %s(%s) became %s %s(%s)" % (
                name, old.signature(el)[1], name, old.signature(el)[0],
                new.signature(nel)[1], name, new.signature(nel)[0]))
    for tid, el in old.types.items():
        nel = new.types.get(tid)
        if nel is not None:
            _compare_type(old, new, el, nel, breaks, growth)
    return breaks, growth


def _shape_sig(el):
    return tuple(_shape(c) for c in el)


def _canon(corpus, type_id, depth=0):
    """A type with its typedefs seen through, at every level (pointers,
    const, function types): what the type is, whatever it is called.
    abidw keeps one function type for every signature that is the same once
    typedefs are resolved (int (tether_lock) and int (tether_tstate) are one
    type), and which typedef it names can change from one dump to the
    next."""
    el = corpus.types.get(type_id)
    if el is None or depth > 16:
        return type_id
    if el.tag == "typedef-decl":
        return _canon(corpus, el.get("type-id"), depth + 1)
    if el.tag in ("pointer-type-def", "qualified-type-def"):
        return (el.tag, el.get("const"), el.get("volatile"),
                _canon(corpus, el.get("type-id"), depth + 1))
    if el.tag == "function-type":
        return ("fn",) + tuple((c.tag, _canon(corpus, c.get("type-id"),
                                              depth + 1)) for c in el)
    return type_id


def _renumbered(old, new, el, nel):
    """True if a pointer, const or function type has another shape under
    the same id only because abidw numbered it differently: its ids are
    hashes, and two types whose hashes collide get the hash and the hash
    plus one in the order abidw meets them, so a new function type can take
    the id an old one had (int (tether_runtime, uint32_t) and int
    (tether_channel, tether_event) did).  The old type is then still in
    the new dump under another id; what refers to it is compared by what
    the types are (members here, functions by their own shapes)."""
    if el.tag not in _CANON_TAGS or nel.tag not in _CANON_TAGS:
        return False
    if _canon(old, el.get("id")) == _canon(new, nel.get("id")):
        return True
    if not hasattr(new, "_canon_set"):
        new._canon_set = {_canon(new, t) for t, e in new.types.items()
                          if e.tag in _CANON_TAGS}
    return _canon(old, el.get("id")) in new._canon_set


_CANON_TAGS = ("function-type", "pointer-type-def", "qualified-type-def")


def _compare_type(old, new, el, nel, breaks, growth):
    name = old.describe(el.get("id"))
    if el.tag == "function-type" and nel.tag == "function-type":
        if not _renumbered(old, new, el, nel):
            breaks.append("the type %s became %s" % (
                name, new.describe(nel.get("id"))))
        return
    if _renumbered(old, new, el, nel):
        return
    if el.tag != "class-decl" or nel.tag != "class-decl":
        if _shape(el) != _shape(nel):
            breaks.append("the type %s became %s" % (
                name, new.describe(nel.get("id"))))
        return
    raw_om, raw_nm = _members(el), _members(nel)
    # Members by what their types are, not by abidw's ids (_renumbered).
    om = [(n, off, _canon(old, t)) for n, off, t in raw_om]
    nm = [(n, off, _canon(new, t)) for n, off, t in raw_nm]
    osize, nsize = int(el.get("size-in-bits", 0)), int(nel.get("size-in-bits",
                                                                 0))
    if om == nm and osize == nsize:
        return
    growable = bool(om) and om[0][0] == "size"
    if nm[:len(om)] == om and nsize >= osize and growable:
        growth.append("%s grew at its end: %s" % (
            name, ", ".join(m[0] for m in raw_nm[len(om):]) or "padding"))
        return
    breaks.append("%s changed layout%s: {%s} (%d bytes) became {%s} "
                  "(%d bytes)" % (
                      name, "" if growable else " (only a struct that "
                      "begins with `size_t size` may grow)",
                      _layout(old, raw_om), osize // 8, _layout(new, raw_nm),
                      nsize // 8))


def _layout(corpus, members):
    return ", ".join("%s %s @%d" % (corpus.describe(tid), name, int(off) // 8)
                     for name, off, tid in members)


# ---------------------------------------------------------------------------
# Provenance: the baseline changes only together with a CHANGELOG line
# ---------------------------------------------------------------------------

def git(source_dir, *args):
    rc, out = run(["git", "-C", source_dir] + list(args))
    return out if rc == 0 else None


def added_lines(diff):
    return "\n".join(line[1:] for line in (diff or "").splitlines()
                     if line.startswith("+") and not line.startswith("+++"))


def history_problems(old_xml, new_xml, changelog_touched, changelog_added,
                     where):
    """The rules for one change of the baseline file."""
    if not changelog_touched:
        return ["%s changed without a CHANGELOG.md line in %s" % (
            BASELINE_REL, where)]
    if not old_xml:
        return []                    # the first baseline
    old, new = Corpus(old_xml), Corpus(new_xml)
    breaks, _ = compare(old, new)
    problems = ["the baseline was regenerated over an incompatible change "
                "in %s: %s" % (where, b) for b in breaks]
    missing = sorted(n for n in set(new.symbols) - set(old.symbols)
                     if not re.search(r"\b%s\b" % re.escape(n),
                                      changelog_added))
    if missing:
        problems.append("%s adds %s, but the CHANGELOG.md lines added in %s "
                        "do not name %s" % (
                            BASELINE_REL, ", ".join(missing), where,
                            "it" if len(missing) == 1 else "them"))
    return problems


def check_provenance(source_dir):
    """Returns (problems, note) about how the baseline came to be."""
    if git(source_dir, "rev-parse", "--is-inside-work-tree") is None:
        return [], "not a git checkout: CHANGELOG provenance not checked"
    if git(source_dir, "status", "--porcelain", "--", BASELINE_REL):
        with open(os.path.join(source_dir, BASELINE_REL)) as fh:
            new = fh.read()
        return history_problems(
            git(source_dir, "show", "HEAD:" + BASELINE_REL), new,
            bool(git(source_dir, "status", "--porcelain", "--",
                     CHANGELOG_REL)),
            added_lines(git(source_dir, "diff", "HEAD", "--",
                            CHANGELOG_REL)),
            "the working tree"), "the baseline has uncommitted changes"
    commit = (git(source_dir, "log", "-1", "--format=%H", "--",
                  BASELINE_REL) or "").strip()
    if not commit:
        return [], "the baseline is not in git yet"
    files = (git(source_dir, "show", "--name-only", "--format=", commit)
             or "").split()
    return history_problems(
        git(source_dir, "show", "%s^:%s" % (commit, BASELINE_REL)),
        git(source_dir, "show", "%s:%s" % (commit, BASELINE_REL)),
        CHANGELOG_REL in files,
        added_lines(git(source_dir, "show", "--format=", commit, "--",
                        CHANGELOG_REL)),
        "commit " + commit[:12]), \
        "the baseline last changed in commit %s" % commit[:12]


# ---------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------

def generate(library, baseline, include_dir, source_dir):
    if not has_debug_info(library):
        print("%s has no debug info: build with CMAKE_BUILD_TYPE=Debug or "
              "RelWithDebInfo" % library)
        return 1
    err = abidw(library, baseline, include_dir, source_dir)
    if err:
        print(err)
        return 1
    with open(baseline) as fh:
        n = len(Corpus(fh.read()).symbols)
    print("wrote %s (%d exported functions).\nIn the same commit, add a "
          "line to CHANGELOG.md that names what was added." % (baseline, n))
    return 0


def check(library, baseline, include_dir, source_dir, build_dir):
    regenerate = "cmake --build %s --target abi-baseline" % build_dir
    if not has_debug_info(library):
        print("SKIPPED: %s has no debug info, so abidiff cannot see types; "
              "the gate runs in Debug and RelWithDebInfo builds" % library)
        return SKIP
    if not os.path.exists(baseline):
        print("FAILED: no baseline at %s; create it with\n    %s" % (
            baseline, regenerate))
        return 1
    cmd = ["abidiff", baseline, library]
    rc, report = run(cmd)
    print("$ " + " ".join(cmd))
    print(report.rstrip() or "(no difference)")
    if rc & (ABIDIFF_ERROR | ABIDIFF_USAGE):
        print("FAILED: abidiff could not compare (exit %d)" % rc)
        return 1
    with tempfile.TemporaryDirectory(prefix="tether-abi-") as tmp:
        current = os.path.join(tmp, "current.abi")
        err = abidw(library, current, include_dir, source_dir)
        if err:
            print("FAILED: abidw could not read the library\n" + err)
            return 1
        with open(baseline) as fh, open(current) as fh2:
            breaks, growth = compare(Corpus(fh.read()), Corpus(fh2.read()))
    if rc & (ABIDIFF_INCOMPATIBLE | ABIDIFF_CHANGE) or breaks or growth:
        report_change(rc, breaks, growth, regenerate)
        return 1
    problems, note = check_provenance(source_dir)
    print(note)
    for p in problems:
        print("FAILED: " + p)
    if problems:
        return 1
    print("ok: the library matches %s" % BASELINE_REL)
    return 0


def report_change(rc, breaks, growth, regenerate):
    """Says what kind of change the gate found and what to do about it."""
    if rc & ABIDIFF_INCOMPATIBLE or breaks:
        print("FAILED: INCOMPATIBLE ABI CHANGE (abidiff exit %d)" % rc)
        for b in breaks:
            print("  - " + b)
        print("Programs and plugins built against libtether.so.1 would "
              "break.  Within a major version the ABI only grows: add a new "
              "function instead of changing one, and add members only at "
              "the end of a struct that begins with `size_t size` "
              "(docs/abi.md).  Regenerating the baseline does not help: "
              "the test holds a regenerated baseline to the same rule "
              "against the committed one.")
        return
    print("FAILED: the ABI changed compatibly (abidiff exit %d)" % rc)
    for g in growth:
        print("  - " + g)
    print("If that is intended, regenerate the baseline:\n    %s\n"
          "and in the same commit add a line to CHANGELOG.md that names "
          "what was added." % regenerate)


def main(argv):
    if len(argv) == 7 and argv[1] == "check":
        return check(*argv[2:])
    if len(argv) == 6 and argv[1] == "generate":
        return generate(*argv[2:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
