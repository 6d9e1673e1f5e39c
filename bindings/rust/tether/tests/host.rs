//! The safe crate against the real library: each test makes its own
//! runtime.  No test measures time: timeouts are only ever expected to
//! expire where nothing can end the wait (an event nobody sets).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use tether::{sys, Callback, Channel, Event, Gil, GilCell, Lock, Runtime, ThreadBuilder};

const LONG: Option<Duration> = Some(Duration::from_secs(120));
const SHORT: Option<Duration> = Some(Duration::from_millis(20));

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn handles_are_send_and_sync_where_the_c_tags_allow() {
    assert_send_sync::<Runtime>();
    assert_send_sync::<tether::Interp>();
    assert_send_sync::<tether::JoinHandle<u32>>();
    assert_send_sync::<tether::ThreadRef>();
    assert_send_sync::<Lock>();
    assert_send_sync::<Event>();
    assert_send_sync::<Channel>();
    assert_send_sync::<Callback>();
    assert_send_sync::<tether::Plugin>();
    assert_send_sync::<tether::Error>();
    assert_send_sync::<GilCell<Vec<u8>>>();
    // Gil is neither: see the compile_fail example on tether::Gil.
}

#[test]
fn foreign_threads_run_guest_code_under_the_gil() {
    let rt = Runtime::new().unwrap();
    let interp = rt.main_interp();
    // Guest state: reachable only with a Gil.
    let total = Arc::new(GilCell::new(0u64));
    std::thread::scope(|s| {
        for _ in 0..4 {
            let total = total.clone();
            s.spawn(move || {
                for _ in 0..200 {
                    let mut gil = interp.ensure().unwrap(); // a thread tether never saw
                    assert!(tether::gil_held());
                    total.with(&mut gil, |t| *t += 1);
                    gil.checkpoint().unwrap();
                }
                assert!(!tether::gil_held());
            });
        }
    });
    let mut gil = interp.ensure().unwrap();
    assert_eq!(total.with(&mut gil, |t| *t), 800);
    drop(gil);
    rt.finalize(LONG).unwrap();
}

#[test]
fn the_creating_thread_ensures_like_any_other() {
    let rt = Runtime::new().unwrap();
    assert!(!tether::gil_held(), "Runtime::new hands the GIL back");
    {
        let _outer = rt.main_interp().ensure().unwrap();
        let _inner = rt.main_interp().ensure().unwrap(); // guards nest
        assert!(tether::gil_held());
    }
    assert!(!tether::gil_held());
    rt.finalize(LONG).unwrap();
}

#[test]
fn join_times_out_then_returns_the_value() {
    let rt = Runtime::new().unwrap();
    let go = Arc::new(Event::new().unwrap());
    let go2 = go.clone();
    let opts = ThreadBuilder::new().name("worker");
    let mut t = tether::Thread::spawn(rt.main_interp(), opts, move |_gil: &mut Gil| {
        go2.wait(None)?;
        Ok(42u32)
    })
    .unwrap();
    assert_eq!(t.thread().name().unwrap(), "worker");
    let e = t.join(SHORT).unwrap_err(); // nobody set the event yet
    assert!(e.is_timeout(), "{e}");
    assert_eq!(e.code(), sys::TETHER_ETIMEDOUT);
    assert_eq!(e.name(), "ETIMEDOUT");
    go.set().unwrap();
    assert_eq!(t.join(LONG).unwrap(), 42);
    assert_eq!(t.join(LONG).unwrap_err().code(), sys::TETHER_ESTATE);
    assert!(!t.is_alive());
    rt.finalize(LONG).unwrap();
}

#[test]
fn async_exceptions_are_errors_at_checkpoints() {
    let rt = Runtime::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut t = rt
        .main_interp()
        .spawn(move |gil: &mut Gil| {
            tx.send(()).unwrap();
            let mut spins = 0u64;
            loop {
                gil.checkpoint()?; // the raise surfaces here as Err
                spins += 1;
                if spins % 64 == 0 {
                    tether::sleep(Duration::from_micros(100))?;
                }
            }
            #[allow(unreachable_code)]
            Ok(())
        })
        .unwrap();
    rx.recv().unwrap();
    t.thread().raise(7, Some(Box::new("stop"))).unwrap();
    let e = t.join(LONG).unwrap_err();
    assert_eq!(e.code(), sys::TETHER_EASYNC, "{e}");
    let exc = e.into_async_exception().expect("the exception");
    assert_eq!(exc.code, 7);
    assert_eq!(*exc.payload.unwrap().downcast::<&str>().unwrap(), "stop");
    rt.finalize(LONG).unwrap();
}

#[test]
fn an_async_exception_wakes_a_wait() {
    let rt = Runtime::new().unwrap();
    let never = Arc::new(Event::new().unwrap());
    let started = Arc::new(Event::new().unwrap());
    let (n2, s2) = (never.clone(), started.clone());
    let mut t = rt
        .main_interp()
        .spawn(move |_gil: &mut Gil| {
            s2.set()?;
            n2.wait(None) // woken only by the raise
        })
        .unwrap();
    started.wait(LONG).unwrap();
    t.raise(3).unwrap();
    let e = t.join(LONG).unwrap_err();
    assert_eq!(e.async_exception().map(|x| x.code), Some(3), "{e}");
    rt.finalize(LONG).unwrap();
}

#[test]
fn allow_threads_lets_another_thread_take_the_gil() {
    let rt = Runtime::new().unwrap();
    let interp = rt.main_interp();
    let mut gil = interp.ensure().unwrap();
    // The other thread needs the GIL before it can answer; holding it while
    // waiting would deadlock.
    let answer = gil
        .allow_threads(|| {
            std::thread::spawn(move || {
                let _g = interp.ensure().unwrap();
                tether::gil_held()
            })
            .join()
            .unwrap()
        })
        .unwrap();
    assert!(answer);
    assert!(tether::gil_held());
    drop(gil);
    rt.finalize(LONG).unwrap();
}

#[test]
fn call_blocking_is_cut_short_by_the_unblock_closure() {
    let rt = Runtime::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut t = rt
        .main_interp()
        .spawn(move |gil: &mut Gil| {
            let flag = Arc::new((Mutex::new(false), Condvar::new()));
            let f2 = flag.clone();
            tx.send(gil.current_thread()?).unwrap();
            let r = gil.call_blocking(
                move || {
                    // A blocking wait that only the unblock closure ends.
                    let (m, c) = &*f2;
                    let mut woke = m.lock().unwrap();
                    while !*woke {
                        woke = c.wait(woke).unwrap();
                    }
                    "returned"
                },
                || {
                    let (m, c) = &*flag;
                    *m.lock().unwrap() = true;
                    c.notify_all();
                },
            );
            let e = r.unwrap_err();
            Ok(e.async_exception().map(|x| x.code))
        })
        .unwrap();
    let me = rx.recv().unwrap();
    // Raising at the thread: the library calls the unblock closure, the
    // blocking call returns, and re-attaching delivers the exception.
    // The raise may come before the call blocks: then the call starts with
    // the exception pending and is unblocked at once.
    me.raise(9, None).unwrap();
    assert_eq!(t.join(LONG).unwrap(), Some(9));
    rt.finalize(LONG).unwrap();
}

#[test]
fn locks_events_and_channels() {
    let rt = Runtime::new().unwrap();
    let lock = Lock::new().unwrap();
    let g = lock.acquire(None).unwrap();
    let e = lock.acquire(None).unwrap_err();
    assert_eq!(e.code(), sys::TETHER_EDEADLK);
    assert!(e.message().contains("tether_lock_acquire"), "{}", e.message());
    drop(g);
    drop(lock.acquire(Some(Duration::ZERO)).unwrap());

    let ev = Event::new().unwrap();
    assert!(!ev.is_set());
    assert!(ev.wait(Some(Duration::ZERO)).unwrap_err().is_timeout());
    ev.set().unwrap();
    assert!(ev.is_set());
    ev.wait(None).unwrap();

    let ch = Channel::new(2).unwrap();
    let other = ch.clone();
    let sender = std::thread::spawn(move || {
        for i in 0..10u8 {
            other.send(&[i; 3], None).unwrap();
        }
        other.close().unwrap();
    });
    let mut got = Vec::new();
    loop {
        match ch.recv(LONG) {
            Ok(m) => got.push(m),
            Err(e) => {
                assert_eq!(e.code(), sys::TETHER_ECLOSED, "{e}");
                break;
            }
        }
    }
    sender.join().unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(got[9], vec![9u8; 3]);
    assert_eq!(ch.send(b"x", None).unwrap_err().code(), sys::TETHER_ECLOSED);

    // One event watching two channels: a send to either sets it.
    let (a, b, ev) = (Channel::new(0).unwrap(), Channel::new(0).unwrap(), Event::new().unwrap());
    a.watch(&ev).unwrap();
    b.watch(&ev).unwrap();
    b.send(b"from b", None).unwrap();
    ev.wait(None).unwrap();
    assert!(a.recv(Some(Duration::ZERO)).unwrap_err().is_timeout());
    assert_eq!(b.recv(Some(Duration::ZERO)).unwrap(), b"from b");
    a.unwatch(&ev).unwrap();
    b.unwatch(&ev).unwrap();
    assert_eq!(a.unwatch(&ev).unwrap_err().code(), sys::TETHER_EINVAL);
    rt.finalize(LONG).unwrap();
}

#[test]
fn a_callback_runs_a_closure_on_foreign_threads() {
    let rt = Runtime::new().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let cb = Callback::new(rt.main_interp(), "i32(i32,i32)", move |_gil, a| {
        assert!(tether::gil_held());
        c2.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the signature says i32(i32,i32).
        unsafe {
            let (x, y): (i32, i32) = (a.arg(0), a.arg(1));
            a.set_ret(x + y);
        }
        Ok(())
    })
    .unwrap();
    // SAFETY: the callback's code has this signature.
    let f: extern "C" fn(i32, i32) -> i32 = unsafe { std::mem::transmute(cb.code()) };
    let sums: Vec<i32> = (0..4)
        .map(|k| std::thread::spawn(move || f(k, 100)))
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(sums, vec![100, 101, 102, 103]);
    assert_eq!(calls.load(Ordering::Relaxed), 4);
    drop(cb);
    rt.finalize(LONG).unwrap();
}

#[test]
fn bad_input_is_an_error_with_the_librarys_sentence() {
    let rt = Runtime::new().unwrap();
    let long = "n".repeat(200);
    let e = ThreadBuilder::new()
        .name(&long)
        .spawn(rt.main_interp(), |_g: &mut Gil| Ok(()))
        .err()
        .expect("a 200-byte name is refused");
    assert_eq!(e.code(), sys::TETHER_EINVAL);
    assert!(e.to_string().contains("tether_thread_start"), "{e}");
    let e = rt.load_plugin("/nonexistent/plugin.so").unwrap_err();
    assert_eq!(e.code(), sys::TETHER_EPLUGIN);
    assert!(e.message().contains("tether_plugin_load"), "{}", e.message());
    let e = tether::Interp::from_raw(0).ensure().unwrap_err();
    assert_eq!(e.code(), sys::TETHER_EBADHANDLE);
    rt.finalize(LONG).unwrap();
}

#[test]
fn finalize_waits_for_threads_and_reports_a_timeout() {
    let rt = Runtime::new().unwrap();
    let never = Arc::new(Event::new().unwrap());
    let n2 = never.clone();
    let mut t = rt.main_interp().spawn(move |_g: &mut Gil| n2.wait(None)).unwrap();
    // The thread waits for an event nobody sets: finalize times out, and
    // the thread's wait answers EFINALIZING.
    let e = rt.finalize(SHORT).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let r = t.join(LONG);
    assert!(matches!(&r, Err(e) if e.is_finalizing() || e.code() == sys::TETHER_EBADHANDLE), "{r:?}");
}

#[test]
fn version_and_abi() {
    assert_eq!(tether::abi_version() >> 16, sys::TETHER_ABI_MAJOR);
    assert!(tether::abi_version() & 0xffff >= sys::TETHER_ABI_MINOR);
    assert_eq!(tether::version(), format!("{}.{}.{}", sys::TETHER_VERSION_MAJOR, sys::TETHER_VERSION_MINOR, sys::TETHER_VERSION_PATCH));
}

#[test]
fn a_guard_dropped_before_an_inner_one_is_released_with_it() {
    // Safe code may drop the outer guard first.  Its tether_release was
    // refused (ESTATE, out of order) and ignored, so after both drops the
    // thread still held the GIL, for ever (issue 22 review).
    let rt = Runtime::new().unwrap();
    let interp = rt.main_interp();
    let outer = interp.ensure().unwrap();
    let inner = interp.ensure().unwrap();
    drop(outer);
    assert!(tether::gil_held(), "the inner guard still holds it");
    drop(inner);
    assert!(!tether::gil_held(), "both guards are gone");
    // Three deep, the middle one first.
    let a = interp.ensure().unwrap();
    let b = interp.ensure().unwrap();
    let c = interp.ensure().unwrap();
    drop(b);
    drop(c);
    assert!(tether::gil_held());
    drop(a);
    assert!(!tether::gil_held());
    rt.finalize(LONG).unwrap();
}
