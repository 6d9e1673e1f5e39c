#!/usr/bin/env python3
"""check_layers.py - the Lua binding's floor plan holds (test lua.layers).

docs/internals.md, "The Lua binding", draws bindings/lua as floors: a file
calls functions only of files on lower floors.  This reads the plan from
that section (its lines "floor N  FILE ..."), finds in each .c file of the
binding the functions it defines with external linkage and the lt_* names
it uses (comments and strings left out), and fails, naming file, function
and floors, for every call that runs sideways or up, for a source file
that the plan leaves out and for a file of the plan that is gone.

  check_layers.py REPO_ROOT
"""
import os
import re
import sys


def plan(doc):
    text = open(doc, encoding="utf-8").read()
    start = text.index("## The Lua binding")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)]
    floors, current = {}, None
    for line in section.splitlines():
        m = re.match(r"floor (\d+)\s+(\S+)", line)
        if m:
            current = int(m.group(1))
            floors[m.group(2)] = current
            continue
        m = re.match(r"\s+(lt\S*\.[ch])\s", line + " ")
        if m and current is not None:
            floors[m.group(1)] = current
    return floors


def code_only(src):
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    src = re.sub(r"//[^\n]*", " ", src)
    return re.sub(r'"(\\.|[^"\\\n])*"', '""', src)


def main():
    root = sys.argv[1]
    lua = os.path.join(root, "bindings", "lua")
    floors = plan(os.path.join(root, "docs", "internals.md"))
    sources = sorted(f for f in os.listdir(lua) if f.endswith((".c", ".h")))
    bad = []
    for f in sources:
        if f not in floors:
            bad.append(f"{f}: not on the plan in docs/internals.md")
    for f in floors:
        if f not in sources:
            bad.append(f"{f}: on the plan but not in bindings/lua")
    code = {f: code_only(open(os.path.join(lua, f)).read())
            for f in sources if f.endswith(".c")}
    defined = {}
    for f, src in code.items():
        for m in re.finditer(r"^(?!static)[A-Za-z_][^;{}()]*?\b(lt_\w+|luaopen_tether)\s*\(",
                             src, flags=re.M):
            defined[m.group(1)] = f
    for f, src in code.items():
        for name in sorted(set(re.findall(r"\b(lt_\w+|luaopen_tether)\b", src))):
            home = defined.get(name)
            if not home or home == f or f not in floors or home not in floors:
                continue
            if floors[home] >= floors[f]:
                bad.append(f"{f} (floor {floors[f]}) calls {name} of {home} "
                           f"(floor {floors[home]})")
    for line in bad:
        print(line)
    print(f"{len(code)} files, {len(defined)} functions: "
          f"{'ok' if not bad else str(len(bad)) + ' violations'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
