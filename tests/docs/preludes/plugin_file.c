/* For a file-scope fragment of a plugin: definitions next to its
   descriptor. */
#include <stdint.h>
#include <tether/tether_plugin.h>

struct counter {
    int32_t value;
};

int32_t counter_next(void *state);

@BLOCK@
