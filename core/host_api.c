/*
 * host_api.c - the host API table handed to plugins (tether_plugin.h), and
 * tether_plugin_load, which hands it to the loader (plugin.c).
 *
 * One static instance, filled with designated initializers: a member of the
 * wrong type does not compile, and a member added to the struct but
 * forgotten here stays NULL, which tests/abi/test_host_api.c catches.
 *
 * In debug builds (no NDEBUG) the table is followed by HOST_PAD slots that
 * a plugin built for a newer host would read as members this host does not
 * have, if it calls one without checking TETHER_API_HAS: each points at a
 * function that says so and aborts, instead of the call jumping to
 * whatever lies after the table.
 */
#include <stdio.h>
#include <stdlib.h>

#include "plugin.h"
#include "trace.h"

#ifndef NDEBUG
#define HOST_PAD 32

/* What a plugin calls through pad slot `i`. */
static void missing_member(unsigned i)
{
    fprintf(stderr,
            "tether: a plugin called host-table member %zu (byte offset %zu), "
            "but this host has no such member: its table ends after %zu "
            "members (ABI %u.%u). Check TETHER_API_HAS(host, member) before "
            "calling a member newer than the ABI the plugin's descriptor "
            "states. Aborting.\n",
            (sizeof(tether_host_api) - sizeof(size_t)) / sizeof(void (*)(void)) + i,
            sizeof(tether_host_api) + i * sizeof(void (*)(void)),
            (sizeof(tether_host_api) - sizeof(size_t)) / sizeof(void (*)(void)),
            TETHER_ABI_MAJOR, TETHER_ABI_MINOR);
    abort();
}

#define MISSING(i) static void missing_##i(void) { missing_member(i); }
MISSING(0) MISSING(1) MISSING(2) MISSING(3) MISSING(4) MISSING(5) MISSING(6)
MISSING(7) MISSING(8) MISSING(9) MISSING(10) MISSING(11) MISSING(12)
MISSING(13) MISSING(14) MISSING(15) MISSING(16) MISSING(17) MISSING(18)
MISSING(19) MISSING(20) MISSING(21) MISSING(22) MISSING(23) MISSING(24)
MISSING(25) MISSING(26) MISSING(27) MISSING(28) MISSING(29) MISSING(30)
MISSING(31)
#undef MISSING

static const struct {
    tether_host_api api;
    void (*pad[HOST_PAD])(void);
} g_host = {
    .pad = {missing_0, missing_1, missing_2, missing_3, missing_4, missing_5,
            missing_6, missing_7, missing_8, missing_9, missing_10, missing_11,
            missing_12, missing_13, missing_14, missing_15, missing_16,
            missing_17, missing_18, missing_19, missing_20, missing_21,
            missing_22, missing_23, missing_24, missing_25, missing_26,
            missing_27, missing_28, missing_29, missing_30, missing_31},
    .api = {
#else
static const struct {
    tether_host_api api;
} g_host = {
    .api = {
#endif
    .size = sizeof(tether_host_api),
    .strerror = tether_strerror,
    .status_name = tether_status_name,
    .last_error = tether_last_error,
    .abi_version = tether_abi_version,
    .version_string = tether_version_string,
    .runtime_create = tether_runtime_create,
    .runtime_main_interp = tether_runtime_main_interp,
    .runtime_finalize = tether_runtime_finalize,
    .interp_create = tether_interp_create,
    .interp_destroy = tether_interp_destroy,
    .set_switch_interval = tether_set_switch_interval,
    .get_switch_interval = tether_get_switch_interval,
    .ensure = tether_ensure,
    .release = tether_release,
    .save_thread = tether_save_thread,
    .restore_thread = tether_restore_thread,
    .checkpoint = tether_checkpoint,
    .gil_held = tether_gil_held,
    .thread_start = tether_thread_start,
    .thread_join = tether_thread_join,
    .thread_is_alive = tether_thread_is_alive,
    .thread_current = tether_thread_current,
    .thread_ident = tether_thread_ident,
    .thread_name = tether_thread_name,
    .thread_result = tether_thread_result,
    .thread_release = tether_thread_release,
    .thread_list = tether_thread_list,
    .call_blocking = tether_call_blocking,
    .thread_raise = tether_thread_raise,
    .raise_by_ident = tether_raise_by_ident,
    .async_fetch = tether_async_fetch,
    .async_defer = tether_async_defer,
    .async_allow = tether_async_allow,
    .sleep = tether_sleep,
    .lock_new = tether_lock_new,
    .lock_free = tether_lock_free,
    .lock_acquire = tether_lock_acquire,
    .lock_release = tether_lock_release,
    .event_new = tether_event_new,
    .event_free = tether_event_free,
    .event_set = tether_event_set,
    .event_clear = tether_event_clear,
    .event_wait = tether_event_wait,
    .event_is_set = tether_event_is_set,
    .gil_stats_get = tether_gil_stats_get,
    .call_soon = tether_call_soon,
    .interp_set_breaker_hook = tether_interp_set_breaker_hook,
    .set_thread_userdata = tether_set_thread_userdata,
    .get_thread_userdata = tether_get_thread_userdata,
    .set_allocator = tether_set_allocator,
    .fault_inject = tether_fault_inject,
    .plugin_load = tether_plugin_load,
    .plugin_unload = tether_plugin_unload,
    .plugin_symbol = tether_plugin_symbol,
    .plugin_info = tether_plugin_info,
    .callback_new = tether_callback_new,
    .callback_code = tether_callback_code,
    .callback_free = tether_callback_free,
    .ffi_call = tether_ffi_call,
    .channel_new = tether_channel_new,
    .channel_retain = tether_channel_retain,
    .channel_release = tether_channel_release,
    .channel_send = tether_channel_send,
    .channel_recv = tether_channel_recv,
    .channel_msg_free = tether_channel_msg_free,
    .channel_close = tether_channel_close,
    .channel_count = tether_channel_count,
    .channel_set_discard = tether_channel_set_discard,
    .plugin_enter = tether_plugin_enter,
    .plugin_leave = tether_plugin_leave,
    .plugin_state = tether_plugin_state,
    .callback_retain = tether_callback_retain,
    .callback_release = tether_callback_release,
    .set_error = tether_set_error,
    .callback_on_free = tether_callback_on_free,
    .channel_watch = tether_channel_watch,
    .channel_unwatch = tether_channel_unwatch,
    .trace_start = tether_trace_start,
    .trace_stop = tether_trace_stop,
    },
};

/* Here rather than in the loader, which is handed the table: the table
   names every public function, tether_plugin_load too. */
int tether_plugin_load(tether_runtime rt, const char *path, tether_plugin *out)
{
    TRACE(trace_plugin_begin(rt, 0, path ? path : "(null)"));
    int rc = plugin_load(rt, path, &g_host.api, out);
    TRACE(trace_plugin_end(rt, rc));
    return rc;
}
