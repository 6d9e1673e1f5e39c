"""tether for Python: runtimes, interpreters, threads, plugins, callbacks.

A pure-Python package over ctypes; its declarations come from
tether-abi.json (the ABI as data), so it cannot drift from the C headers.

    import tether

    with tether.Runtime() as rt:           # this thread holds rt.main's GIL
        t = rt.main.thread(print, "hello from a tether thread")
        t.join()
        ticker = rt.load("/path/to/ticker.so")
        cb = rt.main.callback("void(ptr,i32,i32)",
                              lambda ud, thread, tick: print(thread, tick))
        ticker.call("ticker_start", "i32(ptr,ptr,i32,i32,i32)",
                    cb, None, 2, 3, 0)
        ticker.call("ticker_wait", "i32(i64)", -1)   # lets the GIL go

Two GILs, one order.  tether's GIL (per interpreter) and Python's are
different locks.  A thread takes tether's first, then Python's, never the
other way round: every call into libtether goes through ctypes.CDLL, which
lets go of Python's GIL for the length of the call, so a Python thread
never waits for tether's GIL (ensure, a join, a lock, an event, a
channel) while holding Python's.  A callback that libtether or a plugin
calls on any thread (a tether thread's target, a callback on a plugin's
native thread) holds tether's GIL when ctypes takes Python's for it.  Hence:

  - a Python thread blocked in a tether wait lets the other Python threads
    run (it holds neither GIL while it waits);
  - a Python callback on a plugin's native thread, which Python never saw,
    runs holding both, and Python code there may call tether;
  - tether's GIL is handed over only at checkpoints: a Python target that
    loops for long without calling tether should call tether.checkpoint()
    now and then (any tether wait is one too), or the interpreter's other
    threads wait for it.

docs/languages.md, "Python", says more.
"""

import ctypes
import operator
import sys
import threading
import traceback

from . import _ffi
from ._ffi import ABI, CONSTANTS, STATUS_NAMES

__version__ = ABI["library"]["version"]

globals().update(CONSTANTS)          # TETHER_OK, TETHER_EASYNC, ...

__all__ = [
    "Runtime", "Interp", "Thread", "Plugin", "Callback", "Lock", "Event",
    "Channel", "Error", "AsyncInterrupt", "Finalizing", "Closed",
    "allow_threads", "checkpoint", "sleep", "gil_held", "current_thread",
    "excepthook", "library", "status_name", "strerror", "last_error",
    "ffi_call",
]


def library():
    """The loaded libtether (tether._ffi.Library), opened on first use from
    $TETHER_LIB or the dynamic linker's search for libtether.so.1."""
    return _ffi.load()


def _ns(timeout):
    """Seconds (None: for ever) to tether's nanoseconds (-1: for ever)."""
    if timeout is None or timeout < 0:
        return -1
    return int(timeout * 1e9)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def status_name(code):
    """"ETIMEDOUT" for TETHER_ETIMEDOUT, "UNKNOWN" for no status."""
    return STATUS_NAMES.get(code, "UNKNOWN")


def strerror(code):
    return library().strerror(code).decode()


def last_error():
    """The calling thread's last-error sentence ("" if none)."""
    return library().last_error().decode(errors="replace")


class Error(Exception):
    """A tether call failed.  `code` is the status (tether.TETHER_E...),
    `status` its name, `call` the function, and the text has the thread's
    last-error sentence."""

    def __init__(self, code, call, message=None):
        self.code = code
        self.status = status_name(code)
        self.call = call
        if message is None:
            message = last_error()
        # The last-error sentence usually names the call already.
        if not message.startswith(call):
            message = "%s: %s" % (call, message) if message else call
        super().__init__("%s [%s]" % (message, self.status))


class AsyncInterrupt(Error):
    """An asynchronous exception (Thread.raise_async, tether_thread_raise)
    reached this thread at a checkpoint or wait.  `async_code` is the code
    it was raised with; `payload` the raiser's pointer (an int, or None),
    which the catcher now owns, with `dtor` to destroy it."""

    def __init__(self, call, async_code, payload, dtor):
        self.async_code = async_code
        self.payload = payload
        self.dtor = dtor
        super().__init__(TETHER_EASYNC, call,  # noqa: F821
                         "asynchronous exception %d" % async_code)


class Finalizing(Error):
    """The runtime or interpreter is shutting down; the thread was left
    detached and must not touch guest state."""


class Closed(Error):
    """The channel is closed (and, for a receive, empty)."""


def _error(rc, call):
    if rc == TETHER_EASYNC:  # noqa: F821
        lib = library()
        code, payload = ctypes.c_int64(), ctypes.c_void_p()
        dtor = lib.types["tether_dtor"]()
        if lib.async_fetch(ctypes.byref(code), ctypes.byref(payload),
                           ctypes.byref(dtor)) == TETHER_OK:  # noqa: F821
            return AsyncInterrupt(call, code.value, payload.value,
                                  dtor if dtor else None)
        return AsyncInterrupt(call, 0, None, None)
    cls = {TETHER_EFINALIZING: Finalizing,  # noqa: F821
           TETHER_ECLOSED: Closed}.get(rc, Error)  # noqa: F821
    return cls(rc, call)


def _check(rc, call):
    if rc != TETHER_OK:  # noqa: F821
        raise _error(rc, call)
    return rc


def _default_excepthook(exc, thread):
    where = "thread %r" % thread.name if thread is not None else "callback"
    sys.stderr.write("tether: exception in %s:\n" % where)
    traceback.print_exception(type(exc), exc, exc.__traceback__)


# Called with (exception, Thread or None) for an exception that escaped a
# thread's target or a callback's function (then the thread ends with
# TETHER_EXIT, the callback returns zero).  Replace it to log differently.
excepthook = _default_excepthook


def _report(exc, thread):
    try:
        excepthook(exc, thread)
    except BaseException:          # the hook itself failed: say so, go on
        traceback.print_exc()


# ctypes callback objects C may still call (threads whose end was not yet
# seen, runtime excepthooks); a callback object must outlive every call.
_KEEP = {}
_keep_lock = threading.Lock()


def _keep(obj):
    with _keep_lock:
        _KEEP[id(obj)] = obj
    return obj


def _drop(obj):
    with _keep_lock:
        _KEEP.pop(id(obj), None)


# ---------------------------------------------------------------------------
# The GIL
# ---------------------------------------------------------------------------

def gil_held():
    """True if this thread holds its interpreter's tether GIL."""
    return library().gil_held() == 1


def checkpoint():
    """The eval breaker: hands tether's GIL to a waiting thread once the
    switch interval is up, runs pending calls, and raises AsyncInterrupt
    (an asynchronous exception) or Finalizing (shutdown: the thread is now
    detached).  Cheap when nothing is pending.  Needs the GIL."""
    _check(library().checkpoint(), "tether_checkpoint")


def sleep(seconds):
    """Sleeps without either GIL (0 yields tether's GIL to a waiter).
    Raises AsyncInterrupt or Finalizing when woken by them."""
    _check(library().sleep(_ns(seconds)), "tether_sleep")


class allow_threads:
    """with tether.allow_threads(): ... runs the block detached from the
    interpreter, without tether's GIL, so other threads of the interpreter
    run meanwhile (tether_save_thread / tether_restore_thread).  On the way
    out it may raise AsyncInterrupt (re-attached; an asynchronous exception
    was delivered) or Finalizing (left detached).  A thread that holds no
    tether GIL passes through unchanged."""

    _entered = False

    def __enter__(self):
        if self._entered:
            # One saved-state slot: a second enter would lose the first.
            raise RuntimeError("this allow_threads() is already entered; "
                               "nest another tether.allow_threads()")
        self._entered = True
        lib = library()
        self._ts = lib.types["tether_tstate"]()
        if lib.save_thread(ctypes.byref(self._ts)) != TETHER_OK:  # noqa
            self._ts = None
        return self

    def __exit__(self, *exc):
        self._entered = False
        if self._ts is not None:
            rc = library().restore_thread(self._ts)
            if rc != TETHER_OK and exc[0] is None:  # noqa: F821
                raise _error(rc, "tether_restore_thread")
        return False


class _Ensure:
    """The context manager Interp.ensure() returns."""

    def __init__(self, interp):
        self.interp = interp
        self.token = None

    def __enter__(self):
        if self.token is not None:
            # One token slot: a second enter would lose the first token
            # and leave the GIL held for ever.
            raise RuntimeError("this ensure() is already entered; nest "
                               "another interp.ensure()")
        lib = library()
        tok = lib.types["tether_gilstate"]()
        _check(lib.ensure(self.interp.handle, ctypes.byref(tok)),
               "tether_ensure")
        self.token = tok.value
        _outstanding().append([self.token, False])
        return self

    def __exit__(self, *exc):
        tok, self.token = self.token, None
        # tether_release takes this thread's tokens innermost first; a
        # block left before one entered after it (generators, an
        # ExitStack) is released together with that one.
        stack, ready = _outstanding(), [tok]
        for entry in reversed(stack):
            if entry[0] == tok:
                entry[1] = True
                ready = []
                while stack and stack[-1][1]:
                    ready.append(stack.pop()[0])
                break
        rc = TETHER_OK  # noqa: F821
        for t in ready:
            r = library().release(t)
            if rc == TETHER_OK:  # noqa: F821
                rc = r
        if rc != TETHER_OK and exc[0] is None:  # noqa: F821
            raise _error(rc, "tether_release")
        return False


_tokens = threading.local()


def _outstanding():
    """This thread's ensure tokens not yet released, oldest first, each
    with a flag set once its block is left."""
    stack = getattr(_tokens, "stack", None)
    if stack is None:
        stack = _tokens.stack = []
    return stack


# ---------------------------------------------------------------------------
# Runtime and interpreters
# ---------------------------------------------------------------------------

class Runtime:
    """A tether runtime.  Creating it leaves the calling thread attached to
    its main interpreter, holding that interpreter's GIL (as
    Py_Initialize does).  As a context manager it finalizes on exit.

    excepthook(thread_handle, code, message) is tether's hook for a thread
    that ended with an error status (a C thread, or a Python target that
    returned one); exceptions of Python targets go to tether.excepthook."""

    def __init__(self, *, per_interp_gil=False, switch_interval_us=0,
                 abort_on_misuse=False, excepthook=None):
        lib = library()
        flags = 0
        if per_interp_gil:
            flags |= TETHER_CONFIG_PER_INTERP_GIL  # noqa: F821
        if abort_on_misuse:
            flags |= TETHER_CONFIG_ABORT_ON_MISUSE  # noqa: F821
        hook = lib.null("tether_excepthook_fn")
        if excepthook is not None:
            def c_hook(t, code, message, ud):
                try:
                    excepthook(t, code, (message or b"").decode(
                        errors="replace"))
                except BaseException as exc:
                    _report(exc, None)
            hook = _keep(lib.types["tether_excepthook_fn"](c_hook))
        cfg = lib.new("tether_config", flags=flags,
                      switch_interval_us=_int_in(
                          "u32", switch_interval_us, "switch_interval_us"),
                      excepthook=hook)
        rt = lib.types["tether_runtime"]()
        _check(lib.runtime_create(ctypes.byref(cfg), ctypes.byref(rt)),
               "tether_runtime_create")
        self.handle = rt.value
        main = lib.types["tether_interp"]()
        _check(lib.runtime_main_interp(self.handle, ctypes.byref(main)),
               "tether_runtime_main_interp")
        self.main = Interp(self, main.value, is_main=True)

    def interp(self):
        """A new interpreter (with its own GIL if per_interp_gil); the
        calling thread is not attached to it."""
        lib = library()
        out = lib.types["tether_interp"]()
        _check(lib.interp_create(self.handle, ctypes.byref(out)),
               "tether_interp_create")
        return Interp(self, out.value)

    def load(self, path):
        """Loads a plugin into this runtime; its init runs holding the main
        interpreter's GIL."""
        lib = library()
        out = lib.types["tether_plugin"]()
        _check(lib.plugin_load(self.handle, path.encode()
                               if isinstance(path, str) else path,
                               ctypes.byref(out)), "tether_plugin_load")
        return Plugin(out.value)

    @property
    def switch_interval_us(self):
        out = ctypes.c_uint32()
        _check(library().get_switch_interval(self.handle, ctypes.byref(out)),
               "tether_get_switch_interval")
        return out.value

    @switch_interval_us.setter
    def switch_interval_us(self, us):
        us = _int_in("u32", us, "switch_interval_us")
        _check(library().set_switch_interval(self.handle, us),
               "tether_set_switch_interval")

    def finalize(self, timeout=None):
        """Shuts the runtime down, waiting up to `timeout` seconds (None:
        for ever) for its non-daemon threads.  Returns True, or False when
        threads were still running (finalized all the same)."""
        rc = library().runtime_finalize(self.handle, _ns(timeout))
        if rc == TETHER_ETIMEDOUT:  # noqa: F821
            return False
        _check(rc, "tether_runtime_finalize")
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finalize()
        return False


class Interp:
    """An interpreter of a runtime: its threads share its GIL."""

    def __init__(self, runtime, handle, is_main=False):
        self.runtime = runtime
        self.handle = handle
        self.is_main = is_main

    def ensure(self):
        """with interp.ensure(): ... holds this interpreter's GIL in the
        block, on any thread, including threads tether did not start (a
        Python thread, a plugin's thread).  Blocks nest; ensuring another
        interpreter detaches from this one until the block ends."""
        return _Ensure(self)

    def thread(self, target, *args, name=None, daemon=False, **kwargs):
        """Starts a tether thread that runs target(*args, **kwargs)
        holding this interpreter's GIL, and returns its Thread."""
        t = Thread(self, target, args, kwargs, name=name, daemon=daemon)
        t.start()
        return t

    def callback(self, signature, fn):
        """A C function pointer of `signature` (docs/ffi.md: "i32(ptr,f64)")
        that runs fn under this interpreter's GIL, on whatever thread C
        calls it."""
        return Callback(self, signature, fn)

    def gil_stats(self):
        lib = library()
        st = lib.new("tether_gil_stats")
        _check(lib.gil_stats_get(self.handle, ctypes.byref(st)),
               "tether_gil_stats_get")
        return {name: getattr(st, name) for name, _ in st._fields_
                if name != "size"}

    def destroy(self, timeout=None):
        """Joins the interpreter's non-daemon threads (up to `timeout`) and
        destroys it.  Returns True, or False on a timeout."""
        rc = library().interp_destroy(self.handle, _ns(timeout))
        if rc == TETHER_ETIMEDOUT:  # noqa: F821
            return False
        _check(rc, "tether_interp_destroy")
        return True


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------

class Thread:
    """A tether thread whose body is a Python callable.

    The target runs on a new OS thread holding its interpreter's GIL (and,
    while it runs Python code, Python's).  It may return None (TETHER_OK),
    an int (the thread's status: an error goes to the runtime's
    excepthook; one that does not fit a C int is an OverflowError of the
    target), or raise: SystemExit, and Finalizing (the runtime is
    shutting down), end the thread silently (TETHER_EXIT); any other
    exception is kept in `exception`, passed to tether.excepthook, and the
    thread ends with TETHER_EXIT."""

    def __init__(self, interp, target, args=(), kwargs=None, *, name=None,
                 daemon=False):
        self.interp = interp
        self.target = target
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        if name is not None and not isinstance(name, (str, bytes)):
            # ctypes would take an int for the C string as an address.
            raise TypeError("a thread name must be str, bytes or None, "
                            "not %s" % type(name).__name__)
        self._name = name
        self.daemon = bool(daemon)
        self.handle = 0
        self.exception = None
        self._body = None

    def _run(self, arg):
        if self._name is None:          # "Thread-N", tether's choice
            try:
                self._name = current_thread().name
            except Error:
                pass
        try:
            rv = self.target(*self.args, **self.kwargs)
            if not isinstance(rv, int) or isinstance(rv, bool):
                return TETHER_OK  # noqa: F821
            if not -(1 << 31) <= rv < (1 << 31):
                # ctypes would keep the low 32 bits: 2**32 became TETHER_OK.
                raise OverflowError("the thread's status %d does not fit "
                                    "in a C int" % rv)
            return rv
        except (SystemExit, Finalizing):   # a silent end, as in Lua
            return TETHER_EXIT  # noqa: F821
        except BaseException as exc:
            self.exception = exc
            _report(exc, self)
            return TETHER_EXIT  # noqa: F821

    def start(self):
        """Starts the thread; returns once it is registered."""
        if self.handle:
            raise RuntimeError("threads can only be started once")
        lib = library()
        self._body = _keep(lib.types["tether_thread_fn"](self._run))
        name = self._name.encode() if isinstance(self._name, str) \
            else self._name
        opts = lib.new("tether_thread_opts", name=name,
                       daemon=int(self.daemon))
        out = lib.types["tether_thread"]()
        rc = lib.thread_start(self.interp.handle, self._body, None,
                              ctypes.byref(opts), ctypes.byref(out))
        if rc != TETHER_OK:  # noqa: F821
            if rc != TETHER_EFINALIZING:  # noqa: F821 (it may run on)
                _drop(self._body)
            raise _error(rc, "tether_thread_start")
        self.handle = out.value
        return self

    def join(self, timeout=None):
        """Waits up to `timeout` seconds (None: for ever), holding neither
        GIL.  Returns True once the thread has finished, False on a
        timeout.  Raises AsyncInterrupt, Finalizing, Error (EDEADLK: a
        thread joining itself)."""
        rc = library().thread_join(self.handle, _ns(timeout))
        if rc == TETHER_ETIMEDOUT:  # noqa: F821
            return False
        _check(rc, "tether_thread_join")
        if self._body is not None:  # no call of it can be running now
            _drop(self._body)
            self._body = None
        return True

    def is_alive(self):
        rc = library().thread_is_alive(self.handle)
        if rc < 0:
            raise _error(rc, "tether_thread_is_alive")
        return rc == 1

    @property
    def name(self):
        if not self.handle:
            return self._name
        out = ctypes.c_char_p()
        _check(library().thread_name(self.handle, ctypes.byref(out)),
               "tether_thread_name")
        return out.value.decode(errors="replace")

    @property
    def ident(self):
        """The OS thread id (threading.get_ident() on that thread)."""
        out = ctypes.c_uint64()
        _check(library().thread_ident(self.handle, ctypes.byref(out)),
               "tether_thread_ident")
        return out.value

    @property
    def result(self):
        """The status the thread ended with (TETHER_OK, TETHER_EXIT, ...);
        Error (ESTATE) while it runs."""
        out = ctypes.c_int()
        _check(library().thread_result(self.handle, ctypes.byref(out)),
               "tether_thread_result")
        return out.value

    def raise_async(self, code):
        """Raises an asynchronous exception in the thread: it gets
        AsyncInterrupt (async_code == code) at its next checkpoint or wait,
        or at once if it is blocked in one."""
        code = _int_in("i64", code, "code")
        _check(library().thread_raise(
            self.handle, code, None, library().null("tether_dtor")),
            "tether_thread_raise")

    def __del__(self):
        handle, self.handle = self.handle, 0
        if handle:
            try:
                library().thread_release(handle)
            except Exception:       # interpreter shutdown
                pass


def current_thread():
    """A Thread for the calling thread, which must be attached (hold a
    tether GIL).  Its target is None."""
    lib = library()
    out = lib.types["tether_thread"]()
    _check(lib.thread_current(ctypes.byref(out)), "tether_thread_current")
    t = Thread(None, None)
    t.handle = out.value
    return t


# ---------------------------------------------------------------------------
# Locks, events, channels
# ---------------------------------------------------------------------------

class _Handle:
    _new = _free = None

    def __init__(self):
        lib = library()
        out = ctypes.c_uint64()
        _check(getattr(lib, self._new)(ctypes.byref(out)),
               "tether_" + self._new)
        self.handle = out.value

    def close(self):
        handle, self.handle = self.handle, 0
        if handle:
            getattr(library(), self._free)(handle)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Lock(_Handle):
    """A non-recursive lock any thread may release (Python's Lock); its
    waits are tether waits (neither GIL held, interruptible)."""
    _new, _free = "lock_new", "lock_free"

    def acquire(self, blocking=True, timeout=None):
        """True when taken, False on a timeout (or not `blocking`)."""
        ns = _ns(timeout) if blocking else 0
        rc = library().lock_acquire(self.handle, ns)
        if rc == TETHER_ETIMEDOUT:  # noqa: F821
            return False
        _check(rc, "tether_lock_acquire")
        return True

    def release(self):
        _check(library().lock_release(self.handle), "tether_lock_release")

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


class Event(_Handle):
    """An event flag (Python's threading.Event) whose wait is a tether
    wait."""
    _new, _free = "event_new", "event_free"

    def set(self):
        _check(library().event_set(self.handle), "tether_event_set")

    def clear(self):
        _check(library().event_clear(self.handle), "tether_event_clear")

    def is_set(self):
        rc = library().event_is_set(self.handle)
        if rc < 0:
            raise _error(rc, "tether_event_is_set")
        return rc == 1

    def wait(self, timeout=None):
        """True once set, False on a timeout."""
        rc = library().event_wait(self.handle, _ns(timeout))
        if rc == TETHER_ETIMEDOUT:  # noqa: F821
            return False
        _check(rc, "tether_event_wait")
        return True


class Channel:
    """A FIFO of byte messages between any threads of any interpreters,
    bounded by `capacity` messages (0: no bound)."""

    def __init__(self, capacity=0):
        out = ctypes.c_uint64()
        capacity = _int_in("u64", capacity, "capacity")
        _check(library().channel_new(capacity, ctypes.byref(out)),
               "tether_channel_new")
        self.handle = out.value

    def send(self, data, timeout=None):
        """Queues a copy of `data` (bytes).  True, or False on a timeout;
        raises Closed once the channel is closed."""
        data = bytes(data)
        rc = library().channel_send(self.handle, data, len(data),
                                    _ns(timeout))
        if rc == TETHER_ETIMEDOUT:  # noqa: F821
            return False
        _check(rc, "tether_channel_send")
        return True

    def recv(self, timeout=None):
        """The oldest message (bytes), or None on a timeout; raises Closed
        once the channel is closed and empty."""
        lib = library()
        data, n = ctypes.c_void_p(), ctypes.c_size_t()
        rc = lib.channel_recv(self.handle, ctypes.byref(data),
                              ctypes.byref(n), _ns(timeout))
        if rc == TETHER_ETIMEDOUT:  # noqa: F821
            return None
        _check(rc, "tether_channel_recv")
        try:
            return ctypes.string_at(data.value, n.value)
        finally:
            lib.channel_msg_free(data)

    def close(self):
        """Later sends fail; receives drain, then fail.  Idempotent."""
        _check(library().channel_close(self.handle), "tether_channel_close")

    def __len__(self):
        out = ctypes.c_size_t()
        _check(library().channel_count(self.handle, ctypes.byref(out)),
               "tether_channel_count")
        return out.value

    def __del__(self):
        handle, self.handle = self.handle, 0
        if handle:
            try:
                library().channel_release(handle)
            except Exception:
                pass


# ---------------------------------------------------------------------------
# FFI signatures, callbacks and plugins
# ---------------------------------------------------------------------------

_SIG_TYPES = {
    "i8": ctypes.c_int8, "u8": ctypes.c_uint8, "i16": ctypes.c_int16,
    "u16": ctypes.c_uint16, "i32": ctypes.c_int32, "u32": ctypes.c_uint32,
    "i64": ctypes.c_int64, "u64": ctypes.c_uint64, "f32": ctypes.c_float,
    "f64": ctypes.c_double, "ptr": ctypes.c_void_p, "str": ctypes.c_char_p,
    "void": None,
}


def _parse_signature(sig):
    """("i32", ["ptr", "i64"]) for "i32(ptr, i64)".  tether checks the
    grammar itself (TETHER_ESIGNATURE); this only splits it."""
    s = "".join(sig.split())
    if not s.endswith(")") or "(" not in s:
        raise ValueError("bad signature %r" % sig)
    ret, args = s[:-1].split("(", 1)
    args = [a for a in args.split(",") if a] if args not in ("", "void") \
        else []
    for t in [ret] + args:
        if t not in _SIG_TYPES or (t == "void" and t is not ret):
            raise ValueError("bad signature %r: type %r" % (sig, t))
    return ret, args


# The range of each integer kind: ctypes truncates silently (an i32 of
# 2**40 + 7 reached C as 7), so values are checked first.
_INT_RANGES = {k: ((-(1 << (b - 1)), (1 << (b - 1)) - 1) if k[0] == "i"
                   else (0, (1 << b) - 1))
               for k, b in (("i8", 8), ("u8", 8), ("i16", 16), ("u16", 16),
                            ("i32", 32), ("u32", 32), ("i64", 64),
                            ("u64", 64))}


def _int_in(kind, value, what):
    """`value` as an int that fits the C integer `kind` ("u32", ...), else
    TypeError / OverflowError naming `what` (ctypes would keep the low
    bits)."""
    value = operator.index(value)
    lo, hi = _INT_RANGES[kind]
    if not lo <= value <= hi:
        raise OverflowError("%s must be in %d..%d, not %d"
                            % (what, lo, hi, value))
    return value


def _to_c(kind, value):
    """A ctypes object holding `value` as a `kind` argument.  TypeError for
    a value of the wrong type, OverflowError for an integer out of the
    kind's range; nothing is converted then."""
    if kind == "str":
        # Only text: ctypes takes an int for c_char_p as an address, and
        # the C function would read whatever lies there.
        if isinstance(value, str):
            value = value.encode()
        elif value is not None and not isinstance(value, bytes):
            raise TypeError("a str argument must be str, bytes or None, "
                            "not %s" % type(value).__name__)
        return ctypes.c_char_p(value)
    if kind in _INT_RANGES:
        value = operator.index(value)
        lo, hi = _INT_RANGES[kind]
        if not lo <= value <= hi:
            raise OverflowError("%d does not fit in %s" % (value, kind))
    if kind == "ptr":
        if isinstance(value, str):
            # ctypes.cast would make a temporary wide-character copy and
            # free it before the call: C would get a dangling pointer.
            raise TypeError("a ptr argument cannot be str (pass bytes, or "
                            "use a str argument)")
        if isinstance(value, Callback):
            value = value.address
        elif isinstance(value, ctypes._SimpleCData):
            value = value.value
        elif value is not None and not isinstance(value, int):
            value = ctypes.cast(value, ctypes.c_void_p).value
        return ctypes.c_void_p(value)
    return _SIG_TYPES[kind](value)


def _from_c(kind, obj):
    if kind == "str":
        return None if obj.value is None else obj.value.decode(
            errors="replace")
    return obj.value


class Callback:
    """A C function pointer of a signature whose calls run a Python
    function holding the interpreter's GIL (tether_callback_new): any C
    code may call `address` on any thread, attached or not.  Arguments
    arrive as Python ints/floats (ptr: int or None, str: str); the return
    value is converted back.  An exception goes to tether.excepthook and
    the C caller gets zero.  `str` is not a callback return type (nothing
    would own the string).  free() (or the end of a with block) gives it
    up; calls still running finish first."""

    def __init__(self, interp, signature, fn):
        lib = library()
        self.signature = signature
        self.ret, self.args = _parse_signature(signature)
        if self.ret == "str":
            raise ValueError("a callback cannot return str")
        self.fn = fn
        self._guest = lib.types["tether_guest_fn"](self._call)
        out = lib.types["tether_callback"]()
        _check(lib.callback_new(interp.handle, signature.encode(),
                                self._guest, None, ctypes.byref(out)),
               "tether_callback_new")
        self.handle = out.value
        self.address = lib.callback_code(self.handle)
        # The ctypes object behind the C code must outlive its last call:
        # tether says when that is (tether_callback_on_free, ABI 1.2).
        _keep(self._guest)
        key = id(self._guest)
        _FREED[key] = self._guest
        if "tether_callback_on_free" in lib.functions:
            lib.callback_on_free(self.handle, _on_free_c(), key)
        else:                  # an older library: kept for the process
            _FREED.pop(key)

    def _call(self, args, ret, userdata):
        try:
            values = [_from_c(k, ctypes.cast(
                args[i], ctypes.POINTER(_SIG_TYPES[k])).contents)
                for i, k in enumerate(self.args)]
            rv = self.fn(*values)
            if self.ret == "ptr" and isinstance(rv, (str, bytes, bytearray)):
                # Nothing would keep the object alive once we return: C
                # would get a dangling pointer.
                raise TypeError("a ptr callback cannot return %s (return "
                                "an address that outlives the call)"
                                % type(rv).__name__)
            if self.ret != "void":
                ctypes.cast(ret, ctypes.POINTER(_SIG_TYPES[self.ret]))[0] = \
                    _to_c(self.ret, rv if rv is not None else 0).value
        except BaseException as exc:
            _report(exc, None)
        return TETHER_OK  # noqa: F821

    def free(self):
        handle, self.handle = self.handle, 0
        if handle:
            _check(library().callback_free(handle), "tether_callback_free")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()
        return False


# The ctypes objects of callbacks not yet destroyed, by the key given to
# tether_callback_on_free; one C function (made once, kept for ever) drops
# each when tether says its callback is gone.
_FREED = {}
_on_free_fn = []


def _on_free_c():
    with _keep_lock:
        if not _on_free_fn:
            fn_type = library().callback_on_free.argtypes[1]

            def on_free(ud):
                guest = _FREED.pop(ud, None)
                if guest is not None:
                    _drop(guest)
            _on_free_fn.append(fn_type(on_free))
    return _on_free_fn[0]


def ffi_call(address, signature, *args):
    """Calls the C function at `address` (an int, or a Callback) as
    `signature` describes (tether_ffi_call), with Python's GIL released
    and tether's left as it is.  Arguments: ints, floats, str/bytes (str),
    ints/None/Callbacks/ctypes objects (ptr).  Returns the C return value
    (None for void; str for str)."""
    ret, kinds = _parse_signature(signature)
    if len(args) != len(kinds):
        raise TypeError("%s takes %d arguments, %d given" % (
            signature, len(kinds), len(args)))
    if isinstance(address, Callback):
        address = address.address
    values = [_to_c(k, a) for k, a in zip(kinds, args)]
    argv = (ctypes.c_void_p * max(1, len(values)))(
        *[ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in values])
    out = _SIG_TYPES[ret]() if ret != "void" else None
    _check(library().ffi_call(
        address, signature.encode(), argv,
        ctypes.byref(out) if out is not None else None), "tether_ffi_call")
    return _from_c(ret, out) if out is not None else None


class Plugin:
    """A loaded plugin (Runtime.load)."""

    def __init__(self, handle):
        self.handle = handle

    def _info(self):
        name, version = ctypes.c_char_p(), ctypes.c_char_p()
        _check(library().plugin_info(self.handle, ctypes.byref(name),
                                     ctypes.byref(version)),
               "tether_plugin_info")
        return name.value, version.value

    @property
    def name(self):
        return self._info()[0].decode()

    @property
    def version(self):
        v = self._info()[1]
        return v.decode() if v is not None else None

    def symbol(self, name):
        """The address of an exported symbol (an int)."""
        out = ctypes.c_void_p()
        _check(library().plugin_symbol(self.handle, name.encode(),
                                       ctypes.byref(out)),
               "tether_plugin_symbol")
        return out.value

    def call(self, symbol, signature, *args):
        """Calls the plugin's function `symbol` as `signature` describes
        (tether_ffi_call): the plugin is not unloaded while the call runs,
        and tether's GIL is left as it is (a plugin function that blocks
        lets it go itself, as ticker_wait does).  Python's GIL is released
        for the call.  Returns the C return value (None for void)."""
        return ffi_call(self.symbol(symbol), signature, *args)

    @property
    def state(self):
        """The instance state the plugin's init stored (an int or None)."""
        out = ctypes.c_void_p()
        _check(library().plugin_state(self.handle, ctypes.byref(out)),
               "tether_plugin_state")
        return out.value

    def unload(self, timeout=None):
        """Drops this reference; the last one runs fini.  True, or False
        when calls into it were still running after `timeout` (it stays
        loaded)."""
        rc = library().plugin_unload(self.handle, _ns(timeout))
        if rc == TETHER_ETIMEDOUT:  # noqa: F821
            return False
        _check(rc, "tether_plugin_unload")
        self.handle = 0
        return True
