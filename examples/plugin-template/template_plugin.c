/*
 * template_plugin.c - a starting point for a tether plugin.
 *
 * One instance per runtime that loads it: init makes the instance state,
 * fini frees it, and the exported function takes it as its first
 * argument (the host gets it with tether_plugin_state).
 */
#include <stdlib.h>

#include <tether/tether_plugin.h>

static const tether_host_api *host; /* the same for every instance */

struct instance {
    tether_interp interp; /* where this instance's guest code runs */
    int64_t total;        /* only touched holding the GIL */
};

/* Adds x to the instance's total and returns it.  Any thread may call it:
   it takes the interpreter's GIL itself. */
TETHER_PLUGIN_EXPORT int64_t template_add(void *state, int64_t x)
{
    struct instance *in = state;
    tether_gilstate g;
    if (host->ensure(in->interp, &g) != TETHER_OK)
        return -1; /* the interpreter is shutting down */
    int64_t total = in->total += x;
    host->release(g);
    return total;
}

static int template_init(const tether_host_api *h, tether_interp interp,
                         void **state)
{
    if (host != h)
        host = h; /* the same for every instance: written once, not raced */
    struct instance *in = calloc(1, sizeof *in);
    if (!in)
        return h->set_error(TETHER_ENOMEM, "template: out of memory");
    in->interp = interp;
    *state = in;
    return TETHER_OK;
}

static void template_fini(void *state) { free(state); }

static const tether_plugin_desc desc = {
    .size = sizeof(tether_plugin_desc),
    .abi_version = TETHER_ABI_VERSION,
    .flags = TETHER_PLUGIN_UNLOADABLE, /* nothing of it outlives fini */
    .name = "template",
    .version = "0.1.0",
    .init = template_init,
    .fini = template_fini,
};

TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(uint32_t host_abi_version)
{
    (void)host_abi_version;
    return &desc;
}
