/*
 * alloc.h - the library's allocator and fault injection.
 *
 * Every allocation in core/ goes through t_malloc/t_calloc/t_free so that
 * tether_set_allocator can replace them and tether_fault_inject can make any
 * one of them fail (the OOM sweep, tests/reliability/test_oom_sweep.c).
 * The one exception is the handle table's chunks (handle.c): they live as
 * long as the process, so they come from the system allocator, and only
 * tether_fault_inject's switch is asked.
 */
#ifndef TETHER_ALLOC_H
#define TETHER_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *t_malloc(size_t n);
void *t_calloc(size_t count, size_t n); /* zeroed; NULL on overflow */
void t_free(void *p);
char *t_strdup(const char *s);

/* 1 if the next operation of kind `what` (TETHER_FAULT_*) must fail. */
int fault_hit(uint32_t what);

/* Fork child: the fault switch lock may have been held by a vanished thread. */
void alloc_atfork_child(void);

/* Counts runtimes alive, so the allocator is swapped only when none is. */
void alloc_runtime_add(int delta);

#endif
