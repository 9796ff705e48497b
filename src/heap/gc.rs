//! The collector: precise, stop-the-world, non-moving mark-sweep (see
//! `docs/gc.md`). It is handed its roots ([`Roots`]) and knows no frames,
//! threads or tables: the runtime enumerates roots (`runtime::roots`).
//!
//! A collection runs on a mutator thread that is at a safepoint of its own
//! (an allocation, `Std::gc()`): [`collect`] stops every registered thread
//! through [`crate::safepoint::stop_the_world`], asks the roots to mark
//! themselves, drains the mark stack, sweeps, sets the next threshold and
//! restarts the world.
//!
//! Invariant: while the world is stopped every root the [`Roots`] marks is
//! null or a live object; nothing allocates during a collection.

use super::{Heap, Marker, SweepStats, ALLOC_BUDGET, MIN_THRESHOLD};
use crate::safepoint;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Where the collector's roots come from.
pub trait Roots {
    /// Mark every root (with `m.mark` / `m.mark_slot`) and prepare for the
    /// sweep (e.g. empty thread-local allocation caches, whose cells look
    /// free). `stopped` are the threads stopped for this collection.
    ///
    /// # Safety
    /// Called only by [`collect`], with the world stopped.
    unsafe fn mark_roots(&self, stopped: &[safepoint::ThreadInfo], m: &mut Marker);
}

/// The collector's per-runtime state: switches and statistics.
pub struct Collector {
    /// Collections may run (the safepoint mechanism is available and every
    /// thread running managed code is registered).
    pub enabled: AtomicBool,
    /// Collect at every allocation (`KILN_GC_STRESS`).
    pub stress: bool,
    /// Log every collection on stderr (`KILN_GC_LOG`).
    pub log: bool,
    /// Completed collections.
    pub count: AtomicU64,
    /// Sum of pause times (ns).
    pub pause_total_ns: AtomicU64,
    /// Longest pause (ns).
    pub pause_max_ns: AtomicU64,
}

impl Collector {
    /// A collector (enabled if the safepoint mechanism is available).
    pub fn new(stress: bool, log: bool) -> Collector {
        Collector {
            enabled: AtomicBool::new(safepoint::init().is_ok()),
            stress,
            log,
            count: AtomicU64::new(0),
            pause_total_ns: AtomicU64::new(0),
            pause_max_ns: AtomicU64::new(0),
        }
    }
}

/// Why a collection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The allocation volume passed the threshold (or stress mode).
    Threshold,
    /// An allocation hit the heap limit.
    Limit,
    /// `Std::gc()`.
    Explicit,
}

/// What one collection did.
#[derive(Clone, Copy, Debug)]
pub struct Collection {
    /// Sweep results.
    pub sweep: SweepStats,
    /// Objects marked.
    pub marked: usize,
    /// Pause (stop request to restart), ns.
    pub pause_ns: u64,
    /// Time to safepoint of this stop, ns.
    pub tts_ns: u64,
}

/// Collect garbage now (see the module docs). Must be called at a safepoint
/// of the calling thread: its own frames' references are in their slots.
/// Returns `None` if collection is disabled, the calling thread is not
/// registered, or (for [`Reason::Threshold`]) another thread collected while
/// this one waited.
pub fn collect(heap: &Heap, gc: &Collector, roots: &dyn Roots, why: Reason) -> Option<Collection> {
    if !gc.enabled.load(Ordering::Relaxed) || !safepoint::is_registered() {
        return None;
    }
    let seen = gc.count.load(Ordering::SeqCst);
    let t0 = Instant::now();
    let r = safepoint::stop_the_world(|threads| {
        if why != Reason::Explicit && gc.count.load(Ordering::SeqCst) != seen {
            return None; // someone else just collected
        }
        let mut m = Marker::new();
        // SAFETY: the world is stopped (the `Roots` contract).
        let sweep = unsafe {
            roots.mark_roots(threads, &mut m);
            m.drain();
            heap.sweep()
        };
        gc.count.fetch_add(1, Ordering::SeqCst);
        let target = sweep
            .live
            .saturating_mul(2)
            .max(sweep.live.saturating_add(ALLOC_BUDGET))
            .max(MIN_THRESHOLD)
            .min(heap.max());
        heap.set_threshold(target);
        Some((sweep, m.marked))
    });
    let (sweep, marked) = r.ok().flatten()?;
    let pause_ns = t0.elapsed().as_nanos() as u64;
    gc.pause_total_ns.fetch_add(pause_ns, Ordering::Relaxed);
    gc.pause_max_ns.fetch_max(pause_ns, Ordering::Relaxed);
    let tts_ns = safepoint::stats().last_ns;
    if gc.log {
        let n = gc.count.load(Ordering::Relaxed);
        let line = format!(
            "kiln-gc: #{n} {why:?}: pause {:.3} ms (time to safepoint {:.3} ms), marked {marked}, live {} KiB, freed {} KiB in {} objects, threshold {} KiB\n",
            pause_ns as f64 / 1e6,
            tts_ns as f64 / 1e6,
            sweep.live >> 10,
            sweep.freed >> 10,
            sweep.freed_objects,
            heap.threshold() >> 10
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    Some(Collection {
        sweep,
        marked,
        pause_ns,
        tts_ns,
    })
}
