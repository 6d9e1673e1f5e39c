// A Rust host in five minutes: a runtime, guest state behind the GIL, and
// a guest callback that threads the runtime never saw call, each call
// holding the GIL.  docs/languages.md shows this file; test
// rust.example_foreign_thread runs it.
use std::sync::Arc;
use std::time::Duration;

use tether::{Callback, GilCell, Runtime};

fn main() -> tether::Result<()> {
    let rt = Runtime::new()?; // returns holding no GIL
    let interp = rt.main_interp();

    // Guest state: only code holding the GIL (a &mut Gil) can reach it.
    let calls = Arc::new(GilCell::new(0u32));

    // The guest callback: a C function pointer whose calls run this
    // closure under the GIL, on whatever thread calls it.
    let seen = calls.clone();
    let cb = Callback::new(interp, "i32(i32)", move |gil, args| {
        // SAFETY: the signature says one i32 in, one i32 out.
        let x: i32 = unsafe { args.arg(0) };
        seen.with(gil, |n| *n += 1);
        unsafe { args.set_ret(x * 2) };
        Ok(())
    })?;
    // SAFETY: the code has the signature given above.
    let twice: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(cb.code()) };

    // Foreign threads: plain std::threads, as a C library's would be.
    let results: Vec<i32> = (1..=4)
        .map(|x| std::thread::spawn(move || twice(x)))
        .map(|t| t.join().expect("the thread ran"))
        .collect();
    assert_eq!(results, [2, 4, 6, 8]);

    // A foreign thread can also take the GIL itself, with a guard.
    let c = calls.clone();
    std::thread::spawn(move || -> tether::Result<()> {
        let mut gil = interp.ensure()?; // tether_ensure; dropped: release
        c.with(&mut gil, |n| *n += 100);
        Ok(())
    })
    .join()
    .expect("the thread ran")?;

    // A thread of the runtime, joined with a timeout.
    let mut t = interp.spawn(|gil| {
        gil.checkpoint()?; // an asynchronous exception would be an Err here
        Ok("done")
    })?;
    assert_eq!(t.join(Some(Duration::from_secs(60)))?, "done");

    let total = calls.with(&mut interp.ensure()?, |n| *n);
    println!("{total} guest calls, each holding the GIL");
    assert_eq!(total, 104);
    drop(cb);
    rt.finalize(Some(Duration::from_secs(60)))
}
