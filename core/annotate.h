/*
 * annotate.h - happens-before annotations for valgrind's helgrind and DRD.
 *
 * Both tools build happens-before only from pthread calls.  The core also
 * hands data over through C11 atomics (the GIL changes hands with a CAS on
 * gil->word; a handle's object is published and freed through its slot's
 * reference count), which they cannot see.  These macros tell them, at
 * exactly those points, what the atomics already guarantee:
 *
 *   ann_happens_before(tag)   everything this thread did so far ...
 *   ann_happens_after(tag)    ... happens before what this thread does next
 *                             (a release and the acquire that reads it; the
 *                             tag is any address naming the hand-over)
 *   ann_forget(tag)           the hand-over named `tag` is over: a later use
 *                             of the same address starts with no history
 *   ann_atomic(var)           `var` is accessed only through C11 atomics
 *                             (or before it is shared), so concurrent
 *                             accesses to it are not data races; checking
 *                             stops for its bytes until their memory is
 *                             freed (both tools forget it on free)
 *
 * The two tools read the same client request for happens-before/after
 * (drd.h defines DRD's with helgrind's request numbers); ann_atomic issues
 * each tool's own request.  Under any other tool, and outside valgrind, a
 * client request is a few no-op instructions.
 *
 * They are compiled in only with the CMake option TETHER_VALGRIND (which
 * defines TETHER_VALGRIND); otherwise every macro expands to nothing, so
 * normal builds carry no trace of them.  docs/testing.md ("helgrind and
 * DRD") lists every annotation and why it is correct.
 */
#ifndef TETHER_ANNOTATE_H
#define TETHER_ANNOTATE_H

#ifdef TETHER_VALGRIND
#include <valgrind/helgrind.h>
#include <valgrind/drd.h> /* after helgrind.h: shares its ANNOTATE_HAPPENS_* */

#define ann_happens_before(tag) ANNOTATE_HAPPENS_BEFORE(tag)
#define ann_happens_after(tag) ANNOTATE_HAPPENS_AFTER(tag)
#define ann_forget(tag) ANNOTATE_HAPPENS_BEFORE_FORGET_ALL(tag)
#define ann_atomic(var)                                                       \
    do {                                                                      \
        VALGRIND_HG_DISABLE_CHECKING(&(var), sizeof(var));                    \
        ANNOTATE_BENIGN_RACE_SIZED(&(var), sizeof(var), #var);                \
    } while (0)
#else
#define ann_happens_before(tag) ((void)0)
#define ann_happens_after(tag) ((void)0)
#define ann_forget(tag) ((void)0)
#define ann_atomic(var) ((void)0)
#endif

#endif
