/*
 * shim.c - the C half of the goworkers plugin: its descriptor, the entry
 * point, and the calls Go makes through function pointers (shim.h).
 */
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"
#include "_cgo_export.h"

/* init and fini are Go functions (goworkers.go). */
static int init(const tether_host_api *host, tether_interp interp, void **state)
{
    return goInit((tether_host_api *)host, interp, state);
}

static void fini(void *state)
{
    goFini(state);
}

/* docs:begin desc */
/* No TETHER_PLUGIN_UNLOADABLE: a Go runtime cannot be unloaded (its
   threads and signal handlers stay), so the loader keeps the library
   mapped for the life of the process, and a later load of it finds the
   same Go runtime running. */
static const tether_plugin_desc desc = {
    .size = sizeof desc,
    .abi_version = TETHER_ABI_VERSION,
    .flags = 0,
    .name = "goworkers",
    .version = "1.0.0",
    .init = init,
    .fini = fini,
};

TETHER_PLUGIN_EXPORT const tether_plugin_desc *tether_plugin_entry(uint32_t host_abi_version)
{
    (void)host_abi_version;
    /* The Go runtime starts on a thread of its own when the library is
       mapped; the first call into Go waits until it has finished.  Waiting
       here makes every thread of the runtime's start exist before init,
       so none appears while the host counts its threads. */
    goReady();
    return &desc;
}
/* docs:end desc */

int gw_ensure(const tether_host_api *h, tether_interp i, tether_gilstate *st)
{
    return h->ensure(i, st);
}

int gw_release(const tether_host_api *h, tether_gilstate st)
{
    return h->release(st);
}

int gw_gil_held(const tether_host_api *h)
{
    return h->gil_held();
}

int gw_save(const tether_host_api *h, tether_tstate *ts)
{
    return h->save_thread(ts);
}

int gw_restore(const tether_host_api *h, tether_tstate ts)
{
    return h->restore_thread(ts);
}

void gw_call(gw_guest_fn fn, void *ud, int32_t goroutine, int32_t call)
{
    fn(ud, goroutine, call);
}

int64_t gw_os_thread(void)
{
    return (int64_t)syscall(SYS_gettid);
}
