/*
 * lockrank.c - the lock-order check of debug builds (lockrank.h).
 */
#include "lockrank.h"

#include <stdio.h>
#include <stdlib.h>

#ifndef NDEBUG
/* Synchronization: thread-local.  Locks of each rank the thread holds. */
static _Thread_local unsigned char t_ranks[RANK__COUNT];

void rank_check_take(enum lock_rank r)
{
    for (int q = (int)r; q < RANK__COUNT; q++) {
        if (t_ranks[q]) {
            fprintf(stderr, "tether: lock order violated: taking a rank-%d lock "
                    "while holding a rank-%d lock (core/lockrank.h)\n", (int)r, q);
            abort();
        }
    }
    t_ranks[r]++;
}

void rank_note_give(enum lock_rank r) { t_ranks[r]--; }
#else
typedef int lockrank_release_build; /* ISO C: no empty translation unit */
#endif
