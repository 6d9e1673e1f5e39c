/*
 * plugin.h - what the rest of the core needs from the plugin loader.
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
 */
#ifndef TETHER_PLUGIN_INTERNAL_H
#define TETHER_PLUGIN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

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

/* Drops a pin taken by plugin_pin_code (NULL is a no-op).  [any-thread] */
void plugin_unpin(struct plugin *p, enum plugin_pin kind);

/* Step of tether_runtime_finalize, after its threads are stopped: waits
   for the inits of `rt`'s plugins still running (one still running at the
   deadline is unloaded by its own load when it returns), then unloads
   every plugin `rt` still has loaded, newest first, whatever its reference
   count (waiting for calls into it, running fini holding no GIL, then
   waiting for what holds an unloadable one), until the absolute monotonic
   `deadline_ns` (plat_now_ns; -1 = none).  A plugin still called into at
   the deadline is abandoned without fini; one still held stays mapped
   until it is not.  Their handles are closed either way.  With `debug`
   each one is listed on stderr (TETHER_DEBUG).  [no-gil] */
void plugin_finalize_runtime(tether_runtime rt, int64_t deadline_ns, bool debug);

/* The host API table handed to every plugin's init (host_api.c). */
const tether_host_api *host_api(void);

/* The loader's fork handlers.  They must run inside the core's own
   pthread_atfork handlers: prepare after every core lock is taken and
   before the handle table's, parent and child in the reverse order. */
void plugin_atfork_prepare(void);
void plugin_atfork_parent(void);
void plugin_atfork_child(void);

#endif
