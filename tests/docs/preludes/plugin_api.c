/* For a fragment of a plugin that calls the host table. */
#include <tether/tether_plugin.h>

static const tether_host_api *host;
static tether_channel ch;

static void fall_back_to_something_else(void)
{
}

void fragment(void);

void fragment(void)
{
@BLOCK@
}
