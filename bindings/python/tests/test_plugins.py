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
