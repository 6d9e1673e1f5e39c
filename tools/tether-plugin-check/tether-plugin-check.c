/*
 * tether-plugin-check - a validator for tether plugins.
 *
 *   tether-plugin-check [--cycles N] [--exports FILE] [--timeout S] PLUGIN.so
 *
 * Loads the plugin into fresh runtimes, the way a host would, with
 * TETHER_DEBUG=1, and checks what a plugin author cannot see from inside:
 *
 *   descriptor  the entry returns a descriptor the loader accepts; its
 *               fields are printed;
 *   exports     the library exports tether_plugin_entry, and no weak or
 *               unique symbols (C++ inline functions and templates leaking
 *               out of a build without -fvisibility=hidden and
 *               -fvisibility-inlines-hidden); with --exports, exactly the
 *               names in FILE (one a line);
 *   cycles      N load/unload cycles (default 10), each in a fresh runtime:
 *               every load and unload succeeds, and after the unload and
 *               finalize no thread the plugin started is left, the
 *               TETHER_DEBUG report is empty (no handle left open), and an
 *               unloadable plugin is unmapped;
 *   finalize    one load left for tether_runtime_finalize to unload, with
 *               the same checks.
 *
 * The plugin runs in a child process: a plugin that crashes the process,
 * exits it, or hangs for longer than --timeout (default 120 s) gets a FAIL
 * verdict saying what the check was doing, instead of taking the checker
 * down with it.  The ELF file is read with every offset checked, so a
 * damaged file is reported, not followed.
 *
 * Prints one line per check and a verdict; exits 0 on PASS, 1 on FAIL, 2
 * on bad usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tether/tether_plugin.h>

static int g_failures;

/* Shared with the supervising parent (see main): what the check is doing,
   so that a crash or a hang can be reported with it, and whether the
   verdict was printed. */
struct progress {
    char phase[160];
    int done;
};
static struct progress *g_progress;

static void phase(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void phase(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_progress->phase, sizeof g_progress->phase, fmt, ap);
    va_end(ap);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("  FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    g_failures++;
}

/* ---- exports ------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Whether `name` is one line of the export list `list` (NULL: none). */
static int listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p = eol ? eol + 1 : p + len;
    }
    return 0;
}

/* Whether [off, off + size) lies inside a file of `len` bytes. */
static int inside(uint64_t off, uint64_t size, size_t len)
{
    return off <= len && size <= len - off;
}

/* Checks the dynamic symbols the library defines (ELF64 only).  The file
   may be anything: every offset is checked against its length before it
   is followed. */
static void check_exports(const char *path, const char *list)
{
    phase("reading the exports");
    size_t len;
    unsigned char *img = (unsigned char *)read_file(path, &len);
    if (!img || len < sizeof(Elf64_Ehdr) || memcmp(img, ELFMAG, SELFMAG) != 0 ||
        img[EI_CLASS] != ELFCLASS64) {
        fail("exports: cannot read %s as a 64-bit ELF file", path);
        free(img);
        return;
    }
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img;
    if (eh->e_shentsize != sizeof(Elf64_Shdr) ||
        !inside(eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr), len) ||
        eh->e_shoff % _Alignof(Elf64_Shdr) != 0) {
        fail("exports: %s is a damaged ELF file (its section headers lie "
             "outside it)", path);
        free(img);
        return;
    }
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(img + eh->e_shoff);
    const Elf64_Shdr *dynsym = NULL;
    for (int i = 0; i < eh->e_shnum; i++)
        if (sh[i].sh_type == SHT_DYNSYM)
            dynsym = &sh[i];
    if (!dynsym) {
        fail("exports: %s has no dynamic symbol table", path);
        free(img);
        return;
    }
    if (dynsym->sh_link >= eh->e_shnum ||
        !inside(dynsym->sh_offset, dynsym->sh_size, len) ||
        dynsym->sh_offset % _Alignof(Elf64_Sym) != 0 ||
        !inside(sh[dynsym->sh_link].sh_offset, sh[dynsym->sh_link].sh_size,
                len)) {
        fail("exports: %s is a damaged ELF file (its dynamic symbol table "
             "lies outside it)", path);
        free(img);
        return;
    }
    const char *strtab = (const char *)img + sh[dynsym->sh_link].sh_offset;
    size_t strsize = sh[dynsym->sh_link].sh_size;
    const Elf64_Sym *sym = (const Elf64_Sym *)(img + dynsym->sh_offset);
    size_t count = dynsym->sh_size / sizeof *sym;
    int entry = 0;
    printf("  exports:");
    for (size_t i = 0; i < count; i++) {
        if (sym[i].st_name >= strsize ||
            !memchr(strtab + sym[i].st_name, '\0', strsize - sym[i].st_name)) {
            printf("\n");
            fail("exports: symbol %zu of %s has a name outside its string "
                 "table", i, path);
            printf("  exports (continued):");
            continue;
        }
        const char *name = strtab + sym[i].st_name;
        int bind = ELF64_ST_BIND(sym[i].st_info);
        if (sym[i].st_shndx == SHN_UNDEF || !*name ||
            ELF64_ST_VISIBILITY(sym[i].st_other) != STV_DEFAULT ||
            (bind != STB_GLOBAL && bind != STB_WEAK && bind != STB_GNU_UNIQUE))
            continue;
        if (!strcmp(name, "_init") || !strcmp(name, "_fini") ||
            !strcmp(name, "_edata") || !strcmp(name, "_end") ||
            !strcmp(name, "__bss_start"))
            continue; /* made by the linker */
        printf(" %s", name);
        if (!strcmp(name, "tether_plugin_entry"))
            entry = 1;
        if (bind != STB_GLOBAL) {
            printf("\n");
            fail("exports: '%s' is a %s symbol: build with -fvisibility=hidden "
                 "and -fvisibility-inlines-hidden", name,
                 bind == STB_WEAK ? "weak" : "unique");
            printf("  exports (continued):");
        }
        if (list && !listed(list, name)) {
            printf("\n");
            fail("exports: '%s' is exported but not in the export list", name);
            printf("  exports (continued):");
        }
    }
    printf("\n");
    if (!entry)
        fail("exports: no tether_plugin_entry");
    for (const char *p = list; p && *p;) { /* every listed name exported */
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        char name[256];
        if (n > 0 && n < sizeof name) {
            memcpy(name, p, n);
            name[n] = '\0';
            int found = 0;
            for (size_t i = 0; i < count && !found; i++)
                found = sym[i].st_shndx != SHN_UNDEF &&
                        sym[i].st_name < strsize &&
                        memchr(strtab + sym[i].st_name, '\0',
                               strsize - sym[i].st_name) &&
                        !strcmp(strtab + sym[i].st_name, name);
            if (!found)
                fail("exports: '%s' is in the export list but not exported",
                     name);
        }
        p = eol ? eol + 1 : p + n;
    }
    free(img);
}

/* ---- descriptor ---------------------------------------------------------- */

/* Reads the descriptor through our own dlopen (closed again); returns the
   flags, or -1. */
static long check_descriptor(const char *path)
{
    phase("reading the descriptor (dlopen, tether_plugin_entry)");
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        fail("descriptor: cannot dlopen: %s", dlerror());
        return -1;
    }
    void *sym = dlsym(dl, "tether_plugin_entry");
    long flags = -1;
    if (sym) {
        tether_plugin_entry_fn entry;
        memcpy(&entry, &sym, sizeof entry);
        const tether_plugin_desc *d = entry(TETHER_ABI_VERSION);
        size_t size = 0;
        if (d)
            memcpy(&size, d, sizeof size);
        if (!d) {
            fail("descriptor: the entry returned NULL for this host's ABI");
        } else if (size < offsetof(tether_plugin_desc, name)) {
            /* Only what its size covers may be read; the load says why it
               is refused. */
            printf("  descriptor: %zu bytes, too small for a name\n", size);
        } else {
            uint32_t abi = d->abi_version;
            printf("  descriptor: name \"%s\", version \"%s\", ABI %u.%u, "
                   "flags %s, init %s, fini %s\n",
                   d->name ? d->name : "(none)",
                   size > offsetof(tether_plugin_desc, version) && d->version
                       ? d->version : "(none)",
                   abi >> 16, abi & 0xffff,
                   (d->flags & TETHER_PLUGIN_UNLOADABLE) ? "UNLOADABLE" : "0",
                   size > offsetof(tether_plugin_desc, init) && d->init
                       ? "yes" : "no",
                   size > offsetof(tether_plugin_desc, fini) && d->fini
                       ? "yes" : "no");
            flags = (long)d->flags;
        }
    } else {
        printf("  descriptor: none (no tether_plugin_entry)\n");
    }
    dlclose(dl);
    return flags;
}

/* ---- cycles -------------------------------------------------------------- */

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int is_mapped(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h)
        dlclose(h);
    return h != NULL;
}

/* Finalizes `rt` with stderr captured; fails on any TETHER_DEBUG line but
   the one listing the plugin, when `by_finalize` left it loaded on
   purpose. */
static void finalize_checked(tether_runtime rt, const char *when,
                             int by_finalize)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    if (tmp)
        dup2(fileno(tmp), 2);
    int rc = tether_runtime_finalize(rt, 10 * 1000000000LL);
    fflush(stderr);
    if (tmp)
        dup2(saved, 2);
    close(saved);
    if (rc != TETHER_OK)
        fail("%s: tether_runtime_finalize returned %s", when,
             tether_status_name(rc));
    if (!tmp)
        return;
    rewind(tmp);
    char line[1024];
    while (fgets(line, sizeof line, tmp)) {
        line[strcspn(line, "\n")] = '\0';
        if (by_finalize && strstr(line, "TETHER_DEBUG: plugin handle") &&
            strstr(line, "tether_runtime_finalize unloads it"))
            continue; /* left to finalize on purpose */
        if (strstr(line, "TETHER_DEBUG:"))
            fail("%s: left behind: %s", when, line);
        else
            fprintf(stderr, "%s\n", line);
    }
    fclose(tmp);
}

/* One cycle: load (twice: references), unload both, or leave it to
   finalize.  Returns 0 when it could not even load. */
static int cycle(const char *path, int by_finalize, long flags, int threads0,
                 int n)
{
    const char *when = by_finalize ? "finalize" : "cycle";
    phase("%s %d: load (init)", when, n);
    tether_runtime rt;
    int rc = tether_runtime_create(NULL, &rt);
    if (rc != TETHER_OK) {
        fail("%s: tether_runtime_create: %s", when, tether_last_error());
        return 0;
    }
    tether_tstate ts;
    tether_save_thread(&ts); /* the plugin's threads may want the GIL */
    tether_plugin p, q;
    rc = tether_plugin_load(rt, path, &p);
    if (rc != TETHER_OK) {
        fail("%s: load failed: %s", when, tether_last_error());
        tether_restore_thread(ts);
        finalize_checked(rt, when, by_finalize);
        return 0;
    }
    phase("%s %d: second load, unloads (fini)", when, n);
    if (tether_plugin_load(rt, path, &q) != TETHER_OK || q != p)
        fail("%s: a second load did not return the same handle: %s", when,
             tether_last_error());
    else if ((rc = tether_plugin_unload(q, 10 * 1000000000LL)) != TETHER_OK)
        fail("%s: unloading the second reference failed: %s", when,
             tether_last_error());
    if (!by_finalize && (rc = tether_plugin_unload(p, 10 * 1000000000LL)) != TETHER_OK)
        fail("%s: unload failed: %s", when, tether_last_error());
    tether_restore_thread(ts);
    phase("%s %d: tether_runtime_finalize%s", when, n,
          by_finalize ? " (fini)" : "");
    finalize_checked(rt, when, by_finalize);
    phase("%s %d: counting threads", when, n);
    /* A joined thread may still be on its way out for a moment: a tether
       join returns when the thread's function is done (the sentinel), and
       the kernel lists a thread until it has left.  So the count gets two
       seconds to come down before a thread counts as left running. */
    int threads = count_threads();
    for (int waited = 0; threads > threads0 && waited < 400; waited++) {
        nanosleep(&(struct timespec){0, 5000000}, NULL);
        threads = count_threads();
    }
    if (threads > threads0) {
        char n[32];
        snprintf(n, sizeof n, "%d", threads - threads0);
        fail("%s: %s thread(s) left running after fini (fini must stop and "
             "join every thread the plugin started)", when, n);
    }
    if ((flags & TETHER_PLUGIN_UNLOADABLE) && is_mapped(path))
        fail("%s: the plugin is unloadable but still mapped after its "
             "unload: something of it is still alive", when);
    return 1;
}

static void *nothing(void *arg) { return arg; }

/* The checks, in the child process main() forks. */
static int run_checks(const char *path, const char *list, int cycles)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* nothing lost if the plugin crashes */
    setenv("TETHER_DEBUG", "1", 1);
    printf("tether-plugin-check %s: %s\n", tether_version_string(), path);
    long flags = check_descriptor(path);
    check_exports(path, list);
    /* The baseline comes after one thread has come and gone: a sanitizer
       runtime starts its own helper thread at the first pthread_create,
       which must not count as the plugin's. */
    pthread_t warm;
    if (pthread_create(&warm, NULL, nothing, NULL) == 0)
        pthread_join(warm, NULL);
    int threads0 = count_threads();
    int ran = 0;
    for (int i = 0; i < cycles && g_failures == 0; i++)
        ran += cycle(path, 0, flags < 0 ? 0 : flags, threads0, i + 1);
    if (g_failures == 0)
        ran += cycle(path, 1, flags < 0 ? 0 : flags, threads0, 1);
    printf("  cycles: %d load/unload cycle(s) and a load left to finalize, "
           "%d completed\n", cycles, ran);
    printf("  verdict: %s (%d problem(s))\n", g_failures ? "FAIL" : "PASS",
           g_failures);
    g_progress->done = 1;
    return g_failures ? 1 : 0;
}

static volatile sig_atomic_t g_alarm;
static void on_alarm(int sig) { (void)sig; g_alarm = 1; }

int main(int argc, char **argv)
{
    int cycles = 10, timeout = 120;
    const char *exports = NULL, *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cycles") && i + 1 < argc)
            cycles = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            timeout = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--exports") && i + 1 < argc)
            exports = argv[++i];
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            path = NULL, i = argc;
    }
    if (!path || cycles < 1 || timeout < 1) {
        fprintf(stderr, "usage: tether-plugin-check [--cycles N] "
                        "[--exports FILE] [--timeout SECONDS] PLUGIN.so\n");
        return 2;
    }
    char *list = NULL;
    if (exports) {
        size_t len;
        if (!(list = read_file(exports, &len))) {
            fprintf(stderr, "tether-plugin-check: cannot read %s\n", exports);
            return 2;
        }
    }
    /* The plugin's code runs in a child process, so that a plugin that
       crashes, exits or hangs gets a verdict instead of taking the checker
       with it. */
    g_progress = mmap(NULL, sizeof *g_progress, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_progress == MAP_FAILED) {
        perror("tether-plugin-check: mmap");
        return 2;
    }
    snprintf(g_progress->phase, sizeof g_progress->phase, "starting");
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        perror("tether-plugin-check: fork");
        return 2;
    }
    if (child == 0)
        _exit(run_checks(path, list, cycles));
    free(list);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: waitpid returns EINTR */
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)timeout);
    int status = 0;
    pid_t got;
    while ((got = waitpid(child, &status, 0)) < 0 && errno == EINTR) {
        if (g_alarm) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            printf("  FAIL: the plugin hung: no verdict after %d s, while %s\n",
                   timeout, g_progress->phase);
            printf("  verdict: FAIL (hung)\n");
            return 1;
        }
    }
    alarm(0);
    if (got < 0) {
        perror("tether-plugin-check: waitpid");
        return 2;
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        printf("  FAIL: the plugin crashed the process with signal %d (%s) "
               "while %s\n", sig, strsignal(sig), g_progress->phase);
        printf("  verdict: FAIL (crashed)\n");
        return 1;
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    if (!g_progress->done) {
        printf("  FAIL: the process exited with status %d before the "
               "verdict, while %s\n", code, g_progress->phase);
        printf("  verdict: FAIL (exited)\n");
        return 1;
    }
    return code;
}
