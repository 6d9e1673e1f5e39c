#!/usr/bin/env python3
"""check_docs.py - the documentation checked by the build (label "docs").

Reads Markdown documents and checks what they show:

  * every fenced code block, by what a marker just before it says (or a
    default by language, below);
  * every relative link and image: the file exists inside the repository,
    and a "#fragment" names a heading of the target document;
  * every inline code span that names a file of the repository
    (`core/gil.c`, `tests/lua/`) or a Markdown document (`FIGURES.md`):
    it exists, inside the repository.

A marker is an HTML comment on the line before the fence (blank lines
allowed in between):

  <!-- docs-check: run [prelude=NAME] [libs=lua] [args=A,B] [stdin=TEXT] -->
        C: compile (as C11, -Wall -Wextra -Wpedantic -Werror) and run; it
        must exit 0.  Lua: run with lua5.4 and the built module; it must
        exit 0, and each `--> expected` comment must match the next line of
        output (words compared, `<anything>` matches one or more words).
  <!-- docs-check: compile [prelude=NAME] [libs=lua] -->
        C: compile only (no main needed).  Lua: parse only (luac -p).
  <!-- docs-check: names -->
        Shell: every name the commands use exists (see check_names).
  <!-- docs-check: covered TEST -->
        Compiled and run by another CTest test, which must be registered.
  <!-- docs-check: skip WHY -->
        Deliberately not checked; the reason is required and printed.

A prelude is tests/docs/preludes/NAME.c or NAME.lua: the block replaces
its line "@BLOCK@" (a fragment gets the declarations and the function body
it needs, and nothing of it is shown to the reader).

Defaults, for blocks without a marker (so that new documents are checked
from the start): C with a main() is "run", other C is "compile" (alone, or
else after <tether/tether.h> and the common C headers, at file scope or
as a function body, with unused-variable warnings off); Lua is
"compile"; sh/bash/shell/console is "names"; the existing
"<!-- example: NAME -->" marker of tests/plugin means "covered" by the test
that compiles it.  Other blocks (no language, text, mermaid, cmake) are not
code and are only listed.

  check_docs.py [options] DOC.md...     check, print one line per item
  check_docs.py --list DOC.md...        list the items only, run nothing

Exit status 0 when every item passed or was skipped with a reason, 1 when
one failed, 2 on a usage error.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

C_LANGS = {"c"}
LUA_LANGS = {"lua"}
SH_LANGS = {"sh", "bash", "shell", "console"}
MODES = {"run", "compile", "names", "covered", "skip"}
# Top-level directories of the repository: an inline code span that starts
# with one of these names a file that must exist.
REPO_DIRS = ("abi", "core", "bindings", "plugins", "examples", "tests",
             "bench", "scripts", "cmake", "docs")

MARKER_RE = re.compile(r"^\s*<!--\s*docs-check:\s*(.*?)\s*-->\s*$")
EXAMPLE_RE = re.compile(r"^\s*<!--\s*example:\s*(\S+)\s*-->\s*$")
# An opening fence may carry more after its language (```c title="x.c"):
# the first word is the language.
FENCE_RE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)(?:\s+[^`\s][^`]*)?\s*$")
LINK_RE = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN_RE = re.compile(r"(`+)(.+?)\1")
MD_NAME_RE = re.compile(r"(?<![\w./-])((?:\.\./|\./)?(?:[\w-]+/)*[\w-]+\.md)\b")


class Unchecked(Exception):
    """An item this build cannot check (said, and not counted a failure)."""


class Item:
    """One thing the checker looks at: a code block or a reference."""

    def __init__(self, doc, line, kind, lang="", mode="", opts=None,
                 text="", why=""):
        self.doc, self.line, self.kind, self.lang = doc, line, kind, lang
        self.mode, self.opts, self.text, self.why = mode, opts or {}, text, why

    def where(self):
        return "%s:%d" % (self.doc, self.line)


def parse_marker(body):
    """'run prelude=x args=a,b' -> ('run', {'prelude': 'x', ...}, '')."""
    words = body.split(None, 1)
    if not words:
        raise ValueError("empty docs-check marker")
    mode = words[0]
    rest = words[1] if len(words) > 1 else ""
    if mode not in MODES:
        raise ValueError("unknown docs-check mode '%s' (one of %s)" %
                         (mode, ", ".join(sorted(MODES))))
    if mode == "skip":
        if not rest.strip():
            raise ValueError("'docs-check: skip' needs a reason")
        return mode, {}, rest.strip()
    if mode == "covered":
        if not rest.strip():
            raise ValueError("'docs-check: covered' needs a test name")
        return mode, {"test": rest.split()[0]}, ""
    opts = {}
    for w in shlex.split(rest):
        if "=" not in w:
            raise ValueError("marker option '%s' is not NAME=VALUE" % w)
        k, v = w.split("=", 1)
        if k not in ("prelude", "libs", "args", "stdin", "timeout"):
            raise ValueError("unknown marker option '%s'" % k)
        opts[k] = v
    return mode, opts, ""


# How an unmarked C fragment is tried when it does not compile alone.
AUTO_FILE = """#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tether/tether.h>
@BLOCK@
"""
AUTO_BODY = AUTO_FILE.replace("@BLOCK@", "void docs_fragment(void);\n"
                              "void docs_fragment(void)\n{\n@BLOCK@\n}")


def default_mode(lang, text):
    if lang in C_LANGS:
        return "run" if re.search(r"\bint\s+main\s*\(", text) else "compile"
    if lang in LUA_LANGS:
        return "compile"
    if lang in SH_LANGS:
        return "names"
    return ""


def slug(heading):
    """GitHub's anchor for a heading."""
    h = heading.strip().lower()
    h = re.sub(r"[`*_]", "", h)
    h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h)
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors_of(path):
    result, seen, fence = set(), {}, False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if FENCE_RE.match(line):
                fence = not fence
                continue
            m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                s = slug(m.group(1))
                n = seen.get(s, 0)
                seen[s] = n + 1
                result.add(s if n == 0 else "%s-%d" % (s, n))
    return result


def scan(doc, rel):
    """The items of one document."""
    items, errors = [], []
    with open(doc, encoding="utf-8") as f:
        lines = f.read().split("\n")
    pending = None      # (line, mode, opts, why) of the last marker
    pending_example = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARKER_RE.match(line)
        if m:
            try:
                pending = (i + 1,) + parse_marker(m.group(1))
            except ValueError as e:
                errors.append(Item(rel, i + 1, "marker", why=str(e)))
                pending = None
            i += 1
            continue
        m = EXAMPLE_RE.match(line)
        if m:
            pending_example = m.group(1)
            i += 1
            continue
        m = FENCE_RE.match(line)
        if m:
            indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
            start = i + 1
            body = []
            i += 1
            while i < len(lines) and not re.match(
                    r"^\s*" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence),
                    lines[i]):
                body.append(lines[i][len(indent):]
                            if lines[i].startswith(indent) else lines[i])
                i += 1
            text = "\n".join(body) + "\n"
            if pending:
                mode, opts, why = pending[1], pending[2], pending[3]
            elif pending_example:
                mode, opts, why = "covered", {"example": pending_example}, ""
            else:
                mode, opts, why = default_mode(lang, text), {}, ""
                if mode == "compile" and lang in C_LANGS:
                    opts = {"auto": "1"}
            kind = "block" if mode else "text"
            items.append(Item(rel, start, kind, lang, mode, opts, text, why))
            pending = pending_example = None
            i += 1
            continue
        if line.strip():
            if pending:
                errors.append(Item(rel, pending[0], "marker",
                                   why="docs-check marker not followed by a "
                                       "code block"))
            pending = pending_example = None
            for lm in LINK_RE.finditer(line):
                items.append(Item(rel, i + 1, "link", text=lm.group(1)))
            prose = line
            for cm in CODE_SPAN_RE.finditer(line):
                items.append(Item(rel, i + 1, "span", text=cm.group(2).strip()))
            prose = CODE_SPAN_RE.sub(" ", line)
            prose = LINK_RE.sub(" ", prose)
            prose = re.sub(r"https?://\S+", " ", prose)
            for mm in MD_NAME_RE.finditer(prose):
                items.append(Item(rel, i + 1, "mdname", text=mm.group(1)))
        i += 1
    return items, errors


class Checker:
    def __init__(self, args):
        self.a = args
        self.root = os.path.realpath(args.root)
        self.tmp = tempfile.mkdtemp(prefix="docs-check-")
        self._tests = None
        self._labels = None
        self._targets = None
        self._cmake_text = None

    # ---- helpers -------------------------------------------------------

    def inside(self, path):
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + os.sep)

    def run(self, cmd, timeout=None, **kw):
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout,
                               **kw)
            return p.returncode, p.stdout.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            return None, out + "\n(timed out after %s s)" % timeout

    def timeout(self, item):
        scale = int(os.environ.get("TETHER_TEST_TIMEOUT_SCALE", "1") or 1)
        return int(item.opts.get("timeout", "60")) * scale

    def prelude(self, item, ext):
        name = item.opts.get("prelude")
        if not name:
            return item.text
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "preludes", name + ext)
        with open(path, encoding="utf-8") as f:
            pre = f.read()
        if "@BLOCK@" not in pre:
            raise ValueError("prelude %s has no @BLOCK@ line" % path)
        block = item.text
        if ext == ".c":   # the compiler's messages name the document's lines
            block = '#line %d "%s"\n%s' % (item.line + 1, item.doc, block)
        return pre.replace("@BLOCK@", block)

    def build_tests(self):
        if self._tests is None:
            self._tests, self._labels = set(), set()
            if self.a.build:
                rc, out = self.run(["ctest", "--test-dir", self.a.build, "-N"])
                for m in re.finditer(r"Test\s+#\d+:\s+(\S+)", out):
                    self._tests.add(m.group(1))
                rc, out = self.run(["ctest", "--test-dir", self.a.build,
                                    "--print-labels"])
                for line in out.splitlines()[1:]:
                    if line.strip() and not line.startswith("All Labels"):
                        self._labels.add(line.strip())
        return self._tests

    def cmake_text(self):
        """Every CMakeLists.txt and *.cmake of the repository, joined."""
        if self._cmake_text is None:
            parts = []
            for d, dirs, files in os.walk(self.root):
                dirs[:] = [x for x in dirs
                           if not x.startswith(".") and x != "build"]
                for f in files:
                    if f == "CMakeLists.txt" or f.endswith(".cmake"):
                        with open(os.path.join(d, f), encoding="utf-8",
                                  errors="replace") as fh:
                            parts.append(fh.read())
            self._cmake_text = "\n".join(parts)
        return self._cmake_text

    def targets(self):
        if self._targets is None:
            self._targets = set()
            if self.a.build:
                rc, out = self.run(["cmake", "--build", self.a.build,
                                    "--target", "help"])
                for m in re.finditer(r"^(?:\.\.\. )?([\w.+-]+)(?::|\s|$)",
                                     out, re.M):
                    self._targets.add(m.group(1))
        return self._targets

    def compiler_cmd(self, src, out, compile_only, libs):
        cmd = [self.a.cc, "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra",
               "-Wpedantic", "-Werror"]
        cmd += shlex.split(self.a.cflags or "")
        for inc in self.a.include:
            cmd += ["-I", inc]
        if "lua" in libs:
            cmd += shlex.split(self.a.lua_cflags or "")
        if compile_only:
            return cmd + ["-c", src, "-o", out]
        cmd += [src, "-o", out]
        if self.a.lib:
            libdir = os.path.dirname(os.path.abspath(self.a.lib))
            cmd += [self.a.lib, "-Wl,-rpath," + libdir]
        if "lua" in libs:
            cmd += shlex.split(self.a.lua_libs or "")
        return cmd + shlex.split(self.a.ldflags or "") + ["-lpthread", "-ldl"]

    # ---- code blocks ---------------------------------------------------

    def check_c(self, item):
        libs = item.opts.get("libs", "").split(",")
        src = os.path.join(self.tmp, "ex%d.c" % item.line)
        exe = os.path.join(self.tmp, "ex%d" % item.line)
        with open(src, "w", encoding="utf-8") as f:
            f.write('#line %d "%s"\n' % (item.line + 1, item.doc)
                    if not item.opts.get("prelude") else "")
            f.write(self.prelude(item, ".c"))
        compile_only = item.mode == "compile"
        rc, out = self.run(self.compiler_cmd(
            src, exe + (".o" if compile_only else ""), compile_only, libs))
        if rc != 0 and item.opts.get("auto"):
            # An unmarked fragment: also try it after the public header, at
            # file scope and then as a function body, before calling it
            # broken (a marker with a prelude says exactly what it needs).
            for wrap in (AUTO_FILE, AUTO_BODY):
                with open(src, "w", encoding="utf-8") as f:
                    f.write(wrap.replace("@BLOCK@", '#line %d "%s"\n%s' % (
                        item.line + 1, item.doc, item.text)))
                rc2, _ = self.run(self.compiler_cmd(
                    src, exe + ".o", True, libs) + ["-Wno-unused"])
                if rc2 == 0:
                    return None
        if rc != 0:
            return "does not compile:\n" + out
        if compile_only:
            return None
        args = [a for a in item.opts.get("args", "").split(",") if a]
        rc, out = self.run([exe] + args, timeout=self.timeout(item),
                           cwd=self.tmp, env=self.env(),
                           input=item.opts.get("stdin", "").encode())
        if rc != 0:
            return self.exit_problem(rc, out, item)
        return None

    def exit_problem(self, rc, out, item):
        if rc is None:
            return ("did not finish within %d s (a deadlock?):\n%s" %
                    (self.timeout(item), out))
        return "exits with %s:\n%s" % (rc, out)

    def env(self):
        e = dict(os.environ)
        for kv in self.a.env:
            k, v = kv.split("=", 1)
            e[k] = v
        return e

    def check_lua(self, item):
        src = os.path.join(self.tmp, "ex%d.lua" % item.line)
        text = self.prelude(item, ".lua")
        with open(src, "w", encoding="utf-8") as f:
            f.write(text)
        if item.mode == "compile":
            rc, out = self.run([self.a.luac, "-p", src])
            return None if rc == 0 else "does not parse:\n" + out
        env = self.env()
        env.pop("LD_PRELOAD", None)
        env.update(dict(kv.split("=", 1) for kv in self.a.lua_env))
        rc, out = self.run([self.a.lua, src], timeout=self.timeout(item),
                           cwd=self.tmp, env=env,
                           input=item.opts.get("stdin", "").encode())
        if rc != 0:
            return self.exit_problem(rc, out, item)
        return self.expectations(item.text, out)

    @staticmethod
    def expectations(text, out):
        """Each `--> words` comment matches the next line printed."""
        want = [m.group(1).strip() for m in
                re.finditer(r"-->\s*(.*?)\s*$", text, re.M)]
        got = out.splitlines()
        for n, w in enumerate(want):
            if n >= len(got):
                return "prints %d lines, the comments show %d:\n%s" % (
                    len(got), len(want), out)
            pat = r"\s+".join(r"\S+(?:\s+\S+)*?" if re.fullmatch(r"<[^>]*>", t)
                              else re.escape(t) for t in w.split())
            if not re.fullmatch(pat, got[n].strip()):
                return "line %d printed is %r, the comment shows %r" % (
                    n + 1, got[n], w)
        return None

    def check_covered(self, item):
        if "example" in item.opts:
            name = item.opts["example"]
            if not re.search(r"tether_doc_example\([^)]*\b%s\b" %
                             re.escape(name), self.cmake_text()):
                return ("marked <!-- example: %s --> but no CMake file "
                        "extracts it (tether_doc_example)" % name)
            return None
        test = item.opts["test"]
        if not self.a.build:
            return None
        if test not in self.build_tests():
            return "names the test %s, which is not registered" % test
        return None

    # ---- shell commands ------------------------------------------------

    def check_names(self, item):
        problems = []
        text = re.sub(r"\\\n", " ", item.text)
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("$ "):
                line = line[2:]
            if not line or line.startswith("#"):
                continue
            try:
                lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
                lex.whitespace_split = True
                lex.commenters = "#"
                tokens = list(lex)
            except ValueError as e:
                problems.append("cannot parse %r: %s" % (line, e))
                continue
            words = []
            for tok in tokens + [";"]:
                if tok and set(tok) <= set(";&|"):
                    problems += self.check_command(words)
                    words = []
                else:
                    words.append(tok)
        return "; ".join(problems) if problems else None

    def build_path(self, word, fallback=False):
        """build/<preset>/x -> that path in the preset's tree: ours when we
        are that preset's build, else the tree next to ours if it exists.
        With `fallback`, a preset whose tree is not there maps to ours (the
        layout of the trees is the same), for names of programs."""
        m = re.match(r"^build/([\w-]+)(/.*)?$", word)
        if not m:
            return None, None
        preset, rest = m.group(1), (m.group(2) or "")
        tree = os.path.join(self.root, "build", preset)
        if self.a.build and os.path.basename(
                os.path.realpath(self.a.build)) == preset:
            tree = self.a.build
        if not os.path.isdir(tree):
            if not (fallback and self.a.build):
                return preset, None
            tree = self.a.build
        return preset, tree + rest

    def presets(self):
        import json
        with open(os.path.join(self.root, "CMakePresets.json")) as f:
            return {p["name"] for p in json.load(f)["configurePresets"]}

    def check_command(self, words):
        problems = []
        while words and re.match(r"^\w+=", words[0]):   # VAR=value prefixes
            var, val = words[0].split("=", 1)
            for part in val.split(";"):
                problems += self.check_path_word(part.replace("?", "tether"))
            words = words[1:]
        if not words:
            return problems
        prog = words[0]
        if prog in ("cmake", "ctest"):
            problems += self.check_cmake(prog, words[1:])
            return problems
        script = None
        for n, w in enumerate(words):
            w0 = w.strip("[]")
            if w0.startswith("-"):
                if script and not w0.startswith("-max") and \
                        re.match(r"^--?[\w-]+", w0):
                    opt = re.match(r"^--?[\w-]+", w0).group(0)
                    if opt not in script[1]:
                        problems.append("%s has no option %s" %
                                        (script[0], opt))
                continue
            p = self.check_path_word(w0)
            problems += p
            local = os.path.join(self.root, w0.lstrip("./")
                                 if w0.startswith("./") else w0)
            if not p and os.path.isfile(local) and \
                    w0.split("/")[0].lstrip(".") in ("", "scripts", "bench",
                                                     "tests", "examples"):
                with open(local, encoding="utf-8", errors="replace") as f:
                    script = (w0, f.read())
                if n == 0 and not os.access(local, os.X_OK):
                    problems.append("%s is not executable" % w0)
            elif not p and w0.startswith("build/"):
                preset, path = self.build_path(w0, fallback=True)
                if path and os.path.basename(path) == "tether-bench" and \
                        os.access(path, os.X_OK):
                    problems += self.check_bench_groups(path, words[n + 1:])
                elif path and "/tests/" in path and os.access(path, os.X_OK) \
                        and n + 1 < len(words) and \
                        re.fullmatch(r"\w+", words[n + 1]):
                    problems += self.check_case(path, w0, words[n + 1])
        return problems

    def check_case(self, exe, name, case):
        """A test program of tests/runner, and one of its cases."""
        rc, out = self.run([exe, "--list"], timeout=60)
        if rc == 0 and case not in out.split():
            return ["%s has no case %s" % (name, case)]
        return []

    def check_bench_groups(self, exe, words):
        rc, out = self.run([exe, "--list"])
        groups = set(out.split())
        problems = []
        for k, w in enumerate(words):
            if w == "--only" and k + 1 < len(words):
                for g in words[k + 1].split(","):
                    if g not in groups:
                        problems.append("tether-bench has no group %s" % g)
        return problems

    def check_path_word(self, w):
        """A word that names a repository file or a build-tree file."""
        if "<" in w or "*" in w or "{" in w or "$" in w:
            return []
        if w.startswith("build/"):
            preset, path = self.build_path(w, fallback=True)
            if path is None:
                return []   # that preset's tree is not built here
            if not os.path.exists(path) and not (
                    os.path.basename(path) in self.targets()):
                return ["%s does not exist in %s" % (w, self.a.build or
                                                     "the build")]
            return []
        w0 = w[2:] if w.startswith("./") else w
        if w0.split("/")[0] in REPO_DIRS and "/" in w0:
            if not os.path.exists(os.path.join(self.root, w0)):
                return ["%s does not exist in the repository" % w]
        return []

    def check_cmake(self, prog, words):
        problems = []
        for k, w in enumerate(words):
            nxt = words[k + 1] if k + 1 < len(words) else None
            if w == "--preset" and nxt and nxt not in self.presets():
                problems.append("no CMake preset %s" % nxt)
            if w in ("--build", "--test-dir", "-B", "--install") and nxt:
                preset, path = self.build_path(nxt)
                if preset and preset not in self.presets() and \
                        preset != "bench":
                    problems.append("%s is not the tree of a preset" % nxt)
            if w == "--target" and nxt:
                for t in words[k + 1:]:
                    if t.startswith("-"):
                        break
                    if self.a.build and t not in self.targets() and \
                            not re.search(r"\b%s\b" % re.escape(t),
                                          self.cmake_text()):
                        problems.append("no build target %s" % t)
            if w.startswith("-D") and "=" in w:
                var = w[2:].split("=")[0]
                if not re.search(r"\b%s\b" % re.escape(var),
                                 self.cmake_text()):
                    problems.append("no CMake option %s" % var)
            if prog == "ctest" and w in ("-L", "--label-regex") and nxt:
                self.build_tests()
                if nxt not in self._labels and not re.search(
                        r"LABELS\s+[^)]*\b%s\b" % re.escape(nxt),
                        self.cmake_text()):
                    problems.append("no test label %s" % nxt)
            if prog == "ctest" and w in ("-R", "--tests-regex") and nxt:
                tree = None
                for j, v in enumerate(words):
                    if v == "--test-dir" and j + 1 < len(words):
                        tree = self.build_path(words[j + 1])[1]
                if tree and os.path.isdir(tree):
                    rc, out = self.run(["ctest", "--test-dir", tree, "-N",
                                        "-R", nxt])
                    if not re.search(r"Total Tests:\s*[1-9]", out):
                        problems.append("no test matches -R %s in %s" %
                                        (nxt, tree))
        return problems

    # ---- references ----------------------------------------------------

    def check_link(self, item, docpath):
        target = item.text
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            return None     # http:, https:, mailto:
        path, _, frag = target.partition("#")
        base = os.path.dirname(docpath)
        full = os.path.normpath(os.path.join(base, path)) if path else docpath
        if not self.inside(full):
            return "links to %s, outside the repository" % target
        if not os.path.exists(full):
            return "links to %s, which does not exist" % target
        if frag and full.endswith(".md") and frag not in anchors_of(full):
            return "links to #%s, which is no heading of %s" % (
                frag, os.path.relpath(full, self.root))
        return None

    def check_span(self, item, docpath):
        w = item.text
        if w.startswith("../"):
            full = os.path.normpath(os.path.join(os.path.dirname(docpath), w))
            if not self.inside(full) or not os.path.exists(full):
                return "names %s, outside the repository or missing" % w
            return None
        if not re.fullmatch(r"[\w./-]+", w) or "/" not in w:
            return None
        if w.split("/")[0] not in REPO_DIRS:
            return None
        if not os.path.exists(os.path.join(self.root, w)):
            return "names %s, which is not in the repository" % w
        return None

    def check_mdname(self, item, docpath):
        w = item.text
        cands = [os.path.join(os.path.dirname(docpath), w),
                 os.path.join(self.root, w), os.path.join(self.root, "docs", w)]
        for c in cands:
            c = os.path.normpath(c)
            if self.inside(c) and os.path.exists(c):
                return None
        return "mentions %s, which is not in the repository" % w

    # ---- driver --------------------------------------------------------

    def check(self, item, docpath):
        if item.kind == "marker":
            return item.why
        if item.kind == "link":
            return self.check_link(item, docpath)
        if item.kind == "span":
            return self.check_span(item, docpath)
        if item.kind == "mdname":
            return self.check_mdname(item, docpath)
        if item.kind == "text" or item.mode == "skip":
            return None
        if item.mode == "covered":
            return self.check_covered(item)
        if item.mode == "names":
            return self.check_names(item)
        if self.a.no_lua and (item.lang in LUA_LANGS or
                              "lua" in item.opts.get("libs", "")):
            raise Unchecked("no Lua in this build")
        if item.lang in C_LANGS:
            return self.check_c(item)
        if item.lang in LUA_LANGS:
            return self.check_lua(item)
        return "mode %s does not apply to a %s block" % (item.mode,
                                                         item.lang or "plain")


def describe(item):
    if item.kind == "block":
        extra = ""
        if item.mode == "covered":
            extra = " by " + (item.opts.get("test") or
                              "tests/plugin (example %s)" %
                              item.opts.get("example"))
        if item.opts.get("prelude"):
            extra += " (prelude %s)" % item.opts["prelude"]
        if item.mode == "skip":
            extra = ": " + item.why
        return "%s block, %s%s" % (item.lang, item.mode, extra)
    if item.kind == "text":
        return "%s block, not code" % (item.lang or "plain")
    return "%s %s" % (item.kind, item.text if item.kind != "marker"
                      else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("docs", nargs="+")
    ap.add_argument("--root", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("--build", help="the build tree (test and target names)")
    ap.add_argument("--list", action="store_true",
                    help="list the items, check nothing")
    ap.add_argument("--cc", default="cc")
    ap.add_argument("--cflags", default="")
    ap.add_argument("--ldflags", default="")
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--lib", help="libtether.so to link the C examples with")
    ap.add_argument("--lua-cflags", default="")
    ap.add_argument("--lua-libs", default="")
    ap.add_argument("--lua", default="lua5.4")
    ap.add_argument("--luac", default="luac5.4")
    ap.add_argument("--no-lua", action="store_true",
                    help="this build has no Lua: Lua blocks are skipped")
    ap.add_argument("--lua-env", action="append", default=[],
                    help="NAME=VALUE for the Lua examples (LUA_CPATH...)")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=VALUE for the C examples")
    a = ap.parse_args()
    checker = Checker(a)
    failed = 0
    counts = {}
    for doc in a.docs:
        docpath = os.path.realpath(doc)
        rel = os.path.relpath(docpath, checker.root)
        items, errors = scan(docpath, rel)
        for item in errors + items:
            key = "%s/%s" % (item.kind, item.mode or "-")
            if a.list:
                print("%s  %s" % (item.where(), describe(item)))
                counts[key] = counts.get(key, 0) + 1
                continue
            try:
                problem = checker.check(item, docpath)
            except Unchecked as e:
                print("skip %s  %s: %s" % (item.where(), describe(item), e))
                continue
            except (OSError, ValueError) as e:
                problem = str(e)
            if problem:
                failed += 1
                print("FAIL %s  %s: %s" % (item.where(), describe(item),
                                           problem.rstrip()))
                if item.kind == "block" and item.mode in ("run", "compile") \
                        and item.lang in C_LANGS | LUA_LANGS:
                    print("     (fix the example, or mark it: "
                          "<!-- docs-check: compile prelude=NAME --> for a "
                          "fragment, <!-- docs-check: skip WHY --> for one "
                          "that is partial on purpose)")
            elif item.kind == "block" and item.mode == "skip":
                print("skip %s  %s" % (item.where(), describe(item)))
            elif item.kind in ("block", "link"):
                print("ok   %s  %s" % (item.where(), describe(item)))
            counts[key] = counts.get(key, 0) + 1
    shutil.rmtree(checker.tmp, ignore_errors=True)
    summary = ", ".join("%s %d" % (k, v) for k, v in sorted(counts.items()))
    print("%s: %s%s" % ("listed" if a.list else "checked", summary,
                        "; %d FAILED" % failed if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
