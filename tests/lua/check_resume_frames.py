#!/usr/bin/env python3
"""check_resume_frames.py - the module's coroutine switch keeps the standard
library's C frame depth (test lua.resume_frames; issue 13, D16).

Between the Lua call of a `coroutine.wrap` function (or `coroutine.resume`)
and `lua_resume` there must be two C frames, as in Lua's own library
(auxwrap or luaB_coresume, then auxresume): with one, every switch pays two
more mispredicted returns after the yield's longjmp (bindings/lua/lt_hook.c,
the comment above `resume`; docs/lua.md, "Coroutine switches").  No timing
shows this reliably on a shared machine; the machine code does.  This
disassembles the built module and fails unless `wrapped` and
`coroutine_resume` call `resume` and do not call `lua_resume` themselves,
and `resume` calls `lua_resume`.

  check_resume_frames.py PATH_TO_tether.so

Exits 77 (skipped) when objdump is missing or the module has no symbol
table (a stripped build); a module whose `resume` is gone (inlined
everywhere) fails.
"""
import re
import shutil
import subprocess
import sys


def functions(path):
    """Maps each function of the module's .text to the names it calls.
    Compiler clones and split parts (resume.constprop.0, wrapped.cold) count
    as the function they come from."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                         check=True, capture_output=True, text=True).stdout
    calls, current = {}, None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if m:
            current = m.group(1).split("@")[0].split(".")[0]
            calls.setdefault(current, set())
            continue
        m = re.search(r"\b(?:call|jmp)\s+[0-9a-f]+ <([^>+]+)(?:\+0x[0-9a-f]+)?>", line)
        if current and m:
            calls[current].add(m.group(1).split("@")[0].split(".")[0])
    return calls


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if not shutil.which("objdump"):
        print("skipped: no objdump")
        return 77
    calls = functions(sys.argv[1])
    if "wrapped" not in calls or "coroutine_resume" not in calls:
        print("skipped: no symbol table in %s" % sys.argv[1])
        return 77
    if "resume" not in calls:
        print("FAIL: no function resume (inlined into its callers: one C "
              "frame fewer than the standard library's)")
        return 1
    bad = []
    for caller in ("wrapped", "coroutine_resume"):
        if "resume" not in calls[caller]:
            bad.append("%s does not call resume (inlined: one C frame "
                       "fewer than the standard library's)" % caller)
        if "lua_resume" in calls[caller]:
            bad.append("%s calls lua_resume itself" % caller)
    if "lua_resume" not in calls["resume"]:
        bad.append("resume does not call lua_resume")
    for b in bad:
        print("FAIL: " + b)
    if not bad:
        print("ok: wrapped and coroutine_resume -> resume -> lua_resume")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
