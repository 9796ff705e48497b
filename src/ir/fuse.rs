//! The interpreter's executable form: [`I`] plus superinstructions.
//!
//! [`Code::insns`] is index-parallel to the verifier's instructions and is
//! also the JIT's input, so it stays one plain [`I`] per bytecode
//! instruction. The interpreter runs [`Code::xs`] instead, built from it by
//! [`build`]: the same array, except that the first instruction of some
//! common short sequences (`ldloc a; ldloc b; add; stloc c`, `ldloc i; ldc 1;
//! blt loop`, `ldloc o; ldfld f`, ...) is replaced by one fused instruction
//! ([`X`]) that does the whole sequence and continues after it.
//!
//! Invariants (what makes a fused instruction equivalent to its sequence):
//!
//! - **No jump lands inside a sequence**: only the first instruction of a
//!   sequence may be a branch, `switch` or `leave` target or a region bound
//!   (try start/end, handler start/end). The later instructions keep their
//!   plain form in `xs` (so every index still holds a valid instruction),
//!   but they are never reached through the fused one.
//! - **Indices are unchanged**: a fused instruction at index `i` covering
//!   `n` instructions continues at `i + n`; a fault in its `k`-th part is
//!   raised at index `i + k`, so handler search and the stack state the
//!   collector assumes are those of the original instruction.
//! - **No safepoint inside, except a fused branch's back-edge poll**: the
//!   parts are loads of locals and constants, arithmetic that cannot fault,
//!   stores to locals, field and element loads; the only safepoint is the
//!   poll of a taken backward branch ([`X::BrLL`], [`X::BrLC`]), which first
//!   writes its two operands to their evaluation-stack slots and records
//!   the branch's own index, so the frame holds exactly the verifier's stack
//!   before the branch (the collector reads references from there).
//! - **Unreachable instructions are never part of a sequence.**
//!
//! Local-variable indices in fused forms are `u16`; a method with more
//! variables simply fuses fewer sequences.

use super::{AOp, Cmp, Code, Kind, Src, I};
use crate::bytecode::Op;
use crate::vm::tables::ClassDesc;
use crate::vm::tables::MethodHandle;

/// Pure binary operations (cannot fault) that fused instructions apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Bin {
    AddI32,
    SubI32,
    MulI32,
    AddI64,
    SubI64,
    MulI64,
    AddF32,
    SubF32,
    MulF32,
    DivF32,
    AddF64,
    SubF64,
    MulF64,
    DivF64,
    And,
    Or,
    Xor,
    ShlI32,
    ShrI32,
    ShrUnI32,
    ShlI64,
    ShrI64,
    ShrUnI64,
}

impl Bin {
    /// The fusable binary operation `ins` is, if any.
    fn of(ins: &I) -> Option<Bin> {
        Some(match ins {
            I::AddI32 => Bin::AddI32,
            I::SubI32 => Bin::SubI32,
            I::MulI32 => Bin::MulI32,
            I::AddI64 => Bin::AddI64,
            I::SubI64 => Bin::SubI64,
            I::MulI64 => Bin::MulI64,
            I::AddF32 => Bin::AddF32,
            I::SubF32 => Bin::SubF32,
            I::MulF32 => Bin::MulF32,
            I::DivF32 => Bin::DivF32,
            I::AddF64 => Bin::AddF64,
            I::SubF64 => Bin::SubF64,
            I::MulF64 => Bin::MulF64,
            I::DivF64 => Bin::DivF64,
            I::And => Bin::And,
            I::Or => Bin::Or,
            I::Xor => Bin::Xor,
            I::ShlI32 => Bin::ShlI32,
            I::ShrI32 => Bin::ShrI32,
            I::ShrUnI32 => Bin::ShrUnI32,
            I::ShlI64 => Bin::ShlI64,
            I::ShrI64 => Bin::ShrI64,
            I::ShrUnI64 => Bin::ShrUnI64,
            _ => return None,
        })
    }
}

/// Apply `op` to two slot values (the same results as the plain [`I`] forms).
#[inline(always)]
pub fn bin(op: Bin, a: u64, b: u64) -> u64 {
    let f32b = |v: u64| f32::from_bits(v as u32);
    let f64b = f64::from_bits;
    match op {
        Bin::AddI32 => (a as i32).wrapping_add(b as i32) as i64 as u64,
        Bin::SubI32 => (a as i32).wrapping_sub(b as i32) as i64 as u64,
        Bin::MulI32 => (a as i32).wrapping_mul(b as i32) as i64 as u64,
        Bin::AddI64 => a.wrapping_add(b),
        Bin::SubI64 => a.wrapping_sub(b),
        Bin::MulI64 => a.wrapping_mul(b),
        Bin::AddF32 => (f32b(a) + f32b(b)).to_bits() as u64,
        Bin::SubF32 => (f32b(a) - f32b(b)).to_bits() as u64,
        Bin::MulF32 => (f32b(a) * f32b(b)).to_bits() as u64,
        Bin::DivF32 => (f32b(a) / f32b(b)).to_bits() as u64,
        Bin::AddF64 => (f64b(a) + f64b(b)).to_bits(),
        Bin::SubF64 => (f64b(a) - f64b(b)).to_bits(),
        Bin::MulF64 => (f64b(a) * f64b(b)).to_bits(),
        Bin::DivF64 => (f64b(a) / f64b(b)).to_bits(),
        Bin::And => a & b,
        Bin::Or => a | b,
        Bin::Xor => a ^ b,
        Bin::ShlI32 => (a as i32).wrapping_shl(b as u32 & 31) as i64 as u64,
        Bin::ShrI32 => ((a as i32) >> (b as u32 & 31)) as i64 as u64,
        Bin::ShrUnI32 => ((a as u32) >> (b as u32 & 31)) as i32 as i64 as u64,
        Bin::ShlI64 => a << (b as u32 & 63),
        Bin::ShrI64 => ((a as i64) >> (b as u32 & 63)) as u64,
        Bin::ShrUnI64 => a >> (b as u32 & 63),
    }
}

macro_rules! define_x {
    ($( $(#[$doc:meta])* $name:ident $( ( $($a:ident : $t:ty),* ) )? $( { $($f:ident : $ft:ty),* } )? ,)*) => {
        /// One instruction of the interpreter's executable form: the plain
        /// instructions of [`I`] (same names and meaning) and the fused and
        /// specialised forms. Local indices are frame slot indices (arguments
        /// first), as in [`I::Ld`] / [`I::St`].
        #[derive(Clone, Copy, Debug)]
        #[allow(missing_docs)]
        pub enum X {
            // The plain instructions: the variants of `I` (the same table),
            // flattened so that dispatch is one jump on one tag.
            $( $(#[$doc])* $name $( ( $($t),* ) )? $( { $($f: $ft),* } )? ,)*
            /// A call of the runtime's own `Std::sqrt` native: `f64` square root
            /// (IEEE, correctly rounded, as the native computes it).
            SqrtF64,
            /// `ldloc a; ldloc b`.
            LdLd(u32, u32),
            /// `ldloc a; ldfld f` (`off`, `k`: the field).
            LdFld {
                /// The local holding the object.
                a: u32,
                /// Field byte offset.
                off: u32,
                /// Field kind.
                k: Kind,
            },
            /// `ldloc a; ldfld f` for an 8-byte plain field.
            LdFldW {
                /// The local holding the object.
                a: u32,
                /// Field byte offset.
                off: u32,
            },
            /// `ldfld` of an 8-byte plain field (byte offset).
            LdfldW(u32),
            /// `ldfld` of an `i32`/`char` field (byte offset).
            LdfldI(u32),
            /// `stfld` of an 8-byte plain field (byte offset).
            StfldW(u32),
            /// `stfld` of an `i32`/`char` field (byte offset).
            StfldI(u32),
            /// `ldelem` of `i32`/`char` elements.
            LdelemI32,
            /// `ldelem` of `u8`/`bool` elements.
            LdelemU8,
            /// `ldelem` of 8-byte plain elements.
            LdelemW64,
            /// `stelem` of `i32`/`char` elements.
            StelemI32,
            /// `stelem` of `bool` elements.
            StelemBool,
            /// `stelem` of `u8` elements.
            StelemU8,
            /// `stelem` of 8-byte plain elements.
            StelemW64,
            /// `ldloc a; ldloc b; blt t` on integers, references or pointers
            /// (signed 64-bit order of the slot values, as [`Cmp::Lt`]).
            BrLtLL {
                /// Left operand's local.
                a: u16,
                /// Right operand's local.
                b: u16,
                /// Target instruction index.
                t: u32,
            },
            /// `ldloc a; ldloc b; bge t` (as [`Cmp::Ge`]).
            BrGeLL {
                /// Left operand's local.
                a: u16,
                /// Right operand's local.
                b: u16,
                /// Target instruction index.
                t: u32,
            },
            /// `ldloc a; ldloc b; add; stloc c` on `i32`.
            AddI32LLSt {
                /// Left operand's local.
                a: u16,
                /// Right operand's local.
                b: u16,
                /// Destination local.
                c: u16,
            },
            /// `ldloc a; ldc.i32 k; add; stloc c` on `i32` (also `sub` of `-k`).
            AddI32LCSt {
                /// Operand's local.
                a: u16,
                /// Destination local.
                c: u16,
                /// The constant.
                k: i32,
            },
            /// `ldloc a; ldloc b; <op>`.
            BinLL {
                /// The operation.
                op: Bin,
                /// Left operand's local.
                a: u16,
                /// Right operand's local.
                b: u16,
            },
            /// `ldloc a; ldloc b; <op>; stloc c`.
            BinLLSt {
                /// The operation.
                op: Bin,
                /// Left operand's local.
                a: u16,
                /// Right operand's local.
                b: u16,
                /// Destination local.
                c: u16,
            },
            /// `ldloc a; ldc k; <op>`.
            BinLC {
                /// The operation.
                op: Bin,
                /// Left operand's local.
                a: u16,
                /// The constant (slot value).
                k: u64,
            },
            /// `ldloc a; ldc k; <op>; stloc c`.
            BinLCSt {
                /// The operation.
                op: Bin,
                /// Left operand's local.
                a: u16,
                /// Destination local.
                c: u16,
                /// The constant (slot value).
                k: u64,
            },
            /// `ldloc b; <op>` (left operand on the stack).
            BinSL {
                /// The operation.
                op: Bin,
                /// Right operand's local.
                b: u32,
            },
            /// `ldloc b; <op>; stloc c` (left operand on the stack).
            BinSLSt {
                /// The operation.
                op: Bin,
                /// Right operand's local.
                b: u16,
                /// Destination local.
                c: u16,
            },
            /// `<op>; stloc c` (both operands on the stack).
            BinSt {
                /// The operation.
                op: Bin,
                /// Destination local.
                c: u32,
            },
            /// `ldloc a; ldloc b; b<c> t`.
            BrLL {
                /// The condition.
                c: Cmp,
                /// Left operand's local.
                a: u16,
                /// Right operand's local.
                b: u16,
                /// Target instruction index.
                t: u32,
            },
            /// `ldloc a; ldc k; b<c> t`.
            BrLC {
                /// The condition.
                c: Cmp,
                /// Left operand's local.
                a: u16,
                /// Target instruction index.
                t: u32,
                /// The constant (slot value).
                k: u64,
            },
            /// `ldloc a; ldloc i; ldelem` (`k`, `size`: the element).
            LdElemLL {
                /// The local holding the array.
                a: u16,
                /// The local holding the index.
                i: u16,
                /// Element kind.
                k: Kind,
                /// Element size in bytes.
                size: u8,
            },
        }

        /// The plain form of `i` in the executable form.
        fn flat(i: I) -> X {
            match i {
                $( I::$name $( ( $($a),* ) )? $( { $($f),* } )? => X::$name $( ( $($a),* ) )? $( { $($f),* } )? ,)*
            }
        }
    };
}

crate::for_each_insn!(define_x);

impl X {
    /// How many plain instructions this one covers.
    pub fn covers(&self) -> u32 {
        match self {
            X::SqrtF64
            | X::LdfldW(_)
            | X::LdfldI(_)
            | X::StfldW(_)
            | X::StfldI(_)
            | X::LdelemI32
            | X::LdelemU8
            | X::LdelemW64
            | X::StelemI32
            | X::StelemBool
            | X::StelemU8
            | X::StelemW64 => 1,
            X::LdLd(..)
            | X::LdFld { .. }
            | X::LdFldW { .. }
            | X::BinSL { .. }
            | X::BinSt { .. } => 2,
            X::BinLL { .. }
            | X::BrLtLL { .. }
            | X::BrGeLL { .. }
            | X::BinLC { .. }
            | X::BinSLSt { .. }
            | X::BrLL { .. }
            | X::BrLC { .. }
            | X::LdElemLL { .. } => 3,
            X::BinLLSt { .. } | X::BinLCSt { .. } | X::AddI32LLSt { .. } | X::AddI32LCSt { .. } => {
                4
            }
            // The plain instructions.
            _ => 1,
        }
    }
}

/// Build the executable form of `code` (see the module documentation).
pub fn build(code: &Code) -> Vec<X> {
    let insns = &code.insns;
    let n = insns.len();
    // Indices something can jump to (or a region bound).
    let mut target = vec![false; n + 1];
    let mut mark = |i: u32| {
        if let Some(t) = target.get_mut(i as usize) {
            *t = true;
        }
    };
    for ins in insns {
        match *ins {
            I::Br(t) | I::Brtrue(t) | I::Brfalse(t) | I::BrCmp(_, t) | I::Leave(t) => mark(t),
            _ => {}
        }
    }
    for &t in &code.switch_targets {
        mark(t);
    }
    for r in &code.regions {
        mark(r.try_start);
        mark(r.try_end);
        mark(r.handler_start);
        mark(r.handler_end);
    }
    let ld = |i: usize| match insns.get(i) {
        Some(I::Ld(a)) => Some(*a),
        _ => None,
    };
    let ld16 = |i: usize| ld(i).and_then(|a| u16::try_from(a).ok());
    let st16 = |i: usize| match insns.get(i) {
        Some(I::St(c)) => u16::try_from(*c).ok(),
        _ => None,
    };
    let cst = |i: usize| match insns.get(i) {
        Some(I::Const(k)) => Some(*k),
        _ => None,
    };
    let binop = |i: usize| insns.get(i).and_then(Bin::of);
    let mut xs: Vec<X> = insns.iter().map(|&i| flat(i)).collect();
    let mut i = 0;
    while i < n {
        // `free(m)`: instructions i+1 .. i+m-1 exist and are not targets.
        let free = |m: usize| i + m <= n && (i + 1..i + m).all(|j| !target[j]);
        let x = fuse_at(i, &free, &ld, &ld16, &st16, &cst, &binop, insns);
        if let Some(x) = x {
            i += x.covers() as usize;
            let start = i - x.covers() as usize;
            xs[start] = x;
            continue;
        }
        xs[i] = match insns[i] {
            I::Call { mh, .. } if super::is_sqrt(mh) => X::SqrtF64,
            I::Ldfld(off, Kind::W64) => X::LdfldW(off),
            I::Ldfld(off, Kind::I32) => X::LdfldI(off),
            I::Stfld(off, Kind::W64) => X::StfldW(off),
            I::Stfld(off, Kind::I32) => X::StfldI(off),
            I::Ldelem(Kind::I32, 4) => X::LdelemI32,
            I::Ldelem(Kind::Bool | Kind::U8, 1) => X::LdelemU8,
            I::Ldelem(Kind::W64, 8) => X::LdelemW64,
            I::Stelem(Kind::I32, 4) => X::StelemI32,
            I::Stelem(Kind::Bool, 1) => X::StelemBool,
            I::Stelem(Kind::U8, 1) => X::StelemU8,
            I::Stelem(Kind::W64, 8) => X::StelemW64,
            ins => flat(ins),
        };
        i += 1;
    }
    xs
}

/// The fused instruction starting at `i`, if a pattern matches there.
#[allow(clippy::too_many_arguments)]
fn fuse_at(
    i: usize,
    free: &dyn Fn(usize) -> bool,
    ld: &dyn Fn(usize) -> Option<u32>,
    ld16: &dyn Fn(usize) -> Option<u16>,
    st16: &dyn Fn(usize) -> Option<u16>,
    cst: &dyn Fn(usize) -> Option<u64>,
    binop: &dyn Fn(usize) -> Option<Bin>,
    insns: &[I],
) -> Option<X> {
    if let Some(a) = ld16(i) {
        // ldloc a; ldloc b; ...
        if let Some(b) = ld16(i + 1) {
            if free(4) {
                if let (Some(op), Some(c)) = (binop(i + 2), st16(i + 3)) {
                    if op == Bin::AddI32 {
                        return Some(X::AddI32LLSt { a, b, c });
                    }
                    return Some(X::BinLLSt { op, a, b, c });
                }
            }
            if free(3) {
                if let Some(op) = binop(i + 2) {
                    return Some(X::BinLL { op, a, b });
                }
                match insns[i + 2] {
                    I::BrCmp(Cmp::Lt, t) => return Some(X::BrLtLL { a, b, t }),
                    I::BrCmp(Cmp::Ge, t) => return Some(X::BrGeLL { a, b, t }),
                    I::BrCmp(c, t) => return Some(X::BrLL { c, a, b, t }),
                    I::Ldelem(k, size) => return Some(X::LdElemLL { a, i: b, k, size }),
                    _ => {}
                }
            }
        }
        // ldloc a; ldc k; ...
        if let Some(k) = cst(i + 1) {
            if free(4) {
                if let (Some(op), Some(c)) = (binop(i + 2), st16(i + 3)) {
                    // An `i32` constant is a sign-extended slot value.
                    let k32 = k as i32;
                    if k32 as i64 as u64 == k {
                        if op == Bin::AddI32 {
                            return Some(X::AddI32LCSt { a, c, k: k32 });
                        }
                        if op == Bin::SubI32 {
                            let k = k32.wrapping_neg();
                            return Some(X::AddI32LCSt { a, c, k });
                        }
                    }
                    return Some(X::BinLCSt { op, a, c, k });
                }
            }
            if free(3) {
                if let Some(op) = binop(i + 2) {
                    return Some(X::BinLC { op, a, k });
                }
                if let I::BrCmp(c, t) = insns[i + 2] {
                    return Some(X::BrLC { c, a, t, k });
                }
            }
        }
        // ldloc b; <op> [; stloc c]
        if free(3) {
            if let (Some(op), Some(c)) = (binop(i + 1), st16(i + 2)) {
                return Some(X::BinSLSt { op, b: a, c });
            }
        }
    }
    if let Some(a) = ld(i) {
        if free(2) {
            if let Some(op) = binop(i + 1) {
                return Some(X::BinSL { op, b: a });
            }
            match insns[i + 1] {
                I::Ldfld(off, Kind::W64) => return Some(X::LdFldW { a, off }),
                I::Ldfld(off, k) => return Some(X::LdFld { a, off, k }),
                I::Ld(b) => return Some(X::LdLd(a, b)),
                _ => {}
            }
        }
    }
    if let Some(op) = binop(i) {
        if free(2) {
            if let Some(I::St(c)) = insns.get(i + 1) {
                return Some(X::BinSt { op, c: *c });
            }
        }
    }
    None
}
