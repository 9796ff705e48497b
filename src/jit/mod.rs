//! The Cranelift JIT tier (see `docs/jit.md`).
//!
//! Pipeline: a method's slot (`MethodHandle::entry`) initially holds
//! [`jit_compile_stub`]. Its first call compiles the method — the verifier's
//! [`MethodInfo`] plus the interpreter's pre-decoded body, lowered by
//! `translate.rs` (instruction meaning) on top of `env.rs` (Kiln's layouts
//! and runtime) to CLIF, compiled by cranelift-jit for the host — registers
//! the code range in the method lookup table, writes the code address into
//! `MethodHandle::fast` and then the slot-ABI trampoline of its signature
//! into the slot (both Release) and calls the slot. Later calls from
//! interpreted code, natives and the host go through the trampoline;
//! compiled callers call `fast` with the arguments in registers.
//!
//! Invariants:
//! - every slot keeps the slot ABI ([`EntryFn`]), so interpreted and
//!   compiled frames call each other freely;
//! - `fast` is written before the slot's trampoline, so whoever reads the
//!   trampoline from the slot (Acquire) finds the code in `fast`; `fast` is
//!   0 or final;
//! - a method is compiled at most once: compilation runs under one lock and
//!   re-checks the slot (double-checked), so racing first calls compile once;
//! - a slot only ever changes from the stub to final code (a trampoline, or
//!   the interpreter adapter if compilation failed or the method is larger
//!   than [`MAX_JIT_CODE_SIZE`] or keeps more than
//!   [`MAX_JIT_LIVE_ACROSS_CALLS`] values across calls), never back;
//! - code pages are never writable and executable at once (cranelift-jit
//!   writes them RW and `finalize_definitions` turns them RX);
//! - no Rust panic unwinds through compiled frames: helpers are `extern "C"`
//!   and catch panics; the stub catches panics of the compiler.

pub mod env;
pub mod helpers;
pub mod translate;

use crate::runtime::Runtime;
use crate::verify::{MethodInfo, Verified};
use crate::vm::tables::{EntryFn, MethodHandle};
use crate::vm::thread::ThreadCtx;
use cranelift_codegen::ir::Type;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Module};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Methods with more bytecode than this run in the interpreter instead of
/// being compiled (like HotSpot's huge-method limit): the compiler's time and
/// memory grow much faster with method size than the interpreter's, so a
/// hostile library with one enormous method (a switch with millions of
/// targets) could otherwise make the first call take minutes and gigabytes.
/// No `kasm` program a person writes comes near it.
pub const MAX_JIT_CODE_SIZE: u32 = 256 * 1024;

/// Methods whose values live across calls add up to more than this many
/// (value, call) pairs stay in the interpreter too: Cranelift's register
/// allocator spends time and memory per value per call it lives across
/// (about 0.5 KB each), so 1,000 references held across 3,000 calls took
/// seconds and most of a gigabyte to compile, against hundredths of a
/// second interpreted. Bounds a compile at roughly 100 MB; see
/// [`live_across_calls`].
pub const MAX_JIT_LIVE_ACROSS_CALLS: u64 = 200_000;

/// The (value, call) pairs of `code`: for every call, allocation and
/// constructor call, the evaluation stack's depth before it (what the
/// register allocator must keep alive across it), plus the method's
/// variables once per such site.
pub fn live_across_calls(code: &crate::ir::Code) -> u64 {
    let vars = (code.nargs + code.nlocals) as u64;
    code.insns
        .iter()
        .zip(&code.depths)
        .filter(|(ins, _)| {
            matches!(
                ins,
                crate::ir::I::Call { .. }
                    | crate::ir::I::CallVirt { .. }
                    | crate::ir::I::CallIface { .. }
                    | crate::ir::I::Newobj { .. }
                    | crate::ir::I::Newarr(_)
            )
        })
        .map(|(_, &d)| d as u64 + vars)
        .sum()
}

/// Cranelift flags shared by the host JIT and cross-compilation.
pub fn flags() -> settings::Flags {
    let mut b = settings::builder();
    let set = |b: &mut settings::Builder, k: &str, v: &str| {
        b.set(k, v)
            .unwrap_or_else(|e| panic!("cranelift flag {k}={v}: {e}"))
    };
    set(&mut b, "opt_level", "speed");
    set(
        &mut b,
        "enable_verifier",
        if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        },
    );
    set(&mut b, "preserve_frame_pointers", "true");
    // cranelift-jit requires non-PIC code; libcalls (none expected) by absolute address.
    set(&mut b, "is_pic", "false");
    set(&mut b, "use_colocated_libcalls", "false");
    settings::Flags::new(b)
}

/// Why the JIT could not be set up or could not compile a method. A method
/// that fails to compile runs in the interpreter (the message goes to
/// stderr); only [`JitError::NoBackend`] is expected in normal operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JitError {
    /// Cranelift has no backend for this host (or the named target).
    NoBackend(String),
    /// The lowering met a resolved instruction or stack state it does not
    /// handle (an internal error: verified code never does this).
    Lowering(String),
    /// Cranelift rejected the function (verifier or code generation).
    Codegen(String),
    /// The JIT module could not declare, define or finalise the code.
    Module(String),
    /// `install` was called twice for one runtime.
    AlreadyInstalled,
}

impl fmt::Display for JitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JitError::NoBackend(e) => write!(f, "no Cranelift backend: {e}"),
            JitError::Lowering(e) => write!(f, "lowering: {e}"),
            JitError::Codegen(e) => write!(f, "code generation: {e}"),
            JitError::Module(e) => write!(f, "code module: {e}"),
            JitError::AlreadyInstalled => f.write_str("the JIT is already installed"),
        }
    }
}

impl std::error::Error for JitError {}

impl From<&str> for JitError {
    fn from(e: &str) -> JitError {
        JitError::Lowering(e.to_string())
    }
}

impl From<String> for JitError {
    fn from(e: String) -> JitError {
        JitError::Lowering(e)
    }
}

/// The host ISA, or why there is no JIT backend for this machine.
pub fn host_isa() -> Result<OwnedTargetIsa, JitError> {
    let builder = cranelift_native::builder().map_err(|e| JitError::NoBackend(e.to_string()))?;
    builder
        .finish(flags())
        .map_err(|e| JitError::NoBackend(e.to_string()))
}

/// An ISA by target name (e.g. `"aarch64"`), for cross-compilation.
pub fn isa_by_name(name: &str) -> Result<OwnedTargetIsa, JitError> {
    let builder = cranelift_codegen::isa::lookup_by_name(name)
        .map_err(|e| JitError::NoBackend(e.to_string()))?;
    builder
        .finish(flags())
        .map_err(|e| JitError::NoBackend(e.to_string()))
}

static DUMP_CLIF: OnceLock<String> = OnceLock::new();

/// `kiln run --dump-clif Class::method`: print that method's CLIF and
/// machine code on stderr when it is compiled (it is compiled eagerly).
pub fn set_dump_clif(method: &str) {
    let _ = DUMP_CLIF.set(method.to_string());
}

fn dump_requested(name: &str) -> bool {
    DUMP_CLIF.get().is_some_and(|d| d == name)
}

/// One entry of the JIT's part of the method lookup table.
struct LookupSlot {
    start: AtomicUsize,
    size: AtomicUsize,
    method: AtomicPtr<MethodHandle>,
}

/// Append-only table of compiled code ranges. Capacity is the number of
/// methods (each is compiled at most once); entries are written under the
/// compile lock and published by `len` (Release), so readers need no lock
/// (usable from a signal handler: no allocation, no locking).
struct JitLookup {
    slots: Box<[LookupSlot]>,
    len: AtomicUsize,
}

impl JitLookup {
    fn new(cap: usize) -> JitLookup {
        JitLookup {
            slots: (0..cap)
                .map(|_| LookupSlot {
                    start: AtomicUsize::new(0),
                    size: AtomicUsize::new(0),
                    method: AtomicPtr::new(std::ptr::null_mut()),
                })
                .collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// Append (caller holds the compile lock).
    fn push(&self, start: usize, size: usize, mh: *const MethodHandle) {
        let n = self.len.load(Ordering::Relaxed);
        if let Some(s) = self.slots.get(n) {
            s.start.store(start, Ordering::Relaxed);
            s.size.store(size, Ordering::Relaxed);
            s.method.store(mh as *mut MethodHandle, Ordering::Relaxed);
            self.len.store(n + 1, Ordering::Release);
        }
    }

    fn lookup(&self, pc: usize) -> Option<*const MethodHandle> {
        let n = self.len.load(Ordering::Acquire);
        self.slots[..n.min(self.slots.len())].iter().find_map(|s| {
            let start = s.start.load(Ordering::Relaxed);
            let size = s.size.load(Ordering::Relaxed);
            (pc >= start && pc - start < size).then(|| s.method.load(Ordering::Relaxed) as *const _)
        })
    }
}

/// A register-argument signature: argument types, result type.
type FastSig = (Vec<Type>, Option<Type>);

struct Compiler {
    module: JITModule,
    ctx: Context,
    fctx: FunctionBuilderContext,
    /// The slot-to-register trampoline of each signature compiled so far
    /// ([`env::slot_trampoline`]).
    trampolines: HashMap<FastSig, usize>,
}

/// The JIT of one runtime.
pub struct Jit {
    compiler: Mutex<Compiler>,
    verified: Verified,
    lookup: JitLookup,
    compiles: AtomicUsize,
    perf_map: Option<Mutex<std::fs::File>>,
    /// The polling page compiled code loads from (None: no polls).
    poll_addr: Option<usize>,
}

// SAFETY: the JITModule (raw code pointers) is only touched under the mutex;
// the code it owns is immutable once finalized and lives as long as the Jit.
unsafe impl Send for Jit {}
// SAFETY: as above; the lookup table is atomics only.
unsafe impl Sync for Jit {}

impl Jit {
    /// A JIT for the host, or why there is none.
    pub fn new(verified: Verified, methods: usize) -> Result<Jit, JitError> {
        let isa = host_isa()?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let ctx = module.make_context();
        let perf_map = if std::env::var("KILN_PERF_MAP").is_ok_and(|v| v == "1") {
            let path = format!("/tmp/perf-{}.map", std::process::id());
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map(Mutex::new)
                .map_err(|e| eprintln!("kiln: KILN_PERF_MAP: cannot open {path}: {e}"))
                .ok()
        } else {
            None
        };
        Ok(Jit {
            compiler: Mutex::new(Compiler {
                module,
                ctx,
                fctx: FunctionBuilderContext::new(),
                trampolines: HashMap::new(),
            }),
            verified,
            lookup: JitLookup::new(methods),
            compiles: AtomicUsize::new(0),
            perf_map,
            // `KILN_NO_POLLS=1` (measurements only) compiles no poll loads:
            // threads in loops without calls then cannot be stopped.
            poll_addr: if std::env::var("KILN_NO_POLLS").is_ok_and(|v| v == "1") {
                None
            } else {
                crate::safepoint::poll_page_addr()
            },
        })
    }

    /// How many methods have been compiled.
    pub fn compile_count(&self) -> usize {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The compiled method whose machine code contains `pc`.
    pub fn lookup(&self, pc: usize) -> Option<*const MethodHandle> {
        self.lookup.lookup(pc)
    }

    /// The entry to use for `mh`: its compiled code (compiling it now if its
    /// slot still holds the stub), or the interpreter adapter if it cannot
    /// be compiled.
    pub fn entry_for(&self, rt: &Runtime, mh: &MethodHandle) -> usize {
        let mut c = self.compiler.lock().unwrap_or_else(|e| e.into_inner());
        let cur = mh.entry.load(Ordering::Acquire);
        if cur != jit_compile_stub as *const () as usize {
            return cur; // another thread compiled it while we waited
        }
        if mh.code_size > MAX_JIT_CODE_SIZE
            || mh
                .code()
                .is_some_and(|c| live_across_calls(c) > MAX_JIT_LIVE_ACROSS_CALLS)
        {
            let entry = rt.tiers.interp_entry as usize;
            mh.entry.store(entry, Ordering::Release);
            return entry;
        }
        let name = rt.method_name(mh);
        let r = catch_unwind(AssertUnwindSafe(|| self.compile(&mut c, rt, mh, &name)));
        let entry = match r {
            Ok(Ok((ptr, size, slot_entry))) => {
                self.compiles.fetch_add(1, Ordering::Relaxed);
                self.lookup.push(ptr, size, mh);
                if let Some(f) = &self.perf_map {
                    let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(f, "{ptr:x} {size:x} {name}");
                }
                // The register entry first: whoever sees the trampoline in
                // the slot (Acquire) then finds the code in `fast`.
                mh.fast.store(ptr, Ordering::Release);
                slot_entry
            }
            Ok(Err(e)) => {
                eprintln!("kiln: internal JIT error: cannot compile {name}: {e}; it runs in the interpreter");
                rt.tiers.interp_entry as usize
            }
            Err(_) => {
                eprintln!("kiln: internal JIT error: the compiler panicked on {name}; it runs in the interpreter");
                c.ctx.clear();
                c.fctx = FunctionBuilderContext::new();
                rt.tiers.interp_entry as usize
            }
        };
        mh.entry.store(entry, Ordering::Release);
        entry
    }

    fn compile(
        &self,
        c: &mut Compiler,
        rt: &Runtime,
        mh: &MethodHandle,
        name: &str,
    ) -> Result<(usize, usize, usize), JitError> {
        let info: &MethodInfo = self
            .verified
            .methods
            .get(&mh.member)
            .ok_or("no verifier output for this method")?;
        let sig = translate::fast_types(rt, mh);
        let Compiler {
            module, ctx, fctx, ..
        } = c;
        let (func, table) =
            translate::translate_with_safepoints(rt, mh, info, module.isa(), fctx, self.poll_addr)?;
        let dump = dump_requested(name);
        if dump {
            eprintln!(";; CLIF of {name}\n{}", func.display());
        }
        let id = module
            .declare_anonymous_function(&func.signature)
            .map_err(|e| JitError::Module(e.to_string()))?;
        ctx.clear();
        ctx.func = func;
        ctx.set_disasm(dump);
        let r = module.define_function(id, ctx);
        if let Err(e) = r {
            let err = match &e {
                cranelift_module::ModuleError::Compilation(ce) => {
                    JitError::Codegen(format!("{ce:?}"))
                }
                e => JitError::Module(e.to_string()),
            };
            ctx.clear();
            return Err(err);
        }
        let compiled = ctx
            .compiled_code()
            .ok_or_else(|| JitError::Module("no compiled code".into()))?;
        let size = compiled.code_buffer().len();
        if dump {
            eprintln!(
                ";; machine code of {name} ({}, {size} bytes)\n{}",
                module.isa().triple(),
                compiled.vcode.as_deref().unwrap_or("")
            );
        }
        module.clear_context(ctx);
        module
            .finalize_definitions()
            .map_err(|e| JitError::Module(e.to_string()))?;
        let ptr = module.get_finalized_function(id) as usize;
        // The safepoint table is published before the code can run (the
        // caller writes the slot afterwards).
        // SAFETY: `gc` points to the method's GcData in the live tables.
        unsafe { (*mh.gc).install_safepoints(table) };
        let slot_entry = self.trampoline(c, sig)?;
        Ok((ptr, size, slot_entry))
    }

    /// The slot entry of compiled methods with register signature `sig`
    /// (compiled on first use, then shared).
    fn trampoline(&self, c: &mut Compiler, sig: FastSig) -> Result<usize, JitError> {
        if let Some(&t) = c.trampolines.get(&sig) {
            return Ok(t);
        }
        let Compiler {
            module, ctx, fctx, ..
        } = c;
        let func = env::slot_trampoline(module.isa(), &sig.0, sig.1, fctx);
        let id = module
            .declare_anonymous_function(&func.signature)
            .map_err(|e| JitError::Module(e.to_string()))?;
        ctx.clear();
        ctx.func = func;
        let r = module.define_function(id, ctx);
        if let Err(e) = r {
            ctx.clear();
            return Err(JitError::Module(format!("trampoline: {e}")));
        }
        let size = ctx.compiled_code().map_or(0, |cc| cc.code_buffer().len());
        module.clear_context(ctx);
        module
            .finalize_definitions()
            .map_err(|e| JitError::Module(e.to_string()))?;
        let ptr = module.get_finalized_function(id) as usize;
        if let Some(f) = &self.perf_map {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "{ptr:x} {size:x} kiln::slot_entry{:?}", sig);
        }
        c.trampolines.insert(sig, ptr);
        Ok(ptr)
    }
}

/// The initial slot of every bytecode method in JIT mode: compile, write
/// back, call.
///
/// # Safety
/// Called only through a method slot, with the contract of [`EntryFn`].
pub unsafe extern "C" fn jit_compile_stub(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    args: *const u64,
) -> u64 {
    let entry = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per this function's contract.
        let (t, m) = unsafe { (&*thread, &*mh) };
        let rt = t.rt();
        match jit_of(rt) {
            Some(j) => j.entry_for(rt, m),
            None => rt.tiers.interp_entry as usize,
        }
    }))
    // SAFETY: per this function's contract.
    .unwrap_or_else(|_| unsafe { (*thread).rt() }.tiers.interp_entry as usize);
    // SAFETY: `entry` is compiled code with the slot ABI or the interpreter adapter.
    unsafe {
        let f = std::mem::transmute::<usize, EntryFn>(entry);
        f(thread, mh, args)
    }
}

/// The JIT installed in `rt`, if any.
pub fn jit_of(rt: &Runtime) -> Option<&Jit> {
    rt.compiled
        .get()
        .and_then(|t| t.as_any().downcast_ref::<Jit>())
}

impl crate::runtime::CodeTier for Jit {
    fn lookup(&self, pc: usize) -> Option<*const MethodHandle> {
        Jit::lookup(self, pc)
    }
    fn compile_count(&self) -> usize {
        Jit::compile_count(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Set up JIT mode for `rt`: create the JIT (keeping the verifier's output
/// for lazy compilation) and put the compile stub in the slot of every
/// method with a bytecode body. Returns `Err` (and changes nothing) if there
/// is no Cranelift backend for this host.
pub fn install(rt: &Runtime, verified: Verified) -> Result<(), JitError> {
    let count = rt.tables.all_methods().count();
    let jit = Jit::new(verified, count)?;
    if rt.compiled.set(Box::new(jit)).is_err() {
        return Err(JitError::AlreadyInstalled);
    }
    let stub = jit_compile_stub as *const () as usize;
    let mut dump_target = None;
    for mh in rt.tables.all_methods() {
        if mh.code().is_none() {
            continue; // natives, abstract and interface methods keep their slot
        }
        mh.entry.store(stub, Ordering::Release);
        if DUMP_CLIF.get().is_some_and(|d| *d == rt.method_name(mh)) {
            dump_target = Some(mh);
        }
    }
    if let Some(d) = DUMP_CLIF.get() {
        match dump_target {
            Some(mh) => {
                if let Some(j) = jit_of(rt) {
                    j.entry_for(rt, mh);
                }
            }
            None => eprintln!("kiln: --dump-clif: no method {d} with a bytecode body"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
