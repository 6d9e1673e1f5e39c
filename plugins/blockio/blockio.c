/*
 * blockio - a blocking read that an asynchronous exception or finalize
 * interrupts.
 *
 * blockio_read(fd, buf, cap, &nread) blocks in poll() on `fd` inside
 * host->call_blocking, so the caller's GIL is released meanwhile.  The
 * unblock function it registers writes a byte to a private self-pipe that
 * the same poll() watches: when the thread is sent an asynchronous
 * exception, or its interpreter is finalized, the read returns at once with
 * TETHER_EASYNC or TETHER_EFINALIZING instead of sleeping on.  Ruby's
 * unblocking functions are the model.
 *
 * blockio_pipe, blockio_write and blockio_close let a script make a pipe to
 * read from.  The plugin reaches libtether only through the host table.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <unistd.h>

#include <tether/tether_plugin.h>

/* The host table (the same for every runtime of the process).
   Synchronization: atomic. */
static _Atomic(const tether_host_api *) g_host;

/* One blocking read. */
struct read_call {
    int fd;
    void *buf;
    size_t cap;
    ssize_t got;
    int wake[2]; /* the self-pipe the unblock function writes to */
};

/* Runs holding no GIL.  Returns TETHER_OK, TETHER_EAGAIN (woken by the
   unblock function; call_blocking then reports why), TETHER_EINVAL. */
static int do_read(void *arg)
{
    struct read_call *c = arg;
    struct pollfd fds[2] = {{c->fd, POLLIN, 0}, {c->wake[0], POLLIN, 0}};
    int n;
    while ((n = poll(fds, 2, -1)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return TETHER_EINVAL;
    if (fds[1].revents)
        return TETHER_EAGAIN;
    while ((c->got = read(c->fd, c->buf, c->cap)) < 0 && errno == EINTR)
        ;
    return c->got < 0 ? TETHER_EINVAL : TETHER_OK;
}

/* The unblock function: called by the raising or finalizing thread.  A
   write to a pipe is async-signal-safe and takes no lock. */
static void wake_reader(void *arg)
{
    struct read_call *c = arg;
    ssize_t ignored = write(c->wake[1], "!", 1);
    (void)ignored; /* a full pipe already wakes the reader */
}

/* Reads up to `cap` bytes from `fd` into buf, blocking until some arrive,
   and stores the count in *nread (0 at end of file).  A caller holding the
   GIL releases it while blocked, and an asynchronous exception or finalize
   interrupts it.
   Returns TETHER_OK, TETHER_EINVAL (bad arguments or a failed read),
   TETHER_EAGAIN (no more descriptors), TETHER_EASYNC, TETHER_EFINALIZING. */
TETHER_PLUGIN_EXPORT int32_t blockio_read(int32_t fd, void *buf, int32_t cap,
                                          int32_t *nread)
{
    if (fd < 0 || !buf || cap <= 0 || !nread)
        return TETHER_EINVAL;
    struct read_call c = {fd, buf, (size_t)cap, 0, {-1, -1}};
    if (pipe2(c.wake, O_CLOEXEC | O_NONBLOCK) != 0)
        return TETHER_EAGAIN;
    const tether_host_api *host = atomic_load(&g_host);
    int rc = host && host->gil_held()
                 ? host->call_blocking(do_read, &c, wake_reader, &c)
                 : do_read(&c);
    close(c.wake[0]);
    close(c.wake[1]);
    if (rc == TETHER_OK)
        *nread = (int32_t)c.got;
    return rc;
}

/* Makes a pipe: fds[0] reads, fds[1] writes.
   Returns TETHER_OK, TETHER_EINVAL, TETHER_EAGAIN. */
TETHER_PLUGIN_EXPORT int32_t blockio_pipe(int32_t *fds)
{
    int p[2];
    if (!fds)
        return TETHER_EINVAL;
    if (pipe2(p, O_CLOEXEC) != 0)
        return TETHER_EAGAIN;
    fds[0] = p[0];
    fds[1] = p[1];
    return TETHER_OK;
}

/* Writes `len` bytes; returns the count written, or TETHER_EINVAL. */
TETHER_PLUGIN_EXPORT int32_t blockio_write(int32_t fd, const void *buf, int32_t len)
{
    if (fd < 0 || (!buf && len > 0) || len < 0)
        return TETHER_EINVAL;
    ssize_t n;
    while ((n = write(fd, buf, (size_t)len)) < 0 && errno == EINTR)
        ;
    return n < 0 ? TETHER_EINVAL : (int32_t)n;
}

/* Closes a descriptor.  Returns TETHER_OK or TETHER_EINVAL. */
TETHER_PLUGIN_EXPORT int32_t blockio_close(int32_t fd)
{
    return close(fd) == 0 ? TETHER_OK : TETHER_EINVAL;
}

static int blockio_init(const tether_host_api *host, tether_interp interp,
                        void **state)
{
    (void)interp, (void)state;
    atomic_store(&g_host, host);
    return TETHER_OK;
}

static const tether_plugin_desc blockio_desc = {
    .size = sizeof(tether_plugin_desc),
    .abi_version = TETHER_ABI_VERSION,
    .flags = 0,
    .name = "blockio",
    .version = "1.0.0",
    .init = blockio_init,
    .fini = NULL,
};

TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(uint32_t host_abi_version)
{
    (void)host_abi_version;
    return &blockio_desc;
}
