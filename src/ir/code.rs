//! The resolved method: [`Code`] (instructions, regions, stack maps) and
//! the analyses both tiers share ([`is_leaf`], `is_sqrt`).
//!
//! Invariants: `Code` is built once per method by the runtime's resolution
//! (`runtime::resolve`) from the verifier's output and never changes after;
//! every per-instruction vector is index-parallel to the verifier's
//! instructions; `xs` (the interpreter's executable form) is built from
//! `insns` by `fuse::build`.

use super::fuse::X;
use super::insn::I;
use super::value::Kind;
use crate::verify::RefMap;
use crate::vm::tables::{mflags, ClassDesc, MethodHandle};
use std::sync::atomic::Ordering;

/// A protected region in instruction indices.
#[derive(Clone, Debug)]
pub struct Region {
    /// Try start (inclusive).
    pub try_start: u32,
    /// Try end (exclusive).
    pub try_end: u32,
    /// Handler start.
    pub handler_start: u32,
    /// Handler end (exclusive).
    pub handler_end: u32,
    /// Caught class, or null for `finally`.
    pub catch: *const ClassDesc,
}

impl Region {
    pub(crate) fn in_try(&self, pc: u32) -> bool {
        self.try_start <= pc && pc < self.try_end
    }
    pub(crate) fn in_handler(&self, pc: u32) -> bool {
        self.handler_start <= pc && pc < self.handler_end
    }
}

/// The pre-decoded code of one method.
pub struct Code {
    /// Instructions.
    pub insns: Vec<I>,
    /// `switch` targets (instruction indices).
    pub switch_targets: Vec<u32>,
    /// Protected regions, innermost first.
    pub regions: Vec<Region>,
    /// Bytecode offset of each instruction (diagnostics, method lookup).
    pub offsets: Vec<u32>,
    /// Argument slots whose declared type is `u8`/`bool` (normalised on entry).
    pub narrow_args: Vec<(u32, Kind)>,
    /// Arguments (incl. `this`).
    pub nargs: u32,
    /// Locals.
    pub nlocals: u32,
    /// Frame size in slots.
    pub frame_slots: u32,
    /// The evaluation-stack positions holding references before each
    /// instruction (from the verifier's stack types; `null` counts as a
    /// reference), shared between instructions: linear in the code, not
    /// instructions × depth.
    pub stack_refs: RefMap,
    /// Evaluation-stack depth before each instruction.
    pub depths: Vec<u32>,
    /// What the interpreter runs: `insns` with superinstructions
    /// (index-parallel to `insns`, see `fuse.rs`).
    pub xs: Vec<X>,
    /// A leaf: no safepoint besides the method-entry poll ([`is_leaf`]).
    /// Neither mode polls at a leaf's entry.
    pub leaf: bool,
}

impl Code {
    /// Call `f` with every frame slot (index from the frame's first slot)
    /// of the evaluation stack that holds a reference at safepoint position
    /// `pos` (an instruction index, possibly with `frame::POS_CTOR`: inside a
    /// `newobj`'s constructor call the new object sits below the
    /// constructor's arguments). Arguments and locals are described by the
    /// method's `GcData` instead.
    pub fn stack_ref_slots(&self, pos: u64, mut f: impl FnMut(u32)) {
        use crate::vm::thread::frame::POS_CTOR;
        let i = (pos & !POS_CTOR) as usize;
        if i >= self.insns.len() {
            return;
        }
        let base = self.nargs + self.nlocals;
        if pos & POS_CTOR == 0 {
            self.stack_refs.for_each(i, |r| f(base + r));
            return;
        }
        let I::Newobj { nargs, .. } = self.insns[i] else {
            return;
        };
        let first_arg = self.depths[i].saturating_sub(nargs as u32);
        self.stack_refs
            .for_each(i, |r| f(base + if r < first_arg { r } else { r + 1 }));
        f(base + first_arg);
    }
}

// SAFETY: the raw pointers in `Code` refer to runtime tables and interned
// objects that live as long as the runtime; `Code` is immutable after `prepare`.
unsafe impl Send for Code {}
// SAFETY: as above.
unsafe impl Sync for Code {}

/// Is this method a **leaf**: no call other than an intrinsic
/// (`is_sqrt`), no allocation (`newobj`, `newarr`), no backward branch
/// (`br*`, `switch` or `leave` to an earlier or the same instruction) and
/// no protected region (so no handler can send control back either)? Every
/// execution of a leaf is bounded by its length, so it needs no safepoint
/// poll at all: a stop-the-world waits for at most that long, until its
/// caller's next poll. Neither the interpreter nor the JIT polls at a
/// leaf's entry, which makes small methods (getters, constructors,
/// the targets of most virtual calls) cheaper to call. An interrupt is then
/// delivered at the caller's next poll; a host call into managed code
/// checks the interrupt word itself first ([`crate::runtime::call_from_host`]),
/// so a host sees the same exception it would see from an entry poll.
/// The JIT also omits the frame record of a leaf (`Tx::needs_frame_record`).
pub fn is_leaf(code: &Code) -> bool {
    code.regions.is_empty()
        && code.insns.iter().enumerate().all(|(i, ins)| match *ins {
            I::Call { mh, .. } => is_sqrt(mh),
            I::CallVirt { .. } | I::CallIface { .. } | I::Newobj { .. } | I::Newarr(_) => false,
            I::Br(t) | I::Brtrue(t) | I::Brfalse(t) | I::BrCmp(_, t) | I::Leave(t) => {
                t as usize > i
            }
            I::Switch { start, len } => {
                (start..start + len).all(|k| code.switch_targets[k as usize] as usize > i)
            }
            _ => true,
        })
}

/// Natives whose meaning is one machine operation: the tables mark a
/// method bound to exactly the runtime's own implementation (a method that
/// merely shares the name never matches) with its intrinsic
/// ([`mflags::INTRINSIC_MASK`]), and compiled code computes it inline with
/// the same result bit for bit. Each is an `f64` operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Intrinsic {
    /// `Std::sqrt(v)`: IEEE square root, correctly rounded.
    Sqrt = 1,
    /// `Std::floor(v)`.
    Floor = 2,
    /// `Std::ceil(v)`.
    Ceil = 3,
    /// `Std::trunc(v)`.
    Trunc = 4,
    /// `Std::round(v)`: to the nearest integer, ties to even.
    Nearest = 5,
    /// `Std::abs(v)`: clears the sign bit.
    Abs = 6,
    /// `Std::copysign(x, y)`: `x`'s magnitude with `y`'s sign bit.
    Copysign = 7,
}

impl Intrinsic {
    /// Every intrinsic, by id − 1.
    pub const ALL: [Intrinsic; 7] = [
        Intrinsic::Sqrt,
        Intrinsic::Floor,
        Intrinsic::Ceil,
        Intrinsic::Trunc,
        Intrinsic::Nearest,
        Intrinsic::Abs,
        Intrinsic::Copysign,
    ];

    /// The `mflags` bits that mark a method as this intrinsic.
    pub const fn flags(self) -> u32 {
        (self as u32) << mflags::INTRINSIC_SHIFT
    }
}

/// The intrinsic a call of `mh` is, if any.
pub(crate) fn intrinsic(mh: *const MethodHandle) -> Option<Intrinsic> {
    // SAFETY: `mh` is a live handle of the runtime's tables (resolved call target).
    let m = unsafe { mh.as_ref() }?;
    let id = (m.flags & mflags::INTRINSIC_MASK) >> mflags::INTRINSIC_SHIFT;
    Intrinsic::ALL.get((id as usize).checked_sub(1)?).copied()
}

/// Whether `mh` is the runtime's own `Std::sqrt` (see [`Intrinsic`]): such a
/// call is [`X::SqrtF64`] in the interpreter and an `sqrt` instruction in
/// compiled code; it does not make a method a non-leaf.
pub(crate) fn is_sqrt(mh: *const MethodHandle) -> bool {
    intrinsic(mh) == Some(Intrinsic::Sqrt)
}

impl MethodHandle {
    /// The method's resolved code, if it has a body.
    pub fn code(&self) -> Option<&Code> {
        // SAFETY: `code` is null or was set once by `set_code` to a `Code`
        // the runtime owns for as long as its tables (and so this handle) live.
        unsafe { (self.code.load(Ordering::Acquire) as *const Code).as_ref() }
    }

    /// Publish the method's resolved code.
    ///
    /// # Safety
    /// `code` must live as long as this handle (the runtime owns both).
    pub unsafe fn set_code(&self, code: &Code) {
        self.code
            .store(code as *const Code as *mut u8, Ordering::Release);
    }
}
