/*
 * test_handle_table.c - the handle table's generations (core/handle.h).
 *
 * This program compiles the core in (tests/unit/CMakeLists.txt), so it can
 * reach the table's own functions and its test hook as well as the public
 * API.  It checks that a stale handle stays stale however many handles the
 * same slot issues after it: the 24-bit generation of the old layout
 * wrapped after 16,777,215 new/free cycles of one slot (about a second), and
 * the stale lock handle then reached the new lock.  Generations are now 32
 * bits, and a slot that has issued the last one is retired.
 */
#include <tether/tether.h>

#include "handle.h"
#include "runner.h"

#define SECONDS(n) ((int64_t)(n) * 1000000000)

static int g_obj; /* the object the internal cases register */

/* The slot index a handle names: the low 24 bits (handle.h).  The bits are
   not part of the ABI; this test of the table may look at them. */
static uint32_t slot_of(uint64_t h) { return (uint32_t)(h & 0xffffff); }

/* The case through the public API: one slot cycled past the old
   generation's range (2^24 cycles), the first handle is still refused,
   and releasing it does not unlock the lock that now lives in its slot. */
TEST(stale_lock_after_2_24_cycles)
{
    tether_lock stale, l;
    ASSERT_OK(tether_lock_new(&stale));
    ASSERT_OK(tether_lock_free(stale));
    for (uint32_t i = 0; i < (1u << 24); i++) {
        ASSERT_OK(tether_lock_new(&l));
        if (slot_of(l) != slot_of(stale) || l == stale)
            runner_fail(__FILE__, __LINE__, "cycle %u: handle 0x%016llx, "
                        "stale 0x%016llx", i, (unsigned long long)l,
                        (unsigned long long)stale);
        ASSERT_OK(tether_lock_free(l));
    }
    ASSERT_OK(tether_lock_new(&l));
    ASSERT_EQ(slot_of(l), slot_of(stale));
    ASSERT_OK(tether_lock_acquire(l, 0));
    ASSERT_STATUS(tether_lock_release(stale), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_lock_acquire(l, 0), TETHER_ETIMEDOUT); /* still held */
    ASSERT_STATUS(tether_lock_free(stale), TETHER_EBADHANDLE);
    ASSERT_OK(tether_lock_release(l));
    ASSERT_OK(tether_lock_free(l));
}

/* A slot that issued its last generation is retired when that handle
   dies: the handle stays stale and the slot is never handed out again. */
TEST(exhausted_slot_is_retired)
{
    uint64_t first, last, h;
    ASSERT_OK(handle_new(HT_LOCK, &g_obj, NULL, NULL, &first));
    ASSERT_OK(handle_close(first, HT_LOCK));
    uint32_t slot = slot_of(first);

    /* The hook refuses anything but a dead handle of the slot's current
       generation, and the last generation itself. */
    ASSERT_EQ(handle_test_set_generation(first, 0xffffffffu), -1);
    ASSERT_EQ(handle_test_set_generation(first ^ (1ull << 30), 7), -1);
    ASSERT_EQ(handle_test_set_generation(first, 0xfffffffeu), 0);

    /* The free list is last-in first-out: the same slot, last generation. */
    ASSERT_OK(handle_new(HT_LOCK, &g_obj, NULL, NULL, &last));
    ASSERT_EQ(slot_of(last), slot);
    ASSERT_EQ((last >> 24) & 0xffffffffu, 0xffffffffu);
    ASSERT(handle_get(last, HT_LOCK) == &g_obj);
    handle_put(last);
    ASSERT_EQ(handle_test_set_generation(last, 5), -1); /* open */
    ASSERT_OK(handle_close(last, HT_LOCK));

    /* Retired: dead for good, and never issued again. */
    ASSERT(handle_get(last, HT_LOCK) == NULL);
    ASSERT(handle_get_any(last, HT_LOCK) == NULL);
    ASSERT_STATUS(handle_close(last, HT_LOCK), TETHER_EBADHANDLE);
    ASSERT_EQ(handle_test_set_generation(last, 5), -1);
    for (int i = 0; i < 5000; i++) {
        ASSERT_OK(handle_new(HT_LOCK, &g_obj, NULL, NULL, &h));
        ASSERT(slot_of(h) != slot);
        ASSERT_OK(handle_close(h, HT_LOCK));
    }
    /* What a wrapped generation would have looked like is refused too. */
    uint64_t wrapped = (last & ~(0xffffffffull << 24)) | 1ull << 24;
    ASSERT(handle_get(wrapped, HT_LOCK) == NULL);
    ASSERT(handle_get(first, HT_LOCK) == NULL);
}

/* The same through the public API: a lock freed in its slot's last
   generation stays stale, and new locks get other slots. */
TEST(exhausted_slot_public_api)
{
    tether_lock l, last, other;
    ASSERT_OK(tether_lock_new(&l));
    ASSERT_OK(tether_lock_free(l));
    ASSERT_EQ(handle_test_set_generation(l, 0xfffffffeu), 0);
    ASSERT_OK(tether_lock_new(&last));
    ASSERT_EQ(slot_of(last), slot_of(l));
    ASSERT_OK(tether_lock_acquire(last, 0));
    ASSERT_OK(tether_lock_release(last));
    ASSERT_OK(tether_lock_free(last));
    ASSERT_OK(tether_lock_new(&other));
    ASSERT(slot_of(other) != slot_of(last));
    ASSERT_OK(tether_lock_acquire(other, 0));
    ASSERT_STATUS(tether_lock_release(last), TETHER_EBADHANDLE);
    ASSERT_STATUS(tether_lock_acquire(other, 0), TETHER_ETIMEDOUT);
    ASSERT_OK(tether_lock_release(other));
    ASSERT_OK(tether_lock_free(other));
}

RUNNER_MAIN(TEST_ENTRY_T(stale_lock_after_2_24_cycles, 240),
            TEST_ENTRY(exhausted_slot_is_retired),
            TEST_ENTRY(exhausted_slot_public_api))
