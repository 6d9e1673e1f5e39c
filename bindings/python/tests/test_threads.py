"""Threads whose targets are Python callables, joins, asynchronous
exceptions, ensure from Python threads, misuse, finalize (the scenarios of
the former tests/ffi/test_ctypes.py, on the package)."""

import threading
import time

import pytest

import tether
from conftest import DEADLINE


def test_threads_run_python_callables(rt):
    seen = []

    def body(i):
        assert tether.gil_held()
        seen.append(i)

    threads = [rt.main.thread(body, i, name="worker-%d" % i)
               for i in range(4)]
    for i, t in enumerate(threads):
        assert t.join(DEADLINE)
        assert not t.is_alive()
        assert (t.result, t.name) == (tether.TETHER_OK, "worker-%d" % i)
    assert sorted(seen) == [0, 1, 2, 3]


def test_return_value_exit_and_exceptions(rt):
    caught = []
    old, tether.excepthook = tether.excepthook, \
        lambda exc, thread: caught.append((type(exc), thread.name))
    try:
        def boom():
            raise ValueError("boom")

        def leave():
            raise SystemExit

        results = {}
        for name, target in (("ok", lambda: None), ("status", lambda: 7),
                             ("boom", boom), ("exit", leave)):
            t = rt.main.thread(target, name=name)
            assert t.join(DEADLINE)
            results[name] = t.result
            if name == "boom":
                assert isinstance(t.exception, ValueError)
    finally:
        tether.excepthook = old
    assert results == {"ok": tether.TETHER_OK, "status": 7,
                       "boom": tether.TETHER_EXIT, "exit": tether.TETHER_EXIT}
    assert caught == [(ValueError, "boom")]


def test_join_with_timeout(rt):
    go = tether.Event()
    t = rt.main.thread(go.wait, DEADLINE)
    assert t.join(0) is False
    assert t.join(0.01) is False
    assert t.is_alive()
    go.set()
    assert t.join(DEADLINE)
    assert t.result == tether.TETHER_OK


def test_async_exception_reaches_a_checkpointing_thread(rt):
    running = tether.Event()
    got = {}

    def body():
        running.set()
        try:
            for _ in range(10 ** 7):         # a bound, not a timing
                tether.checkpoint()
        except tether.AsyncInterrupt as exc:
            got["code"] = exc.async_code

    t = rt.main.thread(body)
    assert running.wait(DEADLINE)
    t.raise_async(1234)
    assert t.join(DEADLINE)
    assert got == {"code": 1234}


def test_async_exception_wakes_a_blocked_wait(rt):
    running, never = tether.Event(), tether.Event()
    got = []

    def body():
        running.set()
        try:
            never.wait()
        except tether.AsyncInterrupt as exc:
            got.append(exc.async_code)

    t = rt.main.thread(body, daemon=True)
    assert running.wait(DEADLINE)
    t.raise_async(7)
    assert t.join(DEADLINE)
    assert got == [7]


def test_ensure_from_python_threads(rt):
    # The main thread lets go of tether's GIL; Python threads, which tether
    # did not create, take it with ensure.  `inside` is guarded only by
    # tether's GIL: Python's switches between these threads freely.
    inside, overlaps, errors = [0], [0], []

    def worker():
        try:
            for _ in range(200):
                with rt.main.ensure():
                    assert tether.gil_held()
                    overlaps[0] += inside[0]
                    inside[0] = 1
                    time.sleep(0)      # let Python switch threads here
                    inside[0] = 0
                assert not tether.gil_held()
        except Exception as exc:
            errors.append(exc)

    with tether.allow_threads():
        workers = [threading.Thread(target=worker) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert errors == []
    assert overlaps[0] == 0
    assert tether.gil_held()


def test_nested_ensure_and_misuse(rt):
    lib = tether.library()
    outer = rt.main.ensure().__enter__()
    inner = rt.main.ensure().__enter__()
    # Out of order, and from another thread: refused, nothing changes.
    assert lib.release(outer.token) == tether.TETHER_ESTATE
    assert "tether_release" in tether.last_error()
    got = []
    th = threading.Thread(target=lambda: got.append(
        (lib.release(inner.token), tether.last_error())))
    th.start()
    th.join()
    assert got[0][0] == tether.TETHER_ESTATE
    assert "tether_release" in got[0][1]
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert tether.gil_held()


def test_errors_name_the_call(rt):
    forged = tether.Thread(rt.main, None)
    forged.handle = 0xDEAD0000BEEF
    with pytest.raises(tether.Error) as info:
        forged.join(0)
    forged.handle = 0
    assert info.value.code == tether.TETHER_EBADHANDLE
    assert info.value.status == "EBADHANDLE"
    assert "tether_thread_join" in str(info.value)
    with pytest.raises(tether.Error) as info:
        tether._check(tether.library().sleep(-1), "tether_sleep")
    assert info.value.code == tether.TETHER_EINVAL
    assert "tether_sleep" in str(info.value)
    got = []

    def body():
        try:
            tether.current_thread().join(DEADLINE)
        except tether.Error as exc:
            got.append((exc.code, str(exc)))

    assert rt.main.thread(body).join(DEADLINE)
    assert got[0][0] == tether.TETHER_EDEADLK
    assert "tether_thread_join" in got[0][1]


def test_runtime_excepthook_gets_error_statuses():
    calls = []
    with tether.Runtime(excepthook=lambda t, code, msg:
                        calls.append(code)) as rt:
        for rc in (tether.TETHER_OK, tether.TETHER_EXIT,
                   tether.TETHER_EINVAL):
            assert rt.main.thread(lambda rc=rc: rc).join(DEADLINE)
    assert calls == [tether.TETHER_EINVAL]


def test_finalize_stops_a_daemon_thread_blocked_in_a_wait():
    rt = tether.Runtime()
    running, never = tether.Event(), tether.Event()
    finished = threading.Event()
    got = []

    def body():
        running.set()
        try:
            never.wait()
        except tether.Finalizing:
            got.append("finalizing")
        finished.set()

    rt.main.thread(body, daemon=True)
    # Finalizing escaping a target ends it silently (no excepthook).
    reported = []
    old, tether.excepthook = tether.excepthook, \
        lambda exc, thread: reported.append(exc)
    try:
        def leaves_by_finalizing():
            running2.set()
            never.wait()

        running2 = tether.Event()
        quiet = rt.main.thread(leaves_by_finalizing, daemon=True)
        assert running.wait(DEADLINE) and running2.wait(DEADLINE)
        assert rt.finalize(DEADLINE)
        assert finished.wait(DEADLINE)
        assert quiet.join(DEADLINE)
    finally:
        tether.excepthook = old
    assert got == ["finalizing"]
    assert reported == []
    with pytest.raises(tether.Error) as info:
        with rt.main.ensure():
            pass
    assert info.value.code in (tether.TETHER_EFINALIZING,
                               tether.TETHER_EBADHANDLE)


def test_locks_events_channels(rt):
    lock = tether.Lock()
    with lock:
        assert lock.acquire(timeout=0) is False
    assert lock.acquire(blocking=False)
    lock.release()
    ch = tether.Channel(capacity=1)
    assert ch.send(b"one")
    assert ch.send(b"two", timeout=0) is False     # full
    assert len(ch) == 1
    assert ch.recv() == b"one"
    assert ch.recv(timeout=0) is None
    ch.close()
    with pytest.raises(tether.Closed):
        ch.recv()
    stats = rt.main.gil_stats()
    assert stats["acquisitions"] >= 1


def test_switch_interval_and_bad_input(rt):
    rt.switch_interval_us = 2000
    assert rt.switch_interval_us == 2000
    with pytest.raises(tether.Error) as info:
        rt.switch_interval_us = 0                  # out of range
    assert info.value.code == tether.TETHER_EINVAL
    assert "tether_set_switch_interval" in str(info.value)
    assert rt.switch_interval_us == 2000           # nothing changed


def test_interpreters_with_their_own_gils():
    with tether.Runtime(per_interp_gil=True) as rt:
        other = rt.interp()
        seen = []
        t = other.thread(lambda: seen.append(tether.gil_held()))
        assert t.join(DEADLINE)
        assert seen == [True]
        assert other.destroy(DEADLINE)
        with pytest.raises(tether.Error) as info:
            rt.main.destroy()                      # the main interpreter
        assert info.value.code == tether.TETHER_EINVAL


def test_a_thread_name_must_be_text(rt):
    # name=5 reached the C struct as a char * to address 5 and crashed the
    # process in tether_thread_start (issue 22 review).  Bad input raises
    # and starts nothing.
    ran = []
    for bad in (5, 1.5, ["x"]):
        with pytest.raises(TypeError):
            rt.main.thread(ran.append, 1, name=bad)
    assert ran == []
    t = rt.main.thread(ran.append, 2, name=b"bytes-name")
    assert t.join(DEADLINE) and t.name == "bytes-name" and ran == [2]


def test_a_status_out_of_int_range_is_not_ok(rt):
    # A target returning 2**32 ended with status 0, TETHER_OK (ctypes kept
    # the low 32 bits).  It is an exception of the target instead.
    caught = []
    old, tether.excepthook = tether.excepthook, \
        lambda exc, thread: caught.append(type(exc))
    try:
        t = rt.main.thread(lambda: 2 ** 32)
        assert t.join(DEADLINE)
    finally:
        tether.excepthook = old
    assert t.result == tether.TETHER_EXIT
    assert isinstance(t.exception, OverflowError)
    assert caught == [OverflowError]


def test_integers_out_of_their_c_range_are_refused(rt):
    # ctypes keeps the low bits: switch_interval_us = 2**32 + 2000 set
    # 2000, Channel(-1) made an unbounded channel, raise_async(2**64 + 5)
    # raised code 5 (issue 22 review).  Each is an error, nothing changed.
    rt.switch_interval_us = 3000
    with pytest.raises(OverflowError):
        rt.switch_interval_us = 2 ** 32 + 2000
    with pytest.raises(OverflowError):
        rt.switch_interval_us = -1
    assert rt.switch_interval_us == 3000
    with pytest.raises(OverflowError):
        tether.Channel(-1)
    with pytest.raises(OverflowError):
        tether.Channel(2 ** 64)
    with pytest.raises(OverflowError):
        tether.current_thread().raise_async(2 ** 64 + 5)
    tether.checkpoint()                 # nothing was raised


def test_one_ensure_object_entered_twice(rt):
    # e = interp.ensure(); with e: with e: ... kept one token slot: the
    # inner exit released the inner token, the outer exit passed None
    # (EINVAL) and the outer token was never released, so the thread kept
    # the GIL for ever (issue 22 review).  Entering it again is refused
    # and changes nothing.
    with tether.allow_threads():        # the fixture's thread holds it
        assert not tether.gil_held()
        e = rt.main.ensure()
        with e:
            with pytest.raises(RuntimeError):
                with e:
                    pass
            assert tether.gil_held()
        assert not tether.gil_held()
        with e:                         # usable again once left
            assert tether.gil_held()
        assert not tether.gil_held()


def test_ensures_left_out_of_order(rt):
    # Generators (or an ExitStack) can leave two ensure blocks outer
    # first.  The outer release was refused (ESTATE, out of order), its
    # token dropped all the same, and after both exits the thread held
    # the GIL for ever (issue 22 review).  The outer one is now released
    # with the inner one.
    def hold():
        with rt.main.ensure():
            yield

    with tether.allow_threads():        # the fixture's thread holds it
        g1, g2 = hold(), hold()
        next(g1)
        next(g2)
        g1.close()                       # the outer block ends first
        assert tether.gil_held()         # the inner one still holds it
        g2.close()
        assert not tether.gil_held()


def test_one_allow_threads_object_entered_twice(rt):
    # The inner enter (detached already: nothing saved) overwrote the
    # outer's saved state with None, so the outer exit did not re-attach:
    # the thread went on without the GIL it had on entry (issue 22
    # review).  Entering it again is refused.
    assert tether.gil_held()            # the fixture's thread holds it
    a = tether.allow_threads()
    with a:
        with pytest.raises(RuntimeError):
            with a:
                pass
        assert not tether.gil_held()
    assert tether.gil_held()
