/*
 * lt_conf.h - the Lua binding's tuning knobs, in one place (as luaconf.h
 * is Lua's).  Each says what it bounds and where it is used; none is part
 * of the module's interface.
 */
#ifndef TETHER_LT_CONF_H
#define TETHER_LT_CONF_H

#include <stddef.h>
#include <stdint.h>

/* ---- the GIL and hooks (lt_hook.c) ------------------------------------ */

/* Room for hooks of other code set on coroutines that the module hooks over
   at the same time. */
#define LT_SAVED_HOOKS 8

/* The most instructions a user's count hook that the module runs counts
   before the module looks for a request ("Count hooks"). */
#define LT_COUNT_STEP 10000

/* ---- values that cross between states (lt_codec.c) -------------------- */

/* How deeply tables may nest, in an encoding and in a decoding. */
#define LT_COPY_DEPTH 200

/* ---- messages (lt_class.c) -------------------------------------------- */

/* Strings longer than this are cut in quoted descriptions. */
#define LT_DESCRIBE_MAX 60

/* ---- the small-block cache (lt_alloc.c) ------------------------------- */

#define LT_POOL_MAX 256                         /* largest cached block */
#define LT_POOL_BYTES ((size_t)2 * 1024 * 1024) /* most bytes kept */

/* ---- threads (lt_thread.c) -------------------------------------------- */

/* The smallest stack_size accepted.  Lua lets C calls nest 200 deep
   (LUAI_MAXCCALLS) whatever the stack, so a thread must hold 200 levels of
   its heaviest library function: nested string.gsub callbacks need about
   420 KiB on x86-64 (a luaL_Buffer and a match state per level), and under
   ThreadSanitizer, whose runtime runs on the thread's stack too, about
   1.1 MiB.  Twice and more that, so that C modules with bigger frames fit
   too; tests/lua/test_stack_size.lua runs those nestings at the minimum. */
#ifdef __has_feature
#define LT_HAS_FEATURE(x) __has_feature(x)
#else
#define LT_HAS_FEATURE(x) 0
#endif
#if defined(__SANITIZE_THREAD__) || LT_HAS_FEATURE(thread_sanitizer)
#define LT_MIN_STACK ((size_t)4 << 20)
#else
#define LT_MIN_STACK ((size_t)1 << 20)
#endif

/* The longest thread name: the core keeps 127 bytes and cut longer ones. */
#define LT_NAME_MAX 127

/* ---- callbacks and plugins (lt_ffi.c) --------------------------------- */

/* Idle callback coroutines kept for reuse. */
#define LT_CB_POOL 8

/* The most arguments of p:call and tether.ffi_call. */
#define LT_MAX_ARGS 32

/* How long closing the state waits for each plugin's calls to end. */
#define LT_UNLOAD_TIMEOUT_NS INT64_C(2000000000)

/* ---- closing (lt_module.c) -------------------------------------------- */

/* How long closing waits for daemon threads to leave Lua after finalize. */
#define LT_REAP_TIMEOUT_NS INT64_C(2000000000)

/* The least time the exit waits for the threads it cancelled (after
   Ctrl-C or tether.atexit_timeout) before it abandons them. */
#define LT_CANCEL_GRACE_NS INT64_C(1000000000)

#endif
