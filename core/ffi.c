/*
 * ffi.c - libffi callbacks that attach any thread, and dynamic calls.
 *
 * A callback is a libffi closure whose handler ensures the callback's
 * interpreter, runs the guest function and releases (ctypes' callbacks are
 * the model).  The handler counts itself in `active` while it runs, so that
 * tether_callback_free can wait for calls on other threads to leave before
 * the closure and the guest's userdata go away: with the GIL released,
 * since a call in progress may be waiting for it.  A call that finds the
 * callback freed (before or after taking the GIL) returns zero without
 * running the guest.  A thread that frees a callback from inside one of its
 * own calls cannot wait for itself: the free is deferred to the last call
 * that leaves.  Each thread keeps the callbacks it is inside of on a
 * thread-local stack to tell the two apart.
 *
 * A call that has entered the handler but not yet counted itself in
 * `active` is invisible to that count.  The handler therefore counts
 * itself holding g_entry for reading, and tether_callback_free, after it
 * has marked the callback closing, takes g_entry for writing once: every
 * call that had entered the handler by then has either counted itself or
 * seen the mark, before the free looks at `active`.
 *
 * The trampoline window.  Before the handler runs at all, libffi's
 * trampoline reads the closure and its call interface (ffi_cif, and the
 * argument types it points to), and the handler then reads its user_data:
 * all of it before g_entry.  A call preempted there cannot be waited for,
 * so nothing it reads may live in the callback's record.  The closure
 * therefore lives in a block of its own (struct cblock, allocated by
 * ffi_closure_alloc): the ffi_closure, the call interface, and the
 * callback's handle, never a pointer to the record.  The handler looks
 * the handle up under g_entry; a stale one (the callback was destroyed)
 * gives zero.  The record is freed as soon as the callback is destroyed;
 * the block is not: it waits in a limbo for at least LIMBO_NS before
 * ffi_closure_free, so a call still in the trampoline finds it intact.
 * The residual bound: a call whose thread stays between the call
 * instruction and the handler's lookup for longer than that, while a later
 * callback_new or destruction frees the block, reads freed memory.  Every
 * runtime that frees closures has such a window (ctypes frees a closure
 * when its object dies, with no grace at all); LIMBO_NS makes it a thread
 * stalled for a quarter of a second inside a short stretch of libffi's
 * code (its trampoline and argument marshalling) and the handler's entry.
 *
 * Return values.  libffi widens integer returns narrower than ffi_arg to a
 * full ffi_arg, in both directions; the public API passes every value at
 * its exact C type.  The code below converts between the two.
 */
#include <errno.h>
#include <ffi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "annotate.h"
#include "error.h"
#include "ffisig.h"
#include "handle.h"
#include "hooks.h"
#include "pluginreg.h"

static ffi_type *const g_ffi_types[FT__COUNT] = {
    [FT_VOID] = &ffi_type_void,  [FT_I8] = &ffi_type_sint8,
    [FT_U8] = &ffi_type_uint8,   [FT_I16] = &ffi_type_sint16,
    [FT_U16] = &ffi_type_uint16, [FT_I32] = &ffi_type_sint32,
    [FT_U32] = &ffi_type_uint32, [FT_I64] = &ffi_type_sint64,
    [FT_U64] = &ffi_type_uint64, [FT_F32] = &ffi_type_float,
    [FT_F64] = &ffi_type_double, [FT_PTR] = &ffi_type_pointer,
    [FT_STR] = &ffi_type_pointer};

/* Storage for any return value, as libffi reads or writes it. */
union ffi_value {
    ffi_arg u;
    ffi_sarg s;
    uint64_t u64;
    float f32;
    double f64;
    void *ptr;
};

/* A prepared call interface. */
struct call_if {
    struct ffisig sig;
    ffi_cif cif;
    ffi_type *atypes[FFISIG_MAX_ARGS];
};

/* Parses `text` and prepares libffi's description of it. */
static int prepare(const char *fn, const char *text, struct call_if *ci)
{
    struct ffisig_error e;
    if (ffisig_parse(text, &ci->sig, &e) != 0) {
        int n = (int)strlen(text);
        return err_set(TETHER_ESIGNATURE, fn,
                       "bad signature \"%.*s%s\" at column %zu: %s",
                       n > 64 ? 64 : n, text, n > 64 ? "..." : "", e.column,
                       e.what);
    }
    for (unsigned i = 0; i < ci->sig.nargs; i++)
        ci->atypes[i] = g_ffi_types[ci->sig.args[i]];
    if (ffi_prep_cif(&ci->cif, FFI_DEFAULT_ABI, ci->sig.nargs,
                     g_ffi_types[ci->sig.ret], ci->atypes) != FFI_OK)
        return err_set(TETHER_EINVAL, fn,
                       "libffi cannot prepare a call of \"%s\"", text);
    return TETHER_OK;
}

/* Copies a value libffi returned into *out, at the return type's size. */
static void value_from_ffi(int type, const union ffi_value *v, void *out)
{
    int8_t i8; uint8_t u8; int16_t i16; uint16_t u16; int32_t i32; uint32_t u32;
    switch (type) {
    case FT_I8:  i8 = (int8_t)v->s;    memcpy(out, &i8, sizeof i8);   break;
    case FT_U8:  u8 = (uint8_t)v->u;   memcpy(out, &u8, sizeof u8);   break;
    case FT_I16: i16 = (int16_t)v->s;  memcpy(out, &i16, sizeof i16); break;
    case FT_U16: u16 = (uint16_t)v->u; memcpy(out, &u16, sizeof u16); break;
    case FT_I32: i32 = (int32_t)v->s;  memcpy(out, &i32, sizeof i32); break;
    case FT_U32: u32 = (uint32_t)v->u; memcpy(out, &u32, sizeof u32); break;
    default:     memcpy(out, v, ffisig_type_size(type));              break;
    }
}

/* Stores a value of the return type, read from `in`, where libffi expects
   a closure's return value. */
static void value_to_ffi(int type, const void *in, void *ret)
{
    int8_t i8; uint8_t u8; int16_t i16; uint16_t u16; int32_t i32; uint32_t u32;
    switch (type) {
    case FT_VOID: break;
    case FT_I8:  memcpy(&i8, in, sizeof i8);   *(ffi_sarg *)ret = i8;  break;
    case FT_U8:  memcpy(&u8, in, sizeof u8);   *(ffi_arg *)ret = u8;   break;
    case FT_I16: memcpy(&i16, in, sizeof i16); *(ffi_sarg *)ret = i16; break;
    case FT_U16: memcpy(&u16, in, sizeof u16); *(ffi_arg *)ret = u16;  break;
    case FT_I32: memcpy(&i32, in, sizeof i32); *(ffi_sarg *)ret = i32; break;
    case FT_U32: memcpy(&u32, in, sizeof u32); *(ffi_arg *)ret = u32;  break;
    default:     memcpy(ret, in, ffisig_type_size(type));              break;
    }
}

/* ------------------------------------------------------------------------
 * Dynamic calls
 * ---------------------------------------------------------------------- */

int tether_ffi_call(void *fnptr, const char *signature, void **args, void *ret)
{
    static const char fn[] = "tether_ffi_call";
    if (!fnptr || !signature)
        return err_misuse(TETHER_EINVAL, fn,
                          "the function and the signature must not be NULL");
    struct call_if ci;
    int rc = prepare(fn, signature, &ci);
    if (rc != TETHER_OK)
        return rc;
    for (unsigned i = 0; i < ci.sig.nargs; i++)
        if (!args || !args[i])
            return err_misuse(TETHER_EINVAL, fn, "argument %u has no value", i + 1);
    struct plugin *pin;
    if (plugin_pin_code((uintptr_t)fnptr, PLUGIN_PIN_CALL, &pin) != TETHER_OK)
        return err_set(TETHER_ESTATE, fn,
                       "the function is in a plugin that is being unloaded");
    void (*code)(void);
    memcpy(&code, &fnptr, sizeof code); /* ISO C has no object-to-function cast */
    union ffi_value v;
    memset(&v, 0, sizeof v);
    ffi_call(&ci.cif, code, &v, args);
    plugin_unpin(pin, PLUGIN_PIN_CALL);
    if (ret && ci.sig.ret != FT_VOID)
        value_from_ffi(ci.sig.ret, &v, ret);
    return TETHER_OK;
}

/* ------------------------------------------------------------------------
 * Callbacks
 * ---------------------------------------------------------------------- */

static const char NEW[] = "tether_callback_new";
static const char FREE[] = "tether_callback_free";

/* A callback's closure block: what a call reads before it takes g_entry
   (see the top of this file).  Allocated by ffi_closure_alloc, which gives
   room for more than the ffi_closure it must start with; its memory is
   libffi's, not tether's allocator's (tether_set_allocator's functions
   never see it, nor do the tests that count the allocator's blocks). */
struct cblock {
    ffi_closure closure; /* first: libffi's trampoline data */
    /* Synchronization: written by tether_callback_new before the code
       is published, then read-only until the block is freed. */
    struct call_if ci;   /* the cif the trampoline reads, and its types */
    void *code;          /* the closure's executable address */

    /* Synchronization: atomic. */
    _Atomic uint64_t handle; /* the callback's handle; 0 until issued */
    atomic_bool dead;        /* the callback was destroyed */
    atomic_flag reported;    /* a call after the destruction was reported */

    /* Synchronization: g_limbo_mu, once the block is in limbo. */
    struct cblock *next;
    int64_t dead_ns;     /* CLOCK_MONOTONIC time it entered limbo */
};

struct callback {
    /* Synchronization: immutable after tether_callback_new. */
    struct cblock *blk;  /* the closure; to limbo when destroyed */
    tether_interp interp;
    tether_guest_fn fn;
    void *userdata;
    struct plugin *pin; /* a hold on the unloadable plugin holding fn */
    uint64_t handle;
    char text[96];      /* the canonical signature, for messages */

    /* `mu` protects the seven fields after it.  Lock order: a leaf among
       the object mutexes; nothing is taken while holding it. */
    pthread_mutex_t mu;
    pthread_cond_t idle; /* active reached 0 while closing */
    unsigned owners;     /* tether_callback_new's, and one per retain */
    unsigned active;     /* calls inside the handler */
    bool closing;        /* freed: calls that have not reached fn return 0 */
    bool deferred;       /* freed from inside a call: the last call destroys */
    void (*on_free)(void *ud); /* tether_callback_on_free's, or NULL */
    void *on_free_ud;
    struct plugin *on_free_pin; /* a hold on the plugin holding on_free */

    /* Synchronization: atomic. */
    atomic_flag reported; /* the after-finalize line was printed */
};

/* Held for reading by a call from its first instruction in the handler
   until it has counted itself in (or seen the callback closing or gone),
   and for writing, empty-handed, by tether_callback_free: a grace period
   that every such call has left; and by the limbo sweep before it frees
   blocks, so that every look at a block under the read lock happens
   before its memory is reused.  Writers are preferred, so a stream of
   calls cannot starve a free; readers never nest.  Lock order: taken
   before a callback's `mu` and before g_limbo_mu, with nothing else held. */
static pthread_rwlock_t g_entry;
static pthread_once_t g_entry_once = PTHREAD_ONCE_INIT;

/* The limbo: blocks of destroyed callbacks, oldest first, each freed once
   it has been there LIMBO_NS (by the next callback_new or destruction to
   look), or when the library is unloaded.  g_limbo_mu protects the list
   and its fields.  Lock order: a leaf, after g_entry; libffi's own lock
   (ffi_closure_free) is never taken while holding it. */
#define LIMBO_NS 250000000LL
static pthread_mutex_t g_limbo_mu = PTHREAD_MUTEX_INITIALIZER;

/* Held around every ffi_closure_alloc and ffi_closure_free of the library,
   and by the fork handlers: libffi's closure allocator has a mutex of its
   own and no fork handler, so a fork while another thread was inside it
   left that mutex locked in the child, whose first callback_new or sweep
   hung.  Protects nothing of ours.  Lock order: a leaf, after g_entry and
   g_limbo_mu (only the fork handlers hold those while taking it). */
static pthread_mutex_t g_closure_mu = PTHREAD_MUTEX_INITIALIZER;

static void *closure_alloc(size_t size, void **code)
{
    pthread_mutex_lock(&g_closure_mu);
    void *p = ffi_closure_alloc(size, code);
    pthread_mutex_unlock(&g_closure_mu);
    return p;
}

static void closure_free(void *p)
{
    pthread_mutex_lock(&g_closure_mu);
    ffi_closure_free(p);
    pthread_mutex_unlock(&g_closure_mu);
}
static struct cblock *g_limbo_head;
static struct cblock **g_limbo_tail = &g_limbo_head;
static size_t g_limbo_count;

static void entry_lock_init(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
#ifdef __GLIBC__
    pthread_rwlockattr_setkind_np(&a,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&g_entry, &a);
    pthread_rwlockattr_destroy(&a);
}

/* fork: the child's only thread must not find g_entry or g_limbo_mu held
   by a thread that no longer exists there.  Both are held briefly (a call
   counting itself, a list edit), so prepare simply waits them out, and
   the parent lets them go.  In the child an unlock is not enough for
   g_entry: glibc's rwlock unlock tells a writer from a reader by the
   caller's thread id, which in the child is not the one that locked it,
   so it releases a read lock never taken and leaves g_entry write-locked
   (every call and free of a callback in the child then hung).  The child
   unlocks it (for ThreadSanitizer, which otherwise still sees it locked)
   and then makes it anew. */
static void entry_prepare(void)
{
    pthread_rwlock_wrlock(&g_entry);
    pthread_mutex_lock(&g_limbo_mu);
    pthread_mutex_lock(&g_closure_mu);
}
static void entry_parent(void)
{
    pthread_mutex_unlock(&g_closure_mu);
    pthread_mutex_unlock(&g_limbo_mu);
    pthread_rwlock_unlock(&g_entry);
}
static void entry_child(void)
{
    pthread_mutex_unlock(&g_closure_mu);
    pthread_mutex_unlock(&g_limbo_mu);
    pthread_rwlock_unlock(&g_entry);
    entry_lock_init();
}

static void entry_init(void)
{
    entry_lock_init();
    pthread_atfork(entry_prepare, entry_parent, entry_child);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Frees the blocks that have been in limbo LIMBO_NS at `now` (all of them
   if `all`).  Called with no lock held. */
static void limbo_sweep(int64_t now, bool all)
{
    struct cblock *expired = NULL;
    pthread_mutex_lock(&g_limbo_mu);
    while (g_limbo_head &&
           (all || now - g_limbo_head->dead_ns >= LIMBO_NS)) {
        struct cblock *b = g_limbo_head;
        g_limbo_head = b->next;
        b->next = expired;
        expired = b;
        g_limbo_count--;
    }
    if (!g_limbo_head)
        g_limbo_tail = &g_limbo_head;
    pthread_mutex_unlock(&g_limbo_mu);
    if (!expired)
        return;
    /* Every call that looked at these blocks under g_entry has left. */
    pthread_rwlock_wrlock(&g_entry);
    pthread_rwlock_unlock(&g_entry);
    while (expired) {
        struct cblock *b = expired;
        expired = b->next;
#ifdef TETHER_TEST_HOOKS
        memset((char *)b + offsetof(struct cblock, ci), 0,
               sizeof *b - offsetof(struct cblock, ci));
#endif
        closure_free(b);
    }
}

/* Puts a destroyed callback's block in limbo, and frees the expired ones
   (not this one: it is measured against the same clock reading). */
static void limbo_put(struct cblock *blk)
{
    int64_t now = now_ns();
    atomic_store(&blk->dead, true);
    pthread_mutex_lock(&g_limbo_mu);
    blk->next = NULL;
    blk->dead_ns = now;
    *g_limbo_tail = blk;
    g_limbo_tail = &blk->next;
    g_limbo_count++;
    pthread_mutex_unlock(&g_limbo_mu);
    limbo_sweep(now, false);
}

/* Library unload (and process exit): nothing runs the handler's code any
   more once it is unmapped, so the blocks go. */
__attribute__((destructor)) static void limbo_drain(void)
{
    /* (A block in limbo means a callback existed: g_entry is initialized.) */
    limbo_sweep(now_ns(), true);
}

#ifdef TETHER_TEST_HOOKS
/* Tests only (tests/plugin/test_ffi_race.c builds the core with it).
   ffi_test_trampoline_hook runs at the handler's first instruction, before
   it takes g_entry: the end of the trampoline window.
   ffi_test_entry_hook runs in a call's entry window, holding g_entry,
   before the call looks its callback up.  ffi_test_after_entry_hook runs
   in every call just after it has let g_entry go: from there on the call
   must not read its block.  ffi_test_limbo_count says how many blocks are
   in limbo.  In these builds the sweep also overwrites a block's own part
   (after the ffi_closure) with zeros before it frees it, so that a read
   of a freed block shows (libffi's memory is invisible to ASan). */
void (*ffi_test_trampoline_hook)(void);
void (*ffi_test_entry_hook)(void);
void (*ffi_test_after_entry_hook)(void);
size_t ffi_test_limbo_count(void);
size_t ffi_test_limbo_count(void)
{
    pthread_mutex_lock(&g_limbo_mu);
    size_t n = g_limbo_count;
    pthread_mutex_unlock(&g_limbo_mu);
    return n;
}
#endif

/* The callbacks the calling thread is inside of, innermost first. */
struct cb_frame {
    struct callback *cb;
    struct cb_frame *up;
};
/* Synchronization: thread-local. */
static _Thread_local struct cb_frame *t_inside;

/* The handle's destructor: runs once the handle is closed and unused (the
   last owner is gone and no call is inside the handler), with no lock of
   the library held; then tells tether_callback_on_free's function.  The
   closure block goes to limbo: a call may still be on its way in. */
static void callback_destroy(void *obj)
{
    struct callback *cb = obj;
    pthread_mutex_lock(&cb->mu); /* (nobody else reaches cb now) */
    void (*on_free)(void *) = cb->on_free;
    void *on_free_ud = cb->on_free_ud;
    struct plugin *on_free_pin = cb->on_free_pin;
    pthread_mutex_unlock(&cb->mu);
    limbo_put(cb->blk);
    /* The last pin of an orphaned plugin (finalize unloaded it while this
       callback held it) is often this one, freed after the last finalize:
       no later load, unload or finalize may come to dlclose it, so a
       thread that holds no GIL reaps it at once (plugin_unpin_reap's
       rule; API fuzzer seed x12).  A thread attached somewhere leaves it
       to that runtime's finalize, as before. */
    int reap = !tether_gil_held();
    if (reap)
        plugin_unpin_reap(cb->pin, PLUGIN_PIN_HOLD);
    else
        plugin_unpin(cb->pin, PLUGIN_PIN_HOLD);
    pthread_cond_destroy(&cb->idle);
    pthread_mutex_destroy(&cb->mu);
    t_free(cb);
    if (on_free)
        on_free(on_free_ud);
    if (reap) /* on_free has returned */
        plugin_unpin_reap(on_free_pin, PLUGIN_PIN_HOLD);
    else
        plugin_unpin(on_free_pin, PLUGIN_PIN_HOLD);
}

/* A call that reached a destroyed callback (a caller that went on calling
   its code after the free, or one that stalled in the trampoline while the
   free ran): says so once per callback.  Called holding g_entry for
   reading, since a sweep may free the block as soon as the call lets go
   of it: it only claims the report and formats the signature into `text`
   (printed after the unlock).  Returns whether there is a line to print. */
static bool claim_freed_report(struct cblock *blk, char *text, size_t size)
{
    if (atomic_flag_test_and_set(&blk->reported))
        return false;
    ffisig_format(&blk->ci.sig, text, size);
    return true;
}

/* Looks the block's callback up and counts a call in, unless it was freed;
   stores the return type in *type either way.  Returns the callback, or
   NULL (it was freed: the call returns zero).  The callback stays alive
   until leave. */
static struct callback *enter(struct cblock *blk, struct cb_frame *fr,
                              int *type)
{
    pthread_rwlock_rdlock(&g_entry);
#ifdef TETHER_TEST_HOOKS
    if (ffi_test_entry_hook)
        ffi_test_entry_hook();
#endif
    *type = blk->ci.sig.ret;
    uint64_t h = atomic_load(&blk->handle);
    struct callback *cb = handle_get(h, HT_CALLBACK);
    bool open = false;
    if (cb) {
        pthread_mutex_lock(&cb->mu);
        open = !cb->closing;
        if (open)
            cb->active++;
        pthread_mutex_unlock(&cb->mu);
        /* Never the last reference: this lookup succeeded, so the handle
           was open and a free's grace period (g_entry for writing) has yet
           to end, and the free holds its own reference until then. */
        handle_put(h);
    }
    /* The block is not read after the unlock (a sweep may free it). */
    char text[96];
    bool report = !cb && atomic_load(&blk->dead) &&
                  claim_freed_report(blk, text, sizeof text);
    pthread_rwlock_unlock(&g_entry);
#ifdef TETHER_TEST_HOOKS
    if (ffi_test_after_entry_hook)
        ffi_test_after_entry_hook();
#endif
    if (report)
        fprintf(stderr, "tether: callback %s was called after it was freed; "
                "it returns zero\n", text);
    if (!open)
        return NULL;
    fr->cb = cb;
    fr->up = t_inside;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
/* leave() pops the frame before on_call returns: it never dangles. */
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
    t_inside = fr;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
    return cb;
}

/* Counts a call out; the last one wakes a waiting free, or does a deferred
   one.  `cb` may be gone when this returns. */
static void leave(struct callback *cb, struct cb_frame *fr)
{
    t_inside = fr->up;
    pthread_mutex_lock(&cb->mu);
    bool last = --cb->active == 0 && cb->closing;
    bool destroy = last && cb->deferred;
    if (last && !destroy)
        pthread_cond_broadcast(&cb->idle);
    pthread_mutex_unlock(&cb->mu);
    if (destroy)
        handle_put(cb->handle); /* the reference the free left to us */
}

static bool is_closing(struct callback *cb)
{
    pthread_mutex_lock(&cb->mu);
    bool closing = cb->closing;
    pthread_mutex_unlock(&cb->mu);
    return closing;
}

/* A call that could not attach: after finalize it says so once, since the
   runtime and its excepthook are gone; anything else every time. */
static void report_detached(struct callback *cb, int rc)
{
    if (rc == TETHER_EFINALIZING || rc == TETHER_EBADHANDLE) {
        if (!atomic_flag_test_and_set(&cb->reported))
            fprintf(stderr,
                    "tether: callback %s was called after its interpreter "
                    "was finalized; it returns zero\n", cb->text);
        return;
    }
    fprintf(stderr, "tether: callback %s could not attach (%s); it returns "
            "zero\n", cb->text, tether_last_error());
}

/* Runs the guest under the GIL, with errno at *err before and saved to
   *err after.  Returns its status (non-OK: the caller gets zero). */
static int run_guest(struct callback *cb, void **args, void *ret, int *err)
{
    tether_gilstate g;
    int rc = ensure_internal(cb->interp, &g);
    if (rc != TETHER_OK) {
        report_detached(cb, rc);
        return rc;
    }
    if (is_closing(cb)) { /* freed while this call waited for the GIL */
        tether_release(g);
        return TETHER_ESTATE;
    }
    errno = *err;
    rc = cb->fn(args, ret, cb->userdata);
    *err = errno;
    if (rc != TETHER_OK) {
        char msg[512];
        const char *why = tether_last_error();
        snprintf(msg, sizeof msg, "callback %s failed with %s%s%s", cb->text,
                 tether_status_name(rc), *why ? ": " : "", why);
        runtime_report_error(cb->interp, rc, msg);
    }
    tether_release(g);
    return rc;
}

/* The closure's handler: what every call of the callback's code runs.
   errno is the guest's business: the caller sees it as the guest left it,
   and the guest as the caller left it, whatever attaching did meanwhile.
   Before enter() it touches nothing but its arguments: `arg` is the
   closure block, which outlives the callback (see the top of this file). */
static void on_call(ffi_cif *cif, void *ret, void **args, void *arg)
{
#ifdef TETHER_TEST_HOOKS
    if (ffi_test_trampoline_hook)
        ffi_test_trampoline_hook();
#endif
    struct cblock *blk = arg;
    int err = errno;
    int type;
    union ffi_value v;
    struct cb_frame fr;
    (void)cif;
    memset(&v, 0, sizeof v);
    struct callback *cb = enter(blk, &fr, &type);
    if (cb) {
        if (run_guest(cb, args, type == FT_VOID ? NULL : &v, &err) != TETHER_OK)
            memset(&v, 0, sizeof v);
        leave(cb, &fr);
    }
    value_to_ffi(type, &v, ret);
    errno = err;
}

/* Allocates the closure block, prepares its call interface from
   `signature` and its closure.  Returns TETHER_OK and the block in *out, or
   a status (nothing allocated). */
static int make_closure(const char *signature, struct cblock **out)
{
    void *code;
    struct cblock *blk = closure_alloc(sizeof *blk, &code);
    if (!blk)
        return err_set(TETHER_ENOMEM, NEW, "libffi could not allocate a closure");
    memset(&blk->ci, 0, sizeof blk->ci);
    blk->code = code;
    atomic_init(&blk->handle, 0);
    atomic_init(&blk->dead, false);
    atomic_flag_clear(&blk->reported);
    /* atomics only (helgrind, DRD: annotate.h); libffi's memory, so the
       tools never see it freed: a reused block is announced again here. */
    ann_atomic(blk->handle);
    ann_atomic(blk->dead);
    ann_atomic(blk->reported);
    blk->next = NULL;
    blk->dead_ns = 0;
    /* The cif points to its argument types: both in the block. */
    int rc = prepare(NEW, signature, &blk->ci);
    if (rc == TETHER_OK &&
        ffi_prep_closure_loc(&blk->closure, &blk->ci.cif, on_call, blk, code) !=
            FFI_OK)
        rc = err_set(TETHER_EINVAL, NEW, "libffi could not prepare a closure");
    if (rc != TETHER_OK) {
        closure_free(blk); /* never published: no call can reach it */
        return rc;
    }
    *out = blk;
    return TETHER_OK;
}

/* Pins fn's plugin, then issues the handle. */
static int publish(struct callback *cb)
{
    if (plugin_pin_code((uintptr_t)cb->fn, PLUGIN_PIN_HOLD, &cb->pin) != TETHER_OK)
        return err_set(TETHER_ESTATE, NEW,
                       "the guest function is in a plugin that is being unloaded");
    char name[sizeof cb->text + 16];
    snprintf(name, sizeof name, "callback %s", cb->text);
    if (handle_new(HT_CALLBACK, cb, callback_destroy, name, &cb->handle) != 0) {
        plugin_unpin(cb->pin, PLUGIN_PIN_HOLD);
        return err_set(TETHER_ENOMEM, NEW, "out of memory");
    }
    /* Before the code is handed out: a call finds its callback by this. */
    atomic_store(&cb->blk->handle, cb->handle);
    return TETHER_OK;
}

int tether_callback_new(tether_interp interp, const char *signature,
                        tether_guest_fn fn, void *userdata, tether_callback *out)
{
    if (!signature || !fn || !out)
        return err_misuse(TETHER_EINVAL, NEW,
                          "signature, fn and out must not be NULL");
    pthread_once(&g_entry_once, entry_init); /* before any code exists */
    if (!handle_get_or_misuse(interp, HT_INTERP, NEW))
        return TETHER_EBADHANDLE;
    handle_put(interp);
    limbo_sweep(now_ns(), false); /* room for this one */
    struct callback *cb = t_calloc(1, sizeof *cb);
    if (!cb)
        return err_set(TETHER_ENOMEM, NEW, "out of memory");
    int rc = make_closure(signature, &cb->blk);
    if (rc != TETHER_OK) {
        t_free(cb);
        return rc;
    }
    cb->interp = interp;
    cb->fn = fn;
    cb->userdata = userdata;
    cb->owners = 1;
    ffisig_format(&cb->blk->ci.sig, cb->text, sizeof cb->text);
    pthread_mutex_init(&cb->mu, NULL);
    pthread_cond_init(&cb->idle, NULL);
    atomic_flag_clear(&cb->reported);
    ann_atomic(cb->reported); /* atomics only (helgrind, DRD: annotate.h) */
    rc = publish(cb);
    if (rc != TETHER_OK) {
        closure_free(cb->blk); /* never published */
        pthread_cond_destroy(&cb->idle);
        pthread_mutex_destroy(&cb->mu);
        t_free(cb);
        return rc;
    }
    *out = cb->handle;
    return TETHER_OK;
}

void *tether_callback_code(tether_callback h)
{
    struct callback *cb = handle_get_or_misuse(h, HT_CALLBACK,
                                               "tether_callback_code");
    if (!cb)
        return NULL;
    void *code = cb->blk->code;
    handle_put(h);
    return code;
}

static bool inside(const struct callback *cb)
{
    for (const struct cb_frame *fr = t_inside; fr; fr = fr->up)
        if (fr->cb == cb)
            return true;
    return false;
}

/* Waits until no call is active, then drops the free's reference (which
   destroys the callback).  A caller holding a GIL lets go of it meanwhile:
   the calls may be waiting for it.  Not interruptible, since the calls end
   by themselves; what re-attaching finds is returned. */
static int wait_idle(struct callback *cb)
{
    tether_tstate ts = 0;
    bool attached = tether_gil_held() && tether_save_thread(&ts) == TETHER_OK;
    pthread_mutex_lock(&cb->mu);
    while (cb->active > 0)
        pthread_cond_wait(&cb->idle, &cb->mu);
    pthread_mutex_unlock(&cb->mu);
    handle_put(cb->handle);
    return attached ? tether_restore_thread(ts) : TETHER_OK;
}

int tether_callback_retain(tether_callback h)
{
    static const char fn[] = "tether_callback_retain";
    struct callback *cb = handle_get_or_misuse(h, HT_CALLBACK, fn);
    if (!cb)
        return TETHER_EBADHANDLE;
    pthread_mutex_lock(&cb->mu);
    bool alive = cb->owners > 0;
    if (alive)
        cb->owners++;
    pthread_mutex_unlock(&cb->mu);
    handle_put(h);
    if (!alive)
        return err_misuse(TETHER_EBADHANDLE, fn, "not a callback handle "
                          "(0x%llx): it is being freed", (unsigned long long)h);
    return TETHER_OK;
}

int tether_callback_on_free(tether_callback h, void (*fn)(void *ud), void *ud)
{
    static const char fn_name[] = "tether_callback_on_free";
    if (!fn)
        return err_misuse(TETHER_EINVAL, fn_name, "fn must not be NULL");
    struct callback *cb = handle_get_or_misuse(h, HT_CALLBACK, fn_name);
    if (!cb)
        return TETHER_EBADHANDLE;
    /* fn in an unloadable plugin keeps it mapped until fn has run. */
    struct plugin *pin;
    if (plugin_pin_code((uintptr_t)fn, PLUGIN_PIN_HOLD, &pin) != TETHER_OK) {
        handle_put(h);
        return err_set(TETHER_ESTATE, fn_name,
                       "fn is in a plugin that is being unloaded");
    }
    pthread_mutex_lock(&cb->mu);
    bool alive = cb->owners > 0;
    struct plugin *old = pin;
    if (alive) {
        cb->on_free = fn;
        cb->on_free_ud = ud;
        old = cb->on_free_pin;
        cb->on_free_pin = pin;
    }
    pthread_mutex_unlock(&cb->mu);
    plugin_unpin(old, PLUGIN_PIN_HOLD); /* the replaced one's, or ours */
    handle_put(h);
    if (!alive)
        return err_misuse(TETHER_EBADHANDLE, fn_name, "not a callback handle "
                          "(0x%llx): it is being freed", (unsigned long long)h);
    return TETHER_OK;
}

/* Drops one owner; the last one frees the callback.  `fn` names the
   public function for messages. */
static int drop_owner(tether_callback h, const char *fn)
{
    if (h == 0)
        return TETHER_OK;
    struct callback *cb = handle_get_or_misuse(h, HT_CALLBACK, fn);
    if (!cb)
        return TETHER_EBADHANDLE;
    pthread_mutex_lock(&cb->mu);
    bool alive = cb->owners > 0;
    bool last = alive && --cb->owners == 0;
    if (last)
        cb->closing = true;
    pthread_mutex_unlock(&cb->mu);
    if (!last) {
        handle_put(h);
        if (!alive) /* another thread dropped the last owner first */
            return err_misuse(TETHER_EBADHANDLE, fn,
                              "not a callback handle (0x%llx): it is being "
                              "freed", (unsigned long long)h);
        return TETHER_OK; /* other owners keep it */
    }
    /* The last owner: close the handle; from here our reference from
       handle_get is the only one that keeps the callback alive, apart from
       lookups in progress. */
    handle_close(h, HT_CALLBACK);
    /* The grace period: calls still in their entry window count in now. */
    pthread_rwlock_wrlock(&g_entry);
    pthread_rwlock_unlock(&g_entry);
    pthread_mutex_lock(&cb->mu);
    bool busy = cb->active > 0;
    bool deferred = cb->deferred = busy && inside(cb);
    pthread_mutex_unlock(&cb->mu);
    if (!busy) {
        handle_put(h);
        return TETHER_OK;
    }
    if (deferred) /* cb may already be gone: the last call destroys it */
        return TETHER_OK;
    return wait_idle(cb);
}

int tether_callback_free(tether_callback h) { return drop_owner(h, FREE); }

int tether_callback_release(tether_callback h)
{
    return drop_owner(h, "tether_callback_release");
}
