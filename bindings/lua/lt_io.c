/*
 * lt_io.c - Lua's io and os libraries with the GIL released while they
 * block (docs/lua.md, "I/O in threads").
 *
 * At `require "tether"` the functions of the io table, the methods and
 * __gc/__close of Lua's FILE* metatable, and os.execute, os.remove,
 * os.rename and os.tmpname are replaced by the ones below.  They keep
 * Lua's data structures (luaL_Stream handles, the "_IO_input" and
 * "_IO_output" registry fields, the FILE* metatable), so files opened
 * before the module loaded and handles other C modules make with
 * luaL_Stream work with them, and they answer what Lua 5.4's own answer,
 * byte for byte (tests/lua/test_io_diff.lua runs the same scripts with and
 * without the module).
 *
 * What blocks and what does not.  Reads are served from the FILE's buffer
 * while it holds data, with the GIL held and no system call; only when it
 * is empty does a read "refill": with the GIL released it polls the
 * descriptor (lt_block_poll, so a raise or cancel wakes it) and reads one
 * buffer's worth (getc then ungetc, which leaves the data in the buffer).
 * A cancelled read has consumed nothing in its wait, and pushes back
 * (ungetc; glibc's pushback has no size limit) what the same call had
 * consumed before it, so the next read sees the stream as it was.  Writes
 * that fit the buffer are copied holding the GIL; a write that may reach
 * the descriptor, and open, close, flush, seek, setvbuf, popen, pclose,
 * remove, rename and tmpname run with the GIL released (not cancellable:
 * an exception raised meanwhile is raised once they return).  os.execute
 * spawns the shell itself and waits on a pidfd, so it can be cancelled.
 *
 * One handle, many threads.  While a thread has the GIL released in the
 * middle of an operation on a handle, the handle is on a busy list; any
 * other operation on it (close included) waits until it
 * is not (the GIL serialises everything else).  So two threads never use
 * one FILE at once, and a close waits for the read it would pull the FILE
 * from under.
 *
 * Peeking into the FILE's buffer needs glibc's FILE layout; elsewhere the
 * module leaves Lua's libraries as they are (they then hold the GIL).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lt_block.h"

#if defined(__GLIBC__)

extern char **environ;

#define IO_INPUT "_IO_input"
#define IO_OUTPUT "_IO_output"
#define MAX_LINES_ARGS 250 /* io.lines formats: + 4 upvalues <= 255 */
#define NUMERAL_MAX 200    /* longest numeral "n" reads */
#define KEEP_FORMATS 8     /* earlier results of one read pushed back */

/* ------------------------------------------------------------------------
 * glibc's FILE buffer
 * ---------------------------------------------------------------------- */

/* glibc's flag bits (its libio.h; the same since glibc 2.1). */
#define GLIBC_UNBUFFERED 0x0002
#define GLIBC_LINE_BUF 0x0200
#define GLIBC_PUTTING 0x0800
#define GLIBC_IN_BACKUP 0x0100

/* The FILE's lock (flockfile), told to ThreadSanitizer, which does not
   see glibc's own locks: what one thread does to the buffer under it
   happens before what the next holder does. */
#if defined(__SANITIZE_THREAD__) || LT_HAS_FEATURE(thread_sanitizer)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define FILE_ACQUIRED(f) __tsan_acquire(f)
#define FILE_RELEASING(f) __tsan_release(f)
#else
#define FILE_ACQUIRED(f) ((void)(f))
#define FILE_RELEASING(f) ((void)(f))
#endif

static void file_lock(FILE *f)
{
    flockfile(f);
    FILE_ACQUIRED(f);
}

static int file_trylock(FILE *f)
{
    if (ftrylockfile(f) != 0)
        return 0;
    FILE_ACQUIRED(f);
    return 1;
}

static void file_unlock(FILE *f)
{
    FILE_RELEASING(f);
    funlockfile(f);
}

/* Bytes a read gets from f's buffer without a system call. */
static size_t rd_avail(FILE *f)
{
    return f->_IO_read_ptr < f->_IO_read_end
               ? (size_t)(f->_IO_read_end - f->_IO_read_ptr) : 0;
}

/* 1 if f reads from its pushback area (ungetc beyond the buffer), having
   bytes left in its main buffer for when that is used up: glibc switches
   back to them in getc, without a system call. */
static int rd_main_waiting(FILE *f)
{
    return (f->_flags & GLIBC_IN_BACKUP) && f->_IO_save_end > f->_IO_save_base;
}

/* 1 if writing l bytes to f only copies them into its buffer. */
static inline __attribute__((always_inline)) int wr_fits(FILE *f, size_t l)
{
    int fl = f->_flags;
    return (fl & GLIBC_PUTTING) && !(fl & (GLIBC_UNBUFFERED | GLIBC_LINE_BUF)) &&
           f->_IO_write_ptr && (size_t)(f->_IO_write_end - f->_IO_write_ptr) >= l;
}

/* ------------------------------------------------------------------------
 * Handles in use with the GIL released
 * ---------------------------------------------------------------------- */

/* A file handle in use by a thread that let the GIL go (a record on that
   thread's stack, linked while the GIL is released).  Synchronization:
   ioctx.mu. */
typedef struct iobusy {
    luaL_Stream *p;
    struct iobusy *next;
} iobusy;

/* What the functions of one Lua state share: their upvalue 1, a userdata
   (not the lt_state, which lua_close frees before the finalizers of the
   files that are older than the module run; the userdata lives until
   every object goes). */
typedef struct ioctx {
    /* Protects the list `busy` (written by its owners, who link it under
       the GIL, but may have to unlink it without: a thread that finalize
       detached must not leave its stack record behind).  A leaf, taken
       with or without the GIL; nothing is taken while it is held. */
    pthread_mutex_t mu;
    /* Handles in use with the GIL released.  Atomic, so that the fast
       path can see it empty without the lock. */
    _Atomic(iobusy *) busy;
    lt_waitq waiters; /* threads waiting for one of them (lt.h). */
} ioctx;

/* An operation on one handle of a thread that holds the GIL. */
typedef struct op {
    lua_State *L;
    ioctx *X;
    luaL_Stream *p;
    int err;        /* errno of the last released step */
    lt_tstate *ts;  /* the caller's record, taken before a released step:
                       after finalize the core no longer knows the thread,
                       and leaving Lua needs it */
} op;

static ioctx *ctx_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static int op_wait(op *o, lua_State *L, ioctx *X, luaL_Stream *p);

/* Waits until no other thread has p on X->busy; returns 1 if it had to
   wait (the handle may have been closed meanwhile).  [gil-held] */
static inline __attribute__((always_inline)) int op_begin(op *o, lua_State *L,
                                                          ioctx *X, luaL_Stream *p)
{
    o->L = L;
    o->X = X;
    o->p = p;
    o->err = 0;
    o->ts = NULL;
    return atomic_load_explicit(&X->busy, memory_order_relaxed) ? op_wait(o, L, X, p) : 0;
}

/* 1 if another thread has p on X->busy. */
static int is_busy(ioctx *X, luaL_Stream *p)
{
    pthread_mutex_lock(&X->mu);
    iobusy *r = atomic_load_explicit(&X->busy, memory_order_relaxed);
    while (r && r->p != p)
        r = r->next;
    pthread_mutex_unlock(&X->mu);
    return r != NULL;
}

static int op_wait(op *o, lua_State *L, ioctx *X, luaL_Stream *p)
{
    (void)o;
    for (int waited = 0;; waited = 1) {
        if (!is_busy(X, p))
            return waited;
        lt_tstate *ts = lt_current_tstate();
        int finalizer = lt_in_finalizer(L);
        int notified = 0;
        int rc = lt_waitq_wait(ts, &X->waiters, finalizer ? 0 : -1, &notified);
        if (finalizer && rc == TETHER_ETIMEDOUT)
            luaL_error(L, "file is in use by another thread");
        lt_wait_ok(L, ts, rc, "io");
    }
}

/* Runs fn(arg) with the GIL released and o's handle on X->busy.
   Returns fn's result; *status gets lt_block_call's. */
static int op_step(op *o, int (*fn)(void *), void *arg, int *status)
{
    ioctx *X = o->X;
    iobusy rec = {o->p, NULL};
    pthread_mutex_lock(&X->mu);
    rec.next = atomic_load_explicit(&X->busy, memory_order_relaxed);
    atomic_store_explicit(&X->busy, &rec, memory_order_relaxed);
    pthread_mutex_unlock(&X->mu);
    int res = 0;
    o->ts = lt_current_tstate();
    *status = lt_block_call(o->L, fn, arg, &res);
    pthread_mutex_lock(&X->mu);
    iobusy *head = atomic_load_explicit(&X->busy, memory_order_relaxed);
    if (head == &rec) {
        atomic_store_explicit(&X->busy, rec.next, memory_order_relaxed);
    } else {
        while (head->next != &rec)
            head = head->next;
        head->next = rec.next;
    }
    pthread_mutex_unlock(&X->mu);
    /* Without the GIL after finalize: the waiters are the state's. */
    if (*status != TETHER_EFINALIZING && X->waiters.head)
        lt_waitq_wake(&X->waiters, INT_MAX);
    return res;
}

/* An op_step that cannot be woken: runs it to its end, then raises an
   exception that arrived meanwhile. */
static int op_run(op *o, int (*fn)(void *), void *arg)
{
    int status;
    int res = op_step(o, fn, arg, &status);
    if (status != TETHER_OK)
        lt_wait_ok(o->L, o->ts, status, "io");
    return res;
}

/* lt_block_call without a handle (opening, os functions). */
static int run_released(lua_State *L, int (*fn)(void *), void *arg)
{
    int res = 0;
    lt_tstate *ts = lt_current_tstate(); /* before: see op.ts */
    int status = lt_block_call(L, fn, arg, &res);
    if (status != TETHER_OK)
        lt_wait_ok(L, ts, status, "io");
    return res;
}

/* An open (fn makes a FILE into *out): the FILE goes into p, with its
   closef, before an exception that came meanwhile is raised, so that the
   handle's finalizer closes it instead of leaking it. */
static void open_released(lua_State *L, int (*fn)(void *), void *arg, FILE **out,
                          luaL_Stream *p, lua_CFunction closef)
{
    int res = 0;
    lt_tstate *ts = lt_current_tstate(); /* before: see op.ts */
    int status = lt_block_call(L, fn, arg, &res);
    p->f = *out;
    if (p->f)
        p->closef = closef;
    if (status != TETHER_OK)
        lt_wait_ok(L, ts, status, "io");
}

/* A close: runs even in a thread that an exception is pending for (a
   cancelled one: cancellation is raised again at every call), since the
   handle is already marked closed and nothing would close its FILE
   later; the exception is raised once the FILE is closed. */
static void close_released(lua_State *L, int (*fn)(void *), void *arg)
{
    int res = 0;
    lt_tstate *ts = lt_current_tstate(); /* before: see op.ts */
    int deferred = ts && tether_async_defer() == TETHER_OK;
    int status = lt_block_call(L, fn, arg, &res);
    if (deferred)
        (void)tether_async_allow();
    if (status != TETHER_OK)
        lt_wait_ok(L, ts, status, "io");
    if (deferred)
        lt_checkpoint(L, ts); /* what came meanwhile, or was pending */
}

/* ------------------------------------------------------------------------
 * Handles
 * ---------------------------------------------------------------------- */

static luaL_Stream *to_stream(lua_State *L)
{
    return luaL_checkudata(L, 1, LUA_FILEHANDLE);
}

/* The handle at 1, open, after op_begin: raises for a closed one. */
static luaL_Stream *begin_open(op *o, lua_State *L)
{
    luaL_Stream *p = to_stream(L);
    op_begin(o, L, ctx_of(L), p);
    if (p->closef == NULL)
        luaL_error(L, "attempt to use a closed file");
    return p;
}

struct fileop {
    FILE *f;
    const char *name, *mode;
    const void *data;
    size_t len;
    off_t off;
    int how, res, err;
    FILE *out;
};

static int fclose_fn(void *a)
{
    struct fileop *x = a;
    errno = 0;
    x->res = fclose(x->f);
    x->err = errno;
    return 0;
}

/* The closef of the files the module opens. */
static int close_file(lua_State *L)
{
    luaL_Stream *p = to_stream(L);
    struct fileop x = {.f = p->f};
    close_released(L, fclose_fn, &x);
    errno = x.err;
    return luaL_fileresult(L, x.res == 0, NULL);
}

static int pclose_fn(void *a)
{
    struct fileop *x = a;
    errno = 0;
    x->res = pclose(x->f);
    x->err = errno;
    return 0;
}

/* The closef of io.popen's files. */
static int close_pipe(lua_State *L)
{
    luaL_Stream *p = to_stream(L);
    struct fileop x = {.f = p->f};
    close_released(L, pclose_fn, &x);
    errno = x.err;
    return luaL_execresult(L, x.res);
}

/* Closes the handle at 1 with its own closef (Lua's, the module's or
   another C module's). */
static int close_stream(lua_State *L)
{
    luaL_Stream *p = to_stream(L);
    lua_CFunction cf = p->closef;
    p->closef = NULL; /* closed for every other thread from now on */
    return cf(L);
}

/* A new handle, closed until its FILE is set. */
static luaL_Stream *new_stream(lua_State *L, lua_CFunction closef)
{
    luaL_Stream *p = lua_newuserdatauv(L, sizeof *p, 0);
    p->f = NULL;
    p->closef = NULL;
    luaL_setmetatable(L, LUA_FILEHANDLE);
    p->closef = closef;
    return p;
}

static int fopen_fn(void *a)
{
    struct fileop *x = a;
    x->out = fopen(x->name, x->mode);
    x->err = errno;
    return 0;
}

/* Opens `name` into a new handle on the top, or raises Lua's message. */
static void open_or_raise(lua_State *L, const char *name, const char *mode)
{
    luaL_Stream *p = new_stream(L, NULL);
    struct fileop x = {.name = name, .mode = mode};
    open_released(L, fopen_fn, &x, &x.out, p, close_file);
    if (!p->f)
        luaL_error(L, "cannot open file '%s' (%s)", name, strerror(x.err));
}

/* Lua's check of fopen modes: [rwa]%+?b* */
static int mode_ok(const char *m)
{
    if (*m == '\0' || !strchr("rwa", *m++))
        return 0;
    if (*m == '+')
        m++;
    return strspn(m, "b") == strlen(m);
}

static int io_open(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *mode = luaL_optstring(L, 2, "r");
    luaL_Stream *p = new_stream(L, close_file);
    luaL_argcheck(L, mode_ok(mode), 2, "invalid mode");
    struct fileop x = {.name = name, .mode = mode};
    open_released(L, fopen_fn, &x, &x.out, p, close_file);
    if (p->f)
        return 1;
    errno = x.err;
    return luaL_fileresult(L, 0, name);
}

static int popen_fn(void *a)
{
    struct fileop *x = a;
    fflush(NULL); /* as Lua does: the child starts after our output */
    x->out = popen(x->name, x->mode);
    x->err = errno;
    return 0;
}

static int io_popen(lua_State *L)
{
    const char *cmd = luaL_checkstring(L, 1);
    const char *mode = luaL_optstring(L, 2, "r");
    luaL_Stream *p = new_stream(L, NULL);
    luaL_argcheck(L, (mode[0] == 'r' || mode[0] == 'w') && mode[1] == '\0', 2,
                  "invalid mode");
    struct fileop x = {.name = cmd, .mode = mode};
    open_released(L, popen_fn, &x, &x.out, p, close_pipe);
    p->closef = close_pipe;
    if (p->f)
        return 1;
    errno = x.err;
    return luaL_fileresult(L, 0, cmd);
}

static int tmpfile_fn(void *a)
{
    struct fileop *x = a;
    x->out = tmpfile();
    x->err = errno;
    return 0;
}

static int io_tmpfile(lua_State *L)
{
    luaL_Stream *p = new_stream(L, close_file);
    struct fileop x = {0};
    open_released(L, tmpfile_fn, &x, &x.out, p, close_file);
    if (p->f)
        return 1;
    errno = x.err;
    return luaL_fileresult(L, 0, NULL);
}

static int f_close(lua_State *L)
{
    op o;
    begin_open(&o, L);
    return close_stream(L);
}

static int io_close(lua_State *L)
{
    if (lua_isnone(L, 1))
        lua_getfield(L, LUA_REGISTRYINDEX, IO_OUTPUT);
    return f_close(L);
}

/* __gc and __close. */
static int f_gc(lua_State *L)
{
    luaL_Stream *p = to_stream(L);
    op o;
    op_begin(&o, L, ctx_of(L), p);
    if (p->closef != NULL && p->f != NULL)
        (void)close_stream(L);
    return 0;
}

/* The default input or output file: pushed, and returned open. */
static luaL_Stream *std_file(lua_State *L, const char *key)
{
    lua_getfield(L, LUA_REGISTRYINDEX, key);
    luaL_Stream *p = lua_touserdata(L, -1);
    if (p->closef == NULL)
        luaL_error(L, "default %s file is closed", key + 4);
    return p;
}

static int io_iofile(lua_State *L, const char *key, const char *mode)
{
    if (!lua_isnoneornil(L, 1)) {
        const char *name = lua_tostring(L, 1);
        if (name) {
            open_or_raise(L, name, mode);
        } else {
            if (to_stream(L)->closef == NULL)
                luaL_error(L, "attempt to use a closed file");
            lua_pushvalue(L, 1);
        }
        lua_setfield(L, LUA_REGISTRYINDEX, key);
    }
    lua_getfield(L, LUA_REGISTRYINDEX, key);
    return 1;
}

static int io_input(lua_State *L)
{
    return io_iofile(L, IO_INPUT, "r");
}

static int io_output(lua_State *L)
{
    return io_iofile(L, IO_OUTPUT, "w");
}

/* ------------------------------------------------------------------------
 * Reading
 * ---------------------------------------------------------------------- */

/* One result of a read call, kept to be pushed back if a later format of
   the same call is interrupted. */
struct done {
    int idx;                    /* its stack slot (a string), or 0 */
    int newline;                /* a newline was consumed after it */
    char numeral[NUMERAL_MAX + 1]; /* what "n" consumed ("" otherwise) */
};

/* One read call. */
typedef struct rd {
    op *o;
    FILE *f;
    int regular;               /* -1 unknown, else whether a regular file */
    /* What the format being read has consumed so far. */
    luaL_Buffer *cur;
    const char *curtext;
    size_t curlen;
    int ndone;
    struct done done[KEEP_FORMATS];
    int locked;                /* depth of rd_lock: >0 holds the FILE's lock */
} rd;

static void unread(FILE *f, const char *s, size_t n)
{
    while (n > 0)
        (void)ungetc((unsigned char)s[--n], f);
}

/* Gives back to the stream everything this call has consumed, newest
   first, so that it reads again in the same order. */
static void push_back(rd *r)
{
    lua_State *L = r->o->L;
    if (r->cur)
        unread(r->f, r->cur->b, r->cur->n);
    if (r->curtext)
        unread(r->f, r->curtext, r->curlen);
    if (r->ndone > KEEP_FORMATS) /* older ones are gone: keep the order */
        return;
    for (int j = r->ndone - 1; j >= 0; j--) {
        const struct done *d = &r->done[j];
        if (d->newline)
            (void)ungetc('\n', r->f);
        if (d->idx) {
            size_t l;
            const char *s = lua_tolstring(L, d->idx, &l);
            unread(r->f, s, l);
        }
        unread(r->f, d->numeral, strlen(d->numeral));
    }
}

/* Records the result on the top as done. */
static void mark_done(rd *r, int newline, const char *numeral)
{
    r->cur = NULL;
    r->curtext = NULL;
    if (r->ndone < KEEP_FORMATS) {
        struct done *d = &r->done[r->ndone];
        d->idx = numeral ? 0 : lua_gettop(r->o->L);
        d->newline = newline;
        d->numeral[0] = '\0';
        if (numeral)
            strcpy(d->numeral, numeral);
    }
    r->ndone++;
}

struct refill {
    FILE *f;
    int fd;  /* polled first; -1: read at once */
    int err; /* errno of a failed read */
};

/* Fills f's buffer: 1 data, 0 end of file, -1 error, LT_BLOCK_WOKEN. */
static int refill_fn(void *a)
{
    struct refill *x = a;
    if (x->fd >= 0) {
        int pr = lt_block_poll(x->fd, POLLIN, -1, NULL);
        if (pr == LT_BLOCK_WOKEN)
            return pr;
    }
    file_lock(x->f); /* the peek as one step for other users of the FILE */
    int c = getc_unlocked(x->f);
    x->err = errno;
    int res = c == EOF ? (ferror(x->f) ? -1 : 0) : 1;
    if (c != EOF)
        (void)ungetc(c, x->f);
    file_unlock(x->f);
    return res;
}

static int is_regular(rd *r)
{
    if (r->regular < 0) {
        struct stat st;
        int fd = fileno(r->f);
        r->regular = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    }
    return r->regular;
}

/* Raises the exception that interrupted a read, after pushing back. */
static _Noreturn void interrupted(rd *r, int status)
{
    if (r->locked > 0) {
        r->locked = 0;
        file_unlock(r->f);
    }
    if (status == TETHER_EASYNC)
        push_back(r);
    lt_wait_ok(r->o->L, r->o->ts, status, "io");
    luaL_error(r->o->L, "io: interrupted"); /* not reached */
    abort();
}

static int lockf_fn(void *a)
{
    file_lock(a);
    return 0;
}

/* Takes the lock of r's FILE (nested calls count), which glibc's own
   functions take too: another interpreter's io on a standard file, or C
   code, does not take part of what one call reads.  Never waits for it
   with the GIL held: the holder may be a thread of this GIL that refills
   the FILE with the GIL released and wants it back.  [gil-held] */
static void rd_lock(rd *r)
{
    if (r->locked++ > 0 || file_trylock(r->f))
        return;
    for (;;) {
        int status;
        int res = op_step(r->o, lockf_fn, r->f, &status);
        if (res != 0)
            r->locked = 0; /* not run: not taken */
        if (status != TETHER_OK)
            interrupted(r, status); /* lets it go if it was taken */
        if (res == 0)
            return;
    }
}

static void rd_unlock(rd *r)
{
    if (--r->locked == 0)
        file_unlock(r->f);
}

/* 1 once f's buffer holds data, 0 at end of file or on an error (which
   ferror then tells). */
static int need(rd *r)
{
    for (;;) {
        if (rd_avail(r->f) > 0)
            return 1;
        if (rd_main_waiting(r->f)) { /* no system call: switch and peek */
            rd_lock(r);
            if (rd_main_waiting(r->f))
                (void)ungetc(getc_unlocked(r->f), r->f);
            rd_unlock(r);
            continue;
        }
        if (feof(r->f) || ferror(r->f))
            return 0;
        int fd = fileno(r->f);
        struct refill x = {r->f, is_regular(r) ? -1 : fd, 0};
        int status;
        int res = op_step(r->o, refill_fn, &x, &status);
        if (res == -1)
            r->o->err = x.err;
        if (status != TETHER_OK)
            interrupted(r, status);
        if (res != LT_BLOCK_WOKEN) /* woken: the exception is held back */
            return res == 1;
    }
}

/* Takes up to n bytes from f's buffer into d, without a system call: as
   many as the buffer still holds under the FILE's lock (another user of
   the FILE may have taken some since they were counted). */
static size_t take(rd *r, char *d, size_t n)
{
    rd_lock(r);
    size_t avail = rd_avail(r->f);
    size_t got = fread_unlocked(d, 1, avail < n ? avail : n, r->f);
    rd_unlock(r);
    return got;
}

static int rd_getc(rd *r)
{
    return need(r) ? getc(r->f) : EOF;
}

/* Whether other interpreters have handles on f: the standard files are
   one FILE for all of them (docs/lua.md), the others belong to one
   interpreter, whose handle serialises its threads' calls. */
static int shared_file(const FILE *f)
{
    return f == stdin || f == stdout || f == stderr;
}

/* Reads a line into a new string on the top.  As Lua's own, it holds
   the FILE's lock while it fills each chunk of its buffer, refills
   included (the GIL released), so that another user of the same FILE
   (another interpreter's io on a standard file, C code) does not take
   part of the line; the lock is let go where the buffer grows, which may
   raise, and before an exception is raised.  Unlike Lua's, it waits for
   the line's first byte without the lock: a reader waiting for its next
   line would otherwise hold up every fflush(NULL) of the process (each
   io.popen makes one, as Lua's does), and with it every fopen.  Not on a
   standard file: there another interpreter may fill the FILE's buffer
   (draining the descriptor) while this one polls the descriptor, which
   then waits for data already read, or reads with the lock held. */
static int read_line(lua_State *L, rd *r, int chop)
{
    luaL_Buffer b;
    int newline = 0, more = 1;
    luaL_buffinit(L, &b);
    r->cur = &b;
    while (more && !newline) {
        char *d = luaL_prepbuffsize(&b, LUAL_BUFFERSIZE);
        size_t room = LUAL_BUFFERSIZE;
        if (luaL_bufflen(&b) == 0 && !shared_file(r->f) && !need(r))
            break; /* end of file before the line: nothing read */
        rd_lock(r);
        while (room > 0) {
            if (!need(r)) {
                more = 0;
                break;
            }
            size_t avail = rd_avail(r->f);
            if (avail > room)
                avail = room;
            const char *s = r->f->_IO_read_ptr;
            const char *e = memchr(s, '\n', avail);
            size_t k = e ? (size_t)(e - s) : avail;
            size_t got = fread_unlocked(d, 1, k, r->f);
            luaL_addsize(&b, got); /* at once: a pushback sees it */
            d += got;
            room -= got;
            if (e && got == k) {
                (void)getc_unlocked(r->f);
                newline = 1;
                break;
            }
        }
        rd_unlock(r);
    }
    r->cur = NULL;
    if (newline && !chop)
        luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    mark_done(r, newline && chop, NULL);
    return newline || lua_rawlen(L, -1) > 0;
}

struct bigread {
    FILE *f;
    char *dst;
    size_t n, got;
    int err;
};

static int fread_fn(void *a)
{
    struct bigread *x = a;
    x->got = fread(x->dst, 1, x->n, x->f);
    x->err = errno;
    return ferror(x->f) ? -1 : 0;
}

/* Reads a regular file's next n bytes straight into b with the GIL
   released (no poll: such a read never waits for a writer). */
static size_t read_regular(rd *r, luaL_Buffer *b, size_t n)
{
    struct bigread x = {r->f, luaL_prepbuffsize(b, n), n, 0, 0};
    int status;
    int res = op_step(r->o, fread_fn, &x, &status);
    if (res == -1)
        r->o->err = x.err;
    luaL_addsize(b, x.got);
    if (status != TETHER_OK)
        interrupted(r, status);
    return x.got;
}

static void read_all(lua_State *L, rd *r)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    r->cur = &b;
    for (;;) {
        size_t avail = rd_avail(r->f);
        if (avail > 0) {
            luaL_addsize(&b, take(r, luaL_prepbuffsize(&b, avail), avail));
        } else if (is_regular(r) && !feof(r->f) && !ferror(r->f)) {
            size_t chunk = b.n < 65536 ? 65536 : b.n;
            if (read_regular(r, &b, chunk) < chunk)
                break;
        } else if (!need(r)) {
            break;
        }
    }
    r->cur = NULL;
    luaL_pushresult(&b);
    mark_done(r, 0, NULL);
}

static int read_chars(lua_State *L, rd *r, size_t n)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    r->cur = &b;
    size_t left = n;
    if (is_regular(r)) { /* as Lua: the whole size is asked for at once */
        size_t avail = rd_avail(r->f);
        char *d = luaL_prepbuffsize(&b, n);
        size_t k = avail < n ? avail : n;
        size_t got = fread(d, 1, k, r->f);
        luaL_addsize(&b, got);
        left -= got;
        if (left > 0 && got == k && !feof(r->f) && !ferror(r->f))
            (void)read_regular(r, &b, left);
    } else {
        (void)luaL_prepbuffsize(&b, n); /* as Lua: a count too large for
                                           memory is an error, not a
                                           read to the end */
        while (left > 0 && need(r)) {
            size_t avail = rd_avail(r->f);
            size_t k = avail < left ? avail : left;
            size_t got = take(r, luaL_prepbuffsize(&b, k), k);
            luaL_addsize(&b, got);
            left -= got;
        }
    }
    r->cur = NULL;
    luaL_pushresult(&b);
    mark_done(r, 0, NULL);
    return lua_rawlen(L, -1) > 0;
}

static int test_eof(lua_State *L, rd *r)
{
    int more = need(r);
    lua_pushliteral(L, "");
    mark_done(r, 0, NULL);
    return more;
}

/* "n": the longest prefix of a numeral, then lua_stringtonumber. */
typedef struct numeral {
    rd *r;
    int c;                  /* the look-ahead character */
    size_t n;               /* characters kept in text */
    char text[NUMERAL_MAX + 1];
} numeral;

/* Keeps the look-ahead and reads the next one; 0 when too long. */
static int num_take(numeral *nm)
{
    if (nm->n >= NUMERAL_MAX) {
        nm->text[0] = '\0';
        return 0;
    }
    nm->text[nm->n++] = (char)nm->c;
    nm->r->curlen = nm->n;
    nm->c = rd_getc(nm->r);
    return 1;
}

static int num_accept(numeral *nm, char a, char b)
{
    return (nm->c == a || nm->c == b) ? num_take(nm) : 0;
}

static int num_digits(numeral *nm, int hex)
{
    int count = 0;
    while ((hex ? isxdigit(nm->c) : isdigit(nm->c)) && num_take(nm))
        count++;
    return count;
}

static int read_number(lua_State *L, rd *r)
{
    numeral nm;
    nm.r = r;
    nm.n = 0;
    r->curtext = nm.text;
    r->curlen = 0;
    char point = localeconv()->decimal_point[0];
    int count = 0, hex = 0;
    do
        nm.c = rd_getc(r);
    while (isspace(nm.c));
    num_accept(&nm, '-', '+');
    if (num_accept(&nm, '0', '0')) {
        if (num_accept(&nm, 'x', 'X'))
            hex = 1;
        else
            count = 1;
    }
    count += num_digits(&nm, hex);
    if (num_accept(&nm, point, '.'))
        count += num_digits(&nm, hex);
    if (count > 0 && num_accept(&nm, hex ? 'p' : 'e', hex ? 'P' : 'E')) {
        num_accept(&nm, '-', '+');
        num_digits(&nm, 0);
    }
    (void)ungetc(nm.c, r->f);
    nm.text[nm.n] = '\0';
    r->curtext = NULL;
    int ok = lua_stringtonumber(L, nm.text) != 0;
    if (!ok)
        lua_pushnil(L);
    mark_done(r, 0, nm.text);
    return ok;
}

/* Reads the formats from `first` on (none: a line); results are pushed. */
static int g_read(lua_State *L, op *o, int first)
{
    FILE *f = o->p->f;
    int nargs = lua_gettop(L) - 1;
    int n, success;
    rd r;
    r.o = o;
    r.f = f;
    r.regular = -1;
    r.cur = NULL;
    r.curtext = NULL;
    r.curlen = 0;
    r.ndone = 0;
    r.locked = 0;
    clearerr(f);
    if (nargs == 0) {
        success = read_line(L, &r, 1);
        n = first + 1;
    } else {
        luaL_checkstack(L, nargs + LUA_MINSTACK, "too many arguments");
        success = 1;
        for (n = first; nargs-- && success; n++) {
            if (lua_type(L, n) == LUA_TNUMBER) {
                size_t l = (size_t)luaL_checkinteger(L, n);
                success = l == 0 ? test_eof(L, &r) : read_chars(L, &r, l);
            } else {
                const char *fmt = luaL_checkstring(L, n);
                if (*fmt == '*')
                    fmt++;
                switch (*fmt) {
                case 'n':
                    success = read_number(L, &r);
                    break;
                case 'l':
                    success = read_line(L, &r, 1);
                    break;
                case 'L':
                    success = read_line(L, &r, 0);
                    break;
                case 'a':
                    read_all(L, &r);
                    success = 1;
                    break;
                default:
                    return luaL_argerror(L, n, "invalid format");
                }
            }
        }
    }
    if (ferror(f)) {
        errno = o->err;
        return luaL_fileresult(L, 0, NULL);
    }
    if (!success) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    return n - first;
}

static int io_read(lua_State *L)
{
    op o;
    ioctx *S = ctx_of(L);
    luaL_Stream *p = std_file(L, IO_INPUT);
    op_begin(&o, L, S, p);
    if (p->closef == NULL)
        luaL_error(L, "default %s file is closed", "input");
    return g_read(L, &o, 1);
}

static int f_read(lua_State *L)
{
    op o;
    begin_open(&o, L);
    return g_read(L, &o, 2);
}

/* The iterator of lines: upvalues S, file, count, close-at-end, formats. */
static int lines_next(lua_State *L)
{
    luaL_Stream *p = lua_touserdata(L, lua_upvalueindex(2));
    int n = (int)lua_tointeger(L, lua_upvalueindex(3));
    op o;
    op_begin(&o, L, ctx_of(L), p);
    if (p->closef == NULL)
        return luaL_error(L, "file is already closed");
    lua_settop(L, 1);
    luaL_checkstack(L, n, "too many arguments");
    for (int i = 1; i <= n; i++)
        lua_pushvalue(L, lua_upvalueindex(4 + i));
    n = g_read(L, &o, 2);
    if (lua_toboolean(L, -n))
        return n;
    if (n > 1) /* an error: its message is the second result */
        return luaL_error(L, "%s", lua_tostring(L, -n + 1));
    if (lua_toboolean(L, lua_upvalueindex(4))) {
        lua_settop(L, 0);
        lua_pushvalue(L, lua_upvalueindex(2));
        (void)close_stream(L);
    }
    return 0;
}

/* Replaces the values from 2 on with the iterator over the file at 1. */
static void push_lines(lua_State *L, int toclose)
{
    int n = lua_gettop(L) - 1;
    luaL_argcheck(L, n <= MAX_LINES_ARGS, MAX_LINES_ARGS + 2, "too many arguments");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushinteger(L, n);
    lua_pushboolean(L, toclose);
    lua_rotate(L, 2, 4);
    lua_pushcclosure(L, lines_next, 4 + n);
}

static int f_lines(lua_State *L)
{
    if (to_stream(L)->closef == NULL)
        return luaL_error(L, "attempt to use a closed file");
    push_lines(L, 0);
    return 1;
}

static int io_lines(lua_State *L)
{
    int toclose;
    if (lua_isnone(L, 1))
        lua_pushnil(L);
    if (lua_isnil(L, 1)) {
        lua_getfield(L, LUA_REGISTRYINDEX, IO_INPUT);
        lua_replace(L, 1);
        if (to_stream(L)->closef == NULL)
            return luaL_error(L, "attempt to use a closed file");
        toclose = 0;
    } else {
        open_or_raise(L, luaL_checkstring(L, 1), "r");
        lua_replace(L, 1);
        toclose = 1;
    }
    push_lines(L, toclose);
    if (!toclose)
        return 1;
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushvalue(L, 1); /* the to-be-closed fourth value */
    return 4;
}

/* ------------------------------------------------------------------------
 * Writing, flush, seek, setvbuf
 * ---------------------------------------------------------------------- */

static int fwrite_fn(void *a)
{
    struct fileop *x = a;
    x->res = (int)(fwrite(x->data, 1, x->len, x->f) == x->len);
    x->err = errno;
    return 0;
}

/* Writes s[0..l) to o's file; 1 if all of it went. */
static inline __attribute__((always_inline)) int put(op *o, const char *s, size_t l)
{
    FILE *f = o->p->f;
    if (wr_fits(f, l))
        return fwrite(s, 1, l, f) == l;
    struct fileop x = {.f = f, .data = s, .len = l};
    op_run(o, fwrite_fn, &x);
    o->err = x.err;
    return x.res;
}

static int g_write(lua_State *L, op *o, int arg)
{
    int nargs = lua_gettop(L) - arg;
    int status = 1;
    for (; nargs--; arg++) {
        if (lua_type(L, arg) == LUA_TNUMBER) {
            char num[64];
            const char *text = num;
            int len;
            if (lua_isinteger(L, arg)) { /* LUA_INTEGER_FMT, "%lld", by hand */
                lua_Integer v = lua_tointeger(L, arg);
                unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v
                                             : (unsigned long long)v;
                char *e = num + sizeof num, *d = e;
                do
                    *--d = (char)('0' + u % 10);
                while ((u /= 10) != 0);
                if (v < 0)
                    *--d = '-';
                text = d;
                len = (int)(e - d);
            } else {
                len = snprintf(num, sizeof num, LUA_NUMBER_FMT,
                               (LUAI_UACNUMBER)lua_tonumber(L, arg));
            }
            status = status && len > 0 && put(o, text, (size_t)len);
        } else {
            size_t l;
            const char *s = luaL_checklstring(L, arg, &l);
            status = status && put(o, s, l);
        }
    }
    if (status)
        return 1; /* the file, on the top */
    errno = o->err;
    return luaL_fileresult(L, 0, NULL);
}

static int io_write(lua_State *L)
{
    op o;
    ioctx *S = ctx_of(L);
    luaL_Stream *p = std_file(L, IO_OUTPUT);
    if (op_begin(&o, L, S, p) && p->closef == NULL)
        luaL_error(L, "default %s file is closed", "output");
    return g_write(L, &o, 1);
}

static int f_write(lua_State *L)
{
    op o;
    begin_open(&o, L);
    lua_pushvalue(L, 1);
    return g_write(L, &o, 2);
}

static int fflush_fn(void *a)
{
    struct fileop *x = a;
    x->res = fflush(x->f);
    x->err = errno;
    return 0;
}

static int flush_result(lua_State *L, op *o)
{
    struct fileop x = {.f = o->p->f};
    op_run(o, fflush_fn, &x);
    errno = x.err;
    return luaL_fileresult(L, x.res == 0, NULL);
}

static int io_flush(lua_State *L)
{
    op o;
    ioctx *S = ctx_of(L);
    luaL_Stream *p = std_file(L, IO_OUTPUT);
    op_begin(&o, L, S, p);
    if (p->closef == NULL)
        luaL_error(L, "default %s file is closed", "output");
    return flush_result(L, &o);
}

static int f_flush(lua_State *L)
{
    op o;
    begin_open(&o, L);
    return flush_result(L, &o);
}

static int fseek_fn(void *a)
{
    struct fileop *x = a;
    x->res = fseeko(x->f, x->off, x->how);
    if (x->res == 0)
        x->off = ftello(x->f);
    x->err = errno;
    return 0;
}

static int f_seek(lua_State *L)
{
    static const int whence[] = {SEEK_SET, SEEK_CUR, SEEK_END};
    static const char *const names[] = {"set", "cur", "end", NULL};
    op o;
    luaL_Stream *p = begin_open(&o, L);
    int how = luaL_checkoption(L, 2, "cur", names);
    lua_Integer want = luaL_optinteger(L, 3, 0);
    off_t off = (off_t)want;
    luaL_argcheck(L, (lua_Integer)off == want, 3, "not an integer in proper range");
    struct fileop x = {.f = p->f, .off = off, .how = whence[how]};
    op_run(&o, fseek_fn, &x);
    if (x.res != 0) {
        errno = x.err;
        return luaL_fileresult(L, 0, NULL);
    }
    lua_pushinteger(L, (lua_Integer)x.off);
    return 1;
}

static int setvbuf_fn(void *a)
{
    struct fileop *x = a;
    x->res = setvbuf(x->f, NULL, x->how, x->len);
    x->err = errno;
    return 0;
}

static int f_setvbuf(lua_State *L)
{
    static const int modes[] = {_IONBF, _IOFBF, _IOLBF};
    static const char *const names[] = {"no", "full", "line", NULL};
    op o;
    luaL_Stream *p = begin_open(&o, L);
    int mode = luaL_checkoption(L, 2, NULL, names);
    lua_Integer size = luaL_optinteger(L, 3, LUAL_BUFFERSIZE);
    struct fileop x = {.f = p->f, .how = modes[mode], .len = (size_t)size};
    op_run(&o, setvbuf_fn, &x);
    errno = x.err;
    return luaL_fileresult(L, x.res == 0, NULL);
}

/* ------------------------------------------------------------------------
 * os.execute, os.remove, os.rename, os.tmpname
 * ---------------------------------------------------------------------- */

/* While any os.execute waits (but those of threads that Ctrl-C does not
   interrupt: spawn_fn), SIGINT and SIGQUIT are ignored in this process,
   as system() does, so that Ctrl-C stops the command and not the
   script.  Protects sig_users and sig_saved.  A leaf: nothing else
   is taken while it is held. */
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static int sig_users;
static struct sigaction sig_saved[2]; /* SIGINT, SIGQUIT before the first */

/* Ignores SIGINT and SIGQUIT; *was_ignored gets their dispositions from
   before (for the child). */
static void sig_ignore(int was_ignored[2])
{
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    pthread_mutex_lock(&sig_mu);
    if (sig_users++ == 0) {
        sigaction(SIGINT, &ign, &sig_saved[0]);
        sigaction(SIGQUIT, &ign, &sig_saved[1]);
    }
    was_ignored[0] = sig_saved[0].sa_handler == SIG_IGN;
    was_ignored[1] = sig_saved[1].sa_handler == SIG_IGN;
    pthread_mutex_unlock(&sig_mu);
}

/* The dispositions of SIGINT and SIGQUIT a child must keep ignored,
   without changing this process's: those ignored before any os.execute
   ignored them. */
static void sig_peek(int was_ignored[2])
{
    pthread_mutex_lock(&sig_mu);
    struct sigaction cur[2];
    if (sig_users > 0) {
        cur[0] = sig_saved[0];
        cur[1] = sig_saved[1];
    } else {
        sigaction(SIGINT, NULL, &cur[0]);
        sigaction(SIGQUIT, NULL, &cur[1]);
    }
    was_ignored[0] = cur[0].sa_handler == SIG_IGN;
    was_ignored[1] = cur[1].sa_handler == SIG_IGN;
    pthread_mutex_unlock(&sig_mu);
}

static void sig_restore(void)
{
    pthread_mutex_lock(&sig_mu);
    if (--sig_users == 0) {
        sigaction(SIGINT, &sig_saved[0], NULL);
        sigaction(SIGQUIT, &sig_saved[1], NULL);
    }
    pthread_mutex_unlock(&sig_mu);
}

struct child {
    const char *cmd;
    pid_t pid;
    int pidfd; /* -1: none (waitpid blocks, not cancellable) */
    int status, err;
    int ignoring; /* 1 while this call has SIGINT and SIGQUIT ignored */
};

/* Stops ignoring SIGINT and SIGQUIT for c, if it did. */
static void child_sig_restore(struct child *c)
{
    if (c->ignoring)
        sig_restore();
    c->ignoring = 0;
}

/* Starts /bin/sh -c cmd as system() does: the signals it ignores for us
   back to their defaults, our signal mask.  Not on a thread other than
   the one Ctrl-C interrupts (lt_sigint_elsewhere): there Ctrl-C must
   still reach that thread (its join of this one, say), as a Python
   thread's subprocess.run leaves KeyboardInterrupt to the main thread;
   the command gets it from the terminal all the same. */
static int spawn_fn(void *a)
{
    struct child *c = a;
    int was_ignored[2];
    c->ignoring = !lt_sigint_elsewhere();
    if (c->ignoring)
        sig_ignore(was_ignored);
    else
        sig_peek(was_ignored);
    posix_spawnattr_t attr;
    sigset_t dflt, mask;
    posix_spawnattr_init(&attr);
    sigemptyset(&dflt);
    if (!was_ignored[0])
        sigaddset(&dflt, SIGINT);
    if (!was_ignored[1])
        sigaddset(&dflt, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    posix_spawnattr_setsigdefault(&attr, &dflt);
    posix_spawnattr_setsigmask(&attr, &mask);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {(char *)"sh", (char *)"-c", (char *)c->cmd, NULL};
    int rc = posix_spawn(&c->pid, "/bin/sh", NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        child_sig_restore(c);
        c->err = rc;
        c->status = 127 << 8; /* what system() answers: as if sh said 127 */
        return -1;
    }
#ifdef SYS_pidfd_open
    c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
#else
    c->pidfd = -1;
#endif
    return 0;
}

/* Waits for the child: 0, -1 (errno in err), LT_BLOCK_WOKEN. */
static int child_wait_fn(void *a)
{
    struct child *c = a;
    if (c->pidfd >= 0 && lt_block_poll(c->pidfd, POLLIN, -1, NULL) == LT_BLOCK_WOKEN)
        return LT_BLOCK_WOKEN;
    pid_t w;
    do
        w = waitpid(c->pid, &c->status, 0);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        c->err = errno;
        c->status = -1;
        return -1;
    }
    return 0;
}

/* Waits for a child nobody waits for any more, so it leaves no zombie. */
static void *reap(void *arg)
{
    pid_t pid = (pid_t)(intptr_t)arg;
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* An interrupted os.execute: the child runs on, untouched; a detached
   thread reaps it when it ends. */
static void abandon(struct child *c)
{
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, reap, (void *)(intptr_t)c->pid) != 0)
        (void)0; /* no thread: the child stays a zombie until we exit */
    pthread_attr_destroy(&attr);
    child_sig_restore(c);
}

static int shell_fn(void *a)
{
    struct child *c = a;
    c->status = system(NULL);
    return 0;
}

static int os_execute(lua_State *L)
{
    const char *cmd = luaL_optstring(L, 1, NULL);
    struct child c = {cmd, 0, -1, 0, 0, 0};
    lt_tstate *ts = lt_current_tstate(); /* before: see op.ts */
    if (!cmd) {
        run_released(L, shell_fn, &c);
        lua_pushboolean(L, c.status);
        return 1;
    }
    int res = 0;
    int status = lt_block_call(L, spawn_fn, &c, &res);
    if (status != TETHER_OK && res == 0) { /* started, and interrupted */
        abandon(&c);
        if (c.pidfd >= 0)
            close(c.pidfd);
    }
    if (status != TETHER_OK)
        lt_wait_ok(L, ts, status, "os.execute");
    if (res == 0) {
        for (;;) {
            status = lt_block_call(L, child_wait_fn, &c, &res);
            if (status != TETHER_OK) {
                if (res == LT_BLOCK_WOKEN)
                    abandon(&c);
                else
                    child_sig_restore(&c);
                if (c.pidfd >= 0)
                    close(c.pidfd);
                lt_wait_ok(L, ts, status, "os.execute");
            }
            if (res != LT_BLOCK_WOKEN)
                break;
        }
        child_sig_restore(&c);
        if (c.pidfd >= 0)
            close(c.pidfd);
    }
    errno = c.err;
    return luaL_execresult(L, c.status);
}

struct pathop {
    const char *a, *b;
    int res, err;
    char name[32];
};

static int remove_fn(void *a)
{
    struct pathop *x = a;
    x->res = remove(x->a);
    x->err = errno;
    return 0;
}

static int os_remove(lua_State *L)
{
    struct pathop x = {luaL_checkstring(L, 1), NULL, 0, 0, ""};
    run_released(L, remove_fn, &x);
    errno = x.err;
    return luaL_fileresult(L, x.res == 0, x.a);
}

static int rename_fn(void *a)
{
    struct pathop *x = a;
    x->res = rename(x->a, x->b);
    x->err = errno;
    return 0;
}

static int os_rename(lua_State *L)
{
    const char *from = luaL_checkstring(L, 1);
    struct pathop x = {from, luaL_checkstring(L, 2), 0, 0, ""};
    run_released(L, rename_fn, &x);
    errno = x.err;
    return luaL_fileresult(L, x.res == 0, NULL);
}

static int tmpname_fn(void *a)
{
    struct pathop *x = a;
    strcpy(x->name, "/tmp/lua_XXXXXX");
    int fd = mkstemp(x->name);
    if (fd != -1)
        close(fd);
    x->res = fd;
    return 0;
}

static int os_tmpname(lua_State *L)
{
    struct pathop x = {NULL, NULL, 0, 0, ""};
    run_released(L, tmpname_fn, &x);
    if (x.res == -1)
        return luaL_error(L, "unable to generate a unique filename");
    lua_pushstring(L, x.name);
    return 1;
}

/* ------------------------------------------------------------------------
 * Installing
 * ---------------------------------------------------------------------- */

static const luaL_Reg io_funcs[] = {
    {"close", io_close},     {"flush", io_flush}, {"input", io_input},
    {"lines", io_lines},     {"open", io_open},   {"output", io_output},
    {"popen", io_popen},     {"read", io_read},   {"tmpfile", io_tmpfile},
    {"write", io_write},     {NULL, NULL}};

static const luaL_Reg file_methods[] = {
    {"close", f_close}, {"flush", f_flush},     {"lines", f_lines},
    {"read", f_read},   {"seek", f_seek},       {"setvbuf", f_setvbuf},
    {"write", f_write}, {NULL, NULL}};

static const luaL_Reg file_meta[] = {{"__gc", f_gc}, {"__close", f_gc}, {NULL, NULL}};

static const luaL_Reg os_funcs[] = {
    {"execute", os_execute}, {"remove", os_remove}, {"rename", os_rename},
    {"tmpname", os_tmpname}, {NULL, NULL}};

/* Sets funcs (upvalue: the context at ctx) in the table loaded[name],
   if it is a table; leaves the stack as it was. */
static void replace_in(lua_State *L, int ctx, const char *name, const luaL_Reg *funcs)
{
    int top = lua_gettop(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE &&
        lua_getfield(L, -1, name) == LUA_TTABLE) {
        lua_pushvalue(L, ctx);
        luaL_setfuncs(L, funcs, 1);
    }
    lua_settop(L, top);
}

void lt_open_io(lua_State *L, lt_state *S)
{
    (void)S;
    int top = lua_gettop(L);
    ioctx *X = lua_newuserdatauv(L, sizeof *X, 0);
    pthread_mutex_init(&X->mu, NULL);
    atomic_init(&X->busy, NULL);
    lt_waitq_init(&X->waiters);
    int ctx = lua_gettop(L);
    replace_in(L, ctx, "io", io_funcs);
    replace_in(L, ctx, "os", os_funcs);
    if (luaL_getmetatable(L, LUA_FILEHANDLE) == LUA_TTABLE) {
        lua_pushvalue(L, ctx);
        luaL_setfuncs(L, file_meta, 1);
        if (lua_getfield(L, -1, "__index") == LUA_TTABLE) {
            lua_pushvalue(L, ctx);
            luaL_setfuncs(L, file_methods, 1);
        }
    }
    lua_settop(L, top);
}

#else /* not glibc: Lua's io and os libraries stay as they are */

void lt_open_io(lua_State *L, lt_state *S)
{
    (void)L;
    (void)S;
}

#endif
