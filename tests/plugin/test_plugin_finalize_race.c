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
 * that lies in a plugin), and the windows where the init and fini calls
 * of one library, loaded into two runtimes, could overlap (an unload's or
 * a finalize's fini beside another runtime's init or fini).
 */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether_plugin.h>

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

/* The other half of the same race (TSan, about 1 run in 12 of the case
   above: runtime A's fx_fini wrote g_self while runtime B's fx_init wrote
   it): a load waited for a fini of its library, but an unload's fini did
   not wait for an init of its library running in another runtime.  Here
   B's init is held at load.init (A's load is done) while A's last unload
   runs: A must wait for B's init (unload.wait_busy) and start its fini
   (unload.drained) only after that init returned (load.init.done). */
struct fini_after {
    const char *path;
    int64_t finalize_in; /* 0: unload, then finalize; else only finalize */
    tether_runtime rt;
    tether_plugin p;
    t_sem loaded, go;
    int rc;
};

/* Makes a runtime, loads the plugin into it detached, waits for `go`,
   unloads it (rc) and finalizes the runtime; or, with `finalize_in`, only
   finalizes it with that timeout (rc), the plugin still loaded. */
static void *load_wait_unload(void *arg)
{
    struct fini_after *f = arg;
    f->rt = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    ASSERT_OK(tether_plugin_load(f->rt, f->path, &f->p));
    t_sem_post(&f->loaded);
    t_sem_wait(&f->go);
    if (f->finalize_in) {
        f->rc = tether_runtime_finalize(f->rt, f->finalize_in);
        dctl_note("test.finalized");
        return NULL;
    }
    f->rc = tether_plugin_unload(f->p, SECONDS(30));
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_OK(tether_runtime_finalize(f->rt, SECONDS(30)));
    return NULL;
}

static void fini_after_init(struct fini_after *f, const char *path)
{
    f->path = path;
    t_sem_init(&f->loaded);
    t_sem_init(&f->go);
}

TEST(a_fini_waits_for_an_init_of_its_library_in_another_runtime)
{
    static const char INIT[] = "load.init", DONE[] = "load.init.done",
                      WAIT[] = "unload.wait_busy", FINI[] = "unload.drained";
    struct fini_after a = {0}, b = {0};
    fini_after_init(&a, FIXTURE("unloadable"));
    fini_after_init(&b, FIXTURE("unloadable"));
    pthread_t ta = t_pthread(load_wait_unload, &a);
    t_sem_wait(&a.loaded);
    dctl_arm(INIT, 1, DCTL_PARK, 0);
    pthread_t tb = t_pthread(load_wait_unload, &b);
    dctl_wait_parked(INIT); /* b's init is about to run */
    unsigned long waits = dctl_passes(WAIT), finis = dctl_passes(FINI);
    unsigned long done = dctl_passes(DONE);
    dctl_arm(FINI, 1, DCTL_PARK, 0);
    t_sem_post(&a.go); /* a's last unload */
    /* a either waits for b's init, or starts its fini beside it. */
    int fini_first = dctl_wait_either(WAIT, waits, FINI, finis);
    dctl_release(INIT);
    dctl_wait_parked(FINI); /* a's fini is about to run */
    int init_returned = dctl_passes(DONE) > done;
    dctl_release(FINI);
    t_pthread_join(ta);
    t_sem_wait(&b.loaded);
    t_sem_post(&b.go);
    t_pthread_join(tb);
    ASSERT_EQ(fini_first, 0);
    ASSERT(init_returned);
    ASSERT_OK(a.rc);
    ASSERT_OK(b.rc);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

/* Nor do two finis of the library: while A's fini is held at
   unload.drained, B's last unload waits for it. */
TEST(finis_of_one_library_in_two_runtimes_do_not_overlap)
{
    static const char WAIT[] = "unload.wait_busy", FINI[] = "unload.drained";
    struct fini_after a = {0}, b = {0};
    fini_after_init(&a, FIXTURE("unloadable"));
    fini_after_init(&b, FIXTURE("unloadable"));
    pthread_t ta = t_pthread(load_wait_unload, &a);
    t_sem_wait(&a.loaded);
    pthread_t tb = t_pthread(load_wait_unload, &b);
    t_sem_wait(&b.loaded);
    dctl_arm(FINI, 1, DCTL_PARK, 0);
    t_sem_post(&a.go);
    dctl_wait_parked(FINI); /* a's fini is about to run */
    unsigned long waits = dctl_passes(WAIT), finis = dctl_passes(FINI);
    t_sem_post(&b.go);
    /* b either waits for a's fini, or runs its own beside it. */
    int second_fini = dctl_wait_either(WAIT, waits, FINI, finis);
    dctl_release(FINI);
    t_pthread_join(ta);
    t_pthread_join(tb);
    ASSERT_EQ(second_fini, 0);
    ASSERT_OK(a.rc);
    ASSERT_OK(b.rc);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

/* That wait is bounded by the unload's timeout like the wait for calls:
   the unload returns TETHER_ETIMEDOUT, and the plugin stays loaded and
   usable with its reference, until an unload after the init succeeds. */
TEST(a_fini_waiting_for_an_init_in_another_runtime_times_out)
{
    static const char INIT[] = "load.init", WAIT[] = "unload.wait_busy";
    struct fini_after b = {0};
    fini_after_init(&b, FIXTURE("unloadable"));
    tether_runtime rt = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    tether_plugin p;
    ASSERT_OK(tether_plugin_load(rt, b.path, &p));
    dctl_arm(INIT, 1, DCTL_PARK, 0);
    pthread_t tb = t_pthread(load_wait_unload, &b);
    dctl_wait_parked(INIT); /* b's init is about to run */
    unsigned long waits = dctl_passes(WAIT);
    int64_t t0 = t_now_ns();
    int rc = tether_plugin_unload(p, MS(50));
    int64_t took = t_now_ns() - t0;
    int waited = dctl_passes(WAIT) > waits;
    int usable = tether_plugin_info(p, NULL, NULL);
    dctl_release(INIT);
    t_sem_wait(&b.loaded);
    ASSERT_OK(tether_plugin_unload(p, SECONDS(30)));
    t_sem_post(&b.go);
    t_pthread_join(tb);
    ASSERT_OK(tether_restore_thread(ts));
    t_finalize(rt);
    ASSERT_STATUS(rc, TETHER_ETIMEDOUT);
    ASSERT(waited);
    ASSERT(took >= MS(50) && took < SECONDS(10));
    ASSERT_OK(usable);
    ASSERT_OK(b.rc);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

/* Finalize unloads its runtime's plugins through the same wait, until its
   deadline: a plugin whose library's init still runs in another runtime
   then is abandoned without its fini (as one still called into), and
   stays mapped for good. */
TEST(finalize_abandons_a_plugin_whose_library_inits_past_the_deadline)
{
    static const char INIT[] = "load.init", WAIT[] = "unload.wait_busy",
                      FINI[] = "unload.drained", DONE[] = "test.finalized";
    struct fini_after a = {0}, b = {0};
    fini_after_init(&a, FIXTURE("unloadable"));
    fini_after_init(&b, FIXTURE("unloadable"));
    a.finalize_in = MS(100);
    pthread_t ta = t_pthread(load_wait_unload, &a);
    t_sem_wait(&a.loaded);
    dctl_arm(INIT, 1, DCTL_PARK, 0);
    pthread_t tb = t_pthread(load_wait_unload, &b);
    dctl_wait_parked(INIT); /* b's init is about to run */
    unsigned long waits = dctl_passes(WAIT), finis = dctl_passes(FINI);
    unsigned long done = dctl_passes(DONE);
    t_sem_post(&a.go); /* a's finalize */
    /* a's finalize either waits for b's init, or runs the fini beside it. */
    int fini_first = dctl_wait_either(WAIT, waits, FINI, finis);
    dctl_wait_passes(DONE, done); /* it gave up at the deadline */
    int fini_ran = dctl_passes(FINI) > finis;
    dctl_release(INIT);
    t_pthread_join(ta);
    t_sem_wait(&b.loaded);
    t_sem_post(&b.go);
    t_pthread_join(tb);
    ASSERT_EQ(fini_first, 0);
    ASSERT(!fini_ran);
    ASSERT_OK(a.rc);
    ASSERT_STATUS(tether_plugin_info(a.p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT_OK(b.rc);
    ASSERT(is_mapped(FIXTURE("unloadable"))); /* abandoned: never unmapped */
}

/* ---- rev3: one library loaded and unloaded by four runtimes at once ---- */

#define R3_RUNTIMES 4
#define R3_LOOPS 50

struct r3_loop {
    const char *path;
    int64_t unload_timeout;
    int bad_rc;     /* the first status outside the documented ones, or 0 */
    int timeouts;   /* unloads that timed out (then retried without one) */
    int unloads;
};

static void *r3_load_unload_loop(void *arg)
{
    struct r3_loop *l = arg;
    tether_runtime rt = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    for (int i = 0; i < R3_LOOPS; i++) {
        tether_plugin p;
        int rc = tether_plugin_load(rt, l->path, &p);
        if (rc != TETHER_OK) {
            if (!l->bad_rc)
                l->bad_rc = rc;
            continue;
        }
        if (tether_plugin_info(p, NULL, NULL) != TETHER_OK && !l->bad_rc)
            l->bad_rc = -1000;
        rc = tether_plugin_unload(p, l->unload_timeout);
        if (rc == TETHER_ETIMEDOUT) {
            /* Documented: it stays loaded, with its reference. */
            l->timeouts++;
            if (tether_plugin_info(p, NULL, NULL) != TETHER_OK && !l->bad_rc)
                l->bad_rc = -1001;
            rc = tether_plugin_unload(p, SECONDS(30));
        }
        if (rc != TETHER_OK && !l->bad_rc)
            l->bad_rc = rc;
        l->unloads++;
    }
    ASSERT_OK(tether_restore_thread(ts));
    ASSERT_OK(tether_runtime_finalize(rt, SECONDS(30)));
    return NULL;
}

static void r3_four_runtimes(int64_t unload_timeout, int widen)
{
    if (widen) { /* every init and fini takes a little while */
        dctl_arm("load.init", 0, DCTL_SLEEP, 300);
        dctl_arm("unload.drained", 0, DCTL_SLEEP, 300);
    }
    struct r3_loop l[R3_RUNTIMES];
    pthread_t th[R3_RUNTIMES];
    for (int i = 0; i < R3_RUNTIMES; i++) {
        l[i] = (struct r3_loop){FIXTURE("unloadable"), unload_timeout, 0, 0, 0};
        th[i] = t_pthread(r3_load_unload_loop, &l[i]);
    }
    int timeouts = 0;
    for (int i = 0; i < R3_RUNTIMES; i++) {
        t_pthread_join(th[i]);
        if (l[i].bad_rc)
            runner_fail(__FILE__, __LINE__, "runtime %d: status %d (%s)", i,
                        l[i].bad_rc, l[i].bad_rc > -1000
                        ? tether_status_name(l[i].bad_rc) : "plugin not usable");
        ASSERT_EQ(l[i].unloads, R3_LOOPS);
        timeouts += l[i].timeouts;
    }
    if (widen) {
        dctl_release("load.init");
        dctl_release("unload.drained");
    }
    printf("# %d unloads timed out (timeout %lld ns), %lu waits for a busy "
           "library\n", timeouts, (long long)unload_timeout,
           dctl_passes("unload.wait_busy"));
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

TEST(four_runtimes_load_and_unload_one_library_concurrently)
{
    r3_four_runtimes(SECONDS(30), 0);
}

TEST(four_runtimes_load_and_unload_one_library_with_slow_inits)
{
    r3_four_runtimes(SECONDS(30), 1);
}

TEST(four_runtimes_load_and_unload_one_library_with_timeout_0)
{
    r3_four_runtimes(0, 1);
}

/* An unload with timeout 0 while another runtime's init of the library is
   held at load.init: TETHER_ETIMEDOUT at once, the plugin still loaded and
   usable, and an unload after the init succeeds. */
TEST(an_unload_with_timeout_0_beside_another_runtimes_init_times_out)
{
    static const char INIT[] = "load.init";
    struct fini_after b = {0};
    fini_after_init(&b, FIXTURE("unloadable"));
    tether_runtime rt = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    tether_plugin p;
    ASSERT_OK(tether_plugin_load(rt, b.path, &p));
    dctl_arm(INIT, 1, DCTL_PARK, 0);
    pthread_t tb = t_pthread(load_wait_unload, &b);
    dctl_wait_parked(INIT); /* b's init is about to run */
    int64_t t0 = t_now_ns();
    int rc = tether_plugin_unload(p, 0);
    int64_t took = t_now_ns() - t0;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", tether_last_error());
    int usable = tether_plugin_info(p, NULL, NULL);
    void *sym = NULL;
    int sym_rc = tether_plugin_symbol(p, "fx_discard", &sym);
    int again = tether_plugin_unload(p, 0); /* still busy: times out again */
    dctl_release(INIT);
    t_sem_wait(&b.loaded);
    ASSERT_OK(tether_plugin_unload(p, SECONDS(30)));
    t_sem_post(&b.go);
    t_pthread_join(tb);
    ASSERT_OK(tether_restore_thread(ts));
    t_finalize(rt);
    ASSERT_STATUS(rc, TETHER_ETIMEDOUT);
    ASSERT_CONTAINS(msg, "tether_plugin_unload");
    ASSERT(took < SECONDS(5));
    ASSERT_OK(usable);
    ASSERT_OK(sym_rc);
    ASSERT(sym != NULL);
    ASSERT_STATUS(again, TETHER_ETIMEDOUT);
    ASSERT_OK(b.rc);
    ASSERT(!is_mapped(FIXTURE("unloadable")));
}

/* Finalize with a deadline of 1 ns in that situation: it returns (the
   plugin abandoned without its fini, its handle gone), and the other
   runtime's load and unload finish normally; the library stays mapped. */
TEST(finalize_with_a_1ns_deadline_beside_another_runtimes_init)
{
    static const char INIT[] = "load.init", FINI[] = "unload.drained";
    struct fini_after a = {0}, b = {0};
    fini_after_init(&a, FIXTURE("unloadable"));
    fini_after_init(&b, FIXTURE("unloadable"));
    a.finalize_in = 1;
    pthread_t ta = t_pthread(load_wait_unload, &a);
    t_sem_wait(&a.loaded);
    dctl_arm(INIT, 1, DCTL_PARK, 0);
    pthread_t tb = t_pthread(load_wait_unload, &b);
    dctl_wait_parked(INIT);
    unsigned long finis = dctl_passes(FINI);
    int64_t t0 = t_now_ns();
    t_sem_post(&a.go);
    t_pthread_join(ta); /* must not wait for b's init */
    int64_t took = t_now_ns() - t0;
    int fini_ran = dctl_passes(FINI) > finis;
    dctl_release(INIT);
    t_sem_wait(&b.loaded);
    t_sem_post(&b.go);
    t_pthread_join(tb);
    ASSERT(took < SECONDS(5));
    ASSERT(!fini_ran);
    ASSERT(a.rc == TETHER_OK || a.rc == TETHER_ETIMEDOUT);
    ASSERT_STATUS(tether_plugin_info(a.p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT_OK(b.rc);
    ASSERT(is_mapped(FIXTURE("unloadable"))); /* abandoned: never unmapped */
}

/* A thread that runs an init or fini of the library itself must not wait
   for it: a plugin's init or fini that unloads another runtime's instance
   of its own library, finalizes that runtime, or loads the library.  The
   stack walk refuses that when it sees the plugin's frame; the
   foreign_init fixture's init and fini are the host's own_init and
   own_fini, so the walk sees none (as with a tail call from a real init),
   and only the record's loader or finier tells.  An unload then answers
   TETHER_EDEADLK and leaves the record as it was (loaded, its reference
   kept; a later unload runs its fini), a finalize abandons the plugin
   without its fini (as for finalize called from the plugin's code), a
   load answers TETHER_EDEADLK.  Waiting instead hangs: the cases bound it
   with a timeout where the call takes one (the unload answers
   TETHER_ETIMEDOUT, the finalize returns at its deadline); a load from
   the fini has none, and the case's own timeout ends it (the unload's
   fini did not record its thread: a load from a fini that the stack walk
   could not see waited for that fini for ever). */
enum own_action { OWN_NONE, OWN_UNLOAD, OWN_FINALIZE, OWN_LOAD };

static struct {
    tether_runtime rt;     /* the other runtime, that the action is on */
    tether_plugin p;       /* the instance there, for OWN_UNLOAD */
    enum own_action in_init, in_fini; /* what the second init, or the
                                         first fini, does */
    int rc;                /* what the action answered */
    int64_t took;          /* and how long it took */
    char msg[512];
    atomic_int inits, finis;
} g_own;

#define OWN_TIMEOUT SECONDS(10)
#define OWN_PATH FIXTURE("foreign_init")

static void own_act(enum own_action what)
{
    int64_t t0 = t_now_ns();
    tether_plugin again = 0;
    if (what == OWN_UNLOAD)
        g_own.rc = tether_plugin_unload(g_own.p, OWN_TIMEOUT);
    else if (what == OWN_FINALIZE)
        g_own.rc = tether_runtime_finalize(g_own.rt, OWN_TIMEOUT);
    else if (what == OWN_LOAD)
        g_own.rc = tether_plugin_load(g_own.rt, OWN_PATH, &again);
    else
        return;
    g_own.took = t_now_ns() - t0;
    snprintf(g_own.msg, sizeof g_own.msg, "%s", tether_last_error());
}

static int own_init(const tether_host_api *host, tether_interp interp,
                    void **state)
{
    (void)host, (void)interp, (void)state;
    if (atomic_fetch_add(&g_own.inits, 1) == 1)
        own_act(g_own.in_init);
    return TETHER_OK;
}

static void own_fini(void *state)
{
    (void)state;
    if (atomic_fetch_add(&g_own.finis, 1) == 0)
        own_act(g_own.in_fini);
}

/* Opens the fixture and makes own_init and own_fini its init and fini;
   returns the test's own handle of it (dlclose it once a runtime holds
   the library, which keeps the hooks). */
static void *own_hooks(void)
{
    void *dl = dlopen(OWN_PATH, RTLD_NOW | RTLD_LOCAL);
    ASSERT(dl != NULL);
    void *sym = dlsym(dl, "fx_set_hooks");
    ASSERT(sym != NULL);
    void (*set_hooks)(int (*)(const tether_host_api *, tether_interp, void **),
                      void (*)(void *));
    memcpy(&set_hooks, &sym, sizeof set_hooks);
    set_hooks(own_init, own_fini);
    return dl;
}

/* Loads the fixture into runtime A (g_own's), then into runtime B on
   another thread, whose init does `what` to A. */
static void own_init_acts(enum own_action what)
{
    void *dl = own_hooks();
    g_own.in_init = what;
    g_own.rt = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    ASSERT_OK(tether_plugin_load(g_own.rt, OWN_PATH, &g_own.p));
    dlclose(dl);
    struct rt_load b = {.path = OWN_PATH};
    pthread_t tb = t_pthread(load_in_new_runtime, &b); /* own_init acts there */
    t_pthread_join(tb);
    ASSERT_EQ(atomic_load(&g_own.inits), 2);
    if (what != OWN_FINALIZE)
        ASSERT_OK(tether_restore_thread(ts));
}

TEST(an_init_that_unloads_another_instance_of_its_library_gets_edeadlk)
{
    own_init_acts(OWN_UNLOAD);
    if (g_own.rc != TETHER_EDEADLK)
        fprintf(stderr, "unload from init: %s\n", g_own.msg);
    ASSERT_STATUS(g_own.rc, TETHER_EDEADLK);
    ASSERT_CONTAINS(g_own.msg, "running an init or fini of 'foreign_init'");
    /* B's fini ran at its unload; A's did not: A is as it was. */
    ASSERT_EQ(atomic_load(&g_own.finis), 1);
    const char *name = NULL;
    ASSERT_OK(tether_plugin_info(g_own.p, &name, NULL));
    ASSERT_STREQ(name, "foreign_init");
    ASSERT_OK(tether_plugin_unload(g_own.p, SECONDS(30)));
    ASSERT_EQ(atomic_load(&g_own.finis), 2);
    ASSERT(!is_mapped(OWN_PATH));
    t_finalize(g_own.rt);
}

TEST(an_init_that_finalizes_another_instances_runtime_abandons_it)
{
    own_init_acts(OWN_FINALIZE);
    ASSERT_OK(g_own.rc);
    ASSERT(g_own.took < OWN_TIMEOUT); /* it did not wait for the deadline */
    /* B's fini ran at its unload; A's never runs: abandoned, mapped. */
    ASSERT_EQ(atomic_load(&g_own.finis), 1);
    ASSERT_STATUS(tether_plugin_info(g_own.p, NULL, NULL), TETHER_EBADHANDLE);
    ASSERT(is_mapped(OWN_PATH));
}

/* Runtime A's fini (the first) does `what` to runtime B (g_own's), into
   which the fixture is loaded too when `load_b`. */
static void own_fini_acts(enum own_action what, int load_b)
{
    void *dl = own_hooks();
    g_own.in_fini = what;
    tether_runtime a = t_runtime(NULL);
    tether_tstate ts;
    ASSERT_OK(tether_save_thread(&ts));
    g_own.rt = t_runtime_elsewhere(NULL);
    tether_plugin pa;
    ASSERT_OK(tether_plugin_load(a, OWN_PATH, &pa));
    if (load_b)
        ASSERT_OK(tether_plugin_load(g_own.rt, OWN_PATH, &g_own.p));
    dlclose(dl);
    ASSERT_OK(tether_plugin_unload(pa, SECONDS(30))); /* A's fini acts */
    ASSERT_OK(tether_restore_thread(ts));
    t_finalize(a);
}

TEST(a_fini_that_unloads_another_instance_of_its_library_gets_edeadlk)
{
    own_fini_acts(OWN_UNLOAD, 1);
    if (g_own.rc != TETHER_EDEADLK)
        fprintf(stderr, "unload from fini: %s\n", g_own.msg);
    ASSERT_STATUS(g_own.rc, TETHER_EDEADLK);
    ASSERT(g_own.took < OWN_TIMEOUT);
    ASSERT_EQ(atomic_load(&g_own.finis), 1); /* A's alone */
    ASSERT_OK(tether_plugin_info(g_own.p, NULL, NULL));
    ASSERT_OK(tether_plugin_unload(g_own.p, SECONDS(30)));
    ASSERT_EQ(atomic_load(&g_own.finis), 2);
    ASSERT(!is_mapped(OWN_PATH));
    t_finalize(g_own.rt);
}

TEST(a_fini_that_loads_its_library_gets_edeadlk)
{
    own_fini_acts(OWN_LOAD, 0);
    if (g_own.rc != TETHER_EDEADLK)
        fprintf(stderr, "load from fini: %s\n", g_own.msg);
    ASSERT_STATUS(g_own.rc, TETHER_EDEADLK);
    ASSERT_CONTAINS(g_own.msg, "the fini of 'foreign_init' is running");
    ASSERT_EQ(atomic_load(&g_own.inits), 1); /* no init in B */
    ASSERT(!is_mapped(OWN_PATH));
    t_finalize(g_own.rt);
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
            TEST_ENTRY_T(a_fini_waits_for_an_init_of_its_library_in_another_runtime, 60),
            TEST_ENTRY_T(finis_of_one_library_in_two_runtimes_do_not_overlap, 60),
            TEST_ENTRY_T(a_fini_waiting_for_an_init_in_another_runtime_times_out, 60),
            TEST_ENTRY_T(finalize_abandons_a_plugin_whose_library_inits_past_the_deadline, 60),
            TEST_ENTRY_T(an_init_that_unloads_another_instance_of_its_library_gets_edeadlk, 60),
            TEST_ENTRY_T(an_init_that_finalizes_another_instances_runtime_abandons_it, 60),
            TEST_ENTRY_T(a_fini_that_unloads_another_instance_of_its_library_gets_edeadlk, 60),
            TEST_ENTRY_T(a_fini_that_loads_its_library_gets_edeadlk, 60),
            TEST_ENTRY_T(finalize_waits_for_an_init_in_progress, 60),
            TEST_ENTRY_T(an_init_that_outlives_finalize_is_unloaded_by_its_load, 60),
            TEST_ENTRY_T(failed_init_whose_thread_start_met_finalize_drops_its_pin_once, 60),
            TEST_ENTRY_T(a_send_stopped_by_finalize_keeps_its_discards_plugin_mapped, 60),
            TEST_ENTRY_T(four_runtimes_load_and_unload_one_library_concurrently, 120),
            TEST_ENTRY_T(four_runtimes_load_and_unload_one_library_with_slow_inits, 120),
            TEST_ENTRY_T(four_runtimes_load_and_unload_one_library_with_timeout_0, 120),
            TEST_ENTRY_T(an_unload_with_timeout_0_beside_another_runtimes_init_times_out, 60),
            TEST_ENTRY_T(finalize_with_a_1ns_deadline_beside_another_runtimes_init, 60))
