/*
 * plugin.c - the plugin loader: dlopen, entry negotiation, load, unload
 * and finalize, and unload safety.  It calls the public API (ensure, save
 * and restore, tether_call_blocking), so it stands on the top floor; the
 * registry of records and the pins that every floor takes are
 * pluginreg.c's, on a low one.
 *
 * A load goes through two phases.  The first runs without the caller's GIL
 * (opening a library runs its constructors, which may want the GIL):
 * dlopen, then either find the library already loaded into this runtime,
 * or call its entry, check the descriptor and build a candidate record.
 * The second runs with the GIL back: under the registry lock, take a
 * reference on the loaded record or insert the candidate as LOADING, then
 * run init and publish it.  A load that meets a record of the same library
 * still LOADING goes back to the first phase and waits there, without the
 * GIL that the other load's init needs.
 *
 * The states of a record:
 *
 *   LOADING --init ok--> LOADED --last unload--> DRAINING --calls 0--> FINALIZED
 *      |                   ^                        |    library idle      |
 *   init failed            +-- a load, timeout, ----+       holds 0, dlclose
 *      v                       own init or fini                            v
 *   (removed)                                                       (removed)
 *
 * DRAINING waits for calls into the plugin (PLUGIN_PIN_CALL, see plugin.h),
 * and until no init or fini of its library runs in any runtime (below),
 * before fini runs; FINALIZED waits for callbacks and threads into an
 * unloadable plugin (PLUGIN_PIN_HOLD) before it is dlclosed.  A load that
 * finds its library DRAINING takes it back; one that finds it FINALIZED
 * makes a new record (the old one only waits to unmap).  A removed record
 * is GONE: an unloader that still holds a reference to it finds nothing
 * left to do.
 *
 * Every unload of the last reference remembers the record's epoch; a load
 * that takes the record back bumps it, and from then on the old unloader
 * only leaves (its reference became the taker's), whatever it finds.
 *
 * Orphans.  A record whose init failed, or that tether_runtime_finalize
 * unloaded, has no handle left, yet code of the plugin may still run (a
 * thread init started, a call in progress).  It stays FINALIZED and mapped
 * until its pins are gone; the last unpin moves it to the zombie list, and
 * the next load, unload or finalize, holding no GIL, dlcloses it
 * (reg_reap).  A thread whose start function is the plugin's dlcloses it
 * itself when its pin is the last (plugin_unpin_reap, at the end of its
 * bootstrap): after a finalize no later call may come to do it.
 * A plugin that is not unloadable is never unmapped at all, nor is one
 * finalize abandoned without its fini (reg_pin_mapping).
 * Every pin holds a reference to the record's handle, so an unpin never
 * touches freed memory.
 *
 * Libraries are keyed by their dlopen handle, which is the same for every
 * path that names the same file, and by runtime: a library loaded into two
 * runtimes has two records, each with its own init and fini.  The records
 * share the library's statics, so the init and fini calls of one library
 * never run at the same time, across all runtimes: a load waits while an
 * init or fini of its library runs in any runtime (wait_loading, reg_busy),
 * and so does an unload's fini (drain, wait_quiet), a record's DRAINING
 * lasting until then.  (An unload's fini used to wait only for calls: one
 * runtime's fini ran beside another's init, a data race on the plugin's
 * statics that ThreadSanitizer saw in plugin_finalize_race.)  A thread
 * never waits for an init or fini it runs itself, nor while it runs code
 * of the plugin (which an init or fini may be waiting for): a load then
 * answers TETHER_EDEADLK, an unload TETHER_EDEADLK with the record as it
 * was, and finalize abandons the plugin without its fini.  An unload's
 * timeout bounds this wait as it bounds the wait for calls: the plugin
 * stays loaded.
 */
#include "plugin.h"
#include "pluginreg.h"
#include "delay.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "alloc.h"
#include "annotate.h"
#include "error.h"
#include "handle.h"
#include "platform.h"
#include "plugindesc.h"
#include "trace.h"

/* Internal outcomes, apart from the statuses: a load's first phase must
   start over; an unload found its record taken back by a load; an unload
   found the calling thread itself running the init or fini it would wait
   for. */
#define RETRY 1
#define TAKEN_BACK 2
#define OWN_BUSY 3

/* What dl_iterate_phdr looks for: the object loaded at `base` as `name`,
   or, when `name` is NULL, the object one of whose segments holds `addr`. */
struct image_query {
    uintptr_t base;
    const char *name;
    uintptr_t addr;
    uintptr_t lo, hi;
};

static int image_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct image_query *q = arg;
    (void)size;
    if (q->name && (info->dlpi_addr != q->base ||
                    strcmp(info->dlpi_name, q->name) != 0))
        return 0;
    uintptr_t lo_all = UINTPTR_MAX, hi_all = 0;
    bool holds = q->name != NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (q->addr >= lo && q->addr < lo + ph->p_memsz)
            holds = true;
        if (lo < lo_all)
            lo_all = lo;
        if (lo + ph->p_memsz > hi_all)
            hi_all = lo + ph->p_memsz;
    }
    if (!holds)
        return 0;
    q->lo = lo_all;
    q->hi = hi_all;
    return 1;
}

/* Finds the address range that library `dl` is mapped at.  The object is
   found by the address of its entry, which dladdr1 confirms is in `dl`
   itself: the fields of the loader's link_map are not read here, since the
   dlopen of another thread may have written them under the loader's own
   lock, which ThreadSanitizer does not see (it reported a race on every
   few concurrent first loads).  An entry defined by a dependency instead
   falls back to reading the link_map. */
static int image_range(void *dl, uintptr_t *lo, uintptr_t *hi)
{
    struct link_map *lm;
    void *owner = NULL;
    if (dlinfo(dl, RTLD_DI_LINKMAP, &lm) != 0)
        return -1;
    struct image_query q = {0, NULL, 0, UINTPTR_MAX, 0};
    void *sym = dlsym(dl, "tether_plugin_entry");
    Dl_info di;
    if (sym && dladdr1(sym, &di, &owner, RTLD_DL_LINKMAP) &&
        owner == (void *)lm)
        q.addr = (uintptr_t)sym;
    else {
        q.base = lm->l_addr;
        q.name = lm->l_name;
    }
    if (dl_iterate_phdr(image_cb, &q) == 0 || q.hi == 0)
        return -1;
    *lo = q.lo;
    *hi = q.hi;
    return 0;
}

/* Whether the calling thread is running code of the image [lo, hi): a
   return address in it on the thread's stack (a callback called from one
   of a plugin's workers, a function of it called directly or through
   tether_ffi_call, a thread started with a function of it, its init or
   fini).  Such a thread must not wait for the plugin's init or fini, nor
   unload it: it would return into the plugin after its fini, or into
   unmapped code.  Every frame is looked at, however deep the stack (a
   guest may recurse far below the plugin's frame).  Called holding no lock:
   the first backtrace loads the unwinder. */
static bool stack_in(uintptr_t lo, uintptr_t hi)
{
    void *small[256];
    void **frames = small;
    int cap = 256;
    int n = backtrace(frames, cap);
    while (n == cap && cap < (1 << 22)) { /* maybe cut short: look deeper */
        void **bigger = t_malloc(2 * (size_t)cap * sizeof *bigger);
        if (!bigger)
            break; /* judge by the frames we have */
        if (frames != small)
            t_free(frames);
        frames = bigger;
        cap *= 2;
        n = backtrace(frames, cap);
    }
    bool in = false;
    for (int i = 0; i < n && !in; i++)
        in = (uintptr_t)frames[i] >= lo && (uintptr_t)frames[i] < hi;
    if (frames != small)
        t_free(frames);
    return in;
}

/* ------------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------------- */

static const char LOAD[] = "tether_plugin_load";

/* One load, carried through its phases. */
struct load {
    tether_runtime rt;
    tether_interp interp;
    const char *path;
    void *dl;             /* our dlopen reference, while we have one */
    struct plugin *fresh; /* a candidate record, or NULL if already loaded */
};

/* Opens the library, with a message that tells a missing file from a file
   the dynamic loader refuses. */
static int open_library(struct load *l)
{
    struct stat st;
    if (strchr(l->path, '/') && stat(l->path, &st) != 0)
        return err_set(TETHER_EPLUGIN, LOAD, "cannot open plugin '%s': %s",
                       l->path, strerror(errno));
    dlerror();
    l->dl = dlopen(l->path, RTLD_NOW | RTLD_LOCAL);
    if (!l->dl)
        return err_set(TETHER_EPLUGIN, LOAD,
                       "'%s' is not a loadable shared object: %s", l->path,
                       dlerror());
    return TETHER_OK;
}

/* Calls the library's entry and checks what it returns (plugindesc.c:
   every way a descriptor can be wrong has its own message). */
static int negotiate(struct load *l, const tether_plugin_desc **out)
{
    dlerror();
    void *sym = dlsym(l->dl, "tether_plugin_entry");
    if (!sym)
        return err_set(TETHER_EPLUGIN, LOAD,
                       "'%s' has no tether_plugin_entry, so it is not a "
                       "tether plugin: %s", l->path, dlerror());
    tether_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* ISO C has no object-to-function cast */
    const tether_plugin_desc *d = entry(TETHER_ABI_VERSION);
    char why[PLUGINDESC_MSG];
    int rc = plugindesc_check(d, PLUGINDESC_UNBOUNDED, l->path, why,
                              sizeof why);
    if (rc != TETHER_OK)
        return err_set(rc, LOAD, "%s", why);
    *out = d;
    return TETHER_OK;
}

/* Builds the candidate record of a library not loaded yet. */
static int make_record(struct load *l, const tether_plugin_desc *d)
{
    struct plugin *p = t_calloc(1, sizeof *p);
    if (!p)
        goto nomem;
    p->rt = l->rt;
    p->interp = l->interp;
    p->dl = l->dl;
    p->desc = d;
    p->path = t_strdup(l->path);
    p->name = t_strdup(d->name);
    p->version = t_strdup(d->version ? d->version : "");
    if (!p->path || !p->name || !p->version)
        goto nomem;
    p->unloadable = (d->flags & TETHER_PLUGIN_UNLOADABLE) != 0;
    if (image_range(l->dl, &p->lo, &p->hi) != 0) {
        plugin_destroy(p);
        return err_set(TETHER_EPLUGIN, LOAD,
                       "cannot find where '%s' is mapped", l->path);
    }
    if (handle_new(HT_PLUGIN, p, plugin_destroy, p->name, &p->handle) != 0)
        goto nomem;
    l->fresh = p;
    return TETHER_OK;
nomem:
    if (p)
        plugin_destroy(p);
    return err_set(TETHER_ENOMEM, LOAD, "out of memory loading '%s'", l->path);
}

/* Drops whatever the first phase left: the candidate and our reference. */
static void discard(struct load *l)
{
    if (l->fresh) {
        handle_close(l->fresh->handle, HT_PLUGIN); /* frees the record */
        l->fresh = NULL;
    }
    if (l->dl) {
        dlclose(l->dl);
        l->dl = NULL;
    }
}

/* Whether the calling thread runs the init or the fini that makes `busy`
   busy (reg_busy).  Called with the registry lock held. */
static bool runs_it(const struct plugin *busy)
{
    return pthread_equal(busy->st == PS_LOADING ? busy->loader : busy->finier,
                         pthread_self());
}

/* Waits, without any GIL, while a record of this library is LOADING or
   running its fini, in any runtime.  A thread that runs code of the plugin
   does not wait: the init or fini may be waiting for it (a fini joining
   the plugin's threads, or the fini itself), so it gets TETHER_EDEADLK.
   Returns TETHER_OK with *found telling whether it is loaded. */
static int wait_loading(struct load *l, bool *found)
{
    int rc = TETHER_OK;
    bool looked = false, in_code = false;
    reg_lock();
    struct plugin *p;
    while ((p = reg_busy(l->dl))) {
        bool loading = p->st == PS_LOADING;
        bool mine = runs_it(p);
        if (!mine && !looked) {
            /* Every record of the library has the same image. */
            uintptr_t lo = p->lo, hi = p->hi;
            reg_unlock();
            in_code = stack_in(lo, hi);
            looked = true;
            reg_lock();
            continue; /* the record may have changed meanwhile */
        }
        if (mine && loading) {
            rc = err_set(TETHER_EDEADLK, LOAD,
                         "the init of '%s' loads the plugin itself", l->path);
            break;
        }
        if (mine || in_code) {
            rc = err_set(TETHER_EDEADLK, LOAD,
                         "the %s of '%s' is running, and the calling thread "
                         "is running code of the plugin (%s, or a thread it "
                         "may be waiting for); load it from another thread",
                         loading ? "init" : "fini", p->name,
                         loading ? "the init" : "the fini");
            break;
        }
        TETHER_DELAY_POINT("load.wait_busy"); /* (the registry lock held) */
        reg_wait(NULL);
    }
    *found = reg_find(l->dl, l->rt) != NULL;
    reg_unlock();
    return rc;
}

/* The first phase, run without the caller's GIL. */
static int load_open(struct load *l)
{
    reg_reap();
    int rc = open_library(l);
    bool found = false;
    if (rc == TETHER_OK)
        rc = wait_loading(l, &found);
    if (rc == TETHER_OK && !found) {
        const tether_plugin_desc *d = NULL;
        rc = negotiate(l, &d);
        if (rc == TETHER_OK)
            rc = make_record(l, d);
    }
    if (rc != TETHER_OK)
        discard(l);
    return rc;
}

/* Runs the first phase with the caller's GIL released, if it holds one. */
static int load_open_released(struct load *l)
{
    if (!tether_gil_held())
        return load_open(l);
    tether_tstate ts;
    int rc = tether_save_thread(&ts);
    if (rc != TETHER_OK)
        return load_open(l);
    rc = load_open(l);
    int rrc = tether_restore_thread(ts);
    if (rrc == TETHER_OK)
        return rc;
    if (rc == TETHER_OK)
        discard(l);
    return err_set(rrc, LOAD, "interrupted while opening '%s' (%s)", l->path,
                   tether_strerror(rrc));
}

/* The second phase, under the registry lock: takes a reference on the
   loaded record, or inserts the candidate.  Returns RETRY when the first
   phase must run again. */
static int load_admit(struct load *l, tether_plugin *out)
{
    reg_lock();
    if (reg_busy(l->dl)) { /* an init or a fini began meanwhile */
        reg_unlock();
        discard(l);
        return RETRY;
    }
    struct plugin *p = reg_find(l->dl, l->rt);
    if (p && p->st != PS_LOADING) {
        if (p->st == PS_DRAINING) { /* take it back from its unloader */
            p->st = PS_LOADED;
            p->unloading = false;
            p->epoch++;
            reg_broadcast();
        }
        p->refs++;
        *out = p->handle;
        reg_unlock();
        discard(l);
        return TETHER_OK;
    }
    if (p || !l->fresh) {
        reg_unlock(); /* LOADING elsewhere, or gone since the first phase */
        discard(l);
        return RETRY;
    }
    p = l->fresh;
    p->st = PS_LOADING;
    p->refs = 1;
    p->loader = pthread_self();
    reg_insert(p);
    reg_unlock();
    return TETHER_OK;
}

/* Runs init, with the host API `api`, holding the main interpreter's
   GIL. */
static int run_init(struct plugin *p, const tether_host_api *api)
{
    if (!p->desc->init)
        return TETHER_OK;
    tether_gilstate g;
    int rc = tether_ensure(p->interp, &g);
    if (rc != TETHER_OK)
        return err_set(rc, LOAD, "cannot attach to run the init of '%s': %s",
                       p->path, tether_strerror(rc));
    tether_set_error(TETHER_OK, ""); /* what init leaves here is its reason */
    TETHER_DELAY_POINT("load.init");
    rc = p->desc->init(api, p->interp, &p->state);
    char why[512]; /* as long as any sentence: err_set cuts it whole */
    snprintf(why, sizeof why, "%s", tether_last_error());
    tether_release(g);
    if (rc != TETHER_OK)
        return err_set(TETHER_EPLUGIN, LOAD,
                       "the init of plugin '%s' (%s) failed with %s (%d)%s%s",
                       p->name, p->path, tether_status_name(rc), rc,
                       why[0] ? ": " : "", why);
    return TETHER_OK;
}

/* Runs fini of a record whose init succeeded after its runtime's finalize
   gave up waiting for it (doomed), holding no GIL, then makes it an orphan
   like any failed load.  Returns the load's status.
   Unlike drain's, this fini need not wait for another init or fini of the
   library: the record has been busy since it was inserted (LOADING, then
   in_fini in the same hold of the lock), it was inserted only when no
   record of its library was busy (load_admit), and no init or fini of the
   library starts while one is busy (wait_loading, wait_quiet). */
static int unload_doomed(struct plugin *p)
{
    tether_tstate ts = 0;
    bool saved = tether_gil_held() && tether_save_thread(&ts) == TETHER_OK;
    if (p->desc->fini)
        p->desc->fini(p->state);
    if (saved)
        (void)tether_restore_thread(ts); /* (its runtime may be gone) */
    reg_lock();
    p->in_fini = false;
    reg_orphan(p);
    reg_broadcast();
    reg_unlock();
    return err_set(TETHER_EFINALIZING, LOAD, "the runtime was finalized "
                   "while the init of '%s' ran; its fini ran and the plugin "
                   "is unloaded again", p->name);
}

/* Ends a LOADING record: publishes it, or, when init failed, unloads it
   by the rules of an unload without fini: whatever init started may still
   run plugin code, so the library stays mapped while anything pins it (for
   ever unless it is unloadable).  The record then has no handle.  A record
   whose runtime was finalized while its init ran is unloaded again, with
   its fini. */
static int load_finish(struct load *l, int rc)
{
    struct plugin *p = l->fresh;
    reg_pin_mapping(p, false);
    reg_lock();
    bool doomed = rc == TETHER_OK && p->doomed;
    if (doomed) {
        p->st = PS_FINALIZED;
        p->in_fini = true;
        p->finier = pthread_self();
    } else if (rc == TETHER_OK) {
        p->st = PS_LOADED;
    } else {
        reg_orphan(p);
    }
    reg_broadcast();
    reg_unlock();
    l->fresh = NULL;
    l->dl = NULL; /* the record's now, or the zombie's */
    if (doomed)
        rc = unload_doomed(p);
    if (rc != TETHER_OK) {
        handle_close(p->handle, HT_PLUGIN);
        reg_reap(); /* at once when nothing pins it */
    }
    return rc;
}

int plugin_load(tether_runtime rt, const char *path, const tether_host_api *api,
                tether_plugin *out)
{
    if (!path || !out)
        return err_misuse(TETHER_EINVAL, LOAD, "path and out must not be NULL");
    struct load l = {.rt = rt, .path = path};
    if (tether_runtime_main_interp(rt, &l.interp) != TETHER_OK)
        return err_misuse(TETHER_EBADHANDLE, LOAD,
                          "not a runtime handle (0x%llx)", (unsigned long long)rt);
    int rc;
    do {
        rc = load_open_released(&l);
        if (rc == TETHER_OK)
            rc = load_admit(&l, out);
    } while (rc == RETRY);
    if (rc != TETHER_OK || !l.fresh)
        return rc;
    struct plugin *p = l.fresh;
    /* Read before the record is published: from then on a finalize of the
       runtime may unload and free it before this thread runs on. */
    uint64_t handle = p->handle;
    rc = run_init(p, api);
    TETHER_DELAY_POINT("load.init.done"); /* GIL released, not published */
    rc = load_finish(&l, rc);
    if (rc == TETHER_OK)
        *out = handle;
    return rc;
}

/* ------------------------------------------------------------------------
 * Unloading
 * ---------------------------------------------------------------------- */

static const char UNLOAD[] = "tether_plugin_unload";

/* The last unload of one record. */
struct unload {
    struct plugin *p;
    uint32_t epoch;           /* the record's epoch when it began */
    bool forever;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    bool interrupted;         /* Synchronization: the registry lock */
    bool ran;                 /* unload_last started */
};

static void set_deadline(struct unload *u, int64_t timeout_ns)
{
    u->forever = timeout_ns < 0;
    clock_gettime(CLOCK_MONOTONIC, &u->deadline);
    if (timeout_ns <= 0)
        return;
    u->deadline.tv_sec += (time_t)(timeout_ns / 1000000000);
    u->deadline.tv_nsec += (long)(timeout_ns % 1000000000);
    if (u->deadline.tv_nsec >= 1000000000) {
        u->deadline.tv_sec++;
        u->deadline.tv_nsec -= 1000000000;
    }
}

/* Whether a load took the record back since the unload began: then the
   unload's reference is gone and the plugin stays.  Called with the registry lock
   held. */
static bool taken_back(const struct unload *u)
{
    return u->p->refs > 0 || u->p->epoch != u->epoch;
}

/* Waits until *count is zero, a load takes the record back, the deadline
   passes or the unload is interrupted.  Called with the registry lock held. */
static void wait_zero(struct unload *u, const uint32_t *count)
{
    while (*count > 0 && !taken_back(u) && !u->interrupted) {
        if (reg_wait(u->forever ? NULL : &u->deadline) == ETIMEDOUT)
            return;
    }
}

/* The unblock function: an asynchronous exception or finalize cuts the
   wait short. */
static void unload_unblock(void *arg)
{
    struct unload *u = arg;
    reg_lock();
    u->interrupted = true;
    reg_broadcast();
    reg_unlock();
}

/* Why a wait ended without reaching zero.  Called with the registry lock held. */
static int wait_failed(struct unload *u, const char *what)
{
    u->p->unloading = false;
    if (u->interrupted)
        return err_set(TETHER_EASYNC, UNLOAD,
                       "unloading '%s' was interrupted while %s",
                       u->p->name, what);
    return err_set(TETHER_ETIMEDOUT, UNLOAD,
                   "timed out unloading '%s': %s", u->p->name, what);
}

/* Waits until no call into the plugin is in progress and no init or fini
   of its library runs, in any runtime (reg_busy: every record of the
   library shares its statics, so this fini must not run beside another
   record's init or fini), or until a load takes the record back, the
   deadline passes or the unload is interrupted.  The two are waited for
   together: a call may begin while an init runs.
   A thread that runs the busy init or fini itself (it unloads from inside
   it, and the stack walk missed the plugin's frame: a tail call) would
   wait for ever: then this returns true at once.  A thread running other
   code of the plugin (one its init may be joining) never gets here: both
   callers refused it already (on_stack, over the same image).
   Finalize waits here too, holding no GIL (its caller's was let go) and
   no lock, its own runtime's threads joined or stopped; the init it waits
   for runs in another runtime, holding that runtime's GIL.  Nothing that
   init can wait for through tether is the finalizer's: an ensure of the
   finalizing runtime, or a thread start in it, answers TETHER_EFINALIZING
   at once, a second finalize of it TETHER_ESTATE, a load of this library
   from that init TETHER_EDEADLK (it is the busy one's own), an unload of
   any of its records TETHER_EDEADLK (on_stack).  What is left is what the
   host makes: an event the finalizer sets only after finalize returns, or
   a load of another library whose fini runs on the finalizer (a fini that
   finalizes).  Such a wait ends at finalize's deadline, and the plugin is
   abandoned without fini, as one still called into; without a deadline
   finalize waits, as it does for calls in progress and for its own
   runtime's inits (await_inits).  Called with the registry lock held. */
static bool wait_quiet(struct unload *u)
{
    struct plugin *p = u->p;
    while (!taken_back(u) && !u->interrupted) {
        struct plugin *busy = reg_busy(p->dl);
        if (busy && runs_it(busy))
            return true;
        if (!busy && p->calls == 0)
            break;
        if (busy) /* (the registry lock held) */
            TETHER_DELAY_POINT("unload.wait_busy");
        if (reg_wait(u->forever ? NULL : &u->deadline) == ETIMEDOUT)
            break;
    }
    return false;
}

/* DRAINING: waits for calls in progress and for an init or fini of the
   library in another runtime to end, then runs fini.  If the wait fails,
   or the calling thread runs that init or fini itself (OWN_BUSY), the
   record is LOADED again with the one reference the unload dropped, as it
   was before.  Called with the registry lock held; returns with it
   held. */
static int drain(struct unload *u)
{
    struct plugin *p = u->p;
    bool own = wait_quiet(u);
    if (taken_back(u)) {
        if (p->epoch == u->epoch)
            p->unloading = false; /* else the taker cleared it */
        return TAKEN_BACK;
    }
    bool calls = p->calls > 0;
    if (own || calls || reg_busy(p->dl)) {
        p->st = PS_LOADED;
        p->refs = 1;
        if (own) {
            p->unloading = false;
            return OWN_BUSY;
        }
        return wait_failed(u, calls ? "calls into it were still in progress; "
                                      "it stays loaded"
                                    : "an init or fini of its library was "
                                      "still running in another runtime; it "
                                      "stays loaded");
    }
    p->st = PS_FINALIZED;
    p->in_fini = true;
    p->finier = pthread_self();
    reg_unlock();
    TETHER_DELAY_POINT("unload.drained");
    if (p->desc->fini)
        p->desc->fini(p->state);
    reg_lock();
    p->in_fini = false;
    reg_broadcast();
    return TETHER_OK;
}

/* FINALIZED: waits until nothing can call into the plugin any more, then
   removes it from the registry.  Called with the registry lock held. */
static int retire(struct unload *u)
{
    struct plugin *p = u->p;
    wait_zero(u, &p->holds);
    if (p->holds > 0)
        return wait_failed(u, "callbacks or threads into it were still alive "
                              "after fini; it stays mapped");
    reg_remove(p);
    return TETHER_OK;
}

/* Runs the last unload of a record, holding no GIL.  An unloader whose
   record was taken back (or finished by another thread since) only
   leaves: the record may be anything by now. */
static int unload_last(void *arg)
{
    struct unload *u = arg;
    struct plugin *p = u->p;
    u->ran = true;
    reg_reap();
    reg_lock();
    int rc;
    if (p->epoch != u->epoch || p->st == PS_GONE || p->orphan)
        rc = TAKEN_BACK;
    else
        rc = p->st == PS_DRAINING ? drain(u) : TETHER_OK;
    TETHER_DELAY_POINT("unload.finied");
    if (rc == TETHER_OK)
        rc = retire(u);
    reg_unlock();
    if (rc == OWN_BUSY)
        rc = err_misuse(TETHER_EDEADLK, UNLOAD, "the calling thread is "
                        "running an init or fini of '%s' (in some runtime); "
                        "unload it from another thread", p->name);
    TETHER_DELAY_POINT("unload.retired");
    if (rc == TETHER_OK) {
        dlclose(p->dl);
        handle_close(p->handle, HT_PLUGIN);
    }
    return rc == TAKEN_BACK ? TETHER_OK : rc;
}

/* Drops one reference; tells whether the caller must run the last unload.
   Called with the registry lock held. */
static int drop_ref(struct plugin *p, bool *last)
{
    *last = false;
    if (p->st == PS_GONE || p->orphan)
        return err_misuse(TETHER_EBADHANDLE, UNLOAD,
                          "not a plugin handle (0x%llx): it was unloaded",
                          (unsigned long long)p->handle);
    if (p->unloading || (p->st != PS_LOADED && p->st != PS_FINALIZED))
        return err_misuse(TETHER_ESTATE, UNLOAD,
                          "'%s' is being loaded or unloaded by another thread",
                          p->name);
    if (p->st == PS_LOADED && --p->refs > 0)
        return TETHER_OK;
    if (p->st == PS_LOADED)
        p->st = PS_DRAINING;
    p->unloading = true;
    *last = true;
    return TETHER_OK;
}

/* Gives back the reference drop_ref took, when the last unload could not
   even start (an asynchronous exception was already pending).  A later
   unloader waiting meanwhile sees the reference and leaves the plugin. */
static void undo_drop(struct unload *u)
{
    struct plugin *p = u->p;
    reg_lock();
    if (p->epoch == u->epoch && p->st == PS_DRAINING) {
        p->st = PS_LOADED;
        p->refs++;
    }
    if (p->epoch == u->epoch && p->st != PS_GONE)
        p->unloading = false;
    reg_broadcast();
    reg_unlock();
}

/* Whether the calling thread is running code of `p` (stack_in). */
static bool on_stack(const struct plugin *p) { return stack_in(p->lo, p->hi); }

int tether_plugin_unload(tether_plugin h, int64_t timeout_ns)
{
    struct plugin *p = handle_get_or_misuse(h, HT_PLUGIN, UNLOAD);
    if (!p)
        return TETHER_EBADHANDLE;
    if (on_stack(p)) {
        handle_put(h);
        return err_misuse(TETHER_EDEADLK, UNLOAD,
                          "the calling thread is running code of '%s' (a "
                          "callback called from it, or a function of it); "
                          "unload it from another thread", p->name);
    }
    tether_runtime prt = p->rt;
    TRACE(trace_plugin_begin(prt, 1, p->name));
    bool last;
    reg_lock();
    int rc = drop_ref(p, &last);
    struct unload u = {.p = p, .epoch = p->epoch};
    reg_unlock();
    if (rc == TETHER_OK && last) {
        set_deadline(&u, timeout_ns);
        if (tether_gil_held())
            rc = tether_call_blocking(unload_last, &u, unload_unblock, &u);
        else
            rc = unload_last(&u);
        if (!u.ran)
            undo_drop(&u);
    }
    TRACE(trace_plugin_end(prt, rc));
    handle_put(h);
    return rc;
}

/* ------------------------------------------------------------------------
 * Finalize
 * ---------------------------------------------------------------------- */

/* The next record of `rt` that finalize must unload (newest first, which
   is the reverse load order), made DRAINING with no reference and marked
   unloading; or NULL.  Records being loaded or unloaded by another thread
   are left to it. */
static struct plugin *next_to_finalize(tether_runtime rt, bool debug,
                                        uint32_t *epoch)
{
    struct plugin *found = NULL;
    reg_lock();
    for (struct plugin *p = reg_head(); p; p = p->next) {
        if (p->rt != rt || p->orphan || p->unloading ||
            (p->st != PS_LOADED && p->st != PS_FINALIZED))
            continue;
        if (debug)
            fprintf(stderr, "tether: TETHER_DEBUG: plugin handle 0x%016llx "
                    "\"%s\" (%s) still loaded with %u reference(s); "
                    "tether_runtime_finalize unloads it\n",
                    (unsigned long long)p->handle, p->name, p->path, p->refs);
        if (p->st == PS_LOADED)
            p->st = PS_DRAINING;
        p->refs = 0;
        p->unloading = true;
        *epoch = p->epoch;
        handle_ref(p->handle);
        found = p;
        break;
    }
    reg_unlock();
    return found;
}

/* Waits, until the deadline, for the inits of `rt`'s plugins that are
   running (their loads ensured before finalize stopped the interpreters;
   a later load's init cannot attach).  One still running at the deadline,
   or running on this very thread (finalize called from an init), is
   doomed: its load runs its fini and unloads it once init returns. */
static void await_inits(tether_runtime rt, int64_t deadline_ns)
{
    struct timespec until = {(time_t)(deadline_ns / 1000000000),
                             (long)(deadline_ns % 1000000000)};
    reg_lock();
    for (;;) {
        bool running = false;
        for (struct plugin *p = reg_head(); p; p = p->next) {
            if (p->rt != rt || p->st != PS_LOADING || p->doomed)
                continue;
            if (pthread_equal(p->loader, pthread_self()))
                p->doomed = true;
            else
                running = true;
        }
        if (!running)
            break;
        TETHER_DELAY_POINT("finalize.plugin.await_init"); /* (lock held) */
        if (reg_wait(deadline_ns < 0 ? NULL : &until) == ETIMEDOUT) {
            for (struct plugin *p = reg_head(); p; p = p->next)
                if (p->rt == rt && p->st == PS_LOADING)
                    p->doomed = true;
            break;
        }
    }
    reg_unlock();
}

void plugin_finalize_runtime(tether_runtime rt, int64_t deadline_ns, bool debug)
{
    struct plugin *p;
    uint32_t epoch = 0;
    reg_reap();
    await_inits(rt, deadline_ns);
    while ((p = next_to_finalize(rt, debug, &epoch))) {
        TETHER_DELAY_POINT("finalize.plugin.picked");
        if (on_stack(p)) {
            /* Finalize called from the plugin's own code: its fini would
               pull the code from under the caller.  Abandoned, mapped. */
            reg_pin_mapping(p, true);
            if (debug)
                fprintf(stderr, "tether: TETHER_DEBUG: plugin '%s': finalize "
                        "was called from its own code; its fini does not "
                        "run\n", p->name);
            reg_lock();
            reg_orphan(p);
            reg_unlock();
            handle_close(p->handle, HT_PLUGIN);
            handle_put(p->handle);
            continue;
        }
        /* The epoch next_to_finalize saw: a load may have taken the record
           back since (and its own unload may even have finished it). */
        struct unload u = {.p = p, .epoch = epoch};
        int64_t left = deadline_ns < 0 ? -1 : deadline_ns - plat_now_ns();
        set_deadline(&u, deadline_ns < 0 ? -1 : left > 0 ? left : 0);
        reg_lock();
        int rc;
        if (p->epoch != u.epoch || p->st == PS_GONE || p->orphan)
            rc = TAKEN_BACK;
        else
            rc = p->st == PS_DRAINING ? drain(&u) : TETHER_OK;
        if (rc == TAKEN_BACK) { /* a load on another thread: look again */
            reg_unlock();
            handle_put(p->handle);
            continue;
        }
        if ((rc == TETHER_ETIMEDOUT || rc == OWN_BUSY) &&
            p->st == PS_LOADED) {
            /* A call into it, or an init or fini of its library in another
               runtime, outlived the deadline: fini cannot run beside it
               (drain); or this thread runs that init or fini itself, which
               is finalize called from the plugin's own code (as on_stack
               above).  The plugin is abandoned without fini, and stays
               mapped for good: nothing stopped its threads. */
            p->refs = 0;
            p->abandoned = true;
            if (debug)
                fprintf(stderr, "tether: TETHER_DEBUG: plugin '%s': %s; its "
                        "fini does not run\n", p->name,
                        rc == OWN_BUSY ? "finalize was called from an init "
                                         "or fini of its library"
                        : p->calls > 0 ? "a call into it was still running "
                                         "at the deadline"
                                       : "an init or fini of its library in "
                                         "another runtime was still running "
                                         "at the deadline");
        }
        if (rc == TETHER_OK) {
            /* Callbacks and threads into an unloadable plugin are waited
               for until a finite deadline, never without one: they may be
               the host's to free after finalize returns (a callback freed
               by the thread that finalizes, or one that waits for this
               thread's GIL: API fuzzer seed x13, a hang).  The last pin
               dlcloses the orphan then. */
            if (!u.forever)
                wait_zero(&u, &p->holds);
            if (p->holds == 0) {
                reg_remove(p);
                reg_unlock();
                dlclose(p->dl);
                handle_close(p->handle, HT_PLUGIN);
                handle_put(p->handle);
                continue;
            }
        }
        reg_orphan(p); /* unmapped when what still runs is gone */
        reg_unlock();
        handle_close(p->handle, HT_PLUGIN);
        handle_put(p->handle);
    }
    reg_reap();
}
