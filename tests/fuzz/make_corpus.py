#!/usr/bin/env python3
"""Writes the seed corpora of the plugin_desc and lua_codec fuzz targets.

    tests/fuzz/make_corpus.py [corpus-dir]     (default: tests/fuzz/corpus)

Seeds are named after what they exercise (seed-*); files that the fuzzers
found and that became regression inputs (crash-*, regress-*) are left
alone.  The layouts are those of fuzz_plugin_desc.c (a 64-bit
little-endian descriptor) and of the encoding documented at the top of
bindings/lua/lt_codec.c.
"""
import os
import struct
import sys

# --- plugin descriptors (fuzz_plugin_desc.c) ------------------------------

DESC_SIZE = 48  # size, abi_version, flags, name, version, init, fini
ABI = 1 << 16 | 1
NAME_NULL, VERSION_NULL, NO_DESC = 1, 2, 4


def desc(size=DESC_SIZE, abi=ABI, flags=0, readable=DESC_SIZE, shape=0,
         name=b"demo", version=b"1.0.0", path=b"/plugins/demo.so", cap=0,
         extra=b""):
    image = struct.pack("<QII", size, abi, flags) + bytes(32) + extra
    image = image[:readable].ljust(readable, b"\0")
    return (bytes([shape, readable, cap]) + image + name + b"\0" + version +
            b"\0" + path)


PLUGIN_DESC = {
    "valid": desc(),
    "valid-unloadable-no-version": desc(flags=1, shape=VERSION_NULL),
    "valid-abi-1.0": desc(abi=1 << 16),
    "valid-larger": desc(size=56, readable=56, extra=b"\x11" * 8),
    "valid-short-message-buffer": desc(cap=5),
    "null-desc": desc(shape=NO_DESC),
    "unreadable-size": desc(readable=4),
    "claims-more-than-readable": desc(readable=40),
    "tiny": desc(size=4),
    "just-the-version": desc(size=12, readable=12),
    "wrong-major": desc(abi=2 << 16),
    "major-zero": desc(abi=1),
    "newer-minor": desc(abi=1 << 16 | 2),
    "small": desc(size=32),
    "bad-flags": desc(flags=0x80),
    "bad-flags-with-known": desc(flags=0x81),
    "null-name": desc(shape=NAME_NULL),
    "empty-name": desc(name=b""),
    "long-path-truncated": desc(flags=0x80, path=b"/p" * 400, cap=17),
}

# --- Lua encodings (bindings/lua/lt_codec.c) -------------------------------

(NIL, FALSE, TRUE, INT, FLT, STR, CHAN, TABLE, END, REF,
 CANCELLED) = range(1, 12)


def u64(v):
    return struct.pack("<Q", v & (1 << 64) - 1)


def i(v):
    return bytes([INT]) + u64(v)


def f(v):
    return bytes([FLT]) + struct.pack("<d", v)


def s(b):
    return bytes([STR]) + u64(len(b)) + b


def chan(h):
    return bytes([CHAN]) + u64(h)


def ref(n):
    return bytes([REF]) + u64(n)


def table(*pairs):
    return bytes([TABLE]) + b"".join(k + v for k, v in pairs) + bytes([END])


def nest(n, as_key=False):
    """n tables, each the value (or key) of the next one out."""
    t = table()
    for _ in range(n - 1):
        t = table((t, bytes([TRUE])) if as_key else (s(b"v"), t))
    return t


N, F, T, C = bytes([NIL]), bytes([FALSE]), bytes([TRUE]), bytes([CANCELLED])

mixed = table((s(b"a"), table((s(b"b"), table((s(b"c"), s(b"deep")))))),
              (i(1), i(10)), (i(2), i(20)), (f(1.5), s(b"f")),
              (s(b"self"), ref(1)), (table((s(b"k"), T)), s(b"v")),
              (s(b"ch"), chan(2)), (s(b"stop"), C))

LUA_CODEC = {
    "nil": N, "false": F, "true": T, "cancelled": C,
    "int-zero": i(0), "int-min": i(-(1 << 63)), "int-max": i((1 << 63) - 1),
    "float": f(-0.25), "float-nan": f(float("nan")), "float-negzero": f(-0.0),
    "float-inf": f(float("inf")),
    "string-empty": s(b""), "string-binary": s(b"a\0b\xff"),
    "string-long": s(b"x" * 300),
    "channel": chan(1), "channels-shared": table((i(1), chan(3)),
                                                 (i(2), chan(3))),
    "several-values": N + i(7) + s(b"two") + table() + chan(2),
    # Tables are numbered from 1 again at each top-level value.
    "several-values-own-refs": (table((s(b"self"), ref(1))) +
                                table((s(b"self"), ref(1)), (i(1), table()),
                                      (i(2), ref(2)))),
    "table-empty": table(),
    "table-array": table((i(1), i(10)), (i(2), i(20)), (i(3), i(30))),
    "table-mixed": mixed,
    "table-cycle": table((s(b"self"), ref(1))),
    "table-shared": table((s(b"s1"), table((i(1), i(1)))), (s(b"s2"), ref(2))),
    "table-key-table": table((table((s(b"k"), T)), s(b"v")), (ref(2), ref(1))),
    "table-key-channel": table((chan(1), T), (C, F)),
    "table-float-key-is-int": table((f(1.0), s(b"f")), (i(1), s(b"i"))),
    "table-nil-value": table((s(b"gone"), N)),
    "nest-200": nest(200), "nest-200-keys": nest(200, True),
    # Malformed: each must be refused as corrupt.
    "bad-nest-201": nest(201), "bad-nest-201-keys": nest(201, True),
    "bad-tag-0": b"\0", "bad-tag-12": b"\x0c", "bad-tag-ff": b"\xff",
    "bad-end-at-top": bytes([END]),
    "bad-ref-0": table((s(b"r"), ref(0))),
    "bad-ref-ahead": table((s(b"r"), ref(2))),
    "bad-ref-at-top": ref(1),
    "bad-ref-to-earlier-value": table() + ref(1),
    "bad-nil-key": table((N, T)),
    "bad-nan-key": table((f(float("nan")), T)),
    "bad-unknown-channel": chan(99),
    "bad-released-channel": chan(0),
    "bad-string-too-long": bytes([STR]) + u64(1000) + b"short",
    "bad-string-huge": bytes([STR]) + u64(-1) + b"x",
    "bad-table-unterminated": bytes([TABLE]) + s(b"k") + T,
    "bad-table-key-only": bytes([TABLE]) + s(b"k") + bytes([END]),
}
# Truncations of a few encodings at every interesting length.
for name, enc in (("mixed", mixed), ("int", i(42)), ("string", s(b"hello")),
                  ("channel", chan(1))):
    for cut in sorted({1, 2, 5, 8, len(enc) // 2, len(enc) - 1}):
        if 0 < cut < len(enc):
            LUA_CODEC[f"bad-truncated-{name}-{cut}"] = enc[:cut]


def write(root, target, seeds):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        if old.startswith("seed-"):
            os.remove(os.path.join(d, old))
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as out:
            out.write(data)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus")
    write(root, "plugin_desc", PLUGIN_DESC)
    write(root, "lua_codec", LUA_CODEC)


if __name__ == "__main__":
    main()
