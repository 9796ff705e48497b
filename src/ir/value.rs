//! Value semantics shared by both tiers: storage kinds and how a slot value
//! is loaded from and stored to memory ([`Kind`], [`load`], [`store`]),
//! comparisons ([`Cmp`], [`cmp`]), conversions ([`Src`], [`conv`]) and
//! atomic operations ([`AOp`], [`atomic_op`]).
//!
//! Slot representation: `i32` (and `bool`/`u8`/`char`) sign-extended to 64
//! bits, `f32` bits in the low 32, `f64` bits, references and pointers as
//! addresses. The JIT lowers the same operations to Cranelift and is tested
//! against these definitions differentially.

use crate::bytecode::Op;
use crate::library::{Prim, TypeSig};
use crate::vm::fault::Fault;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

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
    pub fn narrow(self, v: u64) -> u64 {
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
pub unsafe fn load(p: *const u8, k: Kind) -> u64 {
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
pub unsafe fn store(p: *mut u8, k: Kind, v: u64) {
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

/// Perform an atomic operation; `vals` points at its value operands.
///
/// # Safety
/// `p` is a live, aligned atomic field of `kind`; `vals` holds the operands.
pub unsafe fn atomic_op(p: *mut u8, op: AOp, kind: Kind, vals: *const u64) -> Option<u64> {
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
    use crate::ir::{I, X};
    use crate::vm::fault::FaultKind;

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
