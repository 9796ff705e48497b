//! What each instruction means: bytecode → CLIF.
//!
//! Input: the verifier's [`MethodInfo`] (the typed stack before every
//! instruction) and the interpreter's pre-decoded instructions of the same
//! method (`ir::Code`, index-parallel to `MethodInfo::insns`), which have
//! already resolved every name to a handle, offset, address, vtable slot or
//! interned string and specialised every operation by operand type. Using
//! the same resolution as the interpreter is what makes the two modes agree.
//!
//! Lowering:
//! - the evaluation stack is a compile-time `Vec<Value>` of SSA values (no
//!   memory traffic); `i32`/`bool`/`u8`/`char` are CLIF `i32`, `i64`/`u64`
//!   `i64`, floats `f32`/`f64`, references and pointers `i64`;
//! - each bytecode basic block is a CLIF block whose parameters are the
//!   stack on entry (types from the verifier); arguments and locals are
//!   cranelift `Variable`s, so the frontend builds SSA for them;
//! - everything that depends on Kiln's layout or runtime (memory, calls,
//!   helpers, pending checks, the stack limit, GC hooks) is asked of
//!   [`FuncEnv`] (`env.rs`).
//!
//! Exceptions: every instruction that can throw branches, when it does, to
//! the exception path of its instruction index `at`: if `at` is inside a try
//! block of this method, a dispatch block asks the runtime (the
//! interpreter's region logic, `helpers.rs`) for the handler and jumps there
//! through a switch over the method's handler starts and `leave` targets;
//! otherwise (or when nothing catches) the frame appends itself to the trace
//! and returns 0 — exactly the interpreter's protocol.

use super::env::{self, from_slot, FuncEnv, Helper, Region, PTR};
use super::helpers::{code as fc, null_what};
use super::JitError;
use crate::bytecode::Op;
use crate::ir::{Cmp, Code, Intrinsic, Kind, Src, I};
use crate::library::TypeSig;
use crate::runtime::Runtime;
use crate::verify::{MethodInfo, VType};
use crate::vm::tables::{offsets, MethodHandle, SafepointKind, SafepointTable};
use crate::vm::thread::frame;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::Block;
use cranelift_codegen::ir::{
    types, BlockArg, BlockCall, Function, InstBuilder, JumpTableData, Type, UserFuncName, Value,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Switch, Variable};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;

/// The CLIF type of a stack type.
pub fn clif_type(t: &VType) -> Type {
    match t {
        VType::I32 => types::I32,
        VType::I64 => types::I64,
        VType::F32 => types::F32,
        VType::F64 => types::F64,
        VType::Ptr | VType::Null | VType::Ref(_) | VType::Join(_) => PTR,
    }
}

fn sig_type(t: &TypeSig) -> Type {
    clif_type(&VType::of(t))
}

/// The register-argument signature of method `mh` (its `fast` entry):
/// argument types (`this` first) and result type, as CLIF stack types.
pub fn fast_types(rt: &Runtime, mh: &MethodHandle) -> (Vec<Type>, Option<Type>) {
    let m = rt.program.method(mh.member);
    let mut params = Vec::with_capacity(m.params.len() + 1);
    if !m.flags.is_static {
        params.push(PTR);
    }
    params.extend(m.params.iter().map(|p| sig_type(&p.ty)));
    (params, m.ret.as_ref().map(sig_type))
}

/// Who a call calls.
#[derive(Clone, Copy)]
enum Callee {
    /// A method known when the caller is compiled (`call`, a constructor).
    Known(*const MethodHandle),
    /// A method handle loaded at run time (vtable or interface slot table).
    Loaded(Value),
}

/// How a call reaches its callee ([`Tx::emit_call`]).
enum Via {
    /// The register entry at this address.
    Fast(Value),
    /// The slot of this handle.
    Slot(Value),
    /// The register entry of this handle if set, else its slot.
    Check(Value),
}

/// Build the CLIF function of method `mh` for `isa`.
pub fn translate<'a>(
    rt: &'a Runtime,
    mh: &'a MethodHandle,
    info: &'a MethodInfo,
    isa: &dyn TargetIsa,
    fctx: &mut FunctionBuilderContext,
) -> Result<Function, JitError> {
    translate_with_safepoints(rt, mh, info, isa, fctx, None).map(|(f, _)| f)
}

/// [`translate`], also returning the method's safepoint table; polls load
/// from `poll_addr` (none if `None`).
pub fn translate_with_safepoints<'a>(
    rt: &'a Runtime,
    mh: &'a MethodHandle,
    info: &'a MethodInfo,
    isa: &dyn TargetIsa,
    fctx: &mut FunctionBuilderContext,
    poll_addr: Option<usize>,
) -> Result<(Function, SafepointTable), JitError> {
    let code = mh.code().ok_or("the method has no resolved body")?;
    if code.insns.len() != info.insns.len() {
        return Err("pre-decoded code and verifier output disagree".into());
    }
    let m = rt.program.method(mh.member);
    let mut var_types = Vec::new();
    if !m.flags.is_static {
        var_types.push(PTR);
    }
    var_types.extend(m.params.iter().map(|p| sig_type(&p.ty)));
    var_types.extend(m.locals.iter().map(|l| sig_type(&l.ty)));
    if var_types.len() != (code.nargs + code.nlocals) as usize {
        return Err("argument/local count mismatch".into());
    }

    let cc = isa.default_call_conv();
    let (params, ret) = fast_types(rt, mh);
    if params[..] != var_types[..code.nargs as usize] {
        return Err("argument types disagree with the signature".into());
    }
    let mut func = Function::with_name_signature(
        UserFuncName::user(0, mh.method_token),
        FuncEnv::fast_signature(cc, &params, ret),
    );
    // SAFETY: `gc` points to the method's GcData in the live tables.
    let gcd = unsafe { &*mh.gc };
    // SAFETY: `ref_slots` has `ref_slot_count` entries.
    let ref_vars = unsafe {
        if gcd.ref_slot_count == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(gcd.ref_slots, gcd.ref_slot_count as usize).to_vec()
        }
    };
    let b = FunctionBuilder::new(&mut func, fctx);
    let mut tx = Tx::new(info, code, b, cc, var_types, mh);
    tx.rt = Some(rt);
    tx.ret_ty = ret;
    tx.ref_vars = ref_vars;
    tx.env.poll_addr = poll_addr;
    tx.env.inline_alloc = !rt.gc.collector.stress;
    // The hint lives on the process's polling page; a caller-chosen page
    // (tests) has none.
    tx.env.poll_hint = poll_addr.is_some()
        && poll_addr == crate::safepoint::poll_page_addr()
        && crate::safepoint::poll_hint_available();
    tx.run()?;
    tx.b.seal_all_blocks();
    tx.b.finalize(isa.frontend_config());
    let table = tx.env.safepoint_table()?;
    Ok((func, table))
}

struct Tx<'a, 'f> {
    info: &'a MethodInfo,
    code: &'a Code,
    b: FunctionBuilder<'f>,
    env: FuncEnv,
    vars: Vec<Variable>,
    var_types: Vec<Type>,
    /// Instruction index → its block (block starts that are reachable).
    blocks: BTreeMap<usize, Block>,
    /// Stack of the current block.
    stack: Vec<Value>,
    /// Shared exit: append this frame to the trace, return 0.
    propagate: Block,
    /// Exception dispatch at `at` (param: i32 instruction index); methods with regions.
    eh: Option<Block>,
    /// Continue at instruction `r` chosen by the runtime (param: i32); methods with regions.
    goto: Option<Block>,
    /// The method being compiled.
    mh: Option<&'a MethodHandle>,
    /// The runtime whose tables the code refers to (callee signatures).
    rt: Option<&'a Runtime>,
    /// The method's result type (`None`: `void`), as its entry returns it.
    ret_ty: Option<Type>,
    /// Argument/local slots of reference type (the method's `GcData`).
    ref_vars: Vec<u32>,
    /// Does the frame have a record on the value stack? (decided at entry)
    framed: bool,
    /// Values known to be non-null at the current point: null-checked (or
    /// allocated) earlier in the current bytecode basic block, whose CLIF
    /// code is straight-line up to here apart from exception exits, so the
    /// check dominates. Cleared at every block start.
    nonnull: HashSet<Value>,
    /// The current value of each argument/local read or written earlier in
    /// the current bytecode basic block (cleared at every block start), so
    /// that repeated `ldloc`s are one SSA value even though the frontend
    /// sees the exception checks in between as separate CLIF blocks.
    var_cache: HashMap<u32, Value>,
    /// Locals assigned exactly once, from a fresh `newobj`/`newarr`, in the
    /// method's straight-line entry block: local → the index of that store.
    /// After it they are never null, and their frame slot (for the
    /// collector) is written once, there ([`Tx::fresh_locals`]).
    fresh: HashMap<u32, usize>,
    /// Values read from a [`Tx::fresh`] local after its store: non-null
    /// wherever they are defined (not only after a check), so loads of
    /// immutable data through them may be moved freely.
    fresh_vals: HashSet<Value>,
    /// The instruction being translated.
    cur: usize,
}

impl<'a, 'f> Tx<'a, 'f> {
    fn new(
        info: &'a MethodInfo,
        code: &'a Code,
        mut b: FunctionBuilder<'f>,
        cc: cranelift_codegen::isa::CallConv,
        var_types: Vec<Type>,
        mh: &'a MethodHandle,
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        // The method being compiled is known: a constant, not a parameter
        // occupying a callee-saved register for the whole body only to
        // reach the cold exception paths.
        let method = b.ins().iconst(PTR, mh as *const MethodHandle as i64);
        let mut env = FuncEnv::new(cc, p[0], method, p[1..].to_vec());
        env.init_regions(&mut b);
        let propagate = b.create_block();
        b.set_cold_block(propagate);
        Tx {
            info,
            code,
            b,
            env,
            vars: Vec::new(),
            var_types,
            blocks: BTreeMap::new(),
            stack: Vec::new(),
            propagate,
            eh: None,
            goto: None,
            mh: Some(mh),
            rt: None,
            ret_ty: None,
            ref_vars: Vec::new(),
            framed: true,
            nonnull: HashSet::new(),
            var_cache: HashMap::new(),
            fresh: HashMap::new(),
            fresh_vals: HashSet::new(),
            cur: 0,
        }
    }

    /// Reference-ness of the evaluation stack before instruction `i`.
    fn stack_refs_at(&self, i: usize) -> Vec<bool> {
        self.info
            .stack(i)
            .map(|s| s.map(VType::is_ref))
            .unwrap_or_default()
    }

    /// A safepoint at `pos` where the evaluation stack, as the collector
    /// sees it, is `stack` with reference-ness `is_ref`: every reference
    /// argument/local and every reference on that stack goes to its frame slot.
    /// Returns what [`FuncEnv::safepoint`] returns (a poll's loaded byte).
    fn safepoint(
        &mut self,
        pos: u64,
        kind: SafepointKind,
        stack: &[Value],
        is_ref: &[bool],
    ) -> Result<Option<Value>, JitError> {
        if stack.len() != is_ref.len() {
            return Err(JitError::Lowering(format!(
                "safepoint {pos:#x}: stack of {} values, {} types",
                stack.len(),
                is_ref.len()
            )));
        }
        // Without a record, only the entry poll may see references (the
        // arguments, which the caller keeps; see `needs_frame_record`).
        let refs_here =
            is_ref.iter().any(|&r| r) || (pos != frame::POS_ENTRY && !self.ref_vars.is_empty());
        if !self.framed && refs_here {
            return Err(JitError::Lowering(format!(
                "safepoint {pos:#x}: a reference in a frame without a record"
            )));
        }
        let refs = self.live_refs(stack, is_ref);
        Ok(self.env.safepoint(&mut self.b, pos, kind, &refs))
    }

    /// The (frame slot, value) pairs a safepoint with evaluation stack
    /// `stack` (reference-ness `is_ref`) must find in the frame: every
    /// reference variable and every reference on the stack.
    fn live_refs(&mut self, stack: &[Value], is_ref: &[bool]) -> Vec<(u32, Value)> {
        let mut refs = Vec::new();
        for &s in &self.ref_vars.clone() {
            let v = self.use_var(s);
            refs.push((s, v));
        }
        let base = self.code.nargs + self.code.nlocals;
        for (p, (&v, &r)) in stack.iter().zip(is_ref).enumerate() {
            if r {
                refs.push((base + p as u32, v));
            }
        }
        refs
    }

    /// The back-edge poll of a branch at `i` to `target`, with the stack
    /// before `i` (nothing popped yet).
    fn back_edge_poll(&mut self, i: usize, target: usize) -> Result<(), JitError> {
        if target <= i {
            let stack = self.stack.clone();
            let refs = self.stack_refs_at(i);
            let hint = self.safepoint(i as u64, SafepointKind::Poll, &stack, &refs)?;
            self.interrupt_check(hint, Some(i));
        }
        Ok(())
    }

    /// After a poll: throw a delivered interrupt (`ThreadCtx::interrupt` is
    /// non-zero) at instruction `at`, or out of this frame (`None`: the
    /// method-entry poll). With the polling page's interrupt hint, `hint` is
    /// the byte the poll loaded and the fast path is a test of it and a
    /// branch to a cold block, which reads the thread's own word (another
    /// thread's interrupt also sets the hint); without it, the fast path
    /// loads the word, tests it and branches.
    fn interrupt_check(&mut self, hint: Option<Value>, at: Option<usize>) {
        if self.env.poll_addr.is_none() {
            return;
        }
        let cont = self.b.create_block();
        if let (true, Some(h)) = (self.env.poll_hint, hint) {
            let check = self.b.create_block();
            self.b.set_cold_block(check);
            let set = self.b.ins().icmp_imm_s(IntCC::NotEqual, h, 0);
            self.b.ins().brif(set, check, &[], cont, &[]);
            self.b.seal_block(check);
            self.b.switch_to_block(check);
        }
        // Never merged with an earlier load of the word: the poll's
        // `sequence_point` is a fence to Cranelift's alias analysis.
        let wa = self
            .b
            .ins()
            .iadd_imm_s(self.env.thread, offsets::TC_INTERRUPT as i64);
        let w = self.b.ins().atomic_load(types::I32, env::trusted(), wa);
        let slow = self.b.create_block();
        self.b.set_cold_block(slow);
        self.b.ins().brif(w, slow, &[], cont, &[]);
        // Every predecessor of these blocks is known once the slow block's
        // branch is in: sealing them lets the SSA builder pass variables
        // straight through instead of adding block parameters (which
        // become register moves on the back edge).
        self.b.seal_block(slow);
        self.b.switch_to_block(slow);
        // The helper may collect (a `COLLECT` request: the poll's
        // safepoint stores are done) and go on, or make the interrupt
        // pending and have this frame throw it.
        let t = self.env.thread;
        let thrown = self
            .env
            .call_helper(&mut self.b, Helper::PollSlow, &[t])
            .expect("jit_poll_slow returns a value");
        let (tb, targs) = match at {
            Some(i) => self.exc_target(i),
            None => (self.propagate, vec![]),
        };
        self.b.ins().brif(thrown, tb, &targs, cont, &[]);
        self.b.seal_block(cont);
        self.b.switch_to_block(cont);
    }

    /// Does this frame need a record on the value stack? Only if the
    /// collector could find something in it: a reference-typed argument or
    /// local, a reference on the evaluation stack at any reachable
    /// instruction (which covers call arguments, `newobj` results, `ldstr`
    /// and `ldnull`), or an exception state (protected regions). Frames
    /// without one are invisible to the collector and to nothing else: the
    /// trace of a propagating exception is built by `jit_unwind` from the
    /// method handle, and the native stack limit still bounds recursion.
    ///
    /// A method whose only safepoint is the entry poll (no calls other than
    /// intrinsics, no allocation, no backward branch) needs none either:
    /// at that poll its only references are its arguments, which its caller
    /// keeps (a compiled caller stores call arguments into its own record at
    /// the call safepoint, an interpreted one holds them in its slots, a
    /// native's come from its caller, and the host roots what it passes).
    fn needs_frame_record(&self) -> bool {
        let holds_refs = !self.ref_vars.is_empty()
            || self.info.any_stack_type(|t| t.is_ref() || *t == VType::Ptr);
        // A non-leaf (`ir::is_leaf`) has a safepoint besides the entry poll.
        self.has_regions() || (holds_refs && !self.code.leaf)
    }

    fn stack_types(&self, i: usize) -> Option<Vec<Type>> {
        self.info.stack(i).map(|s| s.map(clif_type))
    }

    /// The stack type of the value an instruction at `i` pushes (the top of
    /// the stack before `i + 1`, which is reachable because value-producing
    /// instructions fall through).
    fn result_type(&self, i: usize) -> Result<Type, JitError> {
        self.info
            .stack(i + 1)
            .and_then(|s| s.top())
            .map(clif_type)
            .ok_or_else(|| JitError::Lowering(format!("no result type after instruction {i}")))
    }

    fn has_regions(&self) -> bool {
        !self.code.regions.is_empty()
    }

    fn run(&mut self) -> Result<(), JitError> {
        let n = self.code.insns.len();
        // --- block starts
        let mut starts = BTreeSet::new();
        starts.insert(0usize);
        let mut dyn_targets = BTreeSet::new();
        let mut jump_targets = BTreeSet::new();
        let mut max_call_args = 0usize;
        for (i, ins) in self.code.insns.iter().enumerate() {
            match *ins {
                I::Br(t) | I::Brtrue(t) | I::Brfalse(t) | I::BrCmp(_, t) => {
                    starts.insert(t as usize);
                    jump_targets.insert(t as usize);
                    starts.insert(i + 1);
                }
                I::Leave(t) => {
                    starts.insert(t as usize);
                    jump_targets.insert(t as usize);
                    dyn_targets.insert(t as usize);
                    starts.insert(i + 1);
                }
                I::Switch { start, len } => {
                    for k in start..start + len {
                        starts.insert(self.code.switch_targets[k as usize] as usize);
                        jump_targets.insert(self.code.switch_targets[k as usize] as usize);
                    }
                    starts.insert(i + 1);
                }
                I::Ret(_) | I::RetVoid | I::Throw | I::Rethrow | I::Endfinally | I::Unreachable => {
                    starts.insert(i + 1);
                }
                I::Call { nargs, .. } | I::CallVirt { nargs, .. } | I::CallIface { nargs, .. } => {
                    max_call_args = max_call_args.max(nargs as usize).max(1)
                }
                I::Newobj { nargs, .. } => max_call_args = max_call_args.max(nargs as usize + 1),
                _ => {}
            }
        }
        for r in &self.code.regions {
            starts.insert(r.handler_start as usize);
            starts.insert(r.try_start as usize);
            dyn_targets.insert(r.handler_start as usize);
        }
        for &s in &starts {
            if s >= n {
                continue;
            }
            if let Some(tys) = self.stack_types(s) {
                let blk = self.b.create_block();
                for t in tys {
                    self.b.append_block_param(blk, t);
                }
                self.blocks.insert(s, blk);
            }
        }
        if max_call_args > 0 {
            self.env.arg_area_slots = max_call_args;
        }

        // --- entry: stack limit, exception state, arguments, locals
        let body = self.b.create_block();
        let so = self.b.create_block();
        self.b.set_cold_block(so);
        let exhausted = self.env.stack_exhausted(&mut self.b);
        self.b.ins().brif(exhausted, so, &[], body, &[]);
        self.b.switch_to_block(so);
        {
            let z = self.b.ins().iconst(types::I64, 0);
            self.env.raise(&mut self.b, fc::STACK_OVERFLOW, z, z);
            // like the interpreter: the overflowing frame is not in the trace
            self.return_zero();
        }
        self.b.switch_to_block(body);
        // The frame record on the value stack (the collector's view of this
        // frame), unless the method never holds a reference.
        let mh = self.mh.ok_or("no method handle")?;
        self.framed = self.needs_frame_record();
        if self.framed {
            let framed = self.b.create_block();
            let vso = self.b.create_block();
            self.b.set_cold_block(vso);
            self.env
                .push_frame(&mut self.b, self.code.frame_slots, framed, vso);
            self.b.switch_to_block(vso);
            {
                let z = self.b.ins().iconst(types::I64, 0);
                self.env.raise(&mut self.b, fc::VALUE_STACK_OVERFLOW, z, z);
                // like the interpreter: the overflowing frame is not in the trace
                self.return_zero();
            }
            self.b.switch_to_block(framed);
            self.env.init_frame(&mut self.b, mh, self.code.frame_slots);
        }
        let narrow: BTreeMap<u32, Kind> = self.code.narrow_args.iter().copied().collect();
        // Arguments the method assigns (the others keep their entry value).
        let assigned: BTreeSet<u32> = self
            .code
            .insns
            .iter()
            .filter_map(|ins| match *ins {
                I::St(s) | I::StU8(s) | I::StBool(s) => Some(s),
                _ => None,
            })
            .collect();
        for (slot, &ty) in self.var_types.clone().iter().enumerate() {
            let var = self.b.declare_var(ty);
            self.vars.push(var);
            let v = if slot < self.code.nargs as usize {
                let v = self.env.args[slot];
                match narrow.get(&(slot as u32)) {
                    Some(Kind::U8) => self.b.ins().band_imm_s(v, 0xFF),
                    Some(Kind::Bool) => env::bool_of(&mut self.b, v),
                    _ => v,
                }
            } else {
                self.zero(ty)
            };
            self.b.def_var(var, v);
            if slot < self.code.nargs as usize
                && self.ref_vars.contains(&(slot as u32))
                && !assigned.contains(&(slot as u32))
            {
                self.env.store_invariant(&mut self.b, slot as u32, v);
            }
        }
        let first_end = starts.range(1..).next().copied().unwrap_or(n);
        self.fresh = self.fresh_locals(&jump_targets, first_end);
        for s in self.fresh.keys().copied().collect::<Vec<_>>() {
            // null until its one assignment (which stores the object)
            let z = self.b.ins().iconst(PTR, 0);
            self.env.store_invariant(&mut self.b, s, z);
        }
        let ref_slots = self.ref_vars.clone();
        self.env.share_positions(&mut self.b, &ref_slots);
        // No entry poll in a leaf: it runs in bounded time (`ir::is_leaf`).
        if !self.code.leaf {
            let hint = self.safepoint(frame::POS_ENTRY, SafepointKind::Poll, &[], &[])?;
            self.interrupt_check(hint, None);
        }
        let b0 = *self.blocks.get(&0).ok_or("instruction 0 is unreachable")?;
        self.b.ins().jump(b0, &[]);

        // --- exception plumbing
        if self.has_regions() {
            let eh = self.b.create_block();
            self.b.set_cold_block(eh);
            let at = self.b.append_block_param(eh, types::I32);
            let goto = self.b.create_block();
            let r = self.b.append_block_param(goto, types::I32);
            self.b.switch_to_block(eh);
            let (t, m, s) = (self.env.thread, self.env.method, self.eh_slot_addr());
            let r0 = self
                .env
                .call_helper(&mut self.b, Helper::EhThrow, &[t, m, s, at])
                .expect("i32");
            self.b.ins().jump(goto, &[BlockArg::Value(r0)]);
            // Set now: a landing's poll below may throw (`exc_target`).
            self.eh = Some(eh);
            self.b.switch_to_block(goto);
            let mut sw = Switch::new();
            for &d in &dyn_targets {
                let Some(&target) = self.blocks.get(&d) else {
                    continue;
                };
                let landing = self.b.create_block();
                sw.set_entry(d as u128, landing);
                let is_catch = self
                    .code
                    .regions
                    .iter()
                    .any(|r| r.handler_start as usize == d && !r.catch.is_null());
                let cur = self.b.current_block();
                self.b.switch_to_block(landing);
                // Reached from every throwing site of the try block.
                self.env.forget_stores();
                let stack = if is_catch {
                    vec![self.env.take_pending(&mut self.b)]
                } else {
                    vec![]
                };
                // A handler placed before its try block is only ever
                // entered backward: poll on entering it (as the
                // interpreter does, see `ir::eh::backward_handler`).
                if crate::ir::eh::backward_handler(self.code, d) {
                    self.var_cache.clear();
                    let refs = self.stack_refs_at(d);
                    let hint = self.safepoint(d as u64, SafepointKind::Poll, &stack, &refs)?;
                    self.interrupt_check(hint, Some(d));
                    self.var_cache.clear();
                }
                let args: Vec<BlockArg> = stack.iter().map(|&v| BlockArg::Value(v)).collect();
                self.b.ins().jump(target, &args);
                if let Some(c) = cur {
                    self.b.switch_to_block(c);
                }
                // (Conservative: `c` may not know what the landing stored.)
                self.env.forget_stores();
            }
            sw.emit(&mut self.b, r, self.propagate);
            self.eh = Some(eh);
            self.goto = Some(goto);
        }
        self.b.switch_to_block(self.propagate);
        {
            let (t, m) = (self.env.thread, self.env.method);
            let s = if self.has_regions() {
                self.eh_slot_addr()
            } else {
                self.b.ins().iconst(PTR, 0)
            };
            self.env
                .call_helper(&mut self.b, Helper::Unwind, &[t, m, s]);
            self.env.pop_frame(&mut self.b);
            self.return_zero();
        }

        // --- the body
        let mut open = false; // is the current block unterminated?
        for i in 0..n {
            if let Some(&blk) = self.blocks.get(&i) {
                if open {
                    let args = self.stack_args();
                    self.b.ins().jump(blk, &args);
                }
                self.b.switch_to_block(blk);
                self.stack = self.b.block_params(blk).to_vec();
                self.nonnull.clear();
                self.var_cache.clear();
                self.env.forget_stores();
                open = true;
            }
            if !open || !self.info.reachable(i) {
                open = false;
                continue;
            }
            self.cur = i;
            open = self.insn(i)?;
        }
        if open {
            return Err("control falls off the end of the method".into());
        }
        Ok(())
    }

    /// The value of argument/local `s` here.
    fn use_var(&mut self, s: u32) -> Value {
        if let Some(&v) = self.var_cache.get(&s) {
            return v;
        }
        let v = self.b.use_var(self.vars[s as usize]);
        self.var_cache.insert(s, v);
        if self.fresh.get(&s).is_some_and(|&at| self.cur > at) {
            self.nonnull.insert(v);
            self.fresh_vals.insert(v);
        }
        v
    }

    /// Assign argument/local `s`.
    fn def_var(&mut self, s: u32, v: Value) {
        self.b.def_var(self.vars[s as usize], v);
        self.var_cache.insert(s, v);
        if self.fresh.get(&s) == Some(&self.cur) {
            // The only assignment: its value is in the frame from now on.
            self.env.store_invariant(&mut self.b, s, v);
        }
    }

    /// The locals of [`Tx::fresh`]: in a method without protected regions,
    /// whose first bytecode block is entered only from the method entry
    /// (no branch targets an instruction in it), a reference local with one
    /// `stloc`, in that block, right after the `newobj`/`newarr` that made
    /// its value. Every instruction after that store is reached only through
    /// it, so the local is non-null there and holds the same object.
    fn fresh_locals(
        &self,
        jump_targets: &BTreeSet<usize>,
        first_end: usize,
    ) -> HashMap<u32, usize> {
        let mut out = HashMap::new();
        if self.has_regions() || jump_targets.range(..first_end).next().is_some() {
            return out;
        }
        let mut stores: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, ins) in self.code.insns.iter().enumerate() {
            if let I::St(s) | I::StU8(s) | I::StBool(s) = *ins {
                stores.entry(s).or_default().push(i);
            }
        }
        for (s, at) in stores {
            if let [p] = at[..] {
                let fresh_value =
                    p > 0 && matches!(self.code.insns[p - 1], I::Newobj { .. } | I::Newarr(_));
                if s >= self.code.nargs
                    && p < first_end
                    && fresh_value
                    && matches!(self.code.insns[p], I::St(_))
                    && self.ref_vars.contains(&s)
                {
                    out.insert(s, p);
                }
            }
        }
        out
    }

    fn eh_slot_addr(&mut self) -> Value {
        self.env.eh_slot_addr(&mut self.b)
    }

    fn zero(&mut self, ty: Type) -> Value {
        match ty {
            types::F32 => self.b.ins().f32const(0.0),
            types::F64 => self.b.ins().f64const(0.0),
            t => self.b.ins().iconst(t, 0),
        }
    }

    fn stack_args(&self) -> Vec<BlockArg> {
        self.stack.iter().map(|v| BlockArg::Value(*v)).collect()
    }

    fn pop(&mut self) -> Result<Value, JitError> {
        self.stack
            .pop()
            .ok_or_else(|| JitError::Lowering("evaluation stack underflow".into()))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, JitError> {
        if self.stack.len() < n {
            return Err("evaluation stack underflow".into());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn block_at(&self, i: usize) -> Result<Block, JitError> {
        self.blocks
            .get(&i)
            .copied()
            .ok_or_else(|| JitError::Lowering(format!("no block at instruction {i}")))
    }

    /// Where an exception raised at `at` goes: (block, args).
    fn exc_target(&mut self, at: usize) -> (Block, Vec<BlockArg>) {
        let in_try = self.code.regions.iter().any(|r| r.in_try(at as u32));
        match (in_try, self.eh) {
            (true, Some(eh)) => {
                let a = self.b.ins().iconst(types::I32, at as i64);
                (eh, vec![BlockArg::Value(a)])
            }
            _ => (self.propagate, vec![]),
        }
    }

    /// If `cond` (i8) is true, an exception is pending at `at`.
    fn branch_exc_if(&mut self, cond: Value, at: usize) {
        let (tb, targs) = self.exc_target(at);
        let cont = self.b.create_block();
        self.b.ins().brif(cond, tb, &targs, cont, &[]);
        // Its one predecessor is known: sealed now, variables flow through
        // without block parameters.
        self.b.seal_block(cont);
        self.b.switch_to_block(cont);
    }

    /// After a call: check `ThreadCtx.pending`.
    fn check_pending(&mut self, at: usize) {
        let p = self.env.pending_is_set(&mut self.b);
        self.branch_exc_if(p, at);
    }

    /// If `cond` (i8) is true, raise fault `code(a, b)` at `at`.
    fn fault_if(&mut self, cond: Value, at: usize, code: u32, a: Option<Value>, bv: Option<Value>) {
        let fault = self.b.create_block();
        let cont = self.b.create_block();
        self.b.set_cold_block(fault);
        self.b.ins().brif(cond, fault, &[], cont, &[]);
        // Both have this one predecessor: sealed now (see `branch_exc_if`).
        self.b.seal_block(fault);
        self.b.seal_block(cont);
        self.b.switch_to_block(fault);
        let z = self.b.ins().iconst(types::I64, 0);
        self.env
            .raise(&mut self.b, code, a.unwrap_or(z), bv.unwrap_or(z));
        let (tb, targs) = self.exc_target(at);
        self.b.ins().jump(tb, &targs);
        self.b.switch_to_block(cont);
    }

    fn null_check(&mut self, v: Value, at: usize, what: &str) {
        if !self.nonnull.insert(v) {
            return; // already checked on every path to here
        }
        let c = self.b.ins().icmp_imm_s(IntCC::Equal, v, 0);
        let w = self.b.ins().iconst(types::I64, null_what(what) as i64);
        self.fault_if(c, at, fc::NULL_IN, Some(w), None);
    }

    /// Translate instruction `i`; returns whether control falls through.
    fn insn(&mut self, i: usize) -> Result<bool, JitError> {
        let ins = self.code.insns[i];
        macro_rules! bin {
            ($f:ident) => {{
                let y = self.pop()?;
                let x = self.pop()?;
                let r = self.b.ins().$f(x, y);
                self.stack.push(r);
            }};
        }
        macro_rules! un {
            ($f:ident) => {{
                let x = self.pop()?;
                let r = self.b.ins().$f(x);
                self.stack.push(r);
            }};
        }
        match ins {
            I::Nop => {}
            I::Unreachable => return Ok(false),
            I::Const(v) => {
                let ty = self.result_type(i)?;
                let c = match ty {
                    types::I32 => self.b.ins().iconst(types::I32, v as i32 as i64),
                    types::F32 => self.b.ins().f32const(f32::from_bits(v as u32)),
                    types::F64 => self.b.ins().f64const(f64::from_bits(v)),
                    t => self.b.ins().iconst(t, v as i64),
                };
                self.stack.push(c);
            }
            I::Ld(s) => {
                let v = self.use_var(s);
                self.stack.push(v);
            }
            I::St(s) => {
                let v = self.pop()?;
                self.def_var(s, v);
            }
            I::StU8(s) => {
                let v = self.pop()?;
                let v = self.b.ins().band_imm_s(v, 0xFF);
                self.def_var(s, v);
            }
            I::StBool(s) => {
                let v = self.pop()?;
                let v = env::bool_of(&mut self.b, v);
                self.def_var(s, v);
            }
            I::Dup => {
                let v = *self.stack.last().ok_or("dup on an empty stack")?;
                self.stack.push(v);
            }
            I::Pop => {
                self.pop()?;
            }
            I::AddI32 | I::AddI64 => bin!(iadd),
            I::SubI32 | I::SubI64 => bin!(isub),
            I::MulI32 | I::MulI64 => bin!(imul),
            I::DivI32 | I::RemI32 | I::DivI64 | I::RemI64 => {
                let y = self.pop()?;
                let x = self.pop()?;
                let w64 = matches!(ins, I::DivI64 | I::RemI64);
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                self.fault_if(zero, i, fc::DIV_ZERO, None, None);
                let min = if w64 { i64::MIN } else { i32::MIN as i64 };
                let xm = self.b.ins().icmp_imm_s(IntCC::Equal, x, min);
                let ym = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                let ov = self.b.ins().band(xm, ym);
                let code = if w64 {
                    fc::DIV_OVERFLOW64
                } else {
                    fc::DIV_OVERFLOW32
                };
                self.fault_if(ov, i, code, None, None);
                let r = if matches!(ins, I::DivI32 | I::DivI64) {
                    self.b.ins().sdiv(x, y)
                } else {
                    self.b.ins().srem(x, y)
                };
                self.stack.push(r);
            }
            I::DivUnI32 | I::RemUnI32 | I::DivUnI64 | I::RemUnI64 => {
                let y = self.pop()?;
                let x = self.pop()?;
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                self.fault_if(zero, i, fc::DIV_ZERO, None, None);
                let r = if matches!(ins, I::DivUnI32 | I::DivUnI64) {
                    self.b.ins().udiv(x, y)
                } else {
                    self.b.ins().urem(x, y)
                };
                self.stack.push(r);
            }
            I::NegI32 | I::NegI64 => un!(ineg),
            I::AddF32 | I::AddF64 => bin!(fadd),
            I::SubF32 | I::SubF64 => bin!(fsub),
            I::MulF32 | I::MulF64 => bin!(fmul),
            I::DivF32 | I::DivF64 => bin!(fdiv),
            I::RemF32 | I::RemF64 => {
                let y = self.pop()?;
                let x = self.pop()?;
                let h = if matches!(ins, I::RemF32) {
                    Helper::Fmod32
                } else {
                    Helper::Fmod64
                };
                let r = self
                    .env
                    .call_helper(&mut self.b, h, &[x, y])
                    .expect("result");
                self.stack.push(r);
            }
            I::NegF32 | I::NegF64 => un!(fneg),
            I::And => bin!(band),
            I::Or => bin!(bor),
            I::Xor => bin!(bxor),
            I::Not => un!(bnot),
            I::ShlI32 | I::ShlI64 => bin!(ishl),
            I::ShrI32 | I::ShrI64 => bin!(sshr),
            I::ShrUnI32 | I::ShrUnI64 => bin!(ushr),
            I::Cmp(c) => {
                let y = self.pop()?;
                let x = self.pop()?;
                let r = self.compare(c, x, y);
                let r = self.b.ins().uextend(types::I32, r);
                self.stack.push(r);
            }
            I::Conv(src, op) => {
                let v = self.pop()?;
                let r = self.conv(src, op, v, i)?;
                self.stack.push(r);
            }
            I::Br(t) => {
                let blk = self.block_at(t as usize)?;
                self.back_edge_poll(i, t as usize)?;
                let args = self.stack_args();
                self.b.ins().jump(blk, &args);
                return Ok(false);
            }
            I::Brtrue(t) | I::Brfalse(t) | I::BrCmp(_, t) => {
                self.back_edge_poll(i, t as usize)?;
                let cond = match ins {
                    I::BrCmp(c, _) => {
                        let y = self.pop()?;
                        let x = self.pop()?;
                        self.compare(c, x, y)
                    }
                    _ => self.pop()?,
                };
                let taken = self.block_at(t as usize)?;
                let next = self.block_at(i + 1)?;
                let args = self.stack_args();
                if matches!(ins, I::Brfalse(_)) {
                    self.b.ins().brif(cond, next, &args, taken, &args);
                } else {
                    self.b.ins().brif(cond, taken, &args, next, &args);
                }
                return Ok(false);
            }
            I::Switch { start, len } => {
                let back = (start..start + len)
                    .map(|k| self.code.switch_targets[k as usize] as usize)
                    .min()
                    .unwrap_or(usize::MAX);
                self.back_edge_poll(i, back)?;
                let v = self.pop()?;
                let args = self.stack_args();
                let next = self.block_at(i + 1)?;
                let mut calls = Vec::with_capacity(len as usize);
                for k in start..start + len {
                    let tb = self.block_at(self.code.switch_targets[k as usize] as usize)?;
                    calls.push(BlockCall::new(
                        tb,
                        args.iter().copied(),
                        &mut self.b.func.dfg.value_lists,
                    ));
                }
                let def =
                    BlockCall::new(next, args.iter().copied(), &mut self.b.func.dfg.value_lists);
                let jt = self.b.create_jump_table(JumpTableData::new(def, &calls));
                self.b.ins().br_table(v, jt);
                return Ok(false);
            }
            I::Ret(k) => {
                let v = self.pop()?;
                let v = match k {
                    Kind::Bool | Kind::ABool => env::bool_of(&mut self.b, v),
                    Kind::U8 | Kind::AU8 => self.b.ins().band_imm_s(v, 0xFF),
                    _ => v,
                };
                if Some(self.b.func.dfg.value_type(v)) != self.ret_ty {
                    return Err(JitError::Lowering(format!(
                        "ret at {i}: the value's type is not the result type"
                    )));
                }
                self.free_eh();
                self.env.pop_frame(&mut self.b);
                self.b.ins().return_(&[v]);
                return Ok(false);
            }
            I::RetVoid => {
                self.free_eh();
                self.env.pop_frame(&mut self.b);
                self.return_zero();
                return Ok(false);
            }
            I::Call { mh, .. } if crate::ir::intrinsic(mh).is_some() => {
                // One instruction, no call, no safepoint (these natives
                // neither allocate nor throw), with the native's result bit
                // for bit (`ir::Intrinsic`).
                let ins = crate::ir::intrinsic(mh).ok_or("intrinsic")?;
                let r = match ins {
                    Intrinsic::Copysign => {
                        let y = self.pop()?;
                        let x = self.pop()?;
                        self.b.ins().fcopysign(x, y)
                    }
                    Intrinsic::Sqrt => {
                        let x = self.pop()?;
                        self.b.ins().sqrt(x)
                    }
                    Intrinsic::Floor => {
                        let x = self.pop()?;
                        self.b.ins().floor(x)
                    }
                    Intrinsic::Ceil => {
                        let x = self.pop()?;
                        self.b.ins().ceil(x)
                    }
                    Intrinsic::Trunc => {
                        let x = self.pop()?;
                        self.b.ins().trunc(x)
                    }
                    Intrinsic::Nearest => {
                        let x = self.pop()?;
                        self.b.ins().nearest(x)
                    }
                    Intrinsic::Abs => {
                        let x = self.pop()?;
                        self.b.ins().fabs(x)
                    }
                };
                self.stack.push(r);
            }
            I::Call {
                mh,
                nargs,
                ret,
                this,
            } => {
                let args = self.pop_n(nargs as usize)?;
                if this && self.nonnull.insert(args[0]) {
                    let c = self.b.ins().icmp_imm_s(IntCC::Equal, args[0], 0);
                    let m = self.env.ptr_const(&mut self.b, mh as usize);
                    self.fault_if(c, i, fc::NULL_RECEIVER, Some(m), None);
                }
                self.emit_call(i, i as u64, Callee::Known(mh), &args, ret)?;
            }
            I::CallVirt { slot, nargs, ret } => {
                let args = self.pop_n(nargs as usize)?;
                self.null_check(args[0], i, "callvirt receiver");
                let callee = self.env.vtable_method(&mut self.b, args[0], slot);
                self.emit_call(i, i as u64, Callee::Loaded(callee), &args, ret)?;
            }
            I::CallIface {
                iface,
                idx,
                nargs,
                ret,
            } => {
                let args = self.pop_n(nargs as usize)?;
                self.null_check(args[0], i, "callvirt receiver");
                // Branches to cold faults instead of selects: a class that
                // does not implement the interface is the rare case.
                let (cd, ok) = self.env.iface_in_range(&mut self.b, args[0], iface);
                let out = self.b.ins().icmp_imm_s(IntCC::Equal, ok, 0);
                self.fault_if(out, i, fc::NOT_IMPLEMENTED, None, None);
                let row = self.env.iface_row(&mut self.b, cd, iface);
                let none = self.b.ins().icmp_imm_s(IntCC::Equal, row, 0);
                self.fault_if(none, i, fc::NOT_IMPLEMENTED, None, None);
                let meta = self.env.mf.meta;
                let callee = self.b.ins().load(PTR, meta, row, idx as i32 * 8);
                self.emit_call(i, i as u64, Callee::Loaded(callee), &args, ret)?;
            }
            I::Newobj { mh, nargs } => {
                let args = self.pop_n(nargs as usize)?;
                // SAFETY: `mh` is a live handle of the runtime's tables.
                let class = unsafe { (*mh).class };
                let t = self.env.thread;
                let cv = self.env.ptr_const(&mut self.b, class as usize);
                let mut before = self.stack.clone();
                before.extend_from_slice(&args);
                let refs = self.stack_refs_at(i);
                // SAFETY: a live handle's class descriptor, in the tables.
                let fast = self.env.inline_alloc_class(unsafe { &*class });
                let mut join = None;
                if let Some(c) = fast {
                    // Read every reference variable here, where it dominates
                    // both paths, so the slow path's safepoint caches no
                    // value the join does not see.
                    for s in self.ref_vars.clone() {
                        self.use_var(s);
                    }
                    // Many references the frame does not hold yet: store
                    // them here, on both paths, so the slow path's
                    // safepoint does not store them again at every
                    // allocation of a long run (that would be quadratic);
                    // a few are left to the slow path, keeping the inline
                    // path free of stores.
                    if refs.len() == before.len() {
                        let live = self.live_refs(&before, &refs);
                        self.env.store_if_many_unknown(&mut self.b, &live);
                    }
                    let head = self.env.alloc_cache_head(&mut self.b, c);
                    let hit = self.b.create_block();
                    let miss = self.b.create_block();
                    let j = self.b.create_block();
                    let jv = self.b.append_block_param(j, PTR);
                    self.b.set_cold_block(miss);
                    self.b.ins().brif(head, hit, &[], miss, &[]);
                    self.b.seal_block(hit);
                    self.b.seal_block(miss);
                    self.b.switch_to_block(hit);
                    // SAFETY: as above.
                    self.env
                        .alloc_from_cache(&mut self.b, c, head, unsafe { &*class });
                    self.b.ins().jump(j, &[BlockArg::Value(head)]);
                    self.b.switch_to_block(miss);
                    // The slow path's safepoint stores; the inline path
                    // does not: at the join only what both know holds.
                    join = Some((j, jv, self.env.known_stores()));
                }
                self.safepoint(i as u64, SafepointKind::Alloc, &before, &refs)?;
                let mut obj = self
                    .env
                    .call_helper(&mut self.b, Helper::NewObject, &[t, cv])
                    .expect("result");
                self.env.after_site(&mut self.b);
                let failed = self.b.ins().icmp_imm_s(IntCC::Equal, obj, 0);
                self.branch_exc_if(failed, i);
                if let Some((j, jv, inline_known)) = join {
                    self.b.ins().jump(j, &[BlockArg::Value(obj)]);
                    self.b.seal_block(j);
                    self.b.switch_to_block(j);
                    self.env.meet_stores(&inline_known);
                    obj = jv;
                }
                let mut all = vec![obj];
                all.extend(args);
                self.emit_call(
                    i,
                    i as u64 | frame::POS_CTOR,
                    Callee::Known(mh),
                    &all,
                    false,
                )?;
                self.nonnull.insert(obj);
                self.stack.push(obj);
            }
            I::Ldfld(off, k) => {
                let o = self.pop()?;
                self.null_check(o, i, "ldfld");
                let ty = self.result_type(i)?;
                let mf = self.env.region(&mut self.b, Region::Field(off));
                let v = self.env.load_kind(&mut self.b, k, o, off as i32, ty, mf);
                self.stack.push(v);
            }
            I::Stfld(off, k) => {
                let v = self.pop()?;
                let o = self.pop()?;
                self.null_check(o, i, "stfld");
                let mf = self.env.region(&mut self.b, Region::Field(off));
                self.env.store_kind(&mut self.b, k, o, off as i32, v, mf);
            }
            I::Ldsfld(addr, k) => {
                let ty = self.result_type(i)?;
                let a = self.env.ptr_const(&mut self.b, addr as usize);
                let mf = self.env.region(&mut self.b, Region::Static(addr as usize));
                let v = self.env.load_kind(&mut self.b, k, a, 0, ty, mf);
                self.stack.push(v);
            }
            I::Stsfld(addr, k) => {
                let v = self.pop()?;
                let a = self.env.ptr_const(&mut self.b, addr as usize);
                let mf = self.env.region(&mut self.b, Region::Static(addr as usize));
                self.env.store_kind(&mut self.b, k, a, 0, v, mf);
            }
            I::Isinst(cd) => {
                let o = self.pop()?;
                let nonnull = self.b.create_block();
                let join = self.b.create_block();
                let r = self.b.append_block_param(join, PTR);
                self.b
                    .ins()
                    .brif(o, nonnull, &[], join, &[BlockArg::Value(o)]);
                self.b.switch_to_block(nonnull);
                // SAFETY: `cd` is a live descriptor of the runtime's tables.
                let is = self.env.instance_of(&mut self.b, o, unsafe { &*cd });
                let z = self.b.ins().iconst(PTR, 0);
                let v = self.b.ins().select(is, o, z);
                self.b.ins().jump(join, &[BlockArg::Value(v)]);
                self.b.switch_to_block(join);
                self.stack.push(r);
            }
            I::Castclass(cd) => {
                let o = *self.stack.last().ok_or("castclass on an empty stack")?;
                let check = self.b.create_block();
                let fail = self.b.create_block();
                let cont = self.b.create_block();
                self.b.set_cold_block(fail);
                self.b.ins().brif(o, check, &[], cont, &[]);
                self.b.switch_to_block(check);
                // SAFETY: `cd` is a live descriptor of the runtime's tables.
                let is = self.env.instance_of(&mut self.b, o, unsafe { &*cd });
                self.b.ins().brif(is, cont, &[], fail, &[]);
                self.b.switch_to_block(fail);
                let cv = self.env.ptr_const(&mut self.b, cd as usize);
                self.env.raise(&mut self.b, fc::BAD_CAST, o, cv);
                let (tb, targs) = self.exc_target(i);
                self.b.ins().jump(tb, &targs);
                self.b.switch_to_block(cont);
            }
            I::Newarr(cd) => {
                let n = self.pop()?;
                let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, n, 0);
                let n64 = self.b.ins().sextend(types::I64, n);
                self.fault_if(neg, i, fc::NEGATIVE_LENGTH, Some(n64), None);
                let t = self.env.thread;
                let cv = self.env.ptr_const(&mut self.b, cd as usize);
                let mut before = self.stack.clone();
                before.push(n);
                let refs = self.stack_refs_at(i);
                self.safepoint(i as u64, SafepointKind::Alloc, &before, &refs)?;
                let a = self
                    .env
                    .call_helper(&mut self.b, Helper::NewArray, &[t, cv, n64])
                    .expect("result");
                self.env.after_site(&mut self.b);
                let failed = self.b.ins().icmp_imm_s(IntCC::Equal, a, 0);
                self.branch_exc_if(failed, i);
                self.stack.push(a);
            }
            I::Ldlen => {
                let a = self.pop()?;
                self.null_check(a, i, "ldlen");
                let inv = self.fresh_vals.contains(&a);
                let n = self.env.array_len(&mut self.b, a, inv);
                self.stack.push(n);
            }
            I::Ldelem(k, size) => {
                let idx = self.pop()?;
                let a = self.pop()?;
                self.null_check(a, i, "ldelem");
                self.bounds_check(a, idx, i);
                let ty = self.result_type(i)?;
                let p = self.env.elem_addr(&mut self.b, a, idx, size);
                let mf = self.env.mf.elem;
                let v = self.env.load_kind(&mut self.b, k, p, 0, ty, mf);
                self.stack.push(v);
            }
            I::Stelem(k, size) => {
                let v = self.pop()?;
                let idx = self.pop()?;
                let a = self.pop()?;
                self.null_check(a, i, "stelem");
                self.bounds_check(a, idx, i);
                let p = self.env.elem_addr(&mut self.b, a, idx, size);
                let mf = self.env.mf.elem;
                self.env.store_kind(&mut self.b, k, p, 0, v, mf);
            }
            I::Atomic { op, kind, off } => {
                let nv = match op {
                    crate::ir::AOp::Load => 0,
                    crate::ir::AOp::Cas => 2,
                    _ => 1,
                };
                let vals = self.pop_n(nv)?;
                let o = self.pop()?;
                self.null_check(o, i, "atomic field access");
                self.atomic(i, op, kind, o, off as i32, &vals)?;
            }
            I::AtomicS { op, kind, addr } => {
                let nv = match op {
                    crate::ir::AOp::Load => 0,
                    crate::ir::AOp::Cas => 2,
                    _ => 1,
                };
                let vals = self.pop_n(nv)?;
                let a = self.env.ptr_const(&mut self.b, addr as usize);
                self.atomic(i, op, kind, a, 0, &vals)?;
            }
            I::Throw => {
                let e = self.pop()?;
                let t = self.env.thread;
                self.env.call_helper(&mut self.b, Helper::Throw, &[t, e]);
                let (tb, targs) = self.exc_target(i);
                self.b.ins().jump(tb, &targs);
                return Ok(false);
            }
            I::Rethrow => {
                let (t, m, s) = (self.env.thread, self.env.method, self.eh_slot_addr());
                let at = self.b.ins().iconst(types::I32, i as i64);
                self.env
                    .call_helper(&mut self.b, Helper::EhRethrow, &[t, m, s, at]);
                let (tb, targs) = self.exc_target(i);
                self.b.ins().jump(tb, &targs);
                return Ok(false);
            }
            I::Leave(target) => {
                let Some(goto) = self.goto else {
                    // No protected region in the method (the verifier allows
                    // that): `leave` is a branch that empties the stack.
                    let blk = self.block_at(target as usize)?;
                    self.back_edge_poll(i, target as usize)?;
                    self.stack.clear();
                    self.b.ins().jump(blk, &[]);
                    return Ok(false);
                };
                self.back_edge_poll(i, target as usize)?;
                let (t, m, s) = (self.env.thread, self.env.method, self.eh_slot_addr());
                let from = self.b.ins().iconst(types::I32, i as i64);
                let to = self.b.ins().iconst(types::I32, target as i64);
                let r = self
                    .env
                    .call_helper(&mut self.b, Helper::EhLeave, &[t, m, s, from, to])
                    .expect("result");
                self.b.ins().jump(goto, &[BlockArg::Value(r)]);
                return Ok(false);
            }
            I::Endfinally => {
                let goto = self.goto.ok_or("endfinally in a method without regions")?;
                let (t, m, s) = (self.env.thread, self.env.method, self.eh_slot_addr());
                let at = self.b.ins().iconst(types::I32, i as i64);
                let r = self
                    .env
                    .call_helper(&mut self.b, Helper::EhEndfinally, &[t, m, s, at])
                    .expect("result");
                self.b.ins().jump(goto, &[BlockArg::Value(r)]);
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn free_eh(&mut self) {
        if self.has_regions() {
            let s = self.eh_slot_addr();
            self.env.call_helper(&mut self.b, Helper::EhFree, &[s]);
        }
    }

    fn bounds_check(&mut self, a: Value, idx: Value, at: usize) {
        let inv = self.fresh_vals.contains(&a);
        let len = self.env.array_len(&mut self.b, a, inv);
        let oob = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, idx, len);
        let i64v = self.b.ins().sextend(types::I64, idx);
        let l64 = self.b.ins().uextend(types::I64, len);
        self.fault_if(oob, at, fc::INDEX, Some(i64v), Some(l64));
    }

    /// Call `callee`, check for an exception, push the result.
    ///
    /// Compiled code calls compiled code through its register-argument
    /// entry (`MethodHandle::fast`): directly (a constant address) when the
    /// callee was compiled before this method, and for calls to itself;
    /// through the word when it may be compiled later or is chosen at run
    /// time (virtual, interface), falling back to the slot while it is 0.
    /// Natives, interpreted and abstract methods are called through the slot.
    /// `pos` is the safepoint position of the call: `at`, or `at | POS_CTOR`
    /// for a `newobj`'s constructor call (whose `args` start with the new object).
    fn emit_call(
        &mut self,
        at: usize,
        pos: u64,
        callee: Callee,
        args: &[Value],
        ret: bool,
    ) -> Result<(), JitError> {
        let ret_ty = if ret {
            Some(self.result_type(at)?)
        } else {
            None
        };
        // The register entry is only sound if caller and callee agree on
        // every CLIF type; the verifier makes them (exact primitive types,
        // identical override signatures): a disagreement is an internal error.
        let arg_tys: Vec<Type> = args
            .iter()
            .map(|&a| self.b.func.dfg.value_type(a))
            .collect();
        let via = match callee {
            Callee::Known(mh) => {
                let rt = self.rt.ok_or("no runtime")?;
                // SAFETY: `mh` is a live handle of the runtime's tables.
                let m = unsafe { &*mh };
                if fast_types(rt, m) != (arg_tys, ret_ty) {
                    return Err(JitError::Lowering(format!(
                        "call at {at}: arguments disagree with the callee's signature"
                    )));
                }
                let fast = m.fast.load(Ordering::Acquire);
                if self.mh.is_some_and(|me| std::ptr::eq(me, m)) {
                    Via::Fast(self.env.load_own_fast(&mut self.b))
                } else if fast != 0 {
                    Via::Fast(self.env.ptr_const(&mut self.b, fast))
                } else {
                    let v = self.env.ptr_const(&mut self.b, mh as usize);
                    if m.entry.load(Ordering::Acquire)
                        == super::jit_compile_stub as *const () as usize
                    {
                        Via::Check(v)
                    } else {
                        Via::Slot(v)
                    }
                }
            }
            Callee::Loaded(v) => {
                let tys = self.stack_types(at).unwrap_or_default();
                if tys.len() < args.len() || tys[tys.len() - args.len()..] != arg_tys[..] {
                    return Err(JitError::Lowering(format!(
                        "call at {at}: arguments disagree with the verifier"
                    )));
                }
                Via::Check(v)
            }
        };
        // The collector's view during the call: the stack before `at` (for a
        // constructor call, the new object below the constructor's arguments).
        let mut view = self.stack.clone();
        view.extend_from_slice(args);
        let mut refs = self.stack_refs_at(at);
        if pos & frame::POS_CTOR != 0 {
            refs.insert(self.stack.len(), true);
        }
        self.safepoint(pos, SafepointKind::Call, &view, &refs)?;
        let r = match via {
            Via::Fast(f) => self.env.call_fast(&mut self.b, f, args, ret_ty),
            Via::Slot(mh) => self.slot_call(mh, args, ret_ty),
            Via::Check(mh) => {
                let f = self.env.load_fast(&mut self.b, mh);
                let fast = self.b.create_block();
                let slow = self.b.create_block();
                let join = self.b.create_block();
                let jv = ret_ty.map(|t| self.b.append_block_param(join, t));
                self.b.set_cold_block(slow);
                self.b.ins().brif(f, fast, &[], slow, &[]);
                self.b.seal_block(fast);
                self.b.seal_block(slow);
                self.b.switch_to_block(fast);
                let r = self.env.call_fast(&mut self.b, f, args, ret_ty);
                let ja: Vec<BlockArg> = r.into_iter().map(BlockArg::Value).collect();
                self.b.ins().jump(join, &ja);
                self.b.switch_to_block(slow);
                let r = self.slot_call(mh, args, ret_ty);
                let ja: Vec<BlockArg> = r.into_iter().map(BlockArg::Value).collect();
                self.b.ins().jump(join, &ja);
                self.b.seal_block(join);
                self.b.switch_to_block(join);
                jv
            }
        };
        self.env.after_site(&mut self.b);
        self.check_pending(at);
        if let Some(v) = r {
            self.stack.push(v);
        }
        Ok(())
    }

    /// Call method `mh` through its slot: the arguments in the outgoing
    /// area, the result decoded from its 64-bit slot encoding.
    fn slot_call(&mut self, mh: Value, args: &[Value], ret_ty: Option<Type>) -> Option<Value> {
        for (k, &a) in args.iter().enumerate() {
            self.env.store_arg(&mut self.b, k, a);
        }
        let r = self.env.call_slot(&mut self.b, mh);
        ret_ty.map(|t| from_slot(&mut self.b, r, t))
    }

    /// Return from the method with zero of its result type (an exception
    /// is pending, or the method is `void`).
    fn return_zero(&mut self) {
        match self.ret_ty {
            Some(t) => {
                let z = self.zero(t);
                self.b.ins().return_(&[z]);
            }
            None => {
                self.b.ins().return_(&[]);
            }
        }
    }

    fn atomic(
        &mut self,
        at: usize,
        op: crate::ir::AOp,
        kind: Kind,
        base: Value,
        off: i32,
        vals: &[Value],
    ) -> Result<(), JitError> {
        use crate::ir::AOp;
        match op {
            AOp::Load => {
                let ty = self.result_type(at)?;
                let k = atomic_kind(kind);
                let v = self
                    .env
                    .load_kind(&mut self.b, k, base, off, ty, env::trusted());
                self.stack.push(v);
            }
            AOp::Store => {
                self.env.store_kind(
                    &mut self.b,
                    atomic_kind(kind),
                    base,
                    off,
                    vals[0],
                    env::trusted(),
                );
            }
            AOp::Add => {
                let v = self.env.atomic_add(&mut self.b, kind, base, off, vals[0]);
                self.stack.push(v);
            }
            AOp::Cas => {
                let v = self
                    .env
                    .atomic_cas(&mut self.b, kind, base, off, vals[0], vals[1]);
                self.stack.push(v);
            }
        }
        Ok(())
    }

    /// A comparison as an `i8` truth value (the interpreter's `cmp`).
    fn compare(&mut self, c: Cmp, x: Value, y: Value) -> Value {
        use Cmp::*;
        let ins = self.b.ins();
        let icc = match c {
            Eq => Some(IntCC::Equal),
            Ne => Some(IntCC::NotEqual),
            Lt => Some(IntCC::SignedLessThan),
            Le => Some(IntCC::SignedLessThanOrEqual),
            Gt => Some(IntCC::SignedGreaterThan),
            Ge => Some(IntCC::SignedGreaterThanOrEqual),
            LtUn32 | LtUn64 => Some(IntCC::UnsignedLessThan),
            LeUn32 | LeUn64 => Some(IntCC::UnsignedLessThanOrEqual),
            GtUn32 | GtUn64 => Some(IntCC::UnsignedGreaterThan),
            GeUn32 | GeUn64 => Some(IntCC::UnsignedGreaterThanOrEqual),
            _ => None,
        };
        if let Some(cc) = icc {
            return ins.icmp(cc, x, y);
        }
        let fcc = match c {
            EqF32 | EqF64 => FloatCC::Equal,
            NeF32 | NeF64 => FloatCC::NotEqual, // unordered or not equal: true with NaN
            LtF32 | LtF64 => FloatCC::LessThan,
            LeF32 | LeF64 => FloatCC::LessThanOrEqual,
            GtF32 | GtF64 => FloatCC::GreaterThan,
            GeF32 | GeF64 => FloatCC::GreaterThanOrEqual,
            LtUnF32 | LtUnF64 => FloatCC::UnorderedOrLessThan,
            LeUnF32 | LeUnF64 => FloatCC::UnorderedOrLessThanOrEqual,
            GtUnF32 | GtUnF64 => FloatCC::UnorderedOrGreaterThan,
            _ => FloatCC::UnorderedOrGreaterThanOrEqual,
        };
        ins.fcmp(fcc, x, y)
    }

    /// `conv.*` (the interpreter's `conv`).
    fn conv(&mut self, src: Src, op: Op, v: Value, at: usize) -> Result<Value, JitError> {
        use types::{F32, F64, I32, I64};
        let b = &mut self.b;
        let float = matches!(src, Src::F32 | Src::F64);
        Ok(match op {
            Op::ConvI32 => match src {
                Src::I32 => v,
                Src::I64 => b.ins().ireduce(I32, v),
                _ => b.ins().fcvt_to_sint_sat(I32, v),
            },
            Op::ConvI64 => match src {
                Src::I32 => b.ins().sextend(I64, v),
                Src::I64 => v,
                _ => b.ins().fcvt_to_sint_sat(I64, v),
            },
            Op::ConvU64 => match src {
                Src::I32 => b.ins().uextend(I64, v),
                Src::I64 => v,
                _ => b.ins().fcvt_to_uint_sat(I64, v),
            },
            Op::ConvU8 => {
                if float {
                    // `f as u8`: saturate to 0..=255, NaN → 0
                    let s = b.ins().fcvt_to_sint_sat(I32, v);
                    let lo = b.ins().iconst(I32, 0);
                    let hi = b.ins().iconst(I32, 255);
                    let s = b.ins().smax(s, lo);
                    b.ins().smin(s, hi)
                } else {
                    let n = if src == Src::I64 {
                        b.ins().ireduce(I32, v)
                    } else {
                        v
                    };
                    b.ins().band_imm_s(n, 0xFF)
                }
            }
            Op::ConvBool => {
                let c = if float {
                    let z = if src == Src::F32 {
                        b.ins().f32const(0.0)
                    } else {
                        b.ins().f64const(0.0)
                    };
                    b.ins().fcmp(FloatCC::NotEqual, v, z) // NaN → true
                } else {
                    b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
                };
                b.ins().uextend(I32, c)
            }
            Op::ConvChar => {
                let n = match src {
                    Src::I32 => b.ins().uextend(I64, v),
                    Src::I64 => v,
                    _ => b.ins().fcvt_to_sint_sat(I64, v),
                };
                // scalar: n < 0xD800 || n - 0xE000 < 0x10_2000 (unsigned)
                let low = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, n, 0xD800);
                let d = b.ins().iadd_imm_s(n, -0xE000);
                let high = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, d, 0x10_2000);
                let ok = b.ins().bor(low, high);
                let bad = b.ins().bxor_imm_s(ok, 1);
                self.fault_if(bad, at, fc::CONV_CHAR, Some(n), None);
                self.b.ins().ireduce(I32, n)
            }
            Op::ConvF32 => match src {
                Src::I32 | Src::I64 => b.ins().fcvt_from_sint(F32, v),
                Src::F32 => v,
                Src::F64 => b.ins().fdemote(F32, v),
            },
            Op::ConvF32Un => match src {
                Src::I32 | Src::I64 => b.ins().fcvt_from_uint(F32, v),
                Src::F32 => v,
                Src::F64 => b.ins().fdemote(F32, v),
            },
            Op::ConvF64 => match src {
                Src::I32 | Src::I64 => b.ins().fcvt_from_sint(F64, v),
                Src::F32 => b.ins().fpromote(F64, v),
                Src::F64 => v,
            },
            Op::ConvF64Un => match src {
                Src::I32 | Src::I64 => b.ins().fcvt_from_uint(F64, v),
                Src::F32 => b.ins().fpromote(F64, v),
                Src::F64 => v,
            },
            _ => return Err(JitError::Lowering(format!("unexpected conversion {op}"))),
        })
    }
}

/// `atomic.load`/`atomic.store` on a field always use atomic accesses.
fn atomic_kind(k: Kind) -> Kind {
    match k {
        Kind::Bool => Kind::ABool,
        Kind::U8 => Kind::AU8,
        Kind::W64 => Kind::AW64,
        k => k,
    }
}
