//! Threads of an interpreter: `tether_thread_start` with a Rust closure,
//! joined with a timeout, raised at with an asynchronous exception.
use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{call, check, drop_payload, report, status, sys, timeout_ns, Error, Gil, Interp, Result};

/// What a thread leaves for its joiner.
enum Outcome<T> {
    Running,
    Done(Result<T>),
    Panicked(Box<dyn std::any::Any + Send>),
    Taken,
}

struct Shared<T, F> {
    f: Mutex<Option<F>>,
    out: Mutex<Outcome<T>>,
    interp: Interp,
}

/// Options of a thread: its name, daemon or not, stack size.
#[derive(Clone, Debug, Default)]
pub struct ThreadBuilder {
    name: Option<String>,
    daemon: bool,
    stack_size: usize,
}

impl ThreadBuilder {
    /// The defaults: "Thread-N", non-daemon (finalize waits for it), the
    /// default stack.
    pub fn new() -> ThreadBuilder {
        ThreadBuilder::default()
    }

    /// The thread's name (at most 127 bytes).
    pub fn name(mut self, name: &str) -> ThreadBuilder {
        self.name = Some(name.to_string());
        self
    }

    /// A daemon thread: finalize does not wait for it.
    pub fn daemon(mut self, yes: bool) -> ThreadBuilder {
        self.daemon = yes;
        self
    }

    /// The stack size in bytes (0: the default).
    pub fn stack_size(mut self, bytes: usize) -> ThreadBuilder {
        self.stack_size = bytes;
        self
    }

    /// Starts an OS thread attached to `interp` running `f` holding its GIL
    /// (`tether_thread_start`).  `f`'s `Err` is the thread's result: its
    /// status goes to the runtime's excepthook, as a C thread function's
    /// does, and [`JoinHandle::join`] returns it.
    pub fn spawn<T, F>(self, interp: Interp, f: F) -> Result<JoinHandle<T>>
    where
        F: FnOnce(&mut Gil) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        unsafe extern "C" fn main<T, F>(arg: *mut c_void) -> c_int
        where
            F: FnOnce(&mut Gil) -> Result<T>,
        {
            // The reference the starter gave this thread.
            let sh = Arc::from_raw(arg as *const Shared<T, F>);
            let f = sh.f.lock().unwrap_or_else(|e| e.into_inner()).take();
            let f = match f {
                Some(f) => f,
                None => return sys::TETHER_ESTATE,
            };
            let mut gil = Gil::borrowed(sh.interp);
            let r = panic::catch_unwind(AssertUnwindSafe(|| f(&mut gil)));
            let (rc, out) = match r {
                Ok(Ok(v)) => (0, Outcome::Done(Ok(v))),
                Ok(Err(e)) => (report(e.code(), &e.to_string()), Outcome::Done(Err(e))),
                Err(p) => (report(sys::TETHER_EINVAL, "the thread's closure panicked"), Outcome::Panicked(p)),
            };
            *sh.out.lock().unwrap_or_else(|e| e.into_inner()) = out;
            rc
        }
        let sh = Arc::new(Shared { f: Mutex::new(Some(f)), out: Mutex::new(Outcome::Running), interp });
        let name = match &self.name {
            Some(n) => Some(
                CString::new(n.as_str())
                    .map_err(|_| Error::new(sys::TETHER_EINVAL, "the thread name holds a NUL byte"))?,
            ),
            None => None,
        };
        let opts = sys::tether_thread_opts {
            size: std::mem::size_of::<sys::tether_thread_opts>(),
            name: name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
            daemon: self.daemon as c_int,
            stack_size: self.stack_size,
        };
        let arg = Arc::into_raw(sh.clone()) as *mut c_void;
        let mut t = 0;
        let rc = call!(thread_start(interp.as_raw(), Some(main::<T, F>), arg, &opts, &mut t))?;
        if rc != 0 {
            let e = Error::from_status(rc);
            // Unless finalize raced the handshake (the thread may run on,
            // with its reference), the thread never started: take the
            // reference back.
            if rc != sys::TETHER_EFINALIZING {
                // SAFETY: arg came from Arc::into_raw above and was not used.
                unsafe { Arc::decrement_strong_count(arg as *const Shared<T, F>) };
            }
            return Err(e);
        }
        Ok(JoinHandle { t: ThreadRef::from_owned(t), shared: sh, arg })
    }
}

/// Threads of an interpreter: `Thread::spawn(interp, opts, f)` is
/// `opts.spawn(interp, f)` ([`ThreadBuilder::spawn`]).
#[derive(Debug)]
pub struct Thread;

impl Thread {
    /// Starts a thread of `interp` with options `opts` running `f` holding
    /// its GIL; see [`ThreadBuilder::spawn`].
    pub fn spawn<T, F>(interp: Interp, opts: ThreadBuilder, f: F) -> Result<JoinHandle<T>>
    where
        F: FnOnce(&mut Gil) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        opts.spawn(interp, f)
    }
}

/// A thread handle: any thread may join it, ask about it, or raise at it.
/// Dropping it releases the handle; the thread runs on.
#[derive(Debug)]
pub struct ThreadRef {
    h: sys::tether_thread,
}

impl ThreadRef {
    pub(crate) fn from_owned(h: sys::tether_thread) -> ThreadRef {
        ThreadRef { h }
    }

    /// The raw handle (borrowed).
    pub fn as_raw(&self) -> sys::tether_thread {
        self.h
    }

    /// True while the thread runs.
    pub fn is_alive(&self) -> bool {
        matches!(call!(thread_is_alive(self.h)), Ok(1))
    }

    /// The thread's name.
    pub fn name(&self) -> Result<String> {
        let mut p = std::ptr::null();
        status!(thread_name(self.h, &mut p))?;
        Ok(crate::cstr(p))
    }

    /// Raises an asynchronous exception in the thread: it sees it as an
    /// `Err` at its next checkpoint, or at once in a wait.  `payload`
    /// reaches the thread's [`crate::AsyncException::payload`].
    pub fn raise(&self, code: i64, payload: Option<Box<dyn std::any::Any + Send + Sync>>) -> Result<()> {
        let (p, d): (*mut c_void, sys::tether_dtor) = match payload {
            Some(b) => (Box::into_raw(Box::new(b)) as *mut c_void, Some(drop_payload)),
            None => (std::ptr::null_mut(), None),
        };
        match call!(thread_raise(self.h, code, p, d)).and_then(check) {
            Ok(_) => Ok(()),
            Err(e) => {
                // On failure the payload was not taken.
                if !p.is_null() {
                    // SAFETY: still ours.
                    unsafe { drop_payload(p) };
                }
                Err(e)
            }
        }
    }
}

impl Drop for ThreadRef {
    fn drop(&mut self) {
        let _ = call!(thread_release(self.h));
    }
}

/// A thread started by [`ThreadBuilder::spawn`] or [`Interp::spawn`].
pub struct JoinHandle<T> {
    t: ThreadRef,
    shared: Arc<dyn Taken<T>>,
    arg: *mut c_void, // the thread's reference, while it may be unused
}

// SAFETY: `arg` is only compared and released once after a join; the rest
// is Send + Sync (T: Send travels to the joiner).
unsafe impl<T: Send> Send for JoinHandle<T> {}
unsafe impl<T: Send> Sync for JoinHandle<T> {}

/// The type-erased part of `Shared` a handle needs.
trait Taken<T>: Send + Sync {
    fn take(&self) -> Outcome<T>;
    fn never_ran(&self) -> bool;
    unsafe fn drop_thread_ref(&self, arg: *mut c_void);
}

impl<T: Send, F: Send> Taken<T> for Shared<T, F> {
    fn take(&self) -> Outcome<T> {
        std::mem::replace(&mut *self.out.lock().unwrap_or_else(|e| e.into_inner()), Outcome::Taken)
    }
    fn never_ran(&self) -> bool {
        self.f.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
    unsafe fn drop_thread_ref(&self, arg: *mut c_void) {
        Arc::decrement_strong_count(arg as *const Shared<T, F>);
    }
}

impl<T> JoinHandle<T> {
    /// Waits up to `timeout` (None: for ever) for the thread to finish, with
    /// the GIL released, and returns its closure's result.  A timeout is an
    /// `Err` with [`Error::is_timeout`] and the handle can be joined again;
    /// so is an asynchronous exception raised at the joiner.  A panic of the
    /// closure is resumed here.  Once the result is taken, another join
    /// answers `ESTATE`.
    pub fn join(&mut self, timeout: Option<Duration>) -> Result<T> {
        status!(thread_join(self.t.h, timeout_ns(timeout)))?;
        if !self.arg.is_null() && self.shared.never_ran() {
            // Finalize came before the thread first held the GIL: fn never
            // ran, so its reference is ours to drop.
            // SAFETY: the thread has finished without taking it.
            unsafe { self.shared.drop_thread_ref(self.arg) };
        }
        self.arg = std::ptr::null_mut();
        match self.shared.take() {
            Outcome::Done(r) => r,
            Outcome::Panicked(p) => panic::resume_unwind(p),
            Outcome::Running => {
                let mut rc = 0;
                let _ = call!(thread_result(self.t.h, &mut rc));
                Err(Error::new(
                    if rc < 0 { rc } else { sys::TETHER_ESTATE },
                    "the thread ended before its closure ran",
                ))
            }
            Outcome::Taken => Err(Error::new(sys::TETHER_ESTATE, "the thread's result was already taken")),
        }
    }

    /// The thread's handle: name, liveness, raising.
    pub fn thread(&self) -> &ThreadRef {
        &self.t
    }

    /// True while the thread runs.
    pub fn is_alive(&self) -> bool {
        self.t.is_alive()
    }

    /// Raises an asynchronous exception in the thread ([`ThreadRef::raise`]).
    pub fn raise(&self, code: i64) -> Result<()> {
        self.t.raise(code, None)
    }
}
