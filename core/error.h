/*
 * error.h - status codes and the per-thread last-error sentence.
 */
#ifndef TETHER_ERROR_H
#define TETHER_ERROR_H

#include "tether/tether.h"

#if defined(__GNUC__)
#define T_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define T_PRINTF(f, a)
#endif

/* Formats "func: message" into the calling thread's last-error buffer and
   returns `code`, so a failing path reads `return err_set(...)`. */
int err_set(int code, const char *func, const char *fmt, ...) T_PRINTF(3, 4);

/* Like err_set, for misuse by the caller (bad handle, wrong thread,
   unbalanced release): aborts with the message when misuse_aborts(). */
int err_misuse(int code, const char *func, const char *fmt, ...)
    T_PRINTF(3, 4);

/* 1 if the TETHER_DEBUG reports are on: the variable is set, not empty and
   not "0".  Every report (finalize's leak report, the "exited while
   attached" line) asks this one function. */
int err_debug_enabled(void);

/* 1 if misuse by the calling thread aborts: it is attached to an
   interpreter of a runtime created with TETHER_CONFIG_ABORT_ON_MISUSE, or,
   attached to none, holds a thread state of one. */
int misuse_aborts(void);

#endif
