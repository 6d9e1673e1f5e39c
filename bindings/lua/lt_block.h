/*
 * lt_block.h - blocking with the GIL released, and being woken out of it
 * (lt_block.c).  The binding's one primitive for system calls that may
 * block: the io/os replacements (lt_io.c), tether.wait_fd and whatever C
 * code of the binding needs to wait for a descriptor.
 *
 * The model.  Each OS thread owns one wake-up descriptor (an eventfd, made
 * on first use and closed when the thread exits).  lt_block_call runs a
 * function with the GIL released through tether_call_blocking, whose
 * unblock function writes the caller's wake-up descriptor: a raise, a
 * cancel or finalize aimed at the blocked thread makes it readable.  The
 * function waits only in lt_block_poll, which polls its descriptor and
 * the wake-up descriptor together, so it returns LT_BLOCK_WOKEN instead of
 * sleeping on.  Nothing is read or written before the poll says it will
 * not block, so a woken call has consumed nothing: data read before stays
 * where it was.  No signal is sent and no signal handler is touched.
 */
#ifndef TETHER_LT_BLOCK_H
#define TETHER_LT_BLOCK_H

#include <poll.h>
#include <stdint.h>

#include "lt.h"

/* lt_block_poll's answer when the thread was woken (a raise, cancel or
   finalize): the caller gives up, leaving what it has not consumed. */
#define LT_BLOCK_WOKEN (-2)

/* Waits until `fd` is ready for `events` (POLLIN, POLLOUT or both), for
   at most timeout_ns nanoseconds (negative: for ever; 0: once, at once),
   or until the calling thread is woken.  Returns 1 when ready (*revents,
   which may be NULL, gets poll's answer for fd: POLLHUP and POLLERR count
   as ready), 0 at the timeout, LT_BLOCK_WOKEN, or -1 with errno set
   (EBADF for a descriptor that is not open).  Retries EINTR.
   [any-thread; called without the GIL inside lt_block_call's fn, or with
   it for a poll that must not block] */
int lt_block_poll(int fd, short events, int64_t timeout_ns, short *revents);

/* Like lt_block_poll for the n descriptors of p[0..n-1] at once (each
   with its own events; revents are set as poll sets them).  p must have
   room for n + 1 entries: p[n] is used for the wake-up descriptor.
   Returns the number of p[0..n-1] that are ready (POLLNVAL counts: the
   caller checks), 0 at the timeout, LT_BLOCK_WOKEN, or -1 with errno set.
   [as lt_block_poll] */
int lt_block_poll_many(struct pollfd *p, int n, int64_t timeout_ns);

/* Runs fn(arg) with the GIL released, so that the state's other threads
   run Lua meanwhile; fn must not touch any Lua state.  A raise, cancel or
   finalize aimed at the calling thread while fn runs wakes its
   lt_block_poll calls (which return LT_BLOCK_WOKEN; fn should then return
   at once).  *result gets fn's return value.  Returns TETHER_OK, or
   TETHER_EASYNC (an exception is now delivered) or TETHER_EFINALIZING:
   fn did run, and what it did stands; the caller tidies up and passes the
   status to lt_wait_ok, which raises or leaves Lua.  fn returning
   LT_BLOCK_WOKEN with TETHER_OK means the exception was held back
   (tether.deferred): the caller simply calls again.
   When the GIL cannot be let go — a thread the core does not know, or L
   running a finalizer, where the module never hands the GIL over — fn runs
   holding it, and cannot be woken.  [gil-held] */
int lt_block_call(lua_State *L, int (*fn)(void *arg), void *arg, int *result);

/* Adds tether.wait_fd to the module table on the top (upvalue S). */
void lt_open_block(lua_State *L, lt_state *S);

#endif
