/*
 * ffisig.c - the FFI signature parser (see ffisig.h).
 *
 *   signature := ws type ws "(" ws [ args ] ws ")" ws
 *   args      := "void" | type ws { "," ws type ws }     (type other than void)
 *   ws        := { " " | "\t" }
 *
 * Type names are runs of lower-case letters and digits.  Every failure
 * names the column of the first character that cannot start what the
 * grammar expects there.
 */
#include "ffisig.h"

#include <string.h>

static const char *const g_names[FT__COUNT] = {
    "void", "i8", "u8", "i16", "u16", "i32", "u32",
    "i64", "u64", "f32", "f64", "ptr", "str"};

static const size_t g_sizes[FT__COUNT] = {
    0, 1, 1, 2, 2, 4, 4, 8, 8, sizeof(float), sizeof(double),
    sizeof(void *), sizeof(const char *)};

const char *ffisig_type_name(int type)
{
    return type >= 0 && type < FT__COUNT ? g_names[type] : "?";
}

size_t ffisig_type_size(int type)
{
    return type >= 0 && type < FT__COUNT ? g_sizes[type] : 0;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static size_t word_len(const char *p)
{
    size_t n = 0;
    while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= '0' && p[n] <= '9'))
        n++;
    return n;
}

/* The type named by the n characters at p, or -1. */
static int lookup(const char *p, size_t n)
{
    for (int t = 0; t < FT__COUNT; t++)
        if (strlen(g_names[t]) == n && memcmp(g_names[t], p, n) == 0)
            return t;
    return -1;
}

/* The parser's position, kept together so that failing is one call. */
struct cursor {
    const char *start;
    const char *p;
    struct ffisig_error *err;
};

static int fail(struct cursor *c, const char *at, const char *what)
{
    c->err->column = (size_t)(at - c->start) + 1;
    c->err->what = what;
    return -1;
}

/* Reads one type name at c->p into *type; `missing` is the complaint when
   there is no name at all. */
static int read_type(struct cursor *c, int *type, const char *missing)
{
    size_t n = word_len(c->p);
    if (n == 0)
        return fail(c, c->p, missing);
    int t = lookup(c->p, n);
    if (t < 0)
        return fail(c, c->p, "unknown type name");
    *type = t;
    c->p = skip_ws(c->p + n);
    return 0;
}

/* Reads the argument list after "(" up to and including ")". */
static int read_args(struct cursor *c, struct ffisig *out)
{
    out->nargs = 0;
    if (*c->p == ')') {
        c->p = skip_ws(c->p + 1);
        return 0;
    }
    for (;;) {
        const char *at = c->p;
        int t;
        if (read_type(c, &t, "expected an argument type") != 0)
            return -1;
        if (t == FT_VOID) {
            if (out->nargs != 0 || *c->p == ',')
                return fail(c, at, "void must stand alone between the parentheses");
        } else {
            if (out->nargs == FFISIG_MAX_ARGS)
                return fail(c, at, "more than 32 arguments");
            out->args[out->nargs++] = (uint8_t)t;
        }
        if (*c->p == ')') {
            c->p = skip_ws(c->p + 1);
            return 0;
        }
        if (*c->p != ',')
            return fail(c, c->p, "expected ',' or ')'");
        c->p = skip_ws(c->p + 1);
    }
}

int ffisig_parse(const char *s, struct ffisig *out, struct ffisig_error *err)
{
    struct cursor c = {s, skip_ws(s), err};
    struct ffisig sig;
    int ret;
    if (read_type(&c, &ret, "expected a return type") != 0)
        return -1;
    sig.ret = (uint8_t)ret;
    if (*c.p != '(')
        return fail(&c, c.p, "expected '(' after the return type");
    c.p = skip_ws(c.p + 1);
    if (read_args(&c, &sig) != 0)
        return -1;
    if (*c.p != '\0')
        return fail(&c, c.p, "unexpected text after ')'");
    *out = sig;
    return 0;
}

/* Appends `text` to buf at *len, keeping what fits and counting it all. */
static void append(char *buf, size_t cap, size_t *len, const char *text)
{
    size_t n = strlen(text);
    if (*len + 1 < cap) {
        size_t room = cap - 1 - *len;
        memcpy(buf + *len, text, n < room ? n : room);
    }
    *len += n;
}

size_t ffisig_format(const struct ffisig *sig, char *buf, size_t cap)
{
    size_t len = 0;
    append(buf, cap, &len, ffisig_type_name(sig->ret));
    append(buf, cap, &len, "(");
    for (unsigned i = 0; i < sig->nargs; i++) {
        if (i > 0)
            append(buf, cap, &len, ",");
        append(buf, cap, &len, ffisig_type_name(sig->args[i]));
    }
    append(buf, cap, &len, ")");
    if (cap > 0)
        buf[len < cap ? len : cap - 1] = '\0';
    return len;
}
