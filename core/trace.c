/*
 * trace.c - the GIL timeline recorder: who held the GIL, who waited for
 * it and why, written as Chrome/Perfetto trace-event JSON
 * (docs/tracing.md).
 *
 * Notes on the implementation
 * ===========================
 *
 * One trace records at a time, in the whole process, for one runtime
 * (tether_trace_start, or TETHER_TRACE=path at tether_runtime_create).
 * While none records, every hook is a relaxed load of `trace_on` and a
 * branch not taken (trace.h's TRACE macro), nothing more.
 *
 * Rings.  Each OS thread records into a ring of its own (t_ring), made at
 * its first event of a trace, so the hot path takes no lock: the owner
 * writes a fixed-size event and moves its count.  A ring starts small
 * and doubles up to TETHER_TRACE_EVENTS events (default 65536) as long as
 * all rings together stay under the budget (TRACE_BUDGET); once full it
 * wraps, overwriting its OLDEST events, and counts them as dropped (a
 * flight recorder: the end of a run, the part before a hang or finalize,
 * is what survives).  A thread that finds no room for a ring at all
 * counts its events in `lost`.
 *
 * Reading a ring while its owner may write.  The owner sets `busy`, then
 * looks at the ring's CLOSED bit, writes only if it is clear, and clears
 * `busy`.  The stopper sets CLOSED, then waits until `busy` is clear.
 * Both sides use sequentially consistent operations (a store then a load
 * on each side, Dekker's pattern), so either the owner sees CLOSED and
 * writes nothing, or the stopper sees `busy` and waits for the write to
 * end; the owner's release of `busy` publishes the events to the stopper.
 *
 * Who frees a ring.  The stopper reads a closed ring, frees its events
 * (an owner that lives on may never record again) and sets RELEASED;
 * its owner, when it exits (a thread-specific destructor) or when it
 * finds its ring belongs to an earlier trace, sets GONE.  Whoever sets the
 * second bit frees it, so a ring of a thread that exited stays readable
 * until the trace is written, and a thread never touches a freed ring:
 * only the owner clears t_ring, and the stopper frees only after GONE.
 *
 * Timestamps are CLOCK_MONOTONIC nanoseconds, written relative to the
 * trace's start in microseconds with three decimals (exact nanoseconds).
 * The JSON is built when the trace stops (tether_trace_stop, finalize of
 * the traced runtime, or exit), from the rings: a take and the next drop
 * of one thread make a "holds GIL" slice, the time a take spent in the
 * slow path a "waits for GIL" slice, a drop request a zero-length slice
 * with a flow arrow to the drop it caused.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "delay.h"
#include "error.h"
#include "handle.h"
#include "internal.h"
#include "lockrank.h"
#include "platform.h"
#include "trace.h"

_Atomic int trace_on;

/* ---- events ---------------------------------------------------------------- */

enum ev_kind {
    EV_TAKE = 1,  /* sub: slow; a: wait ns (slow path); b: gil */
    EV_REFUSED,   /* a: wait ns; b: gil */
    EV_DROP,      /* sub: enum trace_drop; x: requested; b: gil */
    EV_REQUEST,   /* b: gil; a: the holder's ident */
    EV_BEGIN,     /* the thread starts (tether_thread_start's) */
    EV_END,       /* x: result */
    EV_JOIN,      /* a: t0; b: the joined thread's ident; x: rc; s: name */
    EV_ENSURE,    /* b: interp handle */
    EV_RELEASE,   /* b: interp handle */
    EV_POSTED,    /* a: code; b: target ident */
    EV_DELIVERED, /* a: code */
    EV_PLUGIN,    /* begins; sub: unload; b: what (a string) */
    EV_PLUGIN_END, /* x: rc */
    EV_PHASE      /* a: t0; s: phase name (a string literal) */
};

/* 32 bytes: the cost of an event in memory (docs/tracing.md). */
struct ev {
    int64_t t;
    uint64_t a, b;
    uint16_t kind, sub;
    uint32_t x;
};

#define R_CLOSED 1u   /* the stopper reads it: write nothing */
#define R_RELEASED 2u /* the stopper is done with it */
#define R_GONE 4u     /* its owner forgot it */

struct ring {
    _Atomic unsigned state; /* R_*.  Synchronization: atomic */
    _Atomic int busy;       /* the owner writes.  Synchronization: atomic */
    uint64_t epoch;         /* the trace it records.  immutable */
    /* The events; n counts every event written, the ring keeps the last
       `cap`.  Synchronization: owner until CLOSED, then the stopper's. */
    struct ev *ev;
    uint32_t cap, max;
    uint64_t n;
    int64_t wait_since;     /* slow-path entry of a take.  owner */
    uint64_t tid, ident;    /* immutable */
    char name[64];          /* immutable */
    struct ring *next;      /* the trace's list.  Synchronization: g_lock */
};

#define RING_FIRST 1024u /* events of a new ring (fewer if the max is less) */
#define RING_MIN 64u
#define RING_MAX_DEFAULT 65536u
#define TRACE_BUDGET ((size_t)256 << 20) /* bytes of events, all rings */
#define STR_MAX 4096                   /* interned strings per trace */

/* The trace.  Synchronization: g_lock (rank RANK_TRACE, the last: nothing
   else is taken while it is held), except where a field says atomic. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    struct runtime *_Atomic rt; /* traced runtime, or NULL.  atomic */
    _Atomic uint64_t rt_handle; /* its handle.  atomic */
    _Atomic uint64_t epoch;     /* bumped by every start and stop.  atomic */
    _Atomic size_t bytes;       /* event memory of all rings.  atomic */
    _Atomic uint64_t lost;      /* events of threads without a ring.  atomic */
    _Atomic uint32_t ring_max;  /* events per ring.  atomic */
    int64_t t_start;
    int fd;                     /* where the JSON goes (ours to close) */
    char *path;                 /* for messages; NULL for a caller's fd */
    struct ring *rings;
    char **strs;                /* plugin names, join targets */
    size_t nstrs;
    int starting; /* a tether_trace_start between claim and commit */
} S = {.fd = -1};

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static __thread struct ring *t_ring __attribute__((tls_model("initial-exec")));
static __thread char t_name[64] __attribute__((tls_model("initial-exec")));

static void ring_free(struct ring *r)
{
    atomic_fetch_sub(&S.bytes, (size_t)r->cap * sizeof(struct ev));
    free(r->ev);
    free(r);
}

/* The owner lets go of its ring. */
static void ring_abandon(struct ring *r)
{
    if (atomic_fetch_or(&r->state, R_GONE) & R_RELEASED)
        ring_free(r);
}

static void thread_gone(void *p)
{
    if (p == t_ring)
        t_ring = NULL;
    ring_abandon(p);
}

static void child_after_fork(void)
{
    /* One thread is left, and the trace is the parent's: forget it (its
       memory is leaked, as the parent's other threads' is). */
    pthread_mutex_init(&g_lock, NULL);
    atomic_store(&trace_on, 0);
    atomic_store(&S.rt, NULL);
    atomic_fetch_add(&S.epoch, 1);
    if (S.fd >= 0)
        close(S.fd);
    S.fd = -1;
    S.path = NULL;
    S.starting = 0; /* a parent thread's start: it is not in this process */
    S.rings = NULL;
    S.strs = NULL;
    S.nstrs = 0;
    t_ring = NULL;
}

static void trace_stop_at_exit(void);

static void once_init(void)
{
    pthread_key_create(&g_key, thread_gone);
    pthread_atfork(NULL, NULL, child_after_fork);
    atexit(trace_stop_at_exit);
}

static uint64_t os_tid(void)
{
#ifdef SYS_gettid
    return (uint64_t)syscall(SYS_gettid);
#else
    return plat_thread_ident();
#endif
}

/* Copies `src` into dst[cap], cut if it must be at a character boundary
   (never in the middle of a UTF-8 sequence). */
static void copy_name(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--; /* src[n], the first byte left out, continues a character */
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void ring_name(struct ring *r, struct runtime *rt)
{
    struct osthread *os = osthread_peek();
    if (t_name[0])
        copy_name(r->name, sizeof r->name, t_name);
    else if (os && rt && os->serial == rt->creator_serial)
        snprintf(r->name, sizeof r->name, "main");
    else
        snprintf(r->name, sizeof r->name, "thread %" PRIu64, r->tid);
}

static struct ring *ring_new(uint64_t epoch, struct runtime *rt)
{
    uint32_t max = atomic_load_explicit(&S.ring_max, memory_order_relaxed);
    uint32_t cap = max < RING_FIRST ? max : RING_FIRST;
    size_t bytes = cap * sizeof(struct ev);
    if (atomic_fetch_add(&S.bytes, bytes) + bytes > TRACE_BUDGET) {
        atomic_fetch_sub(&S.bytes, bytes);
        return NULL;
    }
    struct ring *r = calloc(1, sizeof *r);
    struct ev *ev = malloc(bytes);
    if (!r || !ev) {
        free(r);
        free(ev);
        atomic_fetch_sub(&S.bytes, bytes);
        return NULL;
    }
    r->ev = ev;
    r->cap = cap;
    r->max = max;
    r->epoch = epoch;
    r->tid = os_tid();
    r->ident = plat_thread_ident();
    ring_name(r, rt);
    rank_lock(&g_lock, RANK_TRACE);
    int live = atomic_load(&S.epoch) == epoch && atomic_load(&S.rt) != NULL;
    if (live) {
        r->next = S.rings;
        S.rings = r;
    }
    rank_unlock(&g_lock, RANK_TRACE);
    if (!live) {
        ring_free(r);
        return NULL;
    }
    t_ring = r;
    pthread_setspecific(g_key, r);
    return r;
}

/* The calling thread's ring for the trace of `rt`, or NULL (another
   runtime's event, no trace, no memory). */
static struct ring *my_ring(struct runtime *rt)
{
    if (!rt || atomic_load_explicit(&S.rt, memory_order_acquire) != rt)
        return NULL;
    uint64_t epoch = atomic_load_explicit(&S.epoch, memory_order_acquire);
    struct ring *r = t_ring;
    if (r && r->epoch == epoch)
        return r;
    if (r) {
        t_ring = NULL;
        pthread_setspecific(g_key, NULL);
        ring_abandon(r);
    }
    r = ring_new(epoch, rt);
    if (!r)
        atomic_fetch_add(&S.lost, 1);
    return r;
}

/* Makes room for one more event: doubles a ring that has not wrapped yet
   while the budget allows, else the oldest event is overwritten. */
static void ring_room(struct ring *r)
{
    if (r->n != r->cap || r->cap >= r->max)
        return;
    uint32_t cap = r->cap > r->max / 2 ? r->max : 2 * r->cap;
    size_t more = (size_t)(cap - r->cap) * sizeof(struct ev);
    if (atomic_fetch_add(&S.bytes, more) + more > TRACE_BUDGET) {
        atomic_fetch_sub(&S.bytes, more);
        return;
    }
    struct ev *ev = realloc(r->ev, (size_t)cap * sizeof(struct ev));
    if (!ev) {
        atomic_fetch_sub(&S.bytes, more);
        return;
    }
    r->ev = ev;
    r->cap = cap;
}

static void emit_r(struct ring *r, int64_t t, uint16_t kind, uint16_t sub,
                   uint64_t a, uint64_t b, uint32_t x)
{
    atomic_store(&r->busy, 1);
    if (!(atomic_load(&r->state) & R_CLOSED)) {
        ring_room(r);
        struct ev *e = &r->ev[r->n % r->cap];
        e->t = t;
        e->a = a;
        e->b = b;
        e->kind = kind;
        e->sub = sub;
        e->x = x;
        r->n++;
    }
    atomic_store_explicit(&r->busy, 0, memory_order_release);
}

static void emit(struct runtime *rt, int64_t t, uint16_t kind, uint16_t sub,
                 uint64_t a, uint64_t b, uint32_t x)
{
    struct ring *r = my_ring(rt);
    if (r)
        emit_r(r, t, kind, sub, a, b, x);
}

/* A copy of `s` kept until the trace of ring `r` is written (an index into
   S.strs), or STR_MAX when there is no room or that trace has stopped (the
   table then belongs to the next trace, or to none). */
static uint64_t intern(const struct ring *r, const char *s)
{
    char *c = strdup(s ? s : "");
    uint64_t i = STR_MAX;
    rank_lock(&g_lock, RANK_TRACE);
    if (atomic_load(&S.epoch) != r->epoch) {
        free(c);
        c = NULL;
    }
    if (c && !S.strs)
        S.strs = calloc(STR_MAX, sizeof *S.strs);
    if (c && S.strs && S.nstrs < STR_MAX) {
        i = S.nstrs;
        S.strs[S.nstrs++] = c;
        c = NULL;
    }
    rank_unlock(&g_lock, RANK_TRACE);
    free(c);
    return i;
}

int64_t trace_now_if_on(void) { return plat_now_ns(); }

static struct runtime *rt_of(struct tstate *ts)
{
    return ts ? ts->interp->rt : NULL;
}

/* ---- the hooks --------------------------------------------------------------- */

void trace_gil_wait(struct gil *g, struct tstate *ts)
{
    (void)g;
    struct ring *r = my_ring(rt_of(ts));
    if (r)
        r->wait_since = plat_now_ns();
}

void trace_gil_take(struct gil *g, struct tstate *ts, int slow)
{
    int64_t now = plat_now_ns();
    struct ring *r = my_ring(rt_of(ts));
    if (!r)
        return;
    uint64_t waited = 0;
    if (slow && r->wait_since) {
        waited = (uint64_t)(now - r->wait_since);
        r->wait_since = 0;
    }
    emit_r(r, now, EV_TAKE, (uint16_t)(slow != 0), waited,
           (uint64_t)(uintptr_t)g, 0);
}

void trace_gil_refused(struct gil *g, struct tstate *ts)
{
    int64_t now = plat_now_ns();
    struct ring *r = my_ring(rt_of(ts));
    if (!r)
        return;
    uint64_t waited = r->wait_since ? (uint64_t)(now - r->wait_since) : 0;
    r->wait_since = 0;
    emit_r(r, now, EV_REFUSED, 0, waited, (uint64_t)(uintptr_t)g, 0);
}

void trace_gil_drop(struct gil *g, struct tstate *ts, int forced)
{
    int requested = (atomic_load_explicit(&ts->breaker, memory_order_relaxed) &
                     BREAKER_DROP) != 0;
    enum trace_drop why = TRACE_DROP_RELEASE;
    if (forced)
        why = requested ? TRACE_DROP_FORCED : TRACE_DROP_YIELD;
    else if (ts->blocking || ts->saved)
        why = TRACE_DROP_BLOCKING;
    else if (ts->wait_cond) /* written only by this thread (wait.c) */
        why = TRACE_DROP_WAIT;
    emit(rt_of(ts), plat_now_ns(), EV_DROP, (uint16_t)why, 0,
         (uint64_t)(uintptr_t)g, (uint32_t)(requested != 0));
}

void trace_gil_request(struct gil *g, struct tstate *h)
{
    emit(rt_of(h), plat_now_ns(), EV_REQUEST, 0, h->ident,
         (uint64_t)(uintptr_t)g, 0);
}

void trace_thread_named(const char *name)
{
    copy_name(t_name, sizeof t_name, name ? name : "");
}

void trace_thread_begin(struct runtime *rt)
{
    emit(rt, plat_now_ns(), EV_BEGIN, 0, 0, 0, 0);
}

void trace_thread_end(struct runtime *rt, int result)
{
    emit(rt, plat_now_ns(), EV_END, 0, 0, 0, (uint32_t)result);
}

void trace_join(struct tstate *ts, int64_t t0, const struct thread *t, int rc)
{
    struct runtime *rt = rt_of(ts);
    struct ring *r;
    if (!t0 || !(r = my_ring(rt)))
        return;
    uint64_t s = intern(r, t->name);
    emit(rt, plat_now_ns(), EV_JOIN, 0, (uint64_t)t0, s, (uint32_t)rc);
}

void trace_ensure(struct tstate *ts)
{
    emit(rt_of(ts), plat_now_ns(), EV_ENSURE, 0, 0, ts->interp->handle, 0);
}

void trace_release(struct tstate *ts)
{
    emit(rt_of(ts), plat_now_ns(), EV_RELEASE, 0, 0, ts->interp->handle, 0);
}

void trace_async_posted(struct runtime *rt, uint64_t ident, int64_t code)
{
    emit(rt, plat_now_ns(), EV_POSTED, 0, (uint64_t)code, ident, 0);
}

void trace_async_delivered(struct tstate *ts, int64_t code)
{
    emit(rt_of(ts), plat_now_ns(), EV_DELIVERED, 0, (uint64_t)code, 0, 0);
}

/* The traced runtime if its handle is `h`. */
static struct runtime *rt_by_handle(uint64_t h)
{
    struct runtime *rt = atomic_load_explicit(&S.rt, memory_order_acquire);
    return rt && atomic_load(&S.rt_handle) == h ? rt : NULL;
}

void trace_plugin_begin(uint64_t h, int unload, const char *what)
{
    struct runtime *rt = rt_by_handle(h);
    struct ring *r = my_ring(rt);
    if (!r)
        return;
    uint64_t s = intern(r, what);
    emit(rt, plat_now_ns(), EV_PLUGIN, (uint16_t)(unload != 0), 0, s, 0);
}

void trace_plugin_end(uint64_t h, int rc)
{
    emit(rt_by_handle(h), plat_now_ns(), EV_PLUGIN_END, 0, 0, 0, (uint32_t)rc);
}

void trace_finalize_phase(struct runtime *rt, int64_t t0, const char *name)
{
    if (t0)
        emit(rt, plat_now_ns(), EV_PHASE, 0, (uint64_t)t0,
             (uint64_t)(uintptr_t)name, 0);
}

/* ---- the JSON writer ------------------------------------------------------------ */

struct out {
    FILE *f;
    int64_t t0, t1; /* the trace's window */
    uint64_t pid;
    int first;
    char **strs; /* the trace's strings (taken from S by stop) */
    size_t nstrs;
};

static void put_ts(struct out *o, const char *key, int64_t t)
{
    if (t < o->t0)
        t = o->t0;
    if (t > o->t1)
        t = o->t1;
    int64_t rel = t - o->t0;
    fprintf(o->f, ",\"%s\":%" PRId64 ".%03" PRId64, key, rel / 1000, rel % 1000);
}

static void put_dur(struct out *o, int64_t a, int64_t b)
{
    a = a < o->t0 ? o->t0 : a > o->t1 ? o->t1 : a;
    b = b < o->t0 ? o->t0 : b > o->t1 ? o->t1 : b;
    int64_t d = b > a ? b - a : 0;
    fprintf(o->f, ",\"dur\":%" PRId64 ".%03" PRId64, d / 1000, d % 1000);
}

/* The length of the well-formed UTF-8 character at `s` (1 to 4), or 0
   when its bytes are not one (a stray continuation byte, an overlong
   form, a surrogate, a character cut short). */
static size_t utf8_char(const unsigned char *s)
{
    size_t n;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1fu;
    else if ((s[0] & 0xf0) == 0xe0)
        n = 3, cp = s[0] & 0x0fu;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07u;
    else
        return 0;
    for (size_t i = 1; i < n; i++) { /* stops at the NUL: not 10xxxxxx */
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

/* `s` as a JSON string: JSON is UTF-8, so a byte that is not part of a
   well-formed character (names come from the host) becomes U+FFFD. */
static void put_str(FILE *f, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', f);
    while (*s) {
        size_t n = utf8_char(s);
        if (n == 0) {
            fputs("\\ufffd", f);
            s++;
        } else if (n > 1) {
            fwrite(s, 1, n, f);
            s += n;
        } else {
            if (*s == '"' || *s == '\\')
                fprintf(f, "\\%c", *s);
            else if (*s < 0x20)
                fprintf(f, "\\u%04x", *s);
            else
                fputc(*s, f);
            s++;
        }
    }
    fputc('"', f);
}

/* Opens one event object: {"ph":..,"name":..,"cat":..,"pid":..,"tid":.. */
static void ev_open(struct out *o, const char *ph, const char *name,
                    const char *cat, uint64_t tid)
{
    fputs(o->first ? "\n" : ",\n", o->f);
    o->first = 0;
    fprintf(o->f, "{\"ph\":\"%s\",\"name\":", ph);
    put_str(o->f, name);
    if (cat)
        fprintf(o->f, ",\"cat\":\"%s\"", cat);
    fprintf(o->f, ",\"pid\":%" PRIu64 ",\"tid\":%" PRIu64, o->pid, tid);
}

static const char *const drop_names[] = {"release", "yield", "forced switch",
                                         "blocking call", "wait"};

static const char *str_at(const struct out *o, uint64_t i)
{
    return i < o->nstrs && o->strs[i] ? o->strs[i] : "?";
}

/* A GIL's number in the trace: the order in which the writer first meets
   it (with one GIL per interpreter there are several; past GILS_MAX the
   rest share the last number). */
#define GILS_MAX 1024
struct gils {
    uint64_t v[GILS_MAX];
    size_t n;
};
static unsigned gil_no(struct gils *gs, uint64_t g)
{
    for (size_t i = 0; i < gs->n; i++)
        if (gs->v[i] == g)
            return (unsigned)i;
    if (gs->n < GILS_MAX)
        gs->v[gs->n++] = g;
    return (unsigned)(gs->n - 1); /* full: the last number */
}

/* A drop request, for the flow arrows. */
struct req {
    uint64_t target, gil;
    int64_t t;
    uint64_t tid;
    int used;
};

static int req_cmp(const void *pa, const void *pb)
{
    const struct req *a = pa, *b = pb;
    if (a->target != b->target)
        return a->target < b->target ? -1 : 1;
    return a->t < b->t ? -1 : a->t > b->t;
}

static uint64_t ring_first(const struct ring *r)
{
    return r->n > r->cap ? r->n - r->cap : 0;
}

#define EV_AT(r, i) (&(r)->ev[(i) % (r)->cap])

/* The requests of every ring, sorted by target and time. */
static struct req *collect_requests(struct ring *rings, size_t *count)
{
    size_t n = 0;
    for (struct ring *r = rings; r; r = r->next)
        for (uint64_t i = ring_first(r); i < r->n; i++)
            n += EV_AT(r, i)->kind == EV_REQUEST;
    struct req *v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        *count = 0;
        return NULL;
    }
    n = 0;
    for (struct ring *r = rings; r; r = r->next)
        for (uint64_t i = ring_first(r); i < r->n; i++) {
            struct ev *e = EV_AT(r, i);
            if (e->kind == EV_REQUEST)
                v[n++] = (struct req){e->a, e->b, e->t, r->tid, 0};
        }
    qsort(v, n, sizeof *v, req_cmp);
    *count = n;
    return v;
}

/* The first unused request to `ident` made in [from, to], or NULL. */
static struct req *find_request(struct req *v, size_t n, uint64_t ident,
                                uint64_t gil, int64_t from, int64_t to)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid].target < ident || (v[mid].target == ident && v[mid].t < from))
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < n && v[i].target == ident && v[i].t <= to; i++)
        if (!v[i].used && v[i].gil == gil)
            return &v[i];
    return NULL;
}

struct hold {
    int open;
    int64_t t;
    uint64_t gil;
    int slow;
};

static void put_hold(struct out *o, struct ring *r, struct gils *gs,
                     const struct hold *h, int64_t end, const char *drop,
                     int requested)
{
    ev_open(o, "X", "holds GIL", "gil", r->tid);
    put_ts(o, "ts", h->t);
    put_dur(o, h->t, end);
    fprintf(o->f, ",\"args\":{\"gil\":%u,\"take\":\"%s\",\"drop\":\"%s\","
            "\"requested\":%s}}", gil_no(gs, h->gil),
            h->t == o->t0 && !h->slow ? "before the trace" : h->slow ? "slow" : "fast",
            drop, requested ? "true" : "false");
}

/* The flow arrow from a request to the drop at `t` that answered it. */
static void put_flow(struct out *o, struct ring *r, struct req *q, int64_t t,
                     int64_t hold_start, uint64_t *flow_id)
{
    uint64_t id = ++*flow_id;
    q->used = 1;
    ev_open(o, "s", "drop request", "gil.flow", q->tid);
    put_ts(o, "ts", q->t);
    fprintf(o->f, ",\"id\":%" PRIu64 "}", id);
    /* Bound to the enclosing "holds GIL" slice ("bp":"e"): one nanosecond
       before its end, so that it lies inside it, unless that is before the
       slice or the request (stamped in the same nanosecond as the drop). */
    ev_open(o, "f", "drop request", "gil.flow", r->tid);
    put_ts(o, "ts", t - 1 > hold_start && t - 1 >= q->t ? t - 1 : t);
    fprintf(o->f, ",\"bp\":\"e\",\"id\":%" PRIu64 "}", id);
}

static void put_slice(struct out *o, uint64_t tid, const char *name,
                      const char *cat, int64_t t0, int64_t t1)
{
    ev_open(o, "X", name, cat, tid);
    put_ts(o, "ts", t0);
    put_dur(o, t0, t1);
}

static void put_instant(struct out *o, uint64_t tid, const char *name,
                        const char *cat, int64_t t)
{
    ev_open(o, "i", name, cat, tid);
    put_ts(o, "ts", t);
    fputs(",\"s\":\"t\"", o->f);
}

static const char *ident_name(struct ring *rings, uint64_t ident, int64_t t,
                              uint64_t *tid)
{
    struct ring *any = NULL;
    for (struct ring *r = rings; r; r = r->next) {
        if (r->ident != ident || r->n == 0)
            continue;
        any = r;
        if (EV_AT(r, ring_first(r))->t <= t && EV_AT(r, r->n - 1)->t >= t)
            break;
    }
    *tid = any ? any->tid : 0;
    return any ? any->name : "?";
}

static void write_ring(struct out *o, struct ring *r, struct ring *rings,
                       struct gils *gs, struct req *reqs, size_t nreq,
                       uint64_t *flow_id)
{
    struct hold h = {0, 0, 0, 0};
    int wrapped = r->n > r->cap, seen = 0; /* a take or drop came before */
    struct ev *plug[8]; /* plugin loads and unloads begun (nested) */
    size_t nplug = 0;
    for (uint64_t i = ring_first(r); i < r->n; i++) {
        struct ev *e = EV_AT(r, i);
        if (e->t > o->t1)
            break;
        switch (e->kind) {
        case EV_TAKE:
            if (e->a) {
                put_slice(o, r->tid, "waits for GIL", "gil", e->t - (int64_t)e->a, e->t);
                fprintf(o->f, ",\"args\":{\"gil\":%u,\"ended\":\"take\"}}",
                        gil_no(gs, e->b));
            }
            h = (struct hold){1, e->t, e->b, e->sub};
            seen = 1;
            break;
        case EV_REFUSED:
            put_slice(o, r->tid, "waits for GIL", "gil", e->t - (int64_t)e->a, e->t);
            fprintf(o->f, ",\"args\":{\"gil\":%u,\"ended\":\"finalize\"}}",
                    gil_no(gs, e->b));
            put_instant(o, r->tid, "GIL refused: finalizing", "gil", e->t);
            fputs("}", o->f);
            break;
        case EV_DROP: {
            if (!h.open && (wrapped || seen))
                break; /* its take was overwritten */
            seen = 1;
            if (!h.open) /* held since before the trace began */
                h = (struct hold){1, o->t0, e->b, 0};
            struct req *q = e->x ? find_request(reqs, nreq, r->ident, e->b,
                                                h.t, e->t) : NULL;
            put_hold(o, r, gs, &h, e->t, drop_names[e->sub % 5], e->x != 0);
            if (q)
                put_flow(o, r, q, e->t, h.t, flow_id);
            h.open = 0;
            break;
        }
        case EV_REQUEST: {
            uint64_t to_tid;
            const char *to = ident_name(rings, e->a, e->t, &to_tid);
            put_slice(o, r->tid, "drop request", "gil", e->t, e->t);
            fprintf(o->f, ",\"args\":{\"gil\":%u,\"to\":", gil_no(gs, e->b));
            put_str(o->f, to);
            fprintf(o->f, ",\"to_tid\":%" PRIu64 "}}", to_tid);
            break;
        }
        case EV_BEGIN:
            put_instant(o, r->tid, "thread start", "thread", e->t);
            fputs("}", o->f);
            break;
        case EV_END:
            put_instant(o, r->tid, "thread exit", "thread", e->t);
            fprintf(o->f, ",\"args\":{\"result\":%d}}", (int)e->x);
            break;
        case EV_JOIN: {
            char name[96];
            snprintf(name, sizeof name, "join %s", str_at(o, e->b));
            put_slice(o, r->tid, name, "thread", (int64_t)e->a, e->t);
            fprintf(o->f, ",\"args\":{\"status\":\"%s\"}}",
                    tether_status_name((int)e->x));
            break;
        }
        case EV_ENSURE:
        case EV_RELEASE:
            put_instant(o, r->tid, e->kind == EV_ENSURE ? "ensure" : "release",
                        "gilstate", e->t);
            fprintf(o->f, ",\"args\":{\"interp\":\"0x%016" PRIx64 "\"}}", e->b);
            break;
        case EV_POSTED: {
            uint64_t to_tid;
            const char *to = ident_name(rings, e->b, e->t, &to_tid);
            put_instant(o, r->tid, "async exception posted", "async", e->t);
            fprintf(o->f, ",\"args\":{\"code\":%" PRId64 ",\"to\":", (int64_t)e->a);
            put_str(o->f, to);
            fprintf(o->f, ",\"to_tid\":%" PRIu64 "}}", to_tid);
            break;
        }
        case EV_DELIVERED:
            put_instant(o, r->tid, "async exception delivered", "async", e->t);
            fprintf(o->f, ",\"args\":{\"code\":%" PRId64 "}}", (int64_t)e->a);
            break;
        case EV_PLUGIN:
            if (nplug < 8)
                plug[nplug] = e;
            nplug++;
            break;
        case EV_PLUGIN_END: {
            if (nplug == 0)
                break; /* its beginning was overwritten */
            struct ev *b = --nplug < 8 ? plug[nplug] : NULL;
            if (!b)
                break;
            char name[160];
            snprintf(name, sizeof name, "plugin %s %s", b->sub ? "unload" : "load",
                     str_at(o, b->b));
            put_slice(o, r->tid, name, "plugin", b->t, e->t);
            fprintf(o->f, ",\"args\":{\"status\":\"%s\"}}",
                    tether_status_name((int)e->x));
            break;
        }
        case EV_PHASE: {
            char name[96];
            snprintf(name, sizeof name, "finalize: %s",
                     (const char *)(uintptr_t)e->b);
            put_slice(o, r->tid, name, "finalize", (int64_t)e->a, e->t);
            fputs("}", o->f);
            break;
        }
        default:
            break;
        }
    }
    if (h.open) /* still held when the trace stopped */
        put_hold(o, r, gs, &h, o->t1, "trace stopped", 0);
}

static void write_meta(struct out *o, struct ring *rings)
{
    ev_open(o, "M", "process_name", NULL, 0);
    fprintf(o->f, ",\"args\":{\"name\":\"tether runtime 0x%016" PRIx64 "\"}}",
            atomic_load(&S.rt_handle));
    unsigned idx = 0;
    for (struct ring *r = rings; r; r = r->next) {
        ev_open(o, "M", "thread_name", NULL, r->tid);
        fputs(",\"args\":{\"name\":", o->f);
        put_str(o->f, r->name);
        fputs("}}", o->f);
        ev_open(o, "M", "thread_sort_index", NULL, r->tid);
        fprintf(o->f, ",\"args\":{\"sort_index\":%u}}", idx++);
    }
}

static void write_other(struct out *o, struct ring *rings)
{
    uint64_t events = 0, dropped = 0;
    for (struct ring *r = rings; r; r = r->next) {
        events += r->n;
        dropped += r->n > r->cap ? r->n - r->cap : 0;
    }
    uint64_t lost = atomic_load(&S.lost);
    fprintf(o->f, "\n],\n\"displayTimeUnit\":\"ns\",\n\"otherData\":{"
            "\"tether_version\":\"%s\",\"clock\":\"CLOCK_MONOTONIC\","
            "\"start_ns\":%" PRId64 ",\"stop_ns\":%" PRId64 ","
            "\"events\":%" PRIu64 ",\"dropped_events\":%" PRIu64 ","
            "\"bytes_per_event\":%zu,\"ring_events_max\":%u,\"threads\":[",
            tether_version_string(), o->t0, o->t1, events, dropped + lost,
            sizeof(struct ev), atomic_load(&S.ring_max));
    int first = 1;
    for (struct ring *r = rings; r; r = r->next) {
        fprintf(o->f, "%s\n {\"tid\":%" PRIu64 ",\"ident\":%" PRIu64 ",\"name\":",
                first ? "" : ",", r->tid, r->ident);
        put_str(o->f, r->name);
        fprintf(o->f, ",\"events\":%" PRIu64 ",\"dropped\":%" PRIu64 "}", r->n,
                r->n > r->cap ? r->n - r->cap : 0);
        first = 0;
    }
    fprintf(o->f, "],\"events_without_a_ring\":%" PRIu64 "}}\n", lost);
}

/* Reverses the list (rings were pushed at the front), so tracks appear in
   the order threads first recorded. */
static struct ring *reverse(struct ring *r)
{
    struct ring *out = NULL;
    while (r) {
        struct ring *next = r->next;
        r->next = out;
        out = r;
        r = next;
    }
    return out;
}

/* Writes the JSON to fd; returns 0 or an errno value. */
static int write_json_to(int fd, struct ring *rings, int64_t t0, int64_t t1,
                         char **strs, size_t nstrs)
{
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int err = errno;
        close(fd);
        return err;
    }
    struct out o = {f, t0, t1, (uint64_t)getpid(), 1, strs, nstrs};
    struct gils *gs = calloc(1, sizeof *gs); /* 8 KiB: not on a small stack */
    if (!gs) {
        fclose(f);
        return ENOMEM;
    }
    size_t nreq;
    struct req *reqs = collect_requests(rings, &nreq);
    uint64_t flow_id = 0;
    fputs("{\"traceEvents\":[", f);
    write_meta(&o, rings);
    for (struct ring *r = rings; r; r = r->next)
        write_ring(&o, r, rings, gs, reqs, nreq, &flow_id);
    write_other(&o, rings);
    free(reqs);
    free(gs);
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    if (fclose(f) != 0 && !err)
        err = errno ? errno : EIO;
    return err;
}

/* The same with SIGPIPE blocked in the calling thread: a pipe or socket
   whose reader is gone makes the write fail with EPIPE (a status for the
   caller) instead of killing the host.  A SIGPIPE the write raised is
   taken off again; one that was pending before is left alone. */
static int write_json(int fd, struct ring *rings, int64_t t0, int64_t t1,
                      char **strs, size_t nstrs)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    int had = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    int masked = pthread_sigmask(SIG_BLOCK, &pipe_set, &old) == 0;
    int err = write_json_to(fd, rings, t0, t1, strs, nstrs);
    if (masked) {
        if (!had && sigpending(&pending) == 0 &&
            sigismember(&pending, SIGPIPE)) {
            const struct timespec zero = {0, 0};
            int saved = errno;
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
                ;
            errno = saved;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    return err;
}

/* ---- start and stop ------------------------------------------------------------- */

#define RING_MAX_MAX (1ul << 24)

/* TETHER_TRACE_EVENTS: brought into [RING_MIN, RING_MAX_MAX]; not a
   number: the default, with a message. */
static uint32_t ring_max_from_env(void)
{
    const char *s = getenv("TETHER_TRACE_EVENTS");
    if (!s || !*s)
        return RING_MAX_DEFAULT;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || *s == '-' || *s == '+' || (s[0] < '0' || s[0] > '9')) {
        fprintf(stderr, "tether: TETHER_TRACE_EVENTS='%s' is not a number of "
                "events; using %u\n", s, RING_MAX_DEFAULT);
        return RING_MAX_DEFAULT;
    }
    if (errno == ERANGE || v > RING_MAX_MAX)
        return (uint32_t)RING_MAX_MAX;
    return v < RING_MIN ? RING_MIN : (uint32_t)v;
}

/* A start goes in two steps, so that the file is opened without g_lock
   held (opening a FIFO may block) and yet only one start is ever under
   way: claim() reserves the trace (S.starting), commit() makes it record
   or gives the claim back.  A start that finds a trace recording, or
   another start under way, gets TETHER_ESTATE at once and has opened
   nothing, so it never removes or truncates a file another start uses.
   Returns TETHER_OK or TETHER_ESTATE (with a sentence when fn is set). */
static int claim(const char *fn)
{
    pthread_once(&g_once, once_init);
    rank_lock(&g_lock, RANK_TRACE);
    int busy = atomic_load(&S.rt) != NULL, starting = S.starting;
    uint64_t other = atomic_load(&S.rt_handle);
    if (!busy && !starting)
        S.starting = 1;
    rank_unlock(&g_lock, RANK_TRACE);
    if (busy)
        return fn ? err_set(TETHER_ESTATE, fn, "a trace already records "
                            "runtime 0x%016" PRIx64 "; stop it first (one "
                            "trace at a time per process)", other)
                  : TETHER_ESTATE;
    if (starting)
        return fn ? err_set(TETHER_ESTATE, fn, "another tether_trace_start "
                            "is under way (one trace at a time per process)")
                  : TETHER_ESTATE;
    return TETHER_OK;
}

static void unclaim(void)
{
    rank_lock(&g_lock, RANK_TRACE);
    S.starting = 0;
    rank_unlock(&g_lock, RANK_TRACE);
}

/* Ends a claim: starts the trace of `rt` into `fd` (ours: closed on
   failure).  Checked under g_lock: `rt` is not finalizing.  finalize sets
   the flag before trace_runtime_finalized takes g_lock, so either this
   sees it, or that finds the trace and writes it.  Returns TETHER_OK,
   TETHER_EFINALIZING, TETHER_ENOMEM or TETHER_EINVAL (truncation failed). */
static int commit(struct runtime *rt, int fd, const char *path,
                  const char *fn)
{
    char *p = path ? strdup(path) : NULL;
    if (path && !p) {
        unclaim();
        close(fd);
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    }
    rank_lock(&g_lock, RANK_TRACE);
    S.starting = 0;
    if (atomic_load(&rt->finalizing)) {
        rank_unlock(&g_lock, RANK_TRACE);
        close(fd);
        free(p);
        return err_set(TETHER_EFINALIZING, fn, "the runtime is finalizing");
    }
    struct stat st; /* a device or FIFO has nothing to truncate */
    if (path && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        ftruncate(fd, 0) != 0) {
        int err = errno;
        rank_unlock(&g_lock, RANK_TRACE);
        close(fd);
        free(p);
        return err_set(TETHER_EINVAL, fn, "cannot truncate '%s': %s", path,
                       strerror(err));
    }
    S.fd = fd;
    S.path = p;
    atomic_store(&S.rt_handle, rt->handle);
    atomic_store(&S.ring_max, ring_max_from_env());
    atomic_store(&S.lost, 0);
    S.t_start = plat_now_ns();
    atomic_fetch_add(&S.epoch, 1);
    atomic_store_explicit(&S.rt, rt, memory_order_release);
    atomic_store(&trace_on, 1);
    rank_unlock(&g_lock, RANK_TRACE);
    return TETHER_OK;
}

/* Ends the trace of `rt` (any runtime when NULL) and writes it.  Returns
   TETHER_OK, TETHER_ESTATE (no trace of it records), or the status of a
   failed write. */
static int stop(struct runtime *rt, const char *fn)
{
    pthread_once(&g_once, once_init);
    rank_lock(&g_lock, RANK_TRACE);
    struct runtime *cur = atomic_load(&S.rt);
    if (!cur || (rt && cur != rt)) {
        rank_unlock(&g_lock, RANK_TRACE);
        return fn ? err_set(TETHER_ESTATE, fn, "%s", cur ? "the trace records "
                            "another runtime" : "no trace records")
                  : TETHER_ESTATE;
    }
    int64_t t1 = plat_now_ns();
    atomic_store(&trace_on, 0);
    atomic_store(&S.rt, NULL);
    atomic_fetch_add(&S.epoch, 1);
    struct ring *rings = S.rings;
    S.rings = NULL;
    int fd = S.fd;
    S.fd = -1;
    char *path = S.path;
    S.path = NULL;
    int64_t t0 = S.t_start;
    /* The strings go with the rings, in the same step as the epoch: one
       interned from here on is refused (intern checks the epoch), so the
       table a next trace starts is its own. */
    char **strs = S.strs;
    size_t nstrs = S.nstrs;
    S.strs = NULL;
    S.nstrs = 0;
    rank_unlock(&g_lock, RANK_TRACE);
    TETHER_DELAY_POINT("trace.stop.closing");

    for (struct ring *r = rings; r; r = r->next)
        atomic_fetch_or(&r->state, R_CLOSED);
    for (struct ring *r = rings; r; r = r->next)
        while (atomic_load(&r->busy))
            sched_yield();
    rings = reverse(rings);
    int err = write_json(fd, rings, t0, t1, strs, nstrs);
    for (size_t i = 0; i < nstrs; i++)
        free(strs[i]);
    free(strs);
    while (rings) {
        struct ring *next = rings->next;
        if (rings == t_ring) { /* our own: nobody else refers to it */
            t_ring = NULL;
            pthread_setspecific(g_key, NULL);
            ring_free(rings);
        } else {
            /* Its owner may live on and never record again: the events go
               now (after CLOSED it never touches them), the head stays
               until the owner lets go of it. */
            atomic_fetch_sub(&S.bytes, (size_t)rings->cap * sizeof(struct ev));
            free(rings->ev);
            rings->ev = NULL;
            rings->cap = 0;
            if (atomic_fetch_or(&rings->state, R_RELEASED) & R_GONE)
                ring_free(rings);
        }
        rings = next;
    }
    int rc = TETHER_OK;
    if (err && fn)
        rc = err_set(err == ENOSPC || err == EDQUOT ? TETHER_EAGAIN
                     : err == ENOMEM ? TETHER_ENOMEM : TETHER_EINVAL,
                     fn, "writing the trace to %s failed: %s; the trace is lost",
                     path ? path : "the descriptor", strerror(err));
    else if (err)
        fprintf(stderr, "tether: writing the trace to %s failed: %s\n",
                path ? path : "the descriptor", strerror(err));
    free(path);
    return rc;
}

static void trace_stop_at_exit(void)
{
    stop(NULL, NULL);
}

/* Opens `path` for the trace without truncating it yet (commit
   does, once the trace is ours); *created tells whether it is new. */
static int open_trace_file(const char *path, int *created)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    *created = fd >= 0;
    if (fd < 0 && errno == EEXIST)
        fd = open(path, O_WRONLY | O_CLOEXEC);
    return fd;
}

/* The status of a failed open or dup: no descriptor left is EAGAIN (as
   tether.h says), no memory ENOMEM, the rest EINVAL (bad path or fd). */
static int open_status(int err)
{
    return err == EMFILE || err == ENFILE ? TETHER_EAGAIN
           : err == ENOMEM                ? TETHER_ENOMEM
                                          : TETHER_EINVAL;
}

/* Whether the descriptor `fd` was opened for writing. */
static int writable(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY)
        return 0;
#ifdef O_PATH
    if (fl & O_PATH)
        return 0;
#endif
    return 1;
}

int tether_trace_start(tether_runtime h, const char *path, int fd,
                       uint32_t flags)
{
    static const char fn[] = "tether_trace_start";
    if (flags)
        return err_misuse(TETHER_EINVAL, fn, "unknown flags 0x%x (none are "
                          "defined; pass 0)", flags);
    if ((path != NULL) == (fd >= 0))
        return err_misuse(TETHER_EINVAL, fn, "%s", path
                          ? "give a path or a descriptor, not both (fd must "
                            "be -1 with a path)"
                          : "give a path, or a descriptor >= 0");
    if (path && !*path)
        return err_misuse(TETHER_EINVAL, fn, "the path is empty");
    struct runtime *rt = runtime_get(h, fn);
    if (!rt)
        return TETHER_EBADHANDLE;
    int rc = TETHER_OK;
    int mine = -1, created = 0, err = 0;
    if (atomic_load(&rt->finalizing)) {
        handle_put(h);
        return err_set(TETHER_EFINALIZING, fn, "the runtime is finalizing");
    }
    if ((rc = claim(fn)) != TETHER_OK) {
        handle_put(h);
        return rc;
    }
    TETHER_DELAY_POINT("trace.start.claimed");
    if (path && (mine = open_trace_file(path, &created)) < 0) {
        err = errno;
        rc = err_set(open_status(err), fn, "cannot open '%s' for writing: %s",
                     path, strerror(err));
    } else if (!path && (mine = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        err = errno;
        rc = err_set(open_status(err), fn, "cannot use descriptor %d: %s", fd,
                     strerror(err));
    } else if (!path && !writable(mine)) {
        close(mine);
        rc = err_set(TETHER_EINVAL, fn, "descriptor %d is not open for "
                     "writing", fd);
    }
    if (rc != TETHER_OK) {
        unclaim();
    } else {
        rc = commit(rt, mine, path, fn);
        if (rc != TETHER_OK && created) /* refused: leave nothing behind */
            unlink(path);
    }
    handle_put(h);
    return rc;
}

int tether_trace_stop(tether_runtime h)
{
    static const char fn[] = "tether_trace_stop";
    struct runtime *rt = runtime_get(h, fn);
    if (!rt)
        return TETHER_EBADHANDLE;
    int rc = stop(rt, fn);
    handle_put(h);
    return rc;
}

/* "%p" in TETHER_TRACE becomes the process id. */
static int expand_path(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *s = in; *s; s++) {
        char pid[24];
        const char *add = NULL;
        char one[2] = {*s, 0};
        if (s[0] == '%' && s[1] == 'p') {
            snprintf(pid, sizeof pid, "%ld", (long)getpid());
            add = pid;
            s++;
        } else {
            add = one;
        }
        size_t l = strlen(add);
        if (o + l >= cap)
            return -1;
        memcpy(out + o, add, l);
        o += l;
    }
    out[o] = 0;
    return 0;
}

void trace_runtime_created(struct runtime *rt)
{
    const char *env = getenv("TETHER_TRACE");
    if (!env || !*env || atomic_load(&S.rt) || claim(NULL) != TETHER_OK)
        return;
    char path[4096];
    if (expand_path(env, path, sizeof path) != 0) {
        unclaim();
        fprintf(stderr, "tether: TETHER_TRACE: the path is too long\n");
        return;
    }
    int created;
    int fd = open_trace_file(path, &created);
    (void)created; /* TETHER_TRACE's file is left even if refused below */
    if (fd < 0) {
        int err = errno;
        unclaim();
        fprintf(stderr, "tether: TETHER_TRACE: cannot open '%s' for writing: "
                "%s; no trace is recorded\n", path, strerror(err));
        return;
    }
    if (commit(rt, fd, path, "TETHER_TRACE") != TETHER_OK)
        fprintf(stderr, "tether: TETHER_TRACE: %s\n", tether_last_error());
}

void trace_runtime_finalized(struct runtime *rt)
{
    /* Checked under g_lock, not by a bare load of S.rt: a start that
       committed just before must be found (see commit). */
    rank_lock(&g_lock, RANK_TRACE);
    int mine = atomic_load(&S.rt) == rt;
    rank_unlock(&g_lock, RANK_TRACE);
    if (mine)
        stop(rt, NULL);
}
