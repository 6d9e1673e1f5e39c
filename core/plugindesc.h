/*
 * plugindesc.h - checking the descriptor a plugin's entry returns.
 *
 * Everything the loader checks before it trusts a descriptor (plugin.c
 * then copies its name and version and calls its init) is here, as a pure
 * function: no dlopen, no allocation, no global state, no runtime.  So the
 * libFuzzer target in tests/fuzz/ can build it on its own and feed it
 * descriptors of any bytes, as ffisig.c is for FFI signatures.  Internal:
 * not exported.
 */
#ifndef TETHER_PLUGINDESC_H
#define TETHER_PLUGINDESC_H

#include <stddef.h>
#include <stdint.h>

#include "tether/tether_plugin.h"

/* What an ABI 1.0 descriptor holds: everything up to and including fini. */
#define PLUGINDESC_MIN_SIZE                                                   \
    (offsetof(tether_plugin_desc, fini) + sizeof(void (*)(void *)))
/* What must be readable before the version is known. */
#define PLUGINDESC_VERSION_SIZE                                               \
    (offsetof(tether_plugin_desc, abi_version) + sizeof(uint32_t))
#define PLUGINDESC_KNOWN_FLAGS TETHER_PLUGIN_UNLOADABLE

/* Room for any sentence plugindesc_check writes: the size of the
   last-error buffer (error.c), so that passing it on truncates nothing
   that err_set would have kept. */
#define PLUGINDESC_MSG 512

/* `readable` when nothing bounds the descriptor but its own size field:
   the loader's case, which must take the plugin at its word. */
#define PLUGINDESC_UNBOUNDED SIZE_MAX

/* Checks `desc`, what tether_plugin_entry of the plugin at `path`
   returned (NULL included): its size, ABI version, flags and name, in
   that order.  Reads only the first min(readable, desc->size) bytes of it
   (a descriptor claiming more than `readable` bytes is refused), and of
   its name only the first character; never its version, init or fini.
   Returns TETHER_OK with msg set to "", or TETHER_EPLUGIN or
   TETHER_EVERSION with the reason, naming `path`, in msg (cap bytes,
   truncated and NUL-terminated; cap may be 0).  [any-thread] */
int plugindesc_check(const void *desc, size_t readable, const char *path,
                     char *msg, size_t cap);

#endif
