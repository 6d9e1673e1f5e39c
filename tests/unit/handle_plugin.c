/*
 * handle_plugin.c - the smallest plugin: a descriptor and nothing else.
 * test_handles.c loads it to have live and stale plugin handles.
 */
#include <tether/tether_plugin.h>

static const tether_plugin_desc k_desc = {
    .size = sizeof(tether_plugin_desc),
    .abi_version = TETHER_ABI_VERSION,
    .name = "handles",
    .version = "1.0",
};

TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(uint32_t host_abi_version)
{
    (void)host_abi_version;
    return &k_desc;
}
