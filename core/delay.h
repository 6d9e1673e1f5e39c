/*
 * delay.h - named delay points: places where an ordering matters, made
 * visible to tests.
 *
 *   TETHER_DELAY_POINT("thread.boot.after_handshake");
 *
 * marks a spot between two steps whose order an invariant depends on (the
 * started-handshake and the bind of the thread state; thread_finish and
 * the state teardown; a GIL fast-path CAS and the holder publication; a
 * drop request and the drop; each step of finalize and of unload).  A
 * test holds such a window open to prove the invariant, instead of hoping
 * that a stress loop lands in a window a few instructions wide.
 *
 * What a point does when reached, in this order:
 *   1. the test hook: if the program defines
 *        void tether_test_delay_hook(const char *name);
 *      (with default visibility, e.g. linked with -rdynamic), the library
 *      calls it with the point's name.  The hook may sleep, or park the
 *      thread until the test releases it (tests/delay/delay_ctl.h is such a
 *      controller: arm a point to sleep N us or park, on the nth pass);
 *   2. TETHER_DELAY=name:us[:nth][,...]: sleeps `us` microseconds at the
 *      named point, on every pass or only on the nth (1-based);
 *   3. TETHER_CHAOS=seed: random small sleeps (up to 100 us, one pass in
 *      2048) at the points, from the seed
 *      (rr's chaos mode, at named places): the stress and reliability
 *      suites run once with it (scripts/test.sh).
 *
 * Points exist only in builds with the CMake option TETHER_DELAY_POINTS
 * (on by default in Debug builds, so in the dev and sanitizer presets);
 * elsewhere the macro expands to nothing, and the library has neither the
 * point names nor a reference to the hook (tests/delay/check_points.py
 * checks both with objdump).  A point may be reached with internal locks
 * held (the GIL mutex, an interpreter mutex): a hook that parks there must
 * know what the parked thread holds.  docs/testing.md lists every point.
 */
#ifndef TETHER_DELAY_H
#define TETHER_DELAY_H

#ifdef TETHER_DELAY_POINTS
/* Runs the hook, TETHER_DELAY and TETHER_CHAOS for the point `name` (a
   string literal).  Keeps errno.  Any thread. */
void delay_point(const char *name);
#define TETHER_DELAY_POINT(name) delay_point(name)
#else
#define TETHER_DELAY_POINT(name) ((void)0)
#endif

#endif
