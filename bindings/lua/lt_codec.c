/*
 * lt_codec.c - the values that cross between Lua states: their encoding,
 * the channel values among them, and tether.Cancelled.  It calls nothing
 * of the binding and nothing of the core: the channel references it takes
 * and drops go through the functions lt_codec_init was given (the core's
 * tether_channel_retain and tether_channel_release, from lt_module.c), so
 * it compiles and runs alone (tests/fuzz/fuzz_lua_codec.c).  The channel
 * type, tether.channel and its methods, is lt_channel.c.
 *
 * Isolated interpreters share no Lua values: what crosses from one to
 * another is encoded into bytes by the sender and decoded by the receiver.
 * Copyable values are nil, booleans, integers and floats (the subtype is
 * kept), strings, channels, tether.Cancelled, and tables of copyable keys
 * and values.  Tables are copied deeply; a table met twice (a shared
 * subtable, or a cycle) is encoded once and referred to afterwards, so the
 * copy has the same shape.  Metatables are not copied.  Anything else is an
 * error at the sender naming where it was found ("cannot copy a function at
 * value.a.b[3]").
 *
 * The encoding
 * ============
 *
 * A value is a tag byte followed by its payload, integers little-endian:
 *
 *   NIL FALSE TRUE CANCELLED     no payload
 *   INT                          8 bytes, two's complement
 *   FLT                          8 bytes, the bits of the double
 *   STR                          8 bytes length, then the bytes
 *   CHAN                         8 bytes, a channel handle
 *   TABLE                        key, value pairs, then END
 *   REF                          8 bytes, the number (from 1, in order of
 *                                TABLE tags) of a table already decoded
 *
 * An encoding may hold several values one after the other (thread
 * arguments, results).  Each is encoded on its own (lt_encode), so tables
 * are numbered from 1 again at each: a REF names a table of its own
 * value, and a table passed twice arrives as two copies.
 *
 * The decoder reads only our own encoding but trusts none of it: every
 * length is checked against the bytes left, nesting is bounded, and a REF
 * must name a table already made.
 *
 * Channel references.  Each channel in an encoding holds a reference taken
 * by the encoder and listed in the blob (lt_blob), which drops them when it
 * is freed.  A message sent on a channel hands them on to the message, and
 * the message drops them when it is freed: by the receiver once decoded
 * (lt_blob.message), or by the channel's discard function if it is never
 * received (lt_drop_channels walks the encoding for them).  Every decoder
 * takes references of its own for the channels it makes, so an encoding
 * may be decoded many times (thread arguments, results, raised values).
 */
#include <stdlib.h>
#include <string.h>

#include "lt.h"

/* Registry key: tether.Cancelled. */
static const char k_cancelled = 0;

/* How channel references are taken and dropped: written once, by
   lt_codec_init, before any state uses the codec. */
static const lt_chanrefs *refs;

void lt_codec_init(const lt_chanrefs *r)
{
    refs = r;
}

enum {
    TAG_NIL = 1,
    TAG_FALSE,
    TAG_TRUE,
    TAG_INT,
    TAG_FLT,
    TAG_STR,
    TAG_CHAN,
    TAG_TABLE,
    TAG_END,
    TAG_REF,
    TAG_CANCELLED
};

#define LT_BLOB_MT "tether.blob"

/* ------------------------------------------------------------------------
 * Blobs
 * ---------------------------------------------------------------------- */

/* Reads 8 bytes little-endian. */
static uint64_t load_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void lt_drop_channels(const void *data, size_t len)
{
    if (len == 0)
        return; /* data may be NULL: no arithmetic on it */
    const unsigned char *p = data, *end = p + len;
    while (p != end) {
        uint64_t skip = 0;
        switch (*p++) {
        case TAG_INT: case TAG_FLT: case TAG_REF: case TAG_CHAN:
            skip = 8;
            break;
        case TAG_STR:
            if (end - p < 8 || load_u64(p) > (uint64_t)(end - p) - 8)
                return;
            skip = 8 + load_u64(p);
            break;
        case TAG_NIL: case TAG_FALSE: case TAG_TRUE: case TAG_CANCELLED:
        case TAG_TABLE: case TAG_END:
            break;
        default:
            return; /* not our encoding */
        }
        if (skip > (uint64_t)(end - p))
            return;
        if (p[-1] == TAG_CHAN)
            (void)refs->release(load_u64(p));
        p += skip;
    }
}

void lt_blob_clear(lt_blob *b)
{
    if (b->data && b->message)
        lt_drop_channels(b->data, b->len);
    if (b->data)
        b->release(b->data);
    for (size_t i = 0; i < b->nchans; i++)
        (void)refs->release(b->chans[i]);
    free(b->chans);
    memset(b, 0, sizeof *b);
    b->release = free;
}

void lt_blob_dtor(void *p)
{
    lt_blob_clear(p);
    free(p);
}

static int blob_gc(lua_State *L)
{
    lt_blob_clear(lua_touserdata(L, 1));
    return 0;
}

lt_blob *lt_blob_push(lua_State *L)
{
    lt_blob *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    b->release = free;
    if (luaL_newmetatable(L, LT_BLOB_MT)) {
        lua_pushcfunction(L, blob_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

lt_blob *lt_blob_move(lua_State *L, lt_blob *b)
{
    lt_blob *h = malloc(sizeof *h);
    if (!h)
        luaL_error(L, "tether: out of memory");
    *h = *b;
    memset(b, 0, sizeof *b);
    b->release = free;
    return h;
}

static void put(lua_State *L, lt_blob *b, const void *p, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len < n)
            cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d)
            luaL_error(L, "tether: out of memory");
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_tag(lua_State *L, lt_blob *b, int tag)
{
    unsigned char t = (unsigned char)tag;
    put(L, b, &t, 1);
}

static void put_u64(lua_State *L, lt_blob *b, uint64_t v)
{
    unsigned char w[8];
    for (int i = 0; i < 8; i++)
        w[i] = (unsigned char)(v >> (8 * i));
    put(L, b, w, 8);
}

static void keep_channel(lua_State *L, lt_blob *b, tether_channel ch)
{
    if (b->nchans == b->chcap) {
        size_t cap = b->chcap ? b->chcap * 2 : 4;
        tether_channel *c = realloc(b->chans, cap * sizeof *c);
        if (!c)
            luaL_error(L, "tether: out of memory");
        b->chans = c;
        b->chcap = cap;
    }
    if (refs->retain(ch) != TETHER_OK)
        luaL_error(L, "tether: a channel was released while being copied");
    b->chans[b->nchans++] = ch;
}

/* ------------------------------------------------------------------------
 * Encoding
 * ---------------------------------------------------------------------- */

typedef struct enc {
    lua_State *L;
    lt_blob *b;
    int seen;          /* stack index of table -> its number */
    lua_Integer ntables;
    const char *root;  /* the name of the value being encoded */
    int depth;
    int keys[LT_COPY_DEPTH]; /* stack indices of the keys on the path */
    /* Tables being encoded, keys included (the path above counts values
       only): bounded as the decoder bounds them, and bounding recursion. */
    int open;
} enc;

/* Appends the key at idx to the path in buffer B. */
static void add_key(lua_State *L, luaL_Buffer *B, int idx)
{
    size_t n;
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, idx, &n);
        int ident = n > 0 && (s[0] == '_' || (s[0] | 32) >= 'a') && (s[0] | 32) <= 'z';
        for (size_t i = 0; ident && i < n; i++)
            ident = s[i] == '_' || ((s[i] | 32) >= 'a' && (s[i] | 32) <= 'z') ||
                    (s[i] >= '0' && s[i] <= '9');
        lua_pushfstring(L, ident ? ".%s" : "[\"%s\"]", s);
    } else if (lua_type(L, idx) == LUA_TNUMBER || lua_type(L, idx) == LUA_TBOOLEAN) {
        luaL_tolstring(L, idx, NULL);
        lua_pushfstring(L, "[%s]", lua_tostring(L, -1));
        lua_remove(L, -2);
    } else {
        lua_pushfstring(L, "[%s]", luaL_typename(L, idx));
    }
    luaL_addvalue(B);
}

/* Raises "cannot copy a <type> at <path>" for the value at idx. */
static _Noreturn void enc_fail(enc *e, int idx, const char *as)
{
    lua_State *L = e->L;
    const char *type = luaL_typename(L, idx);
    if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING)
        type = lua_tostring(L, -1);
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    luaL_addstring(&B, e->root);
    for (int i = 0; i < e->depth; i++)
        add_key(L, &B, e->keys[i]);
    luaL_pushresult(&B);
    luaL_error(L, "cannot copy a %s%s at %s", type, as, lua_tostring(L, -1));
    abort(); /* not reached */
}

static void enc_value(enc *e, int idx, const char *as);

static void enc_table(enc *e, int idx)
{
    lua_State *L = e->L;
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->seen) == LUA_TNUMBER) {
        put_tag(L, e->b, TAG_REF);
        put_u64(L, e->b, (uint64_t)lua_tointeger(L, -1));
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lt_push_cancelled(L);
    int cancelled = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    if (cancelled) {
        put_tag(L, e->b, TAG_CANCELLED);
        return;
    }
    if (e->open == LT_COPY_DEPTH)
        luaL_error(L, "cannot copy %s: tables nested too deeply", e->root);
    lua_pushvalue(L, idx);
    lua_pushinteger(L, ++e->ntables);
    lua_rawset(L, e->seen);
    put_tag(L, e->b, TAG_TABLE);
    luaL_checkstack(L, 4, "tables nested too deeply");
    e->open++;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        enc_value(e, -2, " as a key");
        e->keys[e->depth++] = lua_absindex(L, -2);
        enc_value(e, -1, "");
        e->depth--;
        lua_pop(L, 1);
    }
    e->open--;
    put_tag(L, e->b, TAG_END);
}

static void enc_value(enc *e, int idx, const char *as)
{
    lua_State *L = e->L;
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        put_tag(L, e->b, TAG_NIL);
        return;
    case LUA_TBOOLEAN:
        put_tag(L, e->b, lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE);
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            put_tag(L, e->b, TAG_INT);
            put_u64(L, e->b, (uint64_t)lua_tointeger(L, idx));
        } else {
            lua_Number n = lua_tonumber(L, idx);
            uint64_t bits;
            memcpy(&bits, &n, sizeof bits);
            put_tag(L, e->b, TAG_FLT);
            put_u64(L, e->b, bits);
        }
        return;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        put_tag(L, e->b, TAG_STR);
        put_u64(L, e->b, n);
        put(L, e->b, s, n);
        return;
    }
    case LUA_TTABLE:
        enc_table(e, idx);
        return;
    case LUA_TUSERDATA: {
        lt_chan *c = luaL_testudata(L, idx, LT_CHANNEL_MT);
        if (c && c->ch) {
            keep_channel(L, e->b, c->ch);
            put_tag(L, e->b, TAG_CHAN);
            put_u64(L, e->b, c->ch);
            return;
        }
        break;
    }
    default:
        break;
    }
    enc_fail(e, idx, as);
}

void lt_encode(lua_State *L, lt_blob *b, int idx, const char *root)
{
    idx = lua_absindex(L, idx);
    enc e = {L, b, 0, 0, root, 0, {0}, 0};
    lua_newtable(L);
    e.seen = lua_gettop(L);
    enc_value(&e, idx, "");
    lua_pop(L, 1);
}

/* ------------------------------------------------------------------------
 * Decoding
 * ---------------------------------------------------------------------- */

typedef struct dec {
    lua_State *L;
    const unsigned char *p, *end;
    int tables;        /* stack index of number -> table */
    lua_Integer ntables;
    int depth;
} dec;

static _Noreturn void corrupt(dec *d)
{
    luaL_error(d->L, "tether: corrupt message");
    abort(); /* not reached */
}

static uint64_t get_u64(dec *d)
{
    if (d->end - d->p < 8)
        corrupt(d);
    uint64_t v = load_u64(d->p);
    d->p += 8;
    return v;
}

static int get_tag(dec *d)
{
    if (d->p == d->end)
        corrupt(d);
    return *d->p++;
}

static void dec_value(dec *d, int tag);

static void dec_table(dec *d)
{
    lua_State *L = d->L;
    if (d->depth == LT_COPY_DEPTH)
        corrupt(d);
    luaL_checkstack(L, 4, "tether: message nested too deeply");
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->tables, ++d->ntables);
    d->depth++;
    for (int tag; (tag = get_tag(d)) != TAG_END;) {
        dec_value(d, tag);
        dec_value(d, get_tag(d));
        if (lua_isnil(L, -2) || (lua_type(L, -2) == LUA_TNUMBER &&
                                 lua_tonumber(L, -2) != lua_tonumber(L, -2)))
            corrupt(d); /* not a valid key: the encoder never writes one */
        lua_rawset(L, -3);
    }
    d->depth--;
}

/* The userdata first, so that no reference is taken that an error could
   leave without an owner. */
static void dec_channel(dec *d)
{
    tether_channel ch = get_u64(d);
    lt_push_channel(d->L, 0);
    if (refs->retain(ch) != TETHER_OK)
        corrupt(d);
    ((lt_chan *)lua_touserdata(d->L, -1))->ch = ch;
}

static void dec_value(dec *d, int tag)
{
    lua_State *L = d->L;
    switch (tag) {
    case TAG_NIL: lua_pushnil(L); return;
    case TAG_FALSE: lua_pushboolean(L, 0); return;
    case TAG_TRUE: lua_pushboolean(L, 1); return;
    case TAG_CANCELLED: lt_push_cancelled(L); return;
    case TAG_INT: lua_pushinteger(L, (lua_Integer)get_u64(d)); return;
    case TAG_FLT: {
        uint64_t bits = get_u64(d);
        lua_Number n;
        memcpy(&n, &bits, sizeof n);
        lua_pushnumber(L, n);
        return;
    }
    case TAG_STR: {
        uint64_t n = get_u64(d);
        if (n > (uint64_t)(d->end - d->p))
            corrupt(d);
        lua_pushlstring(L, (const char *)d->p, (size_t)n);
        d->p += n;
        return;
    }
    case TAG_CHAN: dec_channel(d); return;
    case TAG_TABLE: dec_table(d); return;
    case TAG_REF: {
        uint64_t i = get_u64(d);
        if (i == 0 || i > (uint64_t)d->ntables)
            corrupt(d);
        lua_rawgeti(L, d->tables, (lua_Integer)i);
        return;
    }
    default:
        corrupt(d);
    }
}

int lt_decode(lua_State *L, const void *data, size_t len)
{
    lua_newtable(L);
    /* An empty encoding (no values) may have no buffer: data is then NULL,
       on which even + 0 is undefined. */
    const unsigned char *p = data;
    dec d = {L, p, len ? p + len : p, lua_gettop(L), 0, 0};
    int n = 0;
    while (d.p != d.end) {
        luaL_checkstack(L, 2, "tether: too many values");
        d.ntables = 0; /* REFs count from the value's own first table */
        dec_value(&d, get_tag(&d));
        n++;
    }
    lua_remove(L, d.tables);
    return n;
}

/* ------------------------------------------------------------------------
 * Functions
 * ---------------------------------------------------------------------- */

/* lua_dump's writer: the buffer is set up at the first piece, once the
   function is no longer needed on the top (luaL_buffinit pushes). */
typedef struct dumpbuf {
    luaL_Buffer B;
    int init;
} dumpbuf;

static int writer(lua_State *L, const void *p, size_t n, void *ud)
{
    dumpbuf *d = ud;
    if (!d->init) {
        d->init = 1;
        luaL_buffinit(L, &d->B);
    }
    luaL_addlstring(&d->B, p, n);
    return 0;
}

void lt_dump_function(lua_State *L, int arg)
{
    luaL_checktype(L, arg, LUA_TFUNCTION);
    luaL_argcheck(L, !lua_iscfunction(L, arg), arg, "a C function cannot be copied");
    const char *name;
    for (int i = 1; (name = lua_getupvalue(L, arg, i)) != NULL; i++) {
        lua_pop(L, 1);
        if (strcmp(name, "_ENV") != 0) {
            lua_pushfstring(L, "function with upvalues cannot be copied: upvalue '%s'",
                            *name ? name : "?");
            luaL_argerror(L, arg, lua_tostring(L, -1));
        }
    }
    dumpbuf d;
    d.init = 0;
    lua_pushvalue(L, arg);
    if (lua_dump(L, writer, &d, 0) != 0 || !d.init)
        luaL_argerror(L, arg, "the function cannot be dumped");
    luaL_pushresult(&d.B);
    lua_remove(L, -2);
}

void lt_load_function(lua_State *L, int idx)
{
    size_t n;
    const char *code = lua_tolstring(L, idx, &n);
    if (!code || luaL_loadbufferx(L, code, n, "=(copied function)", "b") != LUA_OK)
        luaL_error(L, "tether: the copied function cannot be loaded");
    const char *name;
    for (int i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
        lua_pop(L, 1);
        if (strcmp(name, "_ENV") == 0) {
            lua_pushglobaltable(L);
            lua_setupvalue(L, -2, i);
        }
    }
}

/* ------------------------------------------------------------------------
 * Channel values (the type's methods are lt_channel.c's)
 * ---------------------------------------------------------------------- */

void lt_push_channel(lua_State *L, tether_channel ch)
{
    lt_chan *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->ch = ch;
    luaL_setmetatable(L, LT_CHANNEL_MT);
}

static int channel_gc(lua_State *L)
{
    lt_chan *c = lua_touserdata(L, 1);
    (void)refs->release(c->ch);
    c->ch = 0;
    return 0;
}

static int channel_eq(lua_State *L)
{
    lt_chan *a = luaL_testudata(L, 1, LT_CHANNEL_MT);
    lt_chan *b = luaL_testudata(L, 2, LT_CHANNEL_MT);
    lua_pushboolean(L, a && b && a->ch == b->ch);
    return 1;
}

static int channel_tostring(lua_State *L)
{
    lt_chan *c = luaL_checkudata(L, 1, LT_CHANNEL_MT);
    lua_pushfstring(L, "tether.channel: %p", (void *)(uintptr_t)c->ch); /* %p: 0x... */
    return 1;
}

/* ------------------------------------------------------------------------
 * tether.Cancelled
 * ---------------------------------------------------------------------- */

void lt_push_cancelled(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_cancelled);
}

static int cancelled_tostring(lua_State *L)
{
    lua_pushliteral(L, "tether.Cancelled");
    return 1;
}

/* tether.Cancelled: a table that prints as its name. */
static void make_cancelled(lua_State *L)
{
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "tether.Cancelled");
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, cancelled_tostring); /* C: no hook point in it */
    lua_setfield(L, -2, "__tostring");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_cancelled);
}

void lt_open_codec(lua_State *L)
{
    static const luaL_Reg meta[] = {
        {"__gc", channel_gc}, {"__eq", channel_eq},
        {"__tostring", channel_tostring}, {NULL, NULL}};
    luaL_newmetatable(L, LT_CHANNEL_MT);
    luaL_setfuncs(L, meta, 0);
    lua_pop(L, 1);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &k_cancelled) == LUA_TNIL)
        make_cancelled(L);
    lua_pop(L, 1);
}

