//! Interrupts: ask every thread running a runtime's code to throw
//! `InterruptedException` at its next safepoint poll (see
//! `docs/safepoints.md`, "Interrupts").
//!
//! Delivery uses the polling page like a collection does:
//! `runtime::interrupt::request` runs a [`stop_the_world`](super::stop_the_world) (the page is
//! armed, every running thread faults at its next poll and parks in the
//! signal handler; threads in native code count as stopped), and inside the
//! stop it stores an interrupt reason into the `ThreadCtx::interrupt` word of
//! every thread attached to that runtime. When the world restarts, each
//! parked thread's poll re-executes, and the check compiled code and the
//! interpreter make right after every poll sees the word and takes the slow
//! path (the interpreter loads the word; compiled code tests the byte its
//! poll loaded, the interrupt hint that [`InterruptWord`] keeps set while
//! any word is, and only then loads the word), an ordinary call
//! (`ThreadCtx::take_interrupt`, in `runtime`)
//! that clears the word and makes an `InterruptedException` pending, so
//! `catch`/`finally`/propagation and the stack trace work as for any
//! exception. The signal handler itself is unchanged: the word is written by
//! the interrupting thread while the target is held, never in signal context.
//!
//! Semantics (invariants):
//! - A request is delivered to exactly the threads attached to the runtime
//!   when the stop happens; each of them throws once at its next poll
//!   (method entry or loop back-edge), also when it is in native or blocking
//!   code at that moment (it throws at its first poll after returning).
//!   Requests not yet consumed by a thread coalesce: it throws once.
//! - If no thread is attached, the request stays *pending* on the runtime and
//!   the next thread to attach consumes it (it throws at its first poll). A
//!   later request that reaches a thread clears the pending one.
//! - A thread that leaves managed code without polling again keeps the word
//!   set in its `ThreadCtx`; it throws at its first poll if that context runs
//!   code again.
//! - After a [`Reason::Deadline`] request the runtime is *expired*: every
//!   thread that attaches later (e.g. started by `Thread::start` while the
//!   deadline fired) is interrupted at its first poll too, so a deadline
//!   stops all of the runtime's threads, however they race with it.
//! - The word's value is the [`Reason`], or'ed with the [`COLLECT`] bit (a
//!   request to collect at the next poll, which throws nothing); 0 means
//!   nothing to do at the next poll.

use super::SafepointError;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// A thread's interrupt word (`ThreadCtx::interrupt`): 0, or the
/// [`Reason`] to throw at the next poll. Compiled code reads it at a fixed
/// offset (`offsets::TC_INTERRUPT`), so it is a bare `u32` in memory. Every
/// change between zero and non-zero goes through these methods, which keep
/// the polling page's interrupt hint (`safepoint::poll_hint_available`)
/// set while any word is non-zero: compiled code reads its word only when
/// the hint is set.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct InterruptWord(AtomicU32);

impl InterruptWord {
    /// A clear word.
    pub const fn new() -> InterruptWord {
        InterruptWord(AtomicU32::new(0))
    }

    /// The current value.
    pub fn load(&self, order: Ordering) -> u32 {
        self.0.load(order)
    }

    /// Set the word's reason to at least `reason` (requests coalesce; a
    /// deadline outranks a plain interrupt), keeping its [`COLLECT`] bit.
    pub fn raise(&self, reason: u32) {
        let reason = reason & !COLLECT;
        if reason == 0 {
            return;
        }
        let old = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                Some((w & COLLECT) | (w & !COLLECT).max(reason))
            })
            .unwrap_or_else(|w| w);
        if old == 0 {
            super::adjust_interrupt_hint(1);
        }
    }

    /// Ask the thread to collect garbage at its next poll (sets the
    /// [`COLLECT`] bit; nothing is thrown for it).
    pub fn request_collect(&self) {
        if self.0.fetch_or(COLLECT, Ordering::SeqCst) == 0 {
            super::adjust_interrupt_hint(1);
        }
    }

    /// Clear the word, returning what it held.
    pub fn take(&self) -> u32 {
        let w = self.0.swap(0, Ordering::SeqCst);
        if w != 0 {
            super::adjust_interrupt_hint(-1);
        }
        w
    }

    /// Clear the word's reason if it is `expected` (a [`COLLECT`] bit
    /// stays); whether it did.
    pub fn clear_if(&self, expected: u32) -> bool {
        if expected == 0 {
            return false;
        }
        let r = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w & !COLLECT == expected).then_some(w & COLLECT)
            });
        match r {
            Ok(old) => {
                if old & COLLECT == 0 {
                    super::adjust_interrupt_hint(-1);
                }
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for InterruptWord {
    fn drop(&mut self) {
        if *self.0.get_mut() != 0 {
            super::adjust_interrupt_hint(-1);
        }
    }
}

/// Bit of an interrupt word that asks its thread to collect garbage at its
/// next poll instead of throwing: set when the runtime's own exception
/// objects (allocated for faults, outside the collection triggers of
/// ordinary allocation, see `ThreadCtx::raise`) pass the collection
/// threshold, so a loop that only throws and catches cannot grow the heap
/// without bound. The poll's slow path (`ThreadCtx::take_interrupt`)
/// collects there, at a safepoint, and goes on.
pub const COLLECT: u32 = 1 << 16;

/// Why a thread is interrupted (the value stored in `ThreadCtx::interrupt`,
/// beside the [`COLLECT`] bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    /// `InterruptHandle::interrupt`.
    Interrupt = 1,
    /// A deadline (`Watchdog`, `Options::deadline`, `KILN_DEADLINE`) expired.
    Deadline = 2,
}

impl Reason {
    /// The reason stored in an interrupt word (`None` for 0 or an unknown value).
    pub fn from_word(w: u32) -> Option<Reason> {
        match w & !COLLECT {
            1 => Some(Reason::Interrupt),
            2 => Some(Reason::Deadline),
            _ => None,
        }
    }
}

/// Per-runtime interrupt state (`Runtime::interrupts`).
#[derive(Debug, Default)]
pub struct InterruptState {
    /// Requests made so far (the interrupt epoch).
    pub(crate) requests: AtomicU64,
    /// The reason of a request no attached thread received (0: none).
    pub(crate) pending: AtomicU32,
    /// Threads that received a request (sum over requests).
    pub(crate) delivered: AtomicU64,
    /// A deadline request was made: every thread that attaches from now on
    /// is interrupted with [`Reason::Deadline`].
    pub(crate) expired: AtomicBool,
}

impl InterruptState {
    /// A state with no request made.
    pub fn new() -> InterruptState {
        InterruptState::default()
    }

    /// Requests made so far (increases by one per `runtime::interrupt::request`).
    pub fn epoch(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Thread deliveries so far (one per attached thread per request).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    /// Whether a request is waiting for a thread to attach.
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) != 0
    }

    /// Whether a deadline has expired (see the module docs).
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }

    /// Called when a thread attaches with interrupt word `word` (after it
    /// is in the collector's attached list): it consumes a pending request,
    /// and after a deadline it is interrupted at once.
    pub fn on_attach(&self, word: &InterruptWord) {
        let mut r = self.pending.swap(0, Ordering::SeqCst);
        if self.expired.load(Ordering::SeqCst) {
            r = r.max(Reason::Deadline as u32);
        }
        if r != 0 {
            word.raise(r);
        }
    }
}

/// Why an interrupt could not be requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterruptError {
    /// The safepoint mechanism failed (the OS refused a mapping, a
    /// protection change or a handler).
    Safepoint(SafepointError),
}

impl fmt::Display for InterruptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterruptError::Safepoint(e) => write!(f, "cannot interrupt: {e}"),
        }
    }
}

impl std::error::Error for InterruptError {}

/// What one request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The request's epoch (1 for the runtime's first request).
    pub epoch: u64,
    /// Attached threads that received it (0: it stays pending for the next
    /// thread that attaches).
    pub threads: usize,
}

/// Parse a deadline: a positive integer with a unit `ms`, `s` or `m`
/// (`250ms`, `2s`, `5m`). `name` is the setting's name for the error.
pub fn parse_deadline(name: &str, v: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{name}={v:?} is not valid: expected a positive whole number with a unit ms, s or m (e.g. 500ms, 2s, 5m)"
        )
    };
    let t = v.trim();
    let (num, unit_ms): (&str, u64) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else {
        return Err(bad());
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if ms == 0 {
        return Err(bad());
    }
    Ok(Duration::from_millis(ms))
}
