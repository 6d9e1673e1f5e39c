"""The child process of test_debug_report.py.

  leak_child.py leak|clean

Creates a runtime, then a lock, a named thread ("leaky") and, on a Python
thread, an ensure whose release is held back until after finalize.  In
`leak` mode the lock and the thread handle are never freed and the ensure
is released only after finalize, so a TETHER_DEBUG=1 finalize must report
exactly those three; in `clean` mode everything is given back first.
Prints the tether idents (pthread_self) of the main thread and of the
ensuring thread as `main=N leaker=N` for the parent to match.
"""

import sys
import threading

import tether


def main(mode):
    leak = mode == "leak"
    rt = tether.Runtime()
    lock = tether.Lock()
    t = rt.main.thread(lambda: None, name="leaky")
    assert t.join()

    ensured, finalized, idents = threading.Event(), threading.Event(), {}
    held = []

    def leaker():
        idents["leaker"] = threading.get_ident()    # == pthread_self()
        ens = rt.main.ensure().__enter__()
        allow = tether.allow_threads().__enter__()
        if not leak:
            allow.__exit__(None, None, None)
            ens.__exit__(None, None, None)
        held.append((ens, allow))
        ensured.set()
        finalized.wait()

    # The main thread lets the GIL go so that the Python thread can ensure.
    with tether.allow_threads():
        th = threading.Thread(target=leaker)
        th.start()
        ensured.wait()
    if not leak:
        lock.close()
        del t                        # releases the thread handle now
    assert rt.finalize()             # (in leak mode `lock` and `t` live on)
    finalized.set()
    th.join()
    print("main=%d leaker=%d" % (threading.get_ident(), idents["leaker"]))


if __name__ == "__main__":
    main(sys.argv[1])
