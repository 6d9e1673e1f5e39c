"""The package is the ABI of the headers (through tether-abi.json) and the
library it loads has every function the JSON promises."""

import ctypes
import json
import os
import re

import tether
from tether import _ffi


def test_version_is_the_librarys():
    lib = tether.library()
    assert lib.tether_version_string().decode() == tether.__version__
    assert lib.tether_abi_version() == _ffi.ABI["library"]["abi_version"]
    assert tether.TETHER_ABI_VERSION == (lib.abi_major << 16 | lib.abi_minor)


def test_every_version_script_symbol_resolves():
    # Like CPython's stable-ABI test: each name the library promises
    # resolves through the dynamic linker, and the JSON lists the same.
    with open(os.environ["TETHER_MAP"]) as fh:
        text = re.sub(r"/\*.*?\*/|#[^\n]*", " ", fh.read(), flags=re.S)
    names = re.findall(r"\b(tether_\w+)\s*;", text)
    json_names = [f["name"] for f in _ffi.ABI["functions"]
                  if f["exported_by"] == "library"]
    assert sorted(names) == sorted(json_names)
    lib = tether.library()
    for name in names:
        assert getattr(lib, name) is lib.functions[name]
    assert lib.missing == []
    try:
        getattr(lib.dll, "err_set")          # an internal function
    except AttributeError:
        pass
    else:
        raise AssertionError("an internal function is exported")


def test_statuses_are_the_librarys():
    lib = tether.library()
    for s in _ffi.ABI["statuses"]:
        assert lib.status_name(s["value"]).decode() == \
            s["name"][len("TETHER_"):]
        assert lib.strerror(s["value"]).decode() == s["message"]
        assert getattr(tether, s["name"]) == s["value"]
    assert tether.status_name(12345) == "UNKNOWN"


def test_structs_match_the_json_layout():
    lib = tether.library()
    for st in _ffi.ABI["structs"]:
        cls = lib.types[st["name"]]
        assert ctypes.sizeof(cls) == st["size"]
        for f in st["fields"]:
            assert getattr(cls, f["name"]).offset == f["offset"]


def _width_matches(ctype, t):
    if t["kind"] == "void":
        return ctype is None
    if t["kind"] == "integer":
        return ctypes.sizeof(ctype) * 8 == t["bits"] and \
            (ctype(-1).value < 0) == t["signed"]
    # pointers, function pointers, callbacks: one machine word
    return ctypes.sizeof(ctype) == ctypes.sizeof(ctypes.c_void_p)


def test_prototypes_follow_the_json():
    lib = tether.library()
    checked = 0
    for fn in _ffi.ABI["functions"]:
        if fn["exported_by"] != "library":
            continue
        proto = lib.functions[fn["name"]]
        assert len(proto.argtypes) == len(fn["params"]), fn["name"]
        for ctype, p in zip(proto.argtypes, fn["params"]):
            assert _width_matches(ctype, p["type"]), (fn["name"], p["name"])
        assert _width_matches(proto.restype, fn["returns"]), fn["name"]
        checked += 1
    assert checked == len(lib.functions) > 70
    start = lib.functions["tether_thread_start"]
    assert start.argtypes[1] is lib.types["tether_thread_fn"]
    assert start.restype is ctypes.c_int32


def test_newer_functions_are_left_out(monkeypatch):
    # A library older than a function's `since` does not get it bound.
    abi = json.loads(json.dumps(_ffi.ABI))
    newest = max(f["since"] for f in abi["functions"])
    major, minor = (int(x) for x in newest.split("."))
    for f in abi["functions"]:
        if f["name"] == "tether_set_error":
            f["since"] = "%d.%d" % (major, minor + 1)
    monkeypatch.setattr(_ffi, "ABI", abi)
    lib = _ffi.Library(tether.library().path)
    assert "tether_set_error" in lib.missing
    try:
        lib.set_error
    except AttributeError as exc:
        assert "newer than the loaded library" in str(exc)
    else:
        raise AssertionError("a function newer than the library was bound")


def test_the_package_under_test_is_the_expected_one():
    # ffi.python_install runs this suite against the pip-installed copy.
    want = os.environ.get("TETHER_EXPECT_PACKAGE")
    if want:
        assert os.path.dirname(os.path.abspath(tether.__file__)) == want
