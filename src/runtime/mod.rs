//! The runtime: the engine's services below both tiers. Options, loading
//! ([`load`], the one loader), table building ([`tables`]), resolution of
//! bytecode into `ir` ([`resolve`]), GC roots and thread attachment
//! ([`roots`]), interrupt requests ([`interrupt`]), natives ([`natives`]),
//! allocation entry points, threads and exceptions. It names neither tier:
//! the engine hands it their entry points ([`Tiers`], [`CodeTier`]).
//!
//! Execution model: every call loads the callee's method slot
//! (`MethodHandle::entry`, an [`EntryFn`](crate::vm::tables::EntryFn)) and calls it with a
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

pub mod interrupt;
pub mod load;
pub mod natives;
pub mod resolve;
pub mod roots;
pub mod tables;
pub mod threads;

use crate::heap::{Heap, HeapError};
use crate::library::program::{MemberId, Program};
use crate::library::TypeSig;
use crate::vm::tables::{ClassDesc, EntryFn, MethodHandle};
use crate::vm::thread::{call_method, Trace};
use crate::vm::{Fault, FaultKind, ThreadCtx};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tables::Tables;

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
    /// At most this many threads started by `Thread::start` run at once
    /// (`KILN_MAX_THREADS`); one more start raises `OutOfMemoryException`.
    /// The default, [`threads::default_max_threads`], keeps clear of the
    /// system's limits, so the refusal comes while the process still has
    /// memory mappings to go on with.
    pub max_threads: usize,
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
            max_threads: threads::default_max_threads(),
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
    /// Read `KILN_JIT`, `KILN_HEAP_MAX`, `KILN_GC_STRESS`, `KILN_GC_LOG`,
    /// `KILN_DEADLINE` and `KILN_MAX_THREADS`.
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
        if let Some(n) = var("KILN_MAX_THREADS") {
            o.max_threads = parse_max_threads(&n)?;
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

/// `KILN_MAX_THREADS`: a whole number from 1 to 1,000,000.
pub fn parse_max_threads(v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(|| {
            format!(
                "KILN_MAX_THREADS={v:?} is not valid: expected a whole number from 1 to 1000000"
            )
        })
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

impl From<HeapError> for Fault {
    fn from(e: HeapError) -> Fault {
        match e {
            HeapError::NegativeLength(_) => Fault::new(FaultKind::Arithmetic, e.to_string()),
            _ => Fault::new(FaultKind::OutOfMemory, e.to_string()),
        }
    }
}

impl ThreadCtx {
    /// A context for the current thread running code of `runtime`, whose
    /// native stack has `stack_size` bytes and whose top is near the
    /// caller's frame.
    pub fn new(runtime: *const Runtime, stack_size: usize) -> ThreadCtx {
        ThreadCtx::new_raw(runtime.cast(), stack_size)
    }

    /// [`ThreadCtx::new`], or `None` if the value stack cannot be reserved.
    pub fn try_new(runtime: *const Runtime, stack_size: usize) -> Option<ThreadCtx> {
        ThreadCtx::try_new_raw(runtime.cast(), stack_size)
    }

    /// The runtime.
    pub fn rt(&self) -> &Runtime {
        // SAFETY: the runtime outlives every thread context (each thread holds an Arc).
        unsafe { &*(self.runtime as *const Runtime) }
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
        if rt.heap.wants_collection(0) && rt.gc.collector.enabled.load(Ordering::Relaxed) {
            self.interrupt.request_collect();
        }
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
                crate::runtime::roots::collect(self.rt(), crate::heap::gc::Reason::Threshold);
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
    /// One exception object per fault kind, allocated at start-up and
    /// pinned (with its message, the class name): what a fault raises when
    /// the system cannot provide memory even for its exception object.
    fallback_exceptions: Vec<*mut u8>,
    /// Offset of `Exception::message`.
    pub message_offset: usize,
    /// `Thread`'s descriptor.
    pub thread_class: *const ClassDesc,
    /// Offset of `Thread::handle`.
    pub thread_handle_offset: usize,
    /// Offsets of `StringBuilder::buf` (`u8[]`) and `StringBuilder::len`.
    pub builder_fields: (usize, usize),
    /// Interface id of `Runnable` and index of `run`.
    pub runnable: (u32, usize),
    /// Every thread `Thread::start` started (index + 1 is its id).
    threads: Mutex<Vec<Arc<threads::ThreadRecord>>>,
    /// Started threads that have not ended (bounded by `opts.max_threads`).
    live_threads: std::sync::atomic::AtomicUsize,
    self_ref: OnceLock<Weak<Runtime>>,
    /// The resolved code of every method with a body (see [`resolve`]);
    /// each `MethodHandle::code` points into it.
    pub code: Vec<Box<crate::ir::Code>>,
    /// The entry points of the tiers (supplied by the engine).
    pub tiers: Tiers,
    /// The compiling tier, once installed (the JIT in JIT mode).
    pub compiled: OnceLock<Box<dyn CodeTier>>,
    /// The collector's state (roots, attached threads, statistics).
    pub gc: crate::runtime::roots::GcState,
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

/// A tier that produces machine code, as the runtime sees it (the JIT
/// implements it; the runtime does not name it).
pub trait CodeTier: Send + Sync {
    /// The method whose compiled code contains `pc`.
    fn lookup(&self, pc: usize) -> Option<*const MethodHandle>;
    /// How many methods it has compiled.
    fn compile_count(&self) -> usize;
    /// The tier itself (for its own module to downcast).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What the runtime needs from the execution tiers, which it does not name
/// (they are built on it): the engine (`crate::engine`) supplies them.
#[derive(Clone, Copy)]
pub struct Tiers {
    /// The slot every method with a body starts with: the interpreter's
    /// entry. The JIT also falls back to it when it cannot compile a method.
    pub interp_entry: EntryFn,
}

impl Runtime {
    /// Build the tables and resolved code for a verified program, binding
    /// the host's natives, keyed by `(class, method)` (built-in natives take
    /// precedence; the host checks for clashes before). Every method with a
    /// body starts in `tiers.interp_entry`.
    pub fn new(
        program: Program,
        files: Vec<String>,
        verified: &crate::verify::Verified,
        opts: Options,
        host: HashMap<(String, String), HostNativeFn>,
        tiers: Tiers,
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
            tiers.interp_entry,
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
                    tables::TableError::MissingClass(c) => LoadError::MissingClass { class: c },
                })
                .collect::<Vec<_>>()
        })?;
        let need = |n: &str| {
            tables.class_named(&program, n).ok_or_else(|| {
                vec![LoadError::StdMissing {
                    name: format!("class {n}"),
                }]
            })
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
            .ok_or_else(|| {
                vec![LoadError::StdMissing {
                    name: "Exception::message".into(),
                }]
            })?;
        let thread_class = need("Thread")?;
        let thread_id = program.class("Thread").expect("checked above");
        let thread_handle_offset = program
            .find_field(thread_id, "handle")
            .map(|f| tables.field(f).field_offset as usize)
            .ok_or_else(|| {
                vec![LoadError::StdMissing {
                    name: "Thread::handle".into(),
                }]
            })?;
        let sb_id = program.class("StringBuilder").ok_or_else(|| {
            vec![LoadError::StdMissing {
                name: "class StringBuilder".into(),
            }]
        })?;
        let sb_field = |n: &str| {
            program
                .find_field(sb_id, n)
                .map(|f| tables.field(f).field_offset as usize)
                .ok_or_else(|| {
                    vec![LoadError::StdMissing {
                        name: format!("StringBuilder::{n}"),
                    }]
                })
        };
        let builder_fields = (sb_field("buf")?, sb_field("len")?);
        let runnable_id = program.class("Runnable").ok_or_else(|| {
            vec![LoadError::StdMissing {
                name: "Runnable".into(),
            }]
        })?;
        // SAFETY: descriptors are live while `tables` lives.
        let rid = unsafe { (*tables.class(runnable_id)).iface_id };
        let run_idx = program
            .def(runnable_id)
            .methods
            .iter()
            .position(|m| m.name == "run")
            .ok_or_else(|| {
                vec![LoadError::StdMissing {
                    name: "Runnable::run".into(),
                }]
            })?;
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
        let gc = crate::runtime::roots::GcState::new(opts.gc_stress, opts.gc_log, static_refs);
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
            fallback_exceptions: Vec::new(),
            message_offset,
            thread_class,
            thread_handle_offset,
            builder_fields,
            runnable: (rid, run_idx),
            threads: Mutex::new(Vec::new()),
            live_threads: std::sync::atomic::AtomicUsize::new(0),
            self_ref: OnceLock::new(),
            code: Vec::new(),
            tiers,
            compiled: OnceLock::new(),
            gc,
            host_natives,
            interrupts: crate::safepoint::interrupt::InterruptState::new(),
        };
        for (i, k) in FaultKind::ALL.iter().enumerate() {
            let fallback = rt
                .new_exception(rt.fault_classes[i], k.class_name())
                .ok_or_else(|| {
                    vec![LoadError::StdMissing {
                        name: format!("memory for the {} fallback object", k.class_name()),
                    }]
                })?;
            // SAFETY: both objects were just allocated and are live.
            unsafe {
                crate::heap::pin(fallback);
                crate::heap::pin(*(fallback.add(rt.message_offset) as *const *mut u8));
            }
            rt.fallback_exceptions.push(fallback);
        }
        let code = resolve::prepare(&rt, verified).map_err(|e| vec![LoadError::Resolve(e)])?;
        rt.code = code;
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
    pub fn interrupt_handle(self: &Arc<Self>) -> crate::runtime::interrupt::InterruptHandle {
        crate::runtime::interrupt::InterruptHandle::new(self)
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
        use crate::heap::gc::Reason;
        use roots::collect;
        if self.gc.collector.stress || self.heap.wants_collection(size) {
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
        let size = crate::vm::object::STRING_DATA_OFFSET as u64 + bytes.len() as u64;
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
        let c = match crate::vm::object::cached_class_of_object(size) {
            Some(c) if !self.gc.collector.stress => c,
            // SAFETY: caller contract.
            _ => return unsafe { self.alloc_object(class) },
        };
        if t.alloc_cache[c].is_null() {
            let cell = crate::vm::object::SIZE_CLASSES[c];
            let batch = crate::heap::cache_batch(c);
            match self.alloc_with((cell * batch) as u64, || {
                self.heap.take_cells(c, batch).map(|(h, _)| h)
            }) {
                // (A collection inside `alloc_with` emptied the caches
                // before these cells were taken.)
                Ok(head) => t.alloc_cache[c] = head,
                // Caches may not fill the last part of the heap
                // (`Heap::take_cells`), so other threads refilling theirs
                // between that collection and this retry cannot take the
                // room this one object needs: allocate it directly.
                // SAFETY: caller contract.
                Err(f) if f.kind == FaultKind::OutOfMemory => {
                    return unsafe { self.alloc_object(class) }
                }
                Err(f) => return Err(f),
            }
        }
        let p = t.alloc_cache[c];
        // SAFETY: `p` heads this thread's list of free cells of class `c`
        // (taken by `take_cells`, not swept since: a collection empties the
        // list), each at least `size` bytes, 8-aligned; unlinking it makes
        // it ours, and we zero it before publishing the class pointer.
        unsafe {
            let h = p as *mut crate::vm::object::ObjHeader;
            t.alloc_cache[c] = (*h).tags as *mut u8;
            std::ptr::write_bytes(p, 0, size.max(crate::vm::object::HEADER_SIZE));
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
            .unwrap_or(FaultKind::ALL.len() - 1);
        let msg = if fault.message.is_empty() {
            fault.kind.class_name()
        } else {
            &fault.message
        };
        // Only the system refusing memory makes this fail; then the
        // pre-allocated object of the kind (message: the class name) goes.
        self.new_exception(self.fault_classes[idx], msg)
            .unwrap_or(self.fallback_exceptions[idx])
    }

    /// An exception object of `class` with `message`, outside the heap
    /// limit; `None` if the system cannot provide the memory.
    fn new_exception(&self, class: *const ClassDesc, message: &str) -> Option<*mut u8> {
        // SAFETY: `class` (a fault class) and String are live descriptors;
        // the message offset is inside every Exception instance.
        unsafe {
            let obj = self.heap.new_object(class, true).ok()?;
            // The object is unreachable until stored; no collection runs
            // between the two allocations (neither collects).
            let s = self
                .heap
                .new_string(self.string_class, message.as_bytes(), true)
                .ok()?;
            *(obj.add(self.message_offset) as *mut *mut u8) = s;
            Some(obj)
        }
    }

    /// The method whose code contains `pc`: JIT machine code first, then
    /// interpreted bytecode ranges (the method lookup table).
    pub fn lookup(&self, pc: usize) -> Option<&MethodHandle> {
        if let Some(m) = self.compiled.get().and_then(|j| j.lookup(pc)) {
            // SAFETY: handles in the JIT's table are live tables of this runtime.
            return Some(unsafe { &*m });
        }
        let def = crate::vm::tables::lookup_method(&self.tables.lookup, pc)?;
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
            let cd = crate::vm::object::class_of(exc);
            let m = *(exc.add(self.message_offset) as *const *const u8);
            let msg = if m.is_null() {
                String::new()
            } else {
                String::from_utf8_lossy(crate::vm::object::string_bytes(m)).into_owned()
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
            let cd = &*crate::vm::object::class_of(obj);
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
    pub fn run_main(&self, main: MemberId, args: &[String]) -> i32 {
        let mut ctx = ThreadCtx::new(self, self.opts.stack_size);
        // SAFETY: `ctx` lives on this frame until after `_att` is dropped.
        let _att = unsafe { crate::runtime::roots::attach(self, &mut ctx) };
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
                        *(arr.add(crate::vm::object::ARRAY_DATA_OFFSET + 8 * i) as *mut *mut u8) =
                            s;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        crate::engine::run_file(&p, &[], &opts)
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
