/*
 * test_host_api.c - the host table a plugin receives is the exported API.
 *
 * TETHER_HOST_API_MEMBERS (generated from tether_plugin.h by
 * check_host_api.py) lists the table's members in order; the static check
 * (check_host_api.py check) ties that order and each member's type to
 * abi/tether.map and the function declarations.  This program checks the
 * live table: every member points at the exported function of the same
 * name (asked of the dynamic linker, so that it holds however the
 * executable was linked), and TETHER_API_HAS answers right for a table
 * from an older host, i.e. one whose size ends before some member.
 */
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

#include <tether/tether_plugin.h>

#include "host_api_members.h"
#include "runner.h"

/* The offset of every member, in the order of the list. */
static const size_t member_offsets[] = {
#define OFFSET(m) offsetof(tether_host_api, m),
    TETHER_HOST_API_MEMBERS(OFFSET)
#undef OFFSET
};
#define N_MEMBERS (sizeof member_offsets / sizeof member_offsets[0])

/* The name of the dynamic symbol at `fn`, or "?". */
static const char *symbol_at(void (*fn)(void))
{
    Dl_info info;
    void *addr;

    memcpy(&addr, &fn, sizeof addr);
    return dladdr(addr, &info) && info.dli_sname ? info.dli_sname : "?";
}

/* Loads the probe plugin into a new runtime and returns the table its
   init received. */
static const tether_host_api *live_table(tether_runtime *rt)
{
    tether_plugin p = 0;
    void *sym = NULL;

    ASSERT_OK(tether_runtime_create(NULL, rt));
    ASSERT_OK(tether_plugin_load(*rt, HOST_PROBE_PATH, &p));
    ASSERT_OK(tether_plugin_symbol(p, "host_probe_table", &sym));
    ASSERT(sym != NULL);
    return *(const tether_host_api *const *)sym;
}

TEST(host_table_holds_every_exported_function)
{
    tether_runtime rt = 0;
    const tether_host_api *api = live_table(&rt);

    ASSERT(api != NULL);
    ASSERT_EQ(api->size, sizeof(tether_host_api));
#define SAME_FUNCTION(m)                                                      \
    ASSERT_STREQ(symbol_at((void (*)(void))api->m), "tether_" #m);
    TETHER_HOST_API_MEMBERS(SAME_FUNCTION)
#undef SAME_FUNCTION
    ASSERT_OK(tether_runtime_finalize(rt, -1));
}

TEST(table_members_are_laid_out_in_order)
{
    size_t k;

    ASSERT_EQ(member_offsets[0], sizeof(size_t));
    for (k = 1; k < N_MEMBERS; k++)
        ASSERT(member_offsets[k] > member_offsets[k - 1]);
    ASSERT(member_offsets[N_MEMBERS - 1] < sizeof(tether_host_api));
}

TEST(older_host_lacks_newer_members)
{
    tether_host_api older;
    size_t k;

    /* A host whose table ends just before member k has every member before
       k and none from k on; k == N_MEMBERS is the current host. */
    for (k = 0; k <= N_MEMBERS; k++) {
        int has[N_MEMBERS];
        size_t j = 0;

        memset(&older, 0, sizeof older);
        older.size = k < N_MEMBERS ? member_offsets[k] : sizeof older;
#define PROBE(m) has[j++] = TETHER_API_HAS(&older, m);
        TETHER_HOST_API_MEMBERS(PROBE)
#undef PROBE
        for (j = 0; j < N_MEMBERS; j++)
            ASSERT_EQ(has[j] != 0, j < k);
    }
}

RUNNER_MAIN(TEST_ENTRY(host_table_holds_every_exported_function),
            TEST_ENTRY(table_members_are_laid_out_in_order),
            TEST_ENTRY(older_host_lacks_newer_members))
