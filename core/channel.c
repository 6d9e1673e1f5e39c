/*
 * channel.c - bounded MPMC channels of byte messages.
 *
 * A channel belongs to no interpreter: its handle may travel to any of
 * them, and every owner holds a user reference (tether_channel_retain).
 * Send and receive are interruptible waits built on wait_run, so they
 * release the GIL, honour asynchronous exceptions and finalize, and measure
 * their timeouts on the monotonic clock.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "delay.h"
#include "lockrank.h"
#include "error.h"
#include "handle.h"
#include "internal.h"
#include "platform.h"
#include "pluginreg.h"

struct msg {
    struct msg *next;
    size_t len;
    max_align_t data[]; /* the bytes, aligned for any use */
};

/* The events a channel sets when it may have become ready to receive from
   (tether_channel_watch).  A published array never changes but for
   entries an unwatch zeroes (atomically): a watch publishes a new copy, so
   a notifier that took a reference walks it without the channel's mutex,
   which it cannot hold while it sets the events (same rank). */
struct watchers {
    atomic_int refs; /* Synchronization: atomic */
    size_t n;        /* Synchronization: immutable */
    _Atomic uint64_t ev[]; /* event handles, 0 = unwatched */
};

struct channel {
    pthread_mutex_t mutex;    /* rank 4: everything below */
    pthread_cond_t not_empty; /* receivers wait here */
    pthread_cond_t not_full;  /* senders wait here */
    size_t cap, count;
    struct msg *head, *tail;
    int closed;
    int dead;                 /* last reference gone: waiters leave */
    int user_refs;
    tether_channel_discard_fn discard; /* for undelivered messages */
    void *discard_ud;
    struct plugin *pin;       /* keeps the discard's plugin mapped */
    struct watchers *watch;   /* NULL: nobody watches (holds one reference) */
    /* Synchronization: the releasing thread's (see bury). */
    uint64_t handle;
    struct channel *next_doomed;
};

/* What one send or receive is doing, for the poll functions. */
struct op {
    struct channel *ch;
    struct msg *m;
    int notify; /* the channel had watchers when the message was queued */
};

static void watchers_put(struct watchers *w)
{
    if (w && atomic_fetch_sub(&w->refs, 1) == 1)
        t_free(w);
}

/* Sets the events watching `ch`; called holding none of its locks.  A
   watcher that registered after the state change it would be told of
   sees that change in its own try, so reading the list afterwards loses
   nothing. */
static void notify_watchers(struct channel *ch)
{
    rank_lock(&ch->mutex, RANK_OBJECT);
    struct watchers *w = ch->watch;
    if (w)
        atomic_fetch_add(&w->refs, 1);
    rank_unlock(&ch->mutex, RANK_OBJECT);
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        uint64_t h = atomic_load(&w->ev[i]);
        if (h)
            event_notify(h);
    }
    watchers_put(w);
}

static struct msg *msg_of(void *data)
{
    return (struct msg *)((char *)data - offsetof(struct msg, data));
}

void tether_channel_msg_free(void *data)
{
    if (data)
        t_free(msg_of(data));
}

/* Takes the channel's messages off it and hands each to its discard
   function, if any, then frees them.  No lock is held while the function
   runs: it may release other channels (see bury). */
static void discard_all(struct channel *ch)
{
    rank_lock(&ch->mutex, RANK_OBJECT);
    struct msg *m = ch->head;
    tether_channel_discard_fn fn = ch->discard;
    void *ud = ch->discard_ud;
    ch->head = ch->tail = NULL;
    ch->count = 0;
    rank_unlock(&ch->mutex, RANK_OBJECT);
    while (m) {
        struct msg *next = m->next;
        if (fn)
            fn(m->data, m->len, ud);
        t_free(m);
        m = next;
    }
}

static void channel_dtor(void *p)
{
    struct channel *ch = p;
    discard_all(ch); /* a message a receiver put back after the release */
    plugin_unpin(ch->pin, PLUGIN_PIN_HOLD);
    watchers_put(ch->watch);
    pthread_cond_destroy(&ch->not_full);
    pthread_cond_destroy(&ch->not_empty);
    pthread_mutex_destroy(&ch->mutex);
    t_free(ch);
}

int tether_channel_new(size_t capacity, tether_channel *out)
{
    static const char fn[] = "tether_channel_new";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct channel *ch = t_calloc(1, sizeof *ch);
    if (!ch)
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    pthread_mutex_init(&ch->mutex, NULL);
    plat_cond_init(&ch->not_empty);
    plat_cond_init(&ch->not_full);
    ch->cap = capacity;
    ch->user_refs = 1;
    if (handle_new(HT_CHANNEL, ch, channel_dtor, NULL, out) != TETHER_OK) {
        channel_dtor(ch);
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    }
    return TETHER_OK;
}

int tether_channel_retain(tether_channel h)
{
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, "tether_channel_retain");
    if (!ch)
        return TETHER_EBADHANDLE;
    rank_lock(&ch->mutex, RANK_OBJECT);
    ch->user_refs++;
    rank_unlock(&ch->mutex, RANK_OBJECT);
    handle_put(h);
    return TETHER_OK;
}

/* Channels of this thread whose last reference is gone and whose
   discards have not run yet; each keeps the reference its release took
   (`handle`).  A discard function that releases the last reference of a
   channel queued in the one being discarded adds to this list instead of
   recursing, and the outermost bury runs them all in a loop: a chain of
   channels, each queued in the one before, would otherwise nest one call
   per channel and overflow the stack (CPython's trashcan does the same
   for deeply nested containers). */
static _Thread_local struct channel *t_doomed;
static _Thread_local int t_burying;

/* Buries the channels on t_doomed, unless a call further up this
   thread's stack is burying already (its loop takes them). */
static void bury_doomed(void)
{
    if (t_burying)
        return;
    t_burying = 1;
    struct channel *ch;
    while ((ch = t_doomed) != NULL) {
        t_doomed = ch->next_doomed;
        discard_all(ch);
        handle_put(ch->handle);
    }
    t_burying = 0;
}

/* Runs the discards of the dead channel `ch` and drops `h`, the reference
   its release took. */
static void bury(struct channel *ch, uint64_t h)
{
    ch->handle = h;
    ch->next_doomed = t_doomed;
    t_doomed = ch;
    bury_doomed();
}

int tether_channel_release(tether_channel h)
{
    if (h == 0)
        return TETHER_OK;
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, "tether_channel_release");
    if (!ch)
        return TETHER_EBADHANDLE;
    rank_lock(&ch->mutex, RANK_OBJECT);
    int last = --ch->user_refs == 0;
    if (last) {
        ch->dead = 1; /* nobody takes a message from now on */
        pthread_cond_broadcast(&ch->not_empty);
        pthread_cond_broadcast(&ch->not_full);
    }
    rank_unlock(&ch->mutex, RANK_OBJECT);
    if (!last) {
        handle_put(h);
        return TETHER_OK;
    }
    handle_close(h, HT_CHANNEL);
    bury(ch, h);
    return TETHER_OK;
}

int tether_channel_set_discard(tether_channel h, tether_channel_discard_fn fn,
                               void *ud)
{
    static const char name[] = "tether_channel_set_discard";
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, name);
    if (!ch)
        return TETHER_EBADHANDLE;
    struct plugin *pin = NULL;
    if (fn && plugin_pin_code((uintptr_t)fn, PLUGIN_PIN_HOLD, &pin) != TETHER_OK) {
        handle_put(h);
        return err_set(TETHER_ESTATE, name, "fn is in a plugin being unloaded");
    }
    rank_lock(&ch->mutex, RANK_OBJECT);
    ch->discard = fn;
    ch->discard_ud = ud;
    struct plugin *old = ch->pin;
    ch->pin = pin;
    rank_unlock(&ch->mutex, RANK_OBJECT);
    plugin_unpin(old, PLUGIN_PIN_HOLD);
    handle_put(h);
    return TETHER_OK;
}

static int poll_send(void *p)
{
    struct op *op = p;
    struct channel *ch = op->ch;
    if (ch->dead)
        return TETHER_EBADHANDLE;
    if (ch->closed)
        return TETHER_ECLOSED;
    if (ch->cap && ch->count >= ch->cap)
        return WAIT_AGAIN;
    if (ch->tail)
        ch->tail->next = op->m;
    else
        ch->head = op->m;
    ch->tail = op->m;
    ch->count++;
    op->m = NULL;
    op->notify = ch->watch != NULL;
    pthread_cond_signal(&ch->not_empty);
    return TETHER_OK;
}

/* A send that returns TETHER_EFINALIZING with its message not queued (the
   wait was refused before the message could go in, or the channel was
   found dead, and the thread could not re-attach) hands the message to the
   discard function, as if it had been queued and freed undelivered: after
   that status the message is never the caller's (tether.h), so a binding
   whose messages carry references leaves them to the message, whichever
   way it went.  The function is read under the mutex with a pin of its
   plugin of our own: a tether_channel_set_discard meanwhile may replace it
   and drop the channel's pin.  It runs with no lock held (it may release
   channels: see bury) and, the thread being detached, no GIL, so the last
   pin of an orphaned plugin is reaped here. */
static void discard_unsent(struct channel *ch, struct msg *m)
{
    rank_lock(&ch->mutex, RANK_OBJECT);
    tether_channel_discard_fn fn = ch->discard;
    void *ud = ch->discard_ud;
    struct plugin *pin = ch->pin;
    plugin_pin_again(pin, PLUGIN_PIN_HOLD); /* ch->pin holds it meanwhile */
    rank_unlock(&ch->mutex, RANK_OBJECT);
    TETHER_DELAY_POINT("channel.send.discard");
    if (fn) {
        /* As any discard: a channel whose last reference goes inside it
           is buried after it returns, not nested in it (tether.h). */
        int outer = !t_burying;
        t_burying = 1;
        fn(m->data, m->len, ud);
        if (outer) {
            t_burying = 0;
            bury_doomed();
        }
    }
    plugin_unpin_reap(pin, PLUGIN_PIN_HOLD);
}

/* A status of the wait with the channel's own words for its own codes. */
static int explain(const char *fn, int rc)
{
    if (rc == TETHER_ECLOSED)
        return err_set(rc, fn, "the channel is closed");
    if (rc == TETHER_EBADHANDLE)
        return err_set(rc, fn, "the channel was released while waiting");
    return rc;
}

int tether_channel_send(tether_channel h, const void *data, size_t len,
                        int64_t timeout_ns)
{
    static const char fn[] = "tether_channel_send";
    if (!data && len)
        return err_misuse(TETHER_EINVAL, fn, "data is NULL with len %zu", len);
    if (len > SIZE_MAX - sizeof(struct msg))
        return err_misuse(TETHER_EINVAL, fn, "len %zu is too large", len);
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, fn);
    if (!ch)
        return TETHER_EBADHANDLE;
    struct op op = {ch, t_malloc(sizeof(struct msg) + len), 0};
    int rc;
    if (!op.m) {
        rc = err_set(TETHER_ENOMEM, fn, "out of memory for a %zu-byte message", len);
    } else {
        op.m->next = NULL;
        op.m->len = len;
        if (len)
            memcpy(op.m->data, data, len);
        struct waitspec w = {&ch->mutex, &ch->not_full, poll_send, NULL, &op};
        rc = explain(fn, wait_run(fn, &w, timeout_ns));
        if (rc == TETHER_EFINALIZING && op.m)
            discard_unsent(ch, op.m);
        t_free(op.m); /* still ours unless it was queued */
        if (op.notify)
            notify_watchers(ch);
    }
    handle_put(h);
    return rc;
}

static int poll_recv(void *p)
{
    struct op *op = p;
    struct channel *ch = op->ch;
    if (ch->dead)
        return TETHER_EBADHANDLE;
    if (!ch->head)
        return ch->closed ? TETHER_ECLOSED : WAIT_AGAIN;
    op->m = ch->head;
    ch->head = op->m->next;
    if (!ch->head)
        ch->tail = NULL;
    ch->count--;
    pthread_cond_signal(&ch->not_full);
    return TETHER_OK;
}

/* The receiver could not re-attach: the message goes back to the front. */
static void undo_recv(void *p)
{
    struct op *op = p;
    struct channel *ch = op->ch;
    rank_lock(&ch->mutex, RANK_OBJECT);
    op->m->next = ch->head;
    ch->head = op->m;
    if (!ch->tail)
        ch->tail = op->m;
    ch->count++;
    op->m = NULL;
    int notify = ch->watch != NULL;
    pthread_cond_signal(&ch->not_empty);
    rank_unlock(&ch->mutex, RANK_OBJECT);
    if (notify)
        notify_watchers(ch);
}

int tether_channel_recv(tether_channel h, void **data, size_t *len,
                        int64_t timeout_ns)
{
    static const char fn[] = "tether_channel_recv";
    if (!data || !len)
        return err_misuse(TETHER_EINVAL, fn, "data and len must not be NULL");
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, fn);
    if (!ch)
        return TETHER_EBADHANDLE;
    struct op op = {ch, NULL, 0};
    struct waitspec w = {&ch->mutex, &ch->not_empty, poll_recv, undo_recv, &op};
    int rc = explain(fn, wait_run(fn, &w, timeout_ns));
    if (rc == TETHER_OK) {
        *data = op.m->data;
        *len = op.m->len;
    }
    handle_put(h);
    return rc;
}

int tether_channel_close(tether_channel h)
{
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, "tether_channel_close");
    if (!ch)
        return TETHER_EBADHANDLE;
    rank_lock(&ch->mutex, RANK_OBJECT);
    ch->closed = 1;
    pthread_cond_broadcast(&ch->not_empty);
    pthread_cond_broadcast(&ch->not_full);
    rank_unlock(&ch->mutex, RANK_OBJECT);
    notify_watchers(ch);
    handle_put(h);
    return TETHER_OK;
}

int tether_channel_watch(tether_channel h, tether_event ev)
{
    static const char fn[] = "tether_channel_watch";
    if (!handle_get_or_misuse(ev, HT_EVENT, fn))
        return TETHER_EBADHANDLE;
    handle_put(ev);
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, fn);
    if (!ch)
        return TETHER_EBADHANDLE;
    rank_lock(&ch->mutex, RANK_OBJECT);
    struct watchers *old = ch->watch;
    size_t live = 0;
    for (size_t i = 0; old && i < old->n; i++)
        live += atomic_load(&old->ev[i]) != 0;
    struct watchers *w = t_malloc(sizeof *w + (live + 1) * sizeof w->ev[0]);
    if (!w) {
        rank_unlock(&ch->mutex, RANK_OBJECT);
        handle_put(h);
        return err_set(TETHER_ENOMEM, fn, "out of memory");
    }
    atomic_init(&w->refs, 1);
    w->n = 0;
    for (size_t i = 0; old && i < old->n; i++) {
        uint64_t e = atomic_load(&old->ev[i]);
        if (e)
            atomic_init(&w->ev[w->n++], e);
    }
    atomic_init(&w->ev[w->n++], ev);
    ch->watch = w;
    rank_unlock(&ch->mutex, RANK_OBJECT);
    watchers_put(old);
    handle_put(h);
    return TETHER_OK;
}

int tether_channel_unwatch(tether_channel h, tether_event ev)
{
    static const char fn[] = "tether_channel_unwatch";
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, fn);
    if (!ch)
        return TETHER_EBADHANDLE;
    rank_lock(&ch->mutex, RANK_OBJECT);
    struct watchers *w = ch->watch, *drop = NULL;
    int found = 0;
    size_t live = 0;
    for (size_t i = 0; w && i < w->n; i++) {
        uint64_t e = atomic_load(&w->ev[i]);
        if (e == ev && !found && ev) {
            atomic_store(&w->ev[i], 0);
            found = 1;
        } else if (e) {
            live++;
        }
    }
    if (found && live == 0) {
        drop = w;
        ch->watch = NULL;
    }
    rank_unlock(&ch->mutex, RANK_OBJECT);
    watchers_put(drop);
    handle_put(h);
    if (!found)
        return err_misuse(TETHER_EINVAL, fn, "event 0x%llx does not watch this channel",
                          (unsigned long long)ev);
    return TETHER_OK;
}

int tether_channel_count(tether_channel h, size_t *out)
{
    static const char fn[] = "tether_channel_count";
    if (!out)
        return err_misuse(TETHER_EINVAL, fn, "out is NULL");
    struct channel *ch = handle_get_or_misuse(h, HT_CHANNEL, fn);
    if (!ch)
        return TETHER_EBADHANDLE;
    rank_lock(&ch->mutex, RANK_OBJECT);
    *out = ch->count;
    rank_unlock(&ch->mutex, RANK_OBJECT);
    handle_put(h);
    return TETHER_OK;
}

void channel_atfork_child_object(int type, void *obj)
{
    if (type != HT_CHANNEL)
        return;
    struct channel *ch = obj;
    pthread_mutex_init(&ch->mutex, NULL);
    plat_cond_init(&ch->not_empty);
    plat_cond_init(&ch->not_full);
}
