/*
 * pluginreg.h - the registry of loaded plugins, shared by the registry
 * (pluginreg.c: records, pins, the handle's queries) and the loader
 * (plugin.c: load, unload, finalize).  The rest of the core uses plugin.h.
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

#include "plugin.h"

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
    bool in_fini;          /* fini is running: loads of the library wait */
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
   running, or NULL: a load waits for it, since the plugin's statics are
   shared by every record of the library, whichever runtime loaded it (so
   the inits of one library never overlap).  Lock held. */
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
