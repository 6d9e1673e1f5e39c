/*
 * cpython.c - the CPython side of every benchmark, through the C API of an
 * embedded libpython3 (Debian's python3-dev).  The only file that includes
 * Python.h; built only when pkg-config finds python3-embed.
 *
 * Each side mirrors its tether counterpart line for line: the same thread
 * shapes, counts and clocks.  Every side is entered and left with the
 * calling thread holding the CPython GIL, the state py_init leaves.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdlib.h>

#include "bench.h"

/* The namespace the helper code below runs in (__main__'s dict).
   Synchronization: the CPython GIL. */
static PyObject *helpers;

/* The Python half of the benchmarks that need Python code running. */
static const char helper_source[] =
    "import ctypes\n"
    "import threading\n"
    "import time\n"
    "now = time.monotonic_ns  # CLOCK_MONOTONIC, as bench_now()\n"
    "\n"
    "class Stop(Exception):\n"
    "    pass\n"
    "\n"
    "def _noop():\n"
    "    pass\n"
    "\n"
    "def thread_start_join(k):\n"
    "    t0 = now()\n"
    "    for _ in range(k):\n"
    "        t = threading.Thread(target=_noop)\n"
    "        t.start()\n"
    "        t.join()\n"
    "    return (now() - t0) / k\n"
    "\n"
    "def _spin(ready):\n"
    "    ready.set()\n"
    "    try:\n"
    "        while True:\n"
    "            pass\n"
    "    except Stop:\n"
    "        pass\n"
    "\n"
    "def start_spinner():\n"
    "    ready = threading.Event()\n"
    "    t = threading.Thread(target=_spin, args=(ready,))\n"
    "    t.start()\n"
    "    ready.wait()\n"
    "    return t\n"
    "\n"
    "def _blocked(ready, wait_s, woke):\n"
    "    try:\n"
    "        ready.set()\n"
    "        threading.Event().wait(wait_s)\n"
    "    except Stop:\n"
    "        pass\n"
    "    finally:\n"
    "        woke.append(now())\n"
    "\n"
    "def start_blocked(wait_s):\n"
    "    ready = threading.Event()\n"
    "    woke = []\n"
    "    t = threading.Thread(target=_blocked, args=(ready, wait_s, woke))\n"
    "    t.start()\n"
    "    ready.wait()\n"
    "    return t, woke\n"
    "\n"
    "def _cpu(run, out):\n"
    "    n = 0\n"
    "    t0 = now()\n"
    "    while run[0]:\n"
    "        n += 1\n"
    "    out.append((n, now() - t0))\n"
    "\n"
    "def _io(run, idle_s, lat):\n"
    "    sleep = time.sleep\n"
    "    while run[0] or not lat:\n"
    "        sleep(idle_s)\n"
    "        t0 = now()\n"
    "        sleep(0)\n"
    "        lat.append(now() - t0)\n"
    "\n"
    "def convoy(window_s, idle_s, with_io):\n"
    "    run = [True]\n"
    "    out = []\n"
    "    lat = []\n"
    "    threads = [threading.Thread(target=_cpu, args=(run, out))]\n"
    "    if with_io:\n"
    "        threads.append(threading.Thread(target=_io,\n"
    "                                        args=(run, idle_s, lat)))\n"
    "    for t in threads:\n"
    "        t.start()\n"
    "    time.sleep(window_s)\n"
    "    run[0] = False\n"
    "    for t in threads:\n"
    "        t.join()\n"
    "    n, ns = out[0]\n"
    "    return n * 1e9 / ns, lat\n"
    "\n"
    "def _share_spin(run):\n"
    "    while run[0]:\n"
    "        pass\n"
    "\n"
    "def cpu_share(n, warm_s, window_s):\n"
    "    run = [True]\n"
    "    threads = [threading.Thread(target=_share_spin, args=(run,))\n"
    "               for _ in range(n)]\n"
    "    for t in threads:\n"
    "        t.start()\n"
    "    time.sleep(warm_s)\n"
    "    clocks = [time.pthread_getcpuclockid(t.ident) for t in threads]\n"
    "    c0 = [time.clock_gettime_ns(c) for c in clocks]\n"
    "    time.sleep(window_s)\n"
    "    c1 = [time.clock_gettime_ns(c) for c in clocks]\n"
    "    run[0] = False\n"
    "    for t in threads:\n"
    "        t.join()\n"
    "    d = [b - a for a, b in zip(c0, c1)]\n"
    "    return min(d) * n / sum(d) if sum(d) else 0.0\n"
    "\n"
    "CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int)\n"
    "\n"
    "def _empty(a, b):\n"
    "    return 0\n"
    "\n"
    "callback = CALLBACK(_empty)\n"
    "callback_addr = ctypes.cast(callback, ctypes.c_void_p).value\n";

static _Noreturn void py_fail(const char *what)
{
    if (PyErr_Occurred())
        PyErr_Print();
    bench_fail("CPython: %s failed", what);
}

void py_init(void)
{
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    PyStatus st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        bench_fail("Py_InitializeFromConfig: %s",
                   st.err_msg ? st.err_msg : "failed");
    PyObject *main_module = PyImport_AddModule("__main__");
    if (!main_module)
        py_fail("import __main__");
    helpers = PyModule_GetDict(main_module);
    PyObject *r = PyRun_String(helper_source, Py_file_input, helpers, helpers);
    if (!r)
        py_fail("the helper code");
    Py_DECREF(r);
}

const char *py_version(void)
{
    return PY_VERSION;
}

/* Calls helpers[name](*args); returns a new reference. */
static PyObject *py_call(const char *name, const char *fmt, ...)
{
    PyObject *fn = PyDict_GetItemString(helpers, name);
    if (!fn)
        py_fail(name);
    va_list ap;
    va_start(ap, fmt);
    PyObject *args = Py_VaBuildValue(fmt, ap);
    va_end(ap);
    PyObject *r = args ? PyObject_CallObject(fn, args) : NULL;
    Py_XDECREF(args);
    if (!r)
        py_fail(name);
    return r;
}

/* ---- PyGILState_Ensure/Release and PyEval_SaveThread/RestoreThread ---- */

void py_ensure_nested(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t n = bench_count(ctx, 2000000, 100);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyGILState_Release(g);
    }
    out[0] = (double)(bench_now() - t0) / (double)n;
}

typedef struct py_run {
    uint64_t n;
    double ns;
} py_run;

/* A foreign thread keeps its state alive with an outer Ensure that it
   holds open (the documented CPython idiom); each inner Ensure/Release
   then re-takes and drops the GIL. */
static void *py_foreign_thread(void *p)
{
    py_run *f = p;
    PyGILState_STATE outer = PyGILState_Ensure();
    PyThreadState *ts = PyEval_SaveThread();
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < f->n; i++) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyGILState_Release(g);
    }
    f->ns = (double)(bench_now() - t0) / (double)f->n;
    PyEval_RestoreThread(ts);
    PyGILState_Release(outer);
    return NULL;
}

void py_ensure_foreign(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    py_run f = {bench_count(ctx, 1000000, 100), 0};
    PyThreadState *main_ts = PyEval_SaveThread();
    bench_join(bench_spawn(py_foreign_thread, &f));
    PyEval_RestoreThread(main_ts);
    out[0] = f.ns;
}

static void *py_fresh_thread(void *p)
{
    py_run *f = p;
    uint64_t t0 = bench_now();
    PyGILState_STATE g = PyGILState_Ensure(); /* creates the state */
    PyGILState_Release(g);                    /* deletes it */
    f->ns = (double)(bench_now() - t0);
    return NULL;
}

void py_ensure_fresh(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t k = bench_count(ctx, 300, 3);
    double inner = 0;
    PyThreadState *main_ts = PyEval_SaveThread();
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < k; i++) {
        py_run f = {0, 0};
        bench_join(bench_spawn(py_fresh_thread, &f));
        inner += f.ns;
    }
    out[1] = (double)(bench_now() - t0) / (double)k;
    PyEval_RestoreThread(main_ts);
    out[0] = inner / (double)k;
}

void py_save_restore(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    uint64_t n = bench_count(ctx, 2000000, 100);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        PyThreadState *ts = PyEval_SaveThread();
        PyEval_RestoreThread(ts);
    }
    out[0] = (double)(bench_now() - t0) / (double)n;
}

/* ---- many threads taking the GIL ---- */

typedef struct py_kept {
    PyGILState_STATE outer;
    PyThreadState *ts;
} py_kept;

static void *py_kept_setup(void *ud)
{
    (void)ud;
    py_kept *k = malloc(sizeof *k);
    if (!k)
        bench_fail("out of memory");
    k->outer = PyGILState_Ensure();
    k->ts = PyEval_SaveThread();
    return k;
}

static void py_kept_teardown(void *state)
{
    py_kept *k = state;
    PyEval_RestoreThread(k->ts);
    PyGILState_Release(k->outer);
    free(k);
}

/* One GIL acquisition: re-take the GIL, drop it. */
static void py_acquire_op(void *state)
{
    py_kept *k = state;
    PyEval_RestoreThread(k->ts);
    k->ts = PyEval_SaveThread();
}

static void py_ensure_op(void *state)
{
    (void)state;
    PyGILState_STATE g = PyGILState_Ensure();
    PyGILState_Release(g);
}

static bench_loop_result py_loop(bench_ctx *ctx, int nthreads,
                                 void (*op)(void *))
{
    bench_loop spec = {nthreads, py_kept_setup, op, py_kept_teardown, NULL};
    PyThreadState *main_ts = PyEval_SaveThread();
    bench_loop_result r = bench_loop_run(ctx, &spec);
    PyEval_RestoreThread(main_ts);
    return r;
}

void py_gil_contention(bench_ctx *ctx, const void *arg, double out[])
{
    bench_loop_result r = py_loop(ctx, *(const int *)arg, py_acquire_op);
    out[0] = r.per_s;
    out[1] = r.min_share;
}

void py_ensure_scale(bench_ctx *ctx, const void *arg, double out[])
{
    bench_loop_result r = py_loop(ctx, *(const int *)arg, py_ensure_op);
    out[0] = r.per_s;
}

void py_ensure_p99(bench_ctx *ctx, const void *arg, double out[])
{
    bench_loop spec = {*(const int *)arg, py_kept_setup, py_ensure_op,
                       py_kept_teardown, NULL};
    PyThreadState *main_ts = PyEval_SaveThread();
    out[0] = bench_loop_latency(ctx, &spec, 0.99);
    PyEval_RestoreThread(main_ts);
}

/* ---- fair CPU sharing ---- */

void py_cpu_share(bench_ctx *ctx, const void *arg, double out[])
{
    double window = (double)bench_window_ns(ctx, 2000, 20) / 1e9;
    PyObject *r = py_call("cpu_share", "(idd)", *(const int *)arg, window / 10,
                          window);
    out[0] = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (PyErr_Occurred())
        py_fail("cpu_share");
}

/* ---- memory per idle attached thread ---- */

typedef struct py_idle {
    bench_gate *gate;
    _Atomic int ready;
    int n;
} py_idle;

static void *py_idle_thread(void *p)
{
    py_idle *r = p;
    PyGILState_STATE g = PyGILState_Ensure();
    PyThreadState *ts = PyEval_SaveThread();
    atomic_fetch_add(&r->ready, 1);
    bench_gate_wait(r->gate);
    PyEval_RestoreThread(ts);
    PyGILState_Release(g);
    return NULL;
}

static double py_idle_measure(void *p)
{
    py_idle *r = p;
    PyOS_AfterFork_Child();
    pthread_t *t = calloc((size_t)r->n, sizeof *t);
    if (!t)
        bench_fail("out of memory");
    PyThreadState *main_ts = PyEval_SaveThread();
    r->gate = bench_gate_new();
    double rss0 = bench_rss_bytes();
    for (int i = 0; i < r->n; i++)
        t[i] = bench_spawn(py_idle_thread, r);
    while (atomic_load(&r->ready) < r->n)
        bench_sleep_ns(1000000);
    double rss1 = bench_rss_bytes();
    bench_gate_open(r->gate);
    for (int i = 0; i < r->n; i++)
        bench_join(t[i]);
    PyEval_RestoreThread(main_ts);
    free(t);
    return (rss1 - rss0) / r->n;
}

void py_idle_memory(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    py_idle r = {.n = ctx->smoke ? 16 : 1000};
    PyOS_BeforeFork();
    out[0] = bench_in_child(py_idle_measure, &r);
    PyOS_AfterFork_Parent();
}

/* ---- threads and asynchronous exceptions ---- */

void py_thread_start_join(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    PyObject *r = py_call("thread_start_join", "(K)",
                          (unsigned long long)bench_count(ctx, 200, 2));
    out[0] = PyFloat_AsDouble(r);
    Py_DECREF(r);
}

static unsigned long py_ident(PyObject *thread)
{
    PyObject *ident = PyObject_GetAttrString(thread, "ident");
    unsigned long id = ident ? PyLong_AsUnsignedLong(ident) : 0;
    Py_XDECREF(ident);
    if (PyErr_Occurred())
        py_fail("Thread.ident");
    return id;
}

/* Raises Stop in `thread` and joins it; the ns that took in *ns.  Returns
   0 if the thread had already ended (no exception raised; joined all the
   same), 1 otherwise. */
static int py_try_raise_and_join(PyObject *thread, uint64_t *ns)
{
    PyObject *stop = PyDict_GetItemString(helpers, "Stop");
    unsigned long id = py_ident(thread);
    uint64_t t0 = bench_now();
    int raised = PyThreadState_SetAsyncExc(id, stop);
    if (raised > 1)
        py_fail("PyThreadState_SetAsyncExc");
    PyObject *r = PyObject_CallMethod(thread, "join", NULL);
    uint64_t t1 = bench_now();
    if (!r)
        py_fail("Thread.join");
    Py_DECREF(r);
    *ns = t1 - t0;
    return raised;
}

static uint64_t py_raise_and_join(PyObject *thread)
{
    uint64_t ns;
    if (!py_try_raise_and_join(thread, &ns))
        py_fail("PyThreadState_SetAsyncExc (the thread had ended)");
    return ns;
}

void py_async_spinner(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    double lat[64];
    int k = (int)bench_count(ctx, 21, 1);
    for (int i = 0; i < k; i++) {
        PyObject *t = py_call("start_spinner", "()");
        lat[i] = (double)py_raise_and_join(t);
        Py_DECREF(t);
    }
    out[0] = bench_median(lat, (size_t)k);
}

void py_async_blocked(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    double lat[16];
    int k = (int)bench_count(ctx, 5, 1);
    /* On a loaded machine the thread's wait may end (at its timeout) and
       the thread with it before the raise: that trial is taken again. */
    for (int i = 0, retries = 0; i < k; i++) {
        PyObject *pair = py_call("start_blocked", "(d)",
                                 PY_BLOCKED_WAIT_MS / 1000.0);
        PyObject *t = PyTuple_GetItem(pair, 0);
        PyObject *woke = PyTuple_GetItem(pair, 1);
        Py_BEGIN_ALLOW_THREADS
        bench_sleep_ns(1000000); /* let it block in the wait */
        Py_END_ALLOW_THREADS
        uint64_t t0 = bench_now(), ns;
        if (!py_try_raise_and_join(t, &ns)) {
            Py_DECREF(pair);
            if (++retries > 10)
                py_fail("PyThreadState_SetAsyncExc: the blocked thread "
                        "ended before every raise");
            i--;
            continue;
        }
        PyObject *w = PyList_GetItem(woke, 0);
        if (!w)
            py_fail("the blocked thread's wake-up time");
        lat[i] = (double)(PyLong_AsUnsignedLongLong(w) - t0);
        Py_DECREF(pair);
    }
    out[0] = bench_median(lat, (size_t)k);
}

/* ---- the convoy effect ---- */

/* Runs one window of helpers.convoy; returns the CPU-bound thread's
   iterations per second and (when with_io) appends the latencies to lat. */
static double py_convoy_window(bench_ctx *ctx, int with_io, double *lat,
                               int *nlat, int cap)
{
    double window = (double)bench_window_ns(ctx, 200, 10) / 1e9;
    PyObject *r = py_call("convoy", "(ddi)", window, CONVOY_IDLE_NS / 1e9,
                          with_io);
    double per_s = PyFloat_AsDouble(PyTuple_GetItem(r, 0));
    PyObject *list = PyTuple_GetItem(r, 1);
    for (Py_ssize_t i = 0; i < PyList_Size(list) && *nlat < cap; i++)
        lat[(*nlat)++] = (double)PyLong_AsLongLong(PyList_GetItem(list, i));
    Py_DECREF(r);
    if (PyErr_Occurred())
        py_fail("convoy");
    return per_s;
}

/* Four windows, solo / with / with / solo, as the tether side. */
void py_convoy(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    enum { CAP = 4096 };
    double *lat = malloc(CAP * sizeof *lat);
    int n = 0;
    if (!lat)
        bench_fail("out of memory");
    double solo = py_convoy_window(ctx, 0, lat, &n, CAP);
    double with = py_convoy_window(ctx, 1, lat, &n, CAP);
    with += py_convoy_window(ctx, 1, lat, &n, CAP);
    solo += py_convoy_window(ctx, 0, lat, &n, CAP);
    bench_series *s = bench_series_get(ctx, "convoy.cpython");
    for (int i = 0; i < n; i++)
        bench_series_add(s, lat[i]);
    out[2] = with / solo;
    out[1] = bench_percentile(lat, (size_t)n, 0.9);
    out[0] = bench_median(lat, (size_t)n);
    free(lat);
}

/* ---- a ctypes callback called from C threads ---- */

typedef struct py_cb_run {
    int (*fn)(int, int);
    int keep_state; /* hold an outer Ensure, as a long-lived C thread would */
    uint64_t n;
    double ns;
} py_cb_run;

static void *py_cb_thread(void *p)
{
    py_cb_run *c = p;
    PyGILState_STATE outer = PyGILState_UNLOCKED;
    PyThreadState *ts = NULL;
    if (c->keep_state) {
        outer = PyGILState_Ensure();
        ts = PyEval_SaveThread();
    }
    int acc = c->fn(1, 2);
    uint64_t t0 = bench_now();
    for (uint64_t i = 0; i < c->n; i++)
        acc |= c->fn(1, 2);
    c->ns = (double)(bench_now() - t0) / (double)c->n;
    if (c->keep_state) {
        PyEval_RestoreThread(ts);
        PyGILState_Release(outer);
    }
    if (acc != 0)
        bench_fail("the ctypes callback returned %d", acc);
    return NULL;
}

static double py_cb_measure(bench_ctx *ctx, int keep_state)
{
    PyObject *addr = PyDict_GetItemString(helpers, "callback_addr");
    void *code = addr ? PyLong_AsVoidPtr(addr) : NULL;
    if (!code)
        py_fail("callback_addr");
    /* Without a kept state each call costs microseconds: fewer calls. */
    uint64_t n = bench_count(ctx, keep_state ? 200000 : 20000, 20);
    py_cb_run c = {NULL, keep_state, n, 0};
    *(void **)&c.fn = code; /* object to function pointer, as dlsym */
    PyThreadState *main_ts = PyEval_SaveThread();
    bench_join(bench_spawn(py_cb_thread, &c));
    PyEval_RestoreThread(main_ts);
    return c.ns;
}

void py_ctypes_callback(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    out[0] = py_cb_measure(ctx, 0);
}

void py_ctypes_callback_kept(bench_ctx *ctx, const void *arg, double out[])
{
    (void)arg;
    out[0] = py_cb_measure(ctx, 1);
}
