//! The safe Rust binding of libtether.
//!
//! tether runs guest code on host threads under a GIL, the way CPython's
//! threading core does (see `docs/threading-model.md`).  This crate wraps
//! the C ABI (`tether-sys`) so that the compiler enforces what the C
//! contract's thread tags say:
//!
//! - [`Gil`] is the proof that the calling thread holds an interpreter's
//!   GIL, in the manner of PyO3's `Python<'py>` token.  [`Interp::ensure`]
//!   returns one (any thread, including threads tether did not create) and
//!   its `Drop` releases it.  It is neither `Send` nor `Sync`: an ensure
//!   token belongs to its OS thread (`[owner-thread]`).  What needs the GIL
//!   takes `&mut Gil`: [`Gil::checkpoint`], [`Gil::allow_threads`],
//!   [`Gil::call_blocking`], [`GilCell::with`].
//! - Handles whose functions are `[any-thread]` ([`Runtime`], [`Interp`],
//!   [`JoinHandle`], [`Lock`], [`Event`], [`Channel`], [`Callback`],
//!   [`Plugin`]) are `Send` and `Sync`; those that own a resource free it
//!   in `Drop`.
//! - Every failure is an [`Error`] carrying the status and the library's
//!   sentence; an asynchronous exception delivered at a checkpoint or wait
//!   is an `Error` whose [`Error::async_exception`] is set.
//!
//! A host links libtether (the default `link` feature).  A plugin turns the
//! feature off and declares itself with [`tether_plugin!`]: the crate then
//! reaches the library through the host API table the plugin's init gets.
//!
//! `docs/languages.md` is the guide.
#![warn(missing_docs)]

use std::any::Any;
use std::cell::UnsafeCell;
use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_int, c_void};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::Duration;

pub use tether_sys as sys;
use tether_sys::tether_host_api;

#[doc(hidden)]
pub mod plugin;
mod sync;
mod thread;

pub use plugin::{Host, Plugin};
pub use sync::{Channel, Event, Lock, LockGuard};
pub use thread::{JoinHandle, Thread, ThreadBuilder, ThreadRef};

/* ---- the API table ----------------------------------------------------- */

/// The host table a plugin's init received (null in a host program).
static HOST_API: AtomicPtr<tether_host_api> = AtomicPtr::new(ptr::null_mut());

/// The table every call goes through: the host's, once a plugin's init has
/// set it, else (feature `link`) the linked library's.
pub(crate) fn api() -> &'static tether_host_api {
    let p = HOST_API.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: the host's table lives as long as the process.
        return unsafe { &*p };
    }
    linked_api()
}

#[cfg(feature = "link")]
fn linked_api() -> &'static tether_host_api {
    &tether_sys::TETHER_LINKED_API
}

#[cfg(not(feature = "link"))]
fn linked_api() -> &'static tether_host_api {
    panic!("tether: no host API table: this crate was built without the `link` feature, \
            and no plugin init (tether_plugin!) has run")
}

/// Makes `host` the table every call of this crate goes through.  The
/// [`tether_plugin!`] macro calls it from the plugin's init.
///
/// # Safety
/// `host` must point to a host API table that lives for the rest of the
/// process (the one a plugin's init receives does).
#[doc(hidden)]
pub unsafe fn set_host_api(host: *const tether_host_api) {
    HOST_API.store(host as *mut _, Ordering::Release);
}

/// Calls member `$m` of the table, or answers an `Error` (EVERSION) if the
/// host's table is too old to have it.
macro_rules! call {
    ($m:ident ( $($a:expr),* $(,)? )) => {{
        let a = $crate::api();
        if !tether_sys::tether_api_has!(a, $m) {
            Err($crate::Error::missing(stringify!($m)))
        } else {
            match a.$m {
                #[allow(unused_unsafe)]
                Some(f) => Ok(unsafe { f($($a),*) }),
                None => Err($crate::Error::missing(stringify!($m))),
            }
        }
    }};
}
pub(crate) use call;

/// Like `call!` for a function returning a status: `Ok(rc)` for rc >= 0.
macro_rules! status {
    ($m:ident ( $($a:expr),* $(,)? )) => {
        $crate::call!($m($($a),*)).and_then($crate::check)
    };
}
pub(crate) use status;

/* ---- errors -------------------------------------------------------------- */

/// A status code of the C ABI (`TETHER_E*`), as in `tether.h`.
pub type Status = c_int;

/// An asynchronous exception delivered to this thread
/// ([`JoinHandle::raise`], `tether_thread_raise`).
pub struct AsyncException {
    /// The code the raiser gave.
    pub code: i64,
    /// The payload, when the raiser was this crate and gave one.
    pub payload: Option<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for AsyncException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncException")
            .field("code", &self.code)
            .field("payload", &self.payload.is_some())
            .finish()
    }
}

/// The destructor this crate gives payloads it raises: a
/// `Box<Box<dyn Any + Send + Sync>>`.
pub(crate) unsafe extern "C" fn drop_payload(p: *mut c_void) {
    if !p.is_null() {
        drop(Box::from_raw(p as *mut Box<dyn Any + Send + Sync>));
    }
}

/// A failed call: the status, the library's sentence
/// (`tether_last_error`), and for `EASYNC` the exception that was fetched.
#[derive(Debug)]
pub struct Error {
    code: Status,
    message: String,
    exc: Option<AsyncException>,
}

/// `std::result::Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the library returns NUL-terminated strings it owns.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl Error {
    /// An error with `code` and the calling thread's last-error sentence.
    /// For `EASYNC` the delivered exception is taken off the thread.
    pub(crate) fn from_status(code: Status) -> Error {
        let message = call!(last_error()).map(cstr).unwrap_or_default();
        let exc = if code == sys::TETHER_EASYNC { fetch_async() } else { None };
        Error { code, message, exc }
    }

    /// An error of one's own: a plugin's init or a thread's closure returns
    /// one, and C sees `code` with `message` as the last-error sentence.
    pub fn new(code: Status, message: impl Into<String>) -> Error {
        Error { code, message: message.into(), exc: None }
    }

    fn missing(member: &str) -> Error {
        Error::new(
            sys::TETHER_EVERSION,
            format!("the host's API table has no {member}: its ABI is older than this crate's"),
        )
    }

    /// The status (`TETHER_EINVAL`, `TETHER_ETIMEDOUT`, ...).
    pub fn code(&self) -> Status {
        self.code
    }

    /// The status's name without `TETHER_` (`"ETIMEDOUT"`).
    pub fn name(&self) -> String {
        call!(status_name(self.code)).map(cstr).unwrap_or_default()
    }

    /// The library's sentence naming the function and the problem.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for `TETHER_ETIMEDOUT`.
    pub fn is_timeout(&self) -> bool {
        self.code == sys::TETHER_ETIMEDOUT
    }

    /// True for `TETHER_EFINALIZING`: the runtime or interpreter is shutting
    /// down, and the thread is detached.
    pub fn is_finalizing(&self) -> bool {
        self.code == sys::TETHER_EFINALIZING
    }

    /// The asynchronous exception, for `TETHER_EASYNC`.
    pub fn async_exception(&self) -> Option<&AsyncException> {
        self.exc.as_ref()
    }

    /// Takes the asynchronous exception out of the error.
    pub fn into_async_exception(self) -> Option<AsyncException> {
        self.exc
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        if self.message.is_empty() {
            write!(f, "{name} ({})", self.code)
        } else {
            write!(f, "{name}: {}", self.message)
        }?;
        if let Some(e) = &self.exc {
            write!(f, " (asynchronous exception {})", e.code)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Ok(rc) for rc >= 0, else the error with the thread's sentence.
pub(crate) fn check(rc: c_int) -> Result<c_int> {
    if rc >= 0 {
        Ok(rc)
    } else {
        Err(Error::from_status(rc))
    }
}

/// Takes the delivered asynchronous exception off the calling thread.
fn fetch_async() -> Option<AsyncException> {
    let mut code = 0i64;
    let mut payload: *mut c_void = ptr::null_mut();
    let mut dtor: sys::tether_dtor = None;
    match call!(async_fetch(&mut code, &mut payload, &mut dtor)) {
        Ok(0) => {}
        _ => return None,
    }
    let ours: sys::tether_dtor = Some(drop_payload);
    let payload = if payload.is_null() {
        None
    } else if dtor.map(|f| f as usize) == ours.map(|f| f as usize) {
        // SAFETY: raised by this crate: a Box<Box<dyn Any + Send + Sync>>.
        Some(*unsafe { Box::from_raw(payload as *mut Box<dyn Any + Send + Sync>) })
    } else {
        if let Some(d) = dtor {
            // SAFETY: the payload is ours now, and its raiser's dtor frees it.
            unsafe { d(payload) };
        }
        None
    };
    Some(AsyncException { code, payload })
}

/// The C timeout for `t`: None waits for ever.
pub(crate) fn timeout_ns(t: Option<Duration>) -> i64 {
    match t {
        None => -1,
        Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The version of the library in use ("1.2.0").
pub fn version() -> String {
    call!(version_string()).map(cstr).unwrap_or_default()
}

/// `(major << 16) | minor` of the library in use.
pub fn abi_version() -> u32 {
    call!(abi_version()).unwrap_or(0)
}

/// True if the calling thread holds its interpreter's GIL.
pub fn gil_held() -> bool {
    matches!(call!(gil_held()), Ok(1))
}

/// Sleeps `d`, releasing the GIL if the caller holds it; an asynchronous
/// exception or finalize cuts it short (an `Error`).  `Duration::ZERO`
/// yields the GIL to a waiting thread.
pub fn sleep(d: Duration) -> Result<()> {
    status!(sleep(timeout_ns(Some(d)))).map(drop)
}

/* ---- runtime and interpreters ------------------------------------------ */

/// Options of [`Runtime::with_config`].
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Each interpreter gets its own GIL (`TETHER_CONFIG_PER_INTERP_GIL`).
    pub per_interp_gil: bool,
    /// Misuse aborts the process (`TETHER_CONFIG_ABORT_ON_MISUSE`).
    pub abort_on_misuse: bool,
    /// The switch interval (None: the default, 5 ms).
    pub switch_interval: Option<Duration>,
}

/// A tether runtime and its main interpreter.
///
/// `Runtime::new` leaves the calling thread holding no GIL (the C call
/// returns holding it; the crate saves the thread state at once), so that
/// every thread, this one included, takes the GIL with
/// [`Interp::ensure`].  Dropping the runtime finalizes it, waiting for its
/// non-daemon threads as long as they run; [`Runtime::finalize`] takes a
/// timeout.  Do not drop it on a thread it started (`ESTATE`).
#[derive(Debug)]
pub struct Runtime {
    rt: sys::tether_runtime,
    main: Interp,
    done: bool,
}

impl Runtime {
    /// A runtime with the default configuration.
    #[cfg(feature = "link")]
    pub fn new() -> Result<Runtime> {
        Runtime::with_config(&Config::default())
    }

    /// A runtime configured by `cfg`.
    #[cfg(feature = "link")]
    pub fn with_config(cfg: &Config) -> Result<Runtime> {
        let mut flags = 0;
        if cfg.per_interp_gil {
            flags |= sys::TETHER_CONFIG_PER_INTERP_GIL;
        }
        if cfg.abort_on_misuse {
            flags |= sys::TETHER_CONFIG_ABORT_ON_MISUSE;
        }
        let us = match cfg.switch_interval {
            None => 0,
            Some(d) => u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1),
        };
        let c = sys::tether_config {
            size: std::mem::size_of::<sys::tether_config>(),
            flags,
            switch_interval_us: us,
            excepthook: None,
            excepthook_ud: ptr::null_mut(),
        };
        let mut rt = 0;
        status!(runtime_create(&c, &mut rt))?;
        let mut main = 0;
        let mut ts = 0;
        // Neither can fail on the runtime just made, attached to it.
        status!(runtime_main_interp(rt, &mut main))?;
        status!(save_thread(&mut ts))?;
        Ok(Runtime { rt, main: Interp { h: main }, done: false })
    }

    /// The main interpreter.
    pub fn main_interp(&self) -> Interp {
        self.main
    }

    /// The raw handle.
    pub fn as_raw(&self) -> sys::tether_runtime {
        self.rt
    }

    /// A new interpreter (it shares the main GIL unless the runtime was made
    /// with `per_interp_gil`).
    pub fn new_interp(&self) -> Result<Interp> {
        let mut h = 0;
        status!(interp_create(self.rt, &mut h))?;
        Ok(Interp { h })
    }

    /// Sets the switch interval of every GIL of the runtime.
    pub fn set_switch_interval(&self, d: Duration) -> Result<()> {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        status!(set_switch_interval(self.rt, us)).map(drop)
    }

    /// Loads the plugin at `path` into the runtime (`tether_plugin_load`).
    pub fn load_plugin(&self, path: &str) -> Result<Plugin> {
        Plugin::load(self, path)
    }

    /// Shuts the runtime down, waiting up to `timeout` (None: for ever) for
    /// its non-daemon threads.  `Err(ETIMEDOUT)`: they were still running;
    /// the runtime was finalized all the same.
    pub fn finalize(mut self, timeout: Option<Duration>) -> Result<()> {
        self.done = true;
        status!(runtime_finalize(self.rt, timeout_ns(timeout))).map(drop)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.done {
            let _ = call!(runtime_finalize(self.rt, -1));
        }
    }
}

/// An interpreter: a borrowed handle that any thread may copy and use.  A
/// stale handle (the interpreter is destroyed) is harmless: calls answer
/// `EBADHANDLE` or `EFINALIZING`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interp {
    h: sys::tether_interp,
}

impl Interp {
    /// Wraps a raw handle (a plugin's init receives one).
    pub fn from_raw(h: sys::tether_interp) -> Interp {
        Interp { h }
    }

    /// The raw handle.
    pub fn as_raw(&self) -> sys::tether_interp {
        self.h
    }

    /// Takes the interpreter's GIL on the calling thread, any thread,
    /// including one tether did not create (`tether_ensure`); the guard's
    /// `Drop` gives it back.  Guards nest (one dropped before a guard made after it is released when
    /// that one is: the C release is innermost first), and
    /// stay on the thread that made them.
    pub fn ensure(&self) -> Result<Gil> {
        let mut st = 0;
        status!(ensure(self.h, &mut st))?;
        let _ = OUTSTANDING.try_with(|o| o.borrow_mut().push((st, false)));
        Ok(Gil { token: st, interp: *self, _owner_thread: PhantomData })
    }

    /// Starts a thread of this interpreter running `f` with its GIL; see
    /// [`ThreadBuilder`] for names and daemon threads.
    pub fn spawn<T, F>(&self, f: F) -> Result<JoinHandle<T>>
    where
        F: FnOnce(&mut Gil) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        ThreadBuilder::new().spawn(*self, f)
    }

    /// Joins the interpreter's non-daemon threads (up to `timeout`) and
    /// destroys it (not the main interpreter: `EINVAL`).
    pub fn destroy(self, timeout: Option<Duration>) -> Result<()> {
        status!(interp_destroy(self.h, timeout_ns(timeout))).map(drop)
    }

    /// The counters of the GIL this interpreter uses.
    pub fn gil_stats(&self) -> Result<sys::tether_gil_stats> {
        // SAFETY: a plain C struct of integers.
        let mut s: sys::tether_gil_stats = unsafe { std::mem::zeroed() };
        s.size = std::mem::size_of::<sys::tether_gil_stats>();
        status!(gil_stats_get(self.h, &mut s))?;
        Ok(s)
    }
}

/* ---- the GIL ------------------------------------------------------------- */

/// Proof that the calling thread holds an interpreter's GIL.
///
/// Made by [`Interp::ensure`] (dropping it releases) or handed to a thread
/// function and to callbacks (then it borrows the GIL the library took for
/// the call and releases nothing).  Guards of one thread are released
/// innermost first: one dropped before a guard made after it is released
/// when that one is.  It cannot leave its thread: `Gil` is
/// neither `Send` nor `Sync`, as `tether_release` is `[owner-thread]`.
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// fn f(g: tether::Gil) { needs_send(g) }
/// ```
#[derive(Debug)]
pub struct Gil {
    token: sys::tether_gilstate, // 0: borrowed, release nothing
    interp: Interp,
    _owner_thread: PhantomData<*mut ()>,
}

impl Gil {
    /// A guard for a GIL the library already holds for this thread (a thread
    /// function, a callback's guest function).
    pub(crate) fn borrowed(interp: Interp) -> Gil {
        Gil { token: 0, interp, _owner_thread: PhantomData }
    }

    /// The interpreter whose GIL this is.
    pub fn interp(&self) -> Interp {
        self.interp
    }

    /// The eval breaker: call it now and then in long guest work.  It hands
    /// the GIL over when another thread has waited a switch interval, runs
    /// pending calls, and answers an asynchronous exception delivered to this
    /// thread as an `Err` with [`Error::async_exception`] set, or
    /// `EFINALIZING` at shutdown (the thread is then detached: return
    /// without touching guest state).
    pub fn checkpoint(&mut self) -> Result<()> {
        status!(checkpoint()).map(drop)
    }

    /// Runs `f` with the GIL released (`tether_save_thread` ...
    /// `tether_restore_thread`), so that other threads run guest code while
    /// `f` blocks or computes.  `f` cannot use this guard: it is borrowed,
    /// and `f` must be `Send`, so no `Gil` can be captured.  If an
    /// asynchronous exception or shutdown is found on re-taking the GIL, the
    /// result is an `Err` and `f`'s value is dropped.
    pub fn allow_threads<T, F>(&mut self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
    {
        let mut ts = 0;
        status!(save_thread(&mut ts))?;
        let r = panic::catch_unwind(AssertUnwindSafe(f));
        let rc = call!(restore_thread(ts)).and_then(check);
        match r {
            Err(p) => panic::resume_unwind(p),
            Ok(v) => rc.map(|_| v),
        }
    }

    /// Runs the blocking `f` with the GIL released; while it runs, an
    /// asynchronous exception raised at this thread, or finalize, calls
    /// `unblock` on the raising thread so that `f` returns early
    /// (`tether_call_blocking`).  `unblock` must be quick and must not wait
    /// for a GIL.  An exception found on re-taking the GIL is an `Err`, and
    /// `f`'s value is dropped.
    pub fn call_blocking<T, F, U>(&mut self, f: F, unblock: U) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        U: Fn() + Sync,
    {
        struct Ctx<F, T> {
            f: Option<F>,
            out: Option<std::thread::Result<T>>,
        }
        unsafe extern "C" fn run<F: FnOnce() -> T, T>(arg: *mut c_void) -> c_int {
            let ctx = &mut *(arg as *mut Ctx<F, T>);
            let f = ctx.f.take().expect("called once");
            ctx.out = Some(panic::catch_unwind(AssertUnwindSafe(f)));
            0
        }
        unsafe extern "C" fn ubf<U: Fn()>(arg: *mut c_void) {
            let u = &*(arg as *const U);
            // A panic must not cross the C frames of the raising thread.
            let _ = panic::catch_unwind(AssertUnwindSafe(u));
        }
        let mut ctx = Ctx { f: Some(f), out: None };
        let rc = call!(call_blocking(
            Some(run::<F, T>),
            &mut ctx as *mut Ctx<F, T> as *mut c_void,
            Some(ubf::<U>),
            &unblock as *const U as *mut c_void,
        ))?;
        match ctx.out {
            Some(Err(p)) => panic::resume_unwind(p),
            Some(Ok(v)) if rc == 0 => Ok(v),
            _ => Err(Error::from_status(if rc < 0 { rc } else { sys::TETHER_ESTATE })),
        }
    }

    /// Holds asynchronous exceptions pending while `f` runs (cleanup that
    /// must not be torn in half); one pending is delivered at the next
    /// checkpoint or wait after it.
    pub fn defer_async<T>(&mut self, f: impl FnOnce(&mut Gil) -> T) -> Result<T> {
        status!(async_defer())?;
        let r = panic::catch_unwind(AssertUnwindSafe(|| f(self)));
        let _ = call!(async_allow());
        match r {
            Ok(v) => Ok(v),
            Err(p) => panic::resume_unwind(p),
        }
    }

    /// The calling thread, as a handle other threads may raise at.
    pub fn current_thread(&self) -> Result<ThreadRef> {
        let mut t = 0;
        status!(thread_current(&mut t))?;
        Ok(ThreadRef::from_owned(t))
    }
}

thread_local! {
    /// This thread's ensure tokens not yet released, oldest first, each
    /// with a flag set once its guard is dropped.  `tether_release` takes
    /// tokens innermost first; a guard dropped out of that order (safe
    /// code may drop the outer one first) is released when every token
    /// made after it is, instead of being refused (`ESTATE`) and leaving
    /// the GIL held for ever.
    static OUTSTANDING: std::cell::RefCell<Vec<(sys::tether_gilstate, bool)>> =
        std::cell::RefCell::new(Vec::new());
}

impl Drop for Gil {
    fn drop(&mut self) {
        if self.token == 0 {
            return;
        }
        let token = self.token;
        // The tokens now releasable, innermost first; unknown to the
        // table (thread exit): release this one alone.
        let ready = OUTSTANDING
            .try_with(|o| {
                let mut o = o.borrow_mut();
                match o.iter().rposition(|e| e.0 == token) {
                    None => vec![token],
                    Some(i) => {
                        o[i].1 = true;
                        let mut ready = Vec::new();
                        while let Some(&(t, true)) = o.last() {
                            o.pop();
                            ready.push(t);
                        }
                        ready
                    }
                }
            })
            .unwrap_or_else(|_| vec![token]);
        for t in ready {
            let _ = call!(release(t));
        }
    }
}

/// A value of guest state, reached only through a [`Gil`].
///
/// The GIL serializes the threads that use it; a flag catches a re-entry
/// (a nested guard's checkpoint letting another thread in while `with` runs
/// on this one) with a panic instead of two `&mut T` at once.
pub struct GilCell<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `with` hands out one `&mut T` at a time (the busy flag), to the
// thread holding the GIL; T moves between threads, so T: Send.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    /// A cell holding `v`.
    pub const fn new(v: T) -> GilCell<T> {
        GilCell { busy: AtomicBool::new(false), value: UnsafeCell::new(v) }
    }

    /// Runs `f` on the value; the `&mut Gil` proves the GIL is held and
    /// keeps it from being released meanwhile.
    pub fn with<R>(&self, _gil: &mut Gil, f: impl FnOnce(&mut T) -> R) -> R {
        assert!(
            !self.busy.swap(true, Ordering::Acquire),
            "GilCell entered again while in use"
        );
        struct Reset<'a>(&'a AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _reset = Reset(&self.busy);
        // SAFETY: the busy flag makes this the only reference.
        f(unsafe { &mut *self.value.get() })
    }

    /// The value, when nothing else can reach it.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

/* ---- callbacks ------------------------------------------------------------ */

/// The arguments and return slot of one call of a [`Callback`], as
/// `tether_guest_fn` receives them: `args[i]` points to the i-th argument's
/// C type, `ret` to storage of the return type's (null for `void`).
pub struct CallArgs {
    args: *mut *mut c_void,
    ret: *mut c_void,
}

impl CallArgs {
    /// The i-th argument.
    ///
    /// # Safety
    /// `T` must be the C type of the signature's i-th argument.
    pub unsafe fn arg<T: Copy>(&self, i: usize) -> T {
        *(*self.args.add(i) as *const T)
    }

    /// Stores the return value.
    ///
    /// # Safety
    /// `T` must be the C type of the signature's return type (not `void`).
    pub unsafe fn set_ret<T: Copy>(&self, v: T) {
        if !self.ret.is_null() {
            *(self.ret as *mut T) = v;
        }
    }
}

type GuestFn = dyn Fn(&mut Gil, &CallArgs) -> Result<()> + Send + Sync;

struct CallbackData {
    interp: Interp,
    f: Box<GuestFn>,
}

/// A C function pointer whose calls run a Rust closure holding an
/// interpreter's GIL, on whatever thread calls it (`tether_callback_new`):
/// the way to hand guest code to C code and its threads.  Dropping it frees
/// the C function once no call runs (the closure is dropped when the last
/// owner, C's included, lets go).
pub struct Callback {
    h: sys::tether_callback,
}

impl Callback {
    /// A callback of `signature` ("i32(i32,ptr)", see `docs/ffi.md`) into
    /// `interp` running `f`.  An `Err` from `f` zeroes the C return value
    /// and goes to the runtime's excepthook; a panic is caught and reported
    /// the same way (`EINVAL`).
    pub fn new<F>(interp: Interp, signature: &str, f: F) -> Result<Callback>
    where
        F: Fn(&mut Gil, &CallArgs) -> Result<()> + Send + Sync + 'static,
    {
        unsafe extern "C" fn guest(args: *mut *mut c_void, ret: *mut c_void, ud: *mut c_void) -> c_int {
            let data = &*(ud as *const CallbackData);
            let mut gil = Gil::borrowed(data.interp);
            let a = CallArgs { args, ret };
            match panic::catch_unwind(AssertUnwindSafe(|| (data.f)(&mut gil, &a))) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => report(e.code(), &e.to_string()),
                Err(_) => report(sys::TETHER_EINVAL, "a Rust callback panicked"),
            }
        }
        unsafe extern "C" fn free_data(ud: *mut c_void) {
            drop(Box::from_raw(ud as *mut CallbackData));
        }
        let sig = CString::new(signature)
            .map_err(|_| Error::new(sys::TETHER_EINVAL, "the signature holds a NUL byte"))?;
        let ud = Box::into_raw(Box::new(CallbackData { interp, f: Box::new(f) })) as *mut c_void;
        let mut h = 0;
        if let Err(e) = status!(callback_new(interp.h, sig.as_ptr(), Some(guest), ud, &mut h)) {
            // SAFETY: the library did not take it.
            unsafe { free_data(ud) };
            return Err(e);
        }
        if let Err(e) = status!(callback_on_free(h, Some(free_data), ud)) {
            let _ = call!(callback_free(h)); // no call can have run yet
            // SAFETY: the callback is gone and nothing ran fn.
            unsafe { free_data(ud) };
            return Err(e);
        }
        Ok(Callback { h })
    }

    /// The C function: call it (cast to its signature's type) from any
    /// thread until this `Callback` is dropped, or longer if C code retained
    /// the handle.
    pub fn code(&self) -> *mut c_void {
        call!(callback_code(self.h)).unwrap_or(ptr::null_mut())
    }

    /// The raw handle, for C code that retains it.
    pub fn as_raw(&self) -> sys::tether_callback {
        self.h
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        let _ = call!(callback_free(self.h));
    }
}

/// Sets the thread's last-error sentence to `msg` and returns `code`, for a
/// status that C will read (a thread function's, a guest function's).
pub(crate) fn report(code: Status, msg: &str) -> c_int {
    let m = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    match call!(set_error(code, m.as_ptr())) {
        Ok(rc) => rc,
        Err(_) => code,
    }
}
