#!/usr/bin/env python3
"""Test lang.docs_excerpts: the Rust and Go code that docs/languages.md
shows is the code the tests compile and run.

A block preceded by

    <!-- from: PATH -->            the whole file PATH
    <!-- from: PATH#NAME -->       the lines between "docs:begin NAME" and
                                   "docs:end NAME" comment lines in PATH

(followed by its docs-check marker) must equal that text, dedented.  PATH
is relative to the repository.  Exit 1 with a diff when one differs, or
when a document has no such block at all.

  check_excerpts.py ROOT DOC.md...
"""
import difflib
import os
import re
import sys
import textwrap

FROM_RE = re.compile(r"^<!--\s*from:\s*(\S+?)(?:#(\S+))?\s*-->\s*$")
FENCE_RE = re.compile(r"^(```+)\s*[\w+-]*\s*$")


def region(path, name):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if not name:
        return "\n".join(lines).rstrip("\n") + "\n"
    begin = [i for i, l in enumerate(lines) if re.search(r"docs:begin %s\b" % re.escape(name), l)]
    end = [i for i, l in enumerate(lines) if re.search(r"docs:end %s\b" % re.escape(name), l)]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        raise ValueError("%s: no single docs:begin/docs:end %s pair" % (path, name))
    return textwrap.dedent("\n".join(lines[begin[0] + 1:end[0]]) + "\n")


def blocks(doc):
    with open(doc, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i, want = 0, None
    while i < len(lines):
        m = FROM_RE.match(lines[i])
        if m:
            want = (m.group(1), m.group(2), i + 1)
        else:
            f = FENCE_RE.match(lines[i])
            if f:
                body, i = [], i + 1
                while i < len(lines) and lines[i].strip() != f.group(1):
                    body.append(lines[i])
                    i += 1
                if want:
                    yield want, "\n".join(body) + "\n"
                want = None
            elif lines[i].strip() and not lines[i].startswith("<!--"):
                want = None
        i += 1


def main():
    root, docs = sys.argv[1], sys.argv[2:]
    bad = checked = 0
    for doc in docs:
        for (path, name, line), text in blocks(doc):
            checked += 1
            where = "%s:%d" % (os.path.relpath(doc, root), line)
            try:
                want = region(os.path.join(root, path), name)
            except (OSError, ValueError) as e:
                print("FAIL %s: %s" % (where, e))
                bad += 1
                continue
            if text != want:
                bad += 1
                print("FAIL %s: the block is not %s%s:" % (where, path, "#" + name if name else ""))
                sys.stdout.writelines(difflib.unified_diff(
                    want.splitlines(True), text.splitlines(True), path, "the document"))
            else:
                print("ok   %s = %s%s" % (where, path, "#" + name if name else ""))
    if checked == 0:
        print("FAIL: no <!-- from: ... --> block in %s" % " ".join(docs))
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
