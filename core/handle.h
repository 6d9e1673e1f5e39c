/*
 * handle.h - the typed, generation-checked handle table.
 *
 * A handle is 64 bits: [ 8 type | 32 generation | 24 slot index ], never 0.
 * Each slot holds one atomic word [ 32 generation | 1 open | 4 type |
 * 27 references ] and the object pointer.  Slots live in chunks that are
 * never moved or freed, so a lookup is lock-free: read the word, check the
 * generation, type and open bit, and take a reference with one CAS.  The
 * object stays alive while references remain; when the last one goes and
 * the handle is closed, the slot's destructor runs and the slot is recycled
 * with the next generation, so an old handle can never reach a new object.
 * Generations never wrap: a slot that issued generation 2^32 - 1 is retired
 * when that handle dies and is never used again, so no handle value is
 * ever issued twice in a process.
 */
#ifndef TETHER_HANDLE_H
#define TETHER_HANDLE_H

#include <stdatomic.h>
#include <stdint.h>

#include "tuning.h"

enum handle_type {
    HT_RUNTIME = 1,
    HT_INTERP,
    HT_THREAD,
    HT_LOCK,
    HT_EVENT,
    HT_PLUGIN,
    HT_CALLBACK,
    HT_CHANNEL,
    HT__COUNT
};

typedef void (*handle_dtor)(void *obj);

/* Issues a handle for `obj` with one reference (the creator's).  `name` is
   copied for the TETHER_DEBUG leak report (may be NULL).
   Returns TETHER_OK or TETHER_ENOMEM. */
int handle_new(int type, void *obj, handle_dtor dtor, const char *name,
               uint64_t *out);

/* Takes a reference: returns the object, or NULL if `h` is zero, stale,
   forged, closed or of another type. */
void *handle_get(uint64_t h, int type);

/* Like handle_get, and also accepts a closed handle that still has
   references (so a finalizing object can answer EFINALIZING). */
void *handle_get_any(uint64_t h, int type);

/* handle_get for a handle the caller passed in: on failure it is the
   caller's misuse, "fn: not a <type> handle (0x...)", and NULL. */
void *handle_get_or_misuse(uint64_t h, int type, const char *fn);

/* The spare word of the slot that `h`'s index names, or NULL if that
   slot was never allocated.  Neither validates `h` nor takes a reference:
   the word outlives every object (slots are never freed), so a fast path
   may use it as its object's state if that state also names the handle's
   generation, which tells a stale or forged handle apart (a lock: wait.c).
   A slot's word starts as HANDLE_WORD_INIT (generation 0, which no handle
   has, and all state bits set) and is written only by the object type
   that owns the slot.  Any thread. */
#define HANDLE_WORD_INIT 0xffffffffull
extern _Atomic(_Atomic uint64_t *) g_handle_words[MAX_CHUNKS]; /* handle.c */
static inline _Atomic uint64_t *handle_word(uint64_t h)
{
    uint32_t idx = (uint32_t)(h & ((1u << 24) - 1));
    if (idx >> CHUNK_BITS >= MAX_CHUNKS)
        return 0;
    _Atomic uint64_t *w =
        atomic_load_explicit(&g_handle_words[idx >> CHUNK_BITS], memory_order_acquire);
    return w ? &w[idx & ((1u << CHUNK_BITS) - 1)] : 0;
}

/* The generation field of a handle (not validated). */
static inline uint32_t handle_generation(uint64_t h) { return (uint32_t)(h >> 24); }

/* Takes one more reference on a handle already referenced by the caller. */
void handle_ref(uint64_t h);

/* Drops a reference; the last one of a closed handle runs the destructor. */
void handle_put(uint64_t h);

/* Closes the handle (lookups fail from now on) and drops the creator's
   reference.  Returns TETHER_OK, or TETHER_EBADHANDLE if it was not open. */
int handle_close(uint64_t h, int type);

/* A name for error messages: "runtime", "interp", ... */
const char *handle_type_name(int type);

/* The type a handle claims in its top byte (not validated). */
static inline int handle_claimed_type(uint64_t h) { return (int)(h >> 56); }

/* Calls fn for every open handle (for the TETHER_DEBUG report). */
/* Calls fn for every open handle, with the table lock held (fn must not
   issue, close or drop handles). */
void handle_foreach_open(void (*fn)(uint64_t h, int type, void *obj,
                                    const char *name, uint64_t creator,
                                    void *ud),
                         void *ud);

/* For tests (tests/unit/test_handle_table.c, which compiles the core in),
   so that a slot's last generation is reached without four billion
   cycles: sets the generation of the free slot that `h`, a dead handle of
   the slot's current generation, names; its next handle gets gen + 1.
   Returns 0, or -1 if `h` is not such a handle or gen is the last one. */
int handle_test_set_generation(uint64_t h, uint32_t gen);

/* pthread_atfork: prepare takes the table lock, parent and child release it. */
void handle_atfork_prepare(void);
void handle_atfork_parent(void);
void handle_atfork_child(void);

#endif
