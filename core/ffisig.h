/*
 * ffisig.h - the FFI signature parser.
 *
 * A signature is "ret(arg,...)" over the type names below.  The parser is
 * pure (no allocation, no global state, no libffi), so that the libFuzzer
 * target in tests/fuzz/ can build it on its own.
 */
#ifndef TETHER_FFISIG_H
#define TETHER_FFISIG_H

#include <stddef.h>
#include <stdint.h>

enum ffisig_type {
    FT_VOID,
    FT_I8,
    FT_U8,
    FT_I16,
    FT_U16,
    FT_I32,
    FT_U32,
    FT_I64,
    FT_U64,
    FT_F32,
    FT_F64,
    FT_PTR,
    FT_STR,
    FT__COUNT
};

#define FFISIG_MAX_ARGS 32

struct ffisig {
    uint8_t ret;   /* enum ffisig_type */
    uint8_t nargs;
    uint8_t args[FFISIG_MAX_ARGS]; /* never FT_VOID */
};

/* Where and why a signature is malformed. */
struct ffisig_error {
    size_t column;    /* 1-based column of the offending character */
    const char *what; /* a static phrase: "expected a type", ... */
};

/* Parses `s`.  Returns 0 and fills *out, or -1 and fills *err. */
int ffisig_parse(const char *s, struct ffisig *out, struct ffisig_error *err);

/* Writes the canonical spelling of `sig` ("i32(i32,ptr)", no spaces) to buf,
   truncated to cap - 1 characters and NUL-terminated when cap > 0.
   Returns the length of the full spelling. */
size_t ffisig_format(const struct ffisig *sig, char *buf, size_t cap);

/* The type's name ("i32"), or "?" for a value that is not a type. */
const char *ffisig_type_name(int type);

/* The size of the type's C representation (0 for void). */
size_t ffisig_type_size(int type);

#endif
