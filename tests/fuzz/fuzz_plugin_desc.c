/*
 * fuzz_plugin_desc.c - the libFuzzer target for plugin descriptor
 * validation (core/plugindesc.c, what the loader checks before it trusts
 * what tether_plugin_entry returned).
 *
 * What is fuzzed.  A descriptor holds pointers: the validator dereferences
 * `name` (its first character) and must never be handed a wild one, since
 * the loader cannot check a pointer either.  So the fuzzer controls every
 * byte of the descriptor image and how many of them are readable, and the
 * harness overwrites the name and version slots (when they lie inside the
 * readable bytes) with NULL or with pointers to NUL-terminated strings the
 * fuzzer also controls.  init and fini keep the fuzzer's bytes: the
 * validator never reads them.  The image goes into a heap block of exactly
 * the readable size, so that AddressSanitizer catches any read past it.
 *
 * Input layout (tests/fuzz/make_corpus.py writes the seeds):
 *
 *   byte 0     shape: bit 0 name = NULL, bit 1 version = NULL, bit 2 the
 *              entry returned NULL (no descriptor at all)
 *   byte 1     readable bytes, modulo sizeof(tether_plugin_desc) + 17
 *   byte 2     capacity of a second, small message buffer (modulo 64)
 *   then       the descriptor image (missing bytes are zero)
 *   then       name NUL version NUL path (missing parts are "")
 *
 * Properties checked on every input (abort() on a violation):
 *  - the validator reads nothing past the readable bytes (ASan);
 *  - its verdict is the one an independent restatement of the rules
 *    (oracle below) gives: the status, and the reason's phrase in the
 *    message; success leaves the message empty, a refusal names the path;
 *  - a smaller message buffer gets a NUL-terminated prefix of the same
 *    message and is never overrun.
 *
 * Built with clang -fsanitize=fuzzer when clang is available, and always as
 * a corpus replay program (replay.c) that runs the checked-in corpus.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plugindesc.h"

#define MAX_READABLE (sizeof(tether_plugin_desc) + 16)

struct input {
    const uint8_t *p, *end;
};

static uint8_t take_byte(struct input *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

/* The next NUL-terminated part of the input, copied; "" when none left. */
static char *take_string(struct input *in)
{
    const uint8_t *nul = memchr(in->p, 0, (size_t)(in->end - in->p));
    size_t n = nul ? (size_t)(nul - in->p) : (size_t)(in->end - in->p);
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, in->p, n);
    s[n] = '\0';
    in->p += nul ? n + 1 : n;
    return s;
}

/* Stores pointer `v` in the slot at `offset`, if the slot is readable. */
static void put_pointer(uint8_t *desc, size_t readable, size_t offset,
                        const char *v)
{
    if (offset + sizeof v <= readable)
        memcpy(desc + offset, &v, sizeof v);
}

/* The rules of docs/plugins.md, restated: the status the validator must
   give and a phrase its message must contain. */
static int oracle(const uint8_t *desc, size_t readable, const char **phrase)
{
    *phrase = "";
    if (!desc) {
        *phrase = "returned NULL: the plugin refused host ABI";
        return TETHER_EPLUGIN;
    }
    size_t size;
    if (readable < sizeof size) {
        *phrase = "too few to hold its size";
        return TETHER_EPLUGIN;
    }
    memcpy(&size, desc, sizeof size);
    if (size > readable) {
        *phrase = "of them can be read";
        return TETHER_EPLUGIN;
    }
    if (size < offsetof(tether_plugin_desc, flags)) {
        *phrase = "too small to hold even its ABI version";
        return TETHER_EPLUGIN;
    }
    uint32_t abi;
    memcpy(&abi, desc + offsetof(tether_plugin_desc, abi_version), sizeof abi);
    if (abi >> 16 != TETHER_ABI_MAJOR) {
        *phrase = "(another major version)";
        return TETHER_EVERSION;
    }
    if ((abi & 0xffff) > TETHER_ABI_MINOR) {
        *phrase = "(a newer minor version)";
        return TETHER_EVERSION;
    }
    if (size < offsetof(tether_plugin_desc, fini) + sizeof(void *)) {
        *phrase = "of tether ABI 1.0";
        return TETHER_EPLUGIN;
    }
    uint32_t flags;
    memcpy(&flags, desc + offsetof(tether_plugin_desc, flags), sizeof flags);
    if (flags & ~TETHER_PLUGIN_UNLOADABLE) {
        *phrase = "has unknown flags 0x";
        return TETHER_EPLUGIN;
    }
    const char *name;
    memcpy(&name, desc + offsetof(tether_plugin_desc, name), sizeof name);
    if (!name || !*name) {
        *phrase = "has no name";
        return TETHER_EPLUGIN;
    }
    return TETHER_OK;
}

static void check(const uint8_t *desc, size_t readable, const char *path,
                  size_t small)
{
    char msg[PLUGINDESC_MSG];
    memset(msg, 'x', sizeof msg);
    int rc = plugindesc_check(desc, readable, path, msg, sizeof msg);
    const char *phrase;
    if (rc != oracle(desc, readable, &phrase) || !memchr(msg, 0, sizeof msg))
        abort();
    /* A refusal names the path and says why, unless a long path pushed
       the reason past the end of the buffer. */
    size_t len = strlen(msg);
    if (rc == TETHER_OK ? len != 0
                        : len == 0 || (len < sizeof msg - 1 &&
                                       (!strstr(msg, phrase) ||
                                        !strstr(msg, path))))
        abort();
    /* The same, into a buffer of exactly `small` bytes (none: a guard
       byte that must stay as it is). */
    char guard = 'g';
    char *cut = small ? malloc(small) : &guard;
    if (!cut)
        abort();
    if (plugindesc_check(desc, readable, path, cut, small) != rc)
        abort();
    if (small == 0 ? guard != 'g'
                   : strlen(cut) != (len < small ? len : small - 1) ||
                         memcmp(cut, msg, strlen(cut)) != 0)
        abort();
    if (small)
        free(cut);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, data + size};
    uint8_t shape = take_byte(&in);
    size_t readable = take_byte(&in) % (MAX_READABLE + 1);
    size_t small = take_byte(&in) % 64;
    /* Exactly `readable` bytes, so that ASan flags any read past them. */
    static uint8_t none; /* malloc(0) may return NULL */
    uint8_t *desc = readable ? malloc(readable) : &none;
    if (!desc)
        abort();
    memset(desc, 0, readable);
    size_t n = (size_t)(in.end - in.p) < readable ? (size_t)(in.end - in.p)
                                                   : readable;
    memcpy(desc, in.p, n);
    in.p += n;
    char *name = take_string(&in), *version = take_string(&in);
    char *path = take_string(&in);
    put_pointer(desc, readable, offsetof(tether_plugin_desc, name),
                shape & 1 ? NULL : name);
    put_pointer(desc, readable, offsetof(tether_plugin_desc, version),
                shape & 2 ? NULL : version);
    check(shape & 4 ? NULL : desc, readable, path, small);
    if (readable)
        free(desc);
    free(name);
    free(version);
    free(path);
    return 0;
}
