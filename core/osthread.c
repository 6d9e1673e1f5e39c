/*
 * osthread.c - the calling thread's record, as every floor reads it.
 *
 * One initial-exec TLS pointer to the per-OS-thread record (struct
 * osthread), and the two questions every file asks of it (osthread_peek, ts_current:
 * inline in internal.h): which record (if any) and which thread state is
 * attached.  It calls nothing, so the
 * lowest files (error.c, to decide whether misuse aborts) may read it.
 * The record is made, and freed at thread exit, by tstate.c.
 */
#include "internal.h"

/* The calling thread's record.  Synchronization: thread-local.  The
   initial-exec model makes the access one instruction; it is one pointer,
   well inside the static TLS that glibc keeps for dlopen'ed libraries. */
__thread struct osthread *t_os __attribute__((tls_model("initial-exec")));

/* What t_breaker points at while the thread is detached: non-zero, so that
   tether_checkpoint's one test sends a detached caller to its slow path,
   which answers TETHER_ESTATE.  Synchronization: immutable. */
_Atomic unsigned g_breaker_detached = 1;

/* The attached state's breaker word (internal.h).  Synchronization:
   thread-local.  Initial-exec, like t_os: tether_checkpoint is a load of
   it and a load through it. */
__thread _Atomic unsigned *t_breaker
    __attribute__((tls_model("initial-exec"))) = &g_breaker_detached;
