/* For a fragment that calls guest code: the guest is a counter. */
#include <tether/tether.h>

struct guest {
    long events;
};

static void guest_handle_event(struct guest *g)
{
    g->events++;
}

void on_event(tether_interp interp, struct guest *g);

@BLOCK@
