//! Threads started by `Thread::start`, and `Thread::join`.
//!
//! Each started thread is an OS thread created detached (`pthread_create`
//! with its stack size), so the system reclaims its stack as soon as it
//! ends; what stays is a [`ThreadRecord`] in the runtime's registry, which
//! `join` waits on. A start is a handshake: the parent waits until the child
//! has its context, its value stack and its safepoint registration (its own
//! alternate signal stack), or has failed to get one of them, in which case
//! `Thread::start` raises a catchable `OutOfMemoryException` naming what
//! the system refused. Nothing on this path aborts the process: the OS
//! thread is not a `std::thread` (whose start-up aborts when the system
//! refuses its guard page), and the value stack is reserved fallibly.
//!
//! Invariants: a record's `done` goes from false to true exactly once, when
//! its thread has finished `run` and reported an escaping exception (or
//! could not start); every `join` of that thread returns only after that,
//! however many threads join it, and as often as they like. A waiting joiner
//! is in a native section (it counts as stopped for the collector) and
//! sleeps on the record's condition variable, which the thread's end and
//! every interrupt request ([`Runtime::wake_joiners`]) signal, so
//! `KILN_DEADLINE` and interrupt handles reach it without any polling.

use super::Runtime;
use crate::vm::tables::MethodHandle;
use crate::vm::thread::SPAWNED_STACK_MAX;
use crate::vm::{Fault, FaultKind, ThreadCtx};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

/// Memory mappings one started thread uses: its native stack and guard,
/// its alternate signal stack and guard, its value stack, and slack for the
/// allocator's per-thread arenas.
const MAPS_PER_THREAD: usize = 8;

/// Mappings kept free for everything else the process does after the last
/// thread it could start (heap chunks, JIT code, the exception objects).
const MAPS_RESERVE: usize = 4096;

/// The default for [`super::Options::max_threads`]: what the system's
/// mapping limit (`/proc/sys/vm/max_map_count`, 65,530 unless raised) and
/// thread limit (`/proc/sys/kernel/threads-max`) leave room for, with
/// 4,096 mappings to spare; 4,096 threads where they cannot be read;
/// never more than 32,768.
pub fn default_max_threads() -> usize {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
    };
    let by_maps = read("/proc/sys/vm/max_map_count")
        .map(|m| m.saturating_sub(MAPS_RESERVE) / MAPS_PER_THREAD);
    let by_threads = read("/proc/sys/kernel/threads-max").map(|t| t / 2);
    match (by_maps, by_threads) {
        (None, None) => 4096,
        (a, b) => a.unwrap_or(usize::MAX).min(b.unwrap_or(usize::MAX)),
    }
    .clamp(16, 32_768)
}

/// What `join` needs of a started thread: whether it has ended.
#[derive(Default)]
pub struct ThreadRecord {
    done: Mutex<bool>,
    ended: Condvar,
}

impl ThreadRecord {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.ended.notify_all();
    }
}

/// Marks its record done (and the thread no longer running) when dropped:
/// when `run` returns, and also if the thread's body panics.
struct Finish(Arc<ThreadRecord>, Arc<Runtime>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.1.live_threads.fetch_sub(1, Ordering::SeqCst);
        self.0.finish();
    }
}

/// How a start handshake ended.
type StartResult = Result<(), String>;

/// The child's half of the handshake.
struct Handshake(Mutex<Option<StartResult>>, Condvar);

impl Handshake {
    fn report(&self, r: StartResult) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.1.notify_all();
    }

    fn wait(&self) -> StartResult {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = g.take() {
                return r;
            }
            g = self.1.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Runtime {
    /// Start a thread running `r.run()`; returns its id for
    /// [`Runtime::join_thread`] (1-based index in the registry).
    ///
    /// # Safety
    /// `r` must be a live non-null object; the caller is at a safepoint
    /// (its frame holds `r`), attached to this runtime.
    pub unsafe fn spawn_runnable(&self, r: *mut u8) -> Result<usize, Fault> {
        let me = self
            .self_ref
            .get()
            .and_then(|w| w.upgrade())
            .ok_or_else(|| Fault::new(FaultKind::Exception, "runtime is not running"))?;
        // SAFETY: `r` is a live non-null object implementing Runnable (verified).
        let mh = unsafe { self.dispatch_interface(r, self.runnable.0, self.runnable.1) }
            .ok_or_else(|| {
                Fault::new(FaultKind::InvalidCast, "object does not implement Runnable")
            })?;
        // Spawned threads get at most 64 MiB of native stack (~90,000 frames).
        let stack = self.opts.stack_size.min(SPAWNED_STACK_MAX);
        let live = self.live_threads.fetch_add(1, Ordering::SeqCst);
        if live >= self.opts.max_threads {
            self.live_threads.fetch_sub(1, Ordering::SeqCst);
            return Err(Fault::new(
                FaultKind::OutOfMemory,
                format!(
                    "cannot start thread: {} threads are running, the limit (KILN_MAX_THREADS)",
                    self.opts.max_threads
                ),
            ));
        }
        let record = Arc::new(ThreadRecord::default());
        let hs = Arc::new(Handshake(Mutex::new(None), Condvar::new()));
        let (robj, mhp) = (r as usize, mh as usize);
        // The runnable stays a root until the new thread has it in its own
        // handle scope (or has failed to start).
        self.gc.add_start_root(r);
        let body = {
            let (record, hs) = (Arc::clone(&record), Arc::clone(&hs));
            move || {
                let rt: Arc<Runtime> = me;
                let _finish = Finish(record, Arc::clone(&rt));
                let Some(mut ctx) = ThreadCtx::try_new(&*rt, stack) else {
                    rt.gc.remove_start_root(robj as *mut u8);
                    hs.report(Err("cannot reserve its value stack".into()));
                    return;
                };
                // SAFETY: `ctx` lives on this frame until after `att` is dropped.
                let att = match unsafe { super::roots::try_attach(&rt, &mut ctx) } {
                    Ok(a) => a,
                    Err(e) => {
                        rt.gc.remove_start_root(robj as *mut u8);
                        hs.report(Err(e.to_string()));
                        return;
                    }
                };
                ctx.roots.push(robj as *mut u8);
                rt.gc.remove_start_root(robj as *mut u8);
                hs.report(Ok(()));
                drop(hs);
                let args = [robj as u64];
                // SAFETY: `mhp` is the live handle of `run`; args hold the receiver.
                unsafe {
                    super::call_from_host(&mut ctx, mhp as *const MethodHandle, args.as_ptr())
                };
                if ctx.has_pending() {
                    // SAFETY: a pending exception is a live object; the trace holds live handles.
                    unsafe { rt.report_uncaught(ctx.pending, &ctx.trace) };
                }
                rt.flush_stdout();
                drop(att);
            }
        };
        let started = match spawn_detached(stack, Box::new(body)) {
            Err(why) => {
                // Never created: count it out here (a created thread that
                // failed to start has counted itself out through `Finish`).
                self.live_threads.fetch_sub(1, Ordering::SeqCst);
                Err(why)
            }
            Ok(()) => {
                // Blocking: count as stopped meanwhile (the child may have
                // to wait for a collection to finish before it registers).
                let _n = crate::safepoint::native_scope();
                hs.wait()
            }
        };
        if let Err(why) = started {
            self.gc.remove_start_root(r);
            return Err(Fault::new(
                FaultKind::OutOfMemory,
                format!("cannot start thread: {why}"),
            ));
        }
        let mut ts = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        ts.push(record);
        Ok(ts.len())
    }

    /// Wait until thread `id` (from [`Runtime::spawn_runnable`]) has ended.
    /// Every caller waits, every time; an unknown id returns at once. The
    /// wait is interruptible: an interrupt or deadline delivered to `t`
    /// ends it with the `InterruptedException` fault.
    pub fn join_thread(&self, t: &mut ThreadCtx, id: usize) -> Result<(), Fault> {
        let word = &t.interrupt;
        let interrupted = self.wait_thread(id, || {
            word.load(Ordering::Relaxed) & !crate::safepoint::interrupt::COLLECT != 0
        });
        // Out of the native section: taking the interrupt may collect.
        if interrupted {
            if let Some(f) = t.take_interrupt(false) {
                return Err(f);
            }
        }
        Ok(())
    }

    /// Wait until thread `id` has ended or `stop()` holds (looked at before
    /// waiting and whenever woken: by the thread's end or by an interrupt
    /// request); returns whether `stop` ended the wait. The calling thread
    /// counts as stopped for the collector meanwhile.
    pub fn wait_thread(&self, id: usize, stop: impl Fn() -> bool) -> bool {
        let rec = {
            let ts = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            id.checked_sub(1).and_then(|i| ts.get(i)).cloned()
        };
        let Some(rec) = rec else { return false };
        let _n = crate::safepoint::native_scope();
        let mut done = rec.done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *done {
                return false;
            }
            if stop() {
                return true;
            }
            // Woken when the thread ends, or by an interrupt request
            // ([`Runtime::wake_joiners`], which takes this lock first, so a
            // request made after the check above is not missed).
            done = rec.ended.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Runtime {
    /// Wake every thread blocked in `join` so it looks at its interrupt word
    /// (called after an interrupt request stored the words).
    pub fn wake_joiners(&self) {
        let ts = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for rec in ts.iter() {
            let _g = rec.done.lock().unwrap_or_else(|e| e.into_inner());
            rec.ended.notify_all();
        }
    }
}

/// A boxed thread body, as `pthread_create` passes it through.
type Body = Box<dyn FnOnce() + Send>;

/// Start a detached OS thread with a native stack of `stack` bytes running
/// `body`. `Err` names what the system refused.
fn spawn_detached(stack: usize, body: Body) -> Result<(), String> {
    extern "C" fn start(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the `Box<Body>` leaked by `spawn_detached` for
        // this thread alone.
        let body = unsafe { Box::from_raw(arg as *mut Body) };
        // SAFETY: a NUL-terminated name of at most 15 bytes for this thread.
        unsafe { libc::pthread_setname_np(libc::pthread_self(), c"kiln-thread".as_ptr()) };
        // No panic may unwind out of an `extern "C"` function; the body
        // reports its own failures, so a panic here is an internal error.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
            eprintln!("kiln: internal error: a thread panicked");
        }
        std::ptr::null_mut()
    }
    let page = 4096;
    let stack = stack.max(libc::PTHREAD_STACK_MIN).div_ceil(page) * page;
    let arg = Box::into_raw(Box::new(body));
    // SAFETY: `attr` is initialised before use and destroyed after; `start`
    // has the signature pthread expects; `arg` is reclaimed here if the
    // thread was not created, else by `start`.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut rc = libc::pthread_attr_init(&mut attr);
        if rc == 0 {
            rc = libc::pthread_attr_setstacksize(&mut attr, stack);
        }
        if rc == 0 {
            rc = libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        }
        let mut tid: libc::pthread_t = std::mem::zeroed();
        if rc == 0 {
            rc = libc::pthread_create(&mut tid, &attr, start, arg.cast());
        }
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            drop(Box::from_raw(arg));
            return Err(std::io::Error::from_raw_os_error(rc).to_string());
        }
    }
    Ok(())
}
