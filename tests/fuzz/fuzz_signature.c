/*
 * fuzz_signature.c - the libFuzzer target for the FFI signature parser.
 *
 * Properties checked on every input (abort() on a violation):
 *  - the parser never reads past the input or crashes (ASan, UBSan);
 *  - a failure names a column inside the input, or just past its end, and
 *    says why;
 *  - a success has a valid return type and at most FFISIG_MAX_ARGS argument
 *    types, none of them void, and its canonical spelling parses back to
 *    the same signature.
 *
 * Built with clang -fsanitize=fuzzer when clang is available, and always as
 * a corpus replay program (replay.c) that runs the checked-in corpus.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ffisig.h"

static void check_ok(const struct ffisig *sig)
{
    if (sig->ret >= FT__COUNT || sig->nargs > FFISIG_MAX_ARGS)
        abort();
    for (unsigned i = 0; i < sig->nargs; i++)
        if (sig->args[i] == FT_VOID || sig->args[i] >= FT__COUNT)
            abort();
    char canon[256];
    if (ffisig_format(sig, canon, sizeof canon) >= sizeof canon)
        abort();
    struct ffisig again;
    struct ffisig_error e;
    if (ffisig_parse(canon, &again, &e) != 0 || again.ret != sig->ret ||
        again.nargs != sig->nargs ||
        memcmp(again.args, sig->args, sig->nargs) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    struct ffisig sig;
    struct ffisig_error e = {0, NULL};
    if (ffisig_parse(s, &sig, &e) == 0)
        check_ok(&sig);
    else if (e.column < 1 || e.column > strlen(s) + 1 || !e.what || !*e.what)
        abort();
    free(s);
    return 0;
}
