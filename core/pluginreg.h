/*
 * pluginreg.h - the registry of loaded plugins (pluginreg.c): the code
 * pins every floor of the core takes, its fork handlers, and, for the
 * loader (plugin.c) alone, the records and the registry's operations.
 *
 * Pins keep an unloadable plugin from being finalized or unmapped while
 * code in it may run.  Whoever is about to run code it did not write (a
 * dynamic call, a callback's guest function, a thread's start function, a
 * pending call) pins the address first:
 *
 *  - PLUGIN_PIN_CALL: a call into the plugin is in progress.  The last
 *    unload waits for these before it runs the plugin's fini.
 *  - PLUGIN_PIN_HOLD: something that will call into the plugin is alive (a
 *    callback, a thread).  The last unload runs fini (which must free or
 *    stop what the plugin made itself) and then waits for these before it
 *    dlcloses the library.
 *
 * A plugin that is not unloadable stays mapped for ever and is never found
 * by plugin_pin_code.
 *
 * Lock: the registry's one mutex (rank RANK_PLUGIN, core/lockrank.h)
 * protects the list and the state, refs, pins and unloading flag of every
 * record; its condition is broadcast when a record changes state, when a
 * pin count reaches zero, and when an unload is interrupted.
 */
#ifndef TETHER_PLUGINREG_H
#define TETHER_PLUGINREG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "tether/tether_plugin.h"

struct plugin;

enum plugin_pin { PLUGIN_PIN_CALL, PLUGIN_PIN_HOLD };

/* If `addr` lies in the image of a loaded unloadable plugin, counts a pin
   of `kind` on it and stores the plugin in *out (pass it to plugin_unpin);
   otherwise stores NULL.  While no unloadable plugin is loaded this costs
   one atomic load.
   Returns TETHER_OK, or TETHER_ESTATE when the plugin is being unloaded
   (nothing is pinned).  [any-thread] */
int plugin_pin_code(uintptr_t addr, enum plugin_pin kind, struct plugin **out);

/* Counts one more pin of `kind` on `p`, a plugin that is pinned already by
   a pin that cannot go meanwhile (the caller's own, or one that an object
   whose lock the caller holds keeps); NULL is a no-op.  Unlike
   plugin_pin_code it never fails, not even while the plugin is being
   unloaded: the pin already there keeps it as it is (mapped, for a
   PLUGIN_PIN_HOLD), and so does this one until it is dropped with
   plugin_unpin or plugin_unpin_reap.  [any-thread] */
void plugin_pin_again(struct plugin *p, enum plugin_pin kind);

/* Drops a pin taken by plugin_pin_code or plugin_pin_again (NULL is a
   no-op).  The last pin of an orphan (a plugin whose init failed, or that
   finalize unloaded while something still pinned it) leaves it on the
   zombie list for the next load, unload or finalize to dlclose.
   [any-thread] */
void plugin_unpin(struct plugin *p, enum plugin_pin kind);

/* plugin_unpin, then, when that was the last pin of an orphan, dlcloses it
   and frees its record at once (reg_reap) rather than leaving it to a next
   load, unload or finalize that may never come (a thread started by a
   failed init that outlives its runtime's finalize).  Called holding no
   lock and no GIL: the library's destructors run.  [no-gil] */
void plugin_unpin_reap(struct plugin *p, enum plugin_pin kind);

/* The registry's fork handlers (fork.c).  They must run inside the core's own
   pthread_atfork handlers: prepare after every core lock is taken and
   before the handle table's, parent and child in the reverse order. */
void plugin_atfork_prepare(void);
void plugin_atfork_parent(void);
void plugin_atfork_child(void);

/* ---- for the loader (plugin.c) only ----------------------------------- */

enum pstate { PS_LOADING, PS_LOADED, PS_DRAINING, PS_FINALIZED, PS_GONE };

struct plugin {
    /* Synchronization: immutable once the record is inserted. */
    tether_runtime rt;
    tether_interp interp;  /* the runtime's main interpreter */
    void *dl;              /* our dlopen reference */
    uint64_t handle;
    const tether_plugin_desc *desc;
    char *path;
    char *name;
    char *version;
    uintptr_t lo, hi;      /* the mapped image of the library */
    bool unloadable;       /* TETHER_PLUGIN_UNLOADABLE */
    pthread_t loader;      /* the thread running init while LOADING */

    /* Synchronization: written by init before the record is published, read
       by fini after the last unload. */
    void *state;

    /* Synchronization: g_reg.lock. */
    enum pstate st;
    uint32_t refs;         /* loads not yet unloaded */
    uint32_t calls;        /* PLUGIN_PIN_CALL pins (enters among them) */
    uint32_t enters;       /* tether_plugin_enter's not yet left */
    uint32_t holds;        /* PLUGIN_PIN_HOLD pins */
    bool unloading;        /* an unload of the last reference is running */
    uint32_t epoch;        /* loads that took the record back from DRAINING */
    bool orphan;           /* no handle: the last unpin makes it a zombie */
    bool in_fini;          /* fini is running: loads of the library, and
                              the finis of its other records, wait */
    pthread_t finier;      /* the thread running fini, while in_fini */
    bool abandoned;        /* finalize gave up on it before fini: never
                              unmapped, its threads may still run */
    bool doomed;           /* LOADING when its runtime was finalized: the
                              load unloads it again once init returns */
    struct plugin *next;   /* in the registry, or in the zombie list */
};

/* Takes and releases the registry's mutex (rank RANK_PLUGIN). */
void reg_lock(void);
void reg_unlock(void);
/* Waits on the registry's condition, until `deadline` (CLOCK_MONOTONIC;
   NULL: no deadline).  Returns 0, or ETIMEDOUT.  Lock held. */
int reg_wait(const struct timespec *deadline);
/* Wakes every waiter of the registry's condition.  Lock held. */
void reg_broadcast(void);
/* The first record of the registry (then p->next), newest first.  Lock
   held. */
struct plugin *reg_head(void);
/* The live record of library `dl` in runtime `rt`, or NULL.  Lock held. */
struct plugin *reg_find(void *dl, tether_runtime rt);
/* A record of library `dl`, in any runtime, whose init or fini is
   running, or NULL: a load waits for it, and so does the fini of an
   unload, since the plugin's statics are shared by every record of the
   library, whichever runtime loaded it (so the init and fini calls of one
   library never overlap).  Lock held. */
struct plugin *reg_busy(void *dl);
/* Inserts a record, or removes one (it is GONE then).  Lock held. */
void reg_insert(struct plugin *p);
void reg_remove(struct plugin *p);
/* Makes a FINALIZED record without a handle an orphan: removed now if
   nothing pins it, else by the last unpin.  The registry keeps a reference
   to the handle until reg_reap has dlclosed the library.  Lock held; the
   caller closes the handle after unlocking. */
void reg_orphan(struct plugin *p);
/* dlcloses the orphans nothing pins any more (an abandoned one is made to
   stay mapped instead).  Called holding no lock and no GIL (a library's
   destructors may want either). */
void reg_reap(void);
/* Makes a library that is not unloadable (or any, when `always`) stay
   mapped for ever (RTLD_NODELETE).  Called holding no lock. */
void reg_pin_mapping(struct plugin *p, bool always);
/* The handle's destructor of a record (frees it). */
void plugin_destroy(void *obj);

#endif
