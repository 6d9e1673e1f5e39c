/*
 * lt_alloc.c - a small-block cache in front of the Lua state's allocator.
 *
 * Why.  glibc's malloc skips its arena locks while a process has a single
 * thread, and takes them for good once a second thread has been created.
 * Lua allocates and frees constantly, so one idle tether thread made
 * allocation-heavy Lua code some 15-20 % slower.  But every allocation of a
 * Lua state happens under its GIL, which already serialises them: so, as
 * CPython's pymalloc does, the module keeps freed small blocks on free
 * lists that need no lock, and hands them out again.
 *
 * How.  Lua tells the allocator the size of every block it frees, so the
 * lists are kept by exact size (blocks of up to LT_POOL_MAX bytes; no
 * header, no rounding).  A cached block was made by the allocator the state
 * had before (prev), with that very size, so handing it out again for the
 * same size, and later giving it back to prev, is exactly what prev has
 * seen happen to it.  At most LT_POOL_BYTES are kept; beyond that, and for
 * larger blocks and reallocations, the calls go to prev.  When prev fails
 * the cache is emptied and the call tried once more.  When the state
 * closes, the cache is emptied and prev put back before Lua frees the rest.
 *
 * Synchronization: gil.  The allocator runs only on the thread that runs
 * Lua, which holds the GIL (or, while the state closes, is the only one
 * left).
 */
#include <stdlib.h>
#include <string.h>

#include "lt.h"


struct lt_pool {
    lua_Alloc prev;
    void *prev_ud;
    size_t cached;                /* bytes on the lists */
    void *lists[LT_POOL_MAX + 1]; /* by size; a block's first word links */
};

static void pool_flush(lt_pool *pool)
{
    for (size_t n = 0; n <= LT_POOL_MAX; n++) {
        while (pool->lists[n]) {
            void *b = pool->lists[n];
            pool->lists[n] = *(void **)b;
            pool->prev(pool->prev_ud, b, n, 0);
        }
    }
    pool->cached = 0;
}

/* Frees through the cache when the block fits in it. */
static void pool_free(lt_pool *pool, void *p, size_t n)
{
    if (n >= sizeof(void *) && n <= LT_POOL_MAX && pool->cached + n <= LT_POOL_BYTES) {
        *(void **)p = pool->lists[n];
        pool->lists[n] = p;
        pool->cached += n;
        return;
    }
    pool->prev(pool->prev_ud, p, n, 0);
}

/* The lua_Alloc: cache hits for new small blocks, prev for the rest. */
static void *pool_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    lt_pool *pool = ud;
    if (nsize == 0) {
        if (p)
            pool_free(pool, p, osize);
        return NULL;
    }
    if (!p && nsize <= LT_POOL_MAX && pool->lists[nsize]) {
        void *b = pool->lists[nsize];
        pool->lists[nsize] = *(void **)b;
        pool->cached -= nsize;
        return b;
    }
    void *r = pool->prev(pool->prev_ud, p, osize, nsize);
    if (!r && pool->cached) {
        pool_flush(pool);
        r = pool->prev(pool->prev_ud, p, osize, nsize);
    }
    return r;
}

lt_pool *lt_pool_install(lua_State *L)
{
    const char *env = getenv("TETHER_LUA_POOL");
    if (env && env[0] == '0')
        return NULL;
    lt_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->prev = lua_getallocf(L, &pool->prev_ud);
    lua_setallocf(L, pool_alloc, pool);
    return pool;
}

void lt_pool_remove(lua_State *L, lt_pool *pool)
{
    void *ud;
    if (!pool)
        return;
    pool_flush(pool);
    if (lua_getallocf(L, &ud) == pool_alloc && ud == pool) {
        lua_setallocf(L, pool->prev, pool->prev_ud);
        free(pool);
    }
    /* else someone wrapped it since: it must stay, as a pass-through */
}

/* lt_alloc_never_free's allocator: allocations go to the previous one,
   frees nowhere.  The record itself is never freed either. */
typedef struct keep_all {
    lua_Alloc prev;
    void *prev_ud;
} keep_all;

static void *keep_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    keep_all *k = ud;
    if (nsize == 0)
        return NULL; /* p stays: a late thread may still use it */
    if (!p)
        return k->prev(k->prev_ud, NULL, osize, nsize);
    void *n = k->prev(k->prev_ud, NULL, 0, nsize); /* moved, not freed */
    if (n)
        memcpy(n, p, osize < nsize ? osize : nsize);
    return n;
}

void lt_alloc_never_free(lua_State *L)
{
    keep_all *k = malloc(sizeof *k);
    if (!k)
        return; /* nothing better to do: the state is freed as usual */
    k->prev = lua_getallocf(L, &k->prev_ud);
    lua_setallocf(L, keep_alloc, k);
}
