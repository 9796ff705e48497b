//! Interrupt requests for a runtime (see `safepoint::interrupt` for the
//! word each thread polls): [`request`] stores a reason into every attached
//! thread's word during one stop-the-world, [`InterruptHandle`] does it from
//! any thread, and [`Watchdog`] does it once a deadline passes.

use super::Runtime;
use crate::safepoint;
use crate::safepoint::interrupt::{Delivery, InterruptError, Reason};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// Interrupt every thread attached to `rt` (see the module docs). Blocks for
/// one stop-the-world; callable from any thread, registered or not, also
/// from a thread running `rt`'s code (which then throws at its own next
/// poll). Must not be called inside a `stop_the_world` callback.
pub fn request(rt: &Runtime, reason: Reason) -> Result<Delivery, InterruptError> {
    let st = &rt.interrupts;
    let epoch = st.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if reason == Reason::Deadline {
        // Before the stop: a thread attaching after it must see this.
        st.expired.store(true, Ordering::SeqCst);
    }
    let deliver = || {
        let mut n = 0usize;
        rt.gc.for_each_attached(|ctx| {
            // SAFETY: an attached context stays alive while it is in the
            // attached list, which `for_each_attached` holds locked.
            unsafe { &*ctx }.interrupt.raise(reason as u32);
            n += 1;
        });
        if n == 0 {
            st.pending.fetch_max(reason as u32, Ordering::SeqCst);
        } else {
            st.pending.store(0, Ordering::SeqCst);
        }
        st.delivered.fetch_add(n as u64, Ordering::SeqCst);
        n
    };
    if safepoint::init().is_err() {
        // No polling page: nothing compiled polls, the interpreter's polls
        // are plain loads. The words are atomics, so store them directly.
        let n = deliver();
        rt.wake_joiners();
        return Ok(Delivery { epoch, threads: n });
    }
    let _guard = if safepoint::is_registered() {
        None
    } else {
        Some(safepoint::register_thread().map_err(InterruptError::Safepoint)?)
    };
    let n = safepoint::stop_the_world(|_threads| deliver()).map_err(InterruptError::Safepoint)?;
    // Threads blocked in `join` sleep; wake them to look at their words.
    rt.wake_joiners();
    Ok(Delivery { epoch, threads: n })
}

/// A handle that interrupts one runtime's threads; `Clone + Send + Sync`.
/// It does not keep the runtime alive: once the runtime is dropped,
/// [`InterruptHandle::interrupt`] does nothing and returns `Ok(None)`.
#[derive(Clone, Debug)]
pub struct InterruptHandle {
    rt: Weak<Runtime>,
}

impl InterruptHandle {
    /// A handle for `rt`.
    pub fn new(rt: &Arc<Runtime>) -> InterruptHandle {
        InterruptHandle {
            rt: Arc::downgrade(rt),
        }
    }

    /// Interrupt every thread running the runtime's code: each throws
    /// `InterruptedException` at its next safepoint poll (see [`request`]).
    /// Returns what was delivered, or `None` if the runtime is gone.
    pub fn interrupt(&self) -> Result<Option<Delivery>, InterruptError> {
        self.interrupt_with(Reason::Interrupt)
    }

    /// [`InterruptHandle::interrupt`] with a given reason.
    pub fn interrupt_with(&self, reason: Reason) -> Result<Option<Delivery>, InterruptError> {
        match self.rt.upgrade() {
            Some(rt) => request(&rt, reason).map(Some),
            None => Ok(None),
        }
    }
}

/// A deadline: a thread that interrupts the runtime with
/// [`Reason::Deadline`] once `limit` has passed since [`Watchdog::start`],
/// unless the watchdog is dropped (or [`Watchdog::cancel`]led) first.
/// Dropping it cancels and joins the thread.
pub struct Watchdog {
    shared: Arc<(Mutex<bool>, Condvar)>,
    fired: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Start a watchdog for `handle`'s runtime. Fails only if the OS cannot
    /// start a thread.
    pub fn start(handle: InterruptHandle, limit: Duration) -> std::io::Result<Watchdog> {
        let shared = Arc::new((Mutex::new(false), Condvar::new()));
        let fired = Arc::new(AtomicBool::new(false));
        let (s2, f2) = (Arc::clone(&shared), Arc::clone(&fired));
        let start = Instant::now();
        let thread = std::thread::Builder::new()
            .name("kiln-deadline".into())
            .spawn(move || {
                let (lock, cv) = &*s2;
                let mut cancelled = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if *cancelled {
                        return;
                    }
                    let left = limit.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    cancelled = cv
                        .wait_timeout(cancelled, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                drop(cancelled);
                f2.store(true, Ordering::SeqCst);
                // An error here means the safepoint mechanism is broken;
                // the deadline cannot be enforced and there is nobody to
                // report to but stderr.
                if let Err(e) = handle.interrupt_with(Reason::Deadline) {
                    eprintln!("kiln: deadline: {e}");
                }
            })?;
        Ok(Watchdog {
            shared,
            fired,
            thread: Some(thread),
        })
    }

    /// Whether the deadline has passed and the interrupt was requested.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Cancel the deadline (no interrupt if it has not fired yet) and wait
    /// for the watchdog thread to end.
    pub fn cancel(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        {
            let (lock, cv) = &*self.shared;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}
