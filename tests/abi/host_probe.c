/*
 * host_probe.c - a plugin that hands the host table it was given back to
 * the test (tests/abi/test_host_api.c), through one exported variable.
 */
#include <tether/tether_plugin.h>

/* Written by init on the loading thread, read by the test after
   tether_plugin_load returned on the same thread. */
TETHER_PLUGIN_EXPORT const tether_host_api *host_probe_table;

static int probe_init(const tether_host_api *host, tether_interp interp,
                      void **state)
{
    (void)interp;
    host_probe_table = host;
    *state = NULL;
    return TETHER_OK;
}

static const tether_plugin_desc probe_desc = {
    sizeof(tether_plugin_desc), TETHER_ABI_VERSION, 0, "host-probe", "1",
    probe_init, NULL,
};

TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(uint32_t host_abi_version)
{
    (void)host_abi_version;
    return &probe_desc;
}
