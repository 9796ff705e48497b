//! The instruction set, defined once.
//!
//! [`for_each_op!`](crate::for_each_op) is the single table of every kasm instruction: its Rust
//! name, its kasm mnemonic, its byte encoding and the kind of operand it takes.
//! The encoder, the decoder, the assembler's mnemonic lookup, the disassembler
//! and the verifier all derive from it; nothing else lists opcodes.
//!
//! Encoding: one opcode byte followed by the operand, little endian, with the
//! fixed size of its [`OperandKind`] (a `switch` is a `u32` count followed by
//! that many `u32` targets). Branch targets are absolute byte offsets from the
//! start of the method's code. Indices (`Str`, `Method`, `Field`, `Type`) point
//! into the owning library's `strings`, `member_refs` and `type_refs` tables.
//!
//! Invariant: opcode bytes are never reused or renumbered once released, since
//! they are part of the `.klib` format.

use std::fmt;

/// The operand an instruction carries, and so its encoded size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperandKind {
    /// No operand.
    None,
    /// 4-byte integer (bit pattern of an i32; `ldc.i32` accepts u32 literals).
    I32,
    /// 8-byte integer.
    I64,
    /// 4-byte IEEE single.
    F32,
    /// 8-byte IEEE double.
    F64,
    /// 1 byte, 0 or 1.
    Bool,
    /// 4-byte Unicode code point.
    Char,
    /// u32 index into the library's string literal table.
    Str,
    /// u16 argument or local index.
    Var,
    /// u32 absolute code offset.
    Target,
    /// u32 count, then that many u32 absolute code offsets.
    Switch,
    /// u32 index into the library's member references (a method).
    Method,
    /// u32 index into the library's member references (a field).
    Field,
    /// u32 index into the library's type references.
    Type,
}

impl OperandKind {
    /// Encoded size of the operand in bytes, `None` for `Switch` (variable).
    pub const fn fixed_size(self) -> Option<usize> {
        match self {
            OperandKind::None => Some(0),
            OperandKind::Bool => Some(1),
            OperandKind::Var => Some(2),
            OperandKind::I32
            | OperandKind::F32
            | OperandKind::Char
            | OperandKind::Str
            | OperandKind::Target
            | OperandKind::Method
            | OperandKind::Field
            | OperandKind::Type => Some(4),
            OperandKind::I64 | OperandKind::F64 => Some(8),
            OperandKind::Switch => None,
        }
    }
}

/// The single table of instructions: `$m!(Variant, "mnemonic", byte, OperandKind)`.
#[macro_export]
macro_rules! for_each_op {
    ($m:ident) => {
        $m! {
            // constants and variables
            Nop, "nop", 0x00, None;
            LdcI32, "ldc.i32", 0x01, I32;
            LdcI64, "ldc.i64", 0x02, I64;
            LdcF32, "ldc.f32", 0x03, F32;
            LdcF64, "ldc.f64", 0x04, F64;
            LdcBool, "ldc.bool", 0x05, Bool;
            LdcChar, "ldc.char", 0x06, Char;
            Ldnull, "ldnull", 0x07, None;
            Ldstr, "ldstr", 0x08, Str;
            Ldarg, "ldarg", 0x09, Var;
            Ldloc, "ldloc", 0x0a, Var;
            Starg, "starg", 0x0b, Var;
            Stloc, "stloc", 0x0c, Var;
            Dup, "dup", 0x0d, None;
            Pop, "pop", 0x0e, None;
            // arithmetic
            Add, "add", 0x10, None;
            Sub, "sub", 0x11, None;
            Mul, "mul", 0x12, None;
            Div, "div", 0x13, None;
            Rem, "rem", 0x14, None;
            Neg, "neg", 0x15, None;
            DivUn, "div.un", 0x16, None;
            RemUn, "rem.un", 0x17, None;
            And, "and", 0x18, None;
            Or, "or", 0x19, None;
            Xor, "xor", 0x1a, None;
            Not, "not", 0x1b, None;
            Shl, "shl", 0x1c, None;
            Shr, "shr", 0x1d, None;
            ShrUn, "shr.un", 0x1e, None;
            // comparison
            Ceq, "ceq", 0x20, None;
            Cne, "cne", 0x21, None;
            Clt, "clt", 0x22, None;
            Cgt, "cgt", 0x23, None;
            Cle, "cle", 0x24, None;
            Cge, "cge", 0x25, None;
            CltUn, "clt.un", 0x26, None;
            CgtUn, "cgt.un", 0x27, None;
            CleUn, "cle.un", 0x28, None;
            CgeUn, "cge.un", 0x29, None;
            // conversion
            ConvI32, "conv.i32", 0x30, None;
            ConvI64, "conv.i64", 0x31, None;
            ConvU64, "conv.u64", 0x32, None;
            ConvF32, "conv.f32", 0x33, None;
            ConvF64, "conv.f64", 0x34, None;
            ConvU8, "conv.u8", 0x35, None;
            ConvChar, "conv.char", 0x36, None;
            ConvBool, "conv.bool", 0x37, None;
            ConvF32Un, "conv.f32.un", 0x38, None;
            ConvF64Un, "conv.f64.un", 0x39, None;
            // control flow
            Br, "br", 0x40, Target;
            Brtrue, "brtrue", 0x41, Target;
            Brfalse, "brfalse", 0x42, Target;
            Beq, "beq", 0x43, Target;
            Bne, "bne", 0x44, Target;
            Blt, "blt", 0x45, Target;
            Ble, "ble", 0x46, Target;
            Bgt, "bgt", 0x47, Target;
            Bge, "bge", 0x48, Target;
            BltUn, "blt.un", 0x49, Target;
            BleUn, "ble.un", 0x4a, Target;
            BgtUn, "bgt.un", 0x4b, Target;
            BgeUn, "bge.un", 0x4c, Target;
            Switch, "switch", 0x4d, Switch;
            Ret, "ret", 0x4e, None;
            Call, "call", 0x4f, Method;
            Callvirt, "callvirt", 0x50, Method;
            // objects and arrays
            Newobj, "newobj", 0x60, Method;
            Ldfld, "ldfld", 0x61, Field;
            Stfld, "stfld", 0x62, Field;
            Ldsfld, "ldsfld", 0x63, Field;
            Stsfld, "stsfld", 0x64, Field;
            Isinst, "isinst", 0x65, Type;
            Castclass, "castclass", 0x66, Type;
            Newarr, "newarr", 0x67, Type;
            Ldlen, "ldlen", 0x68, None;
            Ldelem, "ldelem", 0x69, Type;
            Stelem, "stelem", 0x6a, Type;
            AtomicLoad, "atomic.load", 0x6b, Field;
            AtomicStore, "atomic.store", 0x6c, Field;
            AtomicAdd, "atomic.add", 0x6d, Field;
            AtomicCas, "atomic.cas", 0x6e, Field;
            // exceptions
            Throw, "throw", 0x70, None;
            Rethrow, "rethrow", 0x71, None;
            Leave, "leave", 0x72, Target;
            Endfinally, "endfinally", 0x73, None;
        }
    };
}

macro_rules! define_ops {
    ($($name:ident, $mn:literal, $byte:literal, $kind:ident;)*) => {
        /// An opcode. The discriminant is its encoding byte.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Op {
            $(
                #[doc = concat!("`", $mn, "`")]
                $name = $byte,
            )*
        }

        impl Op {
            /// Every opcode, in table order.
            pub const ALL: &'static [Op] = &[$(Op::$name,)*];

            /// The kasm mnemonic.
            pub const fn mnemonic(self) -> &'static str {
                match self { $(Op::$name => $mn,)* }
            }

            /// The operand this opcode takes.
            pub const fn operand_kind(self) -> OperandKind {
                match self { $(Op::$name => OperandKind::$kind,)* }
            }

            /// Decode an opcode byte.
            pub const fn from_byte(b: u8) -> Option<Op> {
                match b { $($byte => Some(Op::$name),)* _ => None }
            }

            /// Look up a mnemonic (exact, case-sensitive).
            pub fn from_mnemonic(s: &str) -> Option<Op> {
                match s { $($mn => Some(Op::$name),)* _ => None }
            }
        }
    };
}
for_each_op!(define_ops);

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mnemonic())
    }
}

impl Op {
    /// True for instructions after which control never falls through to the next one.
    pub fn is_terminator(self) -> bool {
        matches!(
            self,
            Op::Br | Op::Ret | Op::Throw | Op::Rethrow | Op::Leave | Op::Endfinally
        )
    }

    /// True for conditional or unconditional branches with a single `Target` operand.
    pub fn is_branch(self) -> bool {
        self.operand_kind() == OperandKind::Target
    }
}

/// A decoded operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// No operand.
    None,
    /// `ldc.i32`.
    I32(i32),
    /// `ldc.i64`.
    I64(i64),
    /// `ldc.f32`.
    F32(f32),
    /// `ldc.f64`.
    F64(f64),
    /// `ldc.bool`.
    Bool(bool),
    /// `ldc.char` code point (not necessarily a scalar value).
    Char(u32),
    /// String literal index.
    Str(u32),
    /// Argument or local index.
    Var(u16),
    /// Absolute code offset.
    Target(u32),
    /// `switch` targets (absolute code offsets).
    Switch(Vec<u32>),
    /// Member reference index (a method).
    Method(u32),
    /// Member reference index (a field).
    Field(u32),
    /// Type reference index.
    Type(u32),
}

/// One decoded instruction.
#[derive(Clone, Debug, PartialEq)]
pub struct Insn {
    /// The opcode.
    pub op: Op,
    /// Its operand (matches `op.operand_kind()`).
    pub operand: Operand,
}

/// Why a byte sequence is not valid code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The byte at `offset` is not an opcode.
    BadOpcode {
        /// Byte offset where the problem was found.
        offset: u32,
        /// The byte found.
        byte: u8,
    },
    /// The instruction at `offset` runs past the end of the code.
    Truncated {
        /// Byte offset where the problem was found.
        offset: u32,
    },
    /// `ldc.bool` operand byte other than 0 or 1.
    BadBool {
        /// Byte offset where the problem was found.
        offset: u32,
        /// The byte found.
        byte: u8,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadOpcode { offset, byte } => {
                write!(f, "invalid opcode 0x{byte:02x} at code offset {offset}")
            }
            DecodeError::Truncated { offset } => {
                write!(f, "instruction at code offset {offset} is truncated")
            }
            DecodeError::BadBool { offset, byte } => {
                write!(
                    f,
                    "ldc.bool operand 0x{byte:02x} at code offset {offset} is not 0 or 1"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

fn take<const N: usize>(code: &[u8], pos: usize, at: u32) -> Result<[u8; N], DecodeError> {
    code.get(pos..pos + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::Truncated { offset: at })
}

/// Decode the instruction starting at byte `offset`. Returns the instruction and
/// the offset of the next one. Never panics, whatever `code` holds.
pub fn decode(code: &[u8], offset: usize) -> Result<(Insn, usize), DecodeError> {
    let at = offset as u32;
    let byte = *code
        .get(offset)
        .ok_or(DecodeError::Truncated { offset: at })?;
    let op = Op::from_byte(byte).ok_or(DecodeError::BadOpcode { offset: at, byte })?;
    let p = offset + 1;
    let u32_at = |pos: usize| take::<4>(code, pos, at).map(u32::from_le_bytes);
    let (operand, next) = match op.operand_kind() {
        OperandKind::None => (Operand::None, p),
        OperandKind::I32 => (Operand::I32(u32_at(p)? as i32), p + 4),
        OperandKind::I64 => (
            Operand::I64(i64::from_le_bytes(take::<8>(code, p, at)?)),
            p + 8,
        ),
        OperandKind::F32 => (Operand::F32(f32::from_bits(u32_at(p)?)), p + 4),
        OperandKind::F64 => (
            Operand::F64(f64::from_bits(u64::from_le_bytes(take::<8>(code, p, at)?))),
            p + 8,
        ),
        OperandKind::Bool => {
            let b = take::<1>(code, p, at)?[0];
            if b > 1 {
                return Err(DecodeError::BadBool {
                    offset: at,
                    byte: b,
                });
            }
            (Operand::Bool(b == 1), p + 1)
        }
        OperandKind::Char => (Operand::Char(u32_at(p)?), p + 4),
        OperandKind::Str => (Operand::Str(u32_at(p)?), p + 4),
        OperandKind::Var => (
            Operand::Var(u16::from_le_bytes(take::<2>(code, p, at)?)),
            p + 2,
        ),
        OperandKind::Target => (Operand::Target(u32_at(p)?), p + 4),
        OperandKind::Method => (Operand::Method(u32_at(p)?), p + 4),
        OperandKind::Field => (Operand::Field(u32_at(p)?), p + 4),
        OperandKind::Type => (Operand::Type(u32_at(p)?), p + 4),
        OperandKind::Switch => {
            let n = u32_at(p)? as usize;
            // Bound the count by the bytes actually present before allocating.
            let remaining = code.len().saturating_sub(p + 4);
            if n > remaining / 4 {
                return Err(DecodeError::Truncated { offset: at });
            }
            let mut targets = Vec::with_capacity(n);
            for i in 0..n {
                targets.push(u32_at(p + 4 + 4 * i)?);
            }
            (Operand::Switch(targets), p + 4 + 4 * n)
        }
    };
    Ok((Insn { op, operand }, next))
}

/// Decode a whole method body into `(offset, insn)` pairs.
pub fn decode_all(code: &[u8]) -> Result<Vec<(u32, Insn)>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < code.len() {
        let (insn, next) = decode(code, pos)?;
        out.push((pos as u32, insn));
        pos = next;
    }
    Ok(out)
}

/// Append the encoding of `op` with `operand` to `out`.
///
/// Panics if the operand does not match `op.operand_kind()` (a bug in the caller,
/// never reachable from input data since the assembler builds both together).
pub fn encode(out: &mut Vec<u8>, op: Op, operand: &Operand) {
    out.push(op as u8);
    match (op.operand_kind(), operand) {
        (OperandKind::None, Operand::None) => {}
        (OperandKind::I32, Operand::I32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (OperandKind::I64, Operand::I64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (OperandKind::F32, Operand::F32(v)) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        (OperandKind::F64, Operand::F64(v)) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        (OperandKind::Bool, Operand::Bool(v)) => out.push(*v as u8),
        (OperandKind::Char, Operand::Char(v))
        | (OperandKind::Str, Operand::Str(v))
        | (OperandKind::Target, Operand::Target(v))
        | (OperandKind::Method, Operand::Method(v))
        | (OperandKind::Field, Operand::Field(v))
        | (OperandKind::Type, Operand::Type(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (OperandKind::Var, Operand::Var(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (OperandKind::Switch, Operand::Switch(ts)) => {
            out.extend_from_slice(&(ts.len() as u32).to_le_bytes());
            for t in ts {
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
        (k, o) => panic!("operand {o:?} does not match {op} ({k:?})"),
    }
}

/// Encoded size of an instruction.
pub fn encoded_len(op: Op, operand: &Operand) -> usize {
    match (op.operand_kind().fixed_size(), operand) {
        (Some(n), _) => 1 + n,
        (None, Operand::Switch(ts)) => 1 + 4 + 4 * ts.len(),
        (None, _) => 1 + 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for &op in Op::ALL {
            assert!(seen.insert(op as u8), "duplicate byte for {op}");
            assert_eq!(Op::from_byte(op as u8), Some(op));
            assert_eq!(Op::from_mnemonic(op.mnemonic()), Some(op));
        }
    }

    #[test]
    fn roundtrip_every_op() {
        for &op in Op::ALL {
            let operand = match op.operand_kind() {
                OperandKind::None => Operand::None,
                OperandKind::I32 => Operand::I32(-7),
                OperandKind::I64 => Operand::I64(i64::MIN),
                OperandKind::F32 => Operand::F32(1.5),
                OperandKind::F64 => Operand::F64(-2.25),
                OperandKind::Bool => Operand::Bool(true),
                OperandKind::Char => Operand::Char(0x1F600),
                OperandKind::Str => Operand::Str(3),
                OperandKind::Var => Operand::Var(65535),
                OperandKind::Target => Operand::Target(12),
                OperandKind::Switch => Operand::Switch(vec![1, 2, 3]),
                OperandKind::Method => Operand::Method(9),
                OperandKind::Field => Operand::Field(10),
                OperandKind::Type => Operand::Type(11),
            };
            let mut buf = Vec::new();
            encode(&mut buf, op, &operand);
            assert_eq!(buf.len(), encoded_len(op, &operand));
            let (insn, next) = decode(&buf, 0).unwrap();
            assert_eq!(next, buf.len());
            assert_eq!(insn, Insn { op, operand });
        }
    }

    #[test]
    fn hostile_code_never_panics() {
        assert!(decode(&[], 0).is_err());
        assert!(decode(&[0xff], 0).is_err());
        assert!(decode(&[Op::LdcI64 as u8, 1, 2], 0).is_err());
        // switch claiming 4 billion targets
        assert!(decode(&[Op::Switch as u8, 0xff, 0xff, 0xff, 0xff], 0).is_err());
        assert!(decode(&[Op::LdcBool as u8, 2], 0).is_err());
    }
}
