/*
 * floor.h - the physical floor of a checkpoint: what the cheapest possible
 * "is anything pending for this thread?" costs when it lives in a shared
 * library, as tether_checkpoint does.  Built as its own .so so the call
 * crosses the same PLT boundary.
 */
#ifndef TETHER_BENCH_FLOOR_H
#define TETHER_BENCH_FLOOR_H

/* Points the calling thread's TLS slots at a thread record. */
void bench_floor_attach(void);

/* Reads the thread record through a __thread pointer in the dynamic TLS
   model (the default in a shared library: a __tls_get_addr call) and
   returns whether its pending word is non-zero (one relaxed load).  -1 when
   the thread is not attached. */
int bench_floor_checkpoint_gd(void);

/* The same through an initial-exec __thread pointer (a fixed offset from
   the thread pointer, possible for a library loaded at start-up). */
int bench_floor_checkpoint_ie(void);

#endif
