#!/usr/bin/env python3
"""libtether from Python through ctypes: no C compiler involved.

The binding (tether_ctypes.py) is made from tether.h when the suite starts.
Thread bodies are ctypes callbacks, which take Python's GIL themselves on
tether's threads; foreign calls go through ctypes.CDLL, which drops Python's
GIL, so Python's GIL and tether's never wait on each other.

Environment (set by CTest): TETHER_LIB (libtether.so.1), TETHER_HEADER
(tether.h), TETHER_MAP (abi/tether.map).  Run with /usr/bin/python3; only
the standard library is used.
"""

import ctypes
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tether_ctypes  # noqa: E402

T = tether_ctypes.load()
lib = T.lib
SEC = 1000000000
# A deadline for waits that should end at once; never a timing assertion.
DEADLINE = 60 * SEC * int(os.environ.get("TETHER_TEST_TIMEOUT_SCALE", "1"))

# Callbacks that C may still call after a test returned (daemon threads
# finishing after finalize) live here until the process exits.
KEEP_ALIVE = []


def thread_fn(body):
    cb = T.tether_thread_fn(body)
    KEEP_ALIVE.append(cb)
    return cb


# A NULL destructor: ctypes wants an instance, not None, for a function
# pointer argument.
NO_DTOR = T.tether_dtor()


def last_error():
    return lib.tether_last_error().decode()


class Runtime:
    """A runtime for one test; the creating thread holds its GIL."""

    def __init__(self, config=None):
        self.rt = T.tether_runtime()
        T.check(lib.tether_runtime_create(
            ctypes.byref(config) if config else None, ctypes.byref(self.rt)),
            "tether_runtime_create")
        self.interp = T.tether_interp()
        T.check(lib.tether_runtime_main_interp(self.rt,
                                               ctypes.byref(self.interp)))

    def start(self, body, arg=None, name=None, daemon=0):
        opts = T.new("tether_thread_opts", name=name, daemon=daemon)
        t = T.tether_thread()
        T.check(lib.tether_thread_start(self.interp, thread_fn(body), arg,
                                        ctypes.byref(opts), ctypes.byref(t)),
                "tether_thread_start")
        return t

    def event(self):
        e = T.tether_event()
        T.check(lib.tether_event_new(ctypes.byref(e)))
        return e

    def finalize(self, timeout=DEADLINE):
        return lib.tether_runtime_finalize(self.rt, timeout)


class AbiTest(unittest.TestCase):
    def test_abi_version_matches_header(self):
        self.assertEqual(lib.tether_abi_version(), T.TETHER_ABI_VERSION)
        self.assertEqual(lib.tether_version_string().decode(), "%d.%d.%d" % (
            T.TETHER_VERSION_MAJOR, T.TETHER_VERSION_MINOR,
            T.TETHER_VERSION_PATCH))

    def test_every_version_script_symbol_resolves(self):
        # Like CPython's stable-ABI test: each name the library promises
        # resolves through the dynamic linker.
        names = [n for _, ns in tether_ctypes.th.parse_version_script(
            os.environ["TETHER_MAP"]) for n in ns]
        self.assertGreater(len(names), 50)
        for name in names:
            with self.subTest(name=name):
                self.assertIsNotNone(getattr(lib, name))
        with self.assertRaises(AttributeError):
            getattr(lib, "err_set")         # an internal function

    def test_status_names_and_messages(self):
        for name, value in T.api.statuses.items():
            with self.subTest(name=name):
                self.assertEqual(lib.tether_status_name(value).decode(),
                                 name[len("TETHER_"):])
                self.assertTrue(lib.tether_strerror(value))
        self.assertEqual(lib.tether_status_name(12345), b"UNKNOWN")


class ThreadTest(unittest.TestCase):
    def setUp(self):
        self.rt = Runtime()

    def tearDown(self):
        if self.rt:
            self.assertEqual(self.rt.finalize(), T.TETHER_OK, last_error())

    def test_threads_run_python_callbacks(self):
        seen = []

        def body(arg):
            self.assertEqual(lib.tether_gil_held(), 1)
            seen.append(arg)
            return T.TETHER_OK

        threads = [self.rt.start(body, i + 1, name=b"worker-%d" % i)
                   for i in range(4)]
        for i, t in enumerate(threads):
            T.check(lib.tether_thread_join(t, DEADLINE), "join")
            self.assertEqual(lib.tether_thread_is_alive(t), 0)
            result, name = ctypes.c_int(-99), ctypes.c_char_p()
            T.check(lib.tether_thread_result(t, ctypes.byref(result)))
            T.check(lib.tether_thread_name(t, ctypes.byref(name)))
            self.assertEqual((result.value, name.value),
                             (T.TETHER_OK, b"worker-%d" % i))
            T.check(lib.tether_thread_release(t))
        self.assertEqual(sorted(seen), [1, 2, 3, 4])

    def test_join_with_timeout(self):
        go = self.rt.event()
        t = self.rt.start(lambda arg: lib.tether_event_wait(go, DEADLINE))
        self.assertEqual(lib.tether_thread_join(t, 0), T.TETHER_ETIMEDOUT)
        self.assertEqual(lib.tether_thread_join(t, SEC // 100),
                         T.TETHER_ETIMEDOUT)
        self.assertEqual(lib.tether_thread_is_alive(t), 1)
        T.check(lib.tether_event_set(go))
        T.check(lib.tether_thread_join(t, DEADLINE), "join")
        result = ctypes.c_int(-99)
        T.check(lib.tether_thread_result(t, ctypes.byref(result)))
        self.assertEqual(result.value, T.TETHER_OK)
        lib.tether_thread_release(t)
        lib.tether_event_free(go)

    def test_async_exception_reaches_checkpointing_thread(self):
        running = self.rt.event()
        got = {}

        def body(arg):
            lib.tether_event_set(running)
            for _ in range(10 ** 7):         # a bound, not a timing
                rc = lib.tether_checkpoint()
                if rc != T.TETHER_OK:
                    break
            code = ctypes.c_int64()
            got["rc"] = rc
            got["fetch"] = lib.tether_async_fetch(ctypes.byref(code), None,
                                                  None)
            got["code"] = code.value
            return T.TETHER_OK

        t = self.rt.start(body)
        T.check(lib.tether_event_wait(running, DEADLINE), "event_wait")
        T.check(lib.tether_thread_raise(t, 1234, None, NO_DTOR), "raise")
        T.check(lib.tether_thread_join(t, DEADLINE), "join")
        self.assertEqual(got, {"rc": T.TETHER_EASYNC, "fetch": T.TETHER_OK,
                               "code": 1234})
        lib.tether_thread_release(t)
        lib.tether_event_free(running)

    def test_async_exception_wakes_a_blocked_wait(self):
        running, never = self.rt.event(), self.rt.event()
        got = []

        def body(arg):
            lib.tether_event_set(running)
            got.append(lib.tether_event_wait(never, -1))
            got.append(lib.tether_async_fetch(None, None, None))
            return T.TETHER_OK

        t = self.rt.start(body, daemon=1)  # finalize does not wait for it
        T.check(lib.tether_event_wait(running, DEADLINE), "event_wait")
        T.check(lib.tether_thread_raise(t, 7, None, NO_DTOR), "raise")
        T.check(lib.tether_thread_join(t, DEADLINE), "join")
        self.assertEqual(got, [T.TETHER_EASYNC, T.TETHER_OK])
        lib.tether_thread_release(t)
        for e in (running, never):
            lib.tether_event_free(e)

    def test_ensure_release_from_python_threads(self):
        # The main thread lets go of the GIL; Python threads, which tether
        # did not create, take it with ensure.  `inside` is guarded only by
        # tether's GIL: Python's GIL switches between these threads freely.
        saved = T.tether_tstate()
        T.check(lib.tether_save_thread(ctypes.byref(saved)), "save_thread")
        inside, overlaps, rounds, errors = [0], [0], 200, []

        def worker():
            try:
                for _ in range(rounds):
                    tok = T.tether_gilstate()
                    T.check(lib.tether_ensure(self.rt.interp,
                                              ctypes.byref(tok)), "ensure")
                    assert lib.tether_gil_held() == 1
                    overlaps[0] += inside[0]
                    inside[0] = 1
                    # Let Python switch threads inside the window; only
                    # tether's GIL may keep the others out.  (A checkpoint
                    # here would be wrong: it may hand tether's GIL on.)
                    time.sleep(0)
                    inside[0] = 0
                    lib.tether_checkpoint()
                    T.check(lib.tether_release(tok), "release")
                    assert lib.tether_gil_held() == 0
            except Exception as exc:           # reported below
                errors.append(exc)

        workers = [threading.Thread(target=worker) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        T.check(lib.tether_restore_thread(saved), "restore_thread")
        self.assertEqual(errors, [])
        self.assertEqual(overlaps[0], 0)

    def test_nested_ensure_and_misuse(self):
        tokens = [T.tether_gilstate(), T.tether_gilstate()]
        errors = []

        def other_thread():
            errors.append(lib.tether_release(tokens[1]))
            errors.append(last_error())

        for tok in tokens:
            T.check(lib.tether_ensure(self.rt.interp, ctypes.byref(tok)))
        # Out of order, and from another thread: refused, nothing changes.
        self.assertEqual(lib.tether_release(tokens[0]), T.TETHER_ESTATE)
        self.assertIn("tether_release", last_error())
        th = threading.Thread(target=other_thread)
        th.start()
        th.join()
        self.assertEqual(errors[0], T.TETHER_ESTATE)
        self.assertIn("tether_release", errors[1])
        for tok in reversed(tokens):
            T.check(lib.tether_release(tok), "release")
        self.assertEqual(lib.tether_gil_held(), 1)

    def test_last_error_after_misuse(self):
        self.assertEqual(lib.tether_thread_join(0xDEAD0000BEEF, 0),
                         T.TETHER_EBADHANDLE)
        self.assertIn("tether_thread_join", last_error())
        self.assertEqual(lib.tether_event_set(0), T.TETHER_EBADHANDLE)
        self.assertIn("tether_event_set", last_error())
        self.assertEqual(lib.tether_sleep(-1), T.TETHER_EINVAL)
        self.assertIn("tether_sleep", last_error())
        got = []

        def body(arg):
            me = T.tether_thread()
            T.check(lib.tether_thread_current(ctypes.byref(me)))
            got.append(lib.tether_thread_join(me, DEADLINE))
            got.append(last_error())
            lib.tether_thread_release(me)
            return T.TETHER_OK

        t = self.rt.start(body)
        T.check(lib.tether_thread_join(t, DEADLINE), "join")
        lib.tether_thread_release(t)
        self.assertEqual(got[0], T.TETHER_EDEADLK)
        self.assertIn("tether_thread_join", got[1])

    def test_excepthook_gets_failed_threads(self):
        self.assertEqual(self.rt.finalize(), T.TETHER_OK)
        calls = []

        def hook(thread, code, message, ud):
            calls.append(code)

        cb = T.tether_excepthook_fn(hook)
        KEEP_ALIVE.append(cb)
        self.rt = Runtime(T.new("tether_config", excepthook=cb))
        for rc in (T.TETHER_OK, T.TETHER_EXIT, T.TETHER_EINVAL):
            t = self.rt.start(lambda arg, rc=rc: rc)
            T.check(lib.tether_thread_join(t, DEADLINE), "join")
            lib.tether_thread_release(t)
        self.assertEqual(calls, [T.TETHER_EINVAL])

    def test_finalize_stops_a_daemon_thread_blocked_in_a_wait(self):
        running, never = self.rt.event(), self.rt.event()
        finished = threading.Event()
        got = []

        def body(arg):
            lib.tether_event_set(running)
            got.append(lib.tether_event_wait(never, -1))
            finished.set()
            return T.TETHER_OK

        t = self.rt.start(body, daemon=1)
        T.check(lib.tether_event_wait(running, DEADLINE), "event_wait")
        lib.tether_thread_release(t)
        self.assertEqual(self.rt.finalize(), T.TETHER_OK, last_error())
        self.assertTrue(finished.wait(DEADLINE / SEC))
        self.assertEqual(got, [T.TETHER_EFINALIZING])
        tok = T.tether_gilstate()
        self.assertIn(lib.tether_ensure(self.rt.interp, ctypes.byref(tok)),
                      (T.TETHER_EFINALIZING, T.TETHER_EBADHANDLE))
        self.rt = None


class DebugReportTest(unittest.TestCase):
    """TETHER_DEBUG=1: finalize names what was leaked, and only that."""

    CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "leak_child.py")

    def run_child(self, mode, debug):
        env = dict(os.environ)
        env.pop("TETHER_DEBUG", None)
        if debug:
            env["TETHER_DEBUG"] = "1"
        res = subprocess.run([sys.executable, "-B", self.CHILD, mode],
                             env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             timeout=DEADLINE / SEC)
        self.assertEqual(res.returncode, 0, res.stderr)
        idents = dict(line.split("=") for line in res.stdout.split())
        report = [line for line in res.stderr.splitlines()
                  if "TETHER_DEBUG" in line]
        return idents, report

    def test_leaks_are_reported(self):
        idents, report = self.run_child("leak", debug=True)
        text = "\n".join(report)
        made_by_main = "made by thread %s" % idents["main"]
        self.assertRegex(text, r"lock handle 0x[0-9a-f]+ still open, " +
                         made_by_main)
        self.assertRegex(text, r'thread handle 0x[0-9a-f]+ "leaky" still '
                         r"open, " + made_by_main)
        self.assertRegex(text, r"thread %s never released 1 ensure" %
                         idents["leaker"])
        self.assertEqual(len(report), 3, text)

    def test_no_report_without_leaks(self):
        _, report = self.run_child("clean", debug=True)
        self.assertEqual(report, [])

    def test_no_report_without_tether_debug(self):
        _, report = self.run_child("leak", debug=False)
        self.assertEqual(report, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
