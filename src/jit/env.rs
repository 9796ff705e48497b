//! How Kiln stores things, for the translator (`translate.rs`).
//!
//! This is the JIT's counterpart of wasmtime's `func_environ.rs`: everything
//! that depends on Kiln's runtime layout lives here — object, string and
//! array layouts, field and static addresses, class descriptors (vtable,
//! interface slot table, interface bitmap, depth + display), the method slot
//! and the calling convention, the `ThreadCtx` fields (pending exception,
//! stack limit, value stack), the runtime helpers, and the garbage
//! collector's needs: the frame record on the value stack
//! ([`FuncEnv::push_frame`]) and safepoints ([`FuncEnv::safepoint`]: store
//! the position and every live reference into the frame record, then poll
//! or call). `translate.rs` only says what each instruction means in terms
//! of these, and which values are live at each safepoint.
//!
//! Every offset comes from `runtime::tables::offsets` or the `heap` consts
//! (`offset_of!`), never from a literal. Every address embedded in code (a
//! handle, a descriptor, a static, an interned string, a helper) is stable
//! for the runtime's lifetime, which is also the code's lifetime.

use super::helpers;
use super::JitError;
use crate::ir::Kind;
use crate::vm::object::{
    ARRAY_DATA_OFFSET, ARRAY_LEN_OFFSET, HEADER_SIZE, OBJ_CLASS_OFFSET, OBJ_TAGS_OFFSET,
};
use crate::vm::tables::{
    kind, offsets, ClassDesc, MethodHandle, SafepointEntry, SafepointKind, SafepointTable,
};
use crate::vm::thread::frame;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, AliasRegionData, AtomicRmwOp, Block, Function, InstBuilder, MemFlagsData,
    SigRef, Signature, StackSlot, StackSlotData, StackSlotKind, Type, UserFuncName, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use std::collections::HashMap;

/// An inline allocation path stores nothing; its slow path's safepoint
/// stores the live references. With more than this many not yet in the
/// frame, they are stored before the paths split instead
/// ([`FuncEnv::store_if_many_unknown`]): a long run of allocations with a
/// growing live set then stores each reference once, and a hot loop with a
/// few live references keeps its store-free inline path.
pub const PRESTORE_THRESHOLD: usize = 16;

/// Largest instance size (bytes) `newobj` allocates inline.
pub const INLINE_ALLOC_MAX: usize = 128;

/// Pointer-sized integer type (both supported targets are 64-bit).
pub const PTR: Type = types::I64;

/// Runtime helpers callable from compiled code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Helper {
    /// [`helpers::jit_fault`].
    Fault,
    /// [`helpers::jit_poll_slow`].
    PollSlow,
    /// [`helpers::jit_throw`].
    Throw,
    /// [`helpers::jit_new_object`].
    NewObject,
    /// [`helpers::jit_new_array`].
    NewArray,
    /// [`helpers::jit_fmod32`].
    Fmod32,
    /// [`helpers::jit_fmod64`].
    Fmod64,
    /// [`helpers::jit_eh_free`].
    EhFree,
    /// [`helpers::jit_unwind`].
    Unwind,
    /// [`helpers::jit_eh_throw`].
    EhThrow,
    /// [`helpers::jit_eh_leave`].
    EhLeave,
    /// [`helpers::jit_eh_endfinally`].
    EhEndfinally,
    /// [`helpers::jit_eh_rethrow`].
    EhRethrow,
}

impl Helper {
    fn addr(self) -> usize {
        match self {
            Helper::Fault => helpers::jit_fault as *const () as usize,
            Helper::PollSlow => helpers::jit_poll_slow as *const () as usize,
            Helper::Throw => helpers::jit_throw as *const () as usize,
            Helper::NewObject => helpers::jit_new_object as *const () as usize,
            Helper::NewArray => helpers::jit_new_array as *const () as usize,
            Helper::Fmod32 => helpers::jit_fmod32 as *const () as usize,
            Helper::Fmod64 => helpers::jit_fmod64 as *const () as usize,
            Helper::EhFree => helpers::jit_eh_free as *const () as usize,
            Helper::Unwind => helpers::jit_unwind as *const () as usize,
            Helper::EhThrow => helpers::jit_eh_throw as *const () as usize,
            Helper::EhLeave => helpers::jit_eh_leave as *const () as usize,
            Helper::EhEndfinally => helpers::jit_eh_endfinally as *const () as usize,
            Helper::EhRethrow => helpers::jit_eh_rethrow as *const () as usize,
        }
    }

    /// (params, returns) of the helper's C signature.
    fn types(self) -> (&'static [Type], &'static [Type]) {
        use types::{F32, F64, I32};
        match self {
            Helper::Fault => (&[PTR, I32, PTR, PTR], &[]),
            Helper::PollSlow => (&[PTR], &[I32]),
            Helper::Throw => (&[PTR, PTR], &[]),
            Helper::NewObject => (&[PTR, PTR], &[PTR]),
            Helper::NewArray => (&[PTR, PTR, PTR], &[PTR]),
            Helper::Fmod32 => (&[F32, F32], &[F32]),
            Helper::Fmod64 => (&[F64, F64], &[F64]),
            Helper::EhFree => (&[PTR], &[]),
            Helper::Unwind => (&[PTR, PTR, PTR], &[]),
            Helper::EhThrow | Helper::EhEndfinally => (&[PTR, PTR, PTR, I32], &[I32]),
            Helper::EhLeave => (&[PTR, PTR, PTR, I32, I32], &[I32]),
            Helper::EhRethrow => (&[PTR, PTR, PTR, I32], &[]),
        }
    }
}

/// Memory flags for accesses the translator has proven valid (non-null,
/// in bounds, aligned): they never trap. No alias region: to Cranelift's
/// alias analysis such a store may write any memory (a fence for every
/// region), which is what the allocation fast path's stores need.
pub fn trusted() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Disjoint kinds of memory compiled code touches, as Cranelift alias
/// regions (type-based alias analysis): an access in one region never
/// touches a location another region's accesses touch, so a store in one
/// does not make the alias analysis forget what it knows of the others
/// (a field store does not force reloading another field, an element store
/// does not force reloading the array's length). Calls, polls (their
/// `sequence_point`), atomics and region-less stores still forget
/// everything. Sound because a location holds one kind of thing for as
/// long as compiled code can see it: objects never move, and a cell is
/// reused for another object only after a collection, which happens only
/// inside a call or at a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// The frame record on the value stack (position, reference slots, header).
    Frame,
    /// `ThreadCtx` fields.
    Thread,
    /// Array lengths (never stored by compiled code).
    ArrayLen,
    /// Array elements.
    ArrayElem,
    /// Class descriptors, vtables, interface tables and object class
    /// pointers (never stored by compiled code except when allocating).
    Meta,
    /// Instance fields at this byte offset (of any class).
    Field(u32),
    /// The static field at this address.
    Static(usize),
}

/// Memory flags of the fixed regions (see [`Region`]).
#[derive(Clone, Copy, Debug)]
pub struct RegionFlags {
    /// [`Region::Frame`].
    pub frame: MemFlagsData,
    /// [`Region::Thread`].
    pub thread: MemFlagsData,
    /// [`Region::ArrayLen`].
    pub len: MemFlagsData,
    /// [`Region::ArrayElem`].
    pub elem: MemFlagsData,
    /// [`Region::Meta`].
    pub meta: MemFlagsData,
}

/// The per-function environment.
pub struct FuncEnv {
    /// Calling convention of entries and helpers (the ISA default: `extern "C"`).
    pub cc: CallConv,
    /// `thread: *mut ThreadCtx` (entry parameter 0).
    pub thread: Value,
    /// `method: *const MethodHandle` (entry parameter 1).
    pub method: Value,
    /// The method's arguments (`this` first), as the entry block's
    /// parameters after `thread`: the register-argument entry
    /// ([`FuncEnv::fast_signature`]).
    pub args: Vec<Value>,
    /// Outgoing argument area: 8 bytes per argument slot of the largest call.
    /// Created on the first call through a slot ([`FuncEnv::store_arg`]);
    /// calls through register entries need none.
    pub arg_area: Option<StackSlot>,
    /// Argument slots of the largest call (the size of `arg_area`).
    pub arg_area_slots: usize,
    /// The frame record on the value stack (address of its header), once pushed.
    pub fp: Option<Value>,
    frame_top: Option<Value>,
    /// Safepoint sites emitted so far: (position, kind, reference slots).
    pub safepoints: Vec<(u32, SafepointKind, std::rc::Rc<[u32]>)>,
    /// The polling page (None: no polls, e.g. `KILN_NO_POLLS=1` or no safepoints).
    pub poll_addr: Option<usize>,
    /// Frame slots whose value never changes after entry (reference
    /// arguments the method never assigns): stored once at entry
    /// ([`FuncEnv::store_invariant`]) and then named at every safepoint
    /// without being stored again.
    invariant_slots: Vec<u32>,
    /// Safepoints whose references are all invariant slots share the
    /// position `frame::POS_SHARED` ([`FuncEnv::share_positions`]).
    shared_pos: bool,
    /// A safepoint stored its own position; `frame::POS_SHARED` must be
    /// stored back once it is over ([`FuncEnv::after_site`]).
    restore_pos: bool,
    /// What the frame slots are known to hold at the current point of the
    /// code being emitted: slot → the value a safepoint stored there. Only
    /// safepoints write (non-invariant) frame slots and objects never move,
    /// so a later safepoint need not store a slot again that already holds
    /// its value: a reference that stays on the stack across many calls is
    /// stored once, not at every call. Valid along straight-line code: the
    /// translator forgets it where control flow merges from places it did
    /// not track ([`FuncEnv::forget_stores`], [`FuncEnv::meet_stores`]).
    stored: HashMap<u32, Value>,
    /// The slot list of the last site recorded, shared with the next site
    /// if it names the same slots (a long run of sites with one live set
    /// keeps one list).
    last_slots: Option<std::rc::Rc<[u32]>>,
    /// The polling page carries the interrupt hint
    /// (`safepoint::poll_hint_available`): the byte a poll loads is
    /// non-zero while an interrupt may be pending.
    pub poll_hint: bool,
    /// `newobj` may take a cell from the thread's allocation cache inline
    /// ([`FuncEnv::inline_alloc_class`]); off under GC stress, where every
    /// allocation must reach the runtime (and collect).
    pub inline_alloc: bool,
    entry_sig: Option<SigRef>,
    fast_sigs: HashMap<(Vec<Type>, Option<Type>), SigRef>,
    helper_sigs: HashMap<Helper, SigRef>,
    /// Memory flags of the fixed alias regions ([`FuncEnv::init_regions`]).
    pub mf: RegionFlags,
    regions: HashMap<Region, MemFlagsData>,
}

impl FuncEnv {
    /// A new environment for a function whose entry parameters are given.
    pub fn new(cc: CallConv, thread: Value, method: Value, args: Vec<Value>) -> FuncEnv {
        FuncEnv {
            cc,
            thread,
            method,
            args,
            arg_area: None,
            arg_area_slots: 0,
            fp: None,
            frame_top: None,
            safepoints: Vec::new(),
            poll_addr: None,
            invariant_slots: Vec::new(),
            shared_pos: false,
            restore_pos: false,
            stored: HashMap::new(),
            last_slots: None,
            poll_hint: false,
            inline_alloc: false,
            entry_sig: None,
            fast_sigs: HashMap::new(),
            helper_sigs: HashMap::new(),
            mf: RegionFlags {
                frame: trusted(),
                thread: trusted(),
                len: trusted(),
                elem: trusted(),
                meta: trusted(),
            },
            regions: HashMap::new(),
        }
    }

    /// Declare the fixed alias regions in the function being built (once,
    /// before any access is emitted).
    pub fn init_regions(&mut self, b: &mut FunctionBuilder) {
        self.mf = RegionFlags {
            frame: self.region(b, Region::Frame),
            thread: self.region(b, Region::Thread),
            len: self.region(b, Region::ArrayLen),
            elem: self.region(b, Region::ArrayElem),
            meta: self.region(b, Region::Meta),
        };
    }

    /// Trusted memory flags in alias region `r` (declared on first use).
    pub fn region(&mut self, b: &mut FunctionBuilder, r: Region) -> MemFlagsData {
        if let Some(f) = self.regions.get(&r) {
            return *f;
        }
        let ar = b.func.dfg.alias_regions.insert(AliasRegionData {
            user_id: self.regions.len() as u32 + 1,
            description: format!("{r:?}").into(),
        });
        let f = trusted().with_alias_region(Some(ar));
        self.regions.insert(r, f);
        f
    }

    /// The one slot signature `fn(thread, method, args) -> u64`.
    pub fn entry_signature(cc: CallConv) -> Signature {
        let mut sig = Signature::new(cc);
        sig.params.extend([AbiParam::new(PTR); 3]);
        sig.returns.push(AbiParam::new(types::I64));
        sig
    }

    /// The register-argument signature of compiled code (the `fast` entry):
    /// `fn(thread, params…) -> ret`, each argument and the result as its
    /// CLIF stack type (`i32` for `bool`/`u8`/`char`, references as
    /// pointers), no result for a `void` method. A method that propagates an
    /// exception returns zero of `ret` with the exception pending.
    pub fn fast_signature(cc: CallConv, params: &[Type], ret: Option<Type>) -> Signature {
        let mut sig = Signature::new(cc);
        sig.params.push(AbiParam::new(PTR));
        sig.params.extend(params.iter().map(|t| AbiParam::new(*t)));
        sig.returns.extend(ret.map(AbiParam::new));
        sig
    }

    /// Call the register-argument entry `f` of a compiled method whose
    /// signature is `(params, ret)` ([`FuncEnv::fast_signature`]).
    pub fn call_fast(
        &mut self,
        b: &mut FunctionBuilder,
        f: Value,
        args: &[Value],
        ret: Option<Type>,
    ) -> Option<Value> {
        let params: Vec<Type> = args.iter().map(|&a| b.func.dfg.value_type(a)).collect();
        let key = (params, ret);
        let sig = match self.fast_sigs.get(&key) {
            Some(s) => *s,
            None => {
                let s = b.import_signature(FuncEnv::fast_signature(self.cc, &key.0, ret));
                self.fast_sigs.insert(key, s);
                s
            }
        };
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(self.thread);
        all.extend_from_slice(args);
        let call = b.ins().call_indirect(sig, f, &all);
        b.inst_results(call).first().copied()
    }

    /// The `fast` entry of method `mh` (0 while it is not compiled), read
    /// with Acquire ordering: the JIT publishes it with a Release store
    /// after the code is executable.
    pub fn load_fast(&self, b: &mut FunctionBuilder, mh: Value) -> Value {
        let addr = b.ins().iadd_imm_s(mh, offsets::MH_FAST as i64);
        b.ins().atomic_load(PTR, trusted(), addr)
    }

    /// The `fast` entry of the method being compiled, for a call to itself:
    /// the JIT stores it before any caller can reach this code and never
    /// changes it again, so while this code runs the word is constant.
    pub fn load_own_fast(&self, b: &mut FunctionBuilder) -> Value {
        let f = self.mf.meta.with_readonly().with_can_move();
        b.ins().load(PTR, f, self.method, offsets::MH_FAST as i32)
    }

    /// A pointer constant.
    pub fn ptr_const(&self, b: &mut FunctionBuilder, p: usize) -> Value {
        b.ins().iconst(PTR, p as i64)
    }

    /// Call a runtime helper (indirectly, through its address as a constant).
    pub fn call_helper(
        &mut self,
        b: &mut FunctionBuilder,
        h: Helper,
        args: &[Value],
    ) -> Option<Value> {
        let sig = match self.helper_sigs.get(&h) {
            Some(s) => *s,
            None => {
                let (ps, rs) = h.types();
                let mut sig = Signature::new(self.cc);
                sig.params.extend(ps.iter().map(|t| AbiParam::new(*t)));
                sig.returns.extend(rs.iter().map(|t| AbiParam::new(*t)));
                let s = b.import_signature(sig);
                self.helper_sigs.insert(h, s);
                s
            }
        };
        let f = self.ptr_const(b, h.addr());
        let call = b.ins().call_indirect(sig, f, args);
        b.inst_results(call).first().copied()
    }

    /// Raise a runtime fault through [`helpers::jit_fault`].
    pub fn raise(&mut self, b: &mut FunctionBuilder, code: u32, a: Value, bv: Value) {
        let c = b.ins().iconst(types::I32, code as i64);
        let t = self.thread;
        self.call_helper(b, Helper::Fault, &[t, c, a, bv]);
    }

    /// Is an exception pending? (an `i8` truth value)
    pub fn pending_is_set(&self, b: &mut FunctionBuilder) -> Value {
        let p = b
            .ins()
            .load(PTR, self.mf.thread, self.thread, offsets::TC_PENDING as i32);
        b.ins().icmp_imm_s(IntCC::NotEqual, p, 0)
    }

    /// Take the pending exception (for a catch handler's stack).
    pub fn take_pending(&self, b: &mut FunctionBuilder) -> Value {
        let p = b
            .ins()
            .load(PTR, self.mf.thread, self.thread, offsets::TC_PENDING as i32);
        let z = b.ins().iconst(PTR, 0);
        b.ins()
            .store(self.mf.thread, z, self.thread, offsets::TC_PENDING as i32);
        p
    }

    /// Is the native stack pointer below the thread's limit? (`i8`)
    pub fn stack_exhausted(&self, b: &mut FunctionBuilder) -> Value {
        let sp = b.ins().get_stack_pointer(PTR);
        let lim = b.ins().load(
            PTR,
            self.mf.thread,
            self.thread,
            offsets::TC_STACK_LIMIT as i32,
        );
        b.ins().icmp(IntCC::UnsignedLessThan, sp, lim)
    }

    /// Reserve this method's frame record on the thread's value stack: a
    /// header (`frame::METHOD`, `POS`, `SIZE` with the `JIT` flag, `EH`)
    /// followed by `slots` slots. (The translator skips this for methods
    /// that never hold a reference and have no protected regions: the
    /// collector has nothing to find in them, so they get no record and
    /// their safepoints are bare polls.) Emits the "value stack exhausted"
    /// condition: branches to `overflow` (nothing pushed) or to `body`, where
    /// the caller then calls [`FuncEnv::init_frame`]. Sets [`FuncEnv::fp`].
    pub fn push_frame(
        &mut self,
        b: &mut FunctionBuilder,
        slots: u32,
        body: Block,
        overflow: Block,
    ) {
        let fp = b
            .ins()
            .load(PTR, self.mf.thread, self.thread, offsets::TC_VS_TOP as i32);
        let bytes = ((frame::HEADER_SLOTS + slots as usize) * 8) as i64;
        let top = b.ins().iadd_imm_s(fp, bytes);
        let end = b
            .ins()
            .load(PTR, self.mf.thread, self.thread, offsets::TC_VS_END as i32);
        let over = b.ins().icmp(IntCC::UnsignedGreaterThan, top, end);
        b.ins().brif(over, overflow, &[], body, &[]);
        self.fp = Some(fp);
        self.frame_top = Some(top);
    }

    /// Fill in the frame record pushed by [`FuncEnv::push_frame`] (in its
    /// `body` block): publish the new `vs_top` and write the header.
    pub fn init_frame(&mut self, b: &mut FunctionBuilder, mh: &MethodHandle, slots: u32) {
        let (Some(fp), Some(top)) = (self.fp, self.frame_top) else {
            return;
        };
        b.ins()
            .store(self.mf.thread, top, self.thread, offsets::TC_VS_TOP as i32);
        let m = self.ptr_const(b, self.method_ptr(mh));
        b.ins()
            .store(self.mf.frame, m, fp, (frame::METHOD * 8) as i32);
        if self.poll_addr.is_none() {
            // (With polls, the entry poll right after this stores the same
            // position before anything can stop the thread.)
            let pos = b.ins().iconst(types::I64, frame::POS_ENTRY as i64);
            b.ins()
                .store(self.mf.frame, pos, fp, (frame::POS * 8) as i32);
        }
        let size = b
            .ins()
            .iconst(types::I64, (slots as u64 | frame::JIT) as i64);
        b.ins()
            .store(self.mf.frame, size, fp, (frame::SIZE * 8) as i32);
        let z = b.ins().iconst(PTR, 0);
        b.ins().store(self.mf.frame, z, fp, (frame::EH * 8) as i32);
    }

    /// Pop the frame record (before every return of a frame that pushed one).
    pub fn pop_frame(&self, b: &mut FunctionBuilder) {
        if let Some(fp) = self.fp {
            b.ins()
                .store(self.mf.thread, fp, self.thread, offsets::TC_VS_TOP as i32);
        }
    }

    /// Address of the frame's exception-state word (`frame::EH`), which the
    /// exception helpers use as the frame's `*mut EhState` slot and the
    /// collector reads.
    pub fn eh_slot_addr(&self, b: &mut FunctionBuilder) -> Value {
        let fp = self.fp.expect("frame pushed at entry");
        b.ins().iadd_imm_s(fp, (frame::EH * 8) as i64)
    }

    /// A safepoint at position `pos` (an instruction index, possibly with
    /// `frame::POS_CTOR`, or `frame::POS_ENTRY`): store `pos` in the frame
    /// record and every live reference into its frame slot — `refs` pairs a
    /// frame slot index (arguments, locals, then the evaluation stack) with
    /// the value it must hold — and record the site in the method's
    /// safepoint table. For [`SafepointKind::Poll`], then load from the
    /// polling page (the load faults while a stop-the-world is requested;
    /// the thread parks in the handler with everything the collector needs
    /// already in memory). Since objects never move, nothing is reloaded.
    /// Returns the byte a poll loaded (the interrupt hint when
    /// [`FuncEnv::poll_hint`]), `None` for other kinds or without polls.
    /// After a call or allocation site, the caller calls
    /// [`FuncEnv::after_site`].
    pub fn safepoint(
        &mut self,
        b: &mut FunctionBuilder,
        pos: u64,
        kind: SafepointKind,
        refs: &[(u32, Value)],
    ) -> Option<Value> {
        if kind == SafepointKind::Poll && self.poll_addr.is_none() {
            return None;
        }
        if let Some(fp) = self.fp {
            self.record_site(b, fp, pos, kind, refs);
        }
        let mut byte = None;
        if kind == SafepointKind::Poll {
            if let Some(page) = self.poll_addr {
                let a = self.ptr_const(b, page);
                // A trapping load is still subject to Cranelift's redundant-
                // load elimination: in a loop that stores nothing (a frame
                // without a record), the back-edge poll would be replaced by
                // the entry poll's value and removed, and so would the
                // interrupt check after it, so the thread could never be
                // stopped. `sequence_point` emits no code but is a memory
                // fence to the alias analysis, so every poll (and the loads
                // right after it) really happens.
                b.ins().sequence_point();
                // Not `trusted`: this load may trap.
                byte = Some(b.ins().load(types::I8, MemFlagsData::new(), a, 0));
            }
            self.after_site(b);
        }
        byte
    }

    /// Make every later safepoint whose references are all invariant slots
    /// ([`FuncEnv::store_invariant`]) share the position `frame::POS_SHARED`
    /// and store nothing at all: the slots already hold their values, and
    /// the frame's position word holds `POS_SHARED` except while it is
    /// stopped at another safepoint (which stores its own position and then,
    /// through [`FuncEnv::after_site`], `POS_SHARED` again). A loop whose
    /// back-edge poll needs no references then costs no store per iteration.
    /// Called once at entry, after the invariant slots are stored, with
    /// every reference variable of the method (`ref_slots`); does nothing
    /// unless they are all invariant and the frame has a record.
    pub fn share_positions(&mut self, b: &mut FunctionBuilder, ref_slots: &[u32]) {
        let Some(fp) = self.fp else { return };
        if !ref_slots.iter().all(|s| self.invariant_slots.contains(s)) {
            return;
        }
        let p = b.ins().iconst(types::I64, frame::POS_SHARED as i64);
        b.ins().store(self.mf.frame, p, fp, (frame::POS * 8) as i32);
        // Always in the table, even if no site turns out to share it.
        self.safepoints.push((
            frame::POS_SHARED as u32,
            SafepointKind::Poll,
            ref_slots.into(),
        ));
        self.shared_pos = true;
    }

    /// After a call or allocation safepoint's call has returned (polls do it
    /// themselves): store `frame::POS_SHARED` back if the site stored its
    /// own position.
    pub fn after_site(&mut self, b: &mut FunctionBuilder) {
        if std::mem::take(&mut self.restore_pos) {
            if let Some(fp) = self.fp {
                let p = b.ins().iconst(types::I64, frame::POS_SHARED as i64);
                b.ins().store(self.mf.frame, p, fp, (frame::POS * 8) as i32);
            }
        }
    }

    /// The frame-record half of [`FuncEnv::safepoint`]: store `pos` and the
    /// references, and record the site. Frames without a record (see
    /// [`FuncEnv::push_frame`]) hold no references, so they have nothing to
    /// store: the collector sees their caller's record, stopped at its call.
    fn record_site(
        &mut self,
        b: &mut FunctionBuilder,
        fp: Value,
        pos: u64,
        kind: SafepointKind,
        refs: &[(u32, Value)],
    ) {
        if self.shared_pos && refs.iter().all(|(s, _)| self.invariant_slots.contains(s)) {
            let slots = self.slot_list(refs);
            self.safepoints
                .push((frame::POS_SHARED as u32, kind, slots));
            return;
        }
        self.restore_pos = self.shared_pos;
        let p = b.ins().iconst(types::I64, pos as i64);
        b.ins().store(self.mf.frame, p, fp, (frame::POS * 8) as i32);
        for &(slot, v) in refs {
            if self.invariant_slots.contains(&slot) || self.stored.get(&slot) == Some(&v) {
                continue;
            }
            let off = ((frame::HEADER_SLOTS + slot as usize) * 8) as i32;
            b.ins().store(self.mf.frame, v, fp, off);
            self.stored.insert(slot, v);
        }
        let slots = self.slot_list(refs);
        self.safepoints.push((pos as u32, kind, slots));
    }

    /// The slots of `refs`, sharing the last site's list when equal.
    fn slot_list(&mut self, refs: &[(u32, Value)]) -> std::rc::Rc<[u32]> {
        if let Some(l) = &self.last_slots {
            if l.len() == refs.len() && l.iter().zip(refs).all(|(a, (b, _))| a == b) {
                return std::rc::Rc::clone(l);
            }
        }
        let l: std::rc::Rc<[u32]> = refs.iter().map(|&(s, _)| s).collect();
        self.last_slots = Some(std::rc::Rc::clone(&l));
        l
    }

    /// Store the references of `refs` the frame does not hold yet
    /// ([`FuncEnv::stored`]), if there are more than
    /// [`PRESTORE_THRESHOLD`]; otherwise store nothing.
    pub fn store_if_many_unknown(&mut self, b: &mut FunctionBuilder, refs: &[(u32, Value)]) {
        let Some(fp) = self.fp else { return };
        let unknown = |s: &Self, slot: u32, v: Value| {
            !s.invariant_slots.contains(&slot) && s.stored.get(&slot) != Some(&v)
        };
        let n = refs.iter().filter(|&&(s, v)| unknown(self, s, v)).count();
        if n <= PRESTORE_THRESHOLD {
            return;
        }
        for &(slot, v) in refs {
            if unknown(self, slot, v) {
                let off = ((frame::HEADER_SLOTS + slot as usize) * 8) as i32;
                b.ins().store(self.mf.frame, v, fp, off);
                self.stored.insert(slot, v);
            }
        }
    }

    /// Forget what the frame slots hold (at a block that control can reach
    /// from places the emitted straight-line code does not cover: a
    /// bytecode block, an exception landing): the next safepoint stores
    /// every reference again.
    pub fn forget_stores(&mut self) {
        self.stored.clear();
    }

    /// What the frame slots are known to hold now (to [`FuncEnv::meet_stores`]
    /// with later, when two paths join).
    pub fn known_stores(&self) -> HashMap<u32, Value> {
        self.stored.clone()
    }

    /// At a join of the current path with one whose knowledge was `other`:
    /// keep only what both paths know alike.
    pub fn meet_stores(&mut self, other: &HashMap<u32, Value>) {
        self.stored.retain(|s, v| other.get(s) == Some(v));
    }

    /// Store `v`, the value that frame slot `slot` holds for the whole
    /// method (an argument that is never assigned), into the frame record
    /// once, at entry, before the first safepoint; later safepoints name the
    /// slot without storing it.
    pub fn store_invariant(&mut self, b: &mut FunctionBuilder, slot: u32, v: Value) {
        if let Some(fp) = self.fp {
            let off = ((frame::HEADER_SLOTS + slot as usize) * 8) as i32;
            b.ins().store(self.mf.frame, v, fp, off);
            self.invariant_slots.push(slot);
        }
    }

    /// The method's safepoint table from the sites emitted (sorted by
    /// position; a position recorded twice must name the same slots).
    pub fn safepoint_table(&self) -> Result<SafepointTable, JitError> {
        let mut sites: Vec<&(u32, SafepointKind, std::rc::Rc<[u32]>)> =
            self.safepoints.iter().collect();
        sites.sort_by_key(|s| s.0);
        let mut t = SafepointTable::default();
        // Sites with the same slots share one run of `slots` (the table
        // costs what the distinct live sets cost, not sites × live set).
        let mut runs: HashMap<&[u32], u32> = HashMap::new();
        for s in sites {
            if let Some(last) = t.entries.last() {
                if last.pos == s.0 {
                    let prev = &t.slots[last.first as usize..(last.first + last.count) as usize];
                    if prev != &*s.2 {
                        return Err(JitError::Lowering(format!(
                            "safepoint {} recorded with different slots",
                            s.0
                        )));
                    }
                    continue;
                }
            }
            let first = match runs.get(&*s.2) {
                Some(&f) => f,
                None => {
                    let f = t.slots.len() as u32;
                    t.slots.extend_from_slice(&s.2);
                    runs.insert(&s.2, f);
                    f
                }
            };
            t.entries.push(SafepointEntry {
                pos: s.0,
                kind: s.1,
                first,
                count: s.2.len() as u32,
            });
        }
        Ok(t)
    }

    /// Store an argument value into outgoing slot `i` in the slot encoding
    /// (`i32` sign-extended, `f32` bits in the low 32, others as 64 bits).
    pub fn store_arg(&mut self, b: &mut FunctionBuilder, i: usize, v: Value) {
        let area = self.arg_area(b);
        let ty = b.func.dfg.value_type(v);
        let w = to_slot(b, v, ty);
        b.ins().stack_store(PTR, w, area, (i * 8) as i32);
    }

    /// The outgoing argument area (created on first use).
    fn arg_area(&mut self, b: &mut FunctionBuilder) -> StackSlot {
        if let Some(a) = self.arg_area {
            return a;
        }
        let size = (self.arg_area_slots.max(1) * 8) as u32;
        let a = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, size, 3));
        self.arg_area = Some(a);
        a
    }

    /// Call a method whose handle is `mh` through its slot with the outgoing
    /// argument area; returns the raw 64-bit result.
    pub fn call_slot(&mut self, b: &mut FunctionBuilder, mh: Value) -> Value {
        let sig = match self.entry_sig {
            Some(s) => s,
            None => {
                let s = b.import_signature(FuncEnv::entry_signature(self.cc));
                self.entry_sig = Some(s);
                s
            }
        };
        // The slot is read with Acquire ordering, like `runtime::call_method`:
        // the JIT publishes compiled code with a Release store.
        let entry_addr = if offsets::MH_ENTRY == 0 {
            mh
        } else {
            b.ins().iadd_imm_s(mh, offsets::MH_ENTRY as i64)
        };
        let f = b.ins().atomic_load(PTR, trusted(), entry_addr);
        let area = self.arg_area(b);
        let a = b.ins().stack_addr(PTR, area, 0);
        let t = self.thread;
        let call = b.ins().call_indirect(sig, f, &[t, mh, a]);
        b.inst_results(call)[0]
    }

    /// The cached size class whose cells hold objects of `cd`, if compiled
    /// code allocates them inline: from the thread's allocation cache
    /// (`ThreadCtx::alloc_cache`), falling back to `jit_new_object` (which
    /// refills it) when the cache is empty. Only small objects: the fast
    /// path zeroes the fields with one store per word.
    pub fn inline_alloc_class(&self, cd: &ClassDesc) -> Option<usize> {
        let size = cd.instance_size as usize;
        if !self.inline_alloc || size > INLINE_ALLOC_MAX {
            return None;
        }
        crate::vm::object::cached_class_of_object(size)
    }

    /// The head of the thread's cache of free cells of size class `c`
    /// (null: empty).
    pub fn alloc_cache_head(&self, b: &mut FunctionBuilder, c: usize) -> Value {
        b.ins().load(
            PTR,
            self.mf.thread,
            self.thread,
            (offsets::TC_ALLOC_CACHE + c * 8) as i32,
        )
    }

    /// Unlink the non-null `head` cell from the thread's cache of class
    /// `c` and make it a zeroed object of class `cd` (what
    /// `Runtime::alloc_object_in` does): a free cell links to the next
    /// through its `tags` word, and its other bytes are stale.
    pub fn alloc_from_cache(&self, b: &mut FunctionBuilder, c: usize, head: Value, cd: &ClassDesc) {
        let next = b.ins().load(PTR, trusted(), head, OBJ_TAGS_OFFSET as i32);
        b.ins().store(
            self.mf.thread,
            next,
            self.thread,
            (offsets::TC_ALLOC_CACHE + c * 8) as i32,
        );
        let z = b.ins().iconst(types::I64, 0);
        let end = (cd.instance_size as usize)
            .max(HEADER_SIZE)
            .next_multiple_of(8);
        for off in (HEADER_SIZE..end).step_by(8) {
            b.ins().store(trusted(), z, head, off as i32);
        }
        b.ins().store(trusted(), z, head, OBJ_TAGS_OFFSET as i32);
        let cv = self.ptr_const(b, cd as *const ClassDesc as usize);
        b.ins().store(trusted(), cv, head, OBJ_CLASS_OFFSET as i32);
    }

    /// The class descriptor of a non-null object.
    pub fn class_of(&self, b: &mut FunctionBuilder, obj: Value) -> Value {
        b.ins()
            .load(PTR, self.mf.meta, obj, OBJ_CLASS_OFFSET as i32)
    }

    /// `vtable[slot]` of a non-null receiver's class.
    pub fn vtable_method(&self, b: &mut FunctionBuilder, obj: Value, slot: u32) -> Value {
        let cd = self.class_of(b, obj);
        let vt = b
            .ins()
            .load(PTR, self.mf.meta, cd, offsets::CD_VTABLE as i32);
        b.ins()
            .load(PTR, self.mf.meta, vt, (slot as usize * 8) as i32)
    }

    /// Interface dispatch, first half (same as `Runtime::dispatch_interface`):
    /// the receiver's class descriptor and whether interface `iface` has a
    /// row in its interface slot table (`i8`). The caller raises
    /// `NotImplementedException` on a cold path when it has not, then calls
    /// [`FuncEnv::iface_row`].
    pub fn iface_in_range(
        &self,
        b: &mut FunctionBuilder,
        obj: Value,
        iface: u32,
    ) -> (Value, Value) {
        let cd = self.class_of(b, obj);
        let len = b
            .ins()
            .uload32(self.mf.meta, cd, offsets::CD_ISLOTS_LEN as i32);
        let ok = b
            .ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThan, len, iface as i64);
        (cd, ok)
    }

    /// Interface dispatch, second half: the row of interface `iface` in the
    /// interface slot table of class descriptor `cd` (after
    /// [`FuncEnv::iface_in_range`] said it exists); null if the class does
    /// not implement the interface.
    pub fn iface_row(&self, b: &mut FunctionBuilder, cd: Value, iface: u32) -> Value {
        let islots = b
            .ins()
            .load(PTR, self.mf.meta, cd, offsets::CD_ISLOTS as i32);
        let off = iface as i64 * 8;
        match i32::try_from(off) {
            Ok(o) => b.ins().load(PTR, self.mf.meta, islots, o),
            Err(_) => {
                let a = b.ins().iadd_imm_s(islots, off);
                b.ins().load(PTR, self.mf.meta, a, 0)
            }
        }
    }

    /// Is the non-null object `obj` an instance of `target`? (`i8`)
    /// Classes: depth + display; interfaces: the bitmap; arrays: identity.
    pub fn instance_of(&self, b: &mut FunctionBuilder, obj: Value, target: &ClassDesc) -> Value {
        let cd = self.class_of(b, obj);
        let tv = self.ptr_const(b, target as *const ClassDesc as usize);
        match target.kind {
            kind::ARRAY => b.ins().icmp(IntCC::Equal, cd, tv),
            kind::INTERFACE => {
                let id = target.iface_id;
                let w = (id / 64) as i64;
                let words = b
                    .ins()
                    .uload32(self.mf.meta, cd, offsets::CD_IBITMAP_WORDS as i32);
                let in_range = b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, words, w);
                let bm = b
                    .ins()
                    .load(PTR, self.mf.meta, cd, offsets::CD_IBITMAP as i32);
                let addr = b.ins().iadd_imm_s(bm, w * 8);
                let safe = self_slot_addr(b, self);
                let addr = b.ins().select(in_range, addr, safe);
                let word = b.ins().load(types::I64, self.mf.meta, addr, 0);
                let bit = b.ins().band_imm_s(word, 1i64 << (id % 64));
                let set = b.ins().icmp_imm_s(IntCC::NotEqual, bit, 0);
                let f = b.ins().iconst(types::I8, 0);
                b.ins().select(in_range, set, f)
            }
            _ => {
                let depth = target.depth as i64;
                let d = b.ins().uload32(self.mf.meta, cd, offsets::CD_DEPTH as i32);
                let deep_enough = b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, d, depth);
                let disp = b
                    .ins()
                    .load(PTR, self.mf.meta, cd, offsets::CD_DISPLAY as i32);
                let addr = b.ins().iadd_imm_s(disp, depth * 8);
                let safe = self_slot_addr(b, self);
                let addr = b.ins().select(deep_enough, addr, safe);
                let e = b.ins().load(PTR, self.mf.meta, addr, 0);
                let same = b.ins().icmp(IntCC::Equal, e, tv);
                let f = b.ins().iconst(types::I8, 0);
                b.ins().select(deep_enough, same, f)
            }
        }
    }

    /// Array length (`u32`, as an `i32` value). `invariant`: `arr` is
    /// non-null wherever it is defined (a fresh local's array, see
    /// `Tx::fresh`), so the load may be moved anywhere, e.g. out of loops:
    /// a length never changes.
    pub fn array_len(&self, b: &mut FunctionBuilder, arr: Value, invariant: bool) -> Value {
        let f = if invariant {
            self.mf.len.with_readonly().with_can_move()
        } else {
            self.mf.len
        };
        b.ins().load(types::I32, f, arr, ARRAY_LEN_OFFSET as i32)
    }

    /// Address of element `idx` (an in-range `i32`) of elements of `size` bytes.
    pub fn elem_addr(&self, b: &mut FunctionBuilder, arr: Value, idx: Value, size: u8) -> Value {
        let i = b.ins().uextend(types::I64, idx);
        let off = b.ins().imul_imm_s(i, size as i64);
        let p = b.ins().iadd(arr, off);
        b.ins().iadd_imm_s(p, ARRAY_DATA_OFFSET as i64)
    }

    /// Load a value of storage kind `k` from `addr + off`; `want` is the
    /// stack type of the result (distinguishes `f64` from 64-bit integers).
    pub fn load_kind(
        &self,
        b: &mut FunctionBuilder,
        k: Kind,
        addr: Value,
        off: i32,
        want: Type,
        mf: MemFlagsData,
    ) -> Value {
        match k {
            Kind::Bool | Kind::U8 => b.ins().uload8(types::I32, mf, addr, off),
            Kind::I32 => b.ins().load(types::I32, mf, addr, off),
            Kind::F32 => b.ins().load(types::F32, mf, addr, off),
            Kind::W64 => b.ins().load(want, mf, addr, off),
            Kind::ABool | Kind::AU8 => {
                let a = offset_addr(b, addr, off);
                let v = b.ins().atomic_load(types::I8, trusted(), a);
                b.ins().uextend(types::I32, v)
            }
            Kind::AW64 => {
                let a = offset_addr(b, addr, off);
                b.ins().atomic_load(types::I64, trusted(), a)
            }
        }
    }

    /// Store stack value `v` with storage kind `k` at `addr + off` (narrow
    /// stores: `u8` keeps the low 8 bits, `bool` stores `v != 0`).
    pub fn store_kind(
        &self,
        b: &mut FunctionBuilder,
        k: Kind,
        addr: Value,
        off: i32,
        v: Value,
        mf: MemFlagsData,
    ) {
        match k {
            Kind::Bool => {
                let n = bool_of(b, v);
                b.ins().istore8(mf, n, addr, off);
            }
            Kind::U8 => {
                b.ins().istore8(mf, v, addr, off);
            }
            Kind::I32 | Kind::F32 | Kind::W64 => {
                b.ins().store(mf, v, addr, off);
            }
            Kind::ABool | Kind::AU8 => {
                let a = offset_addr(b, addr, off);
                let n = narrow8(b, k, v);
                b.ins().atomic_store(trusted(), n, a);
            }
            Kind::AW64 => {
                let a = offset_addr(b, addr, off);
                b.ins().atomic_store(trusted(), v, a);
            }
        }
    }

    /// `atomic.add` (returns the old value as a stack value).
    pub fn atomic_add(
        &self,
        b: &mut FunctionBuilder,
        k: Kind,
        addr: Value,
        off: i32,
        v: Value,
    ) -> Value {
        let a = offset_addr(b, addr, off);
        match k {
            Kind::ABool | Kind::AU8 | Kind::Bool | Kind::U8 => {
                let n = b.ins().ireduce(types::I8, v);
                let old = b
                    .ins()
                    .atomic_rmw(types::I8, trusted(), AtomicRmwOp::Add, a, n);
                b.ins().uextend(types::I32, old)
            }
            _ => b
                .ins()
                .atomic_rmw(types::I64, trusted(), AtomicRmwOp::Add, a, v),
        }
    }

    /// `atomic.cas` (returns the old value as a stack value).
    pub fn atomic_cas(
        &self,
        b: &mut FunctionBuilder,
        k: Kind,
        addr: Value,
        off: i32,
        e: Value,
        n: Value,
    ) -> Value {
        let a = offset_addr(b, addr, off);
        match k {
            Kind::ABool | Kind::AU8 | Kind::Bool | Kind::U8 => {
                let e8 = narrow8(b, k, e);
                let n8 = narrow8(b, k, n);
                let old = b.ins().atomic_cas(trusted(), a, e8, n8);
                b.ins().uextend(types::I32, old)
            }
            _ => b.ins().atomic_cas(trusted(), a, e, n),
        }
    }

    /// The address of the `MethodHandle` of the method being compiled.
    pub fn method_ptr(&self, mh: &MethodHandle) -> usize {
        mh as *const MethodHandle as usize
    }
}

/// A valid, readable, 8-aligned address used as the harmless alternative of
/// a guarded `select` (the frame's `method` handle: its first word is the slot).
fn self_slot_addr(_b: &mut FunctionBuilder, env: &FuncEnv) -> Value {
    env.method
}

fn offset_addr(b: &mut FunctionBuilder, addr: Value, off: i32) -> Value {
    if off == 0 {
        addr
    } else {
        b.ins().iadd_imm_s(addr, off as i64)
    }
}

/// `v != 0` as an `i32` 0/1 (for `bool` stores).
pub fn bool_of(b: &mut FunctionBuilder, v: Value) -> Value {
    let c = b.ins().icmp_imm_s(IntCC::NotEqual, v, 0);
    b.ins().uextend(types::I32, c)
}

/// Normalise an `i32` stack value for an 8-bit atomic of kind `k`.
fn narrow8(b: &mut FunctionBuilder, k: Kind, v: Value) -> Value {
    match k {
        Kind::ABool | Kind::Bool => {
            let c = b.ins().icmp_imm_s(IntCC::NotEqual, v, 0);
            c // already i8 0/1
        }
        _ => b.ins().ireduce(types::I8, v),
    }
}

/// Encode a stack value as a 64-bit slot.
pub fn to_slot(b: &mut FunctionBuilder, v: Value, ty: Type) -> Value {
    match ty {
        types::I32 => b.ins().sextend(types::I64, v),
        types::F32 => {
            let bits = b.ins().bitcast(types::I32, MemFlagsData::new(), v);
            b.ins().uextend(types::I64, bits)
        }
        types::F64 => b.ins().bitcast(types::I64, MemFlagsData::new(), v),
        _ => v,
    }
}

/// Decode a 64-bit slot value into a stack value of type `ty`.
pub fn from_slot(b: &mut FunctionBuilder, v: Value, ty: Type) -> Value {
    match ty {
        types::I32 => b.ins().ireduce(types::I32, v),
        types::F32 => {
            let lo = b.ins().ireduce(types::I32, v);
            b.ins().bitcast(types::F32, MemFlagsData::new(), lo)
        }
        types::F64 => b.ins().bitcast(types::F64, MemFlagsData::new(), v),
        _ => v,
    }
}

/// The slot entry of compiled code whose register signature is
/// `(params, ret)`: a function with the slot ABI
/// (`fn(thread, method, args) -> u64`) that decodes the arguments from
/// `args`, calls `method.fast` with them in registers and encodes the
/// result. Interpreted callers, natives, the host and the compile stub reach
/// compiled code through it; compiled callers call `fast` themselves.
/// One trampoline serves every method with the same signature.
pub fn slot_trampoline(
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    params: &[Type],
    ret: Option<Type>,
    fctx: &mut FunctionBuilderContext,
) -> Function {
    let cc = isa.default_call_conv();
    let mut func =
        Function::with_name_signature(UserFuncName::user(1, 0), FuncEnv::entry_signature(cc));
    let mut b = FunctionBuilder::new(&mut func, fctx);
    let blk = b.create_block();
    b.append_block_params_for_function_params(blk);
    b.switch_to_block(blk);
    b.seal_block(blk);
    let p = b.block_params(blk).to_vec();
    let (thread, mh, args) = (p[0], p[1], p[2]);
    let mut vals = Vec::with_capacity(params.len() + 1);
    vals.push(thread);
    for (i, &t) in params.iter().enumerate() {
        let w = b.ins().load(types::I64, trusted(), args, (i * 8) as i32);
        vals.push(from_slot(&mut b, w, t));
    }
    // The slot holds this trampoline only after `fast` was written (both
    // Release), and the caller read the slot with Acquire.
    let f = b.ins().load(PTR, trusted(), mh, offsets::MH_FAST as i32);
    let sig = b.import_signature(FuncEnv::fast_signature(cc, params, ret));
    let call = b.ins().call_indirect(sig, f, &vals);
    let r = match ret {
        Some(t) => {
            let v = b.inst_results(call)[0];
            to_slot(&mut b, v, t)
        }
        None => b.ins().iconst(types::I64, 0),
    };
    b.ins().return_(&[r]);
    b.finalize(isa.frontend_config());
    func
}
