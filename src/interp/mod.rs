//! The interpreter.
//!
//! Every verified method body is pre-decoded once, at load ([`prepare`]), from
//! the verifier's [`MethodInfo`] (whose stack types are known at every
//! instruction) into a compact, type-specialised instruction array ([`I`]):
//! arithmetic is split by operand type, branch targets are instruction
//! indices, fields are byte offsets (statics: addresses), calls carry the
//! callee's `*const MethodHandle` or its vtable slot / interface slot,
//! `ldstr` carries the interned string object. The hot loop does no hashing
//! and no name lookups.
//!
//! Frames live on the thread's value stack as frame records
//! (`runtime::frame`): a header (method, safepoint position, size,
//! exception state) and contiguous 64-bit slots
//! `[args | locals | evaluation stack | 1 scratch slot]` (the layout of the
//! method's `StackHandle`s), locals zeroed. Before anything that can collect
//! (calls, allocations, polls at method entry and taken backward branches)
//! the loop writes the instruction index into the header; values stay in
//! their slots, so the collector reads references from the verifier's
//! stack types at that index (`Code::stack_ref_slots`). Value representation in a slot:
//! `i32` (and `bool`/`u8`/`char`) sign-extended to 64 bits, `f32` bits in the
//! low 32, `f64` bits, references and pointers as addresses.
//!
//! The loop runs [`Code::xs`], the interpreter's own executable form
//! ([`X`], built by `fuse.rs`): the instructions of [`I`] in one flat enum
//! (one jump per instruction), plus superinstructions for common short
//! sequences (`ldloc; ldloc; add; stloc`, `ldloc; ldc; blt`, `ldloc;
//! ldfld`, ...), forms specialised by kind (`i32`/8-byte fields and
//! elements, `blt`/`bge` on locals) and `Std::sqrt` as an instruction.
//! Indices are those of `insns` (which the JIT translates), so positions,
//! regions and stack maps are unchanged; `fuse`'s module documentation
//! gives the invariants.
//!
//! Calls go through the callee's method slot ([`crate::runtime::call_method`]);
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

use crate::bytecode::{Op, Operand};
use crate::heap::{array_len, class_of, ARRAY_DATA_OFFSET};
use crate::library::program::MemberId;
use crate::library::{HandlerKind, MemberKind, Prim, TypeKind, TypeSig};
use crate::runtime::frame::{self, HEADER_SLOTS};
use crate::runtime::tables::{ClassDesc, MethodHandle};
use crate::runtime::{approx_sp, call_method, Fault, FaultKind, Runtime, ThreadCtx};
use crate::safepoint;
use crate::verify::{MethodInfo, VType, Verified};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

mod fuse;
pub use fuse::{Bin, X};

/// Storage kind of a field, element or static.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `bool`: stores `v != 0`, loads zero-extended.
    Bool,
    /// `u8`: stores the low 8 bits.
    U8,
    /// `i32` / `char`: 4 bytes, sign-extended on load.
    I32,
    /// `f32`: 4 bytes of bits.
    F32,
    /// 8 bytes (`i64`, `u64`, `f64`, `ptr`, references).
    W64,
    /// `atomic bool` (SeqCst).
    ABool,
    /// `atomic u8` (SeqCst).
    AU8,
    /// `atomic i64` / `atomic u64` (SeqCst).
    AW64,
}

impl Kind {
    /// The kind of a storage type.
    pub fn of(t: &TypeSig) -> Kind {
        match t {
            TypeSig::Prim(Prim::Bool) => Kind::Bool,
            TypeSig::Prim(Prim::U8) => Kind::U8,
            TypeSig::Prim(Prim::I32 | Prim::Char) => Kind::I32,
            TypeSig::Prim(Prim::F32) => Kind::F32,
            TypeSig::Atomic(Prim::Bool) => Kind::ABool,
            TypeSig::Atomic(Prim::U8) => Kind::AU8,
            TypeSig::Atomic(_) => Kind::AW64,
            _ => Kind::W64,
        }
    }

    /// Normalise an `i32` slot value for storing into this kind (and back).
    #[inline(always)]
    fn narrow(self, v: u64) -> u64 {
        match self {
            Kind::Bool | Kind::ABool => (v as u32 != 0) as u64,
            Kind::U8 | Kind::AU8 => v & 0xFF,
            _ => v,
        }
    }
}

/// Load a value of kind `k` from `p`.
///
/// Plain (non-`atomic`) fields, statics and elements are read and written
/// with `Relaxed` atomic accesses: other managed threads may store to the
/// same location at the same time (kasm programs may race on plain fields),
/// and a racing non-atomic access would be undefined behaviour in Rust. On
/// x86-64 and AArch64 a relaxed load or store of an aligned 1-, 4- or 8-byte
/// location is the same single instruction as a plain one, so this costs
/// nothing and a racing reader sees the old or the new value, never a torn
/// one (for references: never a pointer that was not stored).
///
/// # Safety
/// `p` must be valid and aligned for the kind's size.
#[inline(always)]
unsafe fn load(p: *const u8, k: Kind) -> u64 {
    // SAFETY: caller guarantees a valid, aligned location of the kind's size;
    // the atomic types have the size and alignment of the plain ones.
    unsafe {
        match k {
            Kind::Bool | Kind::U8 => (*(p as *const AtomicU8)).load(Ordering::Relaxed) as u64,
            Kind::I32 => (*(p as *const AtomicU32)).load(Ordering::Relaxed) as i32 as i64 as u64,
            Kind::F32 => (*(p as *const AtomicU32)).load(Ordering::Relaxed) as u64,
            Kind::W64 => (*(p as *const AtomicU64)).load(Ordering::Relaxed),
            Kind::ABool | Kind::AU8 => (*(p as *const AtomicU8)).load(Ordering::SeqCst) as u64,
            Kind::AW64 => (*(p as *const AtomicU64)).load(Ordering::SeqCst),
        }
    }
}

/// Store `v` (a slot value) with kind `k` at `p`.
///
/// # Safety
/// `p` must be valid and aligned for the kind's size.
#[inline(always)]
unsafe fn store(p: *mut u8, k: Kind, v: u64) {
    // SAFETY: caller guarantees a valid, aligned location of the kind's size;
    // relaxed atomic stores for plain kinds, see `load`.
    unsafe {
        match k {
            Kind::Bool => (*(p as *const AtomicU8)).store((v as u32 != 0) as u8, Ordering::Relaxed),
            Kind::U8 => (*(p as *const AtomicU8)).store(v as u8, Ordering::Relaxed),
            Kind::I32 | Kind::F32 => (*(p as *const AtomicU32)).store(v as u32, Ordering::Relaxed),
            Kind::W64 => (*(p as *const AtomicU64)).store(v, Ordering::Relaxed),
            Kind::ABool => (*(p as *const AtomicU8)).store((v as u32 != 0) as u8, Ordering::SeqCst),
            Kind::AU8 => (*(p as *const AtomicU8)).store(v as u8, Ordering::SeqCst),
            Kind::AW64 => (*(p as *const AtomicU64)).store(v, Ordering::SeqCst),
        }
    }
}

/// Atomic read-modify-write operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AOp {
    /// `atomic.load`.
    Load,
    /// `atomic.store`.
    Store,
    /// `atomic.add`.
    Add,
    /// `atomic.cas`.
    Cas,
}

/// Comparisons (conditions of `c*` and `b*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cmp {
    // integers (i32 sign-extended, i64), references, pointers
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LtUn32,
    LeUn32,
    GtUn32,
    GeUn32,
    LtUn64,
    LeUn64,
    GtUn64,
    GeUn64,
    // floats: ordered, and `.un` (true when unordered)
    EqF32,
    NeF32,
    LtF32,
    LeF32,
    GtF32,
    GeF32,
    LtUnF32,
    LeUnF32,
    GtUnF32,
    GeUnF32,
    EqF64,
    NeF64,
    LtF64,
    LeF64,
    GtF64,
    GeF64,
    LtUnF64,
    LeUnF64,
    GtUnF64,
    GeUnF64,
}

/// Evaluate a comparison on two slot values.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // `.un` float comparisons are true when unordered
pub fn cmp(c: Cmp, a: u64, b: u64) -> bool {
    let (ia, ib) = (a as i64, b as i64);
    let (fa, fb) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
    let (da, db) = (f64::from_bits(a), f64::from_bits(b));
    match c {
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Lt => ia < ib,
        Cmp::Le => ia <= ib,
        Cmp::Gt => ia > ib,
        Cmp::Ge => ia >= ib,
        Cmp::LtUn32 => (a as u32) < (b as u32),
        Cmp::LeUn32 => (a as u32) <= (b as u32),
        Cmp::GtUn32 => (a as u32) > (b as u32),
        Cmp::GeUn32 => (a as u32) >= (b as u32),
        Cmp::LtUn64 => a < b,
        Cmp::LeUn64 => a <= b,
        Cmp::GtUn64 => a > b,
        Cmp::GeUn64 => a >= b,
        Cmp::EqF32 => fa == fb,
        Cmp::NeF32 => fa != fb,
        Cmp::LtF32 => fa < fb,
        Cmp::LeF32 => fa <= fb,
        Cmp::GtF32 => fa > fb,
        Cmp::GeF32 => fa >= fb,
        Cmp::LtUnF32 => !(fa >= fb),
        Cmp::LeUnF32 => !(fa > fb),
        Cmp::GtUnF32 => !(fa <= fb),
        Cmp::GeUnF32 => !(fa < fb),
        Cmp::EqF64 => da == db,
        Cmp::NeF64 => da != db,
        Cmp::LtF64 => da < db,
        Cmp::LeF64 => da <= db,
        Cmp::GtF64 => da > db,
        Cmp::GeF64 => da >= db,
        Cmp::LtUnF64 => !(da >= db),
        Cmp::LeUnF64 => !(da > db),
        Cmp::GtUnF64 => !(da <= db),
        Cmp::GeUnF64 => !(da < db),
    }
}

fn cmp_for(op: Op, t: &VType) -> Option<Cmp> {
    use Cmp::*;
    let base = match op {
        Op::Ceq | Op::Beq => 0,
        Op::Cne | Op::Bne => 1,
        Op::Clt | Op::Blt => 2,
        Op::Cle | Op::Ble => 3,
        Op::Cgt | Op::Bgt => 4,
        Op::Cge | Op::Bge => 5,
        Op::CltUn | Op::BltUn => 6,
        Op::CleUn | Op::BleUn => 7,
        Op::CgtUn | Op::BgtUn => 8,
        Op::CgeUn | Op::BgeUn => 9,
        _ => return None,
    };
    let table: [Cmp; 10] = match t {
        VType::I32 => [Eq, Ne, Lt, Le, Gt, Ge, LtUn32, LeUn32, GtUn32, GeUn32],
        VType::F32 => [
            EqF32, NeF32, LtF32, LeF32, GtF32, GeF32, LtUnF32, LeUnF32, GtUnF32, GeUnF32,
        ],
        VType::F64 => [
            EqF64, NeF64, LtF64, LeF64, GtF64, GeF64, LtUnF64, LeUnF64, GtUnF64, GeUnF64,
        ],
        _ => [Eq, Ne, Lt, Le, Gt, Ge, LtUn64, LeUn64, GtUn64, GeUn64],
    };
    Some(table[base])
}

/// Source stack type of a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Src {
    I32,
    I64,
    F32,
    F64,
}

/// Convert a slot value (`conv.*`); `Err` for `conv.char` of a non-scalar.
pub fn conv(src: Src, op: Op, v: u64) -> Result<u64, Fault> {
    let i = v as i64;
    let f = match src {
        Src::F32 => f32::from_bits(v as u32) as f64,
        Src::F64 => f64::from_bits(v),
        _ => 0.0,
    };
    let float = matches!(src, Src::F32 | Src::F64);
    let se = |x: i32| x as i64 as u64;
    Ok(match op {
        Op::ConvI32 => match src {
            Src::I32 | Src::I64 => se(i as i32),
            _ => se(f as i32),
        },
        Op::ConvI64 => match src {
            Src::I32 | Src::I64 => v,
            _ => (f as i64) as u64,
        },
        Op::ConvU64 => match src {
            Src::I32 => v as u32 as u64,
            Src::I64 => v,
            _ => f as u64,
        },
        Op::ConvU8 => {
            if float {
                (f as u8) as u64
            } else {
                v & 0xFF
            }
        }
        Op::ConvBool => {
            (if float {
                f != 0.0 || f.is_nan()
            } else {
                match src {
                    Src::I32 => v as u32 != 0,
                    _ => v != 0,
                }
            }) as u64
        }
        Op::ConvChar => {
            let n: i64 = match src {
                Src::I32 => i as i32 as u32 as i64,
                Src::I64 => i,
                _ => f as i64,
            };
            match u32::try_from(n).ok().and_then(char::from_u32) {
                Some(c) => c as u32 as u64,
                None => return Err(Fault::conv_char(n)),
            }
        }
        Op::ConvF32 => (match src {
            Src::I32 => (i as i32) as f32,
            Src::I64 => i as f32,
            Src::F32 => f32::from_bits(v as u32),
            Src::F64 => f as f32,
        })
        .to_bits() as u64,
        Op::ConvF32Un => (match src {
            Src::I32 => (i as i32 as u32) as f32,
            Src::I64 => v as f32,
            Src::F32 => f32::from_bits(v as u32),
            Src::F64 => f as f32,
        })
        .to_bits() as u64,
        Op::ConvF64 => (match src {
            Src::I32 => (i as i32) as f64,
            Src::I64 => i as f64,
            _ => f,
        })
        .to_bits(),
        Op::ConvF64Un => (match src {
            Src::I32 => (i as i32 as u32) as f64,
            Src::I64 => v as f64,
            _ => f,
        })
        .to_bits(),
        _ => v,
    })
}

/// One pre-decoded instruction.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub enum I {
    Nop,
    /// Never executed (verifier: unreachable).
    Unreachable,
    Const(u64),
    Ld(u32),
    St(u32),
    StU8(u32),
    StBool(u32),
    Dup,
    Pop,
    AddI32,
    SubI32,
    MulI32,
    DivI32,
    RemI32,
    DivUnI32,
    RemUnI32,
    NegI32,
    AddI64,
    SubI64,
    MulI64,
    DivI64,
    RemI64,
    DivUnI64,
    RemUnI64,
    NegI64,
    AddF32,
    SubF32,
    MulF32,
    DivF32,
    RemF32,
    NegF32,
    AddF64,
    SubF64,
    MulF64,
    DivF64,
    RemF64,
    NegF64,
    And,
    Or,
    Xor,
    Not,
    ShlI32,
    ShrI32,
    ShrUnI32,
    ShlI64,
    ShrI64,
    ShrUnI64,
    Cmp(Cmp),
    Conv(Src, Op),
    Br(u32),
    Brtrue(u32),
    Brfalse(u32),
    BrCmp(Cmp, u32),
    Switch {
        start: u32,
        len: u32,
    },
    Ret(Kind),
    RetVoid,
    Call {
        mh: *const MethodHandle,
        nargs: u16,
        ret: bool,
        this: bool,
    },
    CallVirt {
        slot: u32,
        nargs: u16,
        ret: bool,
    },
    CallIface {
        iface: u32,
        idx: u16,
        nargs: u16,
        ret: bool,
    },
    Newobj {
        mh: *const MethodHandle,
        nargs: u16,
    },
    Ldfld(u32, Kind),
    Stfld(u32, Kind),
    Ldsfld(*mut u8, Kind),
    Stsfld(*mut u8, Kind),
    Isinst(*const ClassDesc),
    Castclass(*const ClassDesc),
    Newarr(*const ClassDesc),
    Ldlen,
    Ldelem(Kind, u8),
    Stelem(Kind, u8),
    Atomic {
        op: AOp,
        kind: Kind,
        off: u32,
    },
    AtomicS {
        op: AOp,
        kind: Kind,
        addr: *mut u8,
    },
    Throw,
    Rethrow,
    Leave(u32),
    Endfinally,
}

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
    /// Per instruction `i`, `stack_refs[stack_ref_start[i]..stack_ref_start[i + 1]]`
    /// are the evaluation-stack positions holding references before `i`
    /// (from the verifier's stack types; `null` counts as a reference).
    pub stack_ref_start: Vec<u32>,
    /// See `stack_ref_start`.
    pub stack_refs: Vec<u32>,
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
        use crate::runtime::frame::POS_CTOR;
        let i = (pos & !POS_CTOR) as usize;
        if i >= self.insns.len() {
            return;
        }
        let base = self.nargs + self.nlocals;
        let refs = &self.stack_refs
            [self.stack_ref_start[i] as usize..self.stack_ref_start[i + 1] as usize];
        if pos & POS_CTOR == 0 {
            for &r in refs {
                f(base + r);
            }
            return;
        }
        let I::Newobj { nargs, .. } = self.insns[i] else {
            return;
        };
        let first_arg = self.depths[i].saturating_sub(nargs as u32);
        for &r in refs {
            f(base + if r < first_arg { r } else { r + 1 });
        }
        f(base + first_arg);
    }
}

/// Exception-handling state of one frame (interpreted or compiled): the
/// `finally` continuations in progress and the caught exceptions (for
/// `rethrow`). The frame record's `EH` word points to it, so the collector
/// sees the exception objects it holds.
#[derive(Default)]
pub struct EhState {
    pub(crate) conts: Vec<Cont>,
    pub(crate) caught: Vec<Caught>,
}

impl EhState {
    /// Call `f` with every exception object this state holds.
    pub fn for_each_ref(&self, mut f: impl FnMut(*mut u8)) {
        for c in &self.conts {
            if let Cont::Unwind { exc, .. } = c {
                f(*exc);
            }
        }
        for c in &self.caught {
            f(c.exc);
        }
    }
}

// SAFETY: the raw pointers in `Code` refer to runtime tables and interned
// objects that live as long as the runtime; `Code` is immutable after `prepare`.
unsafe impl Send for Code {}
// SAFETY: as above.
unsafe impl Sync for Code {}

/// Pre-decode every verified method and install the code in its handle.
pub fn prepare(rt: &Runtime, verified: &Verified) -> Result<Vec<Box<Code>>, String> {
    let mut out = Vec::with_capacity(verified.methods.len());
    let mut ids: Vec<&MemberId> = verified.methods.keys().collect();
    ids.sort();
    for &id in ids {
        let info = &verified.methods[&id];
        if !rt.program.method(id).has_body() {
            continue;
        }
        let code = Box::new(decode_method(rt, id, info)?);
        let mh = rt.tables.method(id);
        // SAFETY: `mh` is a live handle; the code box outlives it (owned by the runtime).
        unsafe {
            (*mh)
                .interp_code
                .store(&*code as *const Code as *mut u8, Ordering::Release)
        };
        out.push(code);
    }
    Ok(out)
}

fn decode_method(rt: &Runtime, id: MemberId, info: &MethodInfo) -> Result<Code, String> {
    let p = &rt.program;
    let lib_i = id.class.lib as usize;
    let lib = &p.libs[lib_i];
    let m = p.method(id);
    let cname = &p.def(id.class).name;
    let err =
        |off: u32, what: &str| format!("{}: {cname}::{} @{off}: {what}", rt.files[lib_i], m.name);
    let nargs = m.params.len() as u32 + (!m.flags.is_static) as u32;
    let nlocals = m.locals.len() as u32;
    let var_ty = |slot: u32| -> &TypeSig {
        let this_skip = (!m.flags.is_static) as u32;
        if slot < this_skip {
            return &TypeSig::Prim(Prim::I64); // `this`: any 8-byte kind
        }
        if slot < nargs {
            &m.params[(slot - this_skip) as usize].ty
        } else {
            &m.locals[(slot - nargs) as usize].ty
        }
    };
    let target = |off: u32, at: u32| -> Result<u32, String> {
        info.index_of(off)
            .map(|i| i as u32)
            .ok_or_else(|| err(at, "branch target is not an instruction"))
    };
    let mut insns = Vec::with_capacity(info.insns.len());
    let mut switch_targets = Vec::new();
    for vi in &info.insns {
        let Some(stack) = vi.stack.as_ref() else {
            insns.push(I::Unreachable);
            continue;
        };
        let at = vi.offset;
        let top = stack.last().cloned().unwrap_or(VType::I32);
        let second = if stack.len() >= 2 {
            stack[stack.len() - 2].clone()
        } else {
            VType::I32
        };
        let op = vi.insn.op;
        let ins = match (&vi.insn.operand, op) {
            (Operand::None, Op::Nop) => I::Nop,
            (Operand::I32(v), _) => I::Const(*v as i64 as u64),
            (Operand::I64(v), _) => I::Const(*v as u64),
            (Operand::F32(v), _) => I::Const(v.to_bits() as u64),
            (Operand::F64(v), _) => I::Const(v.to_bits()),
            (Operand::Bool(b), _) => I::Const(*b as u64),
            (Operand::Char(c), _) => I::Const(*c as i32 as i64 as u64),
            (Operand::None, Op::Ldnull) => I::Const(0),
            (Operand::Str(s), _) => {
                let text = lib
                    .strings
                    .get(*s as usize)
                    .ok_or_else(|| err(at, "bad string index"))?;
                I::Const(rt.intern(text).map_err(|f| err(at, &f.message))? as u64)
            }
            (Operand::Var(v), Op::Ldarg) => I::Ld(*v as u32),
            (Operand::Var(v), Op::Ldloc) => I::Ld(nargs + *v as u32),
            (Operand::Var(v), Op::Starg | Op::Stloc) => {
                let slot = if op == Op::Starg {
                    *v as u32
                } else {
                    nargs + *v as u32
                };
                match var_ty(slot) {
                    TypeSig::Prim(Prim::U8) => I::StU8(slot),
                    TypeSig::Prim(Prim::Bool) => I::StBool(slot),
                    _ => I::St(slot),
                }
            }
            (_, Op::Dup) => I::Dup,
            (_, Op::Pop) => I::Pop,
            (
                _,
                Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem | Op::Neg | Op::DivUn | Op::RemUn,
            ) => arith(op, &top).ok_or_else(|| err(at, "arithmetic on an unexpected type"))?,
            (_, Op::And) => I::And,
            (_, Op::Or) => I::Or,
            (_, Op::Xor) => I::Xor,
            (_, Op::Not) => I::Not,
            (_, Op::Shl | Op::Shr | Op::ShrUn) => {
                let w64 = second == VType::I64;
                match (op, w64) {
                    (Op::Shl, false) => I::ShlI32,
                    (Op::Shr, false) => I::ShrI32,
                    (Op::ShrUn, false) => I::ShrUnI32,
                    (Op::Shl, true) => I::ShlI64,
                    (Op::Shr, true) => I::ShrI64,
                    _ => I::ShrUnI64,
                }
            }
            (Operand::None, _) if cmp_for(op, &top).is_some() => {
                I::Cmp(cmp_for(op, &top).expect("checked"))
            }
            (Operand::None, _)
                if matches!(
                    op,
                    Op::ConvI32
                        | Op::ConvI64
                        | Op::ConvU64
                        | Op::ConvF32
                        | Op::ConvF64
                        | Op::ConvU8
                        | Op::ConvChar
                        | Op::ConvBool
                        | Op::ConvF32Un
                        | Op::ConvF64Un
                ) =>
            {
                let src = match top {
                    VType::I32 => Src::I32,
                    VType::I64 => Src::I64,
                    VType::F32 => Src::F32,
                    VType::F64 => Src::F64,
                    _ => return Err(err(at, "conversion of a non-number")),
                };
                I::Conv(src, op)
            }
            (Operand::Target(t), Op::Br) => I::Br(target(*t, at)?),
            (Operand::Target(t), Op::Brtrue) => I::Brtrue(target(*t, at)?),
            (Operand::Target(t), Op::Brfalse) => I::Brfalse(target(*t, at)?),
            (Operand::Target(t), Op::Leave) => I::Leave(target(*t, at)?),
            (Operand::Target(t), _) => {
                let c = cmp_for(op, &top).ok_or_else(|| err(at, "bad branch"))?;
                I::BrCmp(c, target(*t, at)?)
            }
            (Operand::Switch(ts), _) => {
                let start = switch_targets.len() as u32;
                for &t in ts {
                    switch_targets.push(target(t, at)?);
                }
                I::Switch {
                    start,
                    len: ts.len() as u32,
                }
            }
            (_, Op::Ret) => match &m.ret {
                None => I::RetVoid,
                Some(t) => I::Ret(Kind::of(t)),
            },
            (Operand::Method(r), Op::Call | Op::Callvirt | Op::Newobj) => {
                let (_, mid) = p
                    .resolve_member(lib_i, *r)
                    .filter(|(k, _)| *k == MemberKind::Method)
                    .ok_or_else(|| err(at, "unresolved method"))?;
                let md = p.method(mid);
                let mh = rt.tables.method(mid);
                let nparams = md.params.len() as u16;
                let inst = !md.flags.is_static;
                let ret = md.ret.is_some();
                match op {
                    Op::Newobj => I::Newobj { mh, nargs: nparams },
                    Op::Callvirt if inst && p.def(mid.class).kind == TypeKind::Interface => {
                        // SAFETY: live descriptor of the interface.
                        let iface = unsafe { (*rt.tables.class(mid.class)).iface_id };
                        I::CallIface {
                            iface,
                            idx: mid.index as u16,
                            nargs: nparams + 1,
                            ret,
                        }
                    }
                    Op::Callvirt if inst => {
                        // SAFETY: live handle.
                        let slot = unsafe { (*mh).vtable_slot };
                        if slot >= 0 {
                            I::CallVirt {
                                slot: slot as u32,
                                nargs: nparams + 1,
                                ret,
                            }
                        } else {
                            I::Call {
                                mh,
                                nargs: nparams + 1,
                                ret,
                                this: true,
                            }
                        }
                    }
                    _ => I::Call {
                        mh,
                        nargs: nparams + inst as u16,
                        ret,
                        this: inst,
                    },
                }
            }
            (Operand::Field(r), _) => {
                let (_, fid) = p
                    .resolve_member(lib_i, *r)
                    .filter(|(k, _)| *k == MemberKind::Field)
                    .ok_or_else(|| err(at, "unresolved field"))?;
                let fd = p.field(fid);
                let fh = rt.tables.field(fid);
                let kind = Kind::of(&fd.ty);
                let aop = match op {
                    Op::AtomicLoad => Some(AOp::Load),
                    Op::AtomicStore => Some(AOp::Store),
                    Op::AtomicAdd => Some(AOp::Add),
                    Op::AtomicCas => Some(AOp::Cas),
                    _ => None,
                };
                match (aop, fd.is_static) {
                    (Some(aop), false) => I::Atomic {
                        op: aop,
                        kind,
                        off: fh.field_offset,
                    },
                    (Some(aop), true) => I::AtomicS {
                        op: aop,
                        kind,
                        addr: fh.static_addr,
                    },
                    (None, _) => match op {
                        Op::Ldfld => I::Ldfld(fh.field_offset, kind),
                        Op::Stfld => I::Stfld(fh.field_offset, kind),
                        Op::Ldsfld => I::Ldsfld(fh.static_addr, kind),
                        _ => I::Stsfld(fh.static_addr, kind),
                    },
                }
            }
            (Operand::Type(ti), _) => {
                let ty = lib
                    .type_refs
                    .get(*ti as usize)
                    .ok_or_else(|| err(at, "bad type index"))?;
                match op {
                    Op::Isinst | Op::Castclass => {
                        if matches!(ty, TypeSig::Class(n) if n == crate::library::OBJECT) {
                            I::Nop
                        } else {
                            let cd = rt
                                .tables
                                .type_class(p, ty)
                                .ok_or_else(|| err(at, "cast to a non-reference type"))?;
                            if op == Op::Isinst {
                                I::Isinst(cd)
                            } else {
                                I::Castclass(cd)
                            }
                        }
                    }
                    Op::Newarr => I::Newarr(
                        rt.tables
                            .array_class(p, &TypeSig::Array(Box::new(ty.clone()))),
                    ),
                    Op::Ldelem => I::Ldelem(Kind::of(ty), ty.size() as u8),
                    _ => I::Stelem(Kind::of(ty), ty.size() as u8),
                }
            }
            (_, Op::Ldlen) => I::Ldlen,
            (_, Op::Throw) => I::Throw,
            (_, Op::Rethrow) => I::Rethrow,
            (_, Op::Endfinally) => I::Endfinally,
            _ => return Err(err(at, &format!("cannot decode {op}"))),
        };
        insns.push(ins);
    }
    let idx = |off: u32| -> Result<u32, String> {
        if off as usize >= m.code.len() {
            return Ok(info.insns.len() as u32);
        }
        info.index_of(off)
            .map(|i| i as u32)
            .ok_or_else(|| err(off, "handler bound is not an instruction"))
    };
    let mut regions = Vec::new();
    for h in &m.handlers {
        let catch = match &h.kind {
            HandlerKind::Finally => std::ptr::null(),
            HandlerKind::Catch(ti) => {
                let ty = lib
                    .type_refs
                    .get(*ti as usize)
                    .ok_or_else(|| err(h.handler_start, "bad catch type"))?;
                rt.tables
                    .type_class(p, ty)
                    .ok_or_else(|| err(h.handler_start, "bad catch type"))?
            }
        };
        regions.push(Region {
            try_start: idx(h.try_start)?,
            try_end: idx(h.try_end)?,
            handler_start: idx(h.handler_start)?,
            handler_end: idx(h.handler_end)?,
            catch,
        });
    }
    let mut stack_ref_start = Vec::with_capacity(info.insns.len() + 1);
    let mut stack_refs = Vec::new();
    let mut depths = Vec::with_capacity(info.insns.len());
    for vi in &info.insns {
        stack_ref_start.push(stack_refs.len() as u32);
        let st = vi.stack.as_deref().unwrap_or(&[]);
        depths.push(st.len() as u32);
        for (p, t) in st.iter().enumerate() {
            if t.is_ref() {
                stack_refs.push(p as u32);
            }
        }
    }
    stack_ref_start.push(stack_refs.len() as u32);
    let narrow_args = (0..nargs)
        .filter_map(|s| match var_ty(s) {
            TypeSig::Prim(Prim::U8) => Some((s, Kind::U8)),
            TypeSig::Prim(Prim::Bool) => Some((s, Kind::Bool)),
            _ => None,
        })
        .collect();
    let mut code = Code {
        insns,
        switch_targets,
        regions,
        offsets: info.insns.iter().map(|i| i.offset).collect(),
        narrow_args,
        nargs,
        nlocals,
        frame_slots: nargs + nlocals + info.max_stack + 1,
        stack_ref_start,
        stack_refs,
        depths,
        xs: Vec::new(),
        leaf: false,
    };
    code.xs = fuse::build(&code);
    code.leaf = is_leaf(&code);
    Ok(code)
}

/// Is this method a **leaf**: no call other than an intrinsic
/// ([`is_sqrt`]), no allocation (`newobj`, `newarr`), no backward branch
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

/// Whether `mh` is bound to exactly the runtime's own `Std::sqrt` native
/// (a method that merely shares the name never matches): such a call is
/// [`X::SqrtF64`], the same IEEE square root without the native call.
pub(crate) fn is_sqrt(mh: *const MethodHandle) -> bool {
    // SAFETY: `mh` is a live handle of the runtime's tables (resolved call target).
    let Some(native) = (unsafe { mh.as_ref() }).and_then(|m| m.native) else {
        return false;
    };
    crate::runtime::natives::lookup("Std", "sqrt").is_some_and(|f| f as usize == native as usize)
}

fn arith(op: Op, t: &VType) -> Option<I> {
    use I::*;
    Some(match (t, op) {
        (VType::I32, Op::Add) => AddI32,
        (VType::I32, Op::Sub) => SubI32,
        (VType::I32, Op::Mul) => MulI32,
        (VType::I32, Op::Div) => DivI32,
        (VType::I32, Op::Rem) => RemI32,
        (VType::I32, Op::DivUn) => DivUnI32,
        (VType::I32, Op::RemUn) => RemUnI32,
        (VType::I32, Op::Neg) => NegI32,
        (VType::I64, Op::Add) => AddI64,
        (VType::I64, Op::Sub) => SubI64,
        (VType::I64, Op::Mul) => MulI64,
        (VType::I64, Op::Div) => DivI64,
        (VType::I64, Op::Rem) => RemI64,
        (VType::I64, Op::DivUn) => DivUnI64,
        (VType::I64, Op::RemUn) => RemUnI64,
        (VType::I64, Op::Neg) => NegI64,
        (VType::F32, Op::Add) => AddF32,
        (VType::F32, Op::Sub) => SubF32,
        (VType::F32, Op::Mul) => MulF32,
        (VType::F32, Op::Div | Op::DivUn) => DivF32,
        (VType::F32, Op::Rem | Op::RemUn) => RemF32,
        (VType::F32, Op::Neg) => NegF32,
        (VType::F64, Op::Add) => AddF64,
        (VType::F64, Op::Sub) => SubF64,
        (VType::F64, Op::Mul) => MulF64,
        (VType::F64, Op::Div | Op::DivUn) => DivF64,
        (VType::F64, Op::Rem | Op::RemUn) => RemF64,
        (VType::F64, Op::Neg) => NegF64,
        _ => return None,
    })
}

/// The slot of interpreted methods ([`crate::runtime::tables::EntryFn`]).
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

/// A `finally` in progress: what to do at its `endfinally`.
pub(crate) enum Cont {
    /// Continue a `leave` from instruction `from` to `target`.
    Leave {
        region: usize,
        from: u32,
        target: u32,
    },
    /// Continue propagating `exc` (thrown at `from`).
    Unwind {
        region: usize,
        from: u32,
        exc: *mut u8,
        trace: crate::runtime::Trace,
    },
}

impl Cont {
    fn region(&self) -> usize {
        match self {
            Cont::Leave { region, .. } | Cont::Unwind { region, .. } => *region,
        }
    }
}

/// A caught exception, for `rethrow` inside its catch block.
pub(crate) struct Caught {
    pub(crate) region: usize,
    pub(crate) exc: *mut u8,
    pub(crate) trace: crate::runtime::Trace,
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
    let code_ptr = mh.interp_code.load(Ordering::Acquire) as *const Code;
    if code_ptr.is_null() {
        t.raise(Fault::new(
            FaultKind::Exception,
            "method has no interpreter code",
        ));
        return 0;
    }
    // SAFETY: installed by `prepare`, lives as long as the runtime.
    let code = unsafe { &*code_ptr };
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
    let rt: &Runtime = &*(rt as *const Runtime); // detach from `t`'s borrow
    let l = base;
    let s = base.add((code.nargs + code.nlocals) as usize);
    let mut sp = s;
    let xs = code.xs.as_ptr();
    let mut pc: usize = 0;
    // The frame record's header: the safepoint position and the exception state.
    let posp = base.sub(HEADER_SLOTS).add(frame::POS);
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
        ($p:expr) => {
            *posp = $p as u64
        };
    }

    macro_rules! pop {
        () => {{
            sp = sp.sub(1);
            *sp
        }};
    }
    macro_rules! push {
        ($v:expr) => {{
            let v: u64 = $v;
            *sp = v;
            sp = sp.add(1);
        }};
    }
    macro_rules! bin {
        (|$a:ident, $b:ident| $e:expr) => {{
            let $b = pop!();
            let $a = *sp.sub(1);
            *sp.sub(1) = $e;
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
                    let o = nonnull!(*sp.sub(1), "ldfld");
                    *sp.sub(1) = load(o.add($off as usize), $k);
                }};
            }
            macro_rules! stfld {
                ($off:expr, $k:expr) => {{
                    let v = pop!();
                    let o = nonnull!(pop!(), "stfld");
                    store(o.add($off as usize), $k, v);
                }};
            }
            macro_rules! ldelem {
                ($k:expr, $size:expr) => {{
                    let i = pop!() as i32;
                    let a = nonnull!(*sp.sub(1), "ldelem");
                    let n = array_len(a);
                    if i < 0 || i as u32 >= n {
                        raise!(Fault::index_out_of_range(i, n));
                    }
                    *sp.sub(1) = load(a.add(ARRAY_DATA_OFFSET + i as usize * $size), $k);
                }};
            }
            macro_rules! stelem {
                ($k:expr, $size:expr) => {{
                    let v = pop!();
                    let i = pop!() as i32;
                    let a = nonnull!(pop!(), "stelem");
                    let n = array_len(a);
                    if i < 0 || i as u32 >= n {
                        raise!(Fault::index_out_of_range(i, n));
                    }
                    store(a.add(ARRAY_DATA_OFFSET + i as usize * $size), $k, v);
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
                        *sp = $a;
                        *sp.add(1) = $b;
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
            match *xs.add(cur) {
                X::SqrtF64 => {
                    *sp.sub(1) = f64b!(*sp.sub(1)).sqrt().to_bits();
                    continue 'dispatch;
                }
                X::LdLd(a, b) => {
                    *sp = *l.add(a as usize);
                    *sp.add(1) = *l.add(b as usize);
                    sp = sp.add(2);
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::LdFld { a, off, k } => {
                    let o = *l.add(a as usize);
                    if o == 0 {
                        raise_at!(1, Fault::null_in("ldfld"));
                    }
                    push!(load((o as *const u8).add(off as usize), k));
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::LdFldW { a, off } => {
                    let o = *l.add(a as usize);
                    if o == 0 {
                        raise_at!(1, Fault::null_in("ldfld"));
                    }
                    push!(load((o as *const u8).add(off as usize), Kind::W64));
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::AddI32LLSt { a, b, c } => {
                    let (va, vb) = (*l.add(a as usize) as i32, *l.add(b as usize) as i32);
                    *l.add(c as usize) = va.wrapping_add(vb) as i64 as u64;
                    pc = cur + 4;
                    continue 'dispatch;
                }
                X::AddI32LCSt { a, c, k } => {
                    *l.add(c as usize) = (*l.add(a as usize) as i32).wrapping_add(k) as i64 as u64;
                    pc = cur + 4;
                    continue 'dispatch;
                }
                X::BinLL { op, a, b } => {
                    push!(fuse::bin(op, *l.add(a as usize), *l.add(b as usize)));
                    pc = cur + 3;
                    continue 'dispatch;
                }
                X::BinLLSt { op, a, b, c } => {
                    *l.add(c as usize) = fuse::bin(op, *l.add(a as usize), *l.add(b as usize));
                    pc = cur + 4;
                    continue 'dispatch;
                }
                X::BinLC { op, a, k } => {
                    push!(fuse::bin(op, *l.add(a as usize), k));
                    pc = cur + 3;
                    continue 'dispatch;
                }
                X::BinLCSt { op, a, c, k } => {
                    *l.add(c as usize) = fuse::bin(op, *l.add(a as usize), k);
                    pc = cur + 4;
                    continue 'dispatch;
                }
                X::BinSL { op, b } => {
                    *sp.sub(1) = fuse::bin(op, *sp.sub(1), *l.add(b as usize));
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::BinSLSt { op, b, c } => {
                    let a = pop!();
                    *l.add(c as usize) = fuse::bin(op, a, *l.add(b as usize));
                    pc = cur + 3;
                    continue 'dispatch;
                }
                X::BinSt { op, c } => {
                    let b = pop!();
                    let a = pop!();
                    *l.add(c as usize) = fuse::bin(op, a, b);
                    pc = cur + 2;
                    continue 'dispatch;
                }
                X::BrLL { c, a, b, t: target } => {
                    let (va, vb) = (*l.add(a as usize), *l.add(b as usize));
                    if cmp(c, va, vb) {
                        fused_jump!(target, va, vb);
                    } else {
                        pc = cur + 3;
                    }
                    continue 'dispatch;
                }
                X::BrLtLL { a, b, t: target } => {
                    let (va, vb) = (*l.add(a as usize), *l.add(b as usize));
                    if (va as i64) < (vb as i64) {
                        fused_jump!(target, va, vb);
                    } else {
                        pc = cur + 3;
                    }
                    continue 'dispatch;
                }
                X::BrGeLL { a, b, t: target } => {
                    let (va, vb) = (*l.add(a as usize), *l.add(b as usize));
                    if (va as i64) >= (vb as i64) {
                        fused_jump!(target, va, vb);
                    } else {
                        pc = cur + 3;
                    }
                    continue 'dispatch;
                }
                X::BrLC { c, a, t: target, k } => {
                    let va = *l.add(a as usize);
                    if cmp(c, va, k) {
                        fused_jump!(target, va, k);
                    } else {
                        pc = cur + 3;
                    }
                    continue 'dispatch;
                }
                X::LdElemLL { a, i, k, size } => {
                    let arr = *l.add(a as usize) as *mut u8;
                    let i = *l.add(i as usize) as i32;
                    if arr.is_null() {
                        raise_at!(2, Fault::null_in("ldelem"));
                    }
                    let n = array_len(arr);
                    if i < 0 || i as u32 >= n {
                        raise_at!(2, Fault::index_out_of_range(i, n));
                    }
                    push!(load(
                        arr.add(ARRAY_DATA_OFFSET + i as usize * size as usize),
                        k
                    ));
                    pc = cur + 3;
                    continue 'dispatch;
                }
                X::Nop => {}
                X::Unreachable => fault!(
                    FaultKind::Exception,
                    "internal error: unreachable instruction executed"
                ),
                X::Const(v) => push!(v),
                X::Ld(i) => push!(*l.add(i as usize)),
                X::St(i) => *l.add(i as usize) = pop!(),
                X::StU8(i) => *l.add(i as usize) = pop!() & 0xFF,
                X::StBool(i) => *l.add(i as usize) = (pop!() as u32 != 0) as u64,
                X::Dup => {
                    let v = *sp.sub(1);
                    push!(v)
                }
                X::Pop => sp = sp.sub(1),
                X::AddI32 => bin!(|a, b| (a as i32).wrapping_add(b as i32) as i64 as u64),
                X::SubI32 => bin!(|a, b| (a as i32).wrapping_sub(b as i32) as i64 as u64),
                X::MulI32 => bin!(|a, b| (a as i32).wrapping_mul(b as i32) as i64 as u64),
                ins @ (X::DivI32 | X::RemI32) => {
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
                }
                ins @ (X::DivUnI32 | X::RemUnI32) => {
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
                }
                X::NegI32 => *sp.sub(1) = (*sp.sub(1) as i32).wrapping_neg() as i64 as u64,
                X::AddI64 => bin!(|a, b| a.wrapping_add(b)),
                X::SubI64 => bin!(|a, b| a.wrapping_sub(b)),
                X::MulI64 => bin!(|a, b| a.wrapping_mul(b)),
                ins @ (X::DivI64 | X::RemI64) => {
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
                }
                ins @ (X::DivUnI64 | X::RemUnI64) => {
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
                }
                X::NegI64 => *sp.sub(1) = (*sp.sub(1) as i64).wrapping_neg() as u64,
                X::AddF32 => bin!(|a, b| (f32b!(a) + f32b!(b)).to_bits() as u64),
                X::SubF32 => bin!(|a, b| (f32b!(a) - f32b!(b)).to_bits() as u64),
                X::MulF32 => bin!(|a, b| (f32b!(a) * f32b!(b)).to_bits() as u64),
                X::DivF32 => bin!(|a, b| (f32b!(a) / f32b!(b)).to_bits() as u64),
                X::RemF32 => bin!(|a, b| (f32b!(a) % f32b!(b)).to_bits() as u64),
                X::NegF32 => *sp.sub(1) = (-f32b!(*sp.sub(1))).to_bits() as u64,
                X::AddF64 => bin!(|a, b| (f64b!(a) + f64b!(b)).to_bits()),
                X::SubF64 => bin!(|a, b| (f64b!(a) - f64b!(b)).to_bits()),
                X::MulF64 => bin!(|a, b| (f64b!(a) * f64b!(b)).to_bits()),
                X::DivF64 => bin!(|a, b| (f64b!(a) / f64b!(b)).to_bits()),
                X::RemF64 => bin!(|a, b| (f64b!(a) % f64b!(b)).to_bits()),
                X::NegF64 => *sp.sub(1) = (-f64b!(*sp.sub(1))).to_bits(),
                // sign-extended i32s stay sign-extended under bitwise ops
                X::And => bin!(|a, b| a & b),
                X::Or => bin!(|a, b| a | b),
                X::Xor => bin!(|a, b| a ^ b),
                X::Not => *sp.sub(1) = !*sp.sub(1),
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
                X::Conv(src, op) => match conv(src, op, *sp.sub(1)) {
                    Ok(v) => *sp.sub(1) = v,
                    Err(f) => {
                        t.raise(f);
                        break 'dispatch cur;
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
                        pc = *code.switch_targets.get_unchecked((start + v) as usize) as usize;
                        back_edge!(pc, cur);
                    }
                }
                X::Ret(k) => return k.narrow(*sp.sub(1)),
                X::RetVoid => return 0,
                X::Call {
                    mh: callee,
                    nargs,
                    ret,
                    this,
                } => {
                    sp = sp.sub(nargs as usize);
                    if this && *sp == 0 {
                        raise!(Fault::null_receiver(&rt.method_name(&*callee)));
                    }
                    at!(cur);
                    let r = invoke(t, callee, sp);
                    if t.has_pending() {
                        break 'dispatch cur;
                    }
                    if ret {
                        push!(r)
                    }
                }
                X::CallVirt { slot, nargs, ret } => {
                    sp = sp.sub(nargs as usize);
                    let recv = nonnull!(*sp, "callvirt receiver");
                    let callee = *(*class_of(recv)).vtable.add(slot as usize);
                    at!(cur);
                    let r = invoke(t, callee, sp);
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
                    sp = sp.sub(nargs as usize);
                    let recv = nonnull!(*sp, "callvirt receiver");
                    let Some(callee) = rt.dispatch_interface(recv, iface, idx as usize) else {
                        raise!(Fault::not_implemented());
                    };
                    at!(cur);
                    let r = invoke(t, callee, sp);
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
                    let obj = match rt.alloc_object_in(t, (*ctor).class) {
                        Ok(o) => o,
                        Err(f) => {
                            t.raise(f);
                            break 'dispatch cur;
                        }
                    };
                    let n = nargs as usize;
                    let a = sp.sub(n);
                    std::ptr::copy(a, a.add(1), n);
                    *a = obj as u64;
                    at!(cur as u64 | frame::POS_CTOR);
                    invoke(t, ctor, a);
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
                X::Ldsfld(addr, k) => push!(load(addr, k)),
                X::Stsfld(addr, k) => store(addr, k, pop!()),
                X::Isinst(cd) => {
                    let o = *sp.sub(1);
                    if o != 0 && !(*class_of(o as *const u8)).instance_of(&*cd) {
                        *sp.sub(1) = 0;
                    }
                }
                X::Castclass(cd) => {
                    let o = *sp.sub(1);
                    if o != 0 {
                        let oc = &*class_of(o as *const u8);
                        if !oc.instance_of(&*cd) {
                            raise!(Fault::bad_cast(oc.name(), (*cd).name()));
                        }
                    }
                }
                X::Newarr(cd) => {
                    let n = pop!() as i32;
                    if n < 0 {
                        raise!(Fault::negative_length(n));
                    }
                    at!(cur);
                    match rt.alloc_array(cd, n as i64) {
                        Ok(a) => push!(a as u64),
                        Err(f) => {
                            t.raise(f);
                            break 'dispatch cur;
                        }
                    }
                }
                X::Ldlen => {
                    let a = nonnull!(*sp.sub(1), "ldlen");
                    *sp.sub(1) = array_len(a) as i32 as i64 as u64;
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
                    let o = nonnull!(*sp.sub(nv + 1), "atomic field access");
                    let r = atomic_op(o.add(off as usize), op, kind, sp.sub(nv));
                    sp = sp.sub(nv + 1);
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
                    let r = atomic_op(addr, op, kind, sp.sub(nv));
                    sp = sp.sub(nv);
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
                    let cu = cur as u32;
                    eh.caught.retain(|c| {
                        let r = &code.regions[c.region];
                        !r.in_handler(cu) || r.in_handler(target)
                    });
                    match next_finally(code, 0, cu, target) {
                        Some(ri) => {
                            eh.conts.push(Cont::Leave {
                                region: ri,
                                from: cu,
                                target,
                            });
                            pc = code.regions[ri].handler_start as usize;
                        }
                        None => pc = target as usize,
                    }
                }
                X::Endfinally => {
                    sp = s;
                    match eh.conts.pop() {
                        Some(Cont::Leave {
                            region,
                            from,
                            target,
                        }) => match next_finally(code, region + 1, from, target) {
                            Some(ri) => {
                                eh.conts.push(Cont::Leave {
                                    region: ri,
                                    from,
                                    target,
                                });
                                pc = code.regions[ri].handler_start as usize;
                            }
                            None => pc = target as usize,
                        },
                        Some(Cont::Unwind {
                            region,
                            from,
                            exc,
                            trace,
                        }) => {
                            t.pending = exc;
                            t.trace = trace;
                            // A copy, so that `pc` itself is never
                            // address-taken (it stays in a register).
                            let mut npc = pc;
                            let found = dispatch(
                                t,
                                code,
                                &mut eh.conts,
                                &mut eh.caught,
                                region + 1,
                                from,
                                cur as u32,
                                &mut npc,
                            );
                            pc = npc;
                            if found {
                                sp = s;
                                if t.has_pending() {
                                    push!(take_pending(t));
                                }
                                if handler_poll(t, code, posp, pc) {
                                    break 'dispatch pc;
                                }
                                continue 'dispatch;
                            }
                            break 'outer;
                        }
                        None => fault!(FaultKind::Exception, "endfinally outside a finally block"),
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
            if handler_poll(t, code, posp, pc) {
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

/// Is instruction `pc` the start of a handler placed before its try block?
/// The binary format allows that (kasm always puts a handler after its
/// try), and then every exception that reaches the handler moves control
/// backward without a branch: a loop `throw` → handler → `leave` forward
/// into the try → `throw` has no backward branch at all. Both modes poll
/// on entering such a handler (compiled code in its landing block), so the
/// loop still reaches safepoints and can be interrupted. Handlers after
/// their try are only reached forward (an exception edge goes from inside
/// a try to its handler, or from inside a handler to an enclosing try's
/// handler, which lies after that try): every other cycle contains a
/// backward branch, `switch` or `leave`, which polls.
pub(crate) fn backward_handler(code: &Code, pc: usize) -> bool {
    code.regions
        .iter()
        .any(|r| r.handler_start as usize == pc && r.handler_start < r.try_start)
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

/// The next `finally` (from region `start` on) that a `leave` from `from`
/// to `target` passes through.
pub(crate) fn next_finally(code: &Code, start: usize, from: u32, target: u32) -> Option<usize> {
    (start..code.regions.len()).find(|&i| {
        let r = &code.regions[i];
        r.catch.is_null() && r.in_try(from) && !r.in_try(target)
    })
}

/// Find a handler for the pending exception thrown at `from` (searching
/// regions from `start`). On success, sets `pc` to the handler, records the
/// catch or the finally continuation, and returns true; for a catch the
/// exception stays pending (the caller moves it onto the stack), for a finally
/// it is parked in the continuation. `at` is the current instruction (used to
/// abandon handler blocks the exception leaves).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch(
    t: &mut ThreadCtx,
    code: &Code,
    conts: &mut Vec<Cont>,
    caught: &mut Vec<Caught>,
    start: usize,
    from: u32,
    at: u32,
    pc: &mut usize,
) -> bool {
    let exc = t.pending;
    for i in start..code.regions.len() {
        let r = &code.regions[i];
        if !r.in_try(from) {
            continue;
        }
        let is_catch = !r.catch.is_null();
        if is_catch {
            // SAFETY: pending exceptions are live objects; catch classes live descriptors.
            let matches = unsafe { (*class_of(exc)).instance_of(&*r.catch) };
            if !matches {
                continue;
            }
        }
        let hs = r.handler_start;
        let leaves = |ri: usize| {
            let rr = &code.regions[ri];
            (rr.in_handler(at) || rr.in_handler(from)) && !rr.in_handler(hs)
        };
        conts.retain(|c| !leaves(c.region()));
        caught.retain(|c| !leaves(c.region));
        *pc = hs as usize;
        if is_catch {
            caught.push(Caught {
                region: i,
                exc,
                trace: t.trace.clone(),
            });
        } else {
            let trace = std::mem::take(&mut t.trace);
            conts.push(Cont::Unwind {
                region: i,
                from,
                exc,
                trace,
            });
            t.pending = std::ptr::null_mut();
        }
        return true;
    }
    false
}

/// Perform an atomic operation; `vals` points at its value operands.
///
/// # Safety
/// `p` is a live, aligned atomic field of `kind`; `vals` holds the operands.
unsafe fn atomic_op(p: *mut u8, op: AOp, kind: Kind, vals: *const u64) -> Option<u64> {
    // SAFETY: caller contract.
    unsafe {
        match kind {
            Kind::ABool | Kind::AU8 | Kind::Bool | Kind::U8 => {
                let a = &*(p as *const AtomicU8);
                let norm = |v: u64| kind.narrow(v) as u8;
                match op {
                    AOp::Load => Some(a.load(Ordering::SeqCst) as u64),
                    AOp::Store => {
                        a.store(norm(*vals), Ordering::SeqCst);
                        None
                    }
                    AOp::Add => Some(a.fetch_add(*vals as u8, Ordering::SeqCst) as u64),
                    AOp::Cas => {
                        let r = a.compare_exchange(
                            norm(*vals),
                            norm(*vals.add(1)),
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        Some(r.unwrap_or_else(|x| x) as u64)
                    }
                }
            }
            _ => {
                let a = &*(p as *const AtomicU64);
                match op {
                    AOp::Load => Some(a.load(Ordering::SeqCst)),
                    AOp::Store => {
                        a.store(*vals, Ordering::SeqCst);
                        None
                    }
                    AOp::Add => Some(a.fetch_add(*vals, Ordering::SeqCst)),
                    AOp::Cas => {
                        let r = a.compare_exchange(
                            *vals,
                            *vals.add(1),
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        Some(r.unwrap_or_else(|x| x))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c32(op: Op, v: i32) -> Result<u64, Fault> {
        conv(Src::I32, op, v as i64 as u64)
    }

    #[test]
    fn conversions() {
        assert_eq!(c32(Op::ConvI64, -1).unwrap(), u64::MAX);
        assert_eq!(c32(Op::ConvU64, -1).unwrap(), 0xFFFF_FFFF);
        assert_eq!(c32(Op::ConvU8, 300).unwrap(), 44);
        assert_eq!(c32(Op::ConvBool, 0).unwrap(), 0);
        assert_eq!(c32(Op::ConvBool, -5).unwrap(), 1);
        assert_eq!(conv(Src::I64, Op::ConvI32, 0x1_0000_0005).unwrap(), 5);
        assert_eq!(conv(Src::I64, Op::ConvI32, 0xFFFF_FFFF).unwrap(), u64::MAX);
        let f = |x: f64| x.to_bits();
        assert_eq!(conv(Src::F64, Op::ConvI32, f(f64::NAN)).unwrap(), 0);
        assert_eq!(
            conv(Src::F64, Op::ConvI32, f(1e20)).unwrap(),
            i32::MAX as u64
        );
        assert_eq!(
            conv(Src::F64, Op::ConvI32, f(-1e20)).unwrap(),
            i32::MIN as i64 as u64
        );
        assert_eq!(conv(Src::F64, Op::ConvI32, f(-2.9)).unwrap(), -2i64 as u64);
        assert_eq!(conv(Src::F64, Op::ConvU64, f(-5.0)).unwrap(), 0);
        assert_eq!(conv(Src::F64, Op::ConvU8, f(300.0)).unwrap(), 255);
        assert_eq!(conv(Src::F64, Op::ConvBool, f(f64::NAN)).unwrap(), 1);
        assert_eq!(conv(Src::F64, Op::ConvBool, f(0.0)).unwrap(), 0);
        assert_eq!(conv(Src::F64, Op::ConvBool, f(-0.0)).unwrap(), 0);
        assert_eq!(c32(Op::ConvChar, 0x41).unwrap(), 0x41);
        assert_eq!(
            c32(Op::ConvChar, 0xD800).unwrap_err().kind,
            FaultKind::InvalidCast
        );
        assert_eq!(
            c32(Op::ConvChar, -1).unwrap_err().kind,
            FaultKind::InvalidCast
        );
        assert_eq!(
            conv(Src::I64, Op::ConvChar, 0x11_0000).unwrap_err().kind,
            FaultKind::InvalidCast
        );
        assert_eq!(
            f64::from_bits(c32(Op::ConvF64Un, -1).unwrap()),
            4294967295.0
        );
        assert_eq!(f64::from_bits(c32(Op::ConvF64, -1).unwrap()), -1.0);
        assert_eq!(
            f32::from_bits(conv(Src::I64, Op::ConvF32Un, u64::MAX).unwrap() as u32),
            18446744073709551615.0f32
        );
    }

    #[test]
    fn comparisons() {
        let n = f64::NAN.to_bits();
        let one = 1.0f64.to_bits();
        assert!(!cmp(Cmp::EqF64, n, n));
        assert!(cmp(Cmp::NeF64, n, one));
        assert!(!cmp(Cmp::LtF64, n, one));
        assert!(cmp(Cmp::LtUnF64, n, one));
        assert!(cmp(Cmp::GeUnF64, one, n));
        assert!(!cmp(Cmp::GeUnF64, 0f64.to_bits(), one));
        let m1 = -1i64 as u64;
        assert!(cmp(Cmp::Lt, m1, 0));
        assert!(cmp(Cmp::GtUn32, m1, 5));
        assert!(cmp(Cmp::GtUn64, m1, 5));
        let nf = f32::NAN.to_bits() as u64;
        assert!(cmp(Cmp::LeUnF32, nf, 0));
        assert!(!cmp(Cmp::LeF32, nf, 0));
    }

    #[test]
    fn kinds_store_and_load() {
        let mut buf = [0u64; 2];
        let p = buf.as_mut_ptr() as *mut u8;
        // SAFETY: `buf` is 16 aligned bytes.
        unsafe {
            store(p, Kind::U8, 300);
            assert_eq!(load(p, Kind::U8), 44);
            store(p, Kind::Bool, -7i64 as u64);
            assert_eq!(load(p, Kind::Bool), 1);
            store(p, Kind::I32, -3i64 as u64);
            assert_eq!(load(p, Kind::I32), -3i64 as u64);
            store(p, Kind::AW64, 42);
            assert_eq!(load(p, Kind::AW64), 42);
            let v = [5u64, 9];
            assert_eq!(atomic_op(p, AOp::Cas, Kind::AW64, v.as_ptr()), Some(42));
            assert_eq!(load(p, Kind::W64), 42);
            let v = [42u64, 9];
            assert_eq!(atomic_op(p, AOp::Cas, Kind::AW64, v.as_ptr()), Some(42));
            assert_eq!(load(p, Kind::W64), 9);
            store(p, Kind::AU8, 255);
            assert_eq!(
                atomic_op(p, AOp::Add, Kind::AU8, [2u64].as_ptr()),
                Some(255)
            );
            assert_eq!(load(p, Kind::AU8), 1);
        }
    }

    #[test]
    fn insn_is_compact() {
        assert!(std::mem::size_of::<I>() <= 24);
        assert!(std::mem::size_of::<X>() <= 24);
    }
}
