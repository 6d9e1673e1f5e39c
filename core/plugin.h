/*
 * plugin.h - what the rest of the core needs from the plugin loader
 * (plugin.c): finalize's unloading, and the load that host_api.c hands the
 * host table to.  The pins every floor takes are pluginreg.h's.
 */
#ifndef TETHER_PLUGIN_INTERNAL_H
#define TETHER_PLUGIN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "tether/tether_plugin.h"

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

/* tether_plugin_load, handing `api` to the plugin's init.  host_api.c
   defines tether_plugin_load with its table, which names every public
   function, the loader's too: so the loader is given the table rather
   than naming it.  [any-thread] */
int plugin_load(tether_runtime rt, const char *path, const tether_host_api *api,
                tether_plugin *out);

#endif
