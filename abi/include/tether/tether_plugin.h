/*
 * tether_plugin.h - what a plugin includes: the entry point, its
 * descriptor, and the host API table.
 *
 * A plugin is a shared object that exports one function,
 * tether_plugin_entry, plus whatever functions it deliberately offers to
 * tether_plugin_symbol.  The host calls the entry with its ABI version and
 * gets back a descriptor; the descriptor's init receives a tether_host_api
 * table, so a plugin can call the whole public API without linking
 * libtether (it may link it instead; both work).  docs/plugins.md is the
 * guide.
 *
 * Versioning: the table only ever grows at its end.  A plugin states in
 * its descriptor the oldest ABI it needs; a host refuses a plugin of another
 * major or of a newer minor with TETHER_EVERSION.  A plugin that wants to
 * use members newer than the ABI it states checks for them with
 * TETHER_API_HAS, so that it degrades in an older host instead of calling
 * garbage.
 */
#ifndef TETHER_PLUGIN_H
#define TETHER_PLUGIN_H

#include <stddef.h>

#include "tether.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Marks a function that the plugin exports (the entry point, and the
   functions it offers to tether_plugin_symbol).  Build plugins with
   -fvisibility=hidden so that nothing else is exported. */
#if defined(_WIN32)
#define TETHER_PLUGIN_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define TETHER_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define TETHER_PLUGIN_EXPORT
#endif

/* The host API: one pointer per public function, named after it without the
   tether_ prefix, in the order of tether.h.  The host fills one static
   instance that lives as long as the process.  Members are only ever added
   at the end, so a plugin built against an older table finds every member
   it knows at the same place; `size` tells how far this host's table goes. */
typedef struct tether_host_api {
    size_t size; /* sizeof(tether_host_api) of the host's build */

    /* Status codes and version */
    const char *(*strerror)(int code);
    const char *(*status_name)(int code);
    const char *(*last_error)(void);
    uint32_t (*abi_version)(void);
    const char *(*version_string)(void);

    /* Runtime and interpreters */
    int (*runtime_create)(const tether_config *cfg, tether_runtime *out);
    int (*runtime_main_interp)(tether_runtime rt, tether_interp *out);
    int (*runtime_finalize)(tether_runtime rt, int64_t timeout_ns);
    int (*interp_create)(tether_runtime rt, tether_interp *out);
    int (*interp_destroy)(tether_interp interp, int64_t timeout_ns);
    int (*set_switch_interval)(tether_runtime rt, uint32_t us);
    int (*get_switch_interval)(tether_runtime rt, uint32_t *out);

    /* The GIL and thread states */
    int (*ensure)(tether_interp interp, tether_gilstate *out);
    int (*release)(tether_gilstate st);
    int (*save_thread)(tether_tstate *out);
    int (*restore_thread)(tether_tstate ts);
    int (*checkpoint)(void);
    int (*gil_held)(void);

    /* Threads */
    int (*thread_start)(tether_interp interp, tether_thread_fn fn, void *arg,
                        const tether_thread_opts *opts, tether_thread *out);
    int (*thread_join)(tether_thread t, int64_t timeout_ns);
    int (*thread_is_alive)(tether_thread t);
    int (*thread_current)(tether_thread *out);
    int (*thread_ident)(tether_thread t, uint64_t *out);
    int (*thread_name)(tether_thread t, const char **out);
    int (*thread_result)(tether_thread t, int *out);
    int (*thread_release)(tether_thread t);
    int (*thread_list)(tether_interp interp, tether_thread *buf, size_t cap,
                       size_t *count);

    /* Blocking calls that can be interrupted */
    int (*call_blocking)(int (*fn)(void *arg), void *arg,
                         tether_unblock_fn ubf, void *ubf_arg);

    /* Asynchronous exceptions */
    int (*thread_raise)(tether_thread t, int64_t code, void *payload,
                        tether_dtor dtor);
    int (*raise_by_ident)(tether_interp interp, uint64_t ident, int64_t code,
                          void *payload, tether_dtor dtor, int *count_out);
    int (*async_fetch)(int64_t *code_out, void **payload_out,
                       tether_dtor *dtor_out);
    int (*async_defer)(void);
    int (*async_allow)(void);

    /* Interruptible waits and synchronisation */
    int (*sleep)(int64_t ns);
    int (*lock_new)(tether_lock *out);
    int (*lock_free)(tether_lock l);
    int (*lock_acquire)(tether_lock l, int64_t timeout_ns);
    int (*lock_release)(tether_lock l);
    int (*event_new)(tether_event *out);
    int (*event_free)(tether_event e);
    int (*event_set)(tether_event e);
    int (*event_clear)(tether_event e);
    int (*event_wait)(tether_event e, int64_t timeout_ns);
    int (*event_is_set)(tether_event e);

    /* Observability and pending calls */
    int (*gil_stats_get)(tether_interp interp, tether_gil_stats *out);
    int (*call_soon)(tether_interp interp, int (*fn)(void *), void *arg);

    /* Bindings */
    int (*interp_set_breaker_hook)(tether_interp interp, tether_breaker_fn fn,
                                   void *ud);
    int (*set_thread_userdata)(void *ud);
    int (*get_thread_userdata)(void **out);

    /* Memory and fault injection */
    int (*set_allocator)(const tether_allocator *a);
    int (*fault_inject)(uint32_t what, uint64_t nth, uint64_t count);

    /* Plugins */
    int (*plugin_load)(tether_runtime rt, const char *path,
                       tether_plugin *out);
    int (*plugin_unload)(tether_plugin p, int64_t timeout_ns);
    int (*plugin_symbol)(tether_plugin p, const char *name, void **out);
    int (*plugin_info)(tether_plugin p, const char **name,
                       const char **version);

    /* FFI */
    int (*callback_new)(tether_interp interp, const char *signature,
                        tether_guest_fn fn, void *userdata,
                        tether_callback *out);
    void *(*callback_code)(tether_callback cb);
    int (*callback_free)(tether_callback cb);
    int (*ffi_call)(void *fnptr, const char *signature, void **args,
                    void *ret);

    /* Channels (ABI 1.1) */
    int (*channel_new)(size_t capacity, tether_channel *out);
    int (*channel_retain)(tether_channel ch);
    int (*channel_release)(tether_channel ch);
    int (*channel_send)(tether_channel ch, const void *data, size_t len,
                        int64_t timeout_ns);
    int (*channel_recv)(tether_channel ch, void **data, size_t *len,
                        int64_t timeout_ns);
    void (*channel_msg_free)(void *data);
    int (*channel_close)(tether_channel ch);
    int (*channel_count)(tether_channel ch, size_t *out);
    int (*channel_set_discard)(tether_channel ch, tether_channel_discard_fn fn,
                               void *ud);

    /* Plugin SDK (ABI 1.2) */
    int (*plugin_enter)(tether_plugin p);
    int (*plugin_leave)(tether_plugin p);
    int (*plugin_state)(tether_plugin p, void **out);
    int (*callback_retain)(tether_callback cb);
    int (*callback_release)(tether_callback cb);
    int (*set_error)(int code, const char *message);
    int (*callback_on_free)(tether_callback cb, void (*fn)(void *ud), void *ud);
    int (*channel_watch)(tether_channel ch, tether_event ev);
    int (*channel_unwatch)(tether_channel ch, tether_event ev);

    /* Tracing (ABI 1.3) */
    int (*trace_start)(tether_runtime rt, const char *path, int fd,
                       uint32_t flags);
    int (*trace_stop)(tether_runtime rt);

    /* Members of later ABI minors are added here, at the end. */
} tether_host_api;

/* Nonzero if the host's table `api` has `member`: true for every member of
   the ABI minor the plugin states in its descriptor, and to be checked
   before calling any newer one. */
#define TETHER_API_HAS(api, member)                                           \
    (offsetof(tether_host_api, member) < (api)->size)

/* TETHER_BEGIN/END_ALLOW_THREADS for a plugin that reaches the library
   only through the host table (it does not link libtether, so the plain
   macros' tether_save_thread would be an undefined symbol):

       TETHER_HOST_BEGIN_ALLOW_THREADS(host)
       blocking_call();            (holding no GIL)
       TETHER_HOST_END_ALLOW_THREADS(host)

   A thread that holds no GIL passes through unchanged. */
#define TETHER_HOST_BEGIN_ALLOW_THREADS(host)                                 \
    {                                                                         \
        const tether_host_api *tether__host = (host);                         \
        tether_tstate tether__save = 0;                                       \
        (void)tether__host->save_thread(&tether__save);
#define TETHER_HOST_END_ALLOW_THREADS(host)                                   \
        (void)(host);                                                         \
        if (tether__save)                                                     \
            (void)tether__host->restore_thread(tether__save);                 \
    }

/* Descriptor flag: the plugin may be dlclosed by its last unload, once no
   thread runs its code and no callback into it is alive.  Without it the
   library stays mapped for the life of the process, because native threads
   and callbacks often outlive their owners. */
#define TETHER_PLUGIN_UNLOADABLE 0x1u

/* What tether_plugin_entry returns.  It must stay valid and unchanged until
   fini returns (a static const instance is usual). */
typedef struct tether_plugin_desc {
    size_t size;          /* sizeof(tether_plugin_desc) */
    uint32_t abi_version; /* the oldest ABI the plugin needs:
                             TETHER_ABI_VERSION, unless it checks newer
                             members with TETHER_API_HAS */
    uint32_t flags;       /* TETHER_PLUGIN_UNLOADABLE, or 0 */
    const char *name;     /* required; copied by the host */
    const char *version;  /* may be NULL; copied by the host */

    /* Called once when a runtime loads the plugin (not again for a repeated
       load of the same library into the same runtime), holding the GIL of
       `interp`, the runtime's main interpreter.  `host` stays valid for the
       life of the process.  Whatever it stores in *state is passed to fini.
       Returns TETHER_OK, or an error status: the load then fails with
       TETHER_EPLUGIN and fini is not called.  May be NULL.
       Thread rules: called on the thread that calls tether_plugin_load,
       holding `interp`'s GIL (ensured for it), with no lock of the library
       held: it may call anything a [gil-held] thread may, through `host`.
       Never while another init or fini of the same library runs, in any
       runtime: the instances share the library's statics. */
    int (*init)(const tether_host_api *host, tether_interp interp,
                void **state);

    /* Called by the last tether_plugin_unload, holding no GIL, so that the
       plugin's threads can finish a callback in progress.  It must stop and
       join every thread the plugin started and free the callbacks it made:
       after it returns, no code of the plugin may run.  May be NULL.
       Thread rules: called on the thread that drops the last reference
       (tether_plugin_unload, or tether_runtime_finalize unloading what is
       left), holding no GIL and no lock of the library: it may wait for
       its own threads, which may need the GIL to finish.  Never while
       another init or fini of the same library runs, in any runtime. */
    void (*fini)(void *state);
} tether_plugin_desc;

/* The type of tether_plugin_entry, for a host that looks it up itself.
   Thread rules: the library calls it on the thread that calls
   tether_plugin_load, holding no GIL (the caller's is released while the
   library is opened); it should only return the descriptor. */
typedef const tether_plugin_desc *(*tether_plugin_entry_fn)(
    uint32_t host_abi_version);

/* The one function every plugin defines.  Called with the host's
   TETHER_ABI_VERSION; returns the plugin's descriptor, or NULL to refuse
   this host.  [any-thread] */
TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(uint32_t host_abi_version);

#ifdef __cplusplus
}
#endif

#endif /* TETHER_PLUGIN_H */
