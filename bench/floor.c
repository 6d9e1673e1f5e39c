/*
 * floor.c - the physical floor of a checkpoint; see floor.h.
 */
#include <stdatomic.h>
#include <stddef.h>

#include "floor.h"

typedef struct floor_thread {
    _Atomic unsigned pending; /* Synchronization: atomic. */
} floor_thread;

static floor_thread the_thread;
static __thread floor_thread *current_gd;
static __thread floor_thread *current_ie
    __attribute__((tls_model("initial-exec")));

void bench_floor_attach(void)
{
    current_gd = &the_thread;
    current_ie = &the_thread;
}

static int pending(const floor_thread *t)
{
    if (t == NULL)
        return -1;
    return atomic_load_explicit(&t->pending, memory_order_relaxed) != 0;
}

int bench_floor_checkpoint_gd(void)
{
    return pending(current_gd);
}

int bench_floor_checkpoint_ie(void)
{
    return pending(current_ie);
}
