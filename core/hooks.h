/*
 * hooks.h - what the plugin loader and the FFI need from the floors below
 * them (threadobj.c, ensure.c).
 */
#ifndef TETHER_HOOKS_H
#define TETHER_HOOKS_H

#include "tether/tether.h"

/* Reports an error that no caller can receive (the guest function of a
   callback failed) to the excepthook of `interp`'s runtime, as the error of
   the calling thread.  `message` is a sentence, copied if kept.  Called on
   a thread that holds `interp`'s GIL.  [gil-held] */
void runtime_report_error(tether_interp interp, int code, const char *message);

/* tether_ensure for the library's own use (an FFI callback's call): a
   handle of an interpreter that is gone is not the caller's misuse, so
   TETHER_CONFIG_ABORT_ON_MISUSE does not abort.  Same returns.
   [any-thread] */
int ensure_internal(tether_interp h, tether_gilstate *out);

#endif
