/*
 * pluginreg.c - the registry of loaded plugins (pluginreg.h): its records,
 * the pins that keep an unloadable plugin's code mapped while it may run,
 * and the queries of a plugin handle (symbol, enter/leave, state, info).
 * It calls nothing above the handle table: every floor of the core may pin
 * code.  Loading and unloading are the loader's (plugin.c), above the
 * public calls it makes.
 */
#include "pluginreg.h"

#include <dlfcn.h>
#include <link.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "annotate.h"
#include "error.h"
#include "handle.h"
#include "lockrank.h"

/* The registry.  `lock` (rank RANK_PLUGIN: after every core lock but the
   handle table's and the fault switches', which an allocation or a handle
   reference takes while holding it) protects the list and the state,
   refs, pins and unloading flag of every record; `cond` is broadcast when
   a record changes state, when a pin count reaches zero, and when an
   unload is interrupted. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC */
    struct plugin *head;
    struct plugin *zombies; /* removed orphans waiting for reg_reap() */
    /* Synchronization: written under lock, read without it by
       plugin_pin_code's fast path: the number of records in the list. */
    atomic_uint ranged;
} g_reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void reg_init(void)
{
    ann_atomic(g_reg.ranged); /* atomics only (helgrind, DRD: annotate.h) */
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g_reg.cond, &a);
    pthread_condattr_destroy(&a);
}

void reg_lock(void)
{
    pthread_once(&g_once, reg_init);
    rank_lock(&g_reg.lock, RANK_PLUGIN);
}

void reg_unlock(void) { rank_unlock(&g_reg.lock, RANK_PLUGIN); }

int reg_wait(const struct timespec *deadline)
{
    if (!deadline)
        return pthread_cond_wait(&g_reg.cond, &g_reg.lock);
    return pthread_cond_timedwait(&g_reg.cond, &g_reg.lock, deadline);
}

void reg_broadcast(void) { pthread_cond_broadcast(&g_reg.cond); }

struct plugin *reg_head(void) { return g_reg.head; }

/* ---- records ------------------------------------------------------------ */

/* The handle's destructor: runs when the handle is closed and unused. */
void plugin_destroy(void *obj)
{
    struct plugin *p = obj;
    t_free(p->path);
    t_free(p->name);
    t_free(p->version);
    t_free(p);
}

/* The live record of library `dl` in runtime `rt`, or NULL.  Called with
   g_reg.lock held. */
struct plugin *reg_find(void *dl, tether_runtime rt)
{
    for (struct plugin *p = g_reg.head; p; p = p->next)
        if (p->dl == dl && p->rt == rt && p->st < PS_FINALIZED)
            return p;
    return NULL;
}

/* A record of library `dl`, in any runtime, whose init or fini is
   running, or NULL (pluginreg.h).  Called with g_reg.lock held. */
struct plugin *reg_busy(void *dl)
{
    for (struct plugin *p = g_reg.head; p; p = p->next)
        if (p->dl == dl && (p->st == PS_LOADING || p->in_fini))
            return p;
    return NULL;
}

/* Called with g_reg.lock held. */
void reg_insert(struct plugin *p)
{
    p->next = g_reg.head;
    g_reg.head = p;
    atomic_fetch_add(&g_reg.ranged, 1);
}

/* Called with g_reg.lock held. */
void reg_remove(struct plugin *p)
{
    struct plugin **pp = &g_reg.head;
    while (*pp != p)
        pp = &(*pp)->next;
    *pp = p->next;
    p->next = NULL;
    p->st = PS_GONE;
    atomic_fetch_sub(&g_reg.ranged, 1);
    pthread_cond_broadcast(&g_reg.cond);
}

/* Makes a FINALIZED record without a handle an orphan: removed now if
   nothing pins it, else by the last unpin.  The registry keeps a reference
   to the handle until reg_reap() has dlclosed the library.  Called with
   g_reg.lock held; the caller closes the handle after unlocking. */
void reg_orphan(struct plugin *p)
{
    p->st = PS_FINALIZED;
    p->orphan = true;
    handle_ref(p->handle);
    if (p->calls == 0 && p->holds == 0) {
        reg_remove(p);
        p->next = g_reg.zombies;
        g_reg.zombies = p;
    }
}

void reg_pin_mapping(struct plugin *p, bool always)
{
    if (p->unloadable && !always)
        return;
    /* By the path it was loaded by (no read of the loader's link_map, see
       plugin.c's image_range), unless that now names another object or
       none. */
    void *again = dlopen(p->path, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    if (again == p->dl) {
        dlclose(again);
        return;
    }
    if (again)
        dlclose(again);
    struct link_map *lm;
    if (dlinfo(p->dl, RTLD_DI_LINKMAP, &lm) != 0)
        return;
    again = dlopen(lm->l_name, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    if (again)
        dlclose(again);
}

void reg_reap(void)
{
    reg_lock();
    struct plugin *z = g_reg.zombies;
    g_reg.zombies = NULL;
    reg_unlock();
    while (z) {
        struct plugin *next = z->next;
        uint64_t h = z->handle;
        if (z->abandoned)
            reg_pin_mapping(z, true); /* its fini never stopped its threads */
        dlclose(z->dl);
        handle_put(h); /* the registry's reference: frees the record */
        z = next;
    }
}

/* ---- symbols, information, pins ------------------------------------------- */

int tether_plugin_symbol(tether_plugin h, const char *name, void **out)
{
    static const char fn[] = "tether_plugin_symbol";
    if (!name || !out)
        return err_misuse(TETHER_EINVAL, fn, "name and out must not be NULL");
    struct plugin *p = handle_get_or_misuse(h, HT_PLUGIN, fn);
    if (!p)
        return TETHER_EBADHANDLE;
    int rc = TETHER_OK;
    reg_lock();
    if (p->st >= PS_FINALIZED)
        rc = err_set(TETHER_ESTATE, fn, "'%s' is being unloaded", p->name);
    else {
        p->calls++; /* keeps p->dl open while dlsym reads it */
        handle_ref(h); /* as every pin does */
    }
    reg_unlock();
    if (rc == TETHER_OK) {
        dlerror();
        void *sym = dlsym(p->dl, name);
        const char *why = dlerror();
        if (why)
            rc = err_set(TETHER_EPLUGIN, fn, "plugin '%s' has no symbol '%s': %s",
                         p->name, name, why);
        else
            *out = sym;
        plugin_unpin(p, PLUGIN_PIN_CALL);
    }
    handle_put(h);
    return rc;
}

/* Drops one pin's count (not its handle reference).  Returns true when it
   was the last pin of an orphan, which is a zombie now.  Called with
   g_reg.lock held. */
static bool unpin_locked(struct plugin *p, enum plugin_pin kind)
{
    uint32_t *count = kind == PLUGIN_PIN_CALL ? &p->calls : &p->holds;
    if (--*count == 0)
        pthread_cond_broadcast(&g_reg.cond);
    if (p->orphan && p->st == PS_FINALIZED && p->calls == 0 && p->holds == 0) {
        reg_remove(p); /* the last pin of an orphan: reg_reap() unmaps it */
        p->next = g_reg.zombies;
        g_reg.zombies = p;
        return true;
    }
    return false;
}

int tether_plugin_enter(tether_plugin h)
{
    static const char fn[] = "tether_plugin_enter";
    struct plugin *p = handle_get_or_misuse(h, HT_PLUGIN, fn);
    if (!p)
        return TETHER_EBADHANDLE;
    int rc = TETHER_OK;
    reg_lock();
    if (p->st >= PS_FINALIZED) {
        rc = err_set(TETHER_ESTATE, fn, "'%s' is being unloaded", p->name);
    } else {
        p->calls++; /* a PLUGIN_PIN_CALL pin, as tether_ffi_call's */
        p->enters++;
        handle_ref(h);
    }
    reg_unlock();
    handle_put(h);
    return rc;
}

int tether_plugin_leave(tether_plugin h)
{
    static const char fn[] = "tether_plugin_leave";
    /* A closed handle still answers while an enter holds its reference
       (finalize may have unloaded the plugin meanwhile). */
    struct plugin *p = handle_get_any(h, HT_PLUGIN);
    if (!p)
        return err_misuse(TETHER_EBADHANDLE, fn, "not a plugin handle (0x%llx)",
                          (unsigned long long)h);
    reg_lock();
    /* Only an enter's pin: a leave without one must not end the pin of a
       tether_ffi_call in progress, or the unload would run fini under it. */
    bool open = p->enters > 0;
    if (open) {
        p->enters--;
        unpin_locked(p, PLUGIN_PIN_CALL);
    }
    reg_unlock();
    int rc = TETHER_OK;
    if (open)
        handle_put(h); /* the enter's reference */
    else
        rc = err_misuse(TETHER_ESTATE, fn, "no tether_plugin_enter of '%s' is "
                        "open", p->name);
    handle_put(h);
    return rc;
}

int tether_plugin_state(tether_plugin h, void **out)
{
    static const char fn[] = "tether_plugin_state";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out must not be NULL");
    struct plugin *p = handle_get_or_misuse(h, HT_PLUGIN, fn);
    if (!p)
        return TETHER_EBADHANDLE;
    *out = p->state;
    handle_put(h);
    return TETHER_OK;
}

int tether_plugin_info(tether_plugin h, const char **name, const char **version)
{
    struct plugin *p = handle_get_or_misuse(h, HT_PLUGIN, "tether_plugin_info");
    if (!p)
        return TETHER_EBADHANDLE;
    if (name)
        *name = p->name;
    if (version)
        *version = p->version;
    handle_put(h);
    return TETHER_OK;
}

int plugin_pin_code(uintptr_t addr, enum plugin_pin kind, struct plugin **out)
{
    *out = NULL;
    /* A pointer into a plugin reaches the caller only after its record was
       inserted under the lock, so a zero here means there is nothing to pin. */
    if (atomic_load_explicit(&g_reg.ranged, memory_order_acquire) == 0)
        return TETHER_OK;
    bool closing = false;
    reg_lock();
    for (struct plugin *p = g_reg.head; p; p = p->next) {
        if (addr < p->lo || addr >= p->hi)
            continue;
        if (kind == PLUGIN_PIN_HOLD && !p->unloadable)
            break; /* never unmapped: nothing to hold */
        if (p->st >= PS_FINALIZED) {
            closing = true;
            continue;
        }
        if (kind == PLUGIN_PIN_CALL)
            p->calls++;
        else
            p->holds++;
        handle_ref(p->handle); /* the record outlives the pin */
        *out = p;
        break;
    }
    reg_unlock();
    return *out || !closing ? TETHER_OK : TETHER_ESTATE;
}

void plugin_pin_again(struct plugin *p, enum plugin_pin kind)
{
    if (!p)
        return;
    reg_lock();
    if (kind == PLUGIN_PIN_CALL)
        p->calls++;
    else
        p->holds++;
    handle_ref(p->handle); /* as every pin does; the pin there holds one */
    reg_unlock();
}

void plugin_unpin(struct plugin *p, enum plugin_pin kind)
{
    if (!p)
        return;
    uint64_t h = p->handle;
    reg_lock();
    (void)unpin_locked(p, kind);
    reg_unlock();
    handle_put(h);
}

void plugin_unpin_reap(struct plugin *p, enum plugin_pin kind)
{
    if (!p)
        return;
    uint64_t h = p->handle;
    reg_lock();
    bool zombie = unpin_locked(p, kind);
    reg_unlock();
    handle_put(h); /* the pin's reference; the zombie list keeps its own */
    if (zombie)
        reg_reap();
}

/* ---- fork --------------------------------------------------------------- */

/* Plain calls: the fork handlers take every lock at once by design
   (core/lockrank.h). */
void plugin_atfork_prepare(void)
{
    pthread_once(&g_once, reg_init);
    pthread_mutex_lock(&g_reg.lock);
}

void plugin_atfork_parent(void) { pthread_mutex_unlock(&g_reg.lock); }

void plugin_atfork_child(void)
{
    /* The child has one thread, the one whose prepare took the lock: it
       unlocks it (as the GIL and the handle table do; re-initialising a
       locked mutex instead left helgrind believing it held forever).  No
       other thread can be waiting on the condition: it is made anew. */
    pthread_mutex_unlock(&g_reg.lock); /* no rank: prepare took it plainly */
    reg_init();
}
