//! The interpreter (tier 0): runs the resolved code of a method
//! ([`crate::ir::Code`], built once at load by `runtime::resolve` from the
//! verifier's output, shared with the JIT). The hot loop does no hashing and
//! no name lookups: calls carry the callee's `*const MethodHandle` or its
//! vtable / interface slot, fields are byte offsets, `ldstr` carries the
//! interned string object.
//!
//! Frames live on the thread's value stack as frame records
//! (`vm::FrameHeader`, word indices in `vm::frame`): a header (method,
//! safepoint position, size, exception state) and contiguous 64-bit slots
//! `[args | locals | evaluation stack | 1 scratch slot]` (the layout of the
//! method's `StackHandle`s), locals zeroed. Before anything that can collect
//! (calls, allocations, polls at method entry and taken backward branches)
//! the loop writes the instruction index into the header; values stay in
//! their slots, so the collector reads references from the verifier's
//! stack types at that index (`Code::stack_ref_slots`). Value representation in a slot:
//! `i32` (and `bool`/`u8`/`char`) sign-extended to 64 bits, `f32` bits in the
//! low 32, `f64` bits, references and pointers as addresses.
//!
//! The loop runs `Code::xs`, the interpreter's executable form
//! ([`crate::ir::X`], built by `ir::fuse`): the instructions of
//! [`crate::ir::I`] in one flat enum (one jump per instruction), plus
//! superinstructions for common short sequences (`ldloc; ldloc; add;
//! stloc`, `ldloc; ldc; blt`, `ldloc; ldfld`, ...), forms specialised by
//! kind (`i32`/8-byte fields and elements, `blt`/`bge` on locals) and
//! `Std::sqrt` as an instruction. Indices are those of `insns` (which the
//! JIT translates), so positions, regions and stack maps are unchanged;
//! `ir::fuse`'s module documentation gives the invariants.
//!
//! Calls go through the callee's method slot ([`crate::vm::thread::call_method`]);
//! [`interp_entry`] is the slot of interpreted methods. A call of a method
//! whose slot is `interp_entry` skips the slot and the adapter's
//! `catch_unwind` and runs the callee's frame directly (`run`); a panic then
//! unwinds to the outermost adapter, which restores `vs_top` and reports
//! it. Exceptions follow the
//! runtime's pending-exception protocol; `.try`/`catch`/`finally`, `leave`,
//! `endfinally`, `throw` and `rethrow` are handled here per frame.
//!
//! Safety argument: the code only runs after verification, so stack depths
//! stay within `max_stack`, operand types match their specialised
//! instruction, variable indices are in range and branch targets are
//! instruction starts. Everything that depends on run-time values (null
//! references, indices, divisors, casts) is checked here.

use crate::ir::eh::{backward_handler, dispatch, endfinally, leave, AfterFinally};
use crate::ir::fuse::X;
use crate::ir::value::{atomic_op, cmp, conv, load, store};
use crate::ir::{AOp, Code, EhState, Kind};
use crate::runtime::Runtime;
use crate::safepoint;
use crate::vm::fault::{Fault, FaultKind};
use crate::vm::object::{array_len, class_of, ARRAY_DATA_OFFSET};
use crate::vm::tables::MethodHandle;
use crate::vm::thread::frame::{self, HEADER_SLOTS};
use crate::vm::thread::{approx_sp, call_method, ThreadCtx};
use std::sync::atomic::Ordering;

/// The slot of interpreted methods ([`crate::vm::tables::EntryFn`]).
///
/// # Safety
/// Called only through a method slot: `thread` is the current thread's live
/// context, `mh` a live handle of an interpreted method with pre-decoded code,
/// and `args` holds its `arg_count` argument slots.
pub unsafe extern "C" fn interp_entry(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    args: *const u64,
) -> u64 {
    // SAFETY: the thread context is live (contract).
    let saved_top = unsafe { (*thread).vs_top };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: per this function's contract.
        unsafe { run(&mut *thread, &*mh, args) }
    }));
    match r {
        Ok(v) => v,
        Err(_) => {
            // SAFETY: the thread context is live.
            let t = unsafe { &mut *thread };
            // Nested interpreted frames are entered directly (`invoke`), so
            // a panic unwinds all of them to here: drop their records.
            t.vs_top = saved_top;
            t.raise(Fault::new(
                FaultKind::Exception,
                "internal error in the interpreter",
            ));
            t.trace.push(mh);
            0
        }
    }
}

/// Call `callee` with the argument slots at `args`: an interpreted callee
/// is run directly (no slot call, no `catch_unwind` per frame: a panic
/// unwinds to the outermost [`interp_entry`], which reports it), anything
/// else goes through its method slot.
///
/// # Safety
/// As [`call_method`]: `t` is this thread's live context, `callee` a live
/// handle and `args` holds its argument slots.
#[inline(always)]
unsafe fn invoke(t: &mut ThreadCtx, callee: *const MethodHandle, args: *const u64) -> u64 {
    // SAFETY: caller contract; an `interp_entry` slot means the handle has
    // pre-decoded code (installed by `prepare` before any slot is used), which
    // `run` loads with Acquire.
    unsafe {
        if (*callee).entry.load(Ordering::Relaxed) == interp_entry as *const () as usize {
            run(t, &*callee, args)
        } else {
            call_method(t, callee, args)
        }
    }
}

/// Run one interpreted frame.
///
/// # Safety
/// As [`interp_entry`].
unsafe fn run(t: &mut ThreadCtx, mh: &MethodHandle, args: *const u64) -> u64 {
    if approx_sp() < t.stack_limit {
        t.raise(Fault::native_stack_overflow());
        return 0;
    }
    let Some(code) = mh.code() else {
        t.raise(Fault::new(
            FaultKind::Exception,
            "method has no interpreter code",
        ));
        return 0;
    };
    let base = t.vs_top;
    let fs = code.frame_slots as usize;
    if (t.vs_end as usize - base as usize) / 8 < fs + HEADER_SLOTS {
        t.raise(Fault::new(
            FaultKind::StackOverflow,
            "stack overflow: the value stack is exhausted",
        ));
        return 0;
    }
    // SAFETY: the header and `fs` slots from `base` are inside the value
    // stack (checked above); args holds `nargs` slots (contract).
    unsafe {
        *base.add(frame::METHOD) = mh as *const MethodHandle as u64;
        *base.add(frame::POS) = frame::POS_ENTRY;
        *base.add(frame::SIZE) = fs as u64;
        *base.add(frame::EH) = 0;
        let slots = base.add(HEADER_SLOTS);
        let nargs = code.nargs as usize;
        // Frames are small: a `memcpy`/`memset` call costs more than a few
        // moves.
        match nargs {
            0 => {}
            1 => *slots = *args,
            2 => {
                *slots = *args;
                *slots.add(1) = *args.add(1);
            }
            _ => std::ptr::copy_nonoverlapping(args, slots, nargs),
        }
        let nlocals = code.nlocals as usize;
        if nlocals <= 4 {
            for i in 0..nlocals {
                *slots.add(nargs + i) = 0;
            }
        } else {
            std::ptr::write_bytes(slots.add(nargs), 0, nlocals);
        }
        for &(s, k) in &code.narrow_args {
            *slots.add(s as usize) = k.narrow(*slots.add(s as usize));
        }
        t.vs_top = slots.add(fs);
        // Only a method with protected regions ever records a continuation
        // or a caught exception; without regions its (empty) state is not
        // published in the record and needs no drop.
        let mut eh = std::mem::ManuallyDrop::new(EhState::default());
        let has_eh = !code.regions.is_empty();
        if has_eh {
            *base.add(frame::EH) = &mut *eh as *mut EhState as u64;
        }
        let r = exec(t, mh, code, slots, &mut eh);
        if has_eh {
            std::mem::ManuallyDrop::drop(&mut eh);
        }
        t.vs_top = base;
        r
    }
}

/// The interpreter loop of one frame.
///
/// # Safety
/// `base` is a frame of `code.frame_slots` slots holding the arguments and
/// zeroed locals; see the module's safety argument.
#[allow(clippy::cognitive_complexity)]
unsafe fn exec(
    t: &mut ThreadCtx,
    mh: &MethodHandle,
    code: &Code,
    base: *mut u64,
    eh: &mut EhState,
) -> u64 {
    let rt: &Runtime = t.rt();
    // SAFETY: the runtime outlives every thread attached to it and every
    // frame running on one; only the borrow of `t` is detached (so `t` can be
    // passed on mutably), the `Runtime` itself is neither moved nor freed
    // while this frame runs.
    let rt: &Runtime = unsafe { &*(rt as *const Runtime) }; // detach from `t`'s borrow
    let l = base;
    // SAFETY: `base` starts this frame's `frame_slots` = args + locals +
    // max_stack + 1 slots (contract), so `base + args + locals` is in it.
    let s = unsafe { base.add((code.nargs + code.nlocals) as usize) };
    let mut sp = s;
    let xs = code.xs.as_ptr();
    let mut pc: usize = 0;
    // The frame record's header: the safepoint position and the exception state.
    // SAFETY: `run` wrote this frame's record header in the `HEADER_SLOTS`
    // slots just below `base` (inside the value stack); `POS` is one of them.
    let posp = unsafe { base.sub(HEADER_SLOTS).add(frame::POS) };
    // Method-entry poll (the arguments and zeroed locals are in their slots),
    // except in a leaf (see `is_leaf`). An interrupt here is thrown before
    // the first instruction, outside every protected region of this method
    // (as in compiled code).
    if !code.leaf {
        safepoint::poll();
        if t.interrupt_at_entry(mh, true) {
            return 0;
        }
    }

    // Record safepoint position `$p` in the frame record (before anything
    // that can collect) and, for `poll`, poll.
    macro_rules! at {
        ($p:expr) => {{
            let p = $p as u64;
            // SAFETY: `posp` is the position word of this frame's record
            // header (see its definition), live while the frame runs.
            unsafe { *posp = p }
        }};
    }

    macro_rules! pop {
        () => {{
            // SAFETY: every `pop!` consumes an operand that the verifier's
            // stack type at this instruction has, so the depth is at least 1
            // before it: `sp - 1` is at or above `s`, a slot of this frame.
            unsafe {
                sp = sp.sub(1);
                *sp
            }
        }};
    }
    macro_rules! push {
        ($v:expr) => {{
            let v: u64 = $v;
            // SAFETY: the verifier bounds the depth after this push by
            // `max_stack`, and the frame was allocated with `frame_slots` =
            // args + locals + max_stack (+ 1 scratch) slots, so `sp` (depth
            // before the push < max_stack) is a slot of this frame.
            unsafe {
                *sp = v;
                sp = sp.add(1);
            }
        }};
    }
    macro_rules! bin {
        (|$a:ident, $b:ident| $e:expr) => {{
            let $b = pop!();
            // SAFETY: a binary operation has two operands (verifier): after
            // popping `b`, `a` is in the stack slot at `sp - 1` (>= `s`).
            let $a = unsafe { *sp.sub(1) };
            let r = $e;
            // SAFETY: the slot `a` was just read from; the result replaces it.
            unsafe { *sp.sub(1) = r };
        }};
    }
    macro_rules! f32b {
        ($v:expr) => {
            f32::from_bits($v as u32)
        };
    }
    macro_rules! f64b {
        ($v:expr) => {
            f64::from_bits($v)
        };
    }

    'outer: loop {
        // The dispatch loop yields the index of a faulting instruction
        // (with `t.pending` set).
        let at: usize = 'dispatch: loop {
            let cur = pc;
            pc += 1;
            macro_rules! fault {
                ($kind:expr, $($msg:tt)*) => {{
                    t.raise(Fault::new($kind, format!($($msg)*)));
                    break 'dispatch cur;
                }};
            }
            macro_rules! raise {
                ($f:expr) => {{
                    t.raise($f);
                    break 'dispatch cur;
                }};
            }
            // A taken backward branch: poll, then throw a delivered
            // interrupt at this instruction.
            macro_rules! back_edge {
                ($target:expr, $cur:expr) => {
                    if $target as usize <= $cur {
                        at!($cur);
                        safepoint::poll();
                        if t.interrupt.load(Ordering::Relaxed) != 0 {
                            if let Some(f) = t.take_interrupt(true) {
                                raise!(f);
                            }
                        }
                    }
                };
            }
            macro_rules! nonnull {
                ($v:expr, $what:expr) => {{
                    let v: u64 = $v;
                    if v == 0 {
                        raise!(Fault::null_in($what));
                    }
                    v as *mut u8
                }};
            }
            // Field and element accesses (`$k`, `$size`: constants in the
            // specialised forms).
            macro_rules! ldfld {
                ($off:expr, $k:expr) => {{
                    // SAFETY: `ldfld` has its object operand on the stack
                    // (verifier), so `sp - 1` is a slot of this frame.
                    let o = nonnull!(unsafe { *sp.sub(1) }, "ldfld");
                    // SAFETY: `o` is non-null (checked just above by
                    // `nonnull!`) and, as verified, a live object of a class
                    // with this field: `$off` is the field's byte offset and
                    // `$k` its kind (from the field table), so the address is
                    // in the object and aligned for the kind. The result
                    // replaces the operand slot read above.
                    unsafe { *sp.sub(1) = load(o.add($off as usize), $k) };
                }};
            }
            macro_rules! stfld {
                ($off:expr, $k:expr) => {{
                    let v = pop!();
                    let o = nonnull!(pop!(), "stfld");
                    // SAFETY: `o` is non-null (checked just above by
                    // `nonnull!`) and, as verified, a live object of a class
                    // with this field at byte offset `$off` of kind `$k`
                    // (from the field table; `v` verified assignable to it),
                    // so the address is in the object and aligned for the kind.
                    unsafe { store(o.add($off as usize), $k, v) };
                }};
            }
            macro_rules! ldelem {
                ($k:expr, $size:expr) => {{
                    let i = pop!() as i32;
                    // SAFETY: after popping the index, the array operand is
                    // on the stack (verifier): `sp - 1` is a slot of this frame.
                    let a = nonnull!(unsafe { *sp.sub(1) }, "ldelem");
                    // SAFETY: `a` is non-null (checked just above) and
                    // verified to be an array reference, so a live array.
                    let n = unsafe { array_len(a) };
                    if i < 0 || i as u32 >= n {
                        raise!(Fault::index_out_of_range(i, n));
                    }
                    // SAFETY: `0 <= i < array_len` (checked just above) and
                    // the array's elements are `$size`-byte values of kind
                    // `$k` (the verified element type) from
                    // `ARRAY_DATA_OFFSET`, so the element is in the array and
                    // aligned; the result replaces the array operand's slot.
                    unsafe { *sp.sub(1) = load(a.add(ARRAY_DATA_OFFSET + i as usize * $size), $k) };
                }};
            }
            macro_rules! stelem {
                ($k:expr, $size:expr) => {{
                    let v = pop!();
                    let i = pop!() as i32;
                    let a = nonnull!(pop!(), "stelem");
                    // SAFETY: `a` is non-null (checked just above) and
                    // verified to be an array reference, so a live array.
                    let n = unsafe { array_len(a) };
                    if i < 0 || i as u32 >= n {
                        raise!(Fault::index_out_of_range(i, n));
                    }
                    // SAFETY: `0 <= i < array_len` (checked just above) and
                    // the array's elements are `$size`-byte values of kind
                    // `$k` (the verified element type) from
                    // `ARRAY_DATA_OFFSET`, so the element is in the array and
                    // aligned.
                    unsafe { store(a.add(ARRAY_DATA_OFFSET + i as usize * $size), $k, v) };
                }};
            }
            // A fault in part `k` of a fused instruction.
            macro_rules! raise_at {
                ($k:expr, $f:expr) => {{
                    t.raise($f);
                    break 'dispatch cur + $k;
                }};
            }
            // A taken fused branch to `$target` whose operands were `$a`, `$b`
            // (the branch itself is part 2): a backward one writes the
            // operands into their stack slots (the frame then holds the
            // verifier's stack before the branch), records the branch's
            // index and polls.
            macro_rules! fused_jump {
                ($target:expr, $a:expr, $b:expr) => {{
                    let target = $target as usize;
                    if target <= cur + 2 {
                        // SAFETY: the branch (part 2) has these two operands
                        // on the verifier's stack, so the depth before the
                        // sequence plus 2 is within `max_stack`: `sp` and
                        // `sp + 1` are evaluation-stack slots of this frame.
                        unsafe {
                            *sp = $a;
                            *sp.add(1) = $b;
                        }
                        at!(cur + 2);
                        safepoint::poll();
                        if t.interrupt.load(Ordering::Relaxed) != 0 {
                            if let Some(f) = t.take_interrupt(true) {
                                raise_at!(2, f);
                            }
                        }
                    }
                    pc = target;
                }};
            }
            // SAFETY: `cur < xs.len()`: `pc` starts at 0 (a verified body is
            // not empty) and only ever holds instruction indices: the next one
            // after an instruction that falls through (the verifier rejects
            // falling off the end), `cur + n` after a fused sequence of `n`
            // (`fuse`), or a verified branch, `switch`, `leave`, handler or
            // `endfinally` target. (Matched in place, as `*xs.add(cur)`.)
            match *unsafe { &*xs.add(cur) } {
                X::SqrtF64 => {
                    // SAFETY: `Std::sqrt` has its `f64` argument on the stack
                    // (verifier): `sp - 1` is a slot of this frame.
                    unsafe { *sp.sub(1) = f64b!(*sp.sub(1)).sqrt().to_bits() };
                    continue 'dispatch;
                }
                X::LdLd(a, b) => {
                    // SAFETY: `a` and `b` are verified variable indices (<
                    // args + locals), so `l + a`, `l + b` are slots of this
                    // frame; the two pushes are within `max_stack` (verified
                    // depth after both `ldloc`s), so `sp`, `sp + 1` are too.
                    unsafe {
                        *sp = *l.add(a as usize);
                        *sp.add(1) = *l.add(b as usize);
                        sp = sp.add(2);
                    }
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::LdFld { a, off, k } => {
                    // SAFETY: `a` is a verified variable index (< args +
                    // locals), so `l + a` is a slot of this frame.
                    let o = unsafe { *l.add(a as usize) };
                    if o == 0 {
                        raise_at!(1, Fault::null_in("ldfld"));
                    }
                    // SAFETY: `o` is non-null (checked just above) and, as
                    // verified, a live object of a class with this field at
                    // byte offset `off` of kind `k` (from the field table),
                    // so the address is in the object and aligned.
                    push!(unsafe { load((o as *const u8).add(off as usize), k) });
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::LdFldW { a, off } => {
                    // SAFETY: `a` is a verified variable index (< args +
                    // locals), so `l + a` is a slot of this frame.
                    let o = unsafe { *l.add(a as usize) };
                    if o == 0 {
                        raise_at!(1, Fault::null_in("ldfld"));
                    }
                    // SAFETY: `o` is non-null (checked just above) and, as
                    // verified, a live object of a class with this field at
                    // byte offset `off` of kind `Kind::W64` (from the field
                    // table), so the address is in the object and aligned.
                    push!(unsafe { load((o as *const u8).add(off as usize), Kind::W64) });
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::AddI32LLSt { a, b, c } => {
                    // SAFETY: `a`, `b`, `c` are verified variable indices (<
                    // args + locals), so `l + a`, `l + b`, `l + c` are slots
                    // of this frame.
                    unsafe {
                        let (va, vb) = (*l.add(a as usize) as i32, *l.add(b as usize) as i32);
                        *l.add(c as usize) = va.wrapping_add(vb) as i64 as u64;
                    }
                    pc = cur + 4;
                    continue 'dispatch;
                }
                X::AddI32LCSt { a, c, k } => {
                    // SAFETY: `a` and `c` are verified variable indices (<
                    // args + locals), so `l + a`, `l + c` are slots of this frame.
                    unsafe {
                        *l.add(c as usize) =
                            (*l.add(a as usize) as i32).wrapping_add(k) as i64 as u64
                    };
                    pc = cur + 4;
                    continue 'dispatch;
                }
                X::BinLL { op, a, b } => {
                    // SAFETY: `a` and `b` are verified variable indices (<
                    // args + locals), so `l + a`, `l + b` are slots of this frame.
                    push!(unsafe {
                        crate::ir::fuse::bin(op, *l.add(a as usize), *l.add(b as usize))
                    });
                    pc = cur + 3;
                    continue 'dispatch;
                }
                X::BinLLSt { op, a, b, c } => {
                    // SAFETY: `a`, `b`, `c` are verified variable indices (<
                    // args + locals), so `l + a`, `l + b`, `l + c` are slots
                    // of this frame.
                    unsafe {
                        *l.add(c as usize) =
                            crate::ir::fuse::bin(op, *l.add(a as usize), *l.add(b as usize))
                    };
                    pc = cur + 4;
                    continue 'dispatch;
                }
                X::BinLC { op, a, k } => {
                    // SAFETY: `a` is a verified variable index (< args +
                    // locals), so `l + a` is a slot of this frame.
                    push!(unsafe { crate::ir::fuse::bin(op, *l.add(a as usize), k) });
                    pc = cur + 3;
                    continue 'dispatch;
                }
                X::BinLCSt { op, a, c, k } => {
                    // SAFETY: `a` and `c` are verified variable indices (<
                    // args + locals), so `l + a`, `l + c` are slots of this frame.
                    unsafe { *l.add(c as usize) = crate::ir::fuse::bin(op, *l.add(a as usize), k) };
                    pc = cur + 4;
                    continue 'dispatch;
                }
                X::BinSL { op, b } => {
                    // SAFETY: the first operand is on the verifier's stack, so
                    // `sp - 1` is a slot of this frame; `b` is a verified
                    // variable index (< args + locals), so `l + b` is one too.
                    unsafe {
                        *sp.sub(1) = crate::ir::fuse::bin(op, *sp.sub(1), *l.add(b as usize))
                    };
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::BinSLSt { op, b, c } => {
                    let a = pop!();
                    // SAFETY: `b` and `c` are verified variable indices (<
                    // args + locals), so `l + b`, `l + c` are slots of this frame.
                    unsafe { *l.add(c as usize) = crate::ir::fuse::bin(op, a, *l.add(b as usize)) };
                    pc = cur + 3;
                    continue 'dispatch;
                }
                X::BinSt { op, c } => {
                    let b = pop!();
                    let a = pop!();
                    // SAFETY: `c` is a verified variable index (< args +
                    // locals), so `l + c` is a slot of this frame.
                    unsafe { *l.add(c as usize) = crate::ir::fuse::bin(op, a, b) };
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::BrLL { c, a, b, t: target } => {
                    // SAFETY: `a` and `b` are verified variable indices (<
                    // args + locals), so `l + a`, `l + b` are slots of this frame.
                    let (va, vb) = unsafe { (*l.add(a as usize), *l.add(b as usize)) };
                    if cmp(c, va, vb) {
                        fused_jump!(target, va, vb);
                    } else {
                        pc = cur + 3;
                    }
                    continue 'dispatch;
                }
                X::BrLtLL { a, b, t: target } => {
                    // SAFETY: `a` and `b` are verified variable indices (<
                    // args + locals), so `l + a`, `l + b` are slots of this frame.
                    let (va, vb) = unsafe { (*l.add(a as usize), *l.add(b as usize)) };
                    if (va as i64) < (vb as i64) {
                        fused_jump!(target, va, vb);
                    } else {
                        pc = cur + 3;
                    }
                    continue 'dispatch;
                }
                X::BrGeLL { a, b, t: target } => {
                    // SAFETY: `a` and `b` are verified variable indices (<
                    // args + locals), so `l + a`, `l + b` are slots of this frame.
                    let (va, vb) = unsafe { (*l.add(a as usize), *l.add(b as usize)) };
                    if (va as i64) >= (vb as i64) {
                        fused_jump!(target, va, vb);
                    } else {
                        pc = cur + 3;
                    }
                    continue 'dispatch;
                }
                X::BrLC { c, a, t: target, k } => {
                    // SAFETY: `a` is a verified variable index (< args +
                    // locals), so `l + a` is a slot of this frame.
                    let va = unsafe { *l.add(a as usize) };
                    if cmp(c, va, k) {
                        fused_jump!(target, va, k);
                    } else {
                        pc = cur + 3;
                    }
                    continue 'dispatch;
                }
                X::LdElemLL { a, i, k, size } => {
                    // SAFETY: `a` and `i` are verified variable indices (<
                    // args + locals), so `l + a`, `l + i` are slots of this frame.
                    let (arr, i) =
                        unsafe { (*l.add(a as usize) as *mut u8, *l.add(i as usize) as i32) };
                    if arr.is_null() {
                        raise_at!(2, Fault::null_in("ldelem"));
                    }
                    // SAFETY: `arr` is non-null (checked just above) and
                    // verified to be an array reference, so a live array.
                    let n = unsafe { array_len(arr) };
                    if i < 0 || i as u32 >= n {
                        raise_at!(2, Fault::index_out_of_range(i, n));
                    }
                    // SAFETY: `0 <= i < array_len` (checked just above) and
                    // the elements are `size`-byte values of kind `k` (the
                    // verified element type) from `ARRAY_DATA_OFFSET`, so the
                    // element is in the array and aligned.
                    push!(unsafe {
                        load(arr.add(ARRAY_DATA_OFFSET + i as usize * size as usize), k)
                    });
                    pc = cur + 3;
                    continue 'dispatch;
                }
                X::Nop => {}
                X::Unreachable => fault!(
                    FaultKind::Exception,
                    "internal error: unreachable instruction executed"
                ),
                X::Const(v) => push!(v),
                // SAFETY: `i` is a verified variable index (< args + locals),
                // so `l + i` is a slot of this frame.
                X::Ld(i) => push!(unsafe { *l.add(i as usize) }),
                X::St(i) => {
                    let v = pop!();
                    // SAFETY: `i` is a verified variable index (< args +
                    // locals), so `l + i` is a slot of this frame.
                    unsafe { *l.add(i as usize) = v }
                }
                X::StU8(i) => {
                    let v = pop!() & 0xFF;
                    // SAFETY: `i` is a verified variable index (< args +
                    // locals), so `l + i` is a slot of this frame.
                    unsafe { *l.add(i as usize) = v }
                }
                X::StBool(i) => {
                    let v = (pop!() as u32 != 0) as u64;
                    // SAFETY: `i` is a verified variable index (< args +
                    // locals), so `l + i` is a slot of this frame.
                    unsafe { *l.add(i as usize) = v }
                }
                X::Dup => {
                    // SAFETY: the operand is on the verifier's stack, so `sp - 1` is a
                    // slot of this frame.
                    let v = unsafe { *sp.sub(1) };
                    push!(v)
                }
                // SAFETY: the operand is on the verifier's stack, so `sp - 1` is a
                // slot of this frame.
                X::Pop => sp = unsafe { sp.sub(1) },
                X::AddI32 => bin!(|a, b| (a as i32).wrapping_add(b as i32) as i64 as u64),
                X::SubI32 => bin!(|a, b| (a as i32).wrapping_sub(b as i32) as i64 as u64),
                X::MulI32 => bin!(|a, b| (a as i32).wrapping_mul(b as i32) as i64 as u64),
                // SAFETY: both operands are on the verifier's stack, so
                // `sp - 2`, `sp - 1` are slots of this frame; the result
                // replaces them (`sp - 1` is then the first operand's slot).
                ins @ (X::DivI32 | X::RemI32) => unsafe {
                    let b = *sp.sub(1) as i32;
                    let a = *sp.sub(2) as i32;
                    if b == 0 {
                        raise!(Fault::div_by_zero());
                    }
                    if a == i32::MIN && b == -1 {
                        raise!(Fault::div_overflow(a));
                    }
                    let r = if matches!(ins, X::DivI32) {
                        a / b
                    } else {
                        a % b
                    };
                    sp = sp.sub(1);
                    *sp.sub(1) = r as i64 as u64;
                },
                // SAFETY: both operands are on the verifier's stack, so
                // `sp - 2`, `sp - 1` are slots of this frame; the result
                // replaces them (`sp - 1` is then the first operand's slot).
                ins @ (X::DivUnI32 | X::RemUnI32) => unsafe {
                    let b = *sp.sub(1) as u32;
                    let a = *sp.sub(2) as u32;
                    if b == 0 {
                        raise!(Fault::div_by_zero());
                    }
                    let r = if matches!(ins, X::DivUnI32) {
                        a / b
                    } else {
                        a % b
                    };
                    sp = sp.sub(1);
                    *sp.sub(1) = r as i32 as i64 as u64;
                },
                // SAFETY: the operand is on the verifier's stack, so `sp - 1` is a
                // slot of this frame; the result replaces it.
                X::NegI32 => unsafe {
                    *sp.sub(1) = (*sp.sub(1) as i32).wrapping_neg() as i64 as u64
                },
                X::AddI64 => bin!(|a, b| a.wrapping_add(b)),
                X::SubI64 => bin!(|a, b| a.wrapping_sub(b)),
                X::MulI64 => bin!(|a, b| a.wrapping_mul(b)),
                // SAFETY: both operands are on the verifier's stack, so
                // `sp - 2`, `sp - 1` are slots of this frame; the result
                // replaces them (`sp - 1` is then the first operand's slot).
                ins @ (X::DivI64 | X::RemI64) => unsafe {
                    let b = *sp.sub(1) as i64;
                    let a = *sp.sub(2) as i64;
                    if b == 0 {
                        raise!(Fault::div_by_zero());
                    }
                    if a == i64::MIN && b == -1 {
                        raise!(Fault::div_overflow(a));
                    }
                    let r = if matches!(ins, X::DivI64) {
                        a / b
                    } else {
                        a % b
                    };
                    sp = sp.sub(1);
                    *sp.sub(1) = r as u64;
                },
                // SAFETY: both operands are on the verifier's stack, so
                // `sp - 2`, `sp - 1` are slots of this frame; the result
                // replaces them (`sp - 1` is then the first operand's slot).
                ins @ (X::DivUnI64 | X::RemUnI64) => unsafe {
                    let b = *sp.sub(1);
                    let a = *sp.sub(2);
                    if b == 0 {
                        raise!(Fault::div_by_zero());
                    }
                    let r = if matches!(ins, X::DivUnI64) {
                        a / b
                    } else {
                        a % b
                    };
                    sp = sp.sub(1);
                    *sp.sub(1) = r;
                },
                // SAFETY: the operand is on the verifier's stack, so `sp - 1` is a
                // slot of this frame; the result replaces it.
                X::NegI64 => unsafe { *sp.sub(1) = (*sp.sub(1) as i64).wrapping_neg() as u64 },
                X::AddF32 => bin!(|a, b| (f32b!(a) + f32b!(b)).to_bits() as u64),
                X::SubF32 => bin!(|a, b| (f32b!(a) - f32b!(b)).to_bits() as u64),
                X::MulF32 => bin!(|a, b| (f32b!(a) * f32b!(b)).to_bits() as u64),
                X::DivF32 => bin!(|a, b| (f32b!(a) / f32b!(b)).to_bits() as u64),
                X::RemF32 => bin!(|a, b| (f32b!(a) % f32b!(b)).to_bits() as u64),
                // SAFETY: the operand is on the verifier's stack, so `sp - 1` is a
                // slot of this frame; the result replaces it.
                X::NegF32 => unsafe { *sp.sub(1) = (-f32b!(*sp.sub(1))).to_bits() as u64 },
                X::AddF64 => bin!(|a, b| (f64b!(a) + f64b!(b)).to_bits()),
                X::SubF64 => bin!(|a, b| (f64b!(a) - f64b!(b)).to_bits()),
                X::MulF64 => bin!(|a, b| (f64b!(a) * f64b!(b)).to_bits()),
                X::DivF64 => bin!(|a, b| (f64b!(a) / f64b!(b)).to_bits()),
                X::RemF64 => bin!(|a, b| (f64b!(a) % f64b!(b)).to_bits()),
                // SAFETY: the operand is on the verifier's stack, so `sp - 1` is a
                // slot of this frame; the result replaces it.
                X::NegF64 => unsafe { *sp.sub(1) = (-f64b!(*sp.sub(1))).to_bits() },
                // sign-extended i32s stay sign-extended under bitwise ops
                X::And => bin!(|a, b| a & b),
                X::Or => bin!(|a, b| a | b),
                X::Xor => bin!(|a, b| a ^ b),
                // SAFETY: the operand is on the verifier's stack, so `sp - 1` is a
                // slot of this frame; the result replaces it.
                X::Not => unsafe { *sp.sub(1) = !*sp.sub(1) },
                X::ShlI32 => {
                    bin!(|a, b| (a as i32).wrapping_shl(b as u32 & 31) as i64 as u64)
                }
                X::ShrI32 => bin!(|a, b| ((a as i32) >> (b as u32 & 31)) as i64 as u64),
                X::ShrUnI32 => {
                    bin!(|a, b| ((a as u32) >> (b as u32 & 31)) as i32 as i64 as u64)
                }
                X::ShlI64 => bin!(|a, b| a << (b as u32 & 63)),
                X::ShrI64 => bin!(|a, b| ((a as i64) >> (b as u32 & 63)) as u64),
                X::ShrUnI64 => bin!(|a, b| a >> (b as u32 & 63)),
                X::Cmp(c) => bin!(|a, b| cmp(c, a, b) as u64),
                // SAFETY: the operand is on the verifier's stack, so `sp - 1` is a
                // slot of this frame; the result replaces it.
                X::Conv(src, op) => unsafe {
                    match conv(src, op, *sp.sub(1)) {
                        Ok(v) => *sp.sub(1) = v,
                        Err(f) => {
                            t.raise(f);
                            break 'dispatch cur;
                        }
                    }
                },
                X::Br(target) => {
                    back_edge!(target, cur);
                    pc = target as usize
                }
                X::Brtrue(target) => {
                    if pop!() != 0 {
                        back_edge!(target, cur);
                        pc = target as usize
                    }
                }
                X::Brfalse(target) => {
                    if pop!() == 0 {
                        back_edge!(target, cur);
                        pc = target as usize
                    }
                }
                X::BrCmp(c, target) => {
                    let b = pop!();
                    let a = pop!();
                    if cmp(c, a, b) {
                        back_edge!(target, cur);
                        pc = target as usize
                    }
                }
                X::Switch { start, len } => {
                    let v = pop!() as u32;
                    if v < len {
                        // SAFETY: `resolve` pushed this switch's `len` targets
                        // at `switch_targets[start..start + len]`, and `v < len`
                        // (checked just above).
                        pc = unsafe { *code.switch_targets.get_unchecked((start + v) as usize) }
                            as usize;
                        back_edge!(pc, cur);
                    }
                }
                // SAFETY: the return value is on the verifier's stack, so
                // `sp - 1` is a slot of this frame.
                X::Ret(k) => return k.narrow(unsafe { *sp.sub(1) }),
                X::RetVoid => return 0,
                X::Call {
                    mh: callee,
                    nargs,
                    ret,
                    this,
                } => {
                    // SAFETY: the verifier's stack holds the `nargs`
                    // arguments here, so `sp - nargs` (the first) is at or
                    // above `s`.
                    sp = unsafe { sp.sub(nargs as usize) };
                    // SAFETY: a call with `this` has at least one argument,
                    // so `sp` is the receiver's slot (read only then).
                    if this && unsafe { *sp } == 0 {
                        // SAFETY: `callee` was resolved from the method
                        // tables at load; handles live as long as the runtime.
                        raise!(Fault::null_receiver(&rt.method_name(unsafe { &*callee })));
                    }
                    at!(cur);
                    // SAFETY: `callee` is a live handle resolved from the
                    // method tables; its arguments are the top `nargs` slots
                    // from `sp` (verified against its signature); `t` is this
                    // thread's live context, and the position is recorded
                    // for the collector.
                    let r = unsafe { invoke(t, callee, sp) };
                    if t.has_pending() {
                        break 'dispatch cur;
                    }
                    if ret {
                        push!(r)
                    }
                }
                X::CallVirt { slot, nargs, ret } => {
                    // SAFETY: the verifier's stack holds the `nargs`
                    // arguments (receiver first) here, so `sp - nargs` (the
                    // first) is at or above `s`.
                    sp = unsafe { sp.sub(nargs as usize) };
                    // SAFETY: `sp` is now the receiver's slot (see above).
                    let recv = nonnull!(unsafe { *sp }, "callvirt receiver");
                    // SAFETY: `recv` is non-null (checked just above) and
                    // verified to be an instance of the method's class, so a
                    // live object whose class's vtable has the method's slot
                    // `slot` (inherited by every subclass).
                    let callee = unsafe { *(*class_of(recv)).vtable.add(slot as usize) };
                    at!(cur);
                    // SAFETY: `callee` is a live handle from the receiver's
                    // vtable; its arguments are the top `nargs` slots from
                    // `sp` (verified against its signature); `t` is this
                    // thread's live context, and the position is recorded
                    // for the collector.
                    let r = unsafe { invoke(t, callee, sp) };
                    if t.has_pending() {
                        break 'dispatch cur;
                    }
                    if ret {
                        push!(r)
                    }
                }
                X::CallIface {
                    iface,
                    idx,
                    nargs,
                    ret,
                } => {
                    // SAFETY: the verifier's stack holds the `nargs`
                    // arguments (receiver first) here, so `sp - nargs` (the
                    // first) is at or above `s`.
                    sp = unsafe { sp.sub(nargs as usize) };
                    // SAFETY: `sp` is now the receiver's slot (see above).
                    let recv = nonnull!(unsafe { *sp }, "callvirt receiver");
                    // SAFETY: `recv` is non-null (checked just above) and
                    // verified to be a reference, so a live object.
                    let Some(callee) =
                        (unsafe { rt.dispatch_interface(recv, iface, idx as usize) })
                    else {
                        raise!(Fault::not_implemented());
                    };
                    at!(cur);
                    // SAFETY: `callee` is a live handle from the receiver
                    // class's interface table; its arguments are the top
                    // `nargs` slots from `sp` (verified against the interface
                    // method's signature); `t` is this thread's live context,
                    // and the position is recorded for the collector.
                    let r = unsafe { invoke(t, callee, sp) };
                    if t.has_pending() {
                        break 'dispatch cur;
                    }
                    if ret {
                        push!(r)
                    }
                }
                X::Newobj { mh: ctor, nargs } => {
                    at!(cur);
                    // From the thread's allocation cache (refilled in
                    // batches), like compiled code's inline `newobj`.
                    // SAFETY: `ctor` is a live handle resolved from the
                    // method tables, whose `class` is the live descriptor of
                    // its (verified instantiable) class; `t` is this thread's
                    // context, attached to `rt`.
                    let obj = match unsafe { rt.alloc_object_in(t, (*ctor).class) } {
                        Ok(o) => o,
                        Err(f) => {
                            t.raise(f);
                            break 'dispatch cur;
                        }
                    };
                    let n = nargs as usize;
                    // SAFETY: the verifier's stack holds the `n` constructor
                    // arguments here, so `sp - n` is at or above `s`.
                    let a = unsafe { sp.sub(n) };
                    // SAFETY: `a..a + n` are the arguments; shifting them up
                    // one slot also writes `sp`, which is within the frame:
                    // the depth before is at most `max_stack` and the frame
                    // has one scratch slot after the evaluation stack.
                    unsafe {
                        std::ptr::copy(a, a.add(1), n);
                        *a = obj as u64;
                    }
                    at!(cur as u64 | frame::POS_CTOR);
                    // SAFETY: `ctor` is a live handle resolved from the
                    // method tables; its arguments (the new object, then the
                    // `n` verified arguments) are the `n + 1` slots from `a`;
                    // `t` is this thread's live context, and the position is
                    // recorded for the collector.
                    unsafe { invoke(t, ctor, a) };
                    if t.has_pending() {
                        break 'dispatch cur;
                    }
                    sp = a;
                    push!(obj as u64)
                }
                X::Ldfld(off, k) => ldfld!(off, k),
                X::LdfldW(off) => ldfld!(off, Kind::W64),
                X::LdfldI(off) => ldfld!(off, Kind::I32),
                X::Stfld(off, k) => stfld!(off, k),
                X::StfldW(off) => stfld!(off, Kind::W64),
                X::StfldI(off) => stfld!(off, Kind::I32),
                // SAFETY: `addr` is the static field's address from the field
                // table (storage allocated by the runtime for its lifetime,
                // aligned for the field's kind `k`).
                X::Ldsfld(addr, k) => push!(unsafe { load(addr, k) }),
                X::Stsfld(addr, k) => {
                    let v = pop!();
                    // SAFETY: `addr` is the static field's address from the
                    // field table (storage allocated by the runtime for its
                    // lifetime, aligned for the field's kind `k`); `v` is
                    // verified assignable to it.
                    unsafe { store(addr, k, v) }
                }
                // SAFETY: the operand is on the verifier's stack, so `sp - 1`
                // is a slot of this frame; it is a reference (verifier), so if
                // non-null a live object, with a live class descriptor; `cd`
                // is a live descriptor resolved from the tables.
                X::Isinst(cd) => unsafe {
                    let o = *sp.sub(1);
                    if o != 0 && !(*class_of(o as *const u8)).instance_of(&*cd) {
                        *sp.sub(1) = 0;
                    }
                },
                // SAFETY: the operand is on the verifier's stack, so `sp - 1`
                // is a slot of this frame; it is a reference (verifier), so if
                // non-null a live object, with a live class descriptor; `cd`
                // is a live descriptor resolved from the tables.
                X::Castclass(cd) => unsafe {
                    let o = *sp.sub(1);
                    if o != 0 {
                        let oc = &*class_of(o as *const u8);
                        if !oc.instance_of(&*cd) {
                            raise!(Fault::bad_cast(oc.name(), (*cd).name()));
                        }
                    }
                },
                X::Newarr(cd) => {
                    let n = pop!() as i32;
                    if n < 0 {
                        raise!(Fault::negative_length(n));
                    }
                    at!(cur);
                    // SAFETY: `cd` is a live array class descriptor
                    // resolved from the tables (`array_class`).
                    match unsafe { rt.alloc_array(cd, n as i64) } {
                        Ok(a) => push!(a as u64),
                        Err(f) => {
                            t.raise(f);
                            break 'dispatch cur;
                        }
                    }
                }
                X::Ldlen => {
                    // SAFETY: the operand is on the verifier's stack, so
                    // `sp - 1` is a slot of this frame.
                    let a = nonnull!(unsafe { *sp.sub(1) }, "ldlen");
                    // SAFETY: `a` is non-null (checked just above) and
                    // verified to be an array reference, so a live array; the
                    // result replaces its slot.
                    unsafe { *sp.sub(1) = array_len(a) as i32 as i64 as u64 };
                }
                X::Ldelem(k, size) => ldelem!(k, size as usize),
                X::LdelemI32 => ldelem!(Kind::I32, 4),
                X::LdelemU8 => ldelem!(Kind::U8, 1),
                X::LdelemW64 => ldelem!(Kind::W64, 8),
                X::Stelem(k, size) => stelem!(k, size as usize),
                X::StelemI32 => stelem!(Kind::I32, 4),
                X::StelemBool => stelem!(Kind::Bool, 1),
                X::StelemU8 => stelem!(Kind::U8, 1),
                X::StelemW64 => stelem!(Kind::W64, 8),
                X::Atomic { op, kind, off } => {
                    let nv = match op {
                        AOp::Load => 0,
                        AOp::Cas => 2,
                        _ => 1,
                    };
                    // SAFETY: the object and the `nv` value operands are on
                    // the verifier's stack, so `sp - (nv + 1)` is a slot of
                    // this frame.
                    let o = nonnull!(unsafe { *sp.sub(nv + 1) }, "atomic field access");
                    // SAFETY: `o` is non-null (checked just above) and, as
                    // verified, a live object of a class with this field at
                    // byte offset `off` of kind `kind` (from the field table),
                    // so the field is in the object and aligned; the `nv`
                    // value operands are the slots from `sp - nv`, and
                    // popping all `nv + 1` operands stays at or above `s`.
                    let r = unsafe { atomic_op(o.add(off as usize), op, kind, sp.sub(nv)) };
                    // SAFETY: as above (`nv + 1` operands on the stack).
                    sp = unsafe { sp.sub(nv + 1) };
                    if let Some(r) = r {
                        push!(r)
                    }
                }
                X::AtomicS { op, kind, addr } => {
                    let nv = match op {
                        AOp::Load => 0,
                        AOp::Cas => 2,
                        _ => 1,
                    };
                    // SAFETY: `addr` is the static field's address from the
                    // field table (storage allocated by the runtime for its
                    // lifetime, aligned for `kind`); the `nv` value operands
                    // are on the verifier's stack, the slots from `sp - nv`.
                    let r = unsafe { atomic_op(addr, op, kind, sp.sub(nv)) };
                    // SAFETY: as above (`nv` operands on the stack).
                    sp = unsafe { sp.sub(nv) };
                    if let Some(r) = r {
                        push!(r)
                    }
                }
                X::Throw => {
                    let e = pop!();
                    if e == 0 {
                        raise!(Fault::throw_null());
                    }
                    t.throw(e as *mut u8);
                    break 'dispatch cur;
                }
                X::Rethrow => {
                    let c = eh
                        .caught
                        .iter()
                        .rev()
                        .find(|c| code.regions[c.region].in_handler(cur as u32));
                    match c {
                        Some(c) => {
                            t.pending = c.exc;
                            t.trace = c.trace.clone();
                        }
                        None => {
                            t.raise(Fault::new(
                                FaultKind::Exception,
                                "rethrow outside a catch block",
                            ));
                        }
                    }
                    break 'dispatch cur;
                }
                X::Leave(target) => {
                    sp = s;
                    // A backward `leave` polls here whether or not a
                    // finally runs on the way (as compiled code does): a
                    // loop closed by `leave` through a finally is a loop.
                    back_edge!(target, cur);
                    pc = leave(eh, code, cur as u32, target) as usize;
                }
                X::Endfinally => {
                    sp = s;
                    match endfinally(t, eh, code, cur as u32) {
                        AfterFinally::Goto(next) => pc = next as usize,
                        AfterFinally::Handler(next) => {
                            pc = next as usize;
                            if t.has_pending() {
                                push!(take_pending(t));
                            }
                            // SAFETY: `posp` is this frame's position word.
                            if unsafe { handler_poll(t, code, posp, pc) } {
                                break 'dispatch pc;
                            }
                            continue 'dispatch;
                        }
                        AfterFinally::Propagate => break 'outer,
                        AfterFinally::NotInFinally => {
                            fault!(FaultKind::Exception, "endfinally outside a finally block")
                        }
                    }
                }
            }
        };
        // An exception is pending at instruction `at`.
        let mut at = at;
        loop {
            let mut npc = pc;
            let found = dispatch(
                t,
                code,
                &mut eh.conts,
                &mut eh.caught,
                0,
                at as u32,
                at as u32,
                &mut npc,
            );
            pc = npc;
            if !found {
                break 'outer;
            }
            sp = s;
            if t.has_pending() {
                push!(take_pending(t));
            }
            // SAFETY: `posp` is this frame's position word.
            if unsafe { handler_poll(t, code, posp, pc) } {
                at = pc;
                continue;
            }
            continue 'outer;
        }
    }
    // Unhandled in this frame.
    t.trace.push(mh);
    0
}

/// On entering the handler at `pc`: if it is placed before its try block
/// ([`backward_handler`]), the transfer was backward, so record position
/// `pc` in the frame (`posp`), poll, and raise a delivered interrupt.
/// Returns whether it raised one (the caller throws it at `pc`, the
/// handler's first instruction).
///
/// # Safety
/// `posp` is the running frame's position word.
unsafe fn handler_poll(t: &mut ThreadCtx, code: &Code, posp: *mut u64, pc: usize) -> bool {
    if !backward_handler(code, pc) {
        return false;
    }
    // SAFETY: caller contract.
    unsafe { *posp = pc as u64 };
    safepoint::poll();
    if t.interrupt.load(Ordering::Relaxed) != 0 {
        if let Some(f) = t.take_interrupt(true) {
            t.raise(f);
            return true;
        }
    }
    false
}

/// Take the pending exception for a catch handler (the stack's only value).
fn take_pending(t: &mut ThreadCtx) -> u64 {
    let e = t.pending;
    t.pending = std::ptr::null_mut();
    e as u64
}
