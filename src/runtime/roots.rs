//! Root enumeration: everything the collector must treat as live, handed
//! to it as a [`heap::gc::Roots`](crate::heap::gc::Roots). All precise:
//! - reference-typed static fields (their addresses, computed at load);
//! - objects of threads being started (`GcState::start_roots`);
//! - objects the embedding host holds through handles (`GcState::host_roots`,
//!   a slot table: a handle reads its object through its slot, so a moving
//!   collector could update it);
//! - per attached thread (`ThreadCtx`): the pending exception, the handle
//!   scope `roots`, and every frame record on its value stack: the
//!   reference-typed argument/local slots (`GcData::ref_slots`), the
//!   evaluation-stack slots that hold references at the frame's current
//!   safepoint position (interpreted frames: the verifier's stack types via
//!   `ir::Code::stack_ref_slots`; compiled frames: the method's JIT
//!   safepoint table), and the exceptions held by the frame's exception
//!   state (`finally` continuations, caught exceptions);
//! - interned strings are pinned (never freed, never traced).
//!
//! Also thread attachment ([`attach`]): which contexts the collector scans.
//!
//! Invariants: only attached threads run managed code; an attached thread is
//! registered with the safepoint module and its `ThreadCtx` address is its
//! registered data. A thread is scanned only while stopped, so its frame
//! records are exactly as of its last safepoint: every slot the position's
//! map names holds null or a live reference (the interpreter keeps values in
//! their slots; compiled code stores them before each safepoint).

use super::Runtime;
use crate::heap::gc::{Collection, Collector, Reason, Roots};
use crate::heap::Marker;
use crate::safepoint;
use crate::vm::object::CACHED_CLASSES;
use crate::vm::tables::MethodHandle;
use crate::vm::thread::frame;
use crate::vm::ThreadCtx;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// Collect garbage now, from `rt`'s roots (see [`crate::heap::gc::collect`]).
/// Must be called at a safepoint of the calling thread: its own frames'
/// references are in their slots.
pub fn collect(rt: &Runtime, why: Reason) -> Option<Collection> {
    crate::heap::gc::collect(&rt.heap, &rt.gc.collector, &rt.gc, why)
}

/// A runtime's root sets and attached threads, with its collector.
pub struct GcState {
    /// The collector's switches and statistics.
    pub collector: Collector,
    /// `*mut ThreadCtx` of every attached thread.
    attached: Mutex<Vec<usize>>,
    /// Objects handed to threads that are starting (not yet attached).
    start_roots: Mutex<Vec<usize>>,
    /// Objects held by host handles (`crate::host`): slot per handle.
    host_roots: Mutex<HostRoots>,
    /// Addresses of reference-typed static fields.
    pub static_refs: Vec<usize>,
}

impl GcState {
    /// A collector state for a runtime with these static reference slots.
    pub fn new(stress: bool, log: bool, static_refs: Vec<usize>) -> GcState {
        GcState {
            collector: Collector::new(stress, log),
            attached: Mutex::new(Vec::new()),
            start_roots: Mutex::new(Vec::new()),
            host_roots: Mutex::new(HostRoots::default()),
            static_refs,
        }
    }

    /// Keep `obj` alive while a thread that will use it starts.
    pub fn add_start_root(&self, obj: *mut u8) {
        self.start_roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(obj as usize);
    }

    /// Root `obj` for a host handle; returns its slot index.
    pub fn add_host_root(&self, obj: *mut u8) -> u32 {
        let mut r = self.host_roots.lock().unwrap_or_else(|e| e.into_inner());
        r.live += 1;
        match r.free.pop() {
            Some(i) => {
                r.slots[i as usize] = obj as usize;
                i
            }
            None => {
                r.slots.push(obj as usize);
                (r.slots.len() - 1) as u32
            }
        }
    }

    /// The object in host root slot `i` (null for a released slot).
    pub fn host_root(&self, i: u32) -> *mut u8 {
        let r = self.host_roots.lock().unwrap_or_else(|e| e.into_inner());
        r.slots.get(i as usize).copied().unwrap_or(0) as *mut u8
    }

    /// Release host root slot `i`.
    pub fn remove_host_root(&self, i: u32) {
        let mut r = self.host_roots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = r.slots.get_mut(i as usize) {
            if *s != 0 {
                *s = 0;
                r.free.push(i);
                r.live -= 1;
            }
        }
    }

    /// Number of live host root slots.
    pub fn host_root_count(&self) -> usize {
        self.host_roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live
    }

    /// Call `f` with every attached thread's context, with the attached list
    /// locked (so each context stays alive during its call). Used by
    /// interrupts (`safepoint::interrupt::request`); `f` must not attach or
    /// detach a thread.
    pub fn for_each_attached(&self, mut f: impl FnMut(*mut ThreadCtx)) {
        let v = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        for &c in v.iter() {
            f(c as *mut ThreadCtx);
        }
    }

    /// Drop one start root for `obj`.
    pub fn remove_start_root(&self, obj: *mut u8) {
        let mut v = self.start_roots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = v.iter().position(|&p| p == obj as usize) {
            v.swap_remove(i);
        }
    }
}

/// The host handle slot table: slot `i` holds an object address or 0
/// (released, listed in `free`).
#[derive(Default)]
struct HostRoots {
    slots: Vec<usize>,
    free: Vec<u32>,
    live: usize,
}

/// The attachment of the current thread to a runtime: registered with the
/// safepoint module, its `ThreadCtx` known to the collector. Detaches on drop.
pub struct Attached<'a> {
    gc: &'a GcState,
    ctx: usize,
    _guard: Option<safepoint::ThreadGuard>,
}

/// Attach the current thread (which will run managed code with `ctx`) to
/// `rt`. If the thread cannot be registered, collection is disabled for the
/// runtime (a thread the collector cannot stop must not have its roots missed).
///
/// # Safety
/// `ctx` must stay at its address and alive until the returned value is dropped.
pub unsafe fn attach<'a>(rt: &'a Runtime, ctx: *mut ThreadCtx) -> Attached<'a> {
    let gc = &rt.gc;
    let guard = if safepoint::is_registered() {
        // Registered by someone else: its registered data is not this
        // context, so the collector could not find these frames.
        gc.collector.enabled.store(false, Ordering::SeqCst);
        None
    } else {
        match safepoint::register_thread() {
            Ok(g) => {
                g.set_data(ctx as usize);
                Some(g)
            }
            Err(_) => {
                gc.collector.enabled.store(false, Ordering::SeqCst);
                None
            }
        }
    };
    // SAFETY: caller contract.
    unsafe { enlist(rt, ctx, guard) }
}

/// Put `ctx` in the collector's attached list (its registration with the
/// safepoint module, if any, is `guard`) and hand it a pending interrupt
/// request (made while no thread was attached).
///
/// # Safety
/// As [`attach`].
unsafe fn enlist<'a>(
    rt: &'a Runtime,
    ctx: *mut ThreadCtx,
    guard: Option<safepoint::ThreadGuard>,
) -> Attached<'a> {
    rt.gc
        .attached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ctx as usize);
    // SAFETY: the caller guarantees `ctx` is alive.
    rt.interrupts.on_attach(unsafe { &(*ctx).interrupt });
    Attached {
        gc: &rt.gc,
        ctx: ctx as usize,
        _guard: guard,
    }
}

/// Attach the current thread, which must not be registered with the
/// safepoint module yet, like [`attach`]; but if it cannot be registered
/// (the system refuses its alternate signal stack), fail instead of
/// disabling collection: a thread starting up can still give up.
///
/// # Safety
/// As [`attach`].
pub unsafe fn try_attach<'a>(
    rt: &'a Runtime,
    ctx: *mut ThreadCtx,
) -> Result<Attached<'a>, safepoint::SafepointError> {
    let guard = safepoint::register_thread()?;
    guard.set_data(ctx as usize);
    // SAFETY: caller contract.
    Ok(unsafe { enlist(rt, ctx, Some(guard)) })
}

/// Attach the current thread, which a caller keeps registered with the
/// safepoint module through `guard` across attachments (a host thread that
/// calls in repeatedly, see `crate::host`): `guard`'s data becomes `ctx`.
///
/// # Safety
/// `ctx` must stay at its address and alive until the returned value is
/// dropped; `guard` must be the calling thread's registration.
pub unsafe fn attach_registered<'a>(
    rt: &'a Runtime,
    ctx: *mut ThreadCtx,
    guard: &safepoint::ThreadGuard,
) -> Attached<'a> {
    guard.set_data(ctx as usize);
    // SAFETY: caller contract.
    unsafe { enlist(rt, ctx, None) }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        let mut v = self.gc.attached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = v.iter().position(|&p| p == self.ctx) {
            v.swap_remove(i);
        }
        // A detached context is not emptied by collections, so it must not
        // keep cells a later sweep may hand out or unmap (its cells are
        // reclaimed by the next sweep: their class pointer is null).
        // SAFETY: the context outlives its attachment (`attach` contract),
        // and it is no longer in the list, so no collector touches it.
        unsafe {
            (*(self.ctx as *mut ThreadCtx)).alloc_cache = [std::ptr::null_mut(); CACHED_CLASSES]
        };
        // the guard (if any) unregisters after the context left the list
    }
}

impl Roots for GcState {
    unsafe fn mark_roots(&self, threads: &[safepoint::ThreadInfo], m: &mut Marker) {
        let gc = self;
        // SAFETY: the world is stopped (trait contract): every attached
        // thread is at a safepoint or in native code, so its context, frame
        // records and the heap are quiescent and consistent (module invariants).
        unsafe {
            for &a in &gc.static_refs {
                m.mark_slot(a as *const u64);
            }
            for &o in gc
                .start_roots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
            {
                m.mark(o as *mut u8);
            }
            for &o in gc
                .host_roots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .slots
                .iter()
            {
                m.mark(o as *mut u8);
            }
            let attached = gc.attached.lock().unwrap_or_else(|e| e.into_inner());
            // Empty every allocation cache before the sweep: cached cells
            // look free (null class), so the sweep puts them back on the
            // heap's free lists or unmaps their chunk.
            for &c in attached.iter() {
                (*(c as *mut ThreadCtx)).alloc_cache = [std::ptr::null_mut(); CACHED_CLASSES];
            }
            for ti in threads {
                if attached.contains(&ti.data) {
                    scan_thread(&*(ti.data as *const ThreadCtx), m);
                }
            }
            drop(attached);
        }
    }
}

/// Mark everything one stopped thread references.
///
/// # Safety
/// `t` is an attached thread's context, stopped (see [`collect`]).
unsafe fn scan_thread(t: &ThreadCtx, m: &mut Marker) {
    // SAFETY: per this function's contract every reference below is null or live.
    unsafe {
        m.mark(t.pending);
        for &r in &t.roots {
            m.mark(r);
        }
        let mut p = t.vs_base;
        while p < t.vs_top {
            let mh = &*(*p.add(frame::METHOD) as *const MethodHandle);
            let pos = *p.add(frame::POS);
            let size = *p.add(frame::SIZE);
            let slots = p.add(frame::HEADER_SLOTS);
            scan_frame(mh, pos, size & frame::JIT != 0, slots, m);
            let eh = *p.add(frame::EH) as *const crate::ir::EhState;
            if let Some(eh) = eh.as_ref() {
                eh.for_each_ref(|o| m.mark(o));
            }
            p = slots.add((size & 0xFFFF_FFFF) as usize);
        }
    }
}

/// Mark the references of one frame at safepoint position `pos`.
///
/// # Safety
/// `slots` are the frame's slots, stopped at `pos` (see [`collect`]).
unsafe fn scan_frame(mh: &MethodHandle, pos: u64, jit: bool, slots: *const u64, m: &mut Marker) {
    // SAFETY: per this function's contract.
    unsafe {
        let gcd = &*mh.gc;
        if jit {
            if let Some(table) = gcd.safepoints.load(Ordering::Acquire).as_ref() {
                if let Some(refs) = table.slots_at(pos as u32) {
                    for &s in refs {
                        m.mark_slot(slots.add(s as usize));
                    }
                    return;
                }
            }
            // Not a recorded site (cannot happen for a verified method):
            // fall through to the verifier-derived map, which the JIT's
            // stores follow.
        }
        for i in 0..gcd.ref_slot_count as usize {
            m.mark_slot(slots.add(*gcd.ref_slots.add(i) as usize));
        }
        if pos == frame::POS_ENTRY {
            return;
        }
        if let Some(code) = mh.code() {
            code.stack_ref_slots(pos, |s| m.mark_slot(slots.add(s as usize)));
        }
    }
}
