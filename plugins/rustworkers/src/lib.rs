//! rustworkers - a tether plugin in Rust whose own threads call back into
//! guest code.
//!
//! `rw_run(fn, ud, nthreads, calls)` starts `nthreads` std::threads, which
//! the runtime knows nothing about; each calls `fn(ud, thread, call)`
//! `calls` times, each time holding the GIL of the interpreter the plugin
//! was loaded into (`Interp::ensure`, the guard's drop releases it).  The
//! caller may hold that GIL or not: rw_run releases it while it waits for
//! its threads (`Gil::allow_threads`), since they need it.  It returns the
//! number of calls made, or a negative status (TETHER_ESTATE: not loaded;
//! TETHER_EINVAL: bad arguments; the first error of a thread's ensure,
//! e.g. TETHER_EFINALIZING at shutdown).
//!
//! `rw_gil_checks()` is how many of those calls found the GIL held as they
//! began (all of them, or the test fails).
//!
//! The threads are joined before rw_run returns, so nothing of the plugin
//! runs after fini and the descriptor says TETHER_PLUGIN_UNLOADABLE.
use std::os::raw::c_void;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use tether::{sys, Host, Interp};

/// The guest callback: fn(ud, thread, call).
type GuestFn = extern "C" fn(ud: *mut c_void, thread: i32, call: i32);

/// The interpreter of the current load (one runtime at a time).
static LOADED: Mutex<Option<Interp>> = Mutex::new(None);
static GIL_CHECKS: AtomicI64 = AtomicI64::new(0);

// docs:begin plugin
/// The plugin's state for one load; fini drops it.
struct Loaded;

impl Drop for Loaded {
    fn drop(&mut self) {
        // rw_run joins its threads, so only the interpreter is forgotten.
        *LOADED.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn init(host: Host, interp: Interp) -> tether::Result<Loaded> {
    // Every member this plugin calls is in ABI 1.2, the version its
    // descriptor states, so the host has them all; a newer one would be
    // checked first: tether::sys::tether_api_has!(host.api(), member).
    debug_assert!(tether::sys::tether_api_has!(host.api(), callback_on_free));
    *LOADED.lock().unwrap_or_else(|e| e.into_inner()) = Some(interp);
    Ok(Loaded)
}

tether::tether_plugin! {
    name: "rustworkers",
    version: "1.0.0",
    flags: sys::TETHER_PLUGIN_UNLOADABLE,
    init: init,
    state: Loaded,
}
// docs:end plugin

/// A `*mut c_void` the caller promises may cross threads (the callback's
/// `ud`: the guest's to interpret).
#[derive(Clone, Copy)]
struct Ud(*mut c_void);
unsafe impl Send for Ud {}
unsafe impl Sync for Ud {}

impl Ud {
    // A method, so that closures capture the whole Ud (edition 2021
    // captures fields, and the field alone is not Send).
    fn ptr(self) -> *mut c_void {
        self.0
    }
}

fn run(interp: Interp, f: GuestFn, ud: Ud, nthreads: i32, calls: i32) -> tether::Result<i64> {
    let made = AtomicI64::new(0);
// docs:begin workers
    let workers = || {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..nthreads)
                .map(|no| {
                    let made = &made;
                    s.spawn(move || -> tether::Result<()> {
                        for k in 0..calls {
                            let _gil = interp.ensure()?; // a foreign thread
                            if tether::gil_held() {
                                GIL_CHECKS.fetch_add(1, Ordering::Relaxed);
                            }
                            f(ud.ptr(), no, k);
                            made.fetch_add(1, Ordering::Relaxed);
                        } // the guard's drop: tether_release
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(tether::Error::new(sys::TETHER_EINVAL, "a worker thread panicked")))
                })
                .find_map(|r| r.err())
        })
    };
    // The workers need the GIL: a caller holding it lets go while they run.
    let failed = if tether::gil_held() {
        let mut gil = interp.ensure()?; // cheap: the caller holds it
        gil.allow_threads(workers)?
    } else {
        workers()
    };
// docs:end workers
    match failed {
        Some(e) => Err(e),
        None => Ok(made.load(Ordering::Relaxed)),
    }
}

/// See the crate's comment.
#[no_mangle]
pub extern "C" fn rw_run(f: Option<GuestFn>, ud: *mut c_void, nthreads: i32, calls: i32) -> i64 {
    let interp = match *LOADED.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(i) => i,
        None => return sys::TETHER_ESTATE as i64,
    };
    let f = match f {
        Some(f) if nthreads > 0 && calls >= 0 => f,
        _ => return sys::TETHER_EINVAL as i64,
    };
    match std::panic::catch_unwind(|| run(interp, f, Ud(ud), nthreads, calls)) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => e.code() as i64,
        Err(_) => sys::TETHER_EINVAL as i64,
    }
}

/// How many guest calls found the GIL held, since the process began.
#[no_mangle]
pub extern "C" fn rw_gil_checks() -> i64 {
    GIL_CHECKS.load(Ordering::Relaxed)
}

