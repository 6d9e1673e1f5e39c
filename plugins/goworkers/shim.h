/*
 * shim.h - the C half of the goworkers plugin: Go cannot call C function
 * pointers, so every call through the host API table, and the call of the
 * guest's callback, goes through one of these small functions.
 */
#ifndef GOWORKERS_SHIM_H
#define GOWORKERS_SHIM_H

#include <stdint.h>

#include <tether/tether_plugin.h>

/* The guest callback gw_run calls: fn(ud, goroutine, call). */
typedef void (*gw_guest_fn)(void *ud, int32_t goroutine, int32_t call);

int gw_ensure(const tether_host_api *h, tether_interp i, tether_gilstate *st);
int gw_release(const tether_host_api *h, tether_gilstate st);
int gw_gil_held(const tether_host_api *h);
int gw_save(const tether_host_api *h, tether_tstate *ts);
int gw_restore(const tether_host_api *h, tether_tstate ts);
void gw_call(gw_guest_fn fn, void *ud, int32_t goroutine, int32_t call);
/* The OS thread id of the calling thread (gettid). */
int64_t gw_os_thread(void);

#endif
