/*
 * fuzz_lua_codec.c - the libFuzzer target for the decoder of the Lua
 * binding's value encoding (bindings/lua/lt_codec.c: what crosses between
 * isolated interpreters, on channels and as thread arguments and results).
 *
 * How it is built.  lt_codec.c is compiled alone and unchanged, with the
 * system liblua5.4: it calls nothing of the rest of the binding or of the
 * core (lt_codec.c says why).  The channel references it takes and drops
 * go through the calls given to lt_codec_init; here they keep a reference
 * count for three channels of the harness (handles 1, 2 and 3) and refuse
 * any other handle as the core does (TETHER_EBADHANDLE).
 *
 * Properties checked on every input (abort() on a violation):
 *  - decoding arbitrary bytes into a fresh lua_State either succeeds or
 *    raises "tether: corrupt message", and never reads past the input or
 *    crashes (ASan, UBSan);
 *  - what decodes re-encodes (unless the encoder's path-depth bound is
 *    hit: it may meet a shared table deeper than the decoder did), the
 *    re-encoding decodes to the same number of values with the same
 *    shape (an order-independent fingerprint: the top-level values, and
 *    every table's entries as a multiset), and lt_drop_channels finds in
 *    it exactly the channel references the encoder took;
 *  - lt_drop_channels on the raw input never reads past it, and on an
 *    input that decoded counts exactly the channels the decoder retained;
 *  - once the state is closed, every channel reference taken was dropped,
 *    none twice.
 *
 * Built with clang -fsanitize=fuzzer when clang is available, and always as
 * a corpus replay program (replay.c) that runs the checked-in corpus.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lt.h"

/* ------------------------------------------------------------------------
 * The harness's channels
 * ---------------------------------------------------------------------- */

#define NCHAN 3

/* Synchronization: single-threaded. */
static struct {
    int refs[NCHAN + 1]; /* of the channel with that handle; [0] unused */
    int counting;        /* releases only count (lt_drop_channels on raw input) */
    long retains, releases;
} g;

static int *chan_refs(tether_channel ch)
{
    return ch >= 1 && ch <= NCHAN && g.refs[ch] > 0 ? &g.refs[ch] : NULL;
}

static int chan_retain(tether_channel ch)
{
    int *r = chan_refs(ch);
    if (!r)
        return TETHER_EBADHANDLE;
    ++*r;
    g.retains++;
    return TETHER_OK;
}

static int chan_release(tether_channel ch)
{
    if (g.counting) {
        g.releases++;
        return TETHER_OK;
    }
    int *r = chan_refs(ch);
    if (!r)
        return TETHER_EBADHANDLE;
    if (--*r == 0)
        abort(); /* the harness's own reference: someone dropped one twice */
    g.releases++;
    return TETHER_OK;
}

static const lt_chanrefs chanrefs = {chan_retain, chan_release};

/* ------------------------------------------------------------------------
 * The shape of decoded values
 * ---------------------------------------------------------------------- */

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15u + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdu;
    return h ^ (h >> 33);
}

/* What the value at idx is, not looking inside tables: its type and
   contents for a scalar, a string or a channel. */
static uint64_t describe(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    uint64_t h = mix(0, (uint64_t)t + 1);
    switch (t) {
    case LUA_TBOOLEAN:
        return mix(h, (uint64_t)lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return mix(mix(h, 1), (uint64_t)lua_tointeger(L, idx));
        lua_Number n = lua_tonumber(L, idx);
        uint64_t bits;
        memcpy(&bits, &n, sizeof bits);
        return mix(mix(h, 2), bits);
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        h = mix(h, n);
        for (size_t i = 0; i < n; i++)
            h = mix(h, (unsigned char)s[i]);
        return h;
    }
    case LUA_TUSERDATA: {
        lt_chan *c = luaL_testudata(L, idx, LT_CHANNEL_MT);
        if (!c || c->ch == 0)
            abort(); /* the decoder makes no other userdata */
        return mix(h, c->ch);
    }
    case LUA_TTABLE:
        lt_push_cancelled(L);
        h = mix(h, (uint64_t)lua_rawequal(L, idx, -1));
        lua_pop(L, 1);
        return h;
    default:
        return h;
    }
}

/* Queues the table at idx if it is not tether.Cancelled and not seen. */
static void visit(lua_State *L, int idx, int seen, int queue, lua_Integer *n)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return;
    lt_push_cancelled(L);
    int skip = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    if (skip || lua_rawget(L, seen) != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen);
    lua_pushvalue(L, idx);
    lua_rawseti(L, queue, ++*n);
}

/* The fingerprint of the n values from `first`: each top-level value in
   its place, and every table reached (each once, however often it is
   referred to) as the multiset of its entries. */
static uint64_t fingerprint(lua_State *L, int first, int n)
{
    luaL_checkstack(L, 8, "fingerprint");
    lua_newtable(L);
    int seen = lua_gettop(L);
    lua_newtable(L);
    int queue = lua_gettop(L);
    lua_Integer queued = 0;
    uint64_t top = mix(0, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        top = mix(top, describe(L, first + i));
        visit(L, first + i, seen, queue, &queued);
    }
    uint64_t tables = 0;
    for (lua_Integer i = 1; i <= queued; i++) {
        lua_rawgeti(L, queue, i);
        int t = lua_gettop(L);
        uint64_t entries = 0, count = 0;
        lua_pushnil(L);
        while (lua_next(L, t)) {
            entries += mix(describe(L, -2), describe(L, -1));
            count++;
            visit(L, -2, seen, queue, &queued);
            visit(L, -1, seen, queue, &queued);
            lua_pop(L, 1);
        }
        tables += mix(count, entries);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return mix(mix(top, tables), (uint64_t)queued);
}

/* ------------------------------------------------------------------------
 * The target
 * ---------------------------------------------------------------------- */

struct run {
    const uint8_t *data;
    size_t size;
    int decoded;  /* the input decoded */
    int reencoded;
};

/* lt_drop_channels over `data` with releases only counted: how many
   channel references it would drop. */
static long count_drops(const void *data, size_t len)
{
    long before = g.releases;
    g.counting = 1;
    lt_drop_channels(data, len);
    g.counting = 0;
    return g.releases - before;
}

/* encode_all(blob, values...) */
static int encode_all(lua_State *L)
{
    lt_blob *b = lua_touserdata(L, 1);
    for (int i = 2, n = lua_gettop(L); i <= n; i++)
        lt_encode(L, b, i, "value");
    return 0;
}

/* Decodes the input; then re-encodes, decodes again and compares. */
static int round_trip(lua_State *L)
{
    struct run *r = lua_touserdata(L, 1);
    lua_settop(L, 0);
    long retains = g.retains;
    int n = lt_decode(L, r->data, r->size);
    r->decoded = 1;
    if (n != lua_gettop(L) || count_drops(r->data, r->size) != g.retains - retains)
        abort();
    uint64_t fp = fingerprint(L, 1, n);

    lt_blob *b = lt_blob_push(L);
    int bi = lua_gettop(L);
    luaL_checkstack(L, n + 2, "tether: too many values");
    lua_pushcfunction(L, encode_all);
    lua_pushlightuserdata(L, b);
    for (int i = 1; i <= n; i++)
        lua_pushvalue(L, i);
    if (lua_pcall(L, n + 1, 0, 0) != LUA_OK) {
        if (!strstr(lua_tostring(L, -1), "tables nested too deeply"))
            abort(); /* every decoded value is copyable */
        return 0;
    }
    r->reencoded = 1;
    /* Hand the encoder's references over to the encoding, as a send does,
       and let lt_drop_channels drop them: it must find every one. */
    if (count_drops(b->data, b->len) != (long)b->nchans)
        abort();
    lt_drop_channels(b->data, b->len);
    b->nchans = 0;
    retains = g.retains;
    if (lt_decode(L, b->data, b->len) != n ||
        g.retains - retains != count_drops(b->data, b->len) ||
        fingerprint(L, bi + 1, n) != fp)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lt_codec_init(&chanrefs);
    for (int i = 1; i <= NCHAN; i++)
        g.refs[i] = 1; /* the harness's own */
    (void)count_drops(data, size); /* any bytes: must stay inside them */

    lua_State *L = luaL_newstate();
    if (!L)
        abort();
    lt_open_codec(L);

    struct run r = {data, size, 0, 0};
    lua_pushcfunction(L, round_trip);
    lua_pushlightuserdata(L, &r);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        const char *why = lua_tostring(L, -1);
        /* Only the decoding of the input may fail, and only as corrupt
           (or out of memory, or past Lua's stack limit). */
        if (r.decoded || !why ||
            (!strstr(why, "tether: corrupt message") &&
             !strstr(why, "not enough memory") &&
             !strstr(why, "stack overflow") &&
             !strstr(why, "too many values")))
            abort();
    }
    lua_close(L);
    for (int i = 1; i <= NCHAN; i++)
        if (g.refs[i] != 1)
            abort(); /* a reference leaked */
    return 0;
}
