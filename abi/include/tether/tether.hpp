/*
 * tether/tether.hpp - a small header-only C++ layer over tether_plugin.h
 * for plugin authors (C++17 and later).  It adds no ABI: everything goes
 * through the host table a plugin's init receives.
 *
 *   tether::gil_guard       ensure on construction, release on destruction
 *   tether::allow_threads   save_thread / restore_thread around a scope
 *   tether::make_descriptor a constexpr descriptor, for C++ before C++20
 *                           (no designated initializers)
 *
 * docs/plugins.md ("Plugins in C++") has the rules C++ adds: extern "C"
 * for what the host looks up, no exceptions across the C boundary, and no
 * joins or GIL in static destructors.
 */
#ifndef TETHER_HPP
#define TETHER_HPP

#include "tether_plugin.h"

namespace tether {

/* Holds the GIL of an interpreter for the life of the object (host->ensure
   and host->release).  Check ok(): once the interpreter is finalizing the
   ensure fails with TETHER_EFINALIZING and nothing is held. */
class gil_guard {
public:
    gil_guard(const tether_host_api &host, tether_interp interp) noexcept
        : host_(&host), status_(host.ensure(interp, &state_)) {}
    ~gil_guard()
    {
        if (status_ == TETHER_OK)
            host_->release(state_);
    }
    gil_guard(const gil_guard &) = delete;
    gil_guard &operator=(const gil_guard &) = delete;

    bool ok() const noexcept { return status_ == TETHER_OK; }
    int status() const noexcept { return status_; }

private:
    const tether_host_api *host_;
    tether_gilstate state_ = 0;
    int status_;
};

/* Lets go of the calling thread's GIL for the life of the object
   (host->save_thread, then host->restore_thread): TETHER_BEGIN/END_ALLOW_THREADS
   as a scope.  A thread that holds no GIL passes through.  restored()
   tells what re-attaching found (TETHER_EASYNC, TETHER_EFINALIZING) when
   the caller wants to know before the destructor runs: call restore(). */
class allow_threads {
public:
    explicit allow_threads(const tether_host_api &host) noexcept : host_(&host)
    {
        if (host.save_thread(&saved_) != TETHER_OK)
            saved_ = 0;
    }
    ~allow_threads() { restore(); }
    allow_threads(const allow_threads &) = delete;
    allow_threads &operator=(const allow_threads &) = delete;

    /* Re-takes the GIL now (once); returns what host->restore_thread did. */
    int restore() noexcept
    {
        if (saved_) {
            status_ = host_->restore_thread(saved_);
            saved_ = 0;
        }
        return status_;
    }
    int restored() const noexcept { return status_; }

private:
    const tether_host_api *host_;
    tether_tstate saved_ = 0;
    int status_ = TETHER_OK;
};

/* A descriptor without designated initializers:

       static constexpr tether_plugin_desc desc = tether::make_descriptor(
           "name", "1.0.0", my_init, my_fini, TETHER_PLUGIN_UNLOADABLE);
*/
constexpr tether_plugin_desc make_descriptor(
    const char *name, const char *version,
    int (*init)(const tether_host_api *, tether_interp, void **),
    void (*fini)(void *), uint32_t flags = 0,
    uint32_t abi_version = TETHER_ABI_VERSION) noexcept
{
    tether_plugin_desc d{};
    d.size = sizeof(tether_plugin_desc);
    d.abi_version = abi_version;
    d.flags = flags;
    d.name = name;
    d.version = version;
    d.init = init;
    d.fini = fini;
    return d;
}

} // namespace tether

#endif /* TETHER_HPP */
