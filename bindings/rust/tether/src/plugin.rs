//! Plugins: loading one from a Rust host ([`Plugin`]), and writing one in
//! Rust ([`tether_plugin!`](crate::tether_plugin)).
use std::ffi::CString;
use std::os::raw::c_void;
use std::time::Duration;

use crate::{call, status, sys, timeout_ns, Error, Result, Runtime};

/// A plugin loaded into a runtime (`tether_plugin_load`).  Dropping it
/// unloads it (waiting for calls into it as long as they run);
/// [`Plugin::unload`] takes a timeout.
#[derive(Debug)]
pub struct Plugin {
    h: sys::tether_plugin,
    done: bool,
}

impl Plugin {
    /// Loads the plugin at `path` into `rt`.
    pub fn load(rt: &Runtime, path: &str) -> Result<Plugin> {
        let p = CString::new(path).map_err(|_| Error::new(sys::TETHER_EINVAL, "the path holds a NUL byte"))?;
        let mut h = 0;
        status!(plugin_load(rt.as_raw(), p.as_ptr(), &mut h))?;
        Ok(Plugin { h, done: false })
    }

    /// The address of `name` in the plugin.  Calling it is as safe as the
    /// C function: wrap the call in [`Plugin::enter`] so that unload waits.
    pub fn symbol(&self, name: &str) -> Result<*mut c_void> {
        let n = CString::new(name).map_err(|_| Error::new(sys::TETHER_EINVAL, "the name holds a NUL byte"))?;
        let mut p = std::ptr::null_mut();
        status!(plugin_symbol(self.h, n.as_ptr(), &mut p))?;
        Ok(p)
    }

    /// Runs `f` marked as running code of the plugin
    /// (`tether_plugin_enter`/`leave`): the last unload waits for it.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        status!(plugin_enter(self.h))?;
        struct Leave(sys::tether_plugin);
        impl Drop for Leave {
            fn drop(&mut self) {
                let _ = call!(plugin_leave(self.0));
            }
        }
        let _leave = Leave(self.h);
        Ok(f())
    }

    /// The name and version from the descriptor.
    pub fn info(&self) -> Result<(String, String)> {
        let (mut n, mut v) = (std::ptr::null(), std::ptr::null());
        status!(plugin_info(self.h, &mut n, &mut v))?;
        Ok((crate::cstr(n), crate::cstr(v)))
    }

    /// The raw handle.
    pub fn as_raw(&self) -> sys::tether_plugin {
        self.h
    }

    /// Drops this reference, waiting up to `timeout` for calls into the
    /// plugin.  On `ETIMEDOUT` the plugin stays loaded and the reference is
    /// kept: the `Plugin` comes back in the error's place.
    pub fn unload(mut self, timeout: Option<Duration>) -> std::result::Result<(), (Plugin, Error)> {
        match status!(plugin_unload(self.h, timeout_ns(timeout))) {
            Ok(_) => {
                self.done = true;
                Ok(())
            }
            Err(e) if e.is_timeout() => Err((self, e)),
            Err(e) => {
                self.done = true;
                Err((Plugin { h: self.h, done: true }, e))
            }
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if !self.done {
            let _ = call!(plugin_unload(self.h, -1));
        }
    }
}

/// The host a plugin runs in: its API table, for the members this crate does
/// not wrap and for `TETHER_API_HAS`-style checks.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    api: &'static sys::tether_host_api,
}

impl Host {
    #[doc(hidden)]
    pub unsafe fn from_raw(api: *const sys::tether_host_api) -> Host {
        Host { api: &*api }
    }

    /// The raw table.  Check a member newer than the plugin's stated ABI
    /// with [`tether_sys::tether_api_has!`] (or [`Host::has`]) first.
    pub fn api(&self) -> &'static sys::tether_host_api {
        self.api
    }

    /// `(major << 16) | minor` of the host's library.
    pub fn abi_version(&self) -> u32 {
        // SAFETY: every host table has abi_version (ABI 1.0).
        self.api.abi_version.map_or(0, |f| unsafe { f() })
    }

    /// True if the host's table reaches the member at byte offset `offset`;
    /// prefer `tether_sys::tether_api_has!(host.api(), member)`.
    pub fn has(&self, offset: usize) -> bool {
        offset < self.api.size
    }
}

/// A descriptor that may live in a `static` (its pointers are to static
/// strings and functions).
#[doc(hidden)]
#[repr(transparent)]
pub struct StaticDesc(pub sys::tether_plugin_desc);
// SAFETY: the descriptor is never written after it is made, and points to
// static data only.
unsafe impl Sync for StaticDesc {}

/// Runs a plugin's init: sets the host table, calls `init`, boxes its state.
#[doc(hidden)]
pub unsafe fn run_init<S: Send + 'static>(
    host: *const sys::tether_host_api,
    interp: sys::tether_interp,
    state: *mut *mut c_void,
    init: fn(Host, crate::Interp) -> Result<S>,
) -> std::os::raw::c_int {
    crate::set_host_api(host);
    let h = Host::from_raw(host);
    match std::panic::catch_unwind(|| init(h, crate::Interp::from_raw(interp))) {
        Ok(Ok(s)) => {
            *state = Box::into_raw(Box::new(s)) as *mut c_void;
            0
        }
        Ok(Err(e)) => crate::report(e.code(), &e.to_string()),
        Err(_) => crate::report(sys::TETHER_EINVAL, "the plugin's init panicked"),
    }
}

/// Runs a plugin's fini: drops the state init made (its `Drop` stops and
/// joins the plugin's threads).
#[doc(hidden)]
pub unsafe fn run_fini<S>(state: *mut c_void) {
    if !state.is_null() {
        let b = Box::from_raw(state as *mut S);
        // A panic must not unwind into the C caller.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(b)));
    }
}

/// Declares a plugin: its descriptor, the exported `tether_plugin_entry`,
/// and an init/fini pair around a state value.
///
/// ```ignore
/// struct State { /* the plugin's threads, ... */ }
/// impl Drop for State { fn drop(&mut self) { /* stop and join them */ } }
///
/// fn init(host: tether::Host, interp: tether::Interp) -> tether::Result<State> { ... }
///
/// tether::tether_plugin! {
///     name: "myplugin",
///     version: "1.0",
///     flags: 0,               // or tether::sys::TETHER_PLUGIN_UNLOADABLE
///     init: init,             // fn(Host, Interp) -> Result<State>
///     state: State,           // dropped by fini, holding no GIL
/// }
/// ```
///
/// The descriptor states the ABI this crate was generated from
/// (`TETHER_ABI_VERSION`); add `abi_version: <u32>,` after `flags` to state
/// an older one, and check newer members with `tether_api_has!`.  The
/// crate is built as a `cdylib` with the tether crate's default features
/// off: every call then goes through the host's table.
#[macro_export]
macro_rules! tether_plugin {
    (name: $name:expr, version: $version:expr, flags: $flags:expr,
     init: $init:path, state: $state:ty $(,)?) => {
        $crate::tether_plugin! {
            name: $name, version: $version, flags: $flags,
            abi_version: $crate::sys::TETHER_ABI_VERSION,
            init: $init, state: $state,
        }
    };
    (name: $name:expr, version: $version:expr, flags: $flags:expr,
     abi_version: $abi:expr, init: $init:path, state: $state:ty $(,)?) => {
        const _: () = {
            unsafe extern "C" fn __tether_init(
                host: *const $crate::sys::tether_host_api,
                interp: $crate::sys::tether_interp,
                state: *mut *mut ::std::os::raw::c_void,
            ) -> ::std::os::raw::c_int {
                $crate::plugin::run_init::<$state>(host, interp, state, $init)
            }
            unsafe extern "C" fn __tether_fini(state: *mut ::std::os::raw::c_void) {
                $crate::plugin::run_fini::<$state>(state)
            }
            static __TETHER_DESC: $crate::plugin::StaticDesc =
                $crate::plugin::StaticDesc($crate::sys::tether_plugin_desc {
                    size: ::std::mem::size_of::<$crate::sys::tether_plugin_desc>(),
                    abi_version: $abi,
                    flags: $flags,
                    name: concat!($name, "\0").as_ptr() as *const ::std::os::raw::c_char,
                    version: concat!($version, "\0").as_ptr() as *const ::std::os::raw::c_char,
                    init: Some(__tether_init),
                    fini: Some(__tether_fini),
                });
            #[no_mangle]
            pub extern "C" fn tether_plugin_entry(
                _host_abi_version: u32,
            ) -> *const $crate::sys::tether_plugin_desc {
                &__TETHER_DESC.0
            }
        };
    };
}
