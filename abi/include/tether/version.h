/*
 * tether/version.h - the single source of the library's version.
 *
 * CMake parses TETHER_VERSION_MAJOR/MINOR/PATCH from this file into
 * project(VERSION ...), and tether_version_string() reports the same, so the
 * three can never disagree.  TETHER_ABI_MAJOR/MINOR describe the binary
 * interface: a plugin or FFI client built for ABI x.y runs on a library whose
 * ABI major is x and whose ABI minor is >= y.
 */
#ifndef TETHER_VERSION_H
#define TETHER_VERSION_H

#define TETHER_VERSION_MAJOR 1
#define TETHER_VERSION_MINOR 3
#define TETHER_VERSION_PATCH 0

#define TETHER_ABI_MAJOR 1
#define TETHER_ABI_MINOR 3

/* (MAJOR << 16) | MINOR, the value tether_abi_version() returns. */
#define TETHER_ABI_VERSION (TETHER_ABI_MAJOR * 65536u + TETHER_ABI_MINOR)

#endif /* TETHER_VERSION_H */
