#!/usr/bin/env python3
"""The child process of test_ctypes.DebugReportTest.

  leak_child.py leak|clean

Creates a runtime, then a lock, a named thread ("leaky") and, on a Python
thread, an ensure whose release is held back until after finalize.  In
`leak` mode the lock and the thread handle are never freed and the ensure
is released only after finalize, so a TETHER_DEBUG=1 finalize must report
exactly those three; in `clean` mode everything is given back first.
Prints the tether idents (pthread_self) of the main thread and of the
ensuring thread as `main=N leaker=N` for the parent to match.
"""

import ctypes
import sys
import threading

import tether_ctypes

T = tether_ctypes.load()
lib = T.lib


def main(mode):
    leak = mode == "leak"
    rt, interp = T.tether_runtime(), T.tether_interp()
    T.check(lib.tether_runtime_create(None, ctypes.byref(rt)))
    T.check(lib.tether_runtime_main_interp(rt, ctypes.byref(interp)))

    lock = T.tether_lock()
    T.check(lib.tether_lock_new(ctypes.byref(lock)))
    body = T.tether_thread_fn(lambda arg: T.TETHER_OK)
    opts = T.new("tether_thread_opts", name=b"leaky")
    t = T.tether_thread()
    T.check(lib.tether_thread_start(interp, body, None, ctypes.byref(opts),
                                    ctypes.byref(t)))
    T.check(lib.tether_thread_join(t, -1))

    # The main thread lets the GIL go so that the Python thread can ensure.
    saved = T.tether_tstate()
    T.check(lib.tether_save_thread(ctypes.byref(saved)))
    ensured, finalized, idents = (threading.Event(), threading.Event(), {})

    def leaker():
        idents["leaker"] = threading.get_ident()    # == pthread_self()
        tok, ts = T.tether_gilstate(), T.tether_tstate()
        T.check(lib.tether_ensure(interp, ctypes.byref(tok)))
        T.check(lib.tether_save_thread(ctypes.byref(ts)))
        if not leak:
            T.check(lib.tether_restore_thread(ts))
            T.check(lib.tether_release(tok))
        ensured.set()
        finalized.wait()

    th = threading.Thread(target=leaker)
    th.start()
    ensured.wait()
    if not leak:
        T.check(lib.tether_lock_free(lock))
        T.check(lib.tether_thread_release(t))
    T.check(lib.tether_runtime_finalize(rt, -1))
    finalized.set()
    th.join()
    print("main=%d leaker=%d" % (threading.get_ident(), idents["leaker"]))


if __name__ == "__main__":
    main(sys.argv[1])
