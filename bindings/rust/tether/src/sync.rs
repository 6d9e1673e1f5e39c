//! Locks, events and channels: interruptible waits that release the GIL
//! while they block.  Every function of these objects is `[any-thread]`,
//! so each is `Send` and `Sync`, and frees its C object in `Drop`.
use std::os::raw::c_void;
use std::time::Duration;

use crate::{call, status, timeout_ns, Result};

/// A lock any thread may release (Python's `threading.Lock`).
#[derive(Debug)]
pub struct Lock {
    h: crate::sys::tether_lock,
}

/// A held [`Lock`]; dropping it releases the lock.  It may be sent to and
/// dropped on another thread, as the C lock allows.
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> Result<Lock> {
        let mut h = 0;
        status!(lock_new(&mut h))?;
        Ok(Lock { h })
    }

    /// Waits up to `timeout` (None: for ever) for the lock.  `EDEADLK`: this
    /// thread holds it; `ETIMEDOUT`; `EASYNC` with the exception.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<LockGuard<'_>> {
        status!(lock_acquire(self.h, timeout_ns(timeout)))?;
        Ok(LockGuard { lock: self })
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = call!(lock_release(self.lock.h));
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = call!(lock_free(self.h));
    }
}

/// An event flag (Python's `threading.Event`).
#[derive(Debug)]
pub struct Event {
    h: crate::sys::tether_event,
}

impl Event {
    /// A new, clear event.
    pub fn new() -> Result<Event> {
        let mut h = 0;
        status!(event_new(&mut h))?;
        Ok(Event { h })
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<()> {
        status!(event_set(self.h)).map(drop)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<()> {
        status!(event_clear(self.h)).map(drop)
    }

    /// True if set.
    pub fn is_set(&self) -> bool {
        matches!(call!(event_is_set(self.h)), Ok(1))
    }

    /// Waits up to `timeout` (None: for ever) for the flag, with the GIL
    /// released.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        status!(event_wait(self.h, timeout_ns(timeout))).map(drop)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let _ = call!(event_free(self.h));
    }
}

/// A FIFO of byte messages between any threads of any interpreters (ABI
/// 1.1).  `clone` adds a reference; the last `Drop` closes and frees it.
#[derive(Debug)]
pub struct Channel {
    h: crate::sys::tether_channel,
}

impl Channel {
    /// A channel of at most `capacity` messages (0: no bound).
    pub fn new(capacity: usize) -> Result<Channel> {
        let mut h = 0;
        status!(channel_new(capacity, &mut h))?;
        Ok(Channel { h })
    }

    /// Queues a copy of `msg`, waiting up to `timeout` for room.
    pub fn send(&self, msg: &[u8], timeout: Option<Duration>) -> Result<()> {
        status!(channel_send(self.h, msg.as_ptr() as *const c_void, msg.len(), timeout_ns(timeout))).map(drop)
    }

    /// Takes the oldest message, waiting up to `timeout` for one.
    /// `ECLOSED` once closed and drained.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Vec<u8>> {
        let mut p: *mut c_void = std::ptr::null_mut();
        let mut n = 0usize;
        status!(channel_recv(self.h, &mut p, &mut n, timeout_ns(timeout)))?;
        // SAFETY: on success p holds n bytes we own.
        let v = unsafe { std::slice::from_raw_parts(p as *const u8, n) }.to_vec();
        let _ = call!(channel_msg_free(p));
        Ok(v)
    }

    /// Closes the channel: sends fail, receives drain then fail, waiters wake.
    pub fn close(&self) -> Result<()> {
        status!(channel_close(self.h)).map(drop)
    }

    /// The number of messages queued now.
    pub fn len(&self) -> Result<usize> {
        let mut n = 0;
        status!(channel_count(self.h, &mut n))?;
        Ok(n)
    }

    /// True if nothing is queued now.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// Makes the channel set `ev` whenever it may have become ready to
    /// receive (a message queued, or closed): the way to wait on several
    /// channels at once.  Each `watch` needs its `unwatch`.
    pub fn watch(&self, ev: &Event) -> Result<()> {
        status!(channel_watch(self.h, ev.h)).map(drop)
    }

    /// Undoes one [`Channel::watch`] of `ev` (`EINVAL` if it does not watch).
    pub fn unwatch(&self, ev: &Event) -> Result<()> {
        status!(channel_unwatch(self.h, ev.h)).map(drop)
    }

    /// The raw handle (borrowed), to hand to C or another interpreter.
    pub fn as_raw(&self) -> crate::sys::tether_channel {
        self.h
    }
}

impl Clone for Channel {
    fn clone(&self) -> Channel {
        // A live handle: retain cannot fail but for a stale one, which a
        // Channel never holds.
        let _ = call!(channel_retain(self.h));
        Channel { h: self.h }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = call!(channel_release(self.h));
    }
}
