//! The resolved instruction set, defined once ([`for_each_insn!`](crate::for_each_insn)): what
//! both tiers consume. [`I`] is generated from the table; the interpreter's
//! executable form (`fuse::X`) takes the same variants from it and adds its
//! superinstructions, so the two cannot drift apart.
//!
//! One `I` per bytecode instruction, type-specialised by the verifier's
//! stack types: arithmetic split by operand type, branch targets as
//! instruction indices, fields as byte offsets (statics: addresses), calls
//! with the callee's `*const MethodHandle` or its vtable / interface slot.
//! Tuple payloads are named `a0`, `a1` in the table (the names only serve
//! macros that rebuild a variant, such as `fuse::flat`).

use super::value::{AOp, Cmp, Kind, Src};
use crate::bytecode::Op;
use crate::vm::tables::{ClassDesc, MethodHandle};

/// Call `$m! { variants }` with every resolved instruction, in order, as
/// `Name`, `Name(a0: T, a1: U)` or `Name { field: T, ... }`, each with its
/// doc attributes.
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_insn {
    ($m:ident) => {
        $m! {
        Nop,
        #[doc = "Never executed (verifier: unreachable)."]
        Unreachable,
        Const(a0: u64),
        Ld(a0: u32),
        St(a0: u32),
        StU8(a0: u32),
        StBool(a0: u32),
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
        Cmp(a0: Cmp),
        Conv(a0: Src, a1: Op),
        Br(a0: u32),
        Brtrue(a0: u32),
        Brfalse(a0: u32),
        BrCmp(a0: Cmp, a1: u32),
        Switch { start: u32, len: u32 },
        Ret(a0: Kind),
        RetVoid,
        Call { mh: *const MethodHandle, nargs: u16, ret: bool, this: bool },
        CallVirt { slot: u32, nargs: u16, ret: bool },
        CallIface { iface: u32, idx: u16, nargs: u16, ret: bool },
        Newobj { mh: *const MethodHandle, nargs: u16 },
        Ldfld(a0: u32, a1: Kind),
        Stfld(a0: u32, a1: Kind),
        Ldsfld(a0: *mut u8, a1: Kind),
        Stsfld(a0: *mut u8, a1: Kind),
        Isinst(a0: *const ClassDesc),
        Castclass(a0: *const ClassDesc),
        Newarr(a0: *const ClassDesc),
        Ldlen,
        Ldelem(a0: Kind, a1: u8),
        Stelem(a0: Kind, a1: u8),
        Atomic { op: AOp, kind: Kind, off: u32 },
        AtomicS { op: AOp, kind: Kind, addr: *mut u8 },
        Throw,
        Rethrow,
        Leave(a0: u32),
        Endfinally,
        }
    };
}

macro_rules! define_i {
    ($( $(#[$doc:meta])* $name:ident $( ( $($a:ident : $t:ty),* ) )? $( { $($f:ident : $ft:ty),* } )? ,)*) => {
        /// One resolved instruction (see the module documentation).
        #[derive(Clone, Copy, Debug)]
        #[allow(missing_docs)]
        pub enum I {
            $( $(#[$doc])* $name $( ( $($t),* ) )? $( { $($f: $ft),* } )? ,)*
        }
    };
}

for_each_insn!(define_i);
