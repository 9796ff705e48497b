//! Interrupts and deadlines: stop Kiln code that runs too long, from
//! another thread (`InterruptHandle`) or with a per-call time limit
//! (`Config::deadline`). The running code throws `InterruptedException` at
//! its next safepoint poll, so even a loop without calls stops; Kiln code
//! may catch it like any exception.
//!
//! Run with `cargo run --example interrupts`.

use kiln::{Config, Error, Linker, Source, Value, Vm};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORK: &str = r#".library work
.class public Work {
  .method public static native ready()
  .method public static forever() -> i64 {
    .locals (i: i64)
    call Work::ready
  top:
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  }
  .method public static guarded() -> i32 {
    .try {
      call Work::forever
      pop
      leave out
    } catch InterruptedException {
      pop
      leave out
    }
  out:
    ldc.i32 1
    ret
  }
}
"#;

/// The example, for a given configuration (the test runs it in both modes).
pub fn run(config: &Config) -> Result<(), Error> {
    // A native tells the host when the loop is running.
    let ready = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ready);
    let mut linker = Linker::new();
    linker.func("Work", "ready", move || flag.store(true, Ordering::SeqCst))?;
    let vm = Vm::new(config, &linker, &[Source::kasm("work", WORK)])?;

    // 1. Interrupt from another thread.
    let handle = vm.interrupt_handle();
    let waiter = Arc::clone(&ready);
    let killer = std::thread::spawn(move || {
        while !waiter.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        handle.interrupt()
    });
    let err = vm.call("Work::forever", &[]).unwrap_err();
    let exc = err.exception().expect("an exception");
    assert_eq!(exc.class, "InterruptedException");
    println!("interrupted: {err}");
    assert_eq!(
        killer.join().expect("no panic")?,
        1,
        "one thread was running"
    );

    // 2. Kiln code can catch the interrupt.
    ready.store(false, Ordering::SeqCst);
    let handle = vm.interrupt_handle();
    let waiter = Arc::clone(&ready);
    let killer = std::thread::spawn(move || {
        while !waiter.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        handle.interrupt()
    });
    assert_eq!(vm.call("Work::guarded", &[])?, Value::I32(1));
    killer.join().expect("no panic")?;

    // 3. A deadline bounds every call from the host.
    let mut limited = config.clone();
    limited.deadline(Some(Duration::from_millis(50)));
    let mut linker = Linker::new();
    linker.func("Work", "ready", || {})?;
    let vm = Vm::new(&limited, &linker, &[Source::kasm("work", WORK)])?;
    let t0 = Instant::now();
    let err = vm.call("Work::forever", &[]).unwrap_err();
    assert!(err
        .exception()
        .unwrap()
        .message
        .contains("deadline of 50ms exceeded"));
    println!("stopped after {:?}: {err}", t0.elapsed());
    assert!(t0.elapsed() >= Duration::from_millis(50));
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Error> {
    run(&Config::from_env()?)
}
