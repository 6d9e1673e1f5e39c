/*
 * delay_ctl.h - a controller for the core's named delay points
 * (core/delay.h), for tests that must hold an ordering window open.
 *
 * Linking this file into a test program defines tether_test_delay_hook,
 * which the library calls at every point (the program must export it:
 * ENABLE_EXPORTS in CMake).  Every pass of every point is counted; an armed
 * point sleeps or parks the passing thread on its nth pass:
 *
 *   dctl_arm("thread.boot.after_handshake", 1, DCTL_PARK, 0);
 *   t = t_start(interp, fn, arg);          // the child is parked there
 *   ... assert what must hold in the window ...
 *   dctl_release("thread.boot.after_handshake");
 *
 * A parked thread may hold internal locks (delay.h says which points are
 * reached with which): the test must not need them until it releases it.
 * All functions may be called from any thread; none touches tether.
 */
#ifndef TETHER_DELAY_CTL_H
#define TETHER_DELAY_CTL_H

enum dctl_action { DCTL_SLEEP, DCTL_PARK };

/* Arms `name`: on its nth pass from now on (nth 0: on every pass), sleep
   `us` microseconds or park until dctl_release.  Re-arming replaces. */
void dctl_arm(const char *name, unsigned long nth, enum dctl_action action,
              unsigned long us);
/* Blocks until a thread is parked at `name`. */
void dctl_wait_parked(const char *name);
/* Disarms `name` and lets every thread parked there go on. */
void dctl_release(const char *name);
/* Passes of `name` so far (armed or not). */
unsigned long dctl_passes(const char *name);
/* Counts one pass of a test-defined event (e.g. "test.took"), as if a point
   of that name had been reached. */
void dctl_note(const char *name);
/* Blocks until `name` has more than `n` passes. */
void dctl_wait_passes(const char *name, unsigned long n);
/* Blocks until `a` has more than `na` passes or `b` more than `nb`;
   returns 0 for `a`, 1 for `b` (`a` wins a tie). */
int dctl_wait_either(const char *a, unsigned long na, const char *b,
                     unsigned long nb);

#endif
