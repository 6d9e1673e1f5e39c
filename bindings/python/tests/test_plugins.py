"""Plugins and callbacks: loading, calling with signatures, values in
both directions, unloading."""

import pytest

import tether
from conftest import DEADLINE, plugin_path


def test_load_info_and_unload(rt):
    p = rt.load(plugin_path("ticker"))
    assert (p.name, p.version) == ("ticker", "1.0.0")
    assert isinstance(p.symbol("ticker_start"), int)
    with pytest.raises(tether.Error) as info:
        p.symbol("no_such_symbol")
    assert info.value.code == tether.TETHER_EPLUGIN
    assert p.unload(DEADLINE)
    with pytest.raises(tether.Error) as info:
        p.unload()
    assert info.value.code == tether.TETHER_EBADHANDLE


def test_load_failure_names_the_reason(rt):
    with pytest.raises(tether.Error) as info:
        rt.load("/nonexistent/plugin.so")
    assert info.value.code == tether.TETHER_EPLUGIN
    assert "tether_plugin_load" in str(info.value)


def test_plugin_call_checks_arguments(rt):
    p = rt.load(plugin_path("ticker"))
    with pytest.raises(TypeError):
        p.call("ticker_wait", "i32(i64)")
    with pytest.raises(ValueError):
        p.call("ticker_wait", "int(i64)", 0)
    assert p.call("ticker_start", "i32(ptr,ptr,i32,i32,i32)",
                  None, None, 1, 1, 0) == tether.TETHER_EINVAL
    assert p.unload(DEADLINE)


@pytest.mark.parametrize("sig,args,want", [
    ("i32(i32,i32)", (6, -7), -1),
    ("i64(i64,u8)", (-(2 ** 40), 255), -(2 ** 40) + 255),
    ("f64(f64,f32)", (1.5, 0.25), 1.75),
    ("u32(str)", ("héllo",), len("héllo".encode())),
    ("ptr(ptr)", (0x1234,), 0x1235),
    ("void(i16)", (-3,), None),
])
def test_callback_values_both_ways(rt, sig, args, want):
    def fn(*values):
        if sig.startswith("u32(str)"):
            return len(values[0].encode())
        if sig.startswith("ptr"):
            return values[0] + 1
        if sig.startswith("void"):
            seen.append(values)
            return None
        return sum(values)

    seen = []
    with rt.main.callback(sig, fn) as cb:
        assert tether.ffi_call(cb, sig, *args) == want
    if sig.startswith("void"):
        assert seen == [(-3,)]


def test_callback_exception_goes_to_excepthook(rt):
    caught = []
    old, tether.excepthook = tether.excepthook, \
        lambda exc, thread: caught.append((type(exc), thread))
    try:
        with rt.main.callback("i32(i32)", lambda x: 1 // x) as cb:
            assert tether.ffi_call(cb, "i32(i32)", 0) == 0
            assert tether.ffi_call(cb, "i32(i32)", 1) == 1
    finally:
        tether.excepthook = old
    assert caught == [(ZeroDivisionError, None)]


def test_callback_from_another_interpreter_thread(rt):
    # A callback of interp B called from a thread of the main interpreter:
    # the call ensures B around the Python function, then returns to A.
    other = rt.interp()
    seen = []

    def fn(x):
        seen.append(tether.gil_held())
        return x * 2

    with other.callback("i32(i32)", fn) as cb:
        assert tether.ffi_call(cb, "i32(i32)", 21) == 42
    assert seen == [True]
    assert tether.gil_held()
    assert other.destroy(DEADLINE)


def test_a_freed_callback_drops_its_python_function(rt):
    import gc
    import weakref

    class Fn:
        def __call__(self, x):
            return x

    fn = Fn()
    ref = weakref.ref(fn)
    cb = rt.main.callback("i32(i32)", fn)
    del fn
    assert tether.ffi_call(cb, "i32(i32)", 5) == 5
    cb.free()
    del cb
    gc.collect()
    assert ref() is None


def _strlen_address():
    import ctypes
    return ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value


def test_a_str_argument_refuses_an_int():
    # An int for a "str" argument was taken by ctypes as an address:
    # ffi_call(strlen, "u64(str)", 123) read address 123 and crashed the
    # process (issue 22 review).  It must be a TypeError, nothing called.
    with pytest.raises(TypeError):
        tether.ffi_call(_strlen_address(), "u64(str)", 123)
    with pytest.raises(TypeError):
        tether.ffi_call(_strlen_address(), "u64(str)", 1.5)
    assert tether.ffi_call(_strlen_address(), "u64(str)", b"abc") == 3
    assert tether.ffi_call(_strlen_address(), "u64(str)", "ab") == 2


@pytest.mark.parametrize("sig,bad", [
    ("i32(i32)", 2 ** 31), ("i32(i32)", -(2 ** 31) - 1),
    ("i32(u8)", 256), ("i32(u8)", -1), ("i32(u64)", 2 ** 64),
    ("i32(i64)", 2 ** 63), ("i32(i8)", 128), ("i32(u16)", 1 << 16),
])
def test_an_integer_out_of_range_is_refused(rt, sig, bad):
    # ctypes truncates silently: i32 2**40 + 7 reached C as 7.  Bad input
    # must raise and call nothing.
    calls = []
    with rt.main.callback(sig, lambda x: calls.append(x) or 0) as cb:
        with pytest.raises(OverflowError):
            tether.ffi_call(cb, sig, bad)
    assert calls == []


def test_a_callback_returning_out_of_range_gives_zero(rt):
    seen = []
    old = tether.excepthook
    tether.excepthook = lambda exc, t: seen.append(exc)
    try:
        with rt.main.callback("i32(i32)", lambda x: 2 ** 40 + 7) as cb:
            assert tether.ffi_call(cb, "i32(i32)", 0) == 0
    finally:
        tether.excepthook = old
    assert len(seen) == 1 and isinstance(seen[0], OverflowError)


def test_a_ptr_argument_refuses_str():
    # ctypes.cast("abc", c_void_p) made a temporary wide-character copy and
    # freed it at once: the C function got a dangling pointer (it read
    # freed memory).  A ptr is an int, None, a Callback, bytes or a ctypes
    # object; str is a TypeError (use a "str" argument).
    with pytest.raises(TypeError):
        tether.ffi_call(_strlen_address(), "u64(ptr)", "abc")
    assert tether.ffi_call(_strlen_address(), "u64(ptr)", b"abcd") == 4


def test_a_ptr_callback_cannot_return_bytes(rt):
    # The address of a bytes object the callback returned reached C after
    # the object was gone (nothing keeps a return value alive): a dangling
    # pointer.  It is a TypeError of the callback (excepthook; C gets 0).
    seen = []
    old = tether.excepthook
    tether.excepthook = lambda exc, t: seen.append(type(exc))
    try:
        with rt.main.callback("ptr(i32)", lambda x: b"abc" * x) as cb:
            assert tether.ffi_call(cb, "ptr(i32)", 1000) is None
    finally:
        tether.excepthook = old
    assert seen == [TypeError]
