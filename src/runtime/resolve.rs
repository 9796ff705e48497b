//! Resolution: each verified method body becomes an [`ir::Code`](crate::ir::Code), once, at
//! load, from the verifier's [`MethodInfo`] (whose stack types are known at
//! every instruction): arithmetic split by operand type, branch targets as
//! instruction indices, fields as byte offsets (statics: addresses), calls
//! carrying the callee's `*const MethodHandle` or its vtable / interface
//! slot, `ldstr` carrying the interned string object. Both tiers consume
//! the result, which is what makes them agree.
//!
//! Invariant: resolution trusts the verifier (types, depths, targets); what
//! it cannot resolve (a member the tables lack) is a [`ResolveError`] naming
//! the file, method and bytecode offset, never a panic.

use super::Runtime;
use crate::bytecode::{Op, Operand};
use crate::ir::fuse;
use crate::ir::{is_leaf, AOp, Cmp, Code, Kind, Region, Src, I};
use crate::library::program::MemberId;
use crate::library::{HandlerKind, MemberKind, Prim, TypeKind, TypeSig};
use crate::verify::{MethodInfo, VType, Verified};

/// Why a verified method could not be resolved (the verifier should have
/// rejected it; this is the runtime's own check, never a panic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveError {
    /// File of the method's library.
    pub file: String,
    /// Declaring class.
    pub class: String,
    /// Method name.
    pub method: String,
    /// Bytecode offset of the instruction (or handler bound).
    pub offset: u32,
    /// What went wrong.
    pub kind: ResolveErrorKind,
}

/// What [`ResolveError`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveErrorKind {
    /// A branch target that is not an instruction start.
    BranchTarget,
    /// An `ldstr` string index out of range.
    StringIndex,
    /// An `ldstr` literal could not be interned (the fault's message).
    Intern(String),
    /// Arithmetic on a stack type it is not defined for.
    ArithmeticType,
    /// A conversion of a non-number.
    ConversionType,
    /// A comparison or branch on a stack type it is not defined for.
    BranchType,
    /// A call target the tables do not have.
    UnresolvedMethod,
    /// A field the tables do not have.
    UnresolvedField,
    /// A type index out of range.
    TypeIndex,
    /// `castclass`/`isinst` to a non-reference type.
    CastType,
    /// An operand that does not fit its opcode (malformed code the
    /// decoder cannot produce).
    Undecodable(Op),
    /// A protected-region bound that is not an instruction start.
    HandlerBound,
    /// A catch clause whose type is not a class.
    CatchType,
}

impl std::fmt::Display for ResolveErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveErrorKind::BranchTarget => f.write_str("branch target is not an instruction"),
            ResolveErrorKind::StringIndex => f.write_str("bad string index"),
            ResolveErrorKind::Intern(m) => f.write_str(m),
            ResolveErrorKind::ArithmeticType => f.write_str("arithmetic on an unexpected type"),
            ResolveErrorKind::ConversionType => f.write_str("conversion of a non-number"),
            ResolveErrorKind::BranchType => f.write_str("bad branch"),
            ResolveErrorKind::UnresolvedMethod => f.write_str("unresolved method"),
            ResolveErrorKind::UnresolvedField => f.write_str("unresolved field"),
            ResolveErrorKind::TypeIndex => f.write_str("bad type index"),
            ResolveErrorKind::CastType => f.write_str("cast to a non-reference type"),
            ResolveErrorKind::Undecodable(op) => {
                write!(f, "{op} with an operand of the wrong kind")
            }
            ResolveErrorKind::HandlerBound => f.write_str("handler bound is not an instruction"),
            ResolveErrorKind::CatchType => f.write_str("bad catch type"),
        }
    }
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}::{} @{}: {}",
            self.file, self.class, self.method, self.offset, self.kind
        )
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

/// Pre-decode every verified method and install the code in its handle.
pub fn prepare(rt: &Runtime, verified: &Verified) -> Result<Vec<Box<Code>>, ResolveError> {
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
        unsafe { (*mh).set_code(&code) };
        out.push(code);
    }
    Ok(out)
}

fn decode_method(rt: &Runtime, id: MemberId, info: &MethodInfo) -> Result<Code, ResolveError> {
    let p = &rt.program;
    let lib_i = id.class.lib as usize;
    let lib = &p.libs[lib_i];
    let m = p.method(id);
    let cname = &p.def(id.class).name;
    let err = |offset: u32, kind: ResolveErrorKind| ResolveError {
        file: rt.files[lib_i].clone(),
        class: cname.clone(),
        method: m.name.clone(),
        offset,
        kind,
    };
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
    let target = |off: u32, at: u32| -> Result<u32, ResolveError> {
        info.index_of(off)
            .map(|i| i as u32)
            .ok_or_else(|| err(at, ResolveErrorKind::BranchTarget))
    };
    let mut insns = Vec::with_capacity(info.insns.len());
    let mut switch_targets = Vec::new();
    for (i, vi) in info.insns.iter().enumerate() {
        let Some(stack) = info.stack(i) else {
            insns.push(I::Unreachable);
            continue;
        };
        let at = vi.offset;
        let top = stack.top().cloned().unwrap_or(VType::I32);
        let second = stack.from_top(1).cloned().unwrap_or(VType::I32);
        let op = vi.insn.op;
        let operand = &vi.insn.operand;
        // The decoder pairs every opcode with its operand kind; anything
        // else is malformed code.
        let bad = || err(at, ResolveErrorKind::Undecodable(op));
        macro_rules! operand {
            ($p:pat) => {
                let $p = operand else {
                    return Err(bad());
                };
            };
        }
        // One arm per opcode, no catch-all: a new opcode in `for_each_op!`
        // does not compile until it is resolved here.
        let ins = match op {
            Op::Nop => I::Nop,
            Op::LdcI32 | Op::LdcI64 | Op::LdcF32 | Op::LdcF64 | Op::LdcBool | Op::LdcChar => {
                match operand {
                    Operand::I32(v) => I::Const(*v as i64 as u64),
                    Operand::I64(v) => I::Const(*v as u64),
                    Operand::F32(v) => I::Const(v.to_bits() as u64),
                    Operand::F64(v) => I::Const(v.to_bits()),
                    Operand::Bool(b) => I::Const(*b as u64),
                    Operand::Char(c) => I::Const(*c as i32 as i64 as u64),
                    _ => return Err(bad()),
                }
            }
            Op::Ldnull => I::Const(0),
            Op::Ldstr => {
                operand!(Operand::Str(s));
                let text = lib
                    .strings
                    .get(*s as usize)
                    .ok_or_else(|| err(at, ResolveErrorKind::StringIndex))?;
                I::Const(
                    rt.intern(text)
                        .map_err(|f| err(at, ResolveErrorKind::Intern(f.message.clone())))?
                        as u64,
                )
            }
            Op::Ldarg => {
                operand!(Operand::Var(v));
                I::Ld(*v as u32)
            }
            Op::Ldloc => {
                operand!(Operand::Var(v));
                I::Ld(nargs + *v as u32)
            }
            Op::Starg | Op::Stloc => {
                operand!(Operand::Var(v));
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
            Op::Dup => I::Dup,
            Op::Pop => I::Pop,
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem | Op::Neg | Op::DivUn | Op::RemUn => {
                arith(op, &top).ok_or_else(|| err(at, ResolveErrorKind::ArithmeticType))?
            }
            Op::And => I::And,
            Op::Or => I::Or,
            Op::Xor => I::Xor,
            Op::Not => I::Not,
            Op::Shl | Op::Shr | Op::ShrUn => {
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
            Op::Ceq
            | Op::Cne
            | Op::Clt
            | Op::Cgt
            | Op::Cle
            | Op::Cge
            | Op::CltUn
            | Op::CgtUn
            | Op::CleUn
            | Op::CgeUn => {
                I::Cmp(cmp_for(op, &top).ok_or_else(|| err(at, ResolveErrorKind::BranchType))?)
            }
            Op::ConvI32
            | Op::ConvI64
            | Op::ConvU64
            | Op::ConvF32
            | Op::ConvF64
            | Op::ConvU8
            | Op::ConvChar
            | Op::ConvBool
            | Op::ConvF32Un
            | Op::ConvF64Un => {
                let src = match top {
                    VType::I32 => Src::I32,
                    VType::I64 => Src::I64,
                    VType::F32 => Src::F32,
                    VType::F64 => Src::F64,
                    _ => return Err(err(at, ResolveErrorKind::ConversionType)),
                };
                I::Conv(src, op)
            }
            Op::Br | Op::Brtrue | Op::Brfalse | Op::Leave => {
                operand!(Operand::Target(t));
                let t = target(*t, at)?;
                match op {
                    Op::Br => I::Br(t),
                    Op::Brtrue => I::Brtrue(t),
                    Op::Brfalse => I::Brfalse(t),
                    _ => I::Leave(t),
                }
            }
            Op::Beq
            | Op::Bne
            | Op::Blt
            | Op::Ble
            | Op::Bgt
            | Op::Bge
            | Op::BltUn
            | Op::BleUn
            | Op::BgtUn
            | Op::BgeUn => {
                operand!(Operand::Target(t));
                let c = cmp_for(op, &top).ok_or_else(|| err(at, ResolveErrorKind::BranchType))?;
                I::BrCmp(c, target(*t, at)?)
            }
            Op::Switch => {
                operand!(Operand::Switch(ts));
                let start = switch_targets.len() as u32;
                for &t in ts {
                    switch_targets.push(target(t, at)?);
                }
                I::Switch {
                    start,
                    len: ts.len() as u32,
                }
            }
            Op::Ret => match &m.ret {
                None => I::RetVoid,
                Some(t) => I::Ret(Kind::of(t)),
            },
            Op::Call | Op::Callvirt | Op::Newobj => {
                operand!(Operand::Method(r));
                let (_, mid) = p
                    .resolve_member(lib_i, *r)
                    .filter(|(k, _)| *k == MemberKind::Method)
                    .ok_or_else(|| err(at, ResolveErrorKind::UnresolvedMethod))?;
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
            Op::Ldfld
            | Op::Stfld
            | Op::Ldsfld
            | Op::Stsfld
            | Op::AtomicLoad
            | Op::AtomicStore
            | Op::AtomicAdd
            | Op::AtomicCas => {
                operand!(Operand::Field(r));
                let (_, fid) = p
                    .resolve_member(lib_i, *r)
                    .filter(|(k, _)| *k == MemberKind::Field)
                    .ok_or_else(|| err(at, ResolveErrorKind::UnresolvedField))?;
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
            Op::Isinst | Op::Castclass | Op::Newarr | Op::Ldelem | Op::Stelem => {
                operand!(Operand::Type(ti));
                let ty = lib
                    .type_refs
                    .get(*ti as usize)
                    .ok_or_else(|| err(at, ResolveErrorKind::TypeIndex))?;
                match op {
                    Op::Isinst | Op::Castclass => {
                        if matches!(ty, TypeSig::Class(n) if n == crate::library::OBJECT) {
                            I::Nop
                        } else {
                            let cd = rt
                                .tables
                                .type_class(p, ty)
                                .ok_or_else(|| err(at, ResolveErrorKind::CastType))?;
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
            Op::Ldlen => I::Ldlen,
            Op::Throw => I::Throw,
            Op::Rethrow => I::Rethrow,
            Op::Endfinally => I::Endfinally,
        };
        insns.push(ins);
    }
    let idx = |off: u32| -> Result<u32, ResolveError> {
        if off as usize >= m.code.len() {
            return Ok(info.insns.len() as u32);
        }
        info.index_of(off)
            .map(|i| i as u32)
            .ok_or_else(|| err(off, ResolveErrorKind::HandlerBound))
    };
    let mut regions = Vec::new();
    for h in &m.handlers {
        let catch = match &h.kind {
            HandlerKind::Finally => std::ptr::null(),
            HandlerKind::Catch(ti) => {
                let ty = lib
                    .type_refs
                    .get(*ti as usize)
                    .ok_or_else(|| err(h.handler_start, ResolveErrorKind::CatchType))?;
                rt.tables
                    .type_class(p, ty)
                    .ok_or_else(|| err(h.handler_start, ResolveErrorKind::CatchType))?
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
    let stack_refs = info.ref_map();
    let depths = (0..info.insns.len())
        .map(|i| info.stack(i).map_or(0, |s| s.len() as u32))
        .collect();
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
        stack_refs,
        depths,
        xs: Vec::new(),
        leaf: false,
    };
    code.xs = fuse::build(&code);
    code.leaf = is_leaf(&code);
    Ok(code)
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
