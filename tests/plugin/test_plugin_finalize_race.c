/*
 * test_plugin_finalize_race.c - issue 12 F4, the finalize side: while
 * tether_runtime_finalize is between choosing a plugin (made DRAINING, its
 * references taken) and unloading it, a load takes the plugin back and its
 * own unload finishes it.  Finalize must see that the record is no longer
 * its own; it used to read the record's epoch only after that window, took
 * the finished record for its own and removed it from the registry a
 * second time (SEGV in reg_remove; with the record merely taken back, it
 * closed a handle that the load still counted).
 *
 * The window is held open at the delay point finalize.plugin.picked (debug
 * builds); nothing sleeps to make it likely.  The later cases hold other
 * windows where finalize meets a plugin open the same way (loads and
 * inits; a channel send that finalize stopped, calling a discard function
 * that lies in a plugin).
 */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delay_ctl.h"
#include "support.h"

#define FIXTURE(name) FIXTURE_DIR "/fx_" name ".so"

/* 1 if the library at `path` is mapped in this process. */
static int is_mapped(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h)
        dlclose(h);
    return h != NULL;
}

static const char POINT[] = "finalize.plugin.picked";

struct fin {
    const char *path;
    tether_runtime rt;
    tether_plugin p;
    t_sem loaded;
    int rc;
};

/* The host's main thread: makes the runtime, loads the plugin once, and
   finalizes the runtime with the plugin still loaded. */
static void *host_main(void *arg)
{
    struct fin *f = arg;
    f->rt = t_runtime(NULL);
    ASSERT_OK(tether_plugin_load(f->rt, f->path, &f->p));
    t_sem_post(&f->loaded);
    f->rc = tether_runtime_finalize(f->rt, SECONDS(30));
    return NULL;
}

static void taken_back_and_unloaded_meanwhile(const char *path)
{
    struct fin f = {.path = path};
    t_sem_init(&f.loaded);
    unsigned long before = dctl_passes(POINT);
    dctl_arm(POINT, 1, DCTL_PARK, 0);
    pthread_t th = t_pthread(host_main, &f);
    t_sem_wait(&f.loaded);
    dctl_wait_parked(POINT);
    ASSERT_EQ(dctl_passes(POINT), before + 1);

    /* Finalize holds the plugin DRAINING: a load takes it back (the same
       handle), and this thread's unload of that reference finishes it. */
    tether_plugin again = 0;
    ASSERT_OK(tether_plugin_load(f.rt, path, &again));
    ASSERT_EQ(again, f.p);
    ASSERT_OK(tether_plugin_unload(again, SECONDS(30)));
    ASSERT_STATUS(tether_plugin_info(again, NULL, NULL), TETHER_EBADHANDLE);

    dctl_release(POINT);
    t_pthread_join(th);
    ASSERT_OK(f.rc);
    ASSERT_STATUS(tether_plugin_info(f.p, NULL, NULL), TETHER_EBADHANDLE);
}

TEST(finalize_leaves_a_plugin_a_load_took_back_and_unloaded)
{
    taken_back_and_unloaded_meanwhile(FIXTURE("unloadable"));
}

TEST(finalize_leaves_a_mapped_plugin_a_load_took_back_and_unloaded)
{
    taken_back_and_unloaded_meanwhile(FIXTURE("default"));
}

/* The record is only taken back: finalize must not unload it under the
   load's reference by the old epoch; it looks again and unloads it as a
   plugin still loaded, after which the handle is stale. */
TEST(finalize_unloads_a_plugin_a_load_took_back_once_more)
{
    struct fin f = {.path = FIXTURE("default")};
    t_sem_init(&f.loaded);
    unsigned long before = dctl_passes(POINT);
    dctl_arm(POINT, 1, DCTL_PARK, 0);
    pthread_t th = t_pthread(host_main, &f);
    t_sem_wait(&f.loaded);
    dctl_wait_parked(POINT);
    tether_plugin again = 0;
    ASSERT_OK(tether_plugin_load(f.rt, f.path, &again));
    ASSERT_EQ(again, f.p);
    dctl_release(POINT);
    t_pthread_join(th);
    ASSERT_OK(f.rc);
    /* Finalize picked it twice: once before the load, once after. */
    ASSERT_EQ(dctl_passes(POINT), before + 2);
    ASSERT_STATUS(tether_plugin_info(again, NULL, NULL), TETHER_EBADHANDLE);
}

/* A load that looked the runtime up just before a finalize on another
   thread freed the main interpreter: tether_runtime_main_interp (the
   load's first step) read the freed interpreter for its handle (ASan:
   heap-use-after-free; TSan reported it from the F4 seed).  The load must
   fail cleanly instead. */
struct late {
    tether_runtime rt;
    const char *path;
    t_sem made, go;
    int rc;
};

static void *late_host(void *arg)
{
    struct late *l = arg;
    l->rt = t_runtime(NULL);
    t_sem_post(&l->made);
    t_sem_wait(&l->go);
    ASSERT_OK(tether_runtime_finalize(l->rt, SECONDS(30)));
    return NULL;
}

static void *late_loader(void *arg)
{
    struct late *l = arg;
    tether_plugin p = 0;
    l->rc = tether_plugin_load(l->rt, l->path, &p);
    return NULL;
}

TEST(load_meets_a_finalize_that_freed_the_main_interpreter)
{
    static const char GOT[] = "runtime.main_interp.got";
    struct late l = {.path = FIXTURE("default")};
    t_sem_init(&l.made);
    t_sem_init(&l.go);
    pthread_t host = t_pthread(late_host, &l);
    t_sem_wait(&l.made);
    dctl_arm(GOT, 1, DCTL_PARK, 0);
    pthread_t loader = t_pthread(late_loader, &l);
    dctl_wait_parked(GOT); /* the loader holds a reference to the runtime */
    t_sem_post(&l.go);
    t_pthread_join(host); /* finalize returned: the interpreter is freed */
    dctl_release(GOT);
    t_pthread_join(loader);
    ASSERT_NE(l.rc, TETHER_OK);
}

/* Two runtimes load one library: the second init used to run while the
   first was still running (the records were told apart by runtime), so
   the plugin's shared statics (its host-table pointer) were written by two
   inits at once: a data race for ThreadSanitizer in every plugin that keeps
   `host` in a static.  The inits of one library now run one at a time:
   while the first is held at load.init, the second load waits for it. */
struct rt_load {
    const char *path;
    tether_runtime rt;
    tether_plugin p;
};

static void *load_in_new_runtime(void *arg)
{
    struct rt_load *r = arg;
    r->rt = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    ASSERT_OK(tether_plugin_load(r->rt, r->path, &r->p));
    ASSERT_OK(tether_plugin_unload(r->p, SECONDS(30)));
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_OK(tether_runtime_finalize(r->rt, SECONDS(30)));
    return NULL;
}

TEST(inits_of_one_library_in_two_runtimes_do_not_overlap)
{
    static const char INIT[] = "load.init", WAIT[] = "load.wait_busy";
    struct rt_load a = {.path = FIXTURE("unloadable")};
    struct rt_load b = {.path = FIXTURE("unloadable")};
    dctl_arm(INIT, 1, DCTL_PARK, 0);
    pthread_t ta = t_pthread(load_in_new_runtime, &a);
    dctl_wait_parked(INIT); /* a's init is about to run */
    unsigned long inits = dctl_passes(INIT), waits = dctl_passes(WAIT);
    pthread_t tb = t_pthread(load_in_new_runtime, &b);
    /* b either waits for a's init, or starts its own init beside it. */
    int second_init = dctl_wait_either(WAIT, waits, INIT, inits);
    dctl_release(INIT);
    t_pthread_join(ta);
    t_pthread_join(tb);
    ASSERT_EQ(second_init, 0);
}

/* A load whose init is running (it attached before finalize stopped the
   interpreters) while tether_runtime_finalize unloads the runtime's
   plugins: finalize skipped the LOADING record, so the load then published
   a plugin loaded into a finalized runtime, whose handle answered and
   whose fini only an explicit unload ran.  Finalize now waits for such an
   init until its deadline; one still running then is unloaded again by
   its load, with its fini, which returns TETHER_EFINALIZING. */
struct fin_init {
    const char *path;
    tether_runtime rt;
    int64_t timeout;
    t_sem made, go;
    int load_rc;
    char msg[512]; /* the loader's tether_last_error() */
    tether_plugin p;
};

static void *fin_init_host(void *arg)
{
    struct fin_init *f = arg;
    f->rt = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    t_sem_post(&f->made);
    t_sem_wait(&f->go);
    (void)tether_runtime_finalize(f->rt, f->timeout);
    dctl_note("test.finalized");
    return NULL;
}

static void *fin_init_loader(void *arg)
{
    struct fin_init *f = arg;
    f->load_rc = tether_plugin_load(f->rt, f->path, &f->p);
    snprintf(f->msg, sizeof f->msg, "%s", tether_last_error());
    return NULL;
}

/* Starts the runtime's host and a load held between its init's return
   (the GIL released) and the plugin's publication, then lets the host
   finalize. */
static void fin_init_start(struct fin_init *f, pthread_t *host,
                           pthread_t *loader)
{
    t_sem_init(&f->made);
    t_sem_init(&f->go);
    *host = t_pthread(fin_init_host, f);
    t_sem_wait(&f->made);
    dctl_arm("load.init.done", 1, DCTL_PARK, 0);
    *loader = t_pthread(fin_init_loader, f);
    dctl_wait_parked("load.init.done");
    t_sem_post(&f->go);
}

TEST(finalize_waits_for_an_init_in_progress)
{
    /* (hostile's init needs nothing of the runtime, which is finalizing) */
    struct fin_init f = {.path = FIXTURE("hostile"), .timeout = SECONDS(30)};
    unsigned long waits = dctl_passes("finalize.plugin.await_init");
    unsigned long done = dctl_passes("test.finalized");
    pthread_t host, loader;
    fin_init_start(&f, &host, &loader);
    /* finalize waits for the init, or finishes without it */
    int finished = dctl_wait_either("finalize.plugin.await_init", waits,
                                    "test.finalized", done);
    dctl_release("load.init.done");
    t_pthread_join(loader);
    t_pthread_join(host);
    ASSERT_EQ(finished, 0);
    if (f.load_rc != TETHER_OK)
        fprintf(stderr, "load: %s\n", f.msg);
    ASSERT_OK(f.load_rc);
    /* finalize unloaded it as soon as its init was done: */
    ASSERT_STATUS(tether_plugin_info(f.p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT(!is_mapped(FIXTURE("hostile")));
}

TEST(an_init_that_outlives_finalize_is_unloaded_by_its_load)
{
    struct fin_init f = {.path = FIXTURE("hostile"), .timeout = 0};
    unsigned long done = dctl_passes("test.finalized");
    pthread_t host, loader;
    fin_init_start(&f, &host, &loader);
    dctl_wait_passes("test.finalized", done); /* it gave up on the init */
    dctl_release("load.init.done");
    t_pthread_join(loader);
    t_pthread_join(host);
    ASSERT_STATUS(f.load_rc, TETHER_EFINALIZING);
    ASSERT_CONTAINS(f.msg, "finalized while the init of");
    ASSERT(!is_mapped(FIXTURE("hostile"))); /* unloaded again */
}

/* The API fuzzer's seed x09 (tests/fuzz): a plugin's init starts a thread
   running the plugin's code; the thread starts, but before the init's
   tether_thread_start re-attaches, a finalize of the runtime marks the
   main interpreter finalizing, so the start answers EFINALIZING and init
   fails.  The start used to drop the thread's plugin pin itself although
   the started thread drops it at its end: one pin and one reference of the
   record's handle too many.  With the thread's end first (as here), the
   failed load's handle_close freed the record while it was still listed
   (ASan: heap-use-after-free in the next walk of the registry) and never
   dlclosed the library; with the start first, the library was dlclosed
   under the running thread.  The window is held open at the delay point
   thread.start.reattach, the thread's end and the finalize's mark are
   waited for by their points: nothing sleeps. */
struct x09 {
    const char *path;
    tether_runtime rt;
    t_sem made, go;
    int load_rc, fin_rc;
};

static void *x09_host(void *arg)
{
    struct x09 *x = arg;
    x->rt = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts)); /* the init needs the GIL */
    t_sem_post(&x->made);
    t_sem_wait(&x->go);
    ASSERT_OK(tether_restore_thread(ts));
    x->fin_rc = tether_runtime_finalize(x->rt, SECONDS(30));
    return NULL;
}

static void *x09_loader(void *arg)
{
    struct x09 *x = arg;
    tether_plugin p = 0;
    x->load_rc = tether_plugin_load(x->rt, x->path, &p);
    return NULL;
}

TEST(failed_init_whose_thread_start_met_finalize_drops_its_pin_once)
{
    static const char REATTACH[] = "thread.start.reattach",
                      ENDED[] = "thread.boot.before_finish",
                      MARKED[] = "finalize.marked";
    struct x09 x = {.path = FIXTURE("init_thread")};
    t_sem_init(&x.made);
    t_sem_init(&x.go);
    /* The fixture's thread waits on FX_EVENT: set already, it returns at
       once. */
    tether_event ev;
    ASSERT_OK(tether_event_new(&ev));
    ASSERT_OK(tether_event_set(ev));
    char text[32];
    snprintf(text, sizeof text, "%llu", (unsigned long long)ev);
    ASSERT_EQ(setenv("FX_EVENT", text, 1), 0);

    pthread_t host = t_pthread(x09_host, &x);
    t_sem_wait(&x.made);
    unsigned long ended = dctl_passes(ENDED), marked = dctl_passes(MARKED);
    dctl_arm(REATTACH, 1, DCTL_PARK, 0);
    pthread_t loader = t_pthread(x09_loader, &x);
    /* The init's thread_start saw the handshake and is detached, parked
       before it re-attaches; the thread runs its function and ends. */
    dctl_wait_parked(REATTACH);
    dctl_wait_passes(ENDED, ended);
    /* A finalize marks the interpreter finalizing (then waits for the
       init), so the start cannot re-attach. */
    t_sem_post(&x.go);
    dctl_wait_passes(MARKED, marked);
    dctl_release(REATTACH);
    t_pthread_join(loader);
    t_pthread_join(host);
    ASSERT_STATUS(x.load_rc, TETHER_EPLUGIN);
    ASSERT_OK(x.fin_rc);
    /* Nothing runs its code any more: the failed load dlclosed it. */
    ASSERT(!is_mapped(x.path));
    ASSERT_OK(tether_event_free(ev));
}

/* ---- a send's discard keeps its plugin mapped --------------------------- */

static tether_channel dp_ch;

static int dp_send(void *arg)
{
    (void)arg;
    return tether_channel_send(dp_ch, "b", 1, -1);
}

/* A send that finalize stopped before it queued hands its message to the
   channel's discard function, which it reads under the channel's mutex.
   Held between that read and the call (channel.send.discard), the
   channel's function is replaced, which drops the channel's pin of the
   plugin, and the plugin is unloaded: the send's own pin keeps the
   plugin mapped until its call returns (without it, the unload unmapped
   the code the send was about to call). */
TEST(a_send_stopped_by_finalize_keeps_its_discards_plugin_mapped)
{
    static const char AT[] = "channel.send.discard";
    tether_runtime rt = t_runtime(&t_per_interp_gil);
    tether_interp b;
    ASSERT_OK(tether_interp_create(rt, &b));
    tether_plugin p;
    ASSERT_OK(tether_plugin_load(rt, FIXTURE("unloadable"), &p));
    void *sym = NULL;
    ASSERT_OK(tether_plugin_symbol(p, "fx_discard", &sym));
    tether_channel_discard_fn discard;
    memcpy(&discard, &sym, sizeof discard);
    atomic_int discarded = 0;
    ASSERT_OK(tether_channel_new(1, &dp_ch));
    ASSERT_OK(tether_channel_set_discard(dp_ch, discard, &discarded));
    ASSERT_OK(tether_channel_send(dp_ch, "a", 1, 0)); /* full */
    dctl_arm(AT, 1, DCTL_PARK, 0);
    unsigned long sleeps = dctl_passes("wait.sleep");
    tether_thread t = t_start_daemon(b, dp_send, NULL);
    dctl_wait_passes("wait.sleep", sleeps); /* blocked on the full channel */
    ASSERT_OK(tether_interp_destroy(b, SECONDS(30)));
    dctl_wait_parked(AT); /* it read fx_discard and pinned the plugin */
    ASSERT_OK(tether_channel_set_discard(dp_ch, NULL, NULL));
    ASSERT_STATUS(tether_plugin_unload(p, MS(50)), TETHER_ETIMEDOUT);
    ASSERT(is_mapped(FIXTURE("unloadable")));
    dctl_release(AT);
    ASSERT_STATUS(t_join(t), TETHER_EFINALIZING);
    ASSERT_EQ(atomic_load(&discarded), 1); /* "b", by the replaced function */
    ASSERT_OK(tether_plugin_unload(p, -1));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
    ASSERT_OK(tether_channel_release(dp_ch)); /* "a": no function any more */
    ASSERT_EQ(atomic_load(&discarded), 1);
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY_T(load_meets_a_finalize_that_freed_the_main_interpreter, 60),
            TEST_ENTRY_T(finalize_leaves_a_plugin_a_load_took_back_and_unloaded, 60),
            TEST_ENTRY_T(finalize_leaves_a_mapped_plugin_a_load_took_back_and_unloaded, 60),
            TEST_ENTRY_T(finalize_unloads_a_plugin_a_load_took_back_once_more, 60),
            TEST_ENTRY_T(inits_of_one_library_in_two_runtimes_do_not_overlap, 60),
            TEST_ENTRY_T(finalize_waits_for_an_init_in_progress, 60),
            TEST_ENTRY_T(an_init_that_outlives_finalize_is_unloaded_by_its_load, 60),
            TEST_ENTRY_T(failed_init_whose_thread_start_met_finalize_drops_its_pin_once, 60),
            TEST_ENTRY_T(a_send_stopped_by_finalize_keeps_its_discards_plugin_mapped, 60))
