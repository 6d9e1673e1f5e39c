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
