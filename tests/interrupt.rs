//! Interrupts from outside (`kiln::safepoint::interrupt`): a loop without
//! calls stops with `InterruptedException`, in both execution modes, caught
//! by a kasm handler or uncaught; with GC stress; with several Kiln threads;
//! a request made while no thread is attached stays pending. Waits are
//! bounded (generous timeouts) and nothing asserts on timing beyond "it
//! stopped". The deadline through the CLI is `jit-tests/interrupt/`.

use kiln::runtime::{load, ExecMode, Options, Runtime};

use kiln::safepoint::interrupt::Reason;
use kiln::vm::thread::{call_method, ThreadCtx};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SRC: &str = r#"
.library intr
.class public Box {
  .field public mutable next: Box
  .field public mutable name: string
}
.class public Spinner implements Runnable {
  .method public ctor() {
    ret
  }
  .method public run() {
    .locals (i: i64)
  top:
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  }
}
.class public P {
  ; Set to 1 when a loop is about to start (the host waits for it, so the
  ; interrupt reaches the loop and not a method-entry poll).
  .field public static mutable ready: i64
  ; An infinite loop with no calls.
  .method public static spin() -> i32 {
    .locals (i: i64)
    ldc.i64 1
    stsfld P::ready
  top:
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  }
  ; The loop inside a try: the handler catches the interrupt, returns 42.
  .method public static caught() -> i32 {
    .locals (i: i64)
    .try {
      ldc.i64 1
      stsfld P::ready
    top:
      ldloc i
      ldc.i64 1
      add
      stloc i
      br top
    } catch InterruptedException {
      pop
      leave got
    }
  got:
    ldc.i32 42
    ret
  }
  ; The handler is in the caller; a finally runs on the way.
  .method public static outer() -> i32 {
    .try {
      .try {
        call P::spin
        pop
        leave done
      } finally {
        ldstr "finally ran"
        call Std::println
        endfinally
      }
    } catch InterruptedException {
      pop
      leave got
    }
  done:
    ldc.i32 1
    ret
  got:
    ldc.i32 7
    ret
  }
  ; Allocates in the loop (with GC stress: a collection per allocation).
  .method public static alloc() -> i32 {
    .locals (b: Box, c: Box)
    ldc.i64 1
    stsfld P::ready
  top:
    newobj Box::ctor
    stloc c
    ldloc c
    ldloc b
    stfld Box::next
    ldloc c
    stloc b
    newobj Box::ctor
    stloc b
    br top
  }
  ; Starts three spinning threads, then joins them in a loop.
  .method public static threads() -> i32 {
    .locals (ts: Thread[], i: i32)
    ldc.i32 3
    newarr Thread
    stloc ts
  start:
    ldloc i
    ldc.i32 3
    bge started
    ldloc ts
    ldloc i
    newobj Spinner::ctor
    call Thread::start
    stelem Thread
    ldloc i
    ldc.i32 1
    add
    stloc i
    br start
  started:
    ldc.i32 0
    stloc i
  join:
    ldloc i
    ldc.i32 3
    bge joined
    ldloc ts
    ldloc i
    ldelem Thread
    call Thread::join
    ldloc i
    ldc.i32 1
    add
    stloc i
    br join
  joined:
    ldc.i32 5
    ret
  }
  .method public static main() {
    ret
  }
}
"#;

fn runtime(mode: ExecMode, gc_stress: bool) -> Arc<Runtime> {
    let dir = std::env::temp_dir().join(format!("kiln-interrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("intr.kasm");
    if !p.exists() {
        let tmp = dir.join(format!("intr.{:?}.tmp", std::thread::current().id()));
        std::fs::write(&tmp, SRC).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }
    let (program, files, verified) = load::load_verified(&p).unwrap_or_else(|e| panic!("{e:?}"));
    let opts = Options {
        mode,
        stack_size: 16 << 20,
        heap_max: 64 << 20,
        gc_stress,
        ..Options::default()
    };
    let rt = Arc::new(
        kiln::engine::new_runtime(program, files, &verified, opts)
            .unwrap_or_else(|e| panic!("{e:?}")),
    );
    if mode == ExecMode::Jit {
        kiln::jit::install(&rt, verified).unwrap();
    }
    rt.set_shared();
    rt
}

/// How a call ended: its result, or the exception's class and message.
#[derive(Debug, PartialEq)]
enum Outcome {
    Returned(i32),
    Threw(String, String),
}

/// `P::ready`'s address.
fn ready(rt: &Runtime) -> *mut i64 {
    let p = rt.program.class("P").unwrap();
    let f = rt.program.find_field(p, "ready").unwrap();
    rt.tables.field(f).static_addr as *mut i64
}

/// Wait (bounded) until the running method has set `P::ready`.
fn wait_ready(rt: &Runtime) {
    let t0 = Instant::now();
    // SAFETY: a static i64 of the runtime, written by the kasm thread.
    while unsafe { std::ptr::read_volatile(ready(rt)) } == 0 {
        assert!(t0.elapsed() < LIMIT, "the loop did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Run static method `name` on a new thread; the sender gets `()` once the
/// thread is attached, then the outcome.
fn start(rt: &Arc<Runtime>, name: &str) -> (mpsc::Receiver<()>, mpsc::Receiver<Outcome>) {
    let (att_tx, att_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let rt = Arc::clone(rt);
    let name = name.to_string();
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            let mh = rt
                .tables
                .all_methods()
                .find(|m| rt.method_name(m) == name)
                .unwrap_or_else(|| panic!("no method {name}")) as *const _;
            let mut ctx = ThreadCtx::new(&*rt, 16 << 20);
            // SAFETY: `ctx` outlives the attachment (declared before it).
            let att = unsafe { kiln::runtime::roots::attach(&rt, &mut ctx) };
            att_tx.send(()).unwrap();
            // SAFETY: a static method without arguments of this runtime.
            let r = unsafe { call_method(&mut ctx, mh, std::ptr::null()) };
            let out = if ctx.has_pending() {
                // SAFETY: a pending exception is a live Exception object.
                unsafe {
                    let cd = &*kiln::vm::object::class_of(ctx.pending);
                    let m = *(ctx.pending.add(rt.message_offset) as *const *const u8);
                    let msg =
                        String::from_utf8_lossy(kiln::vm::object::string_bytes(m)).into_owned();
                    Outcome::Threw(cd.name().to_string(), msg)
                }
            } else {
                Outcome::Returned(r as i32)
            };
            drop(att);
            let _ = tx.send(out);
        })
        .unwrap();
    (att_rx, rx)
}

const LIMIT: Duration = Duration::from_secs(60);

fn interrupt_after_attach(mode: ExecMode, gc_stress: bool, name: &str) -> Outcome {
    let rt = runtime(mode, gc_stress);
    let (att, done) = start(&rt, name);
    att.recv_timeout(LIMIT).expect("thread attached");
    wait_ready(&rt);
    assert!(
        done.try_recv().is_err(),
        "{name} ended before the interrupt"
    );
    let d = rt.interrupt_handle().interrupt().unwrap().unwrap();
    assert_eq!(d.threads, 1, "delivered to the one attached thread");
    done.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{name} ({mode:?}) did not stop after an interrupt"))
}

fn interrupted_deadline() -> Outcome {
    Outcome::Threw("InterruptedException".into(), "deadline exceeded".into())
}

fn interrupted() -> Outcome {
    Outcome::Threw("InterruptedException".into(), "interrupted".into())
}

#[test]
fn uncaught_loop_without_calls_stops() {
    for mode in [ExecMode::Interp, ExecMode::Jit] {
        assert_eq!(
            interrupt_after_attach(mode, false, "P::spin"),
            interrupted(),
            "{mode:?}"
        );
    }
}

#[test]
fn caught_by_kasm_handler() {
    for mode in [ExecMode::Interp, ExecMode::Jit] {
        assert_eq!(
            interrupt_after_attach(mode, false, "P::caught"),
            Outcome::Returned(42),
            "{mode:?}"
        );
        assert_eq!(
            interrupt_after_attach(mode, false, "P::outer"),
            Outcome::Returned(7),
            "{mode:?}"
        );
    }
}

#[test]
fn interrupt_under_gc_stress() {
    for mode in [ExecMode::Interp, ExecMode::Jit] {
        assert_eq!(
            interrupt_after_attach(mode, true, "P::alloc"),
            interrupted(),
            "{mode:?}"
        );
        assert_eq!(
            interrupt_after_attach(mode, true, "P::caught"),
            Outcome::Returned(42),
            "{mode:?}"
        );
    }
}

#[test]
fn each_request_throws_once() {
    // After a caught interrupt the thread runs on; a second request
    // interrupts it again (the loop in `outer` is a fresh call).
    for mode in [ExecMode::Interp, ExecMode::Jit] {
        let rt = runtime(mode, false);
        let h = rt.interrupt_handle();
        for _ in 0..3 {
            // SAFETY: no kasm thread runs now.
            unsafe { *ready(&rt) = 0 };
            let (att, done) = start(&rt, "P::caught");
            att.recv_timeout(LIMIT).unwrap();
            wait_ready(&rt);
            h.interrupt().unwrap();
            assert_eq!(done.recv_timeout(LIMIT).unwrap(), Outcome::Returned(42));
        }
        assert_eq!(rt.interrupts.epoch(), 3);
        assert!(!rt.interrupts.has_pending());
    }
}

#[test]
fn request_without_threads_stays_pending() {
    for mode in [ExecMode::Interp, ExecMode::Jit] {
        let rt = runtime(mode, false);
        let d = rt.interrupt_handle().interrupt().unwrap().unwrap();
        assert_eq!(d.threads, 0);
        assert!(rt.interrupts.has_pending());
        let (_att, done) = start(&rt, "P::spin");
        assert_eq!(done.recv_timeout(LIMIT).unwrap(), interrupted(), "{mode:?}");
        assert!(
            !rt.interrupts.has_pending(),
            "consumed by the attaching thread"
        );
    }
}

#[test]
fn several_kiln_threads() {
    for mode in [ExecMode::Interp, ExecMode::Jit] {
        let rt = runtime(mode, false);
        let (att, done) = start(&rt, "P::threads");
        att.recv_timeout(LIMIT).unwrap();
        // Wait (bounded) until the three spinners are attached too.
        let t0 = Instant::now();
        loop {
            let mut n = 0;
            rt.gc.for_each_attached(|_| n += 1);
            if n == 4 {
                break;
            }
            assert!(t0.elapsed() < LIMIT, "threads did not start");
            std::thread::sleep(Duration::from_millis(2));
        }
        let d = rt.interrupt_handle().interrupt().unwrap().unwrap();
        assert_eq!(d.threads, 4);
        // Main was blocked in Thread::join (native): it throws at its first
        // poll after the join returns.
        assert_eq!(done.recv_timeout(LIMIT).unwrap(), interrupted(), "{mode:?}");
        // Every spinner ended (its uncaught exception is reported on stderr).
        let (tx, rx) = mpsc::channel();
        let rt2 = Arc::clone(&rt);
        std::thread::spawn(move || {
            for id in 1..=3 {
                rt2.wait_thread(id, || false);
            }
            let _ = tx.send(());
        });
        rx.recv_timeout(LIMIT).expect("every spinner stopped");
    }
}

#[test]
fn deadline_reason_and_watchdog() {
    for mode in [ExecMode::Interp, ExecMode::Jit] {
        let rt = runtime(mode, false);
        let (att, done) = start(&rt, "P::spin");
        att.recv_timeout(LIMIT).unwrap();
        let w = kiln::runtime::interrupt::Watchdog::start(
            rt.interrupt_handle(),
            Duration::from_millis(30),
        )
        .unwrap();
        let out = done.recv_timeout(LIMIT).expect("deadline stopped the loop");
        assert!(w.fired());
        assert_eq!(
            out,
            Outcome::Threw("InterruptedException".into(), "deadline exceeded".into())
        );
        // A cancelled watchdog never fires.
        let w = kiln::runtime::interrupt::Watchdog::start(
            rt.interrupt_handle(),
            Duration::from_secs(3600),
        )
        .unwrap();
        assert!(!w.fired());
        w.cancel();
        assert_eq!(rt.interrupts.epoch(), 1);
        // After the deadline every thread that attaches throws at its first poll.
        assert!(rt.interrupts.expired());
        // (At `caught`'s entry poll, outside its try: not caught.)
        let (_att, done) = start(&rt, "P::caught");
        assert_eq!(done.recv_timeout(LIMIT).unwrap(), interrupted_deadline());
        let (_att, done) = start(&rt, "P::spin");
        assert_eq!(
            done.recv_timeout(LIMIT).unwrap(),
            Outcome::Threw("InterruptedException".into(), "deadline exceeded".into())
        );
    }
}

#[test]
fn handle_outlives_runtime() {
    let rt = runtime(ExecMode::Interp, false);
    let h = rt.interrupt_handle();
    let h2 = h.clone();
    drop(rt);
    assert_eq!(h2.interrupt_with(Reason::Interrupt).unwrap(), None);
    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    send_sync(&h);
}

#[test]
fn deadline_parsing() {
    use kiln::safepoint::interrupt::parse_deadline;
    assert_eq!(parse_deadline("D", "250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_deadline("D", "2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_deadline("D", "5m"), Ok(Duration::from_secs(300)));
    for bad in [
        "",
        "0s",
        "5",
        "1.5s",
        "-1s",
        "s",
        "10h",
        "99999999999999999999m",
        "2 s",
    ] {
        let e = parse_deadline("KILN_DEADLINE", bad).unwrap_err();
        assert!(
            e.contains("KILN_DEADLINE") && e.contains("ms, s or m"),
            "{bad}: {e}"
        );
    }
}
