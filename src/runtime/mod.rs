//! The runtime: options, loading ([`load`]), runtime tables ([`tables`]),
//! natives ([`natives`]), threads and exceptions, and [`run_file`].
//!
//! Execution model: every call loads the callee's method slot
//! (`MethodHandle::entry`, an [`tables::EntryFn`]) and calls it with a
//! [`ThreadCtx`] and untyped 64-bit argument slots. Exceptions are *pending*:
//! a faulting callee stores the exception object in `ThreadCtx::pending`,
//! appends its frame to `ThreadCtx::trace` and returns; every caller checks
//! `pending` after each call and either handles it (a `catch`) or propagates.
//! No Rust panic ever unwinds out of an `extern "C"` adapter: they catch it
//! and turn it into a pending `Exception`.
//!
//! Invariants: a [`Runtime`] is immutable after construction except for the
//! heap, the interned-string and array-class maps (mutex-protected), static
//! field memory and the method slots (atomics). It is shared between threads
//! through an `Arc`, which each running thread keeps alive.

pub mod load;
pub mod natives;
pub mod tables;

use crate::heap::{Heap, HeapError};
use crate::library::program::{MemberId, Program};
use crate::library::TypeSig;
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tables::{ClassDesc, EntryFn, MethodHandle, Tables};

pub use load::{load_program, LoadError};

/// Execution mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// Everything in the interpreter (`KILN_JIT=0`).
    Interp,
    /// Compile before first call (`KILN_JIT=1`, default).
    Jit,
}

/// Runtime options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Execution mode.
    pub mode: ExecMode,
    /// Maximum bytes of managed objects.
    pub heap_max: usize,
    /// Native stack size of threads running managed code.
    pub stack_size: usize,
    /// Collect at every allocation (`KILN_GC_STRESS=1`).
    pub gc_stress: bool,
    /// Print every collection on stderr (`KILN_GC_LOG=1`).
    pub gc_log: bool,
    /// Interrupt the program (`InterruptedException`, reason "deadline
    /// exceeded") once this much time has passed since `run_file` started
    /// it (`KILN_DEADLINE`, e.g. `500ms`, `2s`, `5m`). `None`: no limit.
    pub deadline: Option<std::time::Duration>,
}

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

/// Default heap limit: 2 GiB.
pub const DEFAULT_HEAP_MAX: usize = 2 << 30;
/// Default stack size: 512 MiB (reserved, committed lazily by the OS).
pub const DEFAULT_STACK_SIZE: usize = 512 << 20;

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: ExecMode::Jit,
            heap_max: DEFAULT_HEAP_MAX,
            stack_size: DEFAULT_STACK_SIZE,
            gc_stress: false,
            gc_log: false,
            deadline: None,
        }
    }
}

/// Parse a byte size with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1usize << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<usize>().ok()?.checked_mul(mul)
}

impl Options {
    /// Read `KILN_JIT`, `KILN_HEAP_MAX`, `KILN_GC_STRESS`, `KILN_GC_LOG` and
    /// `KILN_DEADLINE`.
    pub fn from_env() -> Result<Options, String> {
        let var = |n: &str| std::env::var(n).ok();
        let mut o =
            Options::from_vars(var("KILN_JIT").as_deref(), var("KILN_HEAP_MAX").as_deref())?;
        o.gc_stress = parse_flag("KILN_GC_STRESS", var("KILN_GC_STRESS").as_deref())?;
        o.gc_log = parse_flag("KILN_GC_LOG", var("KILN_GC_LOG").as_deref())?;
        if let Some(d) = var("KILN_DEADLINE") {
            o.deadline = Some(crate::safepoint::interrupt::parse_deadline(
                "KILN_DEADLINE",
                &d,
            )?);
        }
        Ok(o)
    }

    /// [`Options::from_env`] with the variables given.
    pub fn from_vars(jit: Option<&str>, heap: Option<&str>) -> Result<Options, String> {
        let mode = match jit {
            None | Some("1") | Some("on") => ExecMode::Jit,
            Some("0") | Some("off") => ExecMode::Interp,
            Some(v) => {
                return Err(format!(
                    "KILN_JIT={v:?} is not valid: accepted values are 0, off, 1, on"
                ))
            }
        };
        let mut o = Options {
            mode,
            ..Options::default()
        };
        if let Some(h) = heap {
            o.heap_max = parse_size(h).ok_or_else(|| {
                format!("KILN_HEAP_MAX={h:?} is not valid: expected a byte count with an optional K, M or G suffix")
            })?;
        }
        Ok(o)
    }
}

/// A boolean setting: unset, `0`, `off` → false; `1`, `on` → true.
pub fn parse_flag(name: &str, v: Option<&str>) -> Result<bool, String> {
    match v {
        None | Some("0") | Some("off") => Ok(false),
        Some("1") | Some("on") => Ok(true),
        Some(v) => Err(format!(
            "{name}={v:?} is not valid: accepted values are 0, off, 1, on"
        )),
    }
}

/// Exceptions the runtime raises itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `NullReferenceException`.
    NullReference,
    /// `IndexOutOfRangeException`.
    IndexOutOfRange,
    /// `ArithmeticException`.
    Arithmetic,
    /// `InvalidCastException`.
    InvalidCast,
    /// `StackOverflowException`.
    StackOverflow,
    /// `OutOfMemoryException`.
    OutOfMemory,
    /// `Exception` (internal errors).
    Exception,
    /// `InterruptedException` (an interrupt or deadline, delivered at a
    /// safepoint poll: see `safepoint::interrupt`).
    Interrupted,
}

impl FaultKind {
    const ALL: [FaultKind; 8] = [
        FaultKind::NullReference,
        FaultKind::IndexOutOfRange,
        FaultKind::Arithmetic,
        FaultKind::InvalidCast,
        FaultKind::StackOverflow,
        FaultKind::OutOfMemory,
        FaultKind::Exception,
        FaultKind::Interrupted,
    ];

    /// The std class name.
    pub fn class_name(self) -> &'static str {
        match self {
            FaultKind::NullReference => "NullReferenceException",
            FaultKind::IndexOutOfRange => "IndexOutOfRangeException",
            FaultKind::Arithmetic => "ArithmeticException",
            FaultKind::InvalidCast => "InvalidCastException",
            FaultKind::StackOverflow => "StackOverflowException",
            FaultKind::OutOfMemory => "OutOfMemoryException",
            FaultKind::Exception => "Exception",
            FaultKind::Interrupted => "InterruptedException",
        }
    }
}

/// A runtime fault about to become an exception object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which exception.
    pub kind: FaultKind,
    /// Its message (never empty).
    pub message: String,
}

impl Fault {
    /// Build a fault.
    pub fn new(kind: FaultKind, message: impl Into<String>) -> Fault {
        Fault {
            kind,
            message: message.into(),
        }
    }

    /// `NullReferenceException`.
    pub fn null(what: &str) -> Fault {
        Fault::new(FaultKind::NullReference, format!("null reference: {what}"))
    }

    // --- Faults raised by executing bytecode. The interpreter and the JIT's
    // helpers (src/jit/helpers.rs) both build them here, so the two execution
    // modes produce the same messages.

    /// A null reference used by instruction `what` (`ldfld`, `callvirt receiver`, ...).
    pub fn null_in(what: &str) -> Fault {
        Fault::new(
            FaultKind::NullReference,
            format!("null reference in {what}"),
        )
    }

    /// `call` of an instance method `method` (`Class::name`) on null.
    pub fn null_receiver(method: &str) -> Fault {
        Fault::new(
            FaultKind::NullReference,
            format!("null receiver in call to {method}"),
        )
    }

    /// Integer `div`/`rem` by zero.
    pub fn div_by_zero() -> Fault {
        Fault::new(FaultKind::Arithmetic, "integer division by zero")
    }

    /// Signed `MIN / -1` (or `rem`); `min` is the dividend.
    pub fn div_overflow(min: impl fmt::Display) -> Fault {
        Fault::new(
            FaultKind::Arithmetic,
            format!("integer overflow: {min} / -1"),
        )
    }

    /// Array index out of range.
    pub fn index_out_of_range(i: i32, len: u32) -> Fault {
        Fault::new(
            FaultKind::IndexOutOfRange,
            format!("index {i} is out of range for an array of length {len}"),
        )
    }

    /// `newarr` with a negative length.
    pub fn negative_length(n: i32) -> Fault {
        Fault::new(FaultKind::Arithmetic, format!("negative array length {n}"))
    }

    /// Failed `castclass`.
    pub fn bad_cast(from: &str, to: &str) -> Fault {
        Fault::new(
            FaultKind::InvalidCast,
            format!("cannot cast {from} to {to}"),
        )
    }

    /// Interface call on an object whose class does not implement the interface.
    pub fn not_implemented() -> Fault {
        Fault::new(
            FaultKind::InvalidCast,
            "object does not implement the interface",
        )
    }

    /// `throw` of null.
    pub fn throw_null() -> Fault {
        Fault::new(FaultKind::NullReference, "throw of a null reference")
    }

    /// `conv.char` of a value that is not a Unicode scalar value.
    pub fn conv_char(n: i64) -> Fault {
        Fault::new(
            FaultKind::InvalidCast,
            format!("conv.char: {n} (0x{n:x}) is not a Unicode scalar value"),
        )
    }

    /// The native stack limit was reached on entry to a method.
    pub fn native_stack_overflow() -> Fault {
        Fault::new(
            FaultKind::StackOverflow,
            "stack overflow: the native stack is exhausted",
        )
    }
}

impl From<HeapError> for Fault {
    fn from(e: HeapError) -> Fault {
        match e {
            HeapError::NegativeLength(_) => Fault::new(FaultKind::Arithmetic, e.to_string()),
            _ => Fault::new(FaultKind::OutOfMemory, e.to_string()),
        }
    }
}

/// Per-thread execution state, passed to every [`EntryFn`].
#[repr(C)]
pub struct ThreadCtx {
    /// The runtime.
    pub runtime: *const Runtime,
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
    /// The native method being entered by [`native_entry`] (set just before
    /// its Rust function runs; host natives read it to find their closure).
    pub native_method: *const MethodHandle,
    /// The thread's private free cells, per cached size class
    /// (`heap::CACHED_CLASSES`): a list linked through each cell's `tags`
    /// word, taken from the heap in batches ([`Runtime::alloc_object_in`];
    /// compiled code pops from it inline). Only the owning thread touches
    /// it, except the collector, which empties every attached context's
    /// cache while the world is stopped (before the sweep, which would
    /// otherwise hand its cells out again) and on detach.
    pub alloc_cache: [*mut u8; crate::heap::CACHED_CLASSES],
    vs: Vec<u64>,
}

/// Frame records on the value stack (interpreter and JIT frames alike): a
/// header of [`HEADER_SLOTS`](frame::HEADER_SLOTS) words followed by the
/// frame's slots `[args | locals | evaluation stack | scratch]`.
pub mod frame {
    /// Words in a frame record header.
    pub const HEADER_SLOTS: usize = 4;
    /// Header word: the method's `*const MethodHandle`.
    pub const METHOD: usize = 0;
    /// Header word: the current safepoint position (instruction index,
    /// possibly with [`POS_CTOR`], or [`POS_ENTRY`]).
    pub const POS: usize = 1;
    /// Header word: slot count (low 32 bits) and flags ([`JIT`]).
    pub const SIZE: usize = 2;
    /// Header word: the frame's exception state (`*mut interp::EhState`) or null.
    pub const EH: usize = 3;
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

/// Value-stack slots per thread (64 MiB, committed lazily).
const VALUE_STACK_SLOTS: usize = 8 << 20;

impl ThreadCtx {
    /// A context for the current thread, whose native stack has `stack_size`
    /// bytes and whose top is near the caller's frame.
    pub fn new(runtime: *const Runtime, stack_size: usize) -> ThreadCtx {
        let mut vs: Vec<u64> = Vec::with_capacity(VALUE_STACK_SLOTS);
        let start = vs.as_mut_ptr();
        let here = approx_sp();
        let margin = (stack_size / 8).clamp(64 << 10, 4 << 20);
        ThreadCtx {
            runtime,
            pending: std::ptr::null_mut(),
            interrupt: crate::safepoint::interrupt::InterruptWord::new(),
            stack_limit: here.saturating_sub(stack_size.saturating_sub(margin)),
            vs_top: start,
            // SAFETY: the capacity is VALUE_STACK_SLOTS, so this is one past its end.
            vs_end: unsafe { start.add(VALUE_STACK_SLOTS) },
            trace: Trace::default(),
            vs_base: start,
            roots: Vec::new(),
            native_method: std::ptr::null(),
            alloc_cache: [std::ptr::null_mut(); crate::heap::CACHED_CLASSES],
            vs,
        }
    }

    /// The runtime.
    pub fn rt(&self) -> &Runtime {
        // SAFETY: the runtime outlives every thread context (each thread holds an Arc).
        unsafe { &*self.runtime }
    }

    /// Make `fault` the pending exception (with an empty trace).
    ///
    /// The exception object is allocated without a collection (this is not
    /// a safepoint: compiled code raises faults between its safepoints), so
    /// when the heap has passed its collection threshold the thread is asked
    /// to collect at its next poll instead ([`interrupt::COLLECT`]); every
    /// loop polls, so a loop that only throws and catches stays bounded.
    ///
    /// [`interrupt::COLLECT`]: crate::safepoint::interrupt::COLLECT
    pub fn raise(&mut self, fault: Fault) {
        let obj = self.rt().exception_object(&fault);
        self.pending = obj;
        self.trace.clear();
        let rt = self.rt();
        if rt.heap.wants_collection(0) && rt.gc.enabled.load(Ordering::Relaxed) {
            self.interrupt.request_collect();
        }
    }

    /// Throw an existing exception object (fresh trace).
    pub fn throw(&mut self, obj: *mut u8) {
        self.pending = obj;
        self.trace.clear();
    }

    /// The slow path of the check after a safepoint poll: clear the
    /// interrupt word; collect if it asked for that
    /// ([`interrupt::COLLECT`]) and `at_safepoint` (the caller is at a
    /// poll whose frame state the collector can read; otherwise the request
    /// stays for the next poll); return the `InterruptedException` fault to
    /// raise, if the word held a reason.
    ///
    /// [`interrupt::COLLECT`]: crate::safepoint::interrupt::COLLECT
    #[cold]
    pub fn take_interrupt(&mut self, at_safepoint: bool) -> Option<Fault> {
        use crate::safepoint::interrupt::COLLECT;
        let w = self.interrupt.take();
        if w & COLLECT != 0 {
            if !at_safepoint {
                self.interrupt.request_collect();
            } else if self.rt().heap.wants_collection(0) {
                crate::heap::gc::collect(self.rt(), crate::heap::gc::Reason::Threshold);
            }
        }
        if w & !COLLECT == 0 {
            return None;
        }
        let msg = match crate::safepoint::interrupt::Reason::from_word(w) {
            Some(crate::safepoint::interrupt::Reason::Deadline) => match self.rt().opts.deadline {
                Some(d) => format!("deadline of {d:?} exceeded"),
                None => "deadline exceeded".to_string(),
            },
            _ => "interrupted".to_string(),
        };
        Some(Fault::new(FaultKind::Interrupted, msg))
    }

    /// If this thread's interrupt word is set, deliver it as a method-entry
    /// poll does: `InterruptedException` pending with `mh` in the trace.
    /// Returns whether it did (the caller then returns 0 from `mh`).
    /// `at_safepoint` as for [`ThreadCtx::take_interrupt`].
    pub fn interrupt_at_entry(&mut self, mh: *const MethodHandle, at_safepoint: bool) -> bool {
        if self.interrupt.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let Some(f) = self.take_interrupt(at_safepoint) else {
            return false;
        };
        self.raise(f);
        self.trace.push(mh);
        true
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

/// Enter managed code from Rust (a host call, `main`, a class
/// constructor, a new thread's `run`): [`call_method`], unless this
/// thread's interrupt word is set, in which case the interrupt is delivered
/// right here, as `InterruptedException` pending with `mh` in the trace,
/// exactly what the callee's entry poll would throw. A leaf method has no
/// entry poll (`interp::is_leaf`), so without this check a host calling one
/// on an interrupted or expired runtime would not see the interrupt.
///
/// # Safety
/// As [`call_method`].
pub unsafe fn call_from_host(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    args: *const u64,
) -> u64 {
    // SAFETY: `thread` is this thread's live context (caller contract).
    // (Not a safepoint: the arguments are only in the host's array.)
    if unsafe { &mut *thread }.interrupt_at_entry(mh, false) {
        return 0;
    }
    // SAFETY: caller contract.
    unsafe { call_method(thread, mh, args) }
}

/// The slot of native methods: calls the bound Rust function.
///
/// # Safety
/// Called only through a method slot, with the contract of [`EntryFn`].
pub unsafe extern "C" fn native_entry(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    args: *const u64,
) -> u64 {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the adapter contract: live thread, handle and arg_count slots.
        unsafe {
            (*thread).native_method = mh;
            let nargs = (*mh).arg_count as usize;
            let a = if nargs == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(args, nargs)
            };
            match (*mh).native {
                Some(f) => f(&mut *thread, a),
                None => Err(Fault::new(
                    FaultKind::Exception,
                    "native method is not bound",
                )),
            }
        }
    }));
    // SAFETY: `thread` is the live context of this thread.
    let t = unsafe { &mut *thread };
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(f)) => {
            t.raise(f);
            t.trace.push(mh);
            0
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            t.raise(Fault::new(
                FaultKind::Exception,
                format!("internal error in native method: {msg}"),
            ));
            t.trace.push(mh);
            0
        }
    }
}

/// The slot of abstract and interface methods (never reached by verified
/// code on a constructible object): raises an exception.
///
/// # Safety
/// Called only through a method slot, with the contract of [`EntryFn`].
pub unsafe extern "C" fn abstract_entry(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    _args: *const u64,
) -> u64 {
    // SAFETY: live thread and handle per the adapter contract.
    let t = unsafe { &mut *thread };
    // SAFETY: live handle per the adapter contract.
    let name = t.rt().method_name(unsafe { &*mh });
    t.raise(Fault::new(
        FaultKind::Exception,
        format!("abstract method {name} has no implementation"),
    ));
    t.trace.push(mh);
    0
}

/// Everything one loaded program needs at run time.
pub struct Runtime {
    /// The libraries.
    pub program: Program,
    /// File names parallel to `program.libs`.
    pub files: Vec<String>,
    /// Runtime tables.
    pub tables: Tables,
    /// The managed heap.
    pub heap: Heap,
    /// Options.
    pub opts: Options,
    /// Buffered standard output (flushed before stderr output and at exit).
    pub out: Mutex<std::io::BufWriter<std::io::Stdout>>,
    interned: Mutex<HashMap<String, usize>>,
    /// `String`'s descriptor.
    pub string_class: *const ClassDesc,
    fault_classes: Vec<*const ClassDesc>,
    /// Offset of `Exception::message`.
    pub message_offset: usize,
    /// `Thread`'s descriptor.
    pub thread_class: *const ClassDesc,
    /// Offset of `Thread::handle`.
    pub thread_handle_offset: usize,
    /// Interface id of `Runnable` and index of `run`.
    pub runnable: (u32, usize),
    threads: Mutex<Vec<Option<std::thread::JoinHandle<()>>>>,
    self_ref: OnceLock<Weak<Runtime>>,
    /// Interpreter code owned by the runtime (see `crate::interp`).
    pub interp_code: Vec<Box<crate::interp::Code>>,
    /// JIT hook: the Cranelift tier, set by `crate::jit::install` in JIT mode.
    pub jit: OnceLock<crate::jit::Jit>,
    /// The collector's state (roots, attached threads, statistics).
    pub gc: crate::heap::gc::GcState,
    /// Natives bound by the embedding host (`crate::host`), by method.
    pub host_natives: HashMap<MemberId, HostNativeFn>,
    /// Interrupt requests (`safepoint::interrupt`).
    pub interrupts: crate::safepoint::interrupt::InterruptState,
}

/// A native implemented by the embedding host: like a [`natives::NativeFn`],
/// but a closure. It may also throw an arbitrary exception object itself
/// (`ThreadCtx::throw` plus a trace entry) and return `Ok(0)`.
pub type HostNativeFn = Arc<dyn Fn(&mut ThreadCtx, &[u64]) -> Result<u64, Fault> + Send + Sync>;

/// The [`natives::NativeFn`] bound to every host native: calls the closure
/// registered for the method being entered (`ThreadCtx::native_method`).
fn host_native_trampoline(t: &mut ThreadCtx, a: &[u64]) -> Result<u64, Fault> {
    // SAFETY: set by `native_entry` to the live handle it is entering.
    let member = unsafe { (*t.native_method).member };
    match t.rt().host_natives.get(&member) {
        Some(f) => {
            let f = Arc::clone(f);
            f(t, a)
        }
        None => Err(Fault::new(FaultKind::Exception, "host native is not bound")),
    }
}

// SAFETY: the raw pointers refer to the runtime's own tables, which are
// immutable or synchronised (see module invariants).
unsafe impl Send for Runtime {}
// SAFETY: as above.
unsafe impl Sync for Runtime {}

/// Why a program could not be set up after verification.
#[derive(Clone, Debug)]
pub struct SetupError(pub String);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Runtime {
    /// Build the tables and interpreter code for a verified program.
    pub fn new(
        program: Program,
        files: Vec<String>,
        verified: &crate::verify::Verified,
        opts: Options,
    ) -> Result<Runtime, Vec<LoadError>> {
        Runtime::with_host_natives(program, files, verified, opts, HashMap::new())
    }

    /// [`Runtime::new`], also binding the host's natives, keyed by
    /// `(class, method)` (built-in natives take precedence; the host checks
    /// for clashes before).
    pub fn with_host_natives(
        program: Program,
        files: Vec<String>,
        verified: &crate::verify::Verified,
        opts: Options,
        host: HashMap<(String, String), HostNativeFn>,
    ) -> Result<Runtime, Vec<LoadError>> {
        let lookup = |c: &str, m: &str| {
            natives::lookup(c, m).or_else(|| {
                host.contains_key(&(c.to_string(), m.to_string()))
                    .then_some(host_native_trampoline as natives::NativeFn)
            })
        };
        let tables = Tables::build(
            &program,
            &|m| {
                verified.methods.get(&m).map(|i| tables::MethodFrameInfo {
                    max_stack: i.max_stack,
                })
            },
            &lookup,
        )
        .map_err(|es| {
            es.into_iter()
                .map(|e| match e {
                    tables::TableError::UnboundNative {
                        class,
                        method,
                        line,
                        lib,
                    } => LoadError::UnboundNative {
                        file: files.get(lib).cloned().unwrap_or_default(),
                        line,
                        class,
                        method,
                    },
                    tables::TableError::MissingClass(c) => {
                        LoadError::Setup(format!("missing class {c}"))
                    }
                })
                .collect::<Vec<_>>()
        })?;
        let need = |n: &str| {
            tables
                .class_named(&program, n)
                .ok_or_else(|| vec![LoadError::Setup(format!("std class {n} is missing"))])
        };
        let string_class = need(crate::library::STRING)?;
        let mut fault_classes = Vec::new();
        for k in FaultKind::ALL {
            fault_classes.push(need(k.class_name())?);
        }
        let exc = program
            .class(crate::library::EXCEPTION)
            .expect("checked above");
        let message_offset = program
            .find_field(exc, "message")
            .map(|f| tables.field(f).field_offset as usize)
            .ok_or_else(|| vec![LoadError::Setup("Exception::message is missing".into())])?;
        let thread_class = need("Thread")?;
        let thread_id = program.class("Thread").expect("checked above");
        let thread_handle_offset = program
            .find_field(thread_id, "handle")
            .map(|f| tables.field(f).field_offset as usize)
            .ok_or_else(|| vec![LoadError::Setup("Thread::handle is missing".into())])?;
        let runnable_id = program
            .class("Runnable")
            .ok_or_else(|| vec![LoadError::Setup("Runnable is missing".into())])?;
        // SAFETY: descriptors are live while `tables` lives.
        let rid = unsafe { (*tables.class(runnable_id)).iface_id };
        let run_idx = program
            .def(runnable_id)
            .methods
            .iter()
            .position(|m| m.name == "run")
            .ok_or_else(|| vec![LoadError::Setup("Runnable::run is missing".into())])?;
        let heap = Heap::new(opts.heap_max);
        let mut static_refs = Vec::new();
        for id in program.all_classes() {
            for (fi, f) in program.def(id).fields.iter().enumerate() {
                if f.is_static && f.ty.is_ref() {
                    let fh = tables.field(MemberId {
                        class: id,
                        index: fi as u32,
                    });
                    static_refs.push(fh.static_addr as usize);
                }
            }
        }
        let gc = crate::heap::gc::GcState::new(opts.gc_stress, opts.gc_log, static_refs);
        let mut host_natives = HashMap::new();
        for id in program.all_classes() {
            let def = program.def(id);
            for (i, m) in def.methods.iter().enumerate() {
                if !m.flags.is_native || natives::lookup(&def.name, &m.name).is_some() {
                    continue;
                }
                if let Some(f) = host.get(&(def.name.clone(), m.name.clone())) {
                    let member = MemberId {
                        class: id,
                        index: i as u32,
                    };
                    host_natives.insert(member, Arc::clone(f));
                }
            }
        }
        let mut rt = Runtime {
            program,
            files,
            tables,
            heap,
            opts,
            out: Mutex::new(std::io::BufWriter::with_capacity(
                1 << 16,
                std::io::stdout(),
            )),
            interned: Mutex::new(HashMap::new()),
            string_class,
            fault_classes,
            message_offset,
            thread_class,
            thread_handle_offset,
            runnable: (rid, run_idx),
            threads: Mutex::new(Vec::new()),
            self_ref: OnceLock::new(),
            interp_code: Vec::new(),
            jit: OnceLock::new(),
            gc,
            host_natives,
            interrupts: crate::safepoint::interrupt::InterruptState::new(),
        };
        let code = crate::interp::prepare(&rt, verified).map_err(|e| vec![LoadError::Setup(e)])?;
        rt.interp_code = code;
        Ok(rt)
    }

    /// Record the `Arc` this runtime lives in, which `Thread::start` needs
    /// to keep the runtime alive in new threads (`run_file` does it; a host
    /// that builds a runtime itself calls this once after `Arc::new`).
    pub fn set_shared(self: &Arc<Self>) {
        let _ = self.self_ref.set(Arc::downgrade(self));
    }

    /// A handle that interrupts this runtime's threads from any thread
    /// (see `safepoint::interrupt`); it does not keep the runtime alive.
    pub fn interrupt_handle(self: &Arc<Self>) -> crate::safepoint::interrupt::InterruptHandle {
        crate::safepoint::interrupt::InterruptHandle::new(self)
    }

    /// The interned string object for a literal (equal literals, same object).
    pub fn intern(&self, s: &str) -> Result<*mut u8, Fault> {
        let mut m = self.interned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&p) = m.get(s) {
            return Ok(p as *mut u8);
        }
        // SAFETY: string_class is the live String descriptor; a pinned
        // string is never freed (compiled code embeds its address).
        let p = unsafe {
            let p = self
                .heap
                .new_string(self.string_class, s.as_bytes(), true)?;
            crate::heap::pin(p);
            p
        };
        m.insert(s.to_string(), p as usize);
        Ok(p)
    }

    /// Allocate through `f`, collecting first when the allocation volume
    /// passed the threshold (or always, in stress mode), and once more
    /// before giving up when the heap limit is reached. The caller must be
    /// at a safepoint: every reference it still needs is in a frame slot, a
    /// static or its thread's handle scope (`ThreadCtx::roots`).
    fn alloc_with(
        &self,
        size: u64,
        f: impl Fn() -> Result<*mut u8, HeapError>,
    ) -> Result<*mut u8, Fault> {
        use crate::heap::gc::{collect, Reason};
        if self.gc.stress || self.heap.wants_collection(size) {
            collect(self, Reason::Threshold);
        }
        match f() {
            Ok(p) => Ok(p),
            Err(HeapError::LimitExceeded { .. }) if size <= self.heap.max() as u64 => {
                collect(self, Reason::Limit);
                f().map_err(Fault::from)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A new string object (may collect: see [`Runtime::alloc_with`]).
    pub fn new_string(&self, bytes: &[u8]) -> Result<*mut u8, Fault> {
        let size = crate::heap::STRING_DATA_OFFSET as u64 + bytes.len() as u64;
        // SAFETY: string_class is the live String descriptor.
        self.alloc_with(size, || unsafe {
            self.heap.new_string(self.string_class, bytes, false)
        })
    }

    /// A new object of `class` (may collect).
    ///
    /// # Safety
    /// `class` is a live class descriptor of a class.
    pub unsafe fn alloc_object(&self, class: *const ClassDesc) -> Result<*mut u8, Fault> {
        // SAFETY: caller contract.
        let size = unsafe { (*class).instance_size } as u64;
        // SAFETY: caller contract.
        self.alloc_with(size, || unsafe { self.heap.new_object(class, false) })
    }

    /// [`Runtime::alloc_object`] for the thread `t` (its current thread),
    /// from `t`'s allocation cache when the object's cell is small
    /// (refilled in batches through `Runtime::alloc_with`, so collection
    /// triggers and the heap limit work as for any allocation). Under GC
    /// stress every allocation takes the ordinary path (one collection each).
    ///
    /// # Safety
    /// `class` is a live class descriptor of a class; `t` is the calling
    /// thread's context, attached to this runtime.
    pub unsafe fn alloc_object_in(
        &self,
        t: &mut ThreadCtx,
        class: *const ClassDesc,
    ) -> Result<*mut u8, Fault> {
        // SAFETY: caller contract.
        let size = unsafe { (*class).instance_size } as usize;
        let c = match crate::heap::cached_class_of_object(size) {
            Some(c) if !self.gc.stress => c,
            // SAFETY: caller contract.
            _ => return unsafe { self.alloc_object(class) },
        };
        if t.alloc_cache[c].is_null() {
            let cell = crate::heap::SIZE_CLASSES[c];
            let batch = crate::heap::cache_batch(c);
            let head = self.alloc_with((cell * batch) as u64, || {
                self.heap.take_cells(c, batch).map(|(h, _)| h)
            })?;
            // (A collection inside `alloc_with` emptied the caches before
            // these cells were taken.)
            t.alloc_cache[c] = head;
        }
        let p = t.alloc_cache[c];
        // SAFETY: `p` heads this thread's list of free cells of class `c`
        // (taken by `take_cells`, not swept since: a collection empties the
        // list), each at least `size` bytes, 8-aligned; unlinking it makes
        // it ours, and we zero it before publishing the class pointer.
        unsafe {
            let h = p as *mut crate::heap::ObjHeader;
            t.alloc_cache[c] = (*h).tags as *mut u8;
            std::ptr::write_bytes(p, 0, size.max(crate::heap::HEADER_SIZE));
            (*h).class = class;
        }
        Ok(p)
    }

    /// A new array of `len` elements of the array class `class` (may collect).
    ///
    /// # Safety
    /// `class` is a live array class descriptor.
    pub unsafe fn alloc_array(&self, class: *const ClassDesc, len: i64) -> Result<*mut u8, Fault> {
        if len < 0 {
            return Err(HeapError::NegativeLength(len).into());
        }
        // SAFETY: caller contract.
        let size = unsafe { Heap::array_bytes(class, len) };
        // SAFETY: caller contract.
        self.alloc_with(size, || unsafe { self.heap.new_array(class, len, false) })
    }

    /// Allocate the exception object for a runtime fault (ignores the heap
    /// limit, so raising `OutOfMemoryException` cannot fail).
    pub fn exception_object(&self, fault: &Fault) -> *mut u8 {
        let idx = FaultKind::ALL
            .iter()
            .position(|k| *k == fault.kind)
            .expect("all kinds listed");
        let msg = if fault.message.is_empty() {
            fault.kind.class_name()
        } else {
            &fault.message
        };
        // SAFETY: the fault classes and String are live descriptors; the
        // message offset is inside every Exception instance.
        unsafe {
            let obj = self
                .heap
                .new_object(self.fault_classes[idx], true)
                .expect("unlimited allocation");
            let s = self
                .heap
                .new_string(self.string_class, msg.as_bytes(), true)
                .expect("unlimited allocation");
            *(obj.add(self.message_offset) as *mut *mut u8) = s;
            obj
        }
    }

    /// The method whose code contains `pc`: JIT machine code first, then
    /// interpreted bytecode ranges (the method lookup table).
    pub fn lookup(&self, pc: usize) -> Option<&MethodHandle> {
        if let Some(m) = self.jit.get().and_then(|j| j.lookup(pc)) {
            // SAFETY: handles in the JIT's table are live tables of this runtime.
            return Some(unsafe { &*m });
        }
        let def = tables::lookup_method(&self.tables.lookup, pc)?;
        // SAFETY: definitions in the lookup table are live; `handle` is set for every method.
        unsafe { (*def).handle.as_ref() }
    }

    /// `Class::method` of a handle.
    pub fn method_name(&self, mh: &MethodHandle) -> String {
        let m = mh.member;
        format!(
            "{}::{}",
            self.program.def(m.class).name,
            self.program.method(m).name
        )
    }

    /// Write the report of an uncaught exception on stderr.
    ///
    /// # Safety
    /// `exc` must be a live exception object and `trace` live handles.
    pub unsafe fn report_uncaught(&self, exc: *mut u8, trace: &Trace) {
        self.flush_stdout();
        // SAFETY: `exc` is a live exception object; message is a string or null.
        let (class, msg) = unsafe {
            let cd = crate::heap::class_of(exc);
            let m = *(exc.add(self.message_offset) as *const *const u8);
            let msg = if m.is_null() {
                String::new()
            } else {
                String::from_utf8_lossy(crate::heap::string_bytes(m)).into_owned()
            };
            ((*cd).name().to_string(), msg)
        };
        let mut s = format!("unhandled exception: {class}: {msg}\n");
        for (i, f) in trace.frames().enumerate() {
            if i == trace.omitted_at() && trace.omitted() > 0 {
                s.push_str(&format!("  ... {} more frames\n", trace.omitted()));
            }
            s.push_str("  at ");
            // SAFETY: trace entries are live handles (caller contract).
            s.push_str(&self.method_name(unsafe { &*f }));
            s.push('\n');
        }
        if trace.omitted_at() == trace.frames().count() && trace.omitted() > 0 {
            s.push_str(&format!("  ... {} more frames\n", trace.omitted()));
        }
        let err = std::io::stderr();
        let mut e = err.lock();
        let _ = e.write_all(s.as_bytes());
        let _ = e.flush();
    }

    /// Flush buffered standard output.
    pub fn flush_stdout(&self) {
        // May block on the pipe: count as stopped meanwhile (the lock is
        // only ever taken in native state, so a stopped thread never holds it).
        let _n = crate::safepoint::native_scope();
        let _ = self.out.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }

    /// Start `r.run()` on a new OS thread; returns the thread's registry index.
    ///
    /// # Safety
    /// `r` must be a live object.
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
        let robj = r as usize;
        let mhp = mh as usize;
        // The runnable stays a root until the new thread has it in its own
        // handle scope.
        self.gc.add_start_root(r);
        let handle = std::thread::Builder::new()
            .name("kiln-thread".into())
            .stack_size(stack)
            .spawn(move || {
                let rt: Arc<Runtime> = me;
                let mut ctx = ThreadCtx::new(&*rt, stack);
                // SAFETY: `ctx` lives on this frame until after `_att` is dropped.
                let _att = unsafe { crate::heap::gc::attach(&rt, &mut ctx) };
                ctx.roots.push(robj as *mut u8);
                rt.gc.remove_start_root(robj as *mut u8);
                let args = [robj as u64];
                // SAFETY: `mhp` is the live handle of `run`; args hold the receiver.
                unsafe { call_from_host(&mut ctx, mhp as *const MethodHandle, args.as_ptr()) };
                if ctx.has_pending() {
                    // SAFETY: a pending exception is a live object; the trace holds live handles.
                    unsafe { rt.report_uncaught(ctx.pending, &ctx.trace) };
                }
                rt.flush_stdout();
            })
            .map_err(|e| {
                self.gc.remove_start_root(r);
                Fault::new(FaultKind::OutOfMemory, format!("cannot start thread: {e}"))
            })?;
        let mut ts = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        ts.push(Some(handle));
        Ok(ts.len())
    }

    /// Wait for thread `id` (1-based registry index; unknown or joined ids return at once).
    pub fn join_thread(&self, id: usize) {
        let h = {
            let mut ts = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            id.checked_sub(1)
                .and_then(|i| ts.get_mut(i))
                .and_then(|s| s.take())
        };
        if let Some(h) = h {
            // Blocking: count as stopped meanwhile.
            let _n = crate::safepoint::native_scope();
            let _ = h.join();
        }
    }

    /// Find the implementation of interface method `index` of interface `iface` for `obj`.
    ///
    /// # Safety
    /// `obj` must be a live non-null object.
    pub unsafe fn dispatch_interface(
        &self,
        obj: *mut u8,
        iface: u32,
        index: usize,
    ) -> Option<*const MethodHandle> {
        // SAFETY: live object, so its class descriptor and slot tables are live.
        unsafe {
            let cd = &*crate::heap::class_of(obj);
            if iface >= cd.islots_len {
                return None;
            }
            let row = *cd.islots.add(iface as usize);
            if row.is_null() {
                return None;
            }
            Some(*row.add(index))
        }
    }

    /// Run every `cctor` (in load order) and then `main`; returns the exit code.
    fn run_main(&self, main: MemberId, args: &[String]) -> i32 {
        let mut ctx = ThreadCtx::new(self, self.opts.stack_size);
        // SAFETY: `ctx` lives on this frame until after `_att` is dropped.
        let _att = unsafe { crate::heap::gc::attach(self, &mut ctx) };
        let uncaught = |ctx: &ThreadCtx| {
            // SAFETY: a pending exception is a live object; the trace holds live handles.
            unsafe { self.report_uncaught(ctx.pending, &ctx.trace) };
            1
        };
        for id in self.program.all_classes() {
            let def = self.program.def(id);
            if let Some(i) = def
                .methods
                .iter()
                .position(|m| m.name == "cctor" && m.flags.is_static)
            {
                let mh = self.tables.method(MemberId {
                    class: id,
                    index: i as u32,
                });
                // SAFETY: a static method without arguments.
                unsafe { call_from_host(&mut ctx, mh, std::ptr::null()) };
                if ctx.has_pending() {
                    return uncaught(&ctx);
                }
            }
        }
        let mdef = self.program.method(main);
        let mh = self.tables.method(main);
        let mut argv = Vec::new();
        if !mdef.params.is_empty() {
            let arr_ty = TypeSig::Array(Box::new(TypeSig::class(crate::library::STRING)));
            let ac = self.tables.array_class(&self.program, &arr_ty);
            // SAFETY: `ac` is the live string[] descriptor; elements are 8 bytes.
            let arr = match unsafe { self.alloc_array(ac, args.len() as i64) } {
                Ok(a) => a,
                Err(f) => {
                    ctx.raise(f);
                    return uncaught(&ctx);
                }
            };
            ctx.roots.push(arr); // held across the string allocations
            for (i, a) in args.iter().enumerate() {
                match self.new_string(a.as_bytes()) {
                    // SAFETY: i < len; element slot i of the new array.
                    Ok(s) => unsafe {
                        *(arr.add(crate::heap::ARRAY_DATA_OFFSET + 8 * i) as *mut *mut u8) = s;
                    },
                    Err(f) => {
                        ctx.raise(f);
                        return uncaught(&ctx);
                    }
                }
            }
            argv.push(arr as u64);
        }
        // SAFETY: main takes no arguments or one string[].
        let r = unsafe { call_from_host(&mut ctx, mh, argv.as_ptr()) };
        if ctx.has_pending() {
            return uncaught(&ctx);
        }
        if mdef.ret.is_some() {
            (r as i32) & 0xFF
        } else {
            0
        }
    }
}

#[allow(clippy::result_large_err)]
/// Find the entry point: exactly one class of the program defines a static
/// `main` (the main file's library is searched first).
fn find_main(program: &Program, files: &[String]) -> Result<MemberId, LoadError> {
    let last = program.libs.len().saturating_sub(1);
    let file = files.get(last).cloned().unwrap_or_default();
    let mut found = Vec::new();
    for id in program.all_classes() {
        if id.lib as usize != last {
            continue;
        }
        for (i, m) in program.def(id).methods.iter().enumerate() {
            if m.name == "main" && m.flags.is_static {
                found.push(MemberId {
                    class: id,
                    index: i as u32,
                });
            }
        }
    }
    match found.len() {
        0 => Err(LoadError::NoMain { file }),
        1 => {
            let m = program.method(found[0]);
            let ok_params = m.params.is_empty()
                || (m.params.len() == 1
                    && m.params[0].ty
                        == TypeSig::Array(Box::new(TypeSig::class(crate::library::STRING))));
            let ok_ret = matches!(m.ret, None | Some(TypeSig::Prim(crate::library::Prim::I32)));
            if ok_params && ok_ret && m.has_body() {
                Ok(found[0])
            } else {
                Err(LoadError::BadMain {
                    file,
                    line: m.line,
                    class: program.def(found[0].class).name.clone(),
                })
            }
        }
        _ => Err(LoadError::MultipleMain {
            file,
            classes: found
                .iter()
                .map(|m| program.def(m.class).name.clone())
                .collect(),
        }),
    }
}

fn print_errors(errs: &[LoadError]) {
    let mut s = String::new();
    for e in errs {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    let _ = std::io::stderr().write_all(s.as_bytes());
}

/// Load, verify and run a program (see the module docs). Returns the exit
/// code: 3 if it does not load or verify (nothing ran), 1 after an uncaught
/// exception, else `main`'s result `& 0xFF`.
pub fn run_file(path: &Path, args: &[String], opts: &Options) -> i32 {
    let (program, files, verified) = match load::load_verified(path) {
        Ok(x) => x,
        Err(e) => {
            print_errors(&e);
            return 3;
        }
    };
    let main = match find_main(&program, &files) {
        Ok(m) => m,
        Err(e) => {
            print_errors(&[e]);
            return 3;
        }
    };
    let rt = match Runtime::new(program, files, &verified, opts.clone()) {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            print_errors(&e);
            return 3;
        }
    };
    // JIT hook: in `ExecMode::Jit` every bytecode method's slot gets the
    // compile stub (before any cctor runs); without a Cranelift backend for
    // this host, everything stays in the interpreter.
    if opts.mode == ExecMode::Jit {
        if let Err(e) = crate::jit::install(&rt, verified) {
            eprintln!("kiln: no JIT for this host ({e}); running in the interpreter");
        }
    }
    let _ = rt.self_ref.set(Arc::downgrade(&rt));
    let rt2 = Arc::clone(&rt);
    let args = args.to_vec();
    // The deadline counts from here; the watchdog is cancelled when main ends.
    let watchdog = match opts.deadline {
        Some(d) => match crate::safepoint::interrupt::Watchdog::start(rt.interrupt_handle(), d) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("kiln: cannot start the deadline watchdog: {e}");
                return 2;
            }
        },
        None => None,
    };
    let res = std::thread::Builder::new()
        .name("kiln-main".into())
        .stack_size(opts.stack_size)
        .spawn(move || {
            let code = rt2.run_main(main, &args);
            rt2.flush_stdout();
            code
        })
        .map(|h| h.join());
    let code = match res {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => {
            eprintln!("kiln: internal error: the main thread panicked");
            101
        }
        Err(e) => {
            eprintln!("kiln: cannot start the main thread: {e}");
            2
        }
    };
    drop(watchdog);
    rt.flush_stdout();
    // Threads still running keep their own Arc; the process exits anyway.
    code
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn run_src(name: &str, src: &str) -> i32 {
        let dir = std::env::temp_dir().join(format!("kiln-rt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{name}.kasm"));
        std::fs::write(&p, src).unwrap();
        let opts = Options {
            stack_size: 64 << 20,
            heap_max: 16 << 20,
            ..Options::default()
        };
        run_file(&p, &[], &opts)
    }

    #[test]
    fn exit_codes_end_to_end() {
        let ok = ".library a\n.class public P {\n .method public static main() -> i32 {\n  ldc.i32 298\n  ret\n }\n}\n";
        assert_eq!(run_src("ok", ok), 298 & 0xFF);
        let bad = ".library b\n.class public P {\n .method public static main() -> i32 {\n  ldc.i64 1\n  ret\n }\n}\n";
        assert_eq!(run_src("bad", bad), 3);
        let unbound = ".library c\n.class public P {\n .method public static native nope()\n .method public static main() {\n  ret\n }\n}\n";
        assert_eq!(run_src("unbound", unbound), 3);
        let throws = ".library d\n.class public P {\n .method public static main() -> i32 {\n  ldc.i32 1\n  ldc.i32 0\n  div\n  ret\n }\n}\n";
        assert_eq!(run_src("throws", throws), 1);
        let caught = ".library e\n.class public P {\n .method public static main() -> i32 {\n  .try {\n   ldc.i32 1\n   ldc.i32 0\n   div\n   pop\n   leave out\n  } catch ArithmeticException {\n   pop\n   leave out\n  }\n out:\n  ldc.i32 5\n  ret\n }\n}\n";
        assert_eq!(run_src("caught", caught), 5);
    }

    #[test]
    fn options_parse() {
        assert_eq!(Options::from_vars(None, None).unwrap().mode, ExecMode::Jit);
        assert_eq!(
            Options::from_vars(Some("off"), None).unwrap().mode,
            ExecMode::Interp
        );
        assert_eq!(
            Options::from_vars(Some("0"), None).unwrap().mode,
            ExecMode::Interp
        );
        assert_eq!(
            Options::from_vars(Some("on"), None).unwrap().mode,
            ExecMode::Jit
        );
        let e = Options::from_vars(Some("yes"), None).unwrap_err();
        assert!(e.contains("KILN_JIT") && e.contains("0, off, 1, on"));
        assert_eq!(
            Options::from_vars(None, Some("64M")).unwrap().heap_max,
            64 << 20
        );
        assert_eq!(
            Options::from_vars(None, Some("1000")).unwrap().heap_max,
            1000
        );
        assert_eq!(
            Options::from_vars(None, Some("2g")).unwrap().heap_max,
            2 << 30
        );
        assert!(Options::from_vars(None, Some("12Q"))
            .unwrap_err()
            .contains("KILN_HEAP_MAX"));
        assert!(Options::from_vars(None, Some("")).is_err());
        assert!(Options::from_vars(None, Some("-5")).is_err());
        assert!(Options::from_vars(None, Some("99999999999999999999G")).is_err());
        assert_eq!(parse_flag("KILN_GC_STRESS", None), Ok(false));
        assert_eq!(parse_flag("KILN_GC_STRESS", Some("off")), Ok(false));
        assert_eq!(parse_flag("KILN_GC_STRESS", Some("1")), Ok(true));
        assert_eq!(parse_flag("KILN_GC_STRESS", Some("on")), Ok(true));
        let e = parse_flag("KILN_GC_STRESS", Some("2")).unwrap_err();
        assert!(e.contains("KILN_GC_STRESS") && e.contains("0, off, 1, on"));
    }
}
