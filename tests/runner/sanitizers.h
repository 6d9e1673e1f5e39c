/*
 * sanitizers.h - which sanitizer this test is built with, as two 0/1
 * macros, for the few cases a sanitizer cannot follow (gcc defines
 * __SANITIZE_*__, clang answers __has_feature).  Header-only: the
 * clang-built fuzzer includes it by its relative path too.
 *
 *   TEST_SANITIZER_THREAD   ThreadSanitizer: a fork child of a
 *                           multi-threaded process cannot start threads
 *                           (its registry keeps the vanished ones and
 *                           reports "dup thread with used id").
 *   TEST_SANITIZER_ADDRESS  AddressSanitizer: its allocator can deadlock
 *                           in a fork child of a process whose threads
 *                           were allocating.
 */
#ifndef TETHER_TEST_SANITIZERS_H
#define TETHER_TEST_SANITIZERS_H

#if defined(__SANITIZE_THREAD__)
#define TEST_SANITIZER_THREAD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_SANITIZER_THREAD 1
#endif
#endif
#ifndef TEST_SANITIZER_THREAD
#define TEST_SANITIZER_THREAD 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TEST_SANITIZER_ADDRESS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_SANITIZER_ADDRESS 1
#endif
#endif
#ifndef TEST_SANITIZER_ADDRESS
#define TEST_SANITIZER_ADDRESS 0
#endif

#endif
