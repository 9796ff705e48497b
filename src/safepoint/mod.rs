//! Safepoints: a polling page, a SIGSEGV handler, a thread registry and the
//! stop-the-world protocol (Linux). See `docs/safepoints.md`.
//!
//! Managed code polls by loading one byte from the polling page
//! ([`poll_page_addr`] for JIT code, [`poll`] for the interpreter). To stop
//! the world, [`stop_the_world`] makes the page inaccessible ([`arm`]); each
//! running thread faults at its next poll, the handler recognises the
//! polling page, marks the thread `AtSafepoint` and parks it on a futex until
//! the world restarts; the load then re-executes and succeeds. Threads in
//! native or host code ([`enter_native`]) count as stopped and block in
//! [`leave_native`] until the world restarts.
//!
//! Invariants:
//! - Every registered thread has a record whose state word is `RUNNING`,
//!   `IN_NATIVE` or `AT_SAFEPOINT`, possibly with the `HELD` bit. Only the
//!   owning thread moves its word out of `RUNNING` (plain stores); only the
//!   collector sets `HELD`, and only by a CAS from an un-held stopped value;
//!   a thread leaves a stopped state only by a CAS from the un-held value.
//!   So a thread counted as stopped (held) cannot run managed code until the
//!   collector clears `HELD`.
//! - `EPOCH` is odd exactly while a stop-the-world is in progress (between
//!   its start and its restart); it only increases.
//! - The registry mutex is held for the whole stop-the-world, so the set of
//!   threads cannot change under the collector; threads register and
//!   unregister while `IN_NATIVE`, so blocking on that mutex is safe.
//! - The polling page is mapped once and never unmapped: its address is a
//!   constant that JIT code may embed.

pub mod interrupt;
mod sys;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// State word values.
const RUNNING: u32 = 0;
const IN_NATIVE: u32 = 1;
const AT_SAFEPOINT: u32 = 2;
/// Set by the collector on a stopped thread it has counted.
const HELD: u32 = 4;

/// How long the collector sleeps before re-scanning when no thread arrives
/// (a backstop only: arrivals wake it).
const RESCAN_AFTER: Duration = Duration::from_millis(100);

/// Errors of the safepoint mechanism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SafepointError {
    /// A system call failed while setting up (`what`), with its errno.
    Os {
        /// The failing operation.
        what: &'static str,
        /// The OS error number.
        errno: i32,
    },
    /// `register_thread` on a thread that is already registered.
    AlreadyRegistered,
    /// `stop_the_world` from a thread that is not registered.
    NotRegistered,
    /// `stop_the_world` from inside a `stop_the_world` callback.
    Reentrant,
}

impl fmt::Display for SafepointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SafepointError::Os { what, errno } => write!(
                f,
                "safepoints: {what} failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            SafepointError::AlreadyRegistered => {
                write!(f, "safepoints: this thread is already registered")
            }
            SafepointError::NotRegistered => write!(
                f,
                "safepoints: stop_the_world needs a registered calling thread"
            ),
            SafepointError::Reentrant => write!(
                f,
                "safepoints: stop_the_world called inside a stop_the_world callback"
            ),
        }
    }
}

impl std::error::Error for SafepointError {}

/// What a registered thread is doing, as seen by the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// Running managed code; must reach a poll before the world is stopped.
    Running,
    /// In native or host code: counts as stopped.
    InNative,
    /// Parked in the signal handler at a poll.
    AtSafepoint,
}

fn decode(word: u32) -> ThreadState {
    match word & !HELD {
        IN_NATIVE => ThreadState::InNative,
        AT_SAFEPOINT => ThreadState::AtSafepoint,
        _ => ThreadState::Running,
    }
}

/// A stopped thread, as passed to the [`stop_the_world`] callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The value registered with [`ThreadGuard::set_data`] (e.g. a `*mut ThreadCtx`).
    pub data: usize,
    /// `AtSafepoint` or `InNative`.
    pub state: ThreadState,
    /// This is the thread running the collector.
    pub is_current: bool,
    /// OS thread id.
    pub os_tid: i32,
    /// For `AtSafepoint`: the faulting poll's PC, SP and frame pointer (0 otherwise).
    /// The PC identifies the poll site, e.g. for a JIT safepoint-table lookup.
    pub stop_pc: usize,
    /// Stack pointer at the poll.
    pub stop_sp: usize,
    /// Frame pointer at the poll.
    pub stop_fp: usize,
}

/// Per-thread record, shared with the collector (through the registry) and
/// the signal handler (through the thread-local pointer).
struct Record {
    word: AtomicU32,
    /// Nesting depth of native sections (owner thread only).
    depth: AtomicU32,
    /// This thread is running a stop-the-world callback (owner thread only).
    in_stw: AtomicBool,
    data: AtomicUsize,
    tid: i32,
    stop_pc: AtomicUsize,
    stop_sp: AtomicUsize,
    stop_fp: AtomicUsize,
}

thread_local! {
    /// The calling thread's record, or null. `const`-initialised and without
    /// a destructor, so reading it never allocates or registers anything: safe
    /// in the signal handler.
    static CURRENT: Cell<*const Record> = const { Cell::new(std::ptr::null()) };
}

fn current_record() -> *const Record {
    CURRENT.try_with(|c| c.get()).unwrap_or(std::ptr::null())
}

/// Stop-the-world epoch: odd while the world is stopped.
static EPOCH: AtomicU32 = AtomicU32::new(0);
/// Bumped (and futex-woken) by every thread that stops while the epoch is odd.
static ARRIVALS: AtomicU32 = AtomicU32::new(0);
/// Registered threads; locked for the whole of a stop-the-world.
static REGISTRY: Mutex<Vec<Arc<Record>>> = Mutex::new(Vec::new());

static STAT_COUNT: AtomicU64 = AtomicU64::new(0);
static STAT_LAST_NS: AtomicU64 = AtomicU64::new(0);
static STAT_MAX_NS: AtomicU64 = AtomicU64::new(0);
static STAT_TOTAL_NS: AtomicU64 = AtomicU64::new(0);
static STAT_RESCANS: AtomicU64 = AtomicU64::new(0);

/// Read by [`poll`] before initialisation: any readable byte.
static DUMMY_POLL_BYTE: u8 = 0;
/// What [`poll`] loads from: the dummy byte, then the polling page.
static POLL_PTR: AtomicPtr<u8> = AtomicPtr::new(&DUMMY_POLL_BYTE as *const u8 as *mut u8);

static INIT: OnceLock<Result<usize, SafepointError>> = OnceLock::new();

fn lock_registry() -> MutexGuard<'static, Vec<Arc<Record>>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Map the polling page (readable) and install the SIGSEGV/SIGBUS handler.
/// Idempotent and thread-safe; returns the page address.
pub fn init() -> Result<usize, SafepointError> {
    INIT.get_or_init(|| {
        let len = sys::page_size();
        // `KILN_POLL_HINT=0` (a testing switch) maps the page without the
        // writable view, so compiled code takes the path that checks the
        // interrupt word after every poll.
        let dual = if std::env::var("KILN_POLL_HINT").is_ok_and(|v| v == "0") {
            None
        } else {
            sys::map_dual(len)
        };
        let page = match dual {
            Some((poll, write)) => {
                HINT_PTR.store(write, Ordering::Release);
                // Words set before this (none in practice) count already.
                adjust_interrupt_hint(0);
                poll
            }
            None => sys::map(len, libc::PROT_READ, "mmap polling page")?,
        };
        sys::PAGE_LEN.store(len, Ordering::Relaxed);
        sys::PAGE_ADDR.store(page as usize, Ordering::Release);
        // SAFETY: inside the OnceLock initialiser, so at most once per process.
        unsafe { sys::install_handlers()? };
        POLL_PTR.store(page, Ordering::Release);
        Ok(page as usize)
    })
    .clone()
}

/// The polling page's writable alias (see [`poll_hint_available`]), or null.
static HINT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// Threads whose interrupt word is set, minus those cleared (it can be
/// briefly negative when a clear overtakes the count of its set), and
/// whether the hint byte says so; one lock orders the updates.
static HINT_COUNT: Mutex<i64> = Mutex::new(0);

/// Does the polling page carry the interrupt hint? Then the byte a poll
/// loads is non-zero while any thread's `ThreadCtx::interrupt` word may be
/// set, so compiled code tests the byte it loads anyway and reads its own
/// interrupt word only when the byte is set: a poll plus its interrupt check
/// is one load and one branch. The polling page is then a shared memory
/// object mapped twice (a second, always-writable view holds the byte while
/// the polling view is armed). `false` before [`init`] or when the system
/// refused the second mapping; compiled code then checks the word after
/// every poll.
pub fn poll_hint_available() -> bool {
    !HINT_PTR.load(Ordering::Acquire).is_null()
}

/// Record that an interrupt word went from zero to non-zero (`delta = 1`)
/// or back (`delta = -1`), and rewrite the hint byte. Ordinary code only
/// (takes a lock); never called in signal context.
pub(crate) fn adjust_interrupt_hint(delta: i64) {
    let mut n = HINT_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    *n += delta;
    let p = HINT_PTR.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: `p` is the writable view of the polling page, mapped for
        // the life of the process; other threads only read the byte (plain
        // loads in compiled code: a stale value only delays an interrupt to
        // a later poll, as with any cross-thread store), and every write
        // happens under `HINT_COUNT`. An atomic store keeps Rust's view
        // race-free.
        unsafe { &*(p as *const std::sync::atomic::AtomicU8) }
            .store(u8::from(*n > 0), Ordering::SeqCst);
    }
}

/// The polling page's address, if [`init`] has succeeded. Constant for the
/// life of the process: JIT code may embed it and emit one load from it.
pub fn poll_page_addr() -> Option<usize> {
    INIT.get().and_then(|r| r.as_ref().ok().copied())
}

/// The interpreter's poll: one volatile load from the polling page. Returns
/// at once unless a stop-the-world is in progress, in which case the load
/// faults and (on a registered thread) parks until the world restarts.
#[inline(always)]
pub fn poll() {
    let p = POLL_PTR.load(Ordering::Relaxed);
    // SAFETY: `p` is the dummy byte or the polling page, both mapped for the
    // life of the process. When the page is armed the load faults; the
    // handler either parks this (registered) thread and returns once the page
    // is readable again, so the load re-executes and succeeds, or passes the
    // fault on (unregistered thread), as for any other bad access.
    let byte = unsafe { std::ptr::read_volatile(p) };
    // The byte is otherwise unused, and a binary translator may drop an
    // unused load: valgrind's IR optimiser does, so under valgrind a thread
    // looping in the interpreter never faulted and every stop-the-world
    // waited for it forever (docs/testing.md). `black_box` keeps the value
    // live (one store to the stack); natively the volatile load already
    // always happens.
    std::hint::black_box(byte);
}

/// Make the polling page inaccessible: every poll faults. Used by
/// [`stop_the_world`]; calling it directly makes registered threads spin
/// through the handler until [`disarm`] (tests and debuggers only).
pub fn arm() -> Result<(), SafepointError> {
    let page = init()?;
    // SAFETY: the polling page is our mapping; nothing accesses it except polls.
    unsafe {
        sys::protect(
            page as *mut u8,
            sys::PAGE_LEN.load(Ordering::Relaxed),
            libc::PROT_NONE,
            "mprotect (arm)",
        )
    }
}

/// Make the polling page readable again.
pub fn disarm() -> Result<(), SafepointError> {
    let page = init()?;
    // SAFETY: as in `arm`.
    unsafe {
        sys::protect(
            page as *mut u8,
            sys::PAGE_LEN.load(Ordering::Relaxed),
            libc::PROT_READ,
            "mprotect (disarm)",
        )
    }
}

/// Registration of the current thread; unregisters (and frees the alternate
/// signal stack) on drop. Not `Send`: it belongs to the thread that made it.
pub struct ThreadGuard {
    rec: Arc<Record>,
    alt: Option<sys::AltStack>,
    _not_send: PhantomData<*const ()>,
}

/// Register the calling thread to run managed code: installs the handler
/// (first time), gives the thread an alternate signal stack, and enters the
/// registry as `Running` (blocking first if a stop-the-world is in progress).
pub fn register_thread() -> Result<ThreadGuard, SafepointError> {
    init()?;
    if !current_record().is_null() {
        return Err(SafepointError::AlreadyRegistered);
    }
    let alt = sys::AltStack::install()?;
    let rec = Arc::new(Record {
        word: AtomicU32::new(IN_NATIVE),
        depth: AtomicU32::new(1),
        in_stw: AtomicBool::new(false),
        data: AtomicUsize::new(0),
        tid: sys::gettid(),
        stop_pc: AtomicUsize::new(0),
        stop_sp: AtomicUsize::new(0),
        stop_fp: AtomicUsize::new(0),
    });
    CURRENT.with(|c| c.set(Arc::as_ptr(&rec)));
    // IN_NATIVE while waiting for the registry: a collector holding it may count us.
    lock_registry().push(Arc::clone(&rec));
    leave_native();
    Ok(ThreadGuard {
        rec,
        alt: Some(alt),
        _not_send: PhantomData,
    })
}

impl ThreadGuard {
    /// Set the per-thread value the collector sees in [`ThreadInfo::data`].
    pub fn set_data(&self, data: usize) {
        self.rec.data.store(data, Ordering::Release);
    }

    /// The value set by [`ThreadGuard::set_data`] (0 initially).
    pub fn data(&self) -> usize {
        self.rec.data.load(Ordering::Acquire)
    }
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        // Stopped while we wait for the registry (a collector may hold it).
        if self.rec.depth.load(Ordering::Relaxed) == 0 {
            enter_native();
        }
        {
            let mut reg = lock_registry();
            if let Some(i) = reg.iter().position(|r| Arc::ptr_eq(r, &self.rec)) {
                reg.swap_remove(i);
            }
        }
        CURRENT.with(|c| c.set(std::ptr::null()));
        drop(self.alt.take());
    }
}

/// Whether the calling thread is registered.
pub fn is_registered() -> bool {
    !current_record().is_null()
}

/// The calling thread's state (`None` if unregistered).
pub fn current_state() -> Option<ThreadState> {
    let rec = current_record();
    // SAFETY: a non-null record is live while this thread is registered.
    (!rec.is_null()).then(|| decode(unsafe { &*rec }.word.load(Ordering::Acquire)))
}

/// Tell a waiting collector that this thread has stopped.
fn note_arrival() {
    if EPOCH.load(Ordering::SeqCst) & 1 != 0 {
        ARRIVALS.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(&ARRIVALS, i32::MAX);
    }
}

/// Block until no collector holds this thread and no stop-the-world is in
/// progress; then, if `resume_to` is given, move the word from its stopped
/// value to `resume_to` by CAS. Async-signal-safe.
fn wait_for_restart(rec: &Record, resume_to: Option<u32>) {
    loop {
        let s = rec.word.load(Ordering::Acquire);
        if s & HELD != 0 {
            sys::futex_wait(&rec.word, s, None);
            continue;
        }
        let e = EPOCH.load(Ordering::SeqCst);
        if e & 1 != 0 {
            sys::futex_wait(&EPOCH, e, None);
            continue;
        }
        match resume_to {
            None => return,
            Some(to) => {
                if rec
                    .word
                    .compare_exchange(s, to, Ordering::SeqCst, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
            }
        }
    }
}

/// Called by the signal handler on a registered thread whose poll faulted
/// at `pc` (with stack and frame pointers `sp`, `fp`). Async-signal-safe.
fn park_at_poll(rec: &Record, pc: usize, sp: usize, fp: usize) {
    if rec.word.load(Ordering::Relaxed) == RUNNING {
        // Published to the collector by the SeqCst store (its claim CAS acquires).
        rec.stop_pc.store(pc, Ordering::Relaxed);
        rec.stop_sp.store(sp, Ordering::Relaxed);
        rec.stop_fp.store(fp, Ordering::Relaxed);
        rec.word.store(AT_SAFEPOINT, Ordering::SeqCst);
        note_arrival();
        wait_for_restart(rec, Some(RUNNING));
    } else {
        // Polled while in native: already counts as stopped; wait, stay native.
        wait_for_restart(rec, None);
    }
}

/// The calling thread leaves managed code for native or host code (blocking
/// calls, I/O, joins): it counts as stopped until [`leave_native`]. Nests.
/// No effect on an unregistered thread.
pub fn enter_native() {
    let rec = current_record();
    if rec.is_null() {
        return;
    }
    // SAFETY: live while this thread is registered.
    let rec = unsafe { &*rec };
    let d = rec.depth.load(Ordering::Relaxed);
    rec.depth.store(d.wrapping_add(1), Ordering::Relaxed);
    if d == 0 {
        rec.stop_pc.store(0, Ordering::Relaxed);
        rec.stop_sp.store(0, Ordering::Relaxed);
        rec.stop_fp.store(0, Ordering::Relaxed);
        rec.word.store(IN_NATIVE, Ordering::SeqCst);
        note_arrival();
    }
}

/// The calling thread returns to managed code: blocks while a stop-the-world
/// is in progress, then becomes `Running`. Unbalanced calls and calls on an
/// unregistered thread have no effect.
pub fn leave_native() {
    let rec = current_record();
    if rec.is_null() {
        return;
    }
    // SAFETY: live while this thread is registered.
    let rec = unsafe { &*rec };
    let d = rec.depth.load(Ordering::Relaxed);
    if d == 0 {
        return;
    }
    rec.depth.store(d - 1, Ordering::Relaxed);
    if d == 1 {
        wait_for_restart(rec, Some(RUNNING));
    }
}

/// A native section as a scope: [`enter_native`] now, [`leave_native`] on drop.
pub struct NativeScope(PhantomData<*const ()>);

/// Enter a native section for the lifetime of the returned value.
pub fn native_scope() -> NativeScope {
    enter_native();
    NativeScope(PhantomData)
}

impl Drop for NativeScope {
    fn drop(&mut self) {
        leave_native();
    }
}

/// Time-to-safepoint statistics of [`stop_the_world`] in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SafepointStats {
    /// Completed stops.
    pub count: u64,
    /// Time from arming to every thread stopped, last stop (ns).
    pub last_ns: u64,
    /// Largest such time (ns).
    pub max_ns: u64,
    /// Sum over all stops (ns).
    pub total_ns: u64,
    /// Re-scans after `RESCAN_AFTER` without any arrival (a thread slow to
    /// reach a poll, e.g. descheduled).
    pub rescans: u64,
}

/// The statistics so far.
pub fn stats() -> SafepointStats {
    SafepointStats {
        count: STAT_COUNT.load(Ordering::Relaxed),
        last_ns: STAT_LAST_NS.load(Ordering::Relaxed),
        max_ns: STAT_MAX_NS.load(Ordering::Relaxed),
        total_ns: STAT_TOTAL_NS.load(Ordering::Relaxed),
        rescans: STAT_RESCANS.load(Ordering::Relaxed),
    }
}

/// Restarts the world when dropped (also if the callback panics).
struct Restart<'a> {
    held: &'a [(Arc<Record>, u32)],
    me: &'a Record,
}

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if let Err(e) = disarm() {
            // Threads would fault at every poll forever: fail loudly.
            eprintln!("kiln: cannot restart the world: {e}");
            std::process::abort();
        }
        EPOCH.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(&EPOCH, i32::MAX);
        for (rec, stopped) in self.held {
            rec.word.store(*stopped, Ordering::Release);
            sys::futex_wake(&rec.word, i32::MAX);
        }
        self.me.in_stw.store(false, Ordering::Relaxed);
    }
}

/// Stop every registered thread at a safepoint (or in native code), run `f`
/// with the list of stopped threads (the caller included, `is_current`), and
/// restart them. Collectors are serialised. The calling thread must be
/// registered; it counts as stopped (in native) meanwhile. `f` must not run
/// managed code or call [`poll`].
pub fn stop_the_world<R>(f: impl FnOnce(&[ThreadInfo]) -> R) -> Result<R, SafepointError> {
    let me = current_record();
    if me.is_null() {
        return Err(SafepointError::NotRegistered);
    }
    // SAFETY: live while this thread is registered.
    let me = unsafe { &*me };
    if me.in_stw.load(Ordering::Relaxed) {
        return Err(SafepointError::Reentrant);
    }
    let _native = native_scope(); // stopped while we wait for other collectors
    let reg = lock_registry();
    let start = Instant::now();
    EPOCH.fetch_add(1, Ordering::SeqCst);
    me.in_stw.store(true, Ordering::Relaxed);
    let mut held: Vec<(Arc<Record>, u32)> = Vec::with_capacity(reg.len());
    if let Err(e) = arm() {
        // Nothing was armed and nobody is held: end the (empty) stop.
        EPOCH.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(&EPOCH, i32::MAX);
        me.in_stw.store(false, Ordering::Relaxed);
        return Err(e);
    }
    let mut pending: Vec<&Arc<Record>> = reg.iter().collect();
    loop {
        let arrivals = ARRIVALS.load(Ordering::SeqCst);
        pending.retain(|rec| {
            let s = rec.word.load(Ordering::SeqCst);
            if (s == IN_NATIVE || s == AT_SAFEPOINT)
                && rec
                    .word
                    .compare_exchange(s, s | HELD, Ordering::SeqCst, Ordering::Acquire)
                    .is_ok()
            {
                held.push((Arc::clone(rec), s));
                return false;
            }
            true
        });
        if pending.is_empty() {
            break;
        }
        if !sys::futex_wait(&ARRIVALS, arrivals, Some(RESCAN_AFTER)) {
            STAT_RESCANS.fetch_add(1, Ordering::Relaxed);
        }
    }
    let ns = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    STAT_COUNT.fetch_add(1, Ordering::Relaxed);
    STAT_LAST_NS.store(ns, Ordering::Relaxed);
    STAT_MAX_NS.fetch_max(ns, Ordering::Relaxed);
    STAT_TOTAL_NS.fetch_add(ns, Ordering::Relaxed);
    let infos: Vec<ThreadInfo> = held
        .iter()
        .map(|(rec, s)| ThreadInfo {
            data: rec.data.load(Ordering::Acquire),
            state: decode(*s),
            is_current: std::ptr::eq(Arc::as_ptr(rec), me),
            os_tid: rec.tid,
            stop_pc: rec.stop_pc.load(Ordering::Relaxed),
            stop_sp: rec.stop_sp.load(Ordering::Relaxed),
            stop_fp: rec.stop_fp.load(Ordering::Relaxed),
        })
        .collect();
    let restart = Restart { held: &held, me };
    let r = f(&infos);
    drop(restart);
    drop(reg);
    Ok(r)
}
