"""How tether's GIL and Python's nest (docs/languages.md, "Python").

The order is always tether's GIL first, then Python's: the package calls
libtether through ctypes.CDLL, which releases Python's GIL for each call,
so no thread ever waits for tether's GIL while holding Python's; a
callback C code calls takes Python's GIL while holding tether's.  Each
test below would hang (bounded by DEADLINE, then fail) or fail outright if
one of the waits kept Python's GIL."""

import sys
import threading

import tether
from conftest import DEADLINE, plugin_path


def test_python_callback_on_a_plugins_native_threads(rt):
    # ticker's workers are pthreads that neither tether nor Python made.
    ticker = rt.load(plugin_path("ticker"))
    main_ident = threading.get_ident()
    calls = []

    def on_tick(ud, worker, tick):
        me = threading.current_thread()
        # Both GILs are held here: tether's (the callback's ensure) and
        # Python's (ctypes took it for the call).  Python code may call
        # tether: current_thread() needs tether's GIL.
        calls.append((worker, tick, tether.gil_held(),
                      threading.get_ident(),
                      tether.current_thread().ident,
                      isinstance(me, threading._DummyThread)))

    with rt.main.callback("void(ptr,i32,i32)", on_tick) as cb:
        assert ticker.call("ticker_start", "i32(ptr,ptr,i32,i32,i32)",
                           cb, None, 3, 5, 0) == tether.TETHER_OK
        # This thread holds tether's GIL; ticker_wait lets it go (through
        # tether_call_blocking) while it waits, and ctypes lets Python's go.
        assert ticker.call("ticker_wait", "i32(i64)",
                           int(DEADLINE * 1000)) == tether.TETHER_OK
    assert tether.gil_held()
    assert len(calls) == 15
    assert sorted((w, k) for w, k, *_ in calls) == \
        [(w, k) for w in range(3) for k in range(5)]
    assert all(held for _, _, held, *_ in calls)
    idents = {ident for _, _, _, ident, _, _ in calls}
    assert len(idents) == 3 and main_ident not in idents
    # tether's ident of the native thread is Python's (pthread_self).
    assert all(py == tt for _, _, _, py, tt, _ in calls)
    assert all(dummy for *_, dummy in calls)
    assert ticker.call("ticker_delivered", "i64()") == 15
    assert ticker.unload(DEADLINE)


def test_a_raw_ctypes_callback_on_a_native_thread_that_ensured(rt):
    # The plugin's threads ensure tether's GIL themselves (host->ensure);
    # a plain ctypes function pointer then takes Python's.
    import ctypes
    ticker = rt.load(plugin_path("ticker"))
    held = []
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32,
                          ctypes.c_int32)(
        lambda ud, w, k: held.append(tether.gil_held()))
    assert ticker.call("ticker_start", "i32(ptr,ptr,i32,i32,i32)",
                       ctypes.cast(fn, ctypes.c_void_p).value, None, 2, 2,
                       0) == tether.TETHER_OK
    assert ticker.call("ticker_wait", "i32(i64)", -1) == tether.TETHER_OK
    assert held == [True] * 4
    assert ticker.unload(DEADLINE)


def _in_function(thread, name):
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


def test_a_python_thread_blocked_in_a_tether_wait_lets_others_run(rt):
    lock = tether.Lock()
    assert lock.acquire()            # held by this thread
    order, got = [], []

    def blocked():
        got.append(lock.acquire(timeout=DEADLINE))
        order.append("acquired")

    def other():
        # Runs Python code while `blocked` is inside the tether wait; if
        # that wait kept Python's GIL, this could not run, the release
        # below would never come, and the acquire would time out.
        for _ in range(10 ** 7):             # a bound, not a timing
            if _in_function(a, "acquire"):
                break
        total = sum(range(100000))
        order.append("other ran: %d" % total)
        lock.release()               # tether locks: any thread releases

    with tether.allow_threads():     # neither GIL held by this thread
        a = threading.Thread(target=blocked)
        a.start()
        b = threading.Thread(target=other)
        b.start()
        a.join()
        b.join()
    assert got == [True]
    assert order == ["other ran: %d" % sum(range(100000)), "acquired"]


def test_a_python_thread_in_a_tether_join_lets_python_threads_run(rt):
    # The main thread waits in tether_thread_join (neither GIL held while
    # blocked); the tether thread it joins needs a plain Python thread to
    # run Python code first.
    started, gate = threading.Event(), threading.Event()
    finished = []

    def tether_target():
        started.set()
        # Waiting for a Python primitive: without tether's GIL, or every
        # other thread of the interpreter (even thread_start's caller,
        # which re-takes the GIL to return) would wait too.
        with tether.allow_threads():
            ok = gate.wait(DEADLINE)
        finished.append(ok)

    def helper():
        assert started.wait(DEADLINE)
        sum(range(100000))          # Python code, needing Python's GIL
        gate.set()

    t = rt.main.thread(tether_target)
    py = threading.Thread(target=helper)
    py.start()
    assert t.join(DEADLINE)
    py.join()
    assert finished == [True]


def test_both_gils_contended_from_every_kind_of_thread(rt):
    # tether threads run Python targets that checkpoint; Python threads
    # ensure; the main thread joins.  Every thread takes tether's GIL then
    # Python's, so this ends; a counter guarded by tether's GIL alone
    # never sees two holders.
    counter, inside, overlaps = [0], [0], [0]
    rounds = 300

    def critical():
        overlaps[0] += inside[0]
        inside[0] = 1
        counter[0] += 1
        inside[0] = 0

    def tether_target():
        for _ in range(rounds):
            critical()
            tether.checkpoint()

    def python_thread():
        for _ in range(rounds):
            with rt.main.ensure():
                critical()

    threads = [rt.main.thread(tether_target) for _ in range(2)]
    with tether.allow_threads():
        pys = [threading.Thread(target=python_thread) for _ in range(2)]
        for p in pys:
            p.start()
        for p in pys:
            p.join()
    for t in threads:
        assert t.join(DEADLINE)
    assert counter[0] == 4 * rounds
    assert overlaps[0] == 0
