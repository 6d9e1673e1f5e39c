/*
 * fuzz_api_plugin.c - the plugin fixture of the API fuzzer (fuzz_api.c).
 *
 * One source, four builds (tests/fuzz/CMakeLists.txt):
 *   fapi_plain       a plugin whose fini takes about 1 ms (concurrent
 *                    load/unload meets an unload in progress);
 *   fapi_unloadable  the same with TETHER_PLUGIN_UNLOADABLE;
 *   fapi_failinit    init starts a thread running fapi_thread (code of the
 *                    plugin, about 20 ms long) and then fails
 *                    (FAPI_FAIL_INIT), with TETHER_PLUGIN_UNLOADABLE;
 *   fapi_failinit_mapped  the same without the flag (FAPI_MAPPED).
 * The exports give the fuzzer functions that live in the plugin's code: a
 * thread function, a guest function for callbacks, a pending call and a
 * channel discard function.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include <tether/tether_plugin.h>

static const tether_host_api *g_host;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A thread function in the plugin: sleeps about 20 ms through the host,
   then returns OK (or what the sleep returned, e.g. EFINALIZING). */
TETHER_PLUGIN_EXPORT int fapi_thread(void *arg)
{
    (void)arg;
    const tether_host_api *h = g_host;
    for (int i = 0; i < 20; i++) {
        int rc = h->sleep(1000000);
        if (rc != TETHER_OK)
            return rc == TETHER_EASYNC ? TETHER_OK : rc;
    }
    return TETHER_OK;
}

/* A guest function (signature "i32(i32)"): returns twice its argument. */
TETHER_PLUGIN_EXPORT int fapi_guest(void **args, void *ret, void *userdata)
{
    (void)userdata;
    *(int32_t *)ret = 2 * *(int32_t *)args[0];
    return TETHER_OK;
}

/* A pending call for tether_call_soon. */
TETHER_PLUGIN_EXPORT int fapi_pending(void *arg)
{
    (void)arg;
    return TETHER_OK;
}

/* A channel discard function. */
TETHER_PLUGIN_EXPORT void fapi_discard(void *data, size_t len, void *ud)
{
    (void)data, (void)len, (void)ud;
}

static int fapi_init(const tether_host_api *host, tether_interp interp,
                     void **state)
{
    (void)state;
    g_host = host;
#ifdef FAPI_FAIL_INIT
    tether_thread t = 0;
    if (host->thread_start(interp, fapi_thread, NULL, NULL, &t) == TETHER_OK)
        host->thread_release(t);
    return TETHER_EINVAL;
#else
    (void)interp;
    return TETHER_OK;
#endif
}

static void fapi_fini(void *state)
{
    (void)state;
    sleep_ms(1);
}

static const tether_plugin_desc g_desc = {
    .size = sizeof(tether_plugin_desc),
    .abi_version = TETHER_ABI_VERSION,
#if defined(FAPI_UNLOADABLE)
    .flags = TETHER_PLUGIN_UNLOADABLE,
#else
    .flags = 0,
#endif
    .name = FAPI_NAME,
    .version = "1.0",
    .init = fapi_init,
    .fini = fapi_fini,
};

TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(uint32_t host_abi_version)
{
    (void)host_abi_version;
    return &g_desc;
}
