/* For a fragment of a plugin's init (or of a function that returns a
   status) calling the host table. */
#include <tether/tether_plugin.h>

static const tether_host_api *host;
tether_callback cb;

int device_open(void);

int fragment(void);

int fragment(void)
{
@BLOCK@
    return TETHER_OK;
}
