/*
 * lt_signal.c - Ctrl-C in the stock interpreter.
 *
 * lua.c installs a SIGINT handler while it runs a chunk (the script, each
 * line of -i): it hooks the main Lua state so that the next instruction
 * raises "interrupted!", and resets SIGINT to the default action, so that
 * a second Ctrl-C ends the process.  A main thread blocked in a tether wait
 * runs no instruction, so that handler alone cannot reach it.
 *
 * While lua.c's handler is the current one, and only then, the module puts
 * its own in its place (lt_sigint_install at require, lt_sigint_rearm
 * before each blocking wait of the main thread, since lua.c sets its own
 * again for every line of -i).  What the module's handler does is what
 * lua.c's does, reaching the blocked thread too: it resets SIGINT to the
 * default action and posts a semaphore (both async-signal-safe); a
 * watcher thread, started with the handler, wakes and raises the
 * asynchronous exception LT_ASYNC_INTERRUPT at the thread that required
 * the module.  A tether wait wakes at once; running Lua gets it at its next
 * line through the breaker hook; lt_base.c turns it into lua.c's error,
 * "<where>: interrupted!".  When the module cannot act (the watcher is
 * gone, or this is a forked child, which has no watcher) the handler
 * chains to lua.c's.
 *
 * "lua.c's handler" is recognised, not named (it is static in lua.c): the
 * requiring thread is the process's main thread, the SIGINT disposition is
 * a plain handler (no SA_SIGINFO), and that handler's code lies in the
 * main executable.  A host that embeds Lua and joins its own runtime is
 * never touched (the caller checks that the module created the runtime),
 * and TETHER_LUA_SIGINT=0 turns all of this off.
 *
 * Floor: this file uses nothing of the binding (only the core's public
 * API), so every floor above may call it.
 */
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lt.h"

/* The one installation of the process (lua.c has one main state).
   Synchronization: `installed` and `stop` are atomic (the handler reads
   them); everything else is written by the installing thread before
   `installed` is set and read after (the handler, the watcher), or only by
   the installing thread. */
static struct {
    atomic_int installed;     /* 1 from install to remove */
    atomic_int stop;          /* tells the watcher to end */
    int sem_made;             /* sem initialised (once: never destroyed, as a
                                 handler still running may post it) */
    pid_t pid;                /* the installing process (not a forked child) */
    pthread_t owner;          /* the thread that installed it */
    struct sigaction lua_sa;  /* lua.c's disposition, chained to and put back */
    sem_t sem;                /* posted by the handler, waited by the watcher */
    pthread_t watcher;
    tether_thread target;     /* a reference to the requiring thread */
} g;

/* The module's SIGINT handler.  [async-signal-safe] */
static void on_sigint(int sig)
{
    int saved = errno;
    if (atomic_load(&g.installed) && !atomic_load(&g.stop) && getpid() == g.pid) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        (void)sigaction(sig, &dfl, NULL); /* as lua.c: a second Ctrl-C ends it */
        (void)sem_post(&g.sem);
    } else if (g.lua_sa.sa_handler != SIG_DFL && g.lua_sa.sa_handler != SIG_IGN) {
        g.lua_sa.sa_handler(sig);
    }
    errno = saved;
}

/* Waits for the handler's posts and raises the interrupt each time. */
static void *watch(void *arg)
{
    (void)arg;
    for (;;) {
        while (sem_wait(&g.sem) != 0 && errno == EINTR)
            ;
        if (atomic_load(&g.stop))
            return NULL;
        (void)tether_thread_raise(g.target, LT_ASYNC_INTERRUPT, NULL, NULL);
    }
}

struct in_exe {
    uintptr_t addr;
    int found;
};

/* dl_iterate_phdr visits the main executable first: is addr in one of its
   loaded segments? */
static int exe_has(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct in_exe *q = data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && q->addr >= lo && q->addr < lo + ph->p_memsz)
            q->found = 1;
    }
    return 1; /* the first object only */
}

/* Whether `sa` looks like lua.c's handler (see the top). */
static int is_lua_handler(const struct sigaction *sa)
{
    if ((sa->sa_flags & SA_SIGINFO) || sa->sa_handler == SIG_DFL ||
        sa->sa_handler == SIG_IGN || sa->sa_handler == on_sigint)
        return 0;
    struct in_exe q = {(uintptr_t)sa->sa_handler, 0};
    (void)dl_iterate_phdr(exe_has, &q);
    return q.found;
}

/* Puts the module's handler in, with lua.c's flags and mask. */
static void put_ours(void)
{
    struct sigaction sa = g.lua_sa;
    sa.sa_handler = on_sigint;
    (void)sigaction(SIGINT, &sa, NULL);
}

/* Starts the watcher with every signal blocked in it. */
static int start_watcher(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return 0;
    (void)pthread_attr_setstacksize(&attr, LT_MIN_STACK);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&g.watcher, &attr, watch, NULL);
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0;
}

int lt_sigint_install(void)
{
    const char *env = getenv("TETHER_LUA_SIGINT");
    if ((env && strcmp(env, "0") == 0) || atomic_load(&g.installed))
        return 0;
    if (syscall(SYS_gettid) != getpid()) /* not the process's main thread */
        return 0;
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) != 0 || !is_lua_handler(&cur))
        return 0;
    if (tether_thread_current(&g.target) != TETHER_OK)
        return 0;
    if (!g.sem_made && sem_init(&g.sem, 0, 0) != 0) {
        (void)tether_thread_release(g.target);
        return 0;
    }
    g.sem_made = 1;
    while (sem_trywait(&g.sem) == 0) /* posts of an earlier installation */
        ;
    g.lua_sa = cur;
    g.pid = getpid();
    g.owner = pthread_self();
    atomic_store(&g.stop, 0);
    if (!start_watcher()) {
        (void)tether_thread_release(g.target);
        return 0;
    }
    atomic_store(&g.installed, 1);
    put_ours();
    return 1;
}

void lt_sigint_rearm(void)
{
    if (!atomic_load(&g.installed) ||
        !pthread_equal(pthread_self(), g.owner) || getpid() != g.pid)
        return;
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
        cur.sa_handler == g.lua_sa.sa_handler)
        put_ours();
}

void lt_sigint_remove(void)
{
    if (!atomic_load(&g.installed) || getpid() != g.pid)
        return;
    atomic_store(&g.stop, 1); /* from now on the handler chains to lua.c's */
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) == 0 && cur.sa_handler == on_sigint)
        (void)sigaction(SIGINT, &g.lua_sa, NULL);
    (void)sem_post(&g.sem);
    (void)pthread_join(g.watcher, NULL);
    atomic_store(&g.installed, 0);
    (void)tether_thread_release(g.target);
    g.target = 0;
}

int lt_sigint_elsewhere(void)
{
    return atomic_load(&g.installed) && getpid() == g.pid &&
           !pthread_equal(pthread_self(), g.owner);
}
