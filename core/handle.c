/*
 * handle.c - the typed, generation-checked handle table (see handle.h).
 *
 * Lookups never lock: slots sit in chunks that are allocated once and never
 * freed or moved, and the slot's state is one atomic word, so a stale
 * handle reads a slot that still exists and fails the generation check.
 * Only issuing a handle and recycling a slot take g_handle_lock.
 */
#include "handle.h"
#include "lockrank.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "annotate.h"
#include "error.h"
#include "platform.h"
#include "tuning.h"

#define CHUNK_SLOTS (1u << CHUNK_BITS)

/* The slot word (handle.h): [ 32 generation | 1 open | 4 type | 27 refs ]. */
#define W_REFS_MASK ((1ull << 27) - 1)
#define W_TYPE_SHIFT 27
#define W_TYPE_MASK 0xfull
#define W_OPEN (1ull << 31)
#define W_GEN_SHIFT 32
#define GEN_MASK 0xffffffffull
/* A slot that issued this generation is retired when it is freed. */
#define GEN_LAST GEN_MASK

#define W_REFS(w) ((w) & W_REFS_MASK)
#define W_TYPE(w) ((int)(((w) >> W_TYPE_SHIFT) & W_TYPE_MASK))
#define W_GEN(w) (((w) >> W_GEN_SHIFT) & GEN_MASK)

/* The handle (handle.h): [ 8 type | 32 generation | 24 slot index ]. */
#define H_INDEX_BITS 24
#define H_INDEX(h) ((uint32_t)((h) & ((1ull << H_INDEX_BITS) - 1)))
#define H_GEN(h) (((h) >> H_INDEX_BITS) & GEN_MASK)
#define H_TYPE(h) ((int)((h) >> 56))
#define MAKE_HANDLE(type, gen, idx)                                           \
    ((uint64_t)(type) << 56 | (uint64_t)(gen) << H_INDEX_BITS | (uint64_t)(idx))

_Static_assert(HT__COUNT - 1 <= W_TYPE_MASK, "handle types fit the slot word");
_Static_assert((uint64_t)MAX_CHUNKS * CHUNK_SLOTS <= 1ull << H_INDEX_BITS,
               "slot indexes fit the handle");

struct slot {
    _Atomic uint64_t word; /* Synchronization: atomic (see handle.h) */
    /* The fields below are written by the issuer before the release store
       that opens the slot, and by the destroyer after the last reference
       is gone: Synchronization: owned by whoever holds the slot's life. */
    void *obj;
    handle_dtor dtor;
    char *name;            /* for the leak report; freed under g_handle_lock */
    uint64_t creator;      /* OS thread ident of the creator */
    uint32_t next_free;    /* free-list link + 1; Synchronization: g_handle_lock */
};

/* Synchronization: each entry is written once (under g_handle_lock) with a
   release store and never changes again. */
static _Atomic(struct slot *) g_chunks[MAX_CHUNKS];
/* Each chunk's spare words (handle_word, inline in handle.h), one per
   slot, allocated with the chunk, after its slots.  Synchronization: as
   g_chunks (written once, before the chunk's own entry); the words:
   atomic, by their object type's rules (wait.c for locks). */
_Atomic(_Atomic uint64_t *) g_handle_words[MAX_CHUNKS];

/* g_handle_lock protects the free list, the chunk count and slot names.
   Lock order: RANK_LEAF, after any other core lock; only the fault switch
   (an allocation growing the table) is taken while holding it. */
static pthread_mutex_t g_handle_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t g_free_head; /* index + 1 of the first free slot, 0 = none */
static uint32_t g_nchunks;

static const char *const g_type_names[HT__COUNT] = {
    "?", "runtime", "interp", "thread", "lock", "event", "plugin", "callback",
    "channel"};

const char *handle_type_name(int type)
{
    return type > 0 && type < HT__COUNT ? g_type_names[type] : "unknown";
}

static struct slot *slot_at(uint32_t idx)
{
    uint32_t c = idx >> CHUNK_BITS;
    if (c >= MAX_CHUNKS)
        return NULL;
    struct slot *chunk = atomic_load_explicit(&g_chunks[c], memory_order_acquire);
    if (!chunk)
        return NULL;
    ann_happens_after(&g_chunks[c]);
    return &chunk[idx & (CHUNK_SLOTS - 1)];
}

/* Takes a free slot index, growing the table by one chunk when needed.
   Called with g_handle_lock held. */
static int take_slot(uint32_t *idx)
{
    if (g_free_head == 0) {
        if (g_nchunks == MAX_CHUNKS)
            return TETHER_ENOMEM;
        /* Chunks live as long as the process, so they come from the
           system allocator: tether_set_allocator waits for every block of
           its allocator to be freed. */
        _Static_assert(sizeof(struct slot) % sizeof(uint64_t) == 0,
                       "the spare words after the slots are aligned");
        struct slot *chunk =
            fault_hit(TETHER_FAULT_ALLOC)
                ? NULL
                : calloc(1, CHUNK_SLOTS * (sizeof *chunk + sizeof(uint64_t)));
        if (!chunk)
            return TETHER_ENOMEM;
        _Atomic uint64_t *words = (_Atomic uint64_t *)(chunk + CHUNK_SLOTS);
        uint32_t base = g_nchunks << CHUNK_BITS;
        for (uint32_t i = 0; i < CHUNK_SLOTS; i++) {
            chunk[i].next_free = i + 1 < CHUNK_SLOTS ? base + i + 2 : 0;
            ann_atomic(chunk[i].word); /* atomics only (helgrind, DRD) */
            atomic_init(&words[i], HANDLE_WORD_INIT);
            ann_atomic(words[i]);
        }
        /* The entries are read lock-free (slot_at, handle_word); the chunk's contents are
           published by the release store, and by g_handle_lock to the
           threads that read next_free. */
        ann_atomic(g_handle_words[g_nchunks]);
        ann_happens_before(&g_handle_words[g_nchunks]);
        atomic_store_explicit(&g_handle_words[g_nchunks], words,
                              memory_order_release);
        ann_atomic(g_chunks[g_nchunks]);
        ann_happens_before(&g_chunks[g_nchunks]);
        atomic_store_explicit(&g_chunks[g_nchunks], chunk, memory_order_release);
        g_nchunks++;
        g_free_head = base + 1;
    }
    *idx = g_free_head - 1;
    g_free_head = slot_at(*idx)->next_free;
    return TETHER_OK;
}

int handle_new(int type, void *obj, handle_dtor dtor, const char *name,
               uint64_t *out)
{
    char *copy = NULL;
    if (name && !(copy = t_strdup(name)))
        return TETHER_ENOMEM;
    rank_lock(&g_handle_lock, RANK_LEAF);
    uint32_t idx;
    int rc = take_slot(&idx);
    if (rc != TETHER_OK) {
        rank_unlock(&g_handle_lock, RANK_LEAF);
        t_free(copy);
        return rc;
    }
    struct slot *s = slot_at(idx);
    /* A free slot never issued GEN_LAST (destroy retires it), so this does
       not wrap: no handle value is ever issued twice. */
    uint64_t gen = W_GEN(atomic_load_explicit(&s->word, memory_order_relaxed)) + 1;
    s->obj = obj;
    s->dtor = dtor;
    s->name = copy;
    s->creator = plat_thread_ident();
    /* For helgrind and DRD: the slot's word is a reference count that
       publishes the object.  Every release on it (this store, each
       handle_put and handle_close) is an ann_happens_before(s); every
       acquire that succeeds (a lookup's CAS, the last put or close before
       destroy) an ann_happens_after(s): exactly the edges the C11 orders
       make, since each read-modify-write continues the release sequences
       before it. */
    ann_happens_before(s);
    atomic_store_explicit(&s->word,
                          gen << W_GEN_SHIFT | W_OPEN |
                              (uint64_t)type << W_TYPE_SHIFT | 1u,
                          memory_order_release);
    rank_unlock(&g_handle_lock, RANK_LEAF);
    *out = MAKE_HANDLE(type, gen, idx);
    return TETHER_OK;
}

static void *get(uint64_t h, int type, uint64_t need)
{
    if (H_TYPE(h) != type)
        return NULL;
    struct slot *s = slot_at(H_INDEX(h));
    if (!s)
        return NULL;
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
    do {
        if (W_GEN(w) != H_GEN(h) || W_TYPE(w) != type || (w & need) != need ||
            W_REFS(w) == 0 || W_REFS(w) == W_REFS_MASK)
            return NULL;
    } while (!atomic_compare_exchange_weak_explicit(
        &s->word, &w, w + 1, memory_order_acquire, memory_order_acquire));
    ann_happens_after(s);
    return s->obj;
}

void *handle_get(uint64_t h, int type) { return get(h, type, W_OPEN); }

void *handle_get_any(uint64_t h, int type) { return get(h, type, 0); }

void *handle_get_or_misuse(uint64_t h, int type, const char *fn)
{
    void *obj = handle_get(h, type);
    if (!obj) {
        const char *name = handle_type_name(type);
        err_misuse(TETHER_EBADHANDLE, fn, "not a%s %s handle (0x%llx)",
                   strchr("aeiou", name[0]) ? "n" : "", name,
                   (unsigned long long)h);
    }
    return obj;
}

void handle_ref(uint64_t h)
{
    atomic_fetch_add_explicit(&slot_at(H_INDEX(h))->word, 1, memory_order_relaxed);
}

/* Runs the destructor of a slot whose last reference is gone and puts the
   slot back on the free list, unless it has issued its last generation:
   then it is retired for the life of the process, so that its handles stay
   stale for ever (one slot lasts 2^32 - 1 handles; at ten million a second
   that is seven minutes, and the table's four million slots, each retired
   in turn, last over a thousand years). */
static void destroy(uint32_t idx, struct slot *s)
{
    void *obj = s->obj;
    handle_dtor dtor = s->dtor;
    int retire = W_GEN(atomic_load_explicit(&s->word, memory_order_relaxed)) ==
                 GEN_LAST;
    ann_forget(s); /* the next generation starts with no history */
    rank_lock(&g_handle_lock, RANK_LEAF);
    char *name = s->name;
    s->name = NULL;
    s->obj = NULL;
    if (!retire) {
        s->next_free = g_free_head;
        g_free_head = idx + 1;
    }
    rank_unlock(&g_handle_lock, RANK_LEAF);
    t_free(name);
    if (dtor)
        dtor(obj);
}

void handle_put(uint64_t h)
{
    uint32_t idx = H_INDEX(h);
    struct slot *s = slot_at(idx);
    ann_happens_before(s);
    uint64_t w = atomic_fetch_sub_explicit(&s->word, 1, memory_order_acq_rel);
    if (W_REFS(w) == 1 && !(w & W_OPEN)) {
        ann_happens_after(s);
        destroy(idx, s);
    }
}

int handle_close(uint64_t h, int type)
{
    if (H_TYPE(h) != type)
        return TETHER_EBADHANDLE;
    uint32_t idx = H_INDEX(h);
    struct slot *s = slot_at(idx);
    if (!s)
        return TETHER_EBADHANDLE;
    uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire), nw;
    do {
        if (W_GEN(w) != H_GEN(h) || W_TYPE(w) != type || !(w & W_OPEN) ||
            W_REFS(w) == 0)
            return TETHER_EBADHANDLE;
        nw = (w & ~W_OPEN) - 1;
        ann_happens_before(s);
    } while (!atomic_compare_exchange_weak_explicit(
        &s->word, &w, nw, memory_order_acq_rel, memory_order_acquire));
    if (W_REFS(nw) == 0) {
        ann_happens_after(s);
        destroy(idx, s);
    }
    return TETHER_OK;
}

void handle_foreach_open(void (*fn)(uint64_t h, int type, void *obj,
                                    const char *name, uint64_t creator,
                                    void *ud),
                         void *ud)
{
    rank_lock(&g_handle_lock, RANK_LEAF);
    for (uint32_t c = 0; c < g_nchunks; c++) {
        struct slot *chunk = atomic_load(&g_chunks[c]);
        for (uint32_t i = 0; i < CHUNK_SLOTS; i++) {
            uint64_t w = atomic_load(&chunk[i].word);
            if (!(w & W_OPEN))
                continue;
            uint64_t h = MAKE_HANDLE(W_TYPE(w), W_GEN(w), c << CHUNK_BITS | i);
            fn(h, W_TYPE(w), chunk[i].obj, chunk[i].name, chunk[i].creator, ud);
        }
    }
    rank_unlock(&g_handle_lock, RANK_LEAF);
}

int handle_test_set_generation(uint64_t h, uint32_t gen)
{
    uint32_t idx = H_INDEX(h);
    struct slot *s = slot_at(idx);
    int rc = -1;
    rank_lock(&g_handle_lock, RANK_LEAF);
    uint64_t w = s ? atomic_load(&s->word) : 0;
    if (s && W_GEN(w) == H_GEN(h) && !(w & W_OPEN) && W_REFS(w) == 0 &&
        W_GEN(w) != GEN_LAST && gen != GEN_LAST) {
        atomic_store(&s->word, (uint64_t)gen << W_GEN_SHIFT |
                                   (w & ~(GEN_MASK << W_GEN_SHIFT)));
        rc = 0;
    }
    rank_unlock(&g_handle_lock, RANK_LEAF);
    return rc;
}

void handle_atfork_prepare(void) { pthread_mutex_lock(&g_handle_lock); }
void handle_atfork_parent(void) { pthread_mutex_unlock(&g_handle_lock); }
void handle_atfork_child(void) { pthread_mutex_unlock(&g_handle_lock); }
