/*
 * fork.c - fork(): the core's pthread_atfork handlers, in one place.
 *
 * Each module that keeps shared structure has its own handlers; this file
 * only orders them.  Before the fork every lock that guards shared
 * structure is taken, in rank order (core/lockrank.h), so that the child
 * inherits it consistent; the parent then releases them, and the child
 * rebuilds what belonged to threads that do not exist in it, releases
 * them, and finally re-makes the objects and frees the memory of the
 * vanished threads (a destructor that runs then may take those locks).
 */
#include <pthread.h>

#include "alloc.h"
#include "handle.h"
#include "internal.h"
#include "pluginreg.h"

struct fork_step {
    const char *what;
    void (*prepare)(void); /* takes the module's locks (or NULL) */
    void (*parent)(void);  /* releases them */
    void (*child)(void);   /* repairs what vanished threads left, releases */
};

/* prepare runs from the first step to the last (the lock order); parent
   and child from the last to the first. */
static const struct fork_step g_steps[] = {
    {"the runtimes, interpreters and GILs (ranks 0 to 3)",
     registry_atfork_prepare, registry_atfork_parent, registry_atfork_child},
    {"the thread states of threads that vanished (under the interpreters' "
     "mutexes)", NULL, NULL, tstate_atfork_child},
    {"the plugin registry", plugin_atfork_prepare, plugin_atfork_parent,
     plugin_atfork_child},
    {"the handle table (rank 5)", handle_atfork_prepare, handle_atfork_parent,
     handle_atfork_child},
};
#define N_STEPS (sizeof g_steps / sizeof g_steps[0])

static void reinit_object(uint64_t h, int type, void *obj, const char *name,
                          uint64_t creator, void *ud)
{
    (void)h, (void)name, (void)creator, (void)ud;
    wait_atfork_child_object(type, obj);
    channel_atfork_child_object(type, obj);
}

/* Locks, events and channels: their mutexes and conds are made anew. */
static void objects_atfork_child(void) { handle_foreach_open(reinit_object, NULL); }

/* Then, in the child, in this order, with every lock of g_steps released. */
static void (*const g_child_after[])(void) = {
    objects_atfork_child,
    alloc_atfork_child,    /* the fault switches' lock */
    tstate_atfork_release, /* drops what the vanished threads held */
};

static void atfork_prepare(void)
{
    for (size_t i = 0; i < N_STEPS; i++)
        if (g_steps[i].prepare)
            g_steps[i].prepare();
}

static void atfork_parent(void)
{
    for (size_t i = N_STEPS; i-- > 0;)
        if (g_steps[i].parent)
            g_steps[i].parent();
}

static void atfork_child(void)
{
    for (size_t i = N_STEPS; i-- > 0;)
        if (g_steps[i].child)
            g_steps[i].child();
    for (size_t i = 0; i < sizeof g_child_after / sizeof g_child_after[0]; i++)
        g_child_after[i]();
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void install(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

void fork_install(void) { pthread_once(&g_once, install); }
