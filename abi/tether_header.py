"""Reads tether's public headers: the one model of the ABI.

Every machine check of the ABI starts here, so that all of them follow the
headers as they grow: the version-script check, the type discipline check,
the exported-function table in docs/abi.md, the LuaJIT cdefs, and
abi/tether-abi.json, the ABI as data from which the language bindings
(bindings/) are generated or against which they are checked.  The parser understands the small dialect the
public headers are written in (and fails loudly on anything else):

  - declarations marked with TETHER_API are the library's exports;
  - declarations marked with TETHER_PLUGIN_EXPORT are what a plugin exports;
  - typedefs of fixed-width integers, of function pointers and of structs;
  - anonymous enums of constants, and #define'd integer constants;
  - the TETHER_STATUS_MAP X-macro list of status codes.

The model it builds is checked against the C compiler by check_headers.py
(it renders the model back to C and static-asserts every size and offset),
so whatever is derived from it is derived from what the compiler sees.

Run as a script it prints (or, with -o FILE first, writes):

  tether_header.py exports HEADER...   the exported functions, one a line
                                       (what abi/tether.map must list)
  tether_header.py cdef HEADER...      LuaJIT ffi.cdef text
  tether_header.py json MAP HEADER...  the ABI as data (abi/tether-abi.json;
                                       MAP is abi/tether.map, for the ABI
                                       version that added each function)
"""

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

# Markers that stand before a declaration.  Both expand to attributes or to
# nothing; the parser takes them as labels of who exports the function.
EXPORT_MARKERS = ("TETHER_API", "TETHER_PLUGIN_EXPORT")

THREAD_TAGS = ("any-thread", "gil-held", "owner-thread", "async-signal-safe")

C_TYPE_KEYWORDS = {
    "void", "char", "short", "int", "long", "float", "double", "signed",
    "unsigned", "_Bool", "bool", "const", "volatile", "struct", "union",
    "enum",
}


class HeaderError(Exception):
    """The header uses a construct this parser does not understand."""


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------

@dataclass
class CType:
    """A C type in the restricted vocabulary of the public headers.

    `words` are the specifier words without qualifiers ("uint64_t",
    "struct tether_config", "unsigned long"); `ptr` is the pointer depth;
    `fn` is set for a pointer to function; `array` for a member array;
    `bits` for a bitfield width (which the type check rejects).
    """
    words: List[str]
    const: bool = False
    ptr: int = 0
    fn: Optional["FuncSig"] = None
    array: Optional[int] = None
    bits: Optional[int] = None

    @property
    def base(self) -> str:
        return " ".join(self.words)

    def render(self, name: str = "") -> str:
        """The C spelling of a declaration of `name` with this type."""
        stars = "*" * self.ptr
        if self.fn is not None:
            return self.fn.ret.render("(%s%s)(%s)" % (
                stars, name, self.fn.render_params()))
        decl = stars + name
        if self.array is not None:
            decl += "[%d]" % self.array
        if self.bits is not None:
            decl += " : %d" % self.bits
        spec = ("const " if self.const else "") + self.base
        return spec + (" " + decl if decl else "")


@dataclass
class Param:
    name: str
    type: CType


@dataclass
class FuncSig:
    ret: CType
    params: List[Param]
    varargs: bool = False

    def render_params(self) -> str:
        parts = [p.type.render(p.name) for p in self.params]
        if self.varargs:
            parts.append("...")
        return ", ".join(parts) if parts else "void"


@dataclass
class Function:
    name: str
    sig: FuncSig
    marker: str          # "TETHER_API" or "TETHER_PLUGIN_EXPORT"
    doc: str
    header: str
    section: str

    @property
    def tags(self) -> List[str]:
        return [t for t in THREAD_TAGS if "[%s]" % t in self.doc]

    def render(self) -> str:
        return self.sig.ret.render(self.name + "(" + self.sig.render_params()
                                   + ")")


@dataclass
class Struct:
    name: str                 # the struct tag, also its typedef name
    members: List[Param]
    header: str
    section: str = ""


@dataclass
class Typedef:
    name: str
    type: CType
    header: str
    section: str = ""


@dataclass
class Api:
    """Everything the public headers declare, in declaration order."""
    functions: List[Function] = field(default_factory=list)
    structs: Dict[str, Struct] = field(default_factory=dict)
    typedefs: Dict[str, Typedef] = field(default_factory=dict)
    constants: Dict[str, int] = field(default_factory=dict)
    constant_headers: Dict[str, str] = field(default_factory=dict)
    statuses: Dict[str, int] = field(default_factory=dict)
    status_messages: Dict[str, str] = field(default_factory=dict)
    order: List[object] = field(default_factory=list)

    def exports(self) -> List[Function]:
        """The functions libtether itself exports (marked TETHER_API)."""
        return [f for f in self.functions if f.marker == "TETHER_API"]


# ---------------------------------------------------------------------------
# Lexing: comments, preprocessor lines and code
# ---------------------------------------------------------------------------

_LEX = re.compile(r"""
    (?P<comment>/\*.*?\*/|//[^\n]*)
  | (?P<pp>^[ \t]*\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<code>[^/#"\n]+\n?|\n|/|\#)
""", re.S | re.M | re.X)

_TOKEN = re.compile(r"\s*(?:(\.\.\.)|([A-Za-z_]\w*)|(\d\w*)|(\S))")


def _pieces(text):
    """Yields (kind, text) for the comments, directives and code of `text`."""
    text = text.replace("\\\n", " ")
    for m in _LEX.finditer(text):
        yield m.lastgroup, m.group()


def _tokens(code: str) -> List[str]:
    out = []
    for m in _TOKEN.finditer(code):
        tok = next(g for g in m.groups() if g is not None)
        out.append(tok)
    return out


def _section_title(comment: str) -> Optional[str]:
    """The title of a banner comment (/* ---- ... ---- */), else None."""
    if "-----" not in comment:
        return None
    for line in comment.splitlines()[1:]:
        line = line.strip(" */").strip()
        if line and not line.startswith("---"):
            return line
    return None


# ---------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------

class _Cursor:
    def __init__(self, tokens: List[str], what: str):
        self.toks = tokens
        self.i = 0
        self.what = what

    def peek(self, k: int = 0) -> Optional[str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, expect: Optional[str] = None) -> str:
        tok = self.peek()
        if tok is None or (expect is not None and tok != expect):
            raise HeaderError("%s: expected %r, found %r" %
                              (self.what, expect or "a token", tok))
        self.i += 1
        return tok

    def done(self) -> bool:
        return self.i >= len(self.toks)


def _is_ident(tok: Optional[str]) -> bool:
    return tok is not None and re.match(r"[A-Za-z_]\w*$", tok) is not None


def _parse_specifiers(cur: _Cursor):
    """Reads `const struct x` / `unsigned long` / `tether_thread`."""
    const = False
    words: List[str] = []
    while _is_ident(cur.peek()):
        tok = cur.peek()
        if tok in ("const", "volatile"):
            const = const or tok == "const"
            cur.take()
            continue
        if tok in ("struct", "union", "enum"):
            words += [cur.take(), cur.take()]
            continue
        # A second non-keyword word is the declarator's name.
        if words and (tok not in C_TYPE_KEYWORDS or
                      words[-1] not in C_TYPE_KEYWORDS):
            break
        words.append(cur.take())
    if not words:
        raise HeaderError("%s: missing type at %r" % (cur.what, cur.peek()))
    return words, const


def _split_top(tokens: List[str], sep: str) -> List[List[str]]:
    """Splits `tokens` at `sep` outside any parentheses or braces."""
    parts, cur, depth = [], [], 0
    for tok in tokens:
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth -= 1
        if tok == sep and depth == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(tok)
    parts.append(cur)
    return parts


def _parse_params(tokens: List[str], what: str) -> FuncSig:
    """Parses the tokens between a function's parentheses."""
    params: List[Param] = []
    varargs = False
    if tokens == ["void"] or not tokens:
        return FuncSig(CType(["void"]), [], False)
    for part in _split_top(tokens, ","):
        if part == ["..."]:
            varargs = True
            continue
        name, ctype = _parse_decl(_Cursor(part, what), abstract_ok=True)
        params.append(Param(name, ctype))
    return FuncSig(CType(["void"]), params, varargs)


def _take_group(cur: _Cursor, open_: str, close: str) -> List[str]:
    """Takes a balanced (...) group and returns the tokens inside it."""
    cur.take(open_)
    depth, inner = 1, []
    while True:
        tok = cur.take()
        if tok == open_:
            depth += 1
        elif tok == close:
            depth -= 1
            if depth == 0:
                return inner
        inner.append(tok)


def _parse_decl(cur: _Cursor, abstract_ok: bool = False):
    """Parses `specifiers declarator` and returns (name, CType).

    For a function declaration the CType has `fn` set and `ptr` 0.
    """
    words, const = _parse_specifiers(cur)
    ctype = CType(words, const)
    while cur.peek() == "*":
        cur.take()
        ctype.ptr += 1
        while cur.peek() in ("const", "volatile"):
            cur.take()   # a const pointer is the same ABI as a pointer
    if cur.peek() == "(" and cur.peek(1) == "*":
        return _fn_pointer(cur, ctype)
    name = ""
    if _is_ident(cur.peek()):
        name = cur.take()
    elif not abstract_ok:
        raise HeaderError("%s: missing name at %r" % (cur.what, cur.peek()))
    if cur.peek() == "(":
        sig = _parse_params(_take_group(cur, "(", ")"), cur.what)
        sig.ret = ctype
        return name, CType(["<fn>"], False, 0, sig)
    if cur.peek() == "[":
        size = _take_group(cur, "[", "]")
        if len(size) != 1 or not size[0].isdigit():
            raise HeaderError("%s: array size must be a literal" % cur.what)
        ctype.array = int(size[0])
    if cur.peek() == ":":
        cur.take()
        ctype.bits = int(re.sub(r"[uUlL]+$", "", cur.take()), 0)
    return name, ctype


def _fn_pointer(cur: _Cursor, ret: CType):
    """Parses `(*name)(params)` after the return type `ret`."""
    inner = _take_group(cur, "(", ")")
    stars = 0
    while inner and inner[0] == "*":
        inner.pop(0)
        stars += 1
    if len(inner) > 1 or (inner and not _is_ident(inner[0])):
        raise HeaderError("%s: unsupported declarator %r" % (cur.what, inner))
    sig = _parse_params(_take_group(cur, "(", ")"), cur.what)
    sig.ret = ret
    return (inner[0] if inner else ""), CType(["<fn>"], False, stars, sig)


class _Parser:
    """Turns the statements of one header into entries of an Api."""

    def __init__(self, api: Api, header: str):
        self.api = api
        self.header = header
        self.section = ""
        self.function_macros = set()

    def statement(self, code: str, doc: str):
        toks = _tokens(code)
        if not toks:
            return
        what = "%s: %s" % (self.header, " ".join(toks)[:70])
        if toks[0] in EXPORT_MARKERS:
            self._function(toks, doc, what)
        elif toks[0] == "typedef":
            self._typedef(toks[1:], what)
        elif toks[0] == "enum" and toks[1] == "{":
            self._constant_enum(toks, what)
        else:
            raise HeaderError("%s: not a declaration this parser knows" %
                              what)

    def _function(self, toks, doc, what):
        cur = _Cursor(toks[1:], what)
        name, ctype = _parse_decl(cur)
        if ctype.fn is None or ctype.ptr or not cur.done():
            raise HeaderError("%s: %s marks something that is not a "
                              "function declaration" % (what, toks[0]))
        fn = Function(name, ctype.fn, toks[0], doc, self.header,
                      self.section)
        self.api.functions.append(fn)
        self.api.order.append(fn)

    def _typedef(self, toks, what):
        if toks[0] == "enum":
            raise HeaderError("%s: an enum type in the ABI (its size is the "
                              "compiler's choice; use int32_t)" % what)
        if toks[0] == "struct" and "{" in toks[:3]:
            self._struct(toks, what)
            return
        cur = _Cursor(toks, what)
        name, ctype = _parse_decl(cur)
        if not cur.done():
            raise HeaderError("%s: trailing tokens" % what)
        td = Typedef(name, ctype, self.header, self.section)
        self.api.typedefs[name] = td
        self.api.order.append(td)

    def _struct(self, toks, what):
        cur = _Cursor(toks, what)
        cur.take("struct")
        tag = cur.take() if cur.peek() != "{" else ""
        body = _take_group(cur, "{", "}")
        name = cur.take()
        if not cur.done() or (tag and tag != name):
            raise HeaderError("%s: write typedef struct X {...} X;" % what)
        members = []
        for part in _split_top(body, ";")[:-1]:
            mname, mtype = _parse_decl(_Cursor(part, what + " member"))
            members.append(Param(mname, mtype))
        st = Struct(name, members, self.header, self.section)
        self.api.structs[name] = st
        self.api.order.append(st)

    def _constant_enum(self, toks, what):
        cur = _Cursor(toks[1:], what)
        for part in _split_top(_take_group(cur, "{", "}"), ","):
            if not part:
                continue
            if part[0] in self.function_macros and part[1:2] == ["("]:
                # An X-macro expansion (see _status_map); go past it.
                rest = _Cursor(part[1:], what)
                _take_group(rest, "(", ")")
                part = part[1 + rest.i:]
                if not part:
                    continue
            if len(part) < 3 or part[1] != "=":
                raise HeaderError("%s: enum constants need values" % what)
            expr = " ".join(part[2:])
            self.api.constants[part[0]] = _int_value(expr, self.api, what)
            self.api.constant_headers[part[0]] = self.header

    def directive(self, line: str):
        line = re.sub(r"/\*.*?\*/|//.*", " ", line)
        m = re.match(r"\s*#\s*define\s+(\w+)(\(?)(.*)$", line, re.S)
        if not m:
            return
        name, is_fn, body = m.group(1), m.group(2), m.group(3).strip()
        if is_fn:
            self.function_macros.add(name)
            if name == "TETHER_STATUS_MAP":
                self._status_map(body)
            return
        try:
            self.api.constants[name] = _int_value(body, self.api, name)
            self.api.constant_headers[name] = self.header
        except HeaderError:
            pass     # not an integer constant (TETHER_API, a macro body)

    def _status_map(self, body):
        for m in re.finditer(r'XX\(\s*(\w+)\s*,\s*(-?\d+)\s*,\s*"([^"]*)"',
                             body):
            self.api.statuses["TETHER_" + m.group(1)] = int(m.group(2))
            self.api.status_messages["TETHER_" + m.group(1)] = m.group(3)


def _int_value(expr: str, api: Api, what: str) -> int:
    """Evaluates an integer constant expression of literals and constants."""
    expr = expr.strip()
    if not expr or not re.fullmatch(r"[\w\s()+\-*<>|&~]+", expr):
        raise HeaderError("%s: %r is not an integer constant" % (what, expr))
    py = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\b", r"\1", expr)

    def lookup(m):
        word = m.group()
        if word.isdigit() or word.lower().startswith("0x"):
            return word
        if word in api.constants:
            return str(api.constants[word])
        raise HeaderError("%s: unknown name %s" % (what, word))
    py = re.sub(r"\b\w+\b", lookup, py)
    return int(eval(py, {"__builtins__": {}}))   # only digits and operators


def public_headers(include_dir: str) -> List[str]:
    """The public headers under `include_dir`/tether, sorted."""
    return sorted(os.path.join(include_dir, "tether", f)
                  for f in os.listdir(os.path.join(include_dir, "tether"))
                  if f.endswith(".h"))


def parse(paths: List[str]) -> Api:
    """Parses the headers at `paths`, in order, into one Api.

    A header's #include "x.h" of a sibling header is parsed first, once.
    """
    api, seen = Api(), set()

    def visit(path):
        path = os.path.normpath(path)
        if path in seen:
            return
        seen.add(path)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        for inc in re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, re.M):
            visit(os.path.join(os.path.dirname(path), inc))
        _parse_text(text, os.path.basename(path), api)

    for path in paths:
        visit(path)
    return api


def _parse_text(text: str, header: str, api: Api):
    parser = _Parser(api, header)
    code, doc, cplusplus_depth, depth = "", "", 0, 0
    for kind, piece in _pieces(text):
        if kind == "pp":
            depth, cplusplus_depth = _track_conditionals(piece, depth,
                                                         cplusplus_depth)
            parser.directive(piece)
            if re.match(r"\s*#\s*define", piece):
                doc = ""
        elif cplusplus_depth:
            continue
        elif kind == "comment":
            title = _section_title(piece)
            if title:
                parser.section = title
            if not code.strip():
                doc = piece
        else:
            code += piece
            while ";" in code:
                stmt, code = _next_statement(code)
                if stmt is None:
                    break
                parser.statement(stmt, doc)
                doc = ""
    if code.strip():
        raise HeaderError("%s: unterminated declaration %r" %
                          (header, code.strip()[:60]))


def _next_statement(code: str):
    """Splits off the first ';'-terminated statement outside braces."""
    depth = 0
    for i, ch in enumerate(code):
        if ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        elif ch == ";" and depth == 0:
            return code[:i], code[i + 1:]
    return None, code


def _track_conditionals(line: str, depth: int, cpp_depth: int):
    """Tracks #if nesting so that `#ifdef __cplusplus` blocks are skipped."""
    m = re.match(r"\s*#\s*(\w+)(.*)", line)
    word, rest = (m.group(1), m.group(2)) if m else ("", "")
    if word in ("if", "ifdef", "ifndef"):
        depth += 1
        if not cpp_depth and word == "ifdef" and "__cplusplus" in rest:
            cpp_depth = depth
    elif word == "endif":
        if cpp_depth == depth:
            cpp_depth = 0
        depth -= 1
    return depth, cpp_depth


# ---------------------------------------------------------------------------
# The version script
# ---------------------------------------------------------------------------

def parse_version_script(path: str) -> List[tuple]:
    """Returns [(node, [symbols...]), ...] of a GNU version script."""
    with open(path, encoding="utf-8") as fh:
        text = re.sub(r"#[^\n]*|/\*.*?\*/", " ", fh.read(), flags=re.S)
    nodes = []
    for m in re.finditer(r"(\w[\w.]*)\s*\{(.*?)\}\s*[\w.]*\s*;", text, re.S):
        body = m.group(2)
        glob = re.search(r"global\s*:(.*?)(?:local\s*:|$)", body, re.S)
        names = re.findall(r"[\w*]+", glob.group(1)) if glob else []
        nodes.append((m.group(1), names))
    return nodes


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------

def render_cdef(api: Api) -> str:
    """C declarations that LuaJIT's ffi.cdef accepts, in header order."""
    lines = ["/* Generated from the public headers by tether_header.py. */"]
    consts = dict(api.statuses)
    consts.update({k: v for k, v in api.constants.items()
                   if re.match(r"TETHER_[A-Z0-9]", k)})
    lines.append("enum {")
    lines += ["  %s = %d," % (k, v) for k, v in consts.items()]
    lines.append("};")
    for item in api.order:
        if isinstance(item, Typedef):
            lines.append("typedef %s;" % item.type.render(item.name))
        elif isinstance(item, Struct):
            lines.append("typedef struct %s {" % item.name)
            lines += ["  %s;" % m.type.render(m.name) for m in item.members]
            lines.append("} %s;" % item.name)
        elif item.marker == "TETHER_API":
            lines.append(item.render() + ";")
    return "\n".join(lines) + "\n"


def render_doc_table(api: Api, nodes: List[tuple]) -> str:
    """The markdown table of exported functions, grouped by section."""
    since = {}
    for node, names in nodes:
        for name in names:
            since[name] = node.replace("TETHER_", "")
    out, section = [], None
    for fn in api.exports():
        if fn.section != section:
            section = fn.section
            out += ["", "### %s" % section, "",
                    "| function | thread | since |", "|---|---|---|"]
        tags = " ".join("`[%s]`" % t for t in fn.tags) or "**untagged**"
        out.append("| `%s` | %s | %s |" % (fn.name, tags,
                                            since.get(fn.name, "?")))
    return "\n".join(out).lstrip("\n") + "\n"


# ---------------------------------------------------------------------------
# The ABI as data (abi/tether-abi.json; docs/abi.md describes the schema)
# ---------------------------------------------------------------------------

JSON_SCHEMA = "tether-abi/1"

# Sizes of the built-in types in the LP64 data model (Linux and the BSDs on
# 64-bit machines), the one the checked-in JSON describes.  The abi.json
# test asserts every size and offset against the C compiler.
LP64 = {"char": 1, "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2,
        "int": 4, "int32_t": 4, "uint32_t": 4, "int64_t": 8, "uint64_t": 8,
        "size_t": 8}
POINTER_SIZE = 8

# The integer built-ins: (bits, signed).
INTEGERS = {"char": (8, True), "int8_t": (8, True), "uint8_t": (8, False),
            "int16_t": (16, True), "uint16_t": (16, False),
            "int": (32, True), "int32_t": (32, True),
            "uint32_t": (32, False), "int64_t": (64, True),
            "uint64_t": (64, False), "size_t": (64, False)}


def _since_of_section(section: str) -> str:
    m = re.search(r"\(ABI (\d+\.\d+)\)", section)
    return m.group(1) if m else "1.0"


def _resolve(api: Api, base: str) -> str:
    """Follows typedefs of `base` to a built-in or struct name."""
    seen = set()
    while base in api.typedefs and base not in seen:
        seen.add(base)
        t = api.typedefs[base].type
        if t.ptr or t.fn is not None or t.array is not None:
            return base
        base = t.base
    return base


def _layout(api: Api, t: CType):
    """(size, alignment) of a value of type `t` in the LP64 model."""
    if t.fn is not None or t.ptr:
        size = align = POINTER_SIZE
    else:
        base = t.base.replace("struct ", "")
        if base in api.typedefs:
            size, align = _layout(api, api.typedefs[base].type)
        elif base in api.structs:
            size, align = _struct_layout(api, api.structs[base])[:2]
        elif base in LP64:
            size = align = LP64[base]
        else:
            raise HeaderError("no size known for %s" % t.base)
    if t.array is not None:
        size *= t.array
    return size, align


def _struct_layout(api: Api, st: Struct):
    """(size, alignment, [offset of each member]) in the LP64 model."""
    offset, align, offsets = 0, 1, []
    for m in st.members:
        msize, malign = _layout(api, m.type)
        offset = (offset + malign - 1) // malign * malign
        offsets.append(offset)
        offset += msize
        align = max(align, malign)
    return (offset + align - 1) // align * align, align, offsets


def _type_json(api: Api, t: CType) -> dict:
    """The JSON description of a type (see docs/abi.md, "The ABI as data")."""
    out = {"c": t.render()}
    if t.fn is not None:
        out["kind"] = "function_pointer"
        out["function"] = {
            "returns": _type_json(api, t.fn.ret),
            "params": _params_json(api, t.fn.params, True)}
        return out
    base = t.base.replace("struct ", "")
    resolved = _resolve(api, base)
    if t.ptr:
        out["kind"] = "pointer"
        out["pointer"] = t.ptr
        out["pointee"] = base
        out["const"] = t.const
    elif base == "void":
        out["kind"] = "void"
    elif resolved in INTEGERS:
        bits, signed = INTEGERS[resolved]
        out["kind"] = "integer"
        out["name"] = base
        out["bits"], out["signed"] = bits, signed
    elif resolved in api.structs:
        out["kind"] = "struct"
        out["name"] = base
    elif resolved in api.typedefs:
        out["kind"] = "callback"
        out["name"] = base
    else:
        raise HeaderError("cannot describe type %s" % t.render())
    if t.array is not None:
        out["array"] = t.array
    return out


def param_direction(api: Api, p: Param) -> str:
    """"in", "out" or "inout", from the header's conventions.

    A value, a const pointer, a function pointer or a plain `void *` (a
    user pointer the library only hands back) is read: "in".  A non-const
    pointer to anything else (`tether_runtime *out`, `size_t *count`,
    `const char **name`, `void **out`) is written: "out", except that a
    pointer to a size-prefixed struct is "inout" (its `size` is read
    first).  The FFI's `args` (void **, an array of argument addresses) is
    read and its `ret` (void *, storage for the result) written.
    """
    t = p.type
    if p.name == "args":
        return "in"
    if p.name == "ret":
        return "out"
    if t.fn is not None or t.ptr == 0:
        return "in"
    if t.ptr == 1 and (t.const or t.base == "void"):
        return "in"
    base = _resolve(api, t.base.replace("struct ", ""))
    if t.ptr == 1 and base in api.structs:
        st = api.structs[base]
        if st.members and st.members[0].name == "size":
            return "inout"
    if t.ptr == 1 and base in api.typedefs and \
            api.typedefs[base].type.fn is not None:
        return "out"          # tether_dtor *dtor_out
    return "out"


def _errors_of(doc: str) -> List[str]:
    found = []
    for name in re.findall(r"\bTETHER_E[A-Z]+\b", doc):
        if name not in found:
            found.append(name)
    return found


def _params_json(api: Api, params: List[Param], directions: bool) -> list:
    out = []
    for p in params:
        item = {"name": p.name, "type": _type_json(api, p.type)}
        if directions:
            item["direction"] = param_direction(api, p)
        out.append(item)
    return out


def render_json(api: Api, nodes: List[tuple], headers: List[str]) -> str:
    """abi/tether-abi.json: the ABI of the headers as data."""
    import json
    since = {}
    for node, names in nodes:
        for name in names:
            since.setdefault(name, node.replace("TETHER_", ""))
    c = api.constants
    doc = {
        "schema": JSON_SCHEMA,
        "generator": "abi/tether_header.py json",
        "library": {
            "soname": "libtether.so.%d" % c["TETHER_ABI_MAJOR"],
            "version": "%d.%d.%d" % (c["TETHER_VERSION_MAJOR"],
                                     c["TETHER_VERSION_MINOR"],
                                     c["TETHER_VERSION_PATCH"]),
            "abi_major": c["TETHER_ABI_MAJOR"],
            "abi_minor": c["TETHER_ABI_MINOR"],
            "abi_version": c["TETHER_ABI_VERSION"],
        },
        "data_model": "LP64",
        "headers": ["tether/" + os.path.basename(h) for h in headers],
        "version_nodes": [{"node": node,
                           "abi": node.replace("TETHER_", ""),
                           "functions": list(names)}
                          for node, names in nodes],
        "statuses": [{"name": n, "value": v,
                      "message": api.status_messages.get(n, "")}
                     for n, v in api.statuses.items()],
        "constants": [{"name": n, "value": v,
                       "header": api.constant_headers.get(n, "")}
                      for n, v in api.constants.items()
                      if re.match(r"TETHER_[A-Z0-9]", n)
                      and n not in api.statuses],
        "typedefs": [],
        "callbacks": [],
        "structs": [],
        "functions": [],
    }
    for td in api.typedefs.values():
        entry = {"name": td.name, "header": td.header,
                 "section": td.section,
                 "since": _since_of_section(td.section)}
        if td.type.fn is not None and td.type.ptr == 1:
            entry["returns"] = _type_json(api, td.type.fn.ret)
            entry["params"] = _params_json(api, td.type.fn.params, True)
            doc["callbacks"].append(entry)
        else:
            t = _type_json(api, td.type)
            entry["kind"] = ("handle" if t.get("name") == "uint64_t"
                             else t["kind"])
            entry["type"] = t
            doc["typedefs"].append(entry)
    for st in api.structs.values():
        size, align, offsets = _struct_layout(api, st)
        fields = []
        for m, off in zip(st.members, offsets):
            f = {"name": m.name, "type": _type_json(api, m.type),
                 "offset": off, "size": _layout(api, m.type)[0]}
            if st.name == "tether_host_api":
                f["since"] = since.get("tether_" + m.name,
                                       _since_of_section(st.section))
            fields.append(f)
        prefixed = bool(st.members) and st.members[0].name == "size" \
            and st.members[0].type.base == "size_t"
        doc["structs"].append({
            "name": st.name, "header": st.header, "section": st.section,
            "since": _since_of_section(st.section),
            "size": size, "align": align, "size_prefixed": prefixed,
            "fields": fields})
    for fn in api.functions:
        doc["functions"].append({
            "name": fn.name, "header": fn.header, "section": fn.section,
            "exported_by": ("library" if fn.marker == "TETHER_API"
                            else "plugin"),
            "since": since.get(fn.name, _since_of_section(fn.section)),
            "thread": fn.tags,
            "returns": _type_json(api, fn.sig.ret),
            "params": _params_json(api, fn.sig.params, True),
            "errors": _errors_of(fn.doc)})
    return json.dumps(doc, indent=2) + "\n"


def main(argv: List[str]) -> int:
    args = argv[1:]
    out_path = None
    if args[:1] == ["-o"] and len(args) > 1:
        out_path, args = args[1], args[2:]
    if len(args) < 2 or args[0] not in ("exports", "cdef", "json") or \
            (args[0] == "json" and len(args) < 3):
        sys.stderr.write(__doc__)
        return 2
    if args[0] == "json":
        api = parse(args[2:])
        text = render_json(api, parse_version_script(args[1]), args[2:])
    elif args[0] == "exports":
        text = "".join(f.name + "\n" for f in parse(args[1:]).exports())
    else:
        text = render_cdef(parse(args[1:]))
    if out_path is None:
        sys.stdout.write(text)
    else:
        with open(out_path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
