/*
 * error.c - status names and messages from TETHER_STATUS_MAP, and the
 * per-thread last-error sentence.
 */
#include "error.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annotate.h"
#include "internal.h"
#include "tuning.h"

/* Synchronization: thread-local. */
static _Thread_local char t_err[ERR_BUF];

const char *tether_strerror(int code)
{
    switch (code) {
#define XX(name, value, msg) case value: return msg;
        TETHER_STATUS_MAP(XX)
#undef XX
    case TETHER_EXIT:
        return "the thread exited silently";
    default:
        return "unknown status";
    }
}

const char *tether_status_name(int code)
{
    switch (code) {
#define XX(name, value, msg) case value: return #name;
        TETHER_STATUS_MAP(XX)
#undef XX
    case TETHER_EXIT:
        return "EXIT";
    default:
        return "UNKNOWN";
    }
}

const char *tether_last_error(void) { return t_err; }

int tether_set_error(int code, const char *message)
{
    if (!message)
        return err_misuse(TETHER_EINVAL, "tether_set_error",
                          "message must not be NULL");
    size_t n = strlen(message);
    if (n >= ERR_BUF) { /* cut before a UTF-8 continuation byte, not in it */
        n = ERR_BUF - 1;
        while (n > 0 && ((unsigned char)message[n] & 0xC0) == 0x80)
            n--;
    }
    memmove(t_err, message, n); /* message may be tether_last_error() */
    t_err[n] = '\0';
    return code;
}

/* Cuts a sentence that filled the buffer at its last whole UTF-8
   character: a quoted argument (a path, a plugin's own sentence) may have
   been cut in the middle of one. */
static void cut_whole(size_t len)
{
    size_t n = len;
    while (n > 0 && ((unsigned char)t_err[n - 1] & 0xC0) == 0x80)
        n--; /* continuation bytes */
    if (n == 0)
        return;
    unsigned char lead = (unsigned char)t_err[n - 1];
    size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (lead >= 0xC0 && len - (n - 1) < want)
        t_err[n - 1] = '\0'; /* a lead byte without all its continuation */
}

static void vset(const char *func, const char *fmt, va_list ap)
{
    int n = snprintf(t_err, ERR_BUF, "%s: ", func);
    if (n < 0 || n >= ERR_BUF)
        return;
    int m = vsnprintf(t_err + n, ERR_BUF - (size_t)n, fmt, ap);
    if (m >= 0 && (size_t)n + (size_t)m >= ERR_BUF)
        cut_whole(ERR_BUF - 1);
}

int err_set(int code, const char *func, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(func, fmt, ap);
    va_end(ap);
    return code;
}

int err_misuse(int code, const char *func, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(func, fmt, ap);
    va_end(ap);
    if (misuse_aborts()) {
        fprintf(stderr, "tether: misuse (TETHER_CONFIG_ABORT_ON_MISUSE): %s\n",
                t_err);
        abort();
    }
    return code;
}

int err_debug_enabled(void)
{
    const char *v = getenv("TETHER_DEBUG");
    return v && *v && strcmp(v, "0") != 0;
}

/* TETHER_CONFIG_ABORT_ON_MISUSE is a runtime's: misuse aborts when the
   calling thread is attached to an interpreter of a runtime made with it,
   or, attached to none, has a thread state of one (it was attached to it
   before: a saved state, or one cached after the last release).  Only the
   calling thread's own record is read; its states hold references on
   their interpreters and runtimes, so `rt` is valid, and `flags` never
   changes. */
int misuse_aborts(void)
{
    struct osthread *os = osthread_peek();
    if (!os)
        return 0;
    if (os->current)
        return (os->current->interp->rt->flags & TETHER_CONFIG_ABORT_ON_MISUSE) != 0;
    for (struct tstate *ts = os->cache; ts; ts = ts->os_next)
        if (ts->interp->rt->flags & TETHER_CONFIG_ABORT_ON_MISUSE)
            return 1;
    return 0;
}
