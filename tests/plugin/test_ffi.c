/*
 * test_ffi.c - signatures, dynamic calls and callbacks (label "ffi"):
 * every type round-trips exactly in both directions, callbacks attach any
 * thread, guest errors reach the excepthook, freeing waits for running
 * calls, and calls after finalize return zero and report once.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tether/tether.h>

#include "support.h"

/* Turns a callback's code into a function pointer of type `type`. */
#define CODE(var, cb)                                                         \
    do {                                                                      \
        void *code_ = tether_callback_code(cb);                               \
        ASSERT(code_ != NULL);                                                \
        memcpy(&(var), &code_, sizeof(var));                                  \
    } while (0)

/* ------------------------------------------------------------------------
 * Signatures
 * ---------------------------------------------------------------------- */

static int32_t add_i32(int32_t a, int32_t b) { return a + b; }

static void *fn_addr(int32_t (*fn)(int32_t, int32_t))
{
    void *p;
    memcpy(&p, &fn, sizeof p);
    return p;
}

static int never_called(void **args, void *ret, void *ud)
{
    (void)args, (void)ret, (void)ud;
    return TETHER_EINVAL;
}

TEST(malformed_signatures_name_the_column)
{
    static const struct {
        const char *sig;
        const char *says;
    } bad[] = {
        {"", "at column 1: expected a return type"},
        {"int(i32)", "at column 1: unknown type name"},
        {"i32", "at column 4: expected '(' after the return type"},
        {"i32(i32,,f64)", "at column 9: expected an argument type"},
        {"i32(i32", "at column 8: expected ',' or ')'"},
        {"i32(i32 i32)", "at column 9: expected ',' or ')'"},
        {"i32(void,i32)", "at column 5: void must stand alone"},
        {"i32(i32,void)", "at column 9: void must stand alone"},
        {"i32(i32) x", "at column 10: unexpected text after ')'"},
        {"i32(I32)", "at column 5: expected an argument type"},
    };
    tether_runtime rt = t_runtime(NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t r;
        tether_callback cb = 77;
        ASSERT_STATUS(tether_ffi_call(fn_addr(add_i32), bad[i].sig, NULL, &r),
                      TETHER_ESIGNATURE);
        ASSERT_CONTAINS(tether_last_error(), "tether_ffi_call: bad signature");
        ASSERT_CONTAINS(tether_last_error(), bad[i].says);
        ASSERT_STATUS(tether_callback_new(t_main_interp(rt), bad[i].sig,
                                          never_called, NULL, &cb),
                      TETHER_ESIGNATURE);
        ASSERT_CONTAINS(tether_last_error(), bad[i].says);
        ASSERT_EQ(cb, 77);
    }
    char many[256] = "void(";
    for (int i = 0; i < 33; i++)
        strcat(many, i ? ",i8" : "i8");
    strcat(many, ")");
    ASSERT_STATUS(tether_ffi_call(fn_addr(add_i32), many, NULL, NULL),
                  TETHER_ESIGNATURE);
    ASSERT_CONTAINS(tether_last_error(), "more than 32 arguments");
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * Every type, both directions
 * ---------------------------------------------------------------------- */

#define IDENTITY(T, name) static T id_##name(T x) { return x; }
IDENTITY(int8_t, i8)
IDENTITY(uint8_t, u8)
IDENTITY(int16_t, i16)
IDENTITY(uint16_t, u16)
IDENTITY(int32_t, i32)
IDENTITY(uint32_t, u32)
IDENTITY(int64_t, i64)
IDENTITY(uint64_t, u64)
IDENTITY(float, f32)
IDENTITY(double, f64)
IDENTITY(void *, ptr)
IDENTITY(const char *, str)

/* One type under test: its signature, an identity function, and the
   extreme values it must carry unchanged. */
struct typecase {
    const char *sig;
    size_t size;
    void *identity;
    const void *values;
    size_t nvalues;
};

static const int8_t v_i8[] = {INT8_MIN, -1, 0, INT8_MAX};
static const uint8_t v_u8[] = {0, 1, 0x80, UINT8_MAX};
static const int16_t v_i16[] = {INT16_MIN, -1, INT16_MAX};
static const uint16_t v_u16[] = {0, 0x8000, UINT16_MAX};
static const int32_t v_i32[] = {INT32_MIN, -1, 0, INT32_MAX};
static const uint32_t v_u32[] = {0, 0x80000000u, UINT32_MAX};
static const int64_t v_i64[] = {INT64_MIN, -1, INT64_MAX};
static const uint64_t v_u64[] = {0, 0x8000000000000000ull, UINT64_MAX};
static const float v_f32[] = {-1.5f, FLT_MIN / 4, FLT_MAX, -0.0f};
static const double v_f64[] = {0.1, DBL_MIN / 4, -DBL_MAX, 1e300};
static char v_target[] = "target";
static void *const v_ptr[] = {NULL, v_target, (void *)(uintptr_t)UINTPTR_MAX};
static const char *const v_str[] = {"", "héllo", NULL};

static struct typecase typecases[12];

/* Fills typecases; function pointers go through memcpy (ISO C). */
static void init_typecases(void)
{
#define CASE(i, name, T)                                                      \
    do {                                                                      \
        T (*fn_)(T) = id_##name;                                              \
        typecases[i].sig = #name "(" #name ")";                               \
        typecases[i].size = sizeof(T);                                        \
        memcpy(&typecases[i].identity, &fn_, sizeof fn_);                     \
        typecases[i].values = v_##name;                                       \
        typecases[i].nvalues = sizeof v_##name / sizeof v_##name[0];          \
    } while (0)
    CASE(0, i8, int8_t);
    CASE(1, u8, uint8_t);
    CASE(2, i16, int16_t);
    CASE(3, u16, uint16_t);
    CASE(4, i32, int32_t);
    CASE(5, u32, uint32_t);
    CASE(6, i64, int64_t);
    CASE(7, u64, uint64_t);
    CASE(8, f32, float);
    CASE(9, f64, double);
    CASE(10, ptr, void *);
    CASE(11, str, const char *);
#undef CASE
}

TEST(ffi_call_round_trips_every_type)
{
    init_typecases();
    for (size_t t = 0; t < 12; t++) {
        const struct typecase *c = &typecases[t];
        for (size_t i = 0; i < c->nvalues; i++) {
            const unsigned char *in = (const unsigned char *)c->values + i * c->size;
            unsigned char out[8];
            memset(out, 0xa5, sizeof out);
            void *args[] = {(void *)in};
            ASSERT_OK(tether_ffi_call(c->identity, c->sig, args, out));
            if (memcmp(in, out, c->size) != 0)
                runner_fail(__FILE__, __LINE__, "%s: value %zu changed", c->sig, i);
            for (size_t k = c->size; k < sizeof out; k++)
                ASSERT_EQ(out[k], 0xa5); /* exactly the type's size written */
        }
    }
}

/* The guest side of "T(T)": copies the argument to the result. */
static int guest_identity(void **args, void *ret, void *userdata)
{
    ASSERT(tether_gil_held());
    memcpy(ret, args[0], *(size_t *)userdata);
    return TETHER_OK;
}

/* Calls the callback's code through libffi's caller side, the way any C
   caller would with a prototype; both sides are then exercised. */
static void check_callback_values(const struct typecase *c, void *code)
{
    for (size_t i = 0; i < c->nvalues; i++) {
        const unsigned char *in = (const unsigned char *)c->values + i * c->size;
        unsigned char out[8] = {0};
        void *args[] = {(void *)in};
        ASSERT_OK(tether_ffi_call(code, c->sig, args, out));
        if (memcmp(in, out, c->size) != 0)
            runner_fail(__FILE__, __LINE__, "callback %s: value %zu changed",
                        c->sig, i);
    }
}

struct foreign_check {
    const struct typecase *c;
    void *code;
};

static void *check_on_foreign_thread(void *arg)
{
    struct foreign_check *f = arg;
    ASSERT(!tether_gil_held());
    check_callback_values(f->c, f->code);
    ASSERT(!tether_gil_held());
    return NULL;
}

TEST(callbacks_round_trip_every_type_on_any_thread)
{
    init_typecases();
    tether_runtime rt = t_runtime(NULL);
    for (size_t t = 0; t < 12; t++) {
        const struct typecase *c = &typecases[t];
        tether_callback cb;
        ASSERT_OK(tether_callback_new(t_main_interp(rt), c->sig, guest_identity,
                                      (void *)&c->size, &cb));
        struct foreign_check f = {c, tether_callback_code(cb)};
        check_callback_values(c, f.code); /* holding the GIL: nests */
        t_run_foreign(check_on_foreign_thread, &f);
        ASSERT_OK(tether_callback_free(cb));
    }
    t_finalize(rt);
}

static double mix(int8_t a, uint16_t b, int32_t c, uint64_t d, float e, double f,
                  void *g, const char *h)
{
    return a + b + c + (double)d + e + f + (g ? 1000 : 0) + (double)strlen(h);
}

static int guest_mix(void **args, void *ret, void *userdata)
{
    (void)userdata;
    *(double *)ret = mix(*(int8_t *)args[0], *(uint16_t *)args[1],
                         *(int32_t *)args[2], *(uint64_t *)args[3],
                         *(float *)args[4], *(double *)args[5],
                         *(void **)args[6], *(const char **)args[7]);
    return TETHER_OK;
}

TEST(mixed_arguments_travel_in_order)
{
    static const char sig[] = "f64(i8,u16,i32,u64,f32,f64,ptr,str)";
    tether_runtime rt = t_runtime(NULL);
    int8_t a = -3;
    uint16_t b = 60000;
    int32_t c = -70000;
    uint64_t d = 1ull << 40;
    float e = 0.5f;
    double f = 0.25;
    void *g = &a;
    const char *h = "four";
    void *args[] = {&a, &b, &c, &d, &e, &f, &g, &h};
    double want = mix(a, b, c, d, e, f, g, h), got = 0;

    double (*mix_fn)(int8_t, uint16_t, int32_t, uint64_t, float, double, void *,
                     const char *) = mix;
    void *addr;
    memcpy(&addr, &mix_fn, sizeof addr);
    ASSERT_OK(tether_ffi_call(addr, sig, args, &got));
    ASSERT(got == want);

    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), sig, guest_mix, NULL, &cb));
    CODE(mix_fn, cb);
    ASSERT(mix_fn(a, b, c, d, e, f, g, h) == want);
    ASSERT_OK(tether_callback_free(cb));
    t_finalize(rt);
}

static int g_void_calls;
static void count_call(void) { g_void_calls++; }

TEST(void_functions_without_arguments)
{
    void (*fn)(void) = count_call;
    void *addr;
    memcpy(&addr, &fn, sizeof addr);
    ASSERT_OK(tether_ffi_call(addr, "void()", NULL, NULL));
    ASSERT_OK(tether_ffi_call(addr, " void ( void ) ", NULL, NULL));
    ASSERT_EQ(g_void_calls, 2);
}

/* ------------------------------------------------------------------------
 * Callbacks and threads
 * ---------------------------------------------------------------------- */

static int64_t g_calls; /* not atomic: only touched holding the GIL */

static int guest_count(void **args, void *ret, void *userdata)
{
    (void)userdata;
    g_calls++;
    *(int32_t *)ret = *(int32_t *)args[0] + 1;
    return TETHER_OK;
}

static void *call_many_times(void *arg)
{
    int32_t (*code)(int32_t);
    memcpy(&code, &arg, sizeof code);
    for (int32_t i = 0; i < 1000; i++)
        ASSERT_EQ(code(i), i + 1);
    return NULL;
}

TEST(native_threads_call_a_callback_exactly)
{
    tether_runtime rt = t_runtime(NULL);
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32(i32)", guest_count,
                                  NULL, &cb));
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        th[i] = t_pthread(call_many_times, tether_callback_code(cb));
    TETHER_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 8; i++)
        t_pthread_join(th[i]);
    TETHER_END_ALLOW_THREADS
    ASSERT_EQ(g_calls, 8 * 1000);
    ASSERT_OK(tether_callback_free(cb));
    t_finalize(rt);
}

/* Calls the inner callback (userdata) from inside the outer one. */
static int guest_outer(void **args, void *ret, void *userdata)
{
    int32_t (*inner)(int32_t);
    memcpy(&inner, &userdata, sizeof inner);
    *(int32_t *)ret = 10 * inner(*(int32_t *)args[0]);
    return TETHER_OK;
}

TEST(callbacks_nest)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    tether_callback inner, outer;
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", guest_count, NULL, &inner));
    ASSERT_OK(tether_callback_new(interp, "i32(i32)", guest_outer,
                                  tether_callback_code(inner), &outer));
    int32_t (*code)(int32_t);
    CODE(code, outer);
    ASSERT_EQ(code(4), 50);
    ASSERT_OK(tether_callback_free(outer));
    ASSERT_OK(tether_callback_free(inner));
    t_finalize(rt);
}

static int guest_errno(void **args, void *ret, void *userdata)
{
    (void)args, (void)userdata;
    *(int32_t *)ret = errno; /* what the caller left */
    errno = ERANGE;
    return TETHER_OK;
}

TEST(errno_passes_through_callbacks)
{
    tether_runtime rt = t_runtime(NULL);
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32()", guest_errno, NULL, &cb));
    int32_t (*code)(void);
    CODE(code, cb);
    errno = EDOM;
    ASSERT_EQ(code(), EDOM);
    ASSERT_EQ(errno, ERANGE);
    ASSERT_OK(tether_callback_free(cb));
    t_finalize(rt);
}

static void clobbering_hook(tether_thread t, int code, const char *message,
                            void *ud)
{
    (void)t, (void)code, (void)message;
    ++*(int *)ud;
    errno = EBADF; /* a host's hook may well leave errno changed */
}

static int guest_fails_with_errno(void **args, void *ret, void *userdata)
{
    (void)args, (void)ret, (void)userdata;
    errno = ERANGE;
    return TETHER_EINVAL;
}

/* What runs after the guest (here the excepthook reporting its failure)
   does not change the errno the caller sees: the guest's. */
TEST(errno_survives_the_excepthook)
{
    int calls = 0;
    tether_config cfg = {.size = sizeof cfg, .excepthook = clobbering_hook,
                         .excepthook_ud = &calls};
    tether_runtime rt = t_runtime(&cfg);
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32()",
                                  guest_fails_with_errno, NULL, &cb));
    int32_t (*code)(void);
    CODE(code, cb);
    errno = EDOM;
    ASSERT_EQ(code(), 0); /* a failed guest returns zero */
    ASSERT_EQ(errno, ERANGE);
    ASSERT_EQ(calls, 1);
    ASSERT_OK(tether_callback_free(cb));
    t_finalize(rt);
}

struct hook_record {
    int calls;
    int code;
    char message[256];
};

static void record_hook(tether_thread t, int code, const char *message, void *ud)
{
    struct hook_record *h = ud;
    (void)t;
    h->calls++;
    h->code = code;
    snprintf(h->message, sizeof h->message, "%s", message);
}

static int guest_fails(void **args, void *ret, void *userdata)
{
    (void)args, (void)userdata;
    *(double *)ret = 99; /* must not reach the caller */
    return TETHER_EINVAL;
}

TEST(guest_errors_give_zero_and_reach_the_excepthook)
{
    struct hook_record h = {0};
    tether_config cfg = {sizeof cfg, 0, 0, record_hook, &h};
    tether_runtime rt = t_runtime(&cfg);
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "f64(i32)", guest_fails,
                                  NULL, &cb));
    double (*code)(int32_t);
    CODE(code, cb);
    ASSERT(code(1) == 0.0);
    ASSERT(code(2) == 0.0);
    ASSERT_EQ(h.calls, 2);
    ASSERT_EQ(h.code, TETHER_EINVAL);
    ASSERT_CONTAINS(h.message, "callback f64(i32) failed with EINVAL");
    ASSERT_OK(tether_callback_free(cb));
    t_finalize(rt);
}

/* A call that stays in the guest until `go` is set. */
struct slow_call {
    tether_event go;
    atomic_int entered, finished, freeing;
    int *owned; /* freed by the test as soon as tether_callback_free returns */
    tether_callback cb;
    int result, finished_when_freed;
};

static int guest_slow(void **args, void *ret, void *userdata)
{
    struct slow_call *s = userdata;
    (void)args;
    atomic_store(&s->entered, 1);
    ASSERT_OK(tether_event_wait(s->go, -1)); /* releases the GIL */
    *(int32_t *)ret = *s->owned;
    atomic_store(&s->finished, 1);
    return TETHER_OK;
}

static void *slow_caller(void *arg)
{
    struct slow_call *s = arg;
    int32_t (*code)(void);
    CODE(code, s->cb);
    s->result = code();
    return NULL;
}

static void *slow_freer(void *arg)
{
    struct slow_call *s = arg;
    atomic_store(&s->freeing, 1);
    ASSERT_OK(tether_callback_free(s->cb));
    s->finished_when_freed = atomic_load(&s->finished);
    free(s->owned); /* the guarantee under test: the call no longer runs */
    return NULL;
}

TEST(free_waits_for_a_call_running_on_another_thread)
{
    tether_runtime rt = t_runtime(NULL);
    struct slow_call s = {0};
    ASSERT((s.owned = malloc(sizeof *s.owned)) != NULL);
    *s.owned = 31;
    ASSERT_OK(tether_event_new(&s.go));
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32()", guest_slow, &s, &s.cb));
    pthread_t caller = t_pthread(slow_caller, &s);
    while (!atomic_load(&s.entered))
        ASSERT_OK(tether_sleep(MS(1)));
    pthread_t freer = t_pthread(slow_freer, &s);
    while (!atomic_load(&s.freeing))
        ASSERT_OK(tether_sleep(MS(1)));
    ASSERT_OK(tether_sleep(MS(20))); /* most likely waiting in the free by now */
    ASSERT_OK(tether_event_set(s.go));
    TETHER_BEGIN_ALLOW_THREADS
    t_pthread_join(freer);
    t_pthread_join(caller);
    TETHER_END_ALLOW_THREADS
    ASSERT_EQ(s.finished_when_freed, 1);
    ASSERT_EQ(s.result, 31);
    ASSERT_OK(tether_event_free(s.go));
    t_finalize(rt);
}

static int guest_frees_itself(void **args, void *ret, void *userdata)
{
    tether_callback *self = userdata;
    (void)args;
    ASSERT_OK(tether_callback_free(*self));
    ASSERT(tether_callback_code(*self) == NULL); /* the handle is gone... */
    *(int32_t *)ret = 5; /* ...but this call completes */
    return TETHER_OK;
}

TEST(a_callback_may_free_itself)
{
    tether_runtime rt = t_runtime(NULL);
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32()", guest_frees_itself,
                                  &cb, &cb));
    int32_t (*code)(void);
    CODE(code, cb);
    ASSERT_EQ(code(), 5);
    ASSERT_STATUS(tether_callback_free(cb), TETHER_EBADHANDLE);
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * Destroy notification (tether_callback_on_free)
 * ---------------------------------------------------------------------- */

/* What an on_free function saw. */
struct freed {
    atomic_int calls;
    pthread_t thread;  /* the thread of the last call */
    int during_call;   /* it ran while a call of the callback was running */
    atomic_int running; /* calls of the callback inside fn */
};

static void note_freed(void *ud)
{
    struct freed *f = ud;
    f->thread = pthread_self();
    if (atomic_load(&f->running) > 0)
        f->during_call = 1;
    atomic_fetch_add(&f->calls, 1);
}

static void wrong_on_free(void *ud)
{
    (void)ud;
    ASSERT(!"a replaced on_free function was called");
}

TEST(on_free_runs_once_after_the_last_owner)
{
    tether_runtime rt = t_runtime(NULL);
    struct freed f = {0};
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32(i32)", guest_count,
                                  NULL, &cb));
    ASSERT_OK(tether_callback_on_free(cb, wrong_on_free, NULL));
    ASSERT_OK(tether_callback_on_free(cb, note_freed, &f)); /* replaces */
    ASSERT_OK(tether_callback_retain(cb));
    ASSERT_OK(tether_callback_free(cb)); /* not the last owner */
    ASSERT_EQ(atomic_load(&f.calls), 0);
    int32_t (*code)(int32_t);
    CODE(code, cb);
    ASSERT_EQ(code(1), 2); /* still runs fn */
    ASSERT_EQ(atomic_load(&f.calls), 0);
    ASSERT_OK(tether_callback_release(cb)); /* the last: destroyed here */
    ASSERT_EQ(atomic_load(&f.calls), 1);
    ASSERT(pthread_equal(f.thread, pthread_self()));
    ASSERT_STATUS(tether_callback_on_free(cb, note_freed, &f), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_callback_release(cb), TETHER_EBADHANDLE);
    ASSERT_EQ(atomic_load(&f.calls), 1);

    /* Bad arguments change nothing. */
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32(i32)", guest_count,
                                  NULL, &cb));
    ASSERT_OK(tether_callback_on_free(cb, note_freed, &f));
    ASSERT_STATUS(tether_callback_on_free(cb, NULL, NULL), TETHER_EINVAL);
    ASSERT_CONTAINS(tether_last_error(), "fn must not be NULL");
    ASSERT_STATUS(tether_callback_on_free(0, note_freed, &f), TETHER_EBADHANDLE);
    ASSERT_OK(tether_callback_free(cb));
    ASSERT_EQ(atomic_load(&f.calls), 2); /* the NULL did not replace it */
    t_finalize(rt);
}

struct release_on {
    tether_callback cb;
    pthread_t self;
};

static void *release_elsewhere(void *arg)
{
    struct release_on *r = arg;
    r->self = pthread_self();
    ASSERT_OK(tether_callback_release(r->cb));
    return NULL;
}

TEST(on_free_runs_on_the_thread_of_the_last_release)
{
    tether_runtime rt = t_runtime(NULL);
    struct freed f = {0};
    struct release_on r = {0};
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32(i32)", guest_count,
                                  NULL, &r.cb));
    ASSERT_OK(tether_callback_on_free(r.cb, note_freed, &f));
    ASSERT_OK(tether_callback_retain(r.cb)); /* a plugin's worker, say */
    ASSERT_OK(tether_callback_free(r.cb));   /* the host lets go first */
    ASSERT_EQ(atomic_load(&f.calls), 0);
    pthread_t t = t_pthread(release_elsewhere, &r);
    TETHER_BEGIN_ALLOW_THREADS
    t_pthread_join(t);
    TETHER_END_ALLOW_THREADS
    ASSERT_EQ(atomic_load(&f.calls), 1);
    ASSERT(pthread_equal(f.thread, r.self));
    t_finalize(rt);
}

struct self_freeing {
    tether_callback cb;
    struct freed f;
    int seen_inside; /* f.calls as the call was about to return */
};

static int guest_releases_itself(void **args, void *ret, void *userdata)
{
    struct self_freeing *s = userdata;
    (void)args;
    atomic_fetch_add(&s->f.running, 1);
    ASSERT_OK(tether_callback_release(s->cb)); /* the last owner */
    s->seen_inside = atomic_load(&s->f.calls);
    *(int32_t *)ret = 9;
    atomic_fetch_sub(&s->f.running, 1);
    return TETHER_OK;
}

TEST(on_free_waits_for_the_running_call)
{
    tether_runtime rt = t_runtime(NULL);
    struct self_freeing s = {0};
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32()", guest_releases_itself,
                                  &s, &s.cb));
    ASSERT_OK(tether_callback_on_free(s.cb, note_freed, &s.f));
    int32_t (*code)(void);
    CODE(code, s.cb);
    ASSERT_EQ(code(), 9);
    ASSERT_EQ(s.seen_inside, 0);  /* not while the call ran... */
    ASSERT_EQ(atomic_load(&s.f.calls), 1); /* ...but once it returned */
    ASSERT_EQ(s.f.during_call, 0);
    ASSERT(pthread_equal(s.f.thread, pthread_self()));
    t_finalize(rt);
}

/* ------------------------------------------------------------------------
 * Finalize
 * ---------------------------------------------------------------------- */

/* Runs fn(arg) with stderr captured; returns what was written. */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    int fds[2], saved = dup(2);
    ASSERT(saved >= 0 && pipe(fds) == 0);
    fflush(stderr);
    ASSERT(dup2(fds[1], 2) == 2);
    close(fds[1]);
    fn(arg);
    fflush(stderr);
    ASSERT(dup2(saved, 2) == 2);
    close(saved);
    char *text = t_read_all(fds[0]);
    close(fds[0]);
    return text;
}

static int g_guest_ran;

static int guest_marks(void **args, void *ret, void *userdata)
{
    (void)args, (void)userdata;
    g_guest_ran++;
    *(int32_t *)ret = 1;
    return TETHER_OK;
}

static void call_twice(void *arg)
{
    int32_t (*code)(void);
    memcpy(&code, &arg, sizeof code);
    ASSERT_EQ(code(), 0);
    ASSERT_EQ(code(), 0);
}

static size_t count_of(const char *text, const char *what)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

TEST(calls_after_finalize_return_zero_and_report_once)
{
    tether_runtime rt = t_runtime(NULL);
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32()", guest_marks, NULL, &cb));
    void *code = tether_callback_code(cb);
    t_finalize(rt);
    char *err = capture_stderr(call_twice, code);
    ASSERT_EQ(g_guest_ran, 0);
    ASSERT_EQ(count_of(err, "callback i32() was called after its interpreter "
                            "was finalized"), 1);
    free(err);
    ASSERT_OK(tether_callback_free(cb));
}

static atomic_int g_zero_seen;

static void *call_until_zero(void *arg)
{
    int32_t (*code)(int32_t);
    memcpy(&code, &arg, sizeof code);
    while (code(1) != 0)
        ;
    atomic_fetch_add(&g_zero_seen, 1);
    return NULL;
}

TEST(finalize_while_native_threads_call_back)
{
    tether_runtime rt = t_runtime(NULL);
    tether_callback cb;
    ASSERT_OK(tether_callback_new(t_main_interp(rt), "i32(i32)", guest_count,
                                  NULL, &cb));
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        th[i] = t_pthread(call_until_zero, tether_callback_code(cb));
    while (g_calls < 200) /* read holding the GIL */
        ASSERT_OK(tether_sleep(MS(1)));
    t_finalize(rt);
    for (int i = 0; i < 4; i++)
        t_pthread_join(th[i]);
    ASSERT_EQ(atomic_load(&g_zero_seen), 4);
    ASSERT_OK(tether_callback_free(cb));
}

/* ------------------------------------------------------------------------
 * Misuse and memory
 * ---------------------------------------------------------------------- */

TEST(bad_arguments_get_errors)
{
    tether_runtime rt = t_runtime(NULL);
    tether_interp interp = t_main_interp(rt);
    tether_callback cb;
    int32_t a = 1, r;
    void *one[] = {&a}, *none[] = {NULL};
    ASSERT_STATUS(tether_ffi_call(NULL, "i32(i32)", one, &r), TETHER_EINVAL);
    ASSERT_STATUS(tether_ffi_call(fn_addr(add_i32), NULL, one, &r), TETHER_EINVAL);
    ASSERT_STATUS(tether_ffi_call(fn_addr(add_i32), "i32(i32,i32)", NULL, &r),
                  TETHER_EINVAL);
    ASSERT_STATUS(tether_ffi_call(fn_addr(add_i32), "i32(i32)", none, &r),
                  TETHER_EINVAL);
    ASSERT_CONTAINS(tether_last_error(), "argument 1 has no value");

    ASSERT_STATUS(tether_callback_new(interp, NULL, never_called, NULL, &cb),
                  TETHER_EINVAL);
    ASSERT_STATUS(tether_callback_new(interp, "void()", NULL, NULL, &cb),
                  TETHER_EINVAL);
    ASSERT_STATUS(tether_callback_new(interp, "void()", never_called, NULL, NULL),
                  TETHER_EINVAL);
    ASSERT_STATUS(tether_callback_new(0, "void()", never_called, NULL, &cb),
                  TETHER_EBADHANDLE);
    ASSERT(tether_callback_code(0) == NULL);
    ASSERT_OK(tether_callback_free(0));

    ASSERT_OK(tether_callback_new(interp, "void()", never_called, NULL, &cb));
    ASSERT_OK(tether_callback_free(cb));
    ASSERT_STATUS(tether_callback_free(cb), TETHER_EBADHANDLE);
    ASSERT(tether_callback_code(cb) == NULL);
    t_finalize(rt);
}

TEST(callback_new_survives_every_allocation_failure)
{
    tether_runtime rt = t_runtime(NULL);
    tether_callback cb = 0;
    int rc;
    for (uint64_t n = 1;; n++) {
        ASSERT(n < 100);
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, n, 1));
        rc = tether_callback_new(t_main_interp(rt), "i32(i32)", guest_count, NULL, &cb);
        ASSERT_OK(tether_fault_inject(TETHER_FAULT_ALLOC, 0, 0));
        if (rc == TETHER_OK)
            break;
        ASSERT_STATUS(rc, TETHER_ENOMEM);
    }
    int32_t (*code)(int32_t);
    CODE(code, cb);
    ASSERT_EQ(code(1), 2);
    ASSERT_OK(tether_callback_free(cb));
    t_finalize(rt);
}

RUNNER_MAIN(TEST_ENTRY(malformed_signatures_name_the_column),
            TEST_ENTRY(ffi_call_round_trips_every_type),
            TEST_ENTRY(callbacks_round_trip_every_type_on_any_thread),
            TEST_ENTRY(mixed_arguments_travel_in_order),
            TEST_ENTRY(void_functions_without_arguments),
            TEST_ENTRY(native_threads_call_a_callback_exactly),
            TEST_ENTRY(callbacks_nest),
            TEST_ENTRY(on_free_runs_once_after_the_last_owner),
            TEST_ENTRY(on_free_runs_on_the_thread_of_the_last_release),
            TEST_ENTRY(on_free_waits_for_the_running_call),
            TEST_ENTRY(errno_passes_through_callbacks),
            TEST_ENTRY(errno_survives_the_excepthook),
            TEST_ENTRY(guest_errors_give_zero_and_reach_the_excepthook),
            TEST_ENTRY(free_waits_for_a_call_running_on_another_thread),
            TEST_ENTRY(a_callback_may_free_itself),
            TEST_ENTRY(calls_after_finalize_return_zero_and_report_once),
            TEST_ENTRY(finalize_while_native_threads_call_back),
            TEST_ENTRY(bad_arguments_get_errors),
            TEST_ENTRY(callback_new_survives_every_allocation_failure))
