"""A ctypes binding of libtether made from the public header at load time.

Nothing here is written by hand per function: the prototypes, structs,
callback types and constants come from abi/tether_header.py's parse
of tether.h (whose model the abi.types test checks against the C compiler),
so the binding cannot drift from the header.

    t = load(lib_path, header_path)
    rt = t.tether_runtime()
    t.check(t.lib.tether_runtime_create(None, ctypes.byref(rt)))
    t.TETHER_ETIMEDOUT, t.tether_thread_fn, t.tether_config, ...

The library is opened with ctypes.CDLL, which releases Python's GIL around
every foreign call, so a Python thread blocked in a tether wait lets the
others run, and ctypes callbacks called on tether's threads take Python's
GIL themselves.
"""

import ctypes
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "abi"))
import tether_header as th  # noqa: E402

SCALARS = {
    "int": ctypes.c_int, "size_t": ctypes.c_size_t, "char": ctypes.c_char,
    "int8_t": ctypes.c_int8, "uint8_t": ctypes.c_uint8,
    "int16_t": ctypes.c_int16, "uint16_t": ctypes.c_uint16,
    "int32_t": ctypes.c_int32, "uint32_t": ctypes.c_uint32,
    "int64_t": ctypes.c_int64, "uint64_t": ctypes.c_uint64,
}


class TetherError(Exception):
    def __init__(self, binding, code, call):
        self.code = code
        super().__init__("%s: %s: %s" % (
            call, binding.lib.tether_status_name(code).decode(),
            binding.lib.tether_last_error().decode()))


class Binding:
    def __init__(self, lib_path, header_path):
        self.api = th.parse([header_path])
        self.lib = ctypes.CDLL(lib_path)
        self.types = {}
        for item in self.api.order:
            if isinstance(item, th.Struct):
                self.types[item.name] = self._struct(item)
            elif isinstance(item, th.Typedef):
                self.types[item.name] = self.ctype(item.type)
            elif item.marker == "TETHER_API":
                self._prototype(item)
        for name, value in {**self.api.constants,
                            **self.api.statuses}.items():
            setattr(self, name, value)

    def __getattr__(self, name):
        try:
            return self.__dict__["types"][name]
        except KeyError:
            raise AttributeError(name) from None

    def ctype(self, t):
        """The ctypes type of a header type (None for plain void)."""
        if t.fn is not None:
            return ctypes.CFUNCTYPE(self.ctype(t.fn.ret),
                                    *[self.ctype(p.type)
                                      for p in t.fn.params])
        if t.base == "void":
            base, depth = (ctypes.c_void_p, t.ptr - 1) if t.ptr else (None, 0)
        elif t.base == "char" and t.ptr:
            base, depth = ctypes.c_char_p, t.ptr - 1
        else:
            base = SCALARS.get(t.base) or self.types[t.base.split()[-1]]
            depth = t.ptr
        for _ in range(depth):
            base = ctypes.POINTER(base)
        if t.array is not None:
            base = base * t.array
        return base

    def _struct(self, st):
        cls = type(st.name, (ctypes.Structure,), {})
        self.types[st.name] = cls      # members may point to it
        cls._fields_ = [(m.name, self.ctype(m.type)) for m in st.members]
        return cls

    def _prototype(self, fn):
        f = getattr(self.lib, fn.name)
        f.argtypes = [self.ctype(p.type) for p in fn.sig.params]
        f.restype = self.ctype(fn.sig.ret)

    def check(self, rc, call="tether call"):
        """Raises TetherError unless rc is TETHER_OK."""
        if rc != self.TETHER_OK:
            raise TetherError(self, rc, call)
        return rc

    def new(self, struct_name, **fields):
        """A size-prefixed option struct with `size` filled in."""
        cls = self.types[struct_name]
        return cls(size=ctypes.sizeof(cls), **fields)


def load(lib_path=None, header_path=None):
    """Binds the library and header named by the arguments or by the
    TETHER_LIB and TETHER_HEADER environment variables."""
    return Binding(lib_path or os.environ["TETHER_LIB"],
                   header_path or os.environ["TETHER_HEADER"])
