"""The raw binding: libtether's C ABI as ctypes, made from tether-abi.json.

Nothing here is written per function.  tether-abi.json (a copy of
abi/tether-abi.json, which the build's `abi.json` test keeps equal to the
headers and checks against the C compiler) lists every function with its
parameter and return types, every struct with its layout, every callback
type and constant; this module turns each into its ctypes counterpart when
the library is loaded, and checks its structs' sizes and offsets against
the JSON's.  A function newer than the loaded library (its `since` is above
the library's ABI minor) is left out: calling it raises AttributeError
instead of jumping to an address that is not there.

    lib = load()                         # TETHER_LIB, or libtether.so.1
    rt = lib.tether_runtime()
    lib.runtime_create(None, ctypes.byref(rt))     # tether_runtime_create
    lib.TETHER_ETIMEDOUT, lib.types["tether_thread_fn"], lib.new("tether_config")

The library is opened with ctypes.CDLL, which releases Python's GIL around
every foreign call; that is what makes Python's GIL and tether's nest
without deadlock (docs/languages.md, "Python").
"""

import ctypes
import ctypes.util
import json
import os
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(_HERE, "tether-abi.json"), encoding="utf-8") as _fh:
    ABI = json.load(_fh)

_INTEGERS = {
    (8, True): ctypes.c_int8, (8, False): ctypes.c_uint8,
    (16, True): ctypes.c_int16, (16, False): ctypes.c_uint16,
    (32, True): ctypes.c_int32, (32, False): ctypes.c_uint32,
    (64, True): ctypes.c_int64, (64, False): ctypes.c_uint64,
}

# Every constant and status of the headers, by name (TETHER_OK, ...).
CONSTANTS = {c["name"]: c["value"] for c in ABI["constants"]}
CONSTANTS.update({s["name"]: s["value"] for s in ABI["statuses"]})
STATUS_NAMES = {s["value"]: s["name"][len("TETHER_"):]
                for s in ABI["statuses"]}


def _minor(since):
    major, minor = since.split(".")
    return int(major), int(minor)


class Library:
    """libtether, opened, with a ctypes prototype for each function.

    `lib.<name>` is the function tether_<name> (lib.ensure is
    tether_ensure), and so is `lib.tether_<name>`; `lib.types[...]` has
    the ctypes type of each typedef, struct and callback type of the
    headers; the constants are attributes (lib.TETHER_OK)."""

    def __init__(self, path):
        self.path = path
        self.dll = ctypes.CDLL(path)
        version = self.dll.tether_abi_version
        version.argtypes, version.restype = [], ctypes.c_uint32
        v = version()
        self.abi_major, self.abi_minor = v >> 16, v & 0xFFFF
        want = ABI["library"]
        if self.abi_major != want["abi_major"]:
            raise ImportError(
                "%s has ABI %d.%d; this binding is for ABI %d.x" % (
                    path, self.abi_major, self.abi_minor,
                    want["abi_major"]))
        self.types = {}
        for td in ABI["typedefs"]:
            self.types[td["name"]] = self.ctype(td["type"])
        # Callback types may name structs (as pointers) and structs may
        # hold callbacks: declare the structs first, fill them in after.
        for st in ABI["structs"]:
            self.types[st["name"]] = type(st["name"], (ctypes.Structure,), {})
        for cb in ABI["callbacks"]:
            self.types[cb["name"]] = self._function_type(cb)
        for st in ABI["structs"]:
            self._fill_struct(st)
        self.functions = {}
        self.missing = []
        for fn in ABI["functions"]:
            if fn["exported_by"] != "library":
                continue
            if _minor(fn["since"]) > (self.abi_major, self.abi_minor):
                self.missing.append(fn["name"])
                continue
            f = getattr(self.dll, fn["name"])
            f.argtypes = [self.ctype(p["type"]) for p in fn["params"]]
            f.restype = self.ctype(fn["returns"])
            self.functions[fn["name"]] = f
        for name, value in CONSTANTS.items():
            setattr(self, name, value)

    def __getattr__(self, name):
        fns = self.__dict__.get("functions", {})
        f = fns.get(name) or fns.get("tether_" + name)
        if f is None:
            if "tether_" + name in self.__dict__.get("missing", ()) or \
                    name in self.__dict__.get("missing", ()):
                raise AttributeError(
                    "%s is newer than the loaded library (ABI %d.%d)" % (
                        name, self.abi_major, self.abi_minor))
            raise AttributeError(name)
        return f

    def ctype(self, t):
        """The ctypes type of a type object of the JSON (None for void)."""
        kind = t["kind"]
        if kind == "void":
            return None
        if kind == "integer":
            base = _INTEGERS[(t["bits"], t["signed"])]
        elif kind in ("struct", "callback"):
            base = self.types[t["name"]]
        elif kind == "function_pointer":
            base = self._function_type(t["function"])
        elif kind == "pointer":
            depth, pointee = t["pointer"], t["pointee"]
            if pointee == "char":
                base, depth = ctypes.c_char_p, depth - 1
            elif pointee == "void":
                base, depth = ctypes.c_void_p, depth - 1
            elif pointee in self.types:
                base = self.types[pointee]
            else:
                base = ctypes.c_size_t if pointee == "size_t" else {
                    "int": ctypes.c_int, "int8_t": ctypes.c_int8,
                    "uint8_t": ctypes.c_uint8, "int16_t": ctypes.c_int16,
                    "uint16_t": ctypes.c_uint16, "int32_t": ctypes.c_int32,
                    "uint32_t": ctypes.c_uint32, "int64_t": ctypes.c_int64,
                    "uint64_t": ctypes.c_uint64}[pointee]
            for _ in range(depth):
                base = ctypes.POINTER(base)
        else:
            raise ValueError("unknown type kind %r" % kind)
        if t.get("array"):
            base = base * t["array"]
        return base

    def _function_type(self, sig):
        return ctypes.CFUNCTYPE(self.ctype(sig["returns"]),
                                *[self.ctype(p["type"])
                                  for p in sig["params"]])

    def _fill_struct(self, st):
        cls = self.types[st["name"]]
        cls._fields_ = [(f["name"], self.ctype(f["type"]))
                        for f in st["fields"]]
        # The JSON's layout is the C compiler's (the abi.json test);
        # ctypes must agree with it, or every call passing it is wrong.
        if ctypes.sizeof(cls) != st["size"]:
            raise ImportError("ctypes lays out %s in %d bytes, the ABI in %d"
                              % (st["name"], ctypes.sizeof(cls), st["size"]))
        for f in st["fields"]:
            if getattr(cls, f["name"]).offset != f["offset"]:
                raise ImportError("ctypes puts %s.%s at %d, the ABI at %d" % (
                    st["name"], f["name"], getattr(cls, f["name"]).offset,
                    f["offset"]))

    def new(self, struct_name, **fields):
        """A size-prefixed struct with `size` set to its full size."""
        cls = self.types[struct_name]
        return cls(size=ctypes.sizeof(cls), **fields)

    def null(self, type_name):
        """A NULL function pointer of a callback type (ctypes wants an
        instance where C takes a function pointer)."""
        return self.types[type_name]()


_lock = threading.Lock()
_library = None


def default_path():
    """Where load() looks: $TETHER_LIB, else libtether.so.1 through the
    dynamic linker's search (LD_LIBRARY_PATH, the ld.so cache)."""
    return os.environ.get("TETHER_LIB") or ctypes.util.find_library(
        "tether") or "libtether.so.%d" % ABI["library"]["abi_major"]


def load(path=None):
    """The process's Library (opened once; `path` only matters the first
    time).  Raises OSError when the library cannot be opened."""
    global _library
    with _lock:
        if _library is None:
            _library = Library(path or default_path())
        return _library
