//! Safepoint tests. In-process tests are serialised by `TEST_LOCK` (a stop of
//! one test would otherwise also stop, and be slowed by, another test's
//! threads). Fault-forwarding tests run in a child process: the test binary
//! re-executes itself to run only `fault_child` with `KILN_SAFEPOINT_CHILD`
//! naming the scenario, and the parent checks the child's exit status.

use super::*;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::thread::{self, JoinHandle};

static TEST_LOCK: Mutex<()> = Mutex::new(());

fn test_lock() -> MutexGuard<'static, ()> {
    TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Wait (in native, yielding) until `cond` holds; panics after `WAIT_LIMIT`.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let _n = native_scope();
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT_LIMIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_micros(200));
    }
}

struct Spinner {
    data: usize,
    /// Address of a local of the spinner's loop (its stack).
    stack_hint: Arc<AtomicUsize>,
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// A registered thread whose loop is only `poll()`, arithmetic and atomic
/// loads/stores: no calls, no allocation.
fn spawn_spinner(data: usize) -> Spinner {
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stack_hint = Arc::new(AtomicUsize::new(0));
    let (c, s, h) = (
        Arc::clone(&counter),
        Arc::clone(&stop),
        Arc::clone(&stack_hint),
    );
    let handle = thread::spawn(move || {
        let guard = register_thread().expect("register spinner");
        guard.set_data(data);
        let mut x: u64 = data as u64;
        h.store(&x as *const u64 as usize, Ordering::Relaxed);
        let mut i: u64 = 0;
        while !s.load(Ordering::Relaxed) {
            poll();
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            i = i.wrapping_add(1);
            c.store(i, Ordering::Relaxed);
        }
        std::hint::black_box(x);
        drop(guard);
    });
    Spinner {
        data,
        stack_hint,
        counter,
        stop,
        handle: Some(handle),
    }
}

impl Spinner {
    fn count(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }
    fn wait_running(&self) {
        let c = self.count();
        wait_until("spinner progress", || self.count() > c + 1000);
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _n = native_scope();
            let r = h.join();
            if !thread::panicking() {
                r.expect("spinner thread");
            }
        }
    }
}

fn find(threads: &[ThreadInfo], data: usize) -> ThreadInfo {
    *threads
        .iter()
        .find(|t| t.data == data && !t.is_current)
        .unwrap_or_else(|| panic!("thread {data:#x} not in {threads:?}"))
}

#[test]
fn init_is_idempotent_and_poll_is_cheap_when_disarmed() {
    let a = init().expect("init");
    let b = init().expect("init again");
    assert_eq!(a, b);
    assert_eq!(poll_page_addr(), Some(a));
    assert_eq!(a % sys::page_size(), 0);
    for _ in 0..1000 {
        poll();
    }
}

#[test]
fn registration_rules() {
    let _l = test_lock();
    assert!(!is_registered());
    assert_eq!(current_state(), None);
    assert_eq!(
        stop_the_world(|_| ()).unwrap_err(),
        SafepointError::NotRegistered
    );
    let g = register_thread().expect("register");
    assert!(is_registered());
    assert_eq!(current_state(), Some(ThreadState::Running));
    assert_eq!(
        register_thread().err(),
        Some(SafepointError::AlreadyRegistered)
    );
    enter_native();
    enter_native();
    assert_eq!(current_state(), Some(ThreadState::InNative));
    leave_native();
    assert_eq!(current_state(), Some(ThreadState::InNative));
    leave_native();
    assert_eq!(current_state(), Some(ThreadState::Running));
    leave_native(); // unbalanced: no effect
    assert_eq!(current_state(), Some(ThreadState::Running));
    g.set_data(7);
    let nested = stop_the_world(|ts| {
        let me = ts.iter().find(|t| t.is_current).expect("caller listed");
        assert_eq!(me.data, 7);
        assert_eq!(me.state, ThreadState::InNative);
        stop_the_world(|_| ()).unwrap_err()
    })
    .expect("stop");
    assert_eq!(nested, SafepointError::Reentrant);
    assert_eq!(current_state(), Some(ThreadState::Running));
    drop(g);
    assert!(!is_registered());
    // Registering again after unregistering works (fresh alt stack).
    let g = register_thread().expect("register again");
    drop(g);
}

#[test]
fn spinning_thread_is_stopped_and_resumed() {
    let _l = test_lock();
    let me = register_thread().expect("register");
    me.set_data(0x100);
    let sp = spawn_spinner(0xA1);
    sp.wait_running();
    let (frozen, in_stw_count) = stop_the_world(|threads| {
        let t = find(threads, sp.data);
        assert_eq!(t.state, ThreadState::AtSafepoint);
        assert_ne!(t.stop_pc, 0, "the poll's PC is recorded");
        let hint = sp.stack_hint.load(Ordering::Relaxed);
        assert!(
            t.stop_sp.abs_diff(hint) < 1 << 20,
            "stop_sp {:#x} is not on the spinner's stack (near {hint:#x})",
            t.stop_sp
        );
        let me = threads.iter().find(|t| t.is_current).expect("caller");
        assert_eq!(me.data, 0x100);
        let c1 = sp.count();
        thread::sleep(Duration::from_millis(30));
        (c1, sp.count())
    })
    .expect("stop");
    assert_eq!(frozen, in_stw_count, "counter advanced while stopped");
    wait_until("spinner resumes", || sp.count() > frozen);
}

#[test]
fn several_spinners_stop_together() {
    let _l = test_lock();
    let _me = register_thread().expect("register");
    let spinners: Vec<Spinner> = (0..3).map(|i| spawn_spinner(0xB0 + i)).collect();
    for s in &spinners {
        s.wait_running();
    }
    let before = stop_the_world(|threads| {
        let before: Vec<u64> = spinners
            .iter()
            .map(|s| {
                assert_eq!(find(threads, s.data).state, ThreadState::AtSafepoint);
                s.count()
            })
            .collect();
        thread::sleep(Duration::from_millis(20));
        for (s, b) in spinners.iter().zip(&before) {
            assert_eq!(s.count(), *b, "spinner {:#x} ran while stopped", s.data);
        }
        before
    })
    .expect("stop");
    for (s, b) in spinners.iter().zip(&before) {
        wait_until("all spinners resume", || s.count() > *b);
    }
}

#[test]
fn native_thread_counts_as_stopped_and_blocks_on_return() {
    let _l = test_lock();
    let _me = register_thread().expect("register");
    let in_native = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let back = Arc::new(AtomicBool::new(false));
    let (n, g, b) = (Arc::clone(&in_native), Arc::clone(&go), Arc::clone(&back));
    let h = thread::spawn(move || {
        let guard = register_thread().expect("register native thread");
        guard.set_data(0xC1);
        enter_native();
        n.store(true, Ordering::SeqCst);
        // "Host code": runs on, not polling, until told to return.
        while !g.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_micros(100));
        }
        leave_native();
        b.store(true, Ordering::SeqCst);
        assert_eq!(current_state(), Some(ThreadState::Running));
    });
    wait_until("thread in native", || in_native.load(Ordering::SeqCst));
    stop_the_world(|threads| {
        assert_eq!(find(threads, 0xC1).state, ThreadState::InNative);
        go.store(true, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(50));
        assert!(
            !back.load(Ordering::SeqCst),
            "leave_native returned during a stop"
        );
    })
    .expect("stop");
    wait_until("thread back from native", || back.load(Ordering::SeqCst));
    let _n = native_scope();
    h.join().expect("native thread");
}

#[test]
fn repeated_stops_and_concurrent_collectors() {
    let _l = test_lock();
    let _me = register_thread().expect("register");
    let spinners: Vec<Spinner> = (0..2).map(|i| spawn_spinner(0xD0 + i)).collect();
    for s in &spinners {
        s.wait_running();
    }
    let before = stats();
    // Back to back: threads often have not woken up from the previous stop.
    const CYCLES: usize = 200;
    for _ in 0..CYCLES {
        stop_the_world(|threads| {
            for s in &spinners {
                assert_eq!(find(threads, s.data).state, ThreadState::AtSafepoint);
            }
        })
        .expect("stop");
    }
    assert!(stats().count >= before.count + CYCLES as u64);
    // A second collector thread racing with this one: both make progress.
    let done = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&done);
    let other = thread::spawn(move || {
        let _g = register_thread().expect("register collector 2");
        for _ in 0..50 {
            stop_the_world(|_| ()).expect("stop 2");
            d.fetch_add(1, Ordering::SeqCst);
        }
    });
    for _ in 0..50 {
        stop_the_world(|threads| {
            for s in &spinners {
                assert_eq!(find(threads, s.data).state, ThreadState::AtSafepoint);
            }
        })
        .expect("stop 1");
    }
    {
        let _n = native_scope();
        other.join().expect("collector 2");
    }
    assert_eq!(done.load(Ordering::SeqCst), 50);
    for s in &spinners {
        s.wait_running();
    }
}

#[test]
fn time_to_safepoint_of_running_threads() {
    let _l = test_lock();
    let _me = register_thread().expect("register");
    let spinners: Vec<Spinner> = (0..2).map(|i| spawn_spinner(0xE0 + i)).collect();
    const CYCLES: usize = 200;
    let mut ns: Vec<u64> = Vec::with_capacity(CYCLES);
    for _ in 0..CYCLES {
        // Every spinner is back in its loop (its counter moved) before each stop.
        for s in &spinners {
            let c = s.count();
            wait_until("spinner progress", || s.count() > c);
        }
        stop_the_world(|threads| {
            for s in &spinners {
                assert_eq!(find(threads, s.data).state, ThreadState::AtSafepoint);
            }
        })
        .expect("stop");
        ns.push(stats().last_ns);
    }
    ns.sort_unstable();
    eprintln!(
        "time-to-safepoint, {} running spinners, {CYCLES} stops: median {} ns, p90 {} ns, \
         max {} ns, mean {} ns (collector re-scans so far: {})",
        spinners.len(),
        ns[CYCLES / 2],
        ns[CYCLES * 9 / 10],
        ns[CYCLES - 1],
        ns.iter().sum::<u64>() / CYCLES as u64,
        stats().rescans
    );
}

#[test]
fn unregistering_during_stops_does_not_deadlock() {
    let _l = test_lock();
    let _me = register_thread().expect("register");
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicUsize::new(0));
    let (s, c) = (Arc::clone(&stop), Arc::clone(&cycles));
    let churn = thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let g = register_thread().expect("register churn");
            for _ in 0..100 {
                poll();
            }
            drop(g);
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Stop the world repeatedly while the other thread registers and
    // unregisters, until both have done enough rounds.
    let start = Instant::now();
    let mut stops = 0;
    while stops < 100 || cycles.load(Ordering::Relaxed) < 50 {
        assert!(start.elapsed() < WAIT_LIMIT, "no progress");
        stop_the_world(|_| ()).expect("stop");
        stops += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let _n = native_scope();
    churn.join().expect("churn thread");
}

// ---- fault forwarding, in child processes ----

const CHILD_ENV: &str = "KILN_SAFEPOINT_CHILD";
/// Address the child's own handler expects in `si_addr`.
static EXPECTED_ADDR: AtomicUsize = AtomicUsize::new(0);

extern "C" fn child_siginfo_handler(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    uctx: *mut libc::c_void,
) {
    // SAFETY: non-null siginfo from the kernel (checked), passed on unchanged.
    let addr = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_addr() as usize }
    };
    let code = if addr == EXPECTED_ADDR.load(Ordering::Relaxed) && !uctx.is_null() {
        CHILD_SIGINFO_EXIT.load(Ordering::Relaxed) as i32
    } else {
        45
    };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(code) };
}

static CHILD_SIGINFO_EXIT: AtomicUsize = AtomicUsize::new(42);

extern "C" fn child_plain_handler(_sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(44) };
}

/// Install a handler for SIGSEGV: `handler` is SA_SIGINFO-style if `siginfo`.
fn install_child_handler(handler: libc::sighandler_t, siginfo: bool) {
    // SAFETY: zeroed sigaction is valid; the handlers above only call _exit.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = if siginfo { libc::SA_SIGINFO } else { 0 };
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut()),
            0
        );
    }
}

/// Exit with 46 unless Kiln's handler (SA_SIGINFO | SA_ONSTACK, not the
/// child's own) is the installed SIGSEGV action: otherwise a test expecting
/// the child's handler to run would pass without any forwarding.
fn check_kiln_installed(child_handler: libc::sighandler_t) {
    // SAFETY: zeroed sigaction is valid; this only queries the action.
    let cur = unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut cur);
        cur
    };
    let flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    if cur.sa_sigaction == child_handler
        || cur.sa_sigaction == libc::SIG_DFL
        || cur.sa_sigaction == libc::SIG_IGN
        || cur.sa_flags & flags != flags
    {
        // SAFETY: _exit ends this child process at once.
        unsafe { libc::_exit(46) };
    }
}

/// A mapped but inaccessible page: an invalid address that is not Kiln's.
fn inaccessible_page() -> *const u8 {
    let p = sys::map(sys::page_size(), libc::PROT_NONE, "mmap test page").expect("mmap");
    EXPECTED_ADDR.store(p as usize, Ordering::Relaxed);
    p
}

/// Entry point of the child processes (does nothing without the variable).
#[test]
#[ignore = "run in a child process by the fault-forwarding tests"]
fn fault_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain setrlimit call with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let siginfo = child_siginfo_handler as *const () as libc::sighandler_t;
    match mode.as_str() {
        "foreign" => {
            install_child_handler(siginfo, true);
            let _g = register_thread().expect("register");
            check_kiln_installed(siginfo);
            let bad = inaccessible_page();
            // SAFETY: deliberately faults; the expected handler exits the process.
            unsafe { std::ptr::read_volatile(bad) };
        }
        "plain" => {
            let plain = child_plain_handler as *const () as libc::sighandler_t;
            install_child_handler(plain, false);
            let _g = register_thread().expect("register");
            check_kiln_installed(plain);
            let bad = inaccessible_page();
            // SAFETY: as above.
            unsafe { std::ptr::read_volatile(bad) };
        }
        "unregistered-poll" => {
            CHILD_SIGINFO_EXIT.store(43, Ordering::Relaxed);
            install_child_handler(siginfo, true);
            let page = init().expect("init");
            EXPECTED_ADDR.store(page, Ordering::Relaxed);
            check_kiln_installed(siginfo);
            arm().expect("arm");
            // A thread that never registered polls the armed page.
            let h = thread::spawn(poll);
            let _ = h.join();
        }
        "default" | "ignored" => {
            let disp = if mode == "default" {
                libc::SIG_DFL
            } else {
                libc::SIG_IGN
            };
            // SAFETY: resetting SIGSEGV's disposition in this child process.
            unsafe { libc::signal(libc::SIGSEGV, disp) };
            let _g = register_thread().expect("register");
            check_kiln_installed(disp);
            let bad = inaccessible_page();
            // SAFETY: as above; the default action kills the process.
            unsafe { std::ptr::read_volatile(bad) };
        }
        _ => {}
    }
    // Only reached if the fault was swallowed.
    // SAFETY: _exit ends this child process at once.
    unsafe { libc::_exit(1) };
}

fn run_child(mode: &str) -> std::process::ExitStatus {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "safepoint::tests::fault_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait child") {
            return st;
        }
        if start.elapsed() > WAIT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {mode:?} hung (a swallowed fault re-executes forever)");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn foreign_fault_goes_to_previous_siginfo_handler() {
    assert_eq!(run_child("foreign").code(), Some(42));
}

#[test]
fn foreign_fault_goes_to_previous_plain_handler() {
    assert_eq!(run_child("plain").code(), Some(44));
}

#[test]
fn unregistered_thread_on_armed_page_goes_to_previous_handler() {
    assert_eq!(run_child("unregistered-poll").code(), Some(43));
}

#[test]
fn foreign_fault_with_default_or_ignored_disposition_kills() {
    for mode in ["default", "ignored"] {
        let st = run_child(mode);
        assert_eq!(st.signal(), Some(libc::SIGSEGV), "{mode}: {st:?}");
    }
}

#[test]
fn interrupt_words_set_the_polling_page_hint() {
    let _g = test_lock();
    let page = init().unwrap();
    assert!(
        poll_hint_available(),
        "memfd double mapping of the polling page"
    );
    // SAFETY: the polling page is mapped readable for the process's life
    // and not armed (we hold the test lock, no stop-the-world runs).
    let hint = || unsafe { std::ptr::read_volatile(page as *const u8) };
    let w = interrupt::InterruptWord::new();
    w.raise(interrupt::Reason::Interrupt as u32);
    assert_eq!(hint(), 1, "a set word sets the hint");
    // Raising again does not count twice: one take clears this word's share.
    w.raise(interrupt::Reason::Deadline as u32);
    assert_eq!(w.take(), interrupt::Reason::Deadline as u32);
    assert_eq!(w.take(), 0);
    let w2 = interrupt::InterruptWord::new();
    w2.raise(interrupt::Reason::Interrupt as u32);
    assert!(w2.clear_if(interrupt::Reason::Interrupt as u32));
    assert!(!w2.clear_if(interrupt::Reason::Interrupt as u32));
    // A collection request is a bit beside the reason: raising a reason
    // keeps it, clearing a reason leaves it (and the hint) set.
    let w4 = interrupt::InterruptWord::new();
    w4.request_collect();
    assert_eq!(hint(), 1, "a collection request sets the hint");
    w4.raise(interrupt::Reason::Deadline as u32);
    w4.raise(interrupt::Reason::Interrupt as u32);
    assert_eq!(
        interrupt::Reason::from_word(w4.load(std::sync::atomic::Ordering::SeqCst)),
        Some(interrupt::Reason::Deadline)
    );
    assert!(w4.clear_if(interrupt::Reason::Deadline as u32));
    assert_eq!(
        w4.load(std::sync::atomic::Ordering::SeqCst),
        interrupt::COLLECT
    );
    assert_eq!(hint(), 1, "the collection request still sets the hint");
    w4.request_collect();
    assert_eq!(w4.take(), interrupt::COLLECT);
    // A word dropped while set gives its share back too.
    let w3 = interrupt::InterruptWord::new();
    w3.raise(interrupt::Reason::Interrupt as u32);
    drop(w3);
    // Every other test that sets words holds the same lock or has cleared
    // them, so the count is back at zero.
    assert_eq!(hint(), 0, "all words clear: hint clear");
}
