//! Interrupts and deadlines at the embedding boundary, built on
//! `safepoint::interrupt`: [`InterruptHandle`] makes every thread running a
//! [`Vm`](super::Vm)'s code throw `InterruptedException` at its next
//! safepoint poll (method entry or loop back-edge, so a loop without calls
//! stops too); a [`Config::deadline`](super::Config::deadline) bounds each
//! top-level call from the host.
//!
//! Invariants: a call's deadline timer only writes the interrupt word of
//! that call's own `ThreadCtx`, and is cancelled and joined before the call
//! returns (so before the context goes back to the pool): a deadline never
//! interrupts another thread's call. The word is checked after every poll
//! whether or not a stop-the-world is in progress, so an atomic store is
//! enough to deliver it.

use super::Error;
use crate::runtime::ThreadCtx;
use crate::safepoint::interrupt::{InterruptHandle as RtHandle, Reason};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Interrupts a [`Vm`](super::Vm)'s running code from any thread; cheap to
/// clone, `Send + Sync`, and does not keep the Vm alive.
///
/// Every thread running the Vm's code when [`InterruptHandle::interrupt`]
/// is called throws `InterruptedException` (message `interrupted`) at its
/// next safepoint poll; the host sees it as [`Error::Exception`] unless
/// Kiln code catches it. If no call is running, the request waits: the
/// next call throws at its first poll.
///
/// ```
/// # use kiln::{Config, Vm, Value};
/// # let src = ".library s\n.class public S {\n .method public static spin() {\n top:\n  br top\n }\n}\n";
/// let vm = Vm::from_kasm(&Config::new(), "s", src)?;
/// let handle = vm.interrupt_handle();
/// let t = std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_millis(50));
///     handle.interrupt().unwrap();
/// });
/// let e = vm.call("S::spin", &[]).unwrap_err();
/// assert_eq!(e.exception().unwrap().class, "InterruptedException");
/// t.join().unwrap();
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct InterruptHandle {
    pub(crate) inner: RtHandle,
}

impl InterruptHandle {
    /// Interrupt every thread running the Vm's code (see the type docs).
    /// Returns the number of threads reached now (0: the request waits for
    /// the next call), or 0 if the Vm is gone. [`Error::Interrupt`] if the
    /// safepoint mechanism fails.
    pub fn interrupt(&self) -> Result<usize, Error> {
        match self.inner.interrupt() {
            Ok(Some(d)) => Ok(d.threads),
            Ok(None) => Ok(0),
            Err(e) => Err(Error::Interrupt(e.to_string())),
        }
    }
}

/// The deadline of one top-level call: a timer thread that sets the call's
/// interrupt word when `limit` passes. Dropping it cancels and joins it.
pub(crate) struct CallDeadline {
    shared: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CallDeadline {
    /// Start the timer for the call running on `ctx` (which must outlive
    /// the returned value).
    pub(crate) fn start(ctx: *const ThreadCtx, limit: Duration) -> Result<CallDeadline, Error> {
        let shared = Arc::new((Mutex::new(false), Condvar::new()));
        let s2 = Arc::clone(&shared);
        let ctx = ctx as usize;
        let start = Instant::now();
        let thread = std::thread::Builder::new()
            .name("kiln-call-deadline".into())
            .spawn(move || {
                let (lock, cv) = &*s2;
                let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if *done {
                        return;
                    }
                    let left = limit.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    done = cv
                        .wait_timeout(done, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                // SAFETY: the call's context outlives this thread, which
                // `CallDeadline::drop` joins before the call returns (the
                // lock is held here, so the call cannot have finished
                // cancelling); the word is atomic.
                unsafe { &*(ctx as *const ThreadCtx) }
                    .interrupt
                    .fetch_max(Reason::Deadline as u32, Ordering::SeqCst);
            })
            .map_err(|e| Error::Interrupt(format!("cannot start the deadline timer: {e}")))?;
        Ok(CallDeadline {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for CallDeadline {
    fn drop(&mut self) {
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
