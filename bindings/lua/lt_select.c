/*
 * lt_select.c - tether.select: wait for the first of several sources.
 *
 * A source is a queue (an item to get), a channel (a message to receive),
 * an event (set), a tether.thread (finished) or a future (done).  Each
 * source tells its watchers when it may have become ready: the queues,
 * events, threads and futures of this state keep lists of lt_watch records
 * under the GIL and set each watcher's event at a put, a set, a thread's
 * end or a future's completion; a channel, which other interpreters use
 * without this state's GIL, is watched through the core
 * (tether_channel_watch).  select links one record per source, all with
 * the calling thread's select event, and then loops: clear the event, try
 * every source without blocking (from a starting point that changes from
 * call to call, a mix of a count of selects, so that a source that is
 * always ready does not starve the others), and wait on the event only if none was ready.  Same-state
 * sources change only under the GIL, which select holds from the clear to
 * the wait; a channel that gets a message after the clear sets the event
 * again.  So no wake-up is lost, and nothing is polled: the thread sleeps
 * in one core event wait, which an asynchronous exception (a cancel)
 * interrupts like any other.
 *
 * File descriptors ({fd = n | file, mode = "r" | "w" | "rw"}, or a file
 * handle, for reading) are sources too, by tether.wait_fd's rules: ready
 * when poll says so, nothing consumed.  A select with descriptors blocks
 * in lt_block_call's poll instead of an event wait: on the descriptors
 * and an eventfd of its own, which its watchers write instead of setting
 * the event (lt_watch.efd); a raise or cancel wakes the poll through the
 * thread's wake-up descriptor (lt_block.c).  Channels are watched by the
 * core with an event only, so a channel and a descriptor cannot be
 * waited for in one select (a clear error).
 *
 * The records live in a userdata marked to-be-closed, whose __close
 * unlinks them, so that every way out of select (a result, a timeout, an
 * error, a cancel) leaves no record behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>

#include "lt_block.h"

#define LT_SELECT_MT "tether.selecting"

/* The most sources of one select: its records are one userdata. */
#define LT_SELECT_MAX 4096

/* The calling thread's event for select, cleared (*own: made for this
   select alone, for a thread the module does not know; freed after). */
static int select_event(lt_tstate *ts, tether_event *ev, tether_event *own)
{
    *own = 0;
    if (ts && ts->select_ev) {
        *ev = ts->select_ev;
        return tether_event_clear(*ev);
    }
    int rc = tether_event_new(ev);
    if (rc == TETHER_OK && ts)
        ts->select_ev = *ev;
    else if (rc == TETHER_OK)
        *own = *ev;
    return rc;
}

enum { K_SYNC, K_THREAD, K_FUTURE, K_CHANNEL, K_FD };

typedef struct lt_source {
    int kind;
    int fd;             /* K_FD */
    short events;       /* K_FD: POLLIN, POLLOUT or both */
    lt_watchlist *list; /* K_SYNC, K_THREAD, K_FUTURE */
    tether_channel ch;  /* K_CHANNEL (the userdata's reference) */
    lt_watch w;
    int linked;
} lt_source;

/* One select under way.  Synchronization: gil (the selecting thread). */
typedef struct lt_selecting {
    int n;
    int linked;          /* the records are linked */
    int nfds;            /* K_FD sources */
    int efd;             /* with descriptors: the watchers' eventfd, else -1 */
    tether_event ev, own;
    struct pollfd *pfd;  /* room for n + 2 entries, in the same userdata */
    lt_source src[];
} lt_selecting;

static void unlink_all(lua_State *L, lt_selecting *sel)
{
    if (sel->linked) { /* drop the anchor (a raw set of nil cannot raise) */
        lua_pushnil(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, sel);
    }
    for (int i = 0; i < sel->n; i++) {
        lt_source *s = &sel->src[i];
        if (!s->linked)
            continue;
        s->linked = 0;
        if (s->kind == K_FD)
            continue;
        if (s->kind == K_CHANNEL)
            (void)tether_channel_unwatch(s->ch, sel->ev);
        else
            lt_watch_remove(s->list, &s->w);
    }
    sel->linked = 0;
    if (sel->own)
        (void)tether_event_free(sel->own);
    sel->own = 0;
    if (sel->efd >= 0)
        (void)close(sel->efd);
    sel->efd = -1;
}

static int selecting_close(lua_State *L)
{
    unlink_all(L, lua_touserdata(L, 1));
    return 0;
}

/* Links a record of the select at `self` on every source.  While they
   are linked the userdata is anchored in the registry (keyed by its
   address): a thread that finalize makes leave Lua in the middle of a
   select (TETHER_EFINALIZING, no GIL) cannot unlink them, and its
   coroutine may then be collected; the records must stay valid for the
   sources that still walk their lists (an ev:set() after the runtime was
   finalized, in a host that goes on running Lua; issue 20). */
static void link_all(lua_State *L, lt_selecting *sel, lt_tstate *ts, int self)
{
    int rc;
    lua_pushvalue(L, self); /* first: it may raise, nothing is linked yet */
    lua_rawsetp(L, LUA_REGISTRYINDEX, sel);
    sel->linked = 1; /* from here on unlink_all (__close) undoes it all */
    if (sel->nfds) {
        sel->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (sel->efd < 0)
            luaL_error(L, "select: eventfd: %s", strerror(errno));
    } else {
        rc = select_event(ts, &sel->ev, &sel->own);
        if (rc != TETHER_OK)
            lt_status_error(L, "select", rc);
    }
    for (int i = 0; i < sel->n; i++) {
        lt_source *s = &sel->src[i];
        if (s->kind == K_FD)
            continue;
        s->w.ev = sel->ev;
        s->w.efd = sel->efd;
        if (s->kind == K_CHANNEL) {
            rc = tether_channel_watch(s->ch, sel->ev);
            if (rc != TETHER_OK)
                lt_status_error(L, "select", rc);
        } else {
            lt_watch_add(s->list, &s->w);
        }
        s->linked = 1;
    }
}

/* Tries source i (its value at `idx`): pushes its values and returns their
   number, or returns -1.  With `peek`, only says whether it is ready. */
static int try_source(lua_State *L, lt_tstate *ts, lt_source *s, int idx, int peek)
{
    switch (s->kind) {
    case K_SYNC:
        return lt_sync_take(L, idx);
    case K_THREAD:
        return lt_thread_take(L, idx);
    case K_FUTURE:
        if (peek)
            return lt_future_done(L, idx) ? 0 : -1;
        return lt_future_take(L, idx);
    case K_FD: {
        short rev = 0;
        int r = lt_block_poll(s->fd, s->events, 0, &rev);
        if (r == -1)
            return luaL_error(L, "select: descriptor %d: %s", s->fd, strerror(errno));
        if (r != 1)
            return -1; /* not ready (or woken: the wait below raises it) */
        short any = POLLHUP | POLLERR;
        int rd = (s->events & POLLIN) && (rev & (POLLIN | POLLPRI | any));
        int wr = (s->events & POLLOUT) && (rev & (POLLOUT | any));
        lua_pushstring(L, rd && wr ? "rw" : rd ? "r" : "w");
        return 1;
    }
    default:
        break;
    }
    lt_blob *b = lt_blob_push(L);
    b->release = tether_channel_msg_free;
    void *data = NULL;
    int rc = tether_channel_recv(s->ch, &data, &b->len, 0);
    if (rc == TETHER_EFINALIZING) /* no GIL: the blob is not ours to touch */
        lt_leave(ts);
    if (rc == TETHER_ECLOSED) {
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    b->data = data;
    b->message = 1;
    if (!lt_wait_ok(L, ts, rc, "select")) {
        lua_pop(L, 1);
        return -1;
    }
    if (lt_decode(L, b->data, b->len) != 1)
        return luaL_error(L, "tether: corrupt message");
    lt_blob_clear(b);
    lua_remove(L, -2);
    return 1;
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The poll of a select with descriptors, run with the GIL released. */
struct fdwait {
    lt_selecting *sel;
    int64_t ns;
    int err;
};

static int fdwait_fn(void *arg)
{
    struct fdwait *w = arg;
    lt_selecting *sel = w->sel;
    int r = lt_block_poll_many(sel->pfd, sel->nfds + 1, w->ns);
    if (r == -1)
        w->err = errno;
    return r;
}

/* Waits for a descriptor, a watcher's write or the timeout; returns the
   tether status of the blocking call (lt_wait_ok's to judge). */
static int wait_fds(lua_State *L, lt_selecting *sel, int64_t left)
{
    int k = 0;
    for (int i = 0; i < sel->n; i++) {
        lt_source *s = &sel->src[i];
        if (s->kind == K_FD)
            sel->pfd[k++] = (struct pollfd){s->fd, s->events, 0};
    }
    sel->pfd[k] = (struct pollfd){sel->efd, POLLIN, 0};
    struct fdwait w = {sel, left, 0};
    int r = 0;
    int rc = lt_block_call(L, fdwait_fn, &w, &r);
    if (rc == TETHER_OK && r == -1)
        luaL_error(L, "select: poll: %s", strerror(w.err));
    return rc;
}

/* Counts the selects of the process, for where each starts trying
   (fairness).  Synchronization: atomic. */
static atomic_uint rotation;

/* Where the select numbered `count` starts among n sources: the count
   mixed (splitmix64's finalizer), not the count itself, whose residues
   alias with any other select made between two of a loop's (one wait per
   item turned a loop over 2 sources into one that always started at the
   same source, and the other was never chosen).  Every start stays
   equally likely, so a source always ready does not starve the others. */
static unsigned start_of(unsigned count, int n)
{
    uint64_t z = (uint64_t)count + 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    return (unsigned)(z % (uint64_t)n);
}

/* Waits for the first ready of the n sources at first..first+n-1 (their
   records in sel, at `sel_idx`, marked to-be-closed).  Returns the number
   of values pushed: the source and its values, or nil, "timeout". */
static int run_select(lua_State *L, lt_selecting *sel, int first, int64_t ns,
                      int peek)
{
    lt_tstate *ts = lt_current_tstate();
    int n = sel->n;
    unsigned start = start_of(atomic_fetch_add(&rotation, 1), n);
    int64_t t0 = now_ns();
    for (;;) {
        if (sel->linked && sel->efd >= 0) {
            uint64_t v;
            if (read(sel->efd, &v, sizeof v) < 0)
                (void)0; /* nothing written since */
        } else if (sel->linked) {
            (void)tether_event_clear(sel->ev);
        }
        for (int k = 0; k < n; k++) {
            int i = (int)((start + (unsigned)k) % (unsigned)n);
            int r = try_source(L, ts, &sel->src[i], first + i, peek);
            if (r >= 0) {
                unlink_all(L, sel);
                lua_pushvalue(L, first + i);
                lua_insert(L, -(r + 1));
                return r + 1;
            }
        }
        int64_t left = ns;
        if (ns > 0) {
            left = ns - (now_ns() - t0);
            if (left < 0)
                left = 0;
        }
        if (left == 0 || lt_in_finalizer(L)) {
            unlink_all(L, sel);
            lua_pushnil(L);
            lua_pushliteral(L, "timeout");
            return 2;
        }
        if (!sel->linked) { /* then try once more: nothing is missed */
            link_all(L, sel, ts, first - 1);
            continue;
        }
        int rc = sel->nfds ? wait_fds(L, sel, left) : tether_event_wait(sel->ev, left);
        if (rc == TETHER_EFINALIZING || lt_must_leave(ts))
            lt_leave(ts);
        if (rc != TETHER_OK && rc != TETHER_ETIMEDOUT) {
            unlink_all(L, sel);
            lt_wait_ok(L, ts, rc, "select");
        }
    }
}

/* The descriptor of a file handle or an integer (tether.wait_fd's rules);
   -1 if the value at idx is neither. */
static int fd_of(lua_State *L, int idx, int i)
{
    luaL_Stream *p = luaL_testudata(L, idx, LUA_FILEHANDLE);
    if (p) {
        if (!p->closef || !p->f)
            luaL_error(L, "select: source %d: the file is closed", i);
        return fileno(p->f);
    }
    if (!lua_isinteger(L, idx))
        return -1;
    lua_Integer fd = lua_tointeger(L, idx);
    if (fd < 0 || fd > INT_MAX)
        luaL_error(L, "select: source %d: file descriptor %I out of range", i,
                   (lua_Integer)fd);
    return (int)fd;
}

/* A descriptor source: a file handle (for reading), or a table {fd = n |
   file, mode = "r" | "w" | "rw"}.  Returns 1 and fills s, or 0. */
static int read_fd(lua_State *L, int idx, lt_source *s, lua_Integer i)
{
    idx = lua_absindex(L, idx);
    int fd = -1;
    short events = POLLIN;
    if (luaL_testudata(L, idx, LUA_FILEHANDLE)) {
        fd = fd_of(L, idx, (int)i);
    } else if (lua_type(L, idx) == LUA_TTABLE && !luaL_getmetafield(L, idx, "__name")) {
        lua_getfield(L, idx, "fd");
        fd = fd_of(L, -1, (int)i);
        lua_pop(L, 1);
        if (fd < 0)
            return 0;
        lua_getfield(L, idx, "mode");
        const char *mode = lua_isnil(L, -1) ? "r" : lua_tostring(L, -1);
        if (mode && strcmp(mode, "r") == 0)
            events = POLLIN;
        else if (mode && strcmp(mode, "w") == 0)
            events = POLLOUT;
        else if (mode && strcmp(mode, "rw") == 0)
            events = POLLIN | POLLOUT;
        else
            luaL_error(L, "select: source %d: mode must be \"r\", \"w\" or \"rw\"", (int)i);
        lua_pop(L, 1);
    }
    if (fd < 0)
        return 0;
    if (fcntl(fd, F_GETFD) < 0)
        luaL_error(L, "select: source %d: %d is not an open file descriptor", (int)i, fd);
    s->fd = fd;
    s->events = events;
    return 1;
}

/* Reads the sources of the array at `arr` onto the stack and makes their
   records; with `futures_only`, anything else is an error.  Returns the
   records; the sources are at the top - n + 1 .. top. */
static lt_selecting *read_sources(lua_State *L, int arr, int futures_only,
                                  const char *what)
{
    luaL_checktype(L, arr, LUA_TTABLE);
    lua_Integer n = luaL_len(L, arr);
    if (n < 1 || n > LT_SELECT_MAX) {
        lua_pushfstring(L, "%s needs 1 to %d sources; got %I", what,
                        LT_SELECT_MAX, n);
        luaL_argerror(L, arr, lua_tostring(L, -1));
    }
    /* the records, then room for a poll of every source, the eventfd and
       the wake-up descriptor */
    size_t size = sizeof(lt_selecting) + (size_t)n * sizeof(lt_source);
    size = (size + 15) & ~(size_t)15;
    lt_selecting *sel = lua_newuserdatauv(L, size + ((size_t)n + 2) * sizeof(struct pollfd), 0);
    sel->n = 0;
    sel->linked = 0;
    sel->nfds = 0;
    sel->efd = -1;
    sel->pfd = (struct pollfd *)((char *)sel + size);
    sel->ev = sel->own = 0;
    luaL_setmetatable(L, LT_SELECT_MT);
    lua_toclose(L, -1);
    luaL_checkstack(L, (int)n + LUA_MINSTACK, "select: too many sources");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, arr, i);
        lt_source *s = &sel->src[i - 1];
        s->linked = 0;
        s->w.prev = s->w.next = NULL;
        s->w.efd = -1;
        s->list = NULL;
        s->ch = 0;
        s->fd = -1;
        lt_chan *c = NULL;
        if ((s->list = lt_future_source(L, -1)) != NULL)
            s->kind = K_FUTURE;
        else if (futures_only)
            ;
        else if ((s->list = lt_sync_source(L, -1)) != NULL)
            s->kind = K_SYNC;
        else if ((s->list = lt_thread_source(L, -1)) != NULL)
            s->kind = K_THREAD;
        else if ((c = luaL_testudata(L, -1, LT_CHANNEL_MT)) != NULL && c->ch)
            s->kind = K_CHANNEL, s->ch = c->ch;
        else if (read_fd(L, -1, s, i))
            s->kind = K_FD, sel->nfds++;
        if (!s->list && !s->ch && s->fd < 0) {
            const char *v = lt_describe(L, -1, 1);
            lua_pushfstring(L, "%s: source %I is %s; %s", what, i, v,
                            futures_only ? "a future was expected"
                                         : "a queue, channel, event, thread, "
                                           "future or file descriptor was expected");
            luaL_argerror(L, arr, lua_tostring(L, -1));
        }
        sel->n++;
    }
    if (sel->nfds) {
        for (int i = 0; i < sel->n; i++)
            if (sel->src[i].kind == K_CHANNEL)
                luaL_argerror(L, arr, "a channel and a file descriptor cannot be "
                                      "waited for in one select");
    }
    return sel;
}

/* tether.select(sources [, timeout]) --> source, value... | nil, "timeout" */
static int module_select(lua_State *L)
{
    int64_t ns = lt_opt_timeout(L, 2);
    lua_settop(L, 1);
    lt_selecting *sel = read_sources(L, 1, 0, "select");
    return run_select(L, sel, 3, ns, 0);
}

/* The private first_done(futures [, timeout]) --> future | nil, "timeout":
   the first done future, nothing consumed nor retrieved. */
static int first_done(lua_State *L)
{
    int64_t ns = lt_opt_timeout(L, 2);
    lua_settop(L, 1);
    lt_selecting *sel = read_sources(L, 1, 1, "wait");
    return run_select(L, sel, 3, ns, 1);
}

void lt_open_select(lua_State *L, lt_state *S)
{
    static const luaL_Reg meta[] = {{"__close", selecting_close}, {NULL, NULL}};
    lt_new_class(L, S, LT_SELECT_MT, NULL, meta, NULL);
    lua_pushlightuserdata(L, S);
    lua_pushcclosure(L, module_select, 1);
    lua_setfield(L, -2, "select");
    /* For lt_future.c's Lua part, which finds it in the registry. */
    lua_pushlightuserdata(L, S);
    lua_pushcclosure(L, first_done, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "tether.first_done");
}
