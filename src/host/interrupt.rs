//! Interrupts and deadlines at the embedding boundary, built on
//! `safepoint::interrupt`: [`InterruptHandle`] makes every thread running a
//! [`Vm`](super::Vm)'s code throw `InterruptedException` at its next
//! safepoint poll (method entry or loop back-edge, so a loop without calls
//! stops too); a [`Config::deadline`](super::Config::deadline) bounds each
//! top-level call from the host.
//!
//! Invariants: a call's deadline only writes the interrupt word of that
//! call's own `ThreadCtx`, and is disarmed before the call returns (so
//! before the context goes back to the pool): a deadline never interrupts
//! another thread's call. The word is checked after every poll
//! whether or not a stop-the-world is in progress, so an atomic store is
//! enough to deliver it.

use super::Error;
use crate::runtime::interrupt::InterruptHandle as RtHandle;
use crate::safepoint::interrupt::Reason;
use crate::vm::thread::ThreadCtx;
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

/// One timer thread per Vm (started at its first deadline-limited call)
/// that sets the interrupt word of each limited call whose deadline passed.
/// Calls arm an entry on entry and disarm it before they return; the
/// thread writes a word only while holding the lock and only for an armed
/// entry, so it never touches a context that went back to the pool.
pub(crate) struct DeadlineTimer {
    shared: Arc<(Mutex<TimerState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct TimerState {
    /// (deadline, `*const ThreadCtx`, entry id) of every armed call.
    entries: Vec<(Instant, usize, u64)>,
    next_id: u64,
    shutdown: bool,
}

impl DeadlineTimer {
    /// Start the timer thread.
    pub(crate) fn start() -> Result<DeadlineTimer, Error> {
        let shared: Arc<(Mutex<TimerState>, Condvar)> = Arc::default();
        let s2 = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kiln-call-deadlines".into())
            .spawn(move || {
                let (lock, cv) = &*s2;
                let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if st.shutdown {
                        return;
                    }
                    let now = Instant::now();
                    st.entries.retain(|&(when, ctx, _)| {
                        if when > now {
                            return true;
                        }
                        // SAFETY: an armed entry's context is alive: its
                        // call disarms it (under this lock) before the
                        // context can be reused or freed; the word is atomic.
                        unsafe { &*(ctx as *const ThreadCtx) }
                            .interrupt
                            .raise(Reason::Deadline as u32);
                        false
                    });
                    st = match st.entries.iter().map(|e| e.0).min() {
                        None => cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                        Some(w) => {
                            cv.wait_timeout(st, w.saturating_duration_since(now))
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                    };
                }
            })
            .map_err(|e| Error::Interrupt(format!("cannot start the deadline timer: {e}")))?;
        Ok(DeadlineTimer {
            shared,
            thread: Some(thread),
        })
    }

    /// Arm a deadline `limit` from now for the call running on `ctx`; the
    /// returned guard disarms it.
    pub(crate) fn arm(&self, ctx: *const ThreadCtx, limit: Duration) -> CallDeadline<'_> {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        let id = st.next_id;
        st.next_id += 1;
        let when = Instant::now()
            .checked_add(limit)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 40));
        st.entries.push((when, ctx as usize, id));
        cv.notify_all();
        CallDeadline { timer: self, id }
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.shared;
            lock.lock().unwrap_or_else(|e| e.into_inner()).shutdown = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An armed deadline of one call; disarms on drop.
pub(crate) struct CallDeadline<'a> {
    timer: &'a DeadlineTimer,
    id: u64,
}

impl Drop for CallDeadline<'_> {
    fn drop(&mut self) {
        let (lock, _) = &*self.timer.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        st.entries.retain(|e| e.2 != self.id);
    }
}
