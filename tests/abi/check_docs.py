#!/usr/bin/env python3
"""The table of exported functions in docs/abi.md follows the headers.

  check_docs.py check  DOC VERSION_SCRIPT INCLUDE_DIR
  check_docs.py update DOC VERSION_SCRIPT INCLUDE_DIR

The table sits between the BEGIN/END markers below; it lists every
TETHER_API function by header section with its thread tags and the version
node that added it.  `check` (the abi.docs test) fails with a diff when the
table differs from what the headers say; `update` (the `abi-docs` CMake
target) rewrites it.
"""

import difflib
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "abi"))
import tether_header as th  # noqa: E402

BEGIN = "<!-- BEGIN exported-functions: generated from the headers -->"
END = "<!-- END exported-functions -->"


def split_doc(text):
    m = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), text, re.S)
    if not m:
        raise SystemExit("docs/abi.md has no %r ... %r markers" % (BEGIN,
                                                                   END))
    return text[:m.start(1)], m.group(1), text[m.end(1):]


def expected_table(map_path, include_dir):
    api = th.parse(th.public_headers(include_dir))
    return th.render_doc_table(api, th.parse_version_script(map_path))


def main(argv):
    if len(argv) != 5 or argv[1] not in ("check", "update"):
        sys.stderr.write(__doc__)
        return 2
    doc, map_path, include_dir = argv[2:]
    with open(doc) as fh:
        head, table, tail = split_doc(fh.read())
    want = expected_table(map_path, include_dir)
    if argv[1] == "update":
        with open(doc, "w") as fh:
            fh.write(head + want + tail)
        print("updated the table in %s" % doc)
        return 0
    if table == want:
        print("ok: the table in %s matches the headers" % doc)
        return 0
    sys.stdout.writelines(difflib.unified_diff(
        table.splitlines(True), want.splitlines(True),
        "docs/abi.md (now)", "from the headers"))
    print("FAILED: the table of exported functions is out of date; "
          "regenerate it with\n    cmake --build <build-dir> --target "
          "abi-docs")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
