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
 * every source without blocking (from a starting point that rotates from
 * call to call, so that a source that is always ready does not starve the
 * others), and wait on the event only if none was ready.  Same-state
 * sources change only under the GIL, which select holds from the clear to
 * the wait; a channel that gets a message after the clear sets the event
 * again.  So no wake-up is lost, and nothing is polled: the thread sleeps
 * in one core event wait, which an asynchronous exception (a cancel)
 * interrupts like any other.
 *
 * The records live in a userdata marked to-be-closed, whose __close
 * unlinks them, so that every way out of select (a result, a timeout, an
 * error, a cancel) leaves no record behind.
 */
#include <stdlib.h>
#include <time.h>

#include "lt.h"

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

enum { K_SYNC, K_THREAD, K_FUTURE, K_CHANNEL };

typedef struct lt_source {
    int kind;
    lt_watchlist *list; /* K_SYNC, K_THREAD, K_FUTURE */
    tether_channel ch;  /* K_CHANNEL (the userdata's reference) */
    lt_watch w;
    int linked;
} lt_source;

/* One select under way.  Synchronization: gil (the selecting thread). */
typedef struct lt_selecting {
    int n;
    int linked;          /* the records are linked */
    tether_event ev, own;
    lt_source src[];
} lt_selecting;

static void unlink_all(lt_selecting *sel)
{
    for (int i = 0; i < sel->n; i++) {
        lt_source *s = &sel->src[i];
        if (!s->linked)
            continue;
        s->linked = 0;
        if (s->kind == K_CHANNEL)
            (void)tether_channel_unwatch(s->ch, sel->ev);
        else
            lt_watch_remove(s->list, &s->w);
    }
    sel->linked = 0;
    if (sel->own)
        (void)tether_event_free(sel->own);
    sel->own = 0;
}

static int selecting_close(lua_State *L)
{
    unlink_all(lua_touserdata(L, 1));
    return 0;
}

static void link_all(lua_State *L, lt_selecting *sel, lt_tstate *ts)
{
    int rc = select_event(ts, &sel->ev, &sel->own);
    if (rc != TETHER_OK)
        lt_status_error(L, "select", rc);
    sel->linked = 1;
    for (int i = 0; i < sel->n; i++) {
        lt_source *s = &sel->src[i];
        s->w.ev = sel->ev;
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
    default:
        break;
    }
    lt_blob *b = lt_blob_push(L);
    b->release = tether_channel_msg_free;
    void *data = NULL;
    int rc = tether_channel_recv(s->ch, &data, &b->len, 0);
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

/* Where the next select starts trying (fairness).  Synchronization: atomic. */
static atomic_uint rotation;

/* Waits for the first ready of the n sources at first..first+n-1 (their
   records in sel, at `sel_idx`, marked to-be-closed).  Returns the number
   of values pushed: the source and its values, or nil, "timeout". */
static int run_select(lua_State *L, lt_selecting *sel, int first, int64_t ns,
                      int peek)
{
    lt_tstate *ts = lt_current_tstate();
    int n = sel->n;
    unsigned start = atomic_fetch_add(&rotation, 1) % (unsigned)n;
    int64_t t0 = now_ns();
    for (;;) {
        if (sel->linked)
            (void)tether_event_clear(sel->ev);
        for (int k = 0; k < n; k++) {
            int i = (int)((start + (unsigned)k) % (unsigned)n);
            int r = try_source(L, ts, &sel->src[i], first + i, peek);
            if (r >= 0) {
                unlink_all(sel);
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
            unlink_all(sel);
            lua_pushnil(L);
            lua_pushliteral(L, "timeout");
            return 2;
        }
        if (!sel->linked) { /* then try once more: nothing is missed */
            link_all(L, sel, ts);
            continue;
        }
        int rc = tether_event_wait(sel->ev, left);
        if (rc == TETHER_EFINALIZING || lt_must_leave(ts))
            lt_leave(ts);
        if (rc != TETHER_OK && rc != TETHER_ETIMEDOUT) {
            unlink_all(sel);
            lt_wait_ok(L, ts, rc, "select");
        }
    }
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
    lt_selecting *sel = lua_newuserdatauv(L, sizeof *sel + (size_t)n * sizeof sel->src[0], 0);
    sel->n = 0;
    sel->linked = 0;
    sel->ev = sel->own = 0;
    luaL_setmetatable(L, LT_SELECT_MT);
    lua_toclose(L, -1);
    luaL_checkstack(L, (int)n + LUA_MINSTACK, "select: too many sources");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, arr, i);
        lt_source *s = &sel->src[i - 1];
        s->linked = 0;
        s->w.prev = s->w.next = NULL;
        s->list = NULL;
        s->ch = 0;
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
        if (!s->list && !s->ch) {
            const char *v = lt_describe(L, -1, 1);
            lua_pushfstring(L, "%s: source %I is %s; %s", what, i, v,
                            futures_only ? "a future was expected"
                                         : "a queue, channel, event, thread "
                                           "or future was expected");
            luaL_argerror(L, arr, lua_tostring(L, -1));
        }
        sel->n++;
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
