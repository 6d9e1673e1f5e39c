/*
 * cxx_plugin.cpp - a C++ plugin written with tether/tether.hpp, compiled by
 * the tests with g++ and clang++ at C++17 and C++20 (-Wall -Wextra
 * -Wpedantic -Werror, hidden visibility for functions and inlines) and
 * then validated by tether-plugin-check.
 *
 * Its instance state is a C++ object with a worker thread, made by init
 * and destroyed (joined) by fini: never by a static destructor.
 */
#include <tether/tether.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <thread>

namespace {

const tether_host_api *g_host;

struct instance {
    tether_interp interp;
    std::atomic<bool> stop{false};
    std::atomic<std::int64_t> ticks{0};
    std::thread worker;

    explicit instance(tether_interp i) : interp(i)
    {
        worker = std::thread([this] {
            while (!stop.load()) {
                {
                    tether::gil_guard gil(*g_host, interp);
                    if (!gil.ok())
                        return; /* finalizing */
                    ticks.fetch_add(1);
                }
                tether::allow_threads released(*g_host); /* holds none: passes */
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
    }
    ~instance()
    {
        stop.store(true);
        worker.join();
    }
};

int cxx_init(const tether_host_api *host, tether_interp interp,
             void **state) noexcept
{
    g_host = host;
    auto *inst = new (std::nothrow) instance(interp);
    if (!inst)
        return host->set_error(TETHER_ENOMEM, "cxx: out of memory");
    *state = inst;
    return TETHER_OK;
}

void cxx_fini(void *state) noexcept { delete static_cast<instance *>(state); }

constexpr tether_plugin_desc g_desc = tether::make_descriptor(
    "cxx", "1.0.0", cxx_init, cxx_fini, TETHER_PLUGIN_UNLOADABLE);

} // namespace

extern "C" {

/* The ticks of an instance (the host passes tether_plugin_state's). */
TETHER_PLUGIN_EXPORT std::int64_t cxx_ticks(void *state)
{
    return static_cast<instance *>(state)->ticks.load();
}

TETHER_PLUGIN_EXPORT const tether_plugin_desc *
tether_plugin_entry(std::uint32_t host_abi_version)
{
    (void)host_abi_version;
    return &g_desc;
}

} // extern "C"
