/*
 * lt_block.c - blocking with the GIL released, woken by a raise, a cancel
 * or finalize (the model is in lt_block.h), and tether.wait_fd.
 *
 * The wake-up descriptor of a thread is an eventfd kept under a pthread
 * key (not __thread: see lt_tl_get), made on first use, closed by the
 * key's destructor when the thread exits, and forgotten in the child of a
 * fork (which must not share its parent's).  A thread without one (out of
 * descriptors) still blocks with the GIL released; it just cannot be
 * woken before its descriptor is ready.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "lt_block.h"

/* ------------------------------------------------------------------------
 * The calling thread's wake-up descriptor
 * ---------------------------------------------------------------------- */

static pthread_key_t wake_key; /* the descriptor + 1; NULL: none yet */
static pthread_once_t wake_once = PTHREAD_ONCE_INIT;
static int wake_key_ok;

static void wake_close(void *v)
{
    (void)close((int)((intptr_t)v - 1));
}

/* In the child of a fork: the forking thread's descriptor is its
   parent's too, so a write by either would wake the other. */
static void wake_forget_in_child(void)
{
    if (!wake_key_ok)
        return;
    intptr_t v = (intptr_t)pthread_getspecific(wake_key);
    if (v) {
        (void)close((int)(v - 1));
        (void)pthread_setspecific(wake_key, NULL);
    }
}

static void wake_init(void)
{
    wake_key_ok = pthread_key_create(&wake_key, wake_close) == 0;
    if (wake_key_ok)
        (void)pthread_atfork(NULL, NULL, wake_forget_in_child);
}

/* The calling thread's wake-up descriptor, made if need be; -1 if none
   can be made. */
static int wake_fd(void)
{
    (void)pthread_once(&wake_once, wake_init);
    if (!wake_key_ok)
        return -1;
    intptr_t v = (intptr_t)pthread_getspecific(wake_key);
    if (v)
        return (int)(v - 1);
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -1;
    if (pthread_setspecific(wake_key, (void *)(intptr_t)(fd + 1)) != 0) {
        (void)close(fd);
        return -1;
    }
    return fd;
}

/* What the unblock function of one lt_block_call writes to.
   Synchronization: fd is immutable; woken is atomic (set by the waking
   thread, read by the owner once tether_call_blocking returned, after
   which no call of the unblock function is in progress). */
struct wake {
    int fd;
    atomic_int woken;
};

/* The unblock function (tether_unblock_fn): runs on the raising or
   finalizing thread; a write to an eventfd never waits. */
static void wake_ubf(void *arg)
{
    struct wake *w = arg;
    atomic_store(&w->woken, 1);
    uint64_t one = 1;
    if (w->fd >= 0 && write(w->fd, &one, sizeof one) < 0)
        (void)0; /* the counter is full: it is readable all the same */
}

/* ------------------------------------------------------------------------
 * lt_block_poll and lt_block_call
 * ---------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int lt_block_poll_many(struct pollfd *p, int n, int64_t timeout_ns)
{
    p[n].fd = wake_fd();
    p[n].events = POLLIN;
    p[n].revents = 0;
    nfds_t all = (nfds_t)n + (p[n].fd >= 0 ? 1 : 0);
    int64_t deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0;
    for (;;) {
        struct timespec ts, *tp = NULL;
        if (timeout_ns >= 0) {
            int64_t left = timeout_ns == 0 ? 0 : deadline - now_ns();
            if (left < 0)
                left = 0;
            ts.tv_sec = (time_t)(left / 1000000000);
            ts.tv_nsec = (long)(left % 1000000000);
            tp = &ts;
        }
        int r = ppoll(p, all, tp, NULL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (all > (nfds_t)n && p[n].revents)
            return LT_BLOCK_WOKEN;
        if (r > 0)
            return r;
        if (timeout_ns == 0 || now_ns() >= deadline)
            return 0;
    }
}

int lt_block_poll(int fd, short events, int64_t timeout_ns, short *revents)
{
    struct pollfd p[2] = {{fd, events, 0}, {-1, 0, 0}};
    int r = lt_block_poll_many(p, 1, timeout_ns);
    if (r != 1)
        return r; /* 0, LT_BLOCK_WOKEN (woken first: the descriptor stays
                     ready for the next call) or -1 */
    if (p[0].revents & POLLNVAL) {
        errno = EBADF;
        return -1;
    }
    if (revents)
        *revents = p[0].revents;
    return 1;
}

/* tether_call_blocking's fn: the caller's, marked as run. */
struct blocked {
    int (*fn)(void *);
    void *arg;
    int ran, result;
};

static int run_blocked(void *arg)
{
    struct blocked *b = arg;
    b->ran = 1;
    b->result = b->fn(b->arg);
    return 0;
}

int lt_block_call(lua_State *L, int (*fn)(void *arg), void *arg, int *result)
{
    struct blocked b = {fn, arg, 0, 0};
    int rc = TETHER_OK;
    if (tether_gil_held() && !lt_in_finalizer(L)) {
        struct wake w;
        w.fd = wake_fd();
        atomic_init(&w.woken, 0);
        lt_sigint_rearm(); /* Ctrl-C reaches the main thread here too */
        rc = tether_call_blocking(run_blocked, &b, wake_ubf, &w);
        if (atomic_load(&w.woken) && w.fd >= 0) { /* empty it for next time */
            uint64_t v;
            if (read(w.fd, &v, sizeof v) < 0)
                (void)0; /* already empty */
        }
        if (rc != TETHER_OK && !b.ran)
            /* An exception or finalize seen before fn could start. */
            b.result = LT_BLOCK_WOKEN;
    }
    if (!b.ran && rc == TETHER_OK)
        (void)run_blocked(&b);
    *result = b.result;
    return rc;
}

/* ------------------------------------------------------------------------
 * tether.wait_fd(fd, mode, [timeout])
 * ---------------------------------------------------------------------- */

struct waitfd {
    int fd;
    short events, revents;
    int64_t ns;
    int err;
};

static int waitfd_fn(void *arg)
{
    struct waitfd *w = arg;
    int r = lt_block_poll(w->fd, w->events, w->ns, &w->revents);
    if (r == -1)
        w->err = errno;
    return r;
}

/* The descriptor at idx: an integer, or a Lua file handle (its fileno). */
static int check_fd(lua_State *L, int idx)
{
    luaL_Stream *p = luaL_testudata(L, idx, LUA_FILEHANDLE);
    if (p) {
        luaL_argcheck(L, p->closef != NULL && p->f != NULL, idx, "file is closed");
        return fileno(p->f);
    }
    if (lua_type(L, idx) != LUA_TNUMBER)
        return luaL_typeerror(L, idx, "file descriptor or file");
    int isint;
    lua_Integer fd = lua_tointegerx(L, idx, &isint); /* 3.0 is 3, as in Lua */
    if (!isint)
        return luaL_argerror(L, idx, "number has no integer representation");
    luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, idx, "file descriptor out of range");
    return (int)fd;
}

static int module_wait_fd(lua_State *L)
{
    struct waitfd w = {check_fd(L, 1), 0, 0, 0, 0};
    const char *mode = luaL_checkstring(L, 2);
    if (strcmp(mode, "r") == 0)
        w.events = POLLIN;
    else if (strcmp(mode, "w") == 0)
        w.events = POLLOUT;
    else if (strcmp(mode, "rw") == 0)
        w.events = POLLIN | POLLOUT;
    else
        return luaL_argerror(L, 2, "mode must be \"r\", \"w\" or \"rw\"");
    int64_t ns = lt_opt_timeout(L, 3);
    if (fcntl(w.fd, F_GETFD) < 0)
        return luaL_argerror(L, 1, "not an open file descriptor");
    lt_tstate *ts = lt_current_tstate();
    int64_t deadline = ns > 0 ? now_ns() + ns : 0;
    int r;
    for (;;) {
        w.ns = ns > 0 ? deadline - now_ns() : ns;
        if (ns > 0 && w.ns < 0)
            w.ns = 0;
        if (w.ns == 0)
            r = waitfd_fn(&w); /* a poll that does not block: keep the GIL */
        else
            lt_wait_ok(L, ts, lt_block_call(L, waitfd_fn, &w, &r), "wait_fd");
        if (r != LT_BLOCK_WOKEN) /* woken but the exception is held back */
            break;
    }
    if (r == -1) {
        errno = w.err;
        return luaL_error(L, "wait_fd: %s", strerror(w.err));
    }
    if (r == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    /* A hang-up or an error: the next read or write will not block (it
       answers end of file or the error), so it counts as ready. */
    short any = POLLHUP | POLLERR;
    int rd = (w.events & POLLIN) && (w.revents & (POLLIN | POLLPRI | any));
    int wr = (w.events & POLLOUT) && (w.revents & (POLLOUT | any));
    lua_pushstring(L, rd && wr ? "rw" : rd ? "r" : "w");
    return 1;
}

void lt_open_block(lua_State *L, lt_state *S)
{
    lua_pushlightuserdata(L, S);
    lua_pushcclosure(L, module_wait_fd, 1);
    lua_setfield(L, -2, "wait_fd");
}
