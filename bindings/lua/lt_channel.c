/*
 * lt_channel.c - tether.channel: the channel type and its methods (send,
 * recv, close, count).  Its values, and how they cross between states,
 * are lt_codec.c's; this file adds the methods to their metatable.
 */
#include <stdlib.h>
#include <string.h>

#include "lt.h"

static lt_chan *check_chan(lua_State *L)
{
    lt_chan *c = luaL_checkudata(L, 1, LT_CHANNEL_MT);
    luaL_argcheck(L, c->ch != 0, 1, "released channel");
    return c;
}

/* A message nobody received: the channels it holds lose its references. */
static void discard(void *data, size_t len, void *ud)
{
    (void)ud;
    lt_drop_channels(data, len);
}

/* tether.channel([capacity]) */
static int channel_new(lua_State *L)
{
    lua_Integer cap = luaL_optinteger(L, 1, 0);
    luaL_argcheck(L, cap >= 0, 1, "capacity must be >= 0 (0: no bound)");
    lt_chan *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->ch = 0;
    luaL_setmetatable(L, LT_CHANNEL_MT);
    int rc = tether_channel_new((size_t)cap, &c->ch);
    if (rc == TETHER_OK)
        rc = tether_channel_set_discard(c->ch, discard, NULL);
    if (rc != TETHER_OK)
        return lt_status_error(L, "channel", rc);
    return 1;
}

/* ch:send(v, [timeout]) --> true | false [, "closed"] */
static int channel_send(lua_State *L)
{
    lt_chan *c = check_chan(L);
    luaL_checkany(L, 2);
    int64_t ns = lt_opt_timeout(L, 3);
    lt_tstate *ts = lt_current_tstate();
    lt_blob *b = lt_blob_push(L);
    lt_encode(L, b, 2, "value");
    lt_sigint_rearm();
    /* Who owns what during the send.  The encoded bytes stay the blob's
       (a userdata; the channel queues its own copy).  The channel
       references in the message, with their array, move to `held` on this
       C stack: a lua_close that begins during the wait finalizes the blob
       (the objects newer than the module's sentinel are finalized before
       the sentinel joins the threads), and a send that failed after that
       lost the references with the blob's array.  After OK and
       EFINALIZING they are the message's: queued, or handed to the
       channel's discard (`discard` above) by a send that finalize stopped
       before it queued (tether.h); after any other failure nothing was
       queued, and they are released here.  `held` is plain memory, so
       even a thread that must leave Lua clears it: that thread must not
       touch Lua memory, which the closing thread may be freeing (issue
       20).  A
       blob made during the close is never finalized: it is cleared here
       (a send in a finalizer leaked its message). */
    lt_blob held = {.release = free, .chans = b->chans, .nchans = b->nchans};
    b->chans = NULL;
    b->nchans = b->chcap = 0;
    int rc = tether_channel_send(c->ch, b->data, b->len, ns);
    if (rc == TETHER_OK || rc == TETHER_EFINALIZING)
        held.nchans = 0;
    lt_blob_clear(&held);
    if (rc == TETHER_EFINALIZING || lt_must_leave(ts))
        lt_leave(ts);
    lt_blob_clear(b);
    if (rc == TETHER_ECLOSED) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "closed");
        return 2;
    }
    int ok = lt_wait_ok(L, ts, rc, "send");
    lua_pushboolean(L, ok);
    return 1;
}

/* ch:recv([timeout]) --> v | nil, "timeout" | nil, "closed" */
static int channel_recv(lua_State *L)
{
    lt_chan *c = check_chan(L);
    int64_t ns = lt_opt_timeout(L, 2);
    lt_tstate *ts = lt_current_tstate();
    /* Made before the wait, so that a message received is never without
       an owner (a push after it could fail for memory and lose the
       message with its channel references). */
    lt_blob *b = lt_blob_push(L);
    b->release = tether_channel_msg_free;
    void *data = NULL;
    size_t len = 0;
    lt_sigint_rearm();
    int rc = tether_channel_recv(c->ch, &data, &len, ns);
    /* A thread that must leave Lua keeps its hands off Lua memory (it
       frees a message it got itself). */
    if (rc == TETHER_EFINALIZING || lt_must_leave(ts)) {
        if (rc == TETHER_OK) {
            lt_drop_channels(data, len);
            tether_channel_msg_free(data);
        }
        lt_leave(ts);
    }
    if (rc == TETHER_ECLOSED) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    /* A lua_close that began during the wait finalized the blob (it runs
       the finalizers of the objects newer than the module's sentinel
       before the sentinel joins the threads): its release is free() now,
       which freed the message with the wrong function (issue 20).  A
       fresh one, made during the close, is never finalized: it is
       cleared below (only its failing for memory there loses the
       message). */
    if (b->release != tether_channel_msg_free) {
        lua_pop(L, 1);
        b = lt_blob_push(L);
        b->release = tether_channel_msg_free;
    }
    b->data = data;
    b->len = len;
    b->message = 1; /* its channel references go with it */
    if (!lt_wait_ok(L, ts, rc, "recv")) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    if (lt_decode(L, b->data, b->len) != 1)
        return luaL_error(L, "tether: corrupt message");
    lt_blob_clear(b); /* now, not at the next collection */
    return 1;
}

/* ch:close(): wakes every waiter; later sends fail, receives drain. */
static int channel_close(lua_State *L)
{
    int rc = tether_channel_close(check_chan(L)->ch);
    if (rc != TETHER_OK)
        return lt_status_error(L, "close", rc);
    return 0;
}

static int channel_count(lua_State *L)
{
    size_t n = 0;
    int rc = tether_channel_count(check_chan(L)->ch, &n);
    if (rc != TETHER_OK)
        return lt_status_error(L, "count", rc);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

void lt_open_channel(lua_State *L, lt_state *S)
{
    static const luaL_Reg methods[] = {
        {"send", channel_send}, {"recv", channel_recv}, {"close", channel_close},
        {"count", channel_count}, {NULL, NULL}};
    lt_new_class(L, S, LT_CHANNEL_MT, methods, NULL, NULL);
    lua_pushlightuserdata(L, S);
    lua_pushcclosure(L, channel_new, 1);
    lua_setfield(L, -2, "channel");
}
