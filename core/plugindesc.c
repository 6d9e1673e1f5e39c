/*
 * plugindesc.c - checking a plugin's descriptor (see plugindesc.h).
 *
 * Fields are read with memcpy at their offsets, not through the struct:
 * a descriptor too small for the struct must not be read as one, and the
 * fuzzer's buffers need not be aligned.
 */
#include "plugindesc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int msg_set(int status, char *msg, size_t cap, const char *fmt, ...)
{
    if (cap == 0)
        return status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return status;
}

/* Copies the field of `size` bytes at `offset` of the descriptor. */
static void field(const void *desc, size_t offset, void *out, size_t size)
{
    memcpy(out, (const unsigned char *)desc + offset, size);
}

#define FIELD(desc, member, out)                                              \
    field(desc, offsetof(tether_plugin_desc, member), out, sizeof *(out))

int plugindesc_check(const void *desc, size_t readable, const char *path,
                     char *msg, size_t cap)
{
    msg_set(TETHER_OK, msg, cap, "%s", "");
    if (!desc)
        return msg_set(TETHER_EPLUGIN, msg, cap,
                   "tether_plugin_entry of '%s' returned NULL: the plugin "
                   "refused host ABI %u.%u", path, TETHER_ABI_MAJOR,
                   TETHER_ABI_MINOR);
    size_t size;
    if (readable < sizeof size)
        return msg_set(TETHER_EPLUGIN, msg, cap,
                   "only %zu bytes of the descriptor of '%s' can be read, "
                   "too few to hold its size", readable, path);
    FIELD(desc, size, &size);
    if (size > readable)
        return msg_set(TETHER_EPLUGIN, msg, cap,
                   "the descriptor of '%s' is %zu bytes, but only %zu of "
                   "them can be read", path, size, readable);
    if (size < PLUGINDESC_VERSION_SIZE)
        return msg_set(TETHER_EPLUGIN, msg, cap,
                   "the descriptor of '%s' is %zu bytes, too small to hold "
                   "even its ABI version", path, size);
    uint32_t abi;
    FIELD(desc, abi_version, &abi);
    unsigned major = abi >> 16, minor = abi & 0xffffu;
    if (major != TETHER_ABI_MAJOR || minor > TETHER_ABI_MINOR)
        return msg_set(TETHER_EVERSION, msg, cap,
                   "'%s' needs tether ABI %u.%u, but this host has ABI "
                   "%u.%u (%s)", path, major, minor, TETHER_ABI_MAJOR,
                   TETHER_ABI_MINOR,
                   major != TETHER_ABI_MAJOR ? "another major version"
                                             : "a newer minor version");
    if (size < PLUGINDESC_MIN_SIZE)
        return msg_set(TETHER_EPLUGIN, msg, cap,
                   "the descriptor of '%s' is %zu bytes, smaller than the "
                   "%zu of tether ABI 1.0", path, size,
                   (size_t)PLUGINDESC_MIN_SIZE);
    uint32_t flags;
    FIELD(desc, flags, &flags);
    if (flags & ~PLUGINDESC_KNOWN_FLAGS)
        return msg_set(TETHER_EPLUGIN, msg, cap,
                   "the descriptor of '%s' has unknown flags %#x", path,
                   flags & ~PLUGINDESC_KNOWN_FLAGS);
    const char *name;
    FIELD(desc, name, &name);
    if (!name || !*name)
        return msg_set(TETHER_EPLUGIN, msg, cap,
                   "the descriptor of '%s' has no name", path);
    return TETHER_OK;
}
