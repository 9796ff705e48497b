//! Per-thread state and the frame record layout: [`ThreadCtx`] (passed to
//! every method entry), [`FrameHeader`] and its word indices ([`frame`]),
//! stack traces ([`Trace`]) and the slot call ([`call_method`]).
//!
//! Invariants: a `ThreadCtx` is used only by its own thread, except by the
//! collector while the world is stopped (it reads the value stack and empties
//! `alloc_cache`) and by interrupt requests (the atomic `interrupt` word).
//! Frame records run contiguously from `vs_base` to `vs_top`.

use super::object::CACHED_CLASSES;
use super::tables::{EntryFn, MethodHandle};
use std::sync::atomic::Ordering;

/// How many of a stack trace's innermost frames (nearest the throw) it
/// keeps (HotSpot's default `MaxJavaStackTraceDepth` is also 1024).
pub const TRACE_MAX: usize = 1024;

/// How many of a stack trace's outermost frames (the entry point and its
/// callers) it keeps once it is deeper than [`TRACE_MAX`] + `TRACE_TAIL`.
pub const TRACE_TAIL: usize = 1024;

/// The frames an exception has passed, innermost first. A trace of at most
/// [`TRACE_MAX`] + [`TRACE_TAIL`] frames is kept whole. A deeper one keeps
/// its innermost [`TRACE_MAX`] and its outermost [`TRACE_TAIL`] frames and
/// counts the ones between (`omitted`), so an exception leaving a recursion
/// millions of frames deep costs no memory per frame and its report still
/// shows both where it was thrown and the entry point.
///
/// Invariant: the recorded frames are `head` then `tail`; the `omitted`
/// frames lie between them. Once `tail` or `omitted` is non-empty, `head`
/// takes no more frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    head: Vec<*const MethodHandle>,
    tail: std::collections::VecDeque<*const MethodHandle>,
    omitted: u64,
}

impl Trace {
    /// Append the next outer frame.
    pub fn push(&mut self, mh: *const MethodHandle) {
        if self.omitted == 0 && self.tail.is_empty() && self.head.len() < TRACE_MAX {
            self.head.push(mh);
            return;
        }
        if self.tail.len() == TRACE_TAIL {
            // the oldest tail frame now lies between head and tail
            self.tail.pop_front();
            self.omitted += 1;
        }
        self.tail.push_back(mh);
    }

    /// Append outer frames in order.
    pub fn extend(&mut self, frames: impl IntoIterator<Item = *const MethodHandle>) {
        for f in frames {
            self.push(f);
        }
    }

    /// Count `n` passed frames that were not recorded, as the next outer
    /// ones (a rethrown trace's own omissions). A trace has one gap, so the
    /// tail frames recorded so far join it; the later frames form the tail.
    pub fn omit(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.omitted += self.tail.len() as u64 + n;
        self.tail.clear();
    }

    /// Forget every frame.
    pub fn clear(&mut self) {
        self.head.clear();
        self.tail.clear();
        self.omitted = 0;
    }

    /// The recorded frames, innermost first; the omitted ones lie before
    /// index [`omitted_at`](Self::omitted_at).
    pub fn frames(&self) -> impl Iterator<Item = *const MethodHandle> + '_ {
        self.head.iter().chain(self.tail.iter()).copied()
    }

    /// How many recorded frames precede the omitted ones.
    pub fn omitted_at(&self) -> usize {
        self.head.len()
    }

    /// How many frames were passed between the innermost and the outermost
    /// recorded ones and not recorded.
    pub fn omitted(&self) -> u64 {
        self.omitted
    }
}

/// Per-thread execution state, passed to every [`EntryFn`].
#[repr(C)]
pub struct ThreadCtx {
    /// The runtime (`*const runtime::Runtime`; typed by `ThreadCtx::rt`).
    pub runtime: *const (),
    /// The pending exception object, or null.
    pub pending: *mut u8,
    /// Interrupt word: 0, or the `safepoint::interrupt::Reason` of an
    /// interrupt to throw at the next safepoint poll (checked right after
    /// every poll; written by `safepoint::interrupt::request`).
    pub interrupt: crate::safepoint::interrupt::InterruptWord,
    /// Native stack pointer below which calls raise `StackOverflowException`.
    pub stack_limit: usize,
    /// Next free slot of the value stack (frames live here).
    pub vs_top: *mut u64,
    /// End of the value stack.
    pub vs_end: *mut u64,
    /// Frames the pending exception has passed, innermost first.
    pub trace: Trace,
    /// First slot of the value stack: frame records run from here to `vs_top`.
    pub vs_base: *mut u64,
    /// Objects Rust code holds across an allocation (a handle scope): GC roots.
    pub roots: Vec<*mut u8>,
    /// The native method being entered by `native_entry` (set just before
    /// its Rust function runs; host natives read it to find their closure).
    pub native_method: *const MethodHandle,
    /// The thread's private free cells, per cached size class
    /// (`heap::CACHED_CLASSES`): a list linked through each cell's `tags`
    /// word, taken from the heap in batches (`Runtime::alloc_object_in`;
    /// compiled code pops from it inline). Only the owning thread touches
    /// it, except the collector, which empties every attached context's
    /// cache while the world is stopped (before the sweep, which would
    /// otherwise hand its cells out again) and on detach.
    pub alloc_cache: [*mut u8; CACHED_CLASSES],
    vs: Vec<u64>,
}

/// The header of a frame record on the value stack (interpreter and JIT
/// frames alike), followed by the frame's slots
/// `[args | locals | evaluation stack | scratch]`. Compiled code writes it
/// through the word indices in [`frame`], which are derived from this layout.
#[repr(C)]
#[derive(Debug)]
pub struct FrameHeader {
    /// The method's `*const MethodHandle`.
    pub method: *const MethodHandle,
    /// The current safepoint position (instruction index, possibly with
    /// [`frame::POS_CTOR`], or [`frame::POS_ENTRY`] / [`frame::POS_SHARED`]).
    pub pos: u64,
    /// Slot count (low 32 bits) and flags ([`frame::JIT`]).
    pub size: u64,
    /// The frame's exception-region state (`*mut ir::EhState`) or null.
    pub eh: *mut u8,
}

/// Word indices into a [`FrameHeader`] (frame records are addressed as
/// `*mut u64`) and the values its words take.
pub mod frame {
    use super::FrameHeader;
    use std::mem::{offset_of, size_of};
    /// Words in a frame record header.
    pub const HEADER_SLOTS: usize = size_of::<FrameHeader>() / 8;
    /// Header word: [`FrameHeader::method`].
    pub const METHOD: usize = offset_of!(FrameHeader, method) / 8;
    /// Header word: [`FrameHeader::pos`].
    pub const POS: usize = offset_of!(FrameHeader, pos) / 8;
    /// Header word: [`FrameHeader::size`].
    pub const SIZE: usize = offset_of!(FrameHeader, size) / 8;
    /// Header word: [`FrameHeader::eh`].
    pub const EH: usize = offset_of!(FrameHeader, eh) / 8;
    /// `POS` flag: inside the constructor call of a `newobj` (the stack holds
    /// the new object below the constructor arguments).
    pub const POS_CTOR: u64 = 1 << 31;
    /// `POS` value of the method-entry poll (empty evaluation stack).
    pub const POS_ENTRY: u64 = 0x7FFF_FFFF;
    /// `POS` value shared by a compiled frame's safepoints whose references
    /// are exactly the slots the frame stores once and never changes (see
    /// `jit::env::FuncEnv::share_positions`): such a safepoint stores
    /// nothing, and the frame holds this value whenever it is not stopped
    /// at another safepoint.
    pub const POS_SHARED: u64 = 0x7FFF_FFFE;
    /// `SIZE` flag: a compiled frame (its method's JIT safepoint table applies).
    pub const JIT: u64 = 1 << 32;
}

/// Native stack size cap for threads started by `Thread::start`.
pub const SPAWNED_STACK_MAX: usize = 64 << 20;

/// Value-stack slots per thread at least (64 MiB, committed lazily); a
/// thread with a larger native stack gets a value stack of its size.
pub const VALUE_STACK_SLOTS: usize = 8 << 20;

impl ThreadCtx {
    /// A context for the current thread (`runtime` is the `*const Runtime`
    /// it runs for; `runtime::ThreadCtx::new` is the typed constructor), whose native stack has `stack_size`
    /// bytes and whose top is near the caller's frame.
    pub fn new_raw(runtime: *const (), stack_size: usize) -> ThreadCtx {
        ThreadCtx::try_new_raw(runtime, stack_size)
            .unwrap_or_else(|| panic!("cannot reserve a thread's value stack"))
    }

    /// [`ThreadCtx::new_raw`], or `None` if the value stack (64 MiB of
    /// address space, committed lazily) cannot be reserved.
    pub fn try_new_raw(runtime: *const (), stack_size: usize) -> Option<ThreadCtx> {
        let mut vs: Vec<u64> = Vec::new();
        // As many bytes as the native stack (at least VALUE_STACK_SLOTS
        // slots): a frame record takes about as much room as a compiled
        // frame, so recursion runs out of both at about the same depth and
        // `StackOverflowException` comes from whichever limit is hit, in
        // either mode, near the same frame count.
        let slots = VALUE_STACK_SLOTS.max(stack_size / 8);
        vs.try_reserve_exact(slots).ok()?;
        let start = vs.as_mut_ptr();
        let here = approx_sp();
        let margin = (stack_size / 8).clamp(64 << 10, 4 << 20);
        Some(ThreadCtx {
            runtime,
            pending: std::ptr::null_mut(),
            interrupt: crate::safepoint::interrupt::InterruptWord::new(),
            stack_limit: here.saturating_sub(stack_size.saturating_sub(margin)),
            vs_top: start,
            // SAFETY: the capacity is at least `slots`, so this is at most one past its end.
            vs_end: unsafe { start.add(slots) },
            trace: Trace::default(),
            vs_base: start,
            roots: Vec::new(),
            native_method: std::ptr::null(),
            alloc_cache: [std::ptr::null_mut(); CACHED_CLASSES],
            vs,
        })
    }

    /// Throw an existing exception object (fresh trace).
    pub fn throw(&mut self, obj: *mut u8) {
        self.pending = obj;
        self.trace.clear();
    }

    /// Is there a pending exception?
    pub fn has_pending(&self) -> bool {
        !self.pending.is_null()
    }

    #[allow(dead_code)]
    fn value_stack_capacity(&self) -> usize {
        self.vs.capacity()
    }
}

/// An approximation of the current native stack pointer.
#[inline(always)]
pub fn approx_sp() -> usize {
    let x = 0u8;
    std::hint::black_box(&x) as *const u8 as usize
}

/// Call a method through its slot.
///
/// # Safety
/// `mh` must be a live method handle of this thread's runtime and `args` must
/// hold at least `arg_count` slots of the right kinds.
#[inline(always)]
pub unsafe fn call_method(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    args: *const u64,
) -> u64 {
    // SAFETY: `entry` always holds a valid EntryFn (set by the tables or the JIT).
    unsafe {
        let f: EntryFn = std::mem::transmute::<usize, EntryFn>((*mh).entry.load(Ordering::Acquire));
        f(thread, mh, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame header is four words in this order; compiled code and the
    /// collector address it through `frame`'s indices.
    #[test]
    fn frame_header_layout() {
        assert_eq!(std::mem::size_of::<FrameHeader>(), 32);
        assert_eq!(frame::HEADER_SLOTS, 4);
        assert_eq!(
            (frame::METHOD, frame::POS, frame::SIZE, frame::EH),
            (0, 1, 2, 3)
        );
    }

    #[test]
    fn trace_keeps_both_ends_and_counts_the_middle() {
        let f = |i: usize| (i * 8) as *const MethodHandle;
        let kept = |t: &Trace| t.frames().collect::<Vec<_>>();
        // up to TRACE_MAX + TRACE_TAIL frames: all kept, none omitted
        let mut t = Trace::default();
        t.extend((1..=TRACE_MAX + TRACE_TAIL).map(f));
        assert_eq!(
            kept(&t),
            (1..=TRACE_MAX + TRACE_TAIL).map(f).collect::<Vec<_>>()
        );
        assert_eq!(t.omitted(), 0);
        // deeper: the innermost TRACE_MAX, a gap, the outermost TRACE_TAIL
        t.extend((1..=5).map(|i| f(TRACE_MAX + TRACE_TAIL + i)));
        let k = kept(&t);
        assert_eq!(k.len(), TRACE_MAX + TRACE_TAIL);
        assert_eq!((k[0], k[TRACE_MAX - 1]), (f(1), f(TRACE_MAX)));
        assert_eq!(k[TRACE_MAX], f(TRACE_MAX + 6));
        assert_eq!(*k.last().unwrap(), f(TRACE_MAX + TRACE_TAIL + 5));
        assert_eq!((t.omitted(), t.omitted_at()), (5, TRACE_MAX));
        let c = t.clone();
        // a rethrown trace with a gap, rebuilt the way a native rethrow does
        let mut r = Trace::default();
        r.extend(c.frames().take(c.omitted_at()));
        r.omit(c.omitted());
        r.extend(c.frames().skip(c.omitted_at()));
        assert_eq!(r, c);
        // an omission after some tail frames folds them into the gap
        let mut g = Trace::default();
        g.push(f(1));
        g.omit(3);
        g.push(f(2));
        g.push(f(3));
        g.omit(2);
        g.push(f(4));
        assert_eq!(
            (kept(&g), g.omitted_at(), g.omitted()),
            (vec![f(1), f(4)], 1, 7)
        );
        g.omit(0);
        assert_eq!(g.omitted(), 7);
        t.clear();
        assert!(t.frames().next().is_none() && t.omitted() == 0);
        assert_eq!(c.omitted(), 5);
    }
}
