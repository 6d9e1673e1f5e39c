/*
 * consumer.c - a program built against an installed libtether.
 *
 * It checks that the headers and the library it found agree on the ABI,
 * runs one thread through the runtime, and prints the path of the library
 * it actually loaded so that the test can tell the installed copy from the
 * build tree's.
 */
#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <string.h>

#include <tether/tether.h>

/* The thread's body: leaves a mark for main to check. */
static int body(void *arg)
{
    *(int *)arg = 42;
    return TETHER_OK;
}

/* Remembers the path of the loaded libtether. */
static int find_tether(struct dl_phdr_info *info, size_t size, void *out)
{
    (void)size;
    if (info->dlpi_name && strstr(info->dlpi_name, "/libtether.so")) {
        *(const char **)out = info->dlpi_name;
        return 1;
    }
    return 0;
}

/* Reports a failed step; returns main's exit status. */
static int fail(const char *what, int rc)
{
    fprintf(stderr, "consumer: %s: %s (%s)\n", what, tether_status_name(rc),
            tether_last_error());
    return 1;
}

/* Returns from main with 1 unless `call` succeeds. */
#define TRY(call)                                                             \
    do {                                                                      \
        int try_rc = (call);                                                  \
        if (try_rc != TETHER_OK)                                              \
            return fail(#call, try_rc);                                       \
    } while (0)

int main(void)
{
    const char *path = NULL;
    tether_runtime rt = 0;
    tether_interp interp = 0;
    tether_thread t = 0;
    int value = 0;

    if (tether_abi_version() != TETHER_ABI_VERSION)
        return fail("the header and the library disagree on the ABI", 0);
    TRY(tether_runtime_create(NULL, &rt));
    TRY(tether_runtime_main_interp(rt, &interp));
    TRY(tether_thread_start(interp, body, &value, NULL, &t));
    TRY(tether_thread_join(t, -1));
    TRY(tether_thread_release(t));
    TRY(tether_runtime_finalize(rt, -1));
    if (value != 42)
        return fail("the thread did not run", 0);
    if (!dl_iterate_phdr(find_tether, &path))
        return fail("libtether is not among the loaded objects", 0);
    printf("tether %s from %s\n", tether_version_string(), path);
    return 0;
}
