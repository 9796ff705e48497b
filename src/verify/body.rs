//! Method bodies: decoding, control-flow structure and the abstract
//! interpretation that types the evaluation stack before every instruction.
//!
//! The abstract interpretation is a worklist over instruction indices. A
//! state is the list of stack types, stored as a shared node of
//! [`super::stacks`] (a persistent stack: an instruction's state shares
//! everything below its top with its predecessor's, so memory is not
//! instructions × depth); states only grow up the lattice (a reference type
//! widens to its most specific common supertypes, a `Join` of several or
//! `object`, `null` to any reference), so each instruction is revisited a
//! bounded number of times. Two explicit bounds, both linear in the method's
//! instruction count `n`, turn pathological input into an error at the
//! instruction where they are reached: at most `16 n + 100,000` instruction
//! visits ([`K::TooComplex`]) and at most `32 n + 131,072` stack nodes
//! ([`K::TooManyStackTypes`]; a node is [`super::NODE_BYTES`] bytes).
//!
//! Error recovery: an instruction with wrong operand types reports the error
//! and still propagates its natural result types (marked *tainted*, which
//! silences follow-on join mismatches); an underflow or an unresolvable
//! operand stops that path. Each instruction reports its errors once.

use super::blocks::{self, Edge};
use super::classes::is_abstract;
use super::stacks::{Arena, Cur, EMPTY, NONE};
use super::{
    qual, Cx, MethodInfo, StackShot, VInsn, VType, VerifyError, VerifyErrorKind as K, MAX_STACK,
};
use crate::bytecode::{decode_all, Insn, Op, Operand};
use crate::library::program::{ClassId, MemberId, Program};
use crate::library::{
    Access, FieldDef, Library, MemberKind, MethodDef, Mutability, Prim, TypeKind, TypeSig,
    EXCEPTION, OBJECT, STRING,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::slice::from_ref;

/// Instruction visits one method may take: `VISITS_PER_INSN` per
/// instruction plus `VISITS_SLACK`.
const VISITS_PER_INSN: usize = 16;
const VISITS_SLACK: usize = 100_000;
/// Shared stack nodes one method may create (every push and every merged
/// slot that is not shared makes one): `NODES_PER_INSN` per instruction
/// plus `NODES_SLACK`. Real code needs about one node per instruction
/// visit; the slack leaves room for the visits bound.
pub(super) const NODES_PER_INSN: usize = 32;
pub(super) const NODES_SLACK: usize = 1 << 17;

#[cfg(test)]
thread_local! {
    /// Tests: `(per instruction, slack)` instead of the node bound's constants.
    pub(super) static NODE_LIMIT: std::cell::Cell<Option<(usize, usize)>> =
        const { std::cell::Cell::new(None) };
}

/// The shared stack nodes a method of `n` instructions may create.
fn node_limit(n: usize) -> usize {
    #[cfg(test)]
    if let Some((per, slack)) = NODE_LIMIT.with(|l| l.get()) {
        return n.saturating_mul(per).saturating_add(slack);
    }
    n.saturating_mul(NODES_PER_INSN).saturating_add(NODES_SLACK)
}

/// Verify the body of method `mid`. Returns its typed instructions if the
/// method has no errors (errors go to `cx`).
pub(super) fn verify_method(cx: &mut Cx, mid: MemberId) -> Option<MethodInfo> {
    let p = cx.p;
    let cls = mid.class;
    let def = p.def(cls);
    let m = p.method(mid);
    let mut v = Verifier {
        cx,
        p,
        cls,
        lib: p.lib_of(cls),
        li: cls.lib as usize,
        m,
        args: Vec::new(),
        cur: Vec::new(),
    };
    if !m.flags.is_static {
        v.args.push(TypeSig::Class(def.name.clone()));
    }
    v.args.extend(m.params.iter().map(|a| a.ty.clone()));
    let (errs, info) = v.run();
    if errs.is_empty() {
        info
    } else {
        let file = cx.file(cls.lib as usize);
        for (off, kind) in errs {
            cx.errors.push(VerifyError {
                file: file.clone(),
                line: m.line_at(off),
                class: def.name.clone(),
                method: Some(m.name.clone()),
                offset: Some(off),
                kind,
            });
        }
        None
    }
}

/// A resolved callee: the declaring class and the definition (possibly the implicit ctor).
type Callee<'a> = (ClassId, &'a MethodDef);

struct Verifier<'a, 'c> {
    cx: &'c Cx<'a>,
    p: &'a Program,
    cls: ClassId,
    lib: &'a Library,
    li: usize,
    m: &'a MethodDef,
    /// Declared argument types, `this` first for instance methods.
    args: Vec<TypeSig>,
    /// Errors of the instruction being simulated.
    cur: Vec<K>,
}

/// Stop propagating along this path (the error is already recorded).
struct Stop;

impl<'a> Verifier<'a, '_> {
    /// Run the whole analysis: (errors with offsets, result if error-free).
    fn run(&mut self) -> (Vec<(u32, K)>, Option<MethodInfo>) {
        let mut errs: Vec<(u32, K)> = Vec::new();
        let decoded = match decode_all(&self.m.code) {
            Ok(d) => d,
            Err(e) => {
                let off = match e {
                    crate::bytecode::DecodeError::BadOpcode { offset, .. }
                    | crate::bytecode::DecodeError::Truncated { offset }
                    | crate::bytecode::DecodeError::BadBool { offset, .. } => offset,
                };
                errs.push((off, K::Decode(e)));
                return (errs, None);
            }
        };
        let n = decoded.len();
        if n == 0 {
            // Reported by the class checks (MissingBody).
            return (errs, None);
        }
        let offsets: Vec<u32> = decoded.iter().map(|(o, _)| *o).collect();
        let (blocks, berrs) = blocks::build(self.cx, self.cls, self.m, &offsets);
        errs.extend(berrs);

        // Static structure: targets, block crossings, placement of ret/endfinally/rethrow.
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, (off, insn)) in decoded.iter().enumerate() {
            let off = *off;
            let targets: &[u32] = match &insn.operand {
                Operand::Target(t) => std::slice::from_ref(t),
                Operand::Switch(ts) => ts,
                _ => &[],
            };
            let edge = if insn.op == Op::Leave {
                Edge::Leave
            } else {
                Edge::Branch
            };
            for &t in targets {
                match offsets.binary_search(&t) {
                    Ok(j) => {
                        let e = blocks.check_edge(Some((i, off)), j, t, edge);
                        if e.is_empty() {
                            succ[i].push(j);
                        } else {
                            errs.extend(e.into_iter().map(|k| (off, k)));
                            break;
                        }
                    }
                    Err(_) => {
                        errs.push((off, K::BadTarget(t)));
                        break;
                    }
                }
            }
            if !insn.op.is_terminator() && i + 1 < n {
                let e = blocks.check_edge(Some((i, off)), i + 1, offsets[i + 1], Edge::Fall);
                if e.is_empty() {
                    succ[i].push(i + 1);
                } else {
                    errs.extend(e.into_iter().map(|k| (off, k)));
                }
            }
            succ[i].sort_unstable();
            succ[i].dedup();
            match insn.op {
                Op::Ret if blocks.innermost[i].is_some() => errs.push((off, K::RetInProtected)),
                Op::Endfinally => {
                    let ok = blocks.innermost[i]
                        .is_some_and(|b| blocks.blocks[b].kind == super::BlockKind::Finally);
                    if !ok {
                        errs.push((off, K::EndfinallyOutsideFinally));
                    }
                }
                Op::Rethrow if blocks.innermost_handler(i) != Some(super::BlockKind::Catch) => {
                    errs.push((off, K::RethrowOutsideCatch))
                }
                _ => {}
            }
        }
        let entry_errs = blocks.check_edge(None, 0, 0, Edge::Branch);
        errs.extend(entry_errs.into_iter().map(|k| (0, k)));
        let try_start: Vec<bool> = offsets.iter().map(|&o| blocks.is_try_start(o)).collect();

        // Abstract interpretation.
        let mut df = Flow {
            states: vec![NONE; n],
            tainted: vec![false; n],
            queued: vec![false; n],
            reported: vec![false; n],
            work: BinaryHeap::new(),
            ar: Arena::default(),
        };
        df.seed(0, &[]);
        for (i, st) in &blocks.seeds {
            // A catch block that starts with a nested try enters it with the
            // exception still on the stack.
            if try_start[*i] && !st.is_empty() {
                errs.push((offsets[*i], K::TryStackNotEmpty(StackShot::of(st))));
            }
            df.seed(*i, st);
        }
        let mut budget = n
            .saturating_mul(VISITS_PER_INSN)
            .saturating_add(VISITS_SLACK);
        let node_limit = node_limit(n);
        let mut max_stack = 0usize;
        while let Some(Reverse(i)) = df.work.pop() {
            df.queued[i] = false;
            if budget == 0 {
                errs.push((offsets[i], K::TooComplex));
                break;
            }
            if df.ar.len() > node_limit {
                errs.push((offsets[i], K::TooManyStackTypes { limit: node_limit }));
                break;
            }
            budget -= 1;
            let top = df.states[i];
            if top == NONE {
                continue;
            }
            let mut st = Cur {
                ar: &mut df.ar,
                top,
            };
            let (off, insn) = &decoded[i];
            max_stack = max_stack.max(st.len());
            self.cur.clear();
            let res = self.exec(insn, &mut st);
            let (top, depth) = (st.top, st.len());
            if depth > MAX_STACK {
                self.cur.push(K::StackTooDeep);
            }
            let had_errors = !self.cur.is_empty();
            if had_errors && !df.reported[i] {
                df.reported[i] = true;
                errs.extend(self.cur.drain(..).map(|k| (*off, k)));
            }
            if res.is_err() || depth > MAX_STACK {
                continue;
            }
            max_stack = max_stack.max(depth);
            let taint = df.tainted[i] || had_errors;
            if !insn.op.is_terminator() && i + 1 == n && !df.reported[i] {
                df.reported[i] = true;
                errs.push((*off, K::FallsOffEnd));
            }
            for &j in &succ[i] {
                if let Err(k) = df.merge(self.p, j, top, taint, try_start[j]) {
                    if !taint && !df.reported[i] {
                        df.reported[i] = true;
                        errs.push((*off, k(offsets[j])));
                    }
                }
            }
        }
        if !errs.is_empty() {
            return (errs, None);
        }
        let insns = decoded
            .into_iter()
            .map(|(offset, insn)| VInsn {
                offset,
                insn,
                line: self.m.line_at(offset),
            })
            .collect();
        let mut tops = df.states;
        let mut stacks = df.ar.finish();
        stacks.compact(&mut tops);
        (
            errs,
            Some(MethodInfo {
                insns,
                max_stack: max_stack as u32,
                tops,
                stacks,
            }),
        )
    }

    fn err(&mut self, k: K) {
        self.cur.push(k);
    }

    fn need(&mut self, st: &Cur, op: Op, n: usize) -> Result<(), Stop> {
        if st.len() < n {
            self.err(K::StackUnderflow {
                op,
                needed: n,
                depth: st.len(),
            });
            Err(Stop)
        } else {
            Ok(())
        }
    }

    /// Can a stack value of type `v` be stored where `t` is declared?
    fn fits(&self, v: &VType, t: &TypeSig) -> bool {
        match t {
            TypeSig::Prim(_) | TypeSig::Atomic(_) => VType::of(t) == *v,
            TypeSig::Class(_) | TypeSig::Array(_) => match v {
                VType::Null => true,
                VType::Ref(s) => self.p.assignable(s, t),
                VType::Join(ss) => ss.iter().any(|s| self.p.assignable(s, t)),
                _ => false,
            },
        }
    }

    fn store(&mut self, v: &VType, t: &TypeSig, dest: impl FnOnce() -> String) {
        if !self.fits(v, t) {
            self.err(K::NotAssignable {
                dest: dest(),
                expected: t.clone(),
                found: v.clone(),
            });
        }
    }

    fn accessible(&self, decl: ClassId, access: Access) -> bool {
        match access {
            Access::Public => true,
            Access::Private => self.cls == decl,
            Access::Protected => self.p.is_subclass(self.cls, decl),
        }
    }

    fn type_ref(&mut self, ti: u32) -> Result<TypeSig, Stop> {
        match self.lib.type_refs.get(ti as usize) {
            None => {
                self.err(K::BadTypeRef(ti));
                Err(Stop)
            }
            Some(t) => {
                if let Err(e) = self.cx.check_type(self.li, t, false) {
                    self.err(e);
                }
                Ok(t.clone())
            }
        }
    }

    /// Resolve a member reference of the expected kind (checks the class's visibility).
    fn member(
        &mut self,
        idx: u32,
        kind: MemberKind,
    ) -> Result<(&'a crate::library::MemberRef, Option<MemberId>), Stop> {
        let lib = self.lib;
        let Some(r) = lib.member_refs.get(idx as usize) else {
            self.err(K::BadMemberRef(idx));
            return Err(Stop);
        };
        let name = format!("{}::{}", r.class, r.name);
        let expected = if kind == MemberKind::Field {
            "field"
        } else {
            "method"
        };
        if r.kind != kind {
            self.err(K::WrongMemberKind { name, expected });
            return Err(Stop);
        }
        if let Err(e) = self.cx.check_class_name(self.li, &r.class) {
            self.err(e);
            return Err(Stop);
        }
        Ok((r, self.p.resolve_member(self.li, idx).map(|(_, m)| m)))
    }

    fn field(&mut self, idx: u32, want_static: bool) -> Result<(MemberId, &'a FieldDef), Stop> {
        let (r, found) = self.member(idx, MemberKind::Field)?;
        let Some(fid) = found else {
            self.err(K::UnknownMember {
                what: "field",
                name: format!("{}::{}", r.class, r.name),
            });
            return Err(Stop);
        };
        let f = self.p.field(fid);
        if !self.accessible(fid.class, f.access) {
            self.err(K::Inaccessible {
                member: qual(self.p, fid, false),
                access: f.access,
            });
        }
        if f.is_static != want_static {
            self.err(K::FieldStaticness {
                field: qual(self.p, fid, false),
                want_static,
            });
        }
        Ok((fid, f))
    }

    fn method(&mut self, idx: u32) -> Result<Callee<'a>, Stop> {
        let (r, found) = self.member(idx, MemberKind::Method)?;
        match found {
            Some(mid) => {
                let md = self.p.method(mid);
                if !self.accessible(mid.class, md.access) {
                    self.err(K::Inaccessible {
                        member: qual(self.p, mid, true),
                        access: md.access,
                    });
                }
                Ok((mid.class, md))
            }
            None => {
                let cid = self.p.class(&r.class);
                match cid {
                    Some(c) if r.name == "ctor" && self.p.def(c).kind == TypeKind::Class => {
                        Ok((c, implicit_ctor()))
                    }
                    _ => {
                        self.err(K::UnknownMember {
                            what: "method",
                            name: format!("{}::{}", r.class, r.name),
                        });
                        Err(Stop)
                    }
                }
            }
        }
    }

    fn receiver(&mut self, v: &VType, decl: ClassId, what: impl FnOnce() -> String) {
        let t = TypeSig::Class(self.p.def(decl).name.clone());
        if !self.fits(v, &t) {
            self.err(K::NotAssignable {
                dest: what(),
                expected: t,
                found: v.clone(),
            });
        }
    }

    /// May the current method store field `fid`?
    fn check_mutability(&mut self, fid: MemberId, f: &FieldDef) {
        let decl = self.p.def(fid.class);
        let own = self.cls == fid.class;
        let allowed = match f.mutability {
            Mutability::Mutable => return,
            Mutability::MutableSelf if own => return,
            Mutability::MutableSelf => {
                format!("mutable(self): stored only by methods of `{}`", decl.name)
            }
            Mutability::Immutable => {
                let ctor = if f.is_static { "cctor" } else { "ctor" };
                if own && self.m.name == ctor && self.m.flags.is_static == f.is_static {
                    return;
                }
                format!("immutable: stored only in `{}::{ctor}`", decl.name)
            }
        };
        self.err(K::ReadOnlyField {
            field: qual(self.p, fid, false),
            allowed,
        });
    }

    fn bad(&mut self, op: Op, expected: &'static str, found: Vec<VType>) {
        self.err(K::BadOperands {
            op,
            expected,
            found,
        });
    }

    /// Simulate one instruction on `st`.
    fn exec(&mut self, insn: &Insn, st: &mut Cur) -> Result<(), Stop> {
        use VType as V;
        let op = insn.op;
        let operand = &insn.operand;
        // The decoder pairs every opcode with its operand kind; anything
        // else is malformed code.
        macro_rules! operand {
            ($p:pat) => {
                let $p = operand else {
                    self.err(K::BadOperands {
                        op,
                        expected: "its operand",
                        found: vec![],
                    });
                    return Err(Stop);
                };
            };
        }
        // One arm per opcode, no catch-all: a new opcode in `for_each_op!`
        // does not compile until the verifier handles it.
        match op {
            Op::Nop | Op::Br | Op::Rethrow => {}
            Op::LdcI32 | Op::LdcBool | Op::LdcChar => st.push(V::I32),
            Op::LdcI64 => st.push(V::I64),
            Op::LdcF32 => st.push(V::F32),
            Op::LdcF64 => st.push(V::F64),
            Op::Ldnull => st.push(V::Null),
            Op::Ldstr => {
                operand!(Operand::Str(i));
                if *i as usize >= self.lib.strings.len() {
                    self.err(K::BadStringIndex(*i));
                }
                st.push(V::Ref(TypeSig::class(STRING)));
            }
            Op::Ldarg | Op::Ldloc | Op::Starg | Op::Stloc => {
                operand!(Operand::Var(n));
                // Indexed directly: collecting the variables here made every
                // access O(locals), quadratic for methods with many locals.
                let (what, ty, count) = if matches!(op, Op::Ldarg | Op::Starg) {
                    let t = self.args.get(*n as usize).cloned();
                    ("argument", t, self.args.len())
                } else {
                    let t = self.m.locals.get(*n as usize).map(|l| l.ty.clone());
                    ("local", t, self.m.locals.len())
                };
                let Some(t) = ty else {
                    self.err(K::BadVarIndex {
                        what,
                        index: *n,
                        count,
                    });
                    return Err(Stop);
                };
                if matches!(op, Op::Ldarg | Op::Ldloc) {
                    st.push(V::of(&t));
                } else {
                    self.need(st, op, 1)?;
                    let v = st.pop().unwrap_or(V::Null);
                    let name = self.var_name(what, *n);
                    self.store(&v, &t, || name);
                }
            }
            Op::Dup => {
                self.need(st, op, 1)?;
                st.dup();
            }
            Op::Pop => {
                self.need(st, op, 1)?;
                st.pop();
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem => {
                let (a, b) = self.pop2(st, op)?;
                if a != b || !a.is_num() {
                    self.bad(
                        op,
                        "two values of the same numeric type",
                        vec![a.clone(), b],
                    );
                }
                st.push(if a.is_num() { a } else { V::I32 });
            }
            Op::DivUn | Op::RemUn | Op::And | Op::Or | Op::Xor => {
                let (a, b) = self.pop2(st, op)?;
                if a != b || !a.is_int() {
                    self.bad(op, "two integers of the same type", vec![a.clone(), b]);
                }
                st.push(if a.is_int() { a } else { V::I32 });
            }
            Op::Neg | Op::Not => {
                self.need(st, op, 1)?;
                let a = st.pop().unwrap_or(V::I32);
                let ok = if op == Op::Neg {
                    a.is_num()
                } else {
                    a.is_int()
                };
                if !ok {
                    self.bad(
                        op,
                        if op == Op::Neg {
                            "a number"
                        } else {
                            "an integer"
                        },
                        vec![a.clone()],
                    );
                }
                st.push(if ok { a } else { V::I32 });
            }
            Op::Shl | Op::Shr | Op::ShrUn => {
                let (a, b) = self.pop2(st, op)?;
                if !a.is_int() || !(b == V::I32 || b == a) {
                    self.bad(
                        op,
                        "an integer and an i32 (or same-typed) shift amount",
                        vec![a.clone(), b],
                    );
                }
                st.push(if a.is_int() { a } else { V::I32 });
            }
            Op::Ceq | Op::Cne => {
                let (a, b) = self.pop2(st, op)?;
                if !equatable(&a, &b) {
                    self.bad(
                        op,
                        "two numbers of the same type, two references or two pointers",
                        vec![a, b],
                    );
                }
                st.push(V::I32);
            }
            Op::Clt
            | Op::Cgt
            | Op::Cle
            | Op::Cge
            | Op::CltUn
            | Op::CgtUn
            | Op::CleUn
            | Op::CgeUn => {
                let (a, b) = self.pop2(st, op)?;
                if a != b || !a.is_num() {
                    self.bad(op, "two values of the same numeric type", vec![a, b]);
                }
                st.push(V::I32);
            }
            Op::ConvI32
            | Op::ConvU8
            | Op::ConvChar
            | Op::ConvBool
            | Op::ConvI64
            | Op::ConvU64
            | Op::ConvF32
            | Op::ConvF64
            | Op::ConvF32Un
            | Op::ConvF64Un => {
                self.need(st, op, 1)?;
                let a = st.pop().unwrap_or(V::I32);
                let unsigned = matches!(op, Op::ConvF32Un | Op::ConvF64Un);
                if unsigned && !a.is_int() {
                    self.bad(op, "an integer", vec![a]);
                } else if !a.is_num() {
                    self.bad(op, "a number", vec![a]);
                }
                st.push(match op {
                    Op::ConvI64 | Op::ConvU64 => V::I64,
                    Op::ConvF32 | Op::ConvF32Un => V::F32,
                    Op::ConvF64 | Op::ConvF64Un => V::F64,
                    _ => V::I32,
                });
            }
            Op::Brtrue | Op::Brfalse => {
                self.need(st, op, 1)?;
                let a = st.pop().unwrap_or(V::I32);
                if !(a.is_int() || a.is_ref()) {
                    self.bad(op, "an i32, an i64 or a reference", vec![a]);
                }
            }
            Op::Beq | Op::Bne => {
                let (a, b) = self.pop2(st, op)?;
                if !equatable(&a, &b) {
                    self.bad(
                        op,
                        "two numbers of the same type, two references or two pointers",
                        vec![a, b],
                    );
                }
            }
            Op::Blt
            | Op::Ble
            | Op::Bgt
            | Op::Bge
            | Op::BltUn
            | Op::BleUn
            | Op::BgtUn
            | Op::BgeUn => {
                let (a, b) = self.pop2(st, op)?;
                if a != b || !a.is_num() {
                    self.bad(op, "two values of the same numeric type", vec![a, b]);
                }
            }
            Op::Switch => {
                self.need(st, op, 1)?;
                let a = st.pop().unwrap_or(V::I32);
                if a != V::I32 {
                    self.bad(op, "an i32", vec![a]);
                }
            }
            Op::Ret => {
                let ok = match &self.m.ret {
                    None => st.is_empty(),
                    Some(t) => st.len() == 1 && st.last().is_some_and(|v| self.fits(v, t)),
                };
                if !ok {
                    self.err(K::BadReturn {
                        expected: self.m.ret.clone(),
                        found: st.shot(),
                    });
                }
                st.clear();
            }
            Op::Call | Op::Callvirt | Op::Newobj => {
                operand!(Operand::Method(idx));
                self.call(op, *idx, st)?
            }
            Op::Ldfld | Op::Stfld | Op::Ldsfld | Op::Stsfld => {
                operand!(Operand::Field(idx));
                let want_static = matches!(op, Op::Ldsfld | Op::Stsfld);
                let (fid, f) = self.field(*idx, want_static)?;
                let fname = || format!("field `{}`", qual(self.p, fid, false));
                match op {
                    Op::Ldfld => {
                        self.need(st, op, 1)?;
                        let r = st.pop().unwrap_or(V::Null);
                        let what = format!("receiver of {}", fname());
                        self.receiver(&r, fid.class, || what);
                        st.push(V::of(&f.ty));
                    }
                    Op::Ldsfld => st.push(V::of(&f.ty)),
                    Op::Stfld => {
                        let (r, v) = self.pop2(st, op)?;
                        let what = format!("receiver of {}", fname());
                        self.receiver(&r, fid.class, || what);
                        let dest = fname();
                        self.store(&v, &f.ty, || dest);
                        self.check_mutability(fid, f);
                    }
                    _ => {
                        self.need(st, op, 1)?;
                        let v = st.pop().unwrap_or(V::Null);
                        let dest = fname();
                        self.store(&v, &f.ty, || dest);
                        self.check_mutability(fid, f);
                    }
                }
            }
            Op::AtomicLoad | Op::AtomicStore | Op::AtomicAdd | Op::AtomicCas => {
                operand!(Operand::Field(idx));
                let (r, found) = self.member(*idx, MemberKind::Field)?;
                let Some(fid) = found else {
                    self.err(K::UnknownMember {
                        what: "field",
                        name: format!("{}::{}", r.class, r.name),
                    });
                    return Err(Stop);
                };
                let f = self.p.field(fid);
                let q = qual(self.p, fid, false);
                if !self.accessible(fid.class, f.access) {
                    self.err(K::Inaccessible {
                        member: q.clone(),
                        access: f.access,
                    });
                }
                match f.ty {
                    TypeSig::Atomic(Prim::Bool) if op == Op::AtomicAdd => {
                        self.err(K::AtomicAddType(q.clone()))
                    }
                    TypeSig::Atomic(_) => {}
                    _ => self.err(K::NotAtomic(q.clone())),
                }
                let values = match op {
                    Op::AtomicLoad => 0,
                    Op::AtomicCas => 2,
                    _ => 1,
                };
                let recv = usize::from(!f.is_static);
                self.need(st, op, values + recv)?;
                let vals = st.split_off(st.len() - values);
                for v in &vals {
                    self.store(v, &f.ty, || format!("field `{q}`"));
                }
                if !f.is_static {
                    let r = st.pop().unwrap_or(V::Null);
                    self.receiver(&r, fid.class, || format!("receiver of field `{q}`"));
                }
                if op != Op::AtomicLoad {
                    self.check_mutability(fid, f);
                }
                if op != Op::AtomicStore {
                    st.push(V::of(&f.ty));
                }
            }
            Op::Isinst | Op::Castclass => {
                operand!(Operand::Type(ti));
                let t = self.type_ref(*ti)?;
                if !t.is_ref() {
                    self.err(K::BadTypeOperand { op, ty: t.clone() });
                }
                self.need(st, op, 1)?;
                let a = st.pop().unwrap_or(V::Null);
                if !a.is_ref() {
                    self.bad(op, "a reference", vec![a]);
                }
                st.push(V::Ref(if t.is_ref() {
                    t
                } else {
                    TypeSig::class(OBJECT)
                }));
            }
            Op::Newarr => {
                operand!(Operand::Type(ti));
                let t = self.type_ref(*ti)?;
                self.need(st, op, 1)?;
                let a = st.pop().unwrap_or(V::I32);
                if a != V::I32 {
                    self.bad(op, "an i32 length", vec![a]);
                }
                st.push(V::Ref(TypeSig::Array(Box::new(t))));
            }
            Op::Ldlen => {
                self.need(st, op, 1)?;
                let a = st.pop().unwrap_or(V::Null);
                if !matches!(a, V::Null | V::Ref(TypeSig::Array(_))) {
                    self.bad(op, "an array", vec![a]);
                }
                st.push(V::I32);
            }
            Op::Ldelem | Op::Stelem => {
                operand!(Operand::Type(ti));
                let t = self.type_ref(*ti)?;
                let v = if op == Op::Stelem {
                    self.need(st, op, 3)?;
                    st.pop()
                } else {
                    self.need(st, op, 2)?;
                    None
                };
                let (arr, idx) = self.pop2(st, op)?;
                if idx != V::I32 {
                    self.bad(op, "an array and an i32 index", vec![arr.clone(), idx]);
                }
                match &arr {
                    V::Null => {}
                    V::Ref(TypeSig::Array(e)) if **e == t => {}
                    _ => self.err(K::ElementType {
                        expected: t.clone(),
                        found: arr.clone(),
                    }),
                }
                match v {
                    Some(v) => self.store(&v, &t, || "array element".to_string()),
                    None => st.push(V::of(&t)),
                }
            }
            Op::Throw => {
                self.need(st, op, 1)?;
                let a = st.pop().unwrap_or(V::Null);
                let ok = match &a {
                    V::Null => true,
                    V::Ref(TypeSig::Class(_)) | V::Join(_) => {
                        self.p.class(EXCEPTION).is_some()
                            && self.fits(&a, &TypeSig::class(EXCEPTION))
                    }
                    _ => false,
                };
                if !ok {
                    self.err(K::ThrowNotException(a));
                }
                st.clear();
            }
            Op::Leave | Op::Endfinally => st.clear(),
        }
        Ok(())
    }

    fn var_name(&self, what: &str, n: u16) -> String {
        let name = if what == "argument" {
            let base = usize::from(!self.m.flags.is_static);
            match (n as usize).checked_sub(base) {
                None => Some("this"),
                Some(k) => self.m.params.get(k).map(|v| v.name.as_str()),
            }
        } else {
            self.m.locals.get(n as usize).map(|v| v.name.as_str())
        };
        match name {
            Some(s) => format!("{what} `{s}`"),
            None => format!("{what} {n}"),
        }
    }

    fn pop2(&mut self, st: &mut Cur, op: Op) -> Result<(VType, VType), Stop> {
        self.need(st, op, 2)?;
        let b = st.pop().unwrap_or(VType::Null);
        let a = st.pop().unwrap_or(VType::Null);
        Ok((a, b))
    }

    fn call(&mut self, op: Op, idx: u32, st: &mut Cur) -> Result<(), Stop> {
        let (decl, md) = self.method(idx)?;
        let ddef = self.p.def(decl);
        let q = format!("{}::{}", ddef.name, md.name);
        if md.name == "cctor" {
            // The runtime runs a static constructor once, at load (as the
            // JVM does `<clinit>`); calling it again would re-run the
            // initializer and re-store immutable statics. The path goes on
            // with the call's natural effect (a cctor takes and returns
            // nothing), so every such call is reported.
            self.err(K::CallCctor(q.clone()));
        } else {
            self.call_kind(op, decl, md, &q)?;
        }
        let has_recv = !md.flags.is_static && op != Op::Newobj;
        let n = md.params.len() + usize::from(has_recv);
        self.need(st, op, n)?;
        let args = st.split_off(st.len() - md.params.len());
        for (k, (v, param)) in args.iter().zip(&md.params).enumerate() {
            self.store(v, &param.ty, || {
                format!("argument {} (`{}`) of `{q}`", k + 1, param.name)
            });
        }
        if has_recv {
            let r = st.pop().unwrap_or(VType::Null);
            self.receiver(&r, decl, || format!("receiver of `{q}`"));
        }
        if op == Op::Newobj {
            st.push(VType::Ref(TypeSig::Class(ddef.name.clone())));
        } else if let Some(t) = &md.ret {
            st.push(VType::of(t));
        }
        Ok(())
    }

    /// The rules of `call`/`callvirt`/`newobj` of method `md` of class `decl`
    /// (not a cctor), named `q` in messages.
    fn call_kind(&mut self, op: Op, decl: ClassId, md: &MethodDef, q: &str) -> Result<(), Stop> {
        let ddef = self.p.def(decl);
        let is_ctor = md.name == "ctor";
        match op {
            Op::Call => {
                if is_abstract(ddef, md) {
                    self.err(K::CallAbstract(q.to_string()));
                }
                let in_ctor = self.m.name == "ctor" && !self.m.flags.is_static;
                if is_ctor && !(in_ctor && self.p.is_subclass(self.cls, decl)) {
                    self.err(K::CtorCallOutsideCtor(q.to_string()));
                }
            }
            Op::Callvirt => {
                if is_ctor {
                    self.err(K::CallvirtCtor(q.to_string()));
                } else if md.flags.is_static {
                    self.err(K::CallvirtNotInstance(q.to_string()));
                }
            }
            _ => {
                if !is_ctor {
                    self.err(K::NewobjNotCtor(q.to_string()));
                    return Err(Stop);
                }
                if ddef.kind == TypeKind::Interface || ddef.is_abstract {
                    self.err(K::NewobjAbstract(ddef.name.clone()));
                }
            }
        }
        Ok(())
    }
}

/// `ceq`/`cne`/`beq`/`bne` operands: same numeric type, two references or two pointers.
fn equatable(a: &VType, b: &VType) -> bool {
    (a == b && (a.is_num() || *a == VType::Ptr)) || (a.is_ref() && b.is_ref())
}

/// The implicit public empty constructor of a class that declares none.
fn implicit_ctor() -> &'static MethodDef {
    static CTOR: std::sync::OnceLock<MethodDef> = std::sync::OnceLock::new();
    CTOR.get_or_init(|| MethodDef {
        name: "ctor".to_string(),
        access: Access::Public,
        flags: Default::default(),
        params: vec![],
        ret: None,
        locals: vec![],
        code: vec![],
        handlers: vec![],
        lines: vec![],
        attrs: vec![],
        line: 0,
    })
}

/// Per-instruction dataflow state.
struct Flow {
    /// Each instruction's stack: a node of `ar`, `EMPTY`, or `NONE` (not reached yet).
    states: Vec<u32>,
    tainted: Vec<bool>,
    queued: Vec<bool>,
    /// The instruction has reported its errors (report once).
    reported: Vec<bool>,
    /// Instructions to (re)visit, lowest index first, so the first path in
    /// code order defines a join point's stack and later ones are checked
    /// against it.
    work: BinaryHeap<Reverse<usize>>,
    /// The stacks.
    ar: Arena,
}

/// A join-point error, completed with the target offset by the caller.
type JoinErr = Box<dyn FnOnce(u32) -> K>;

impl Flow {
    fn seed(&mut self, i: usize, st: &[VType]) {
        if self.states[i] == NONE {
            self.states[i] = self.ar.build(st);
            self.push(i);
        }
    }

    fn push(&mut self, i: usize) {
        if !self.queued[i] {
            self.queued[i] = true;
            self.work.push(Reverse(i));
        }
    }

    /// Merge stack `st` (from a predecessor, `taint`ed or not) into instruction `j`.
    fn merge(
        &mut self,
        p: &Program,
        j: usize,
        st: u32,
        taint: bool,
        try_start: bool,
    ) -> Result<(), JoinErr> {
        if try_start && st != EMPTY {
            let s = self.ar.s.shot(st);
            return Err(Box::new(move |_| K::TryStackNotEmpty(s)));
        }
        let old = self.states[j];
        if old == NONE {
            self.states[j] = st;
            self.tainted[j] = taint;
            self.push(j);
            return Ok(());
        }
        match self.ar.merge(old, st, |a, b| join(p, a, b)) {
            Err(_) => {
                let (expected, found) = (self.ar.s.shot(old), self.ar.s.shot(st));
                Err(Box::new(move |target| K::StackMismatch {
                    target,
                    expected,
                    found,
                }))
            }
            Ok(new) => {
                self.tainted[j] |= taint;
                if new != old {
                    self.states[j] = new;
                    self.push(j);
                }
                Ok(())
            }
        }
    }
}

/// Join two stack types at a merge point; `None` if they cannot merge.
fn join(p: &Program, a: &VType, b: &VType) -> Option<VType> {
    match (a, b) {
        _ if a == b => Some(a.clone()),
        (VType::Null, VType::Ref(_) | VType::Join(_)) => Some(b.clone()),
        (VType::Ref(_) | VType::Join(_), VType::Null) => Some(a.clone()),
        (VType::Ref(x), VType::Ref(y)) => Some(join_ref_sets(p, from_ref(x), from_ref(y))),
        (VType::Ref(x), VType::Join(ys)) => Some(join_ref_sets(p, from_ref(x), ys)),
        (VType::Join(xs), VType::Ref(y)) => Some(join_ref_sets(p, xs, from_ref(y))),
        (VType::Join(xs), VType::Join(ys)) => Some(join_ref_sets(p, xs, ys)),
        _ => None,
    }
}

/// Every class and interface a value of class or interface `t` may be used
/// as, `t` included (`object` left out); `None` for arrays and unknown names.
fn supertypes(p: &Program, t: &TypeSig) -> Option<Vec<ClassId>> {
    let TypeSig::Class(n) = t else { return None };
    let id = p.class(n)?;
    let mut out = p.ancestors(id);
    for i in p.interfaces_of(id) {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out.retain(|&c| p.def(c).name != OBJECT);
    Some(out)
}

/// The join of two reference types, each given as the set of types its
/// values are assignable to all of (a `Ref` is a set of one): the most
/// specific types that both sides are assignable to. One type is a `Ref`;
/// several (say a common base class and an interface it does not implement)
/// are a `Join`; none is `object`. Arrays (assignable only to themselves and
/// `object`) keep the single-type rule of [`join_refs`]. The result is never
/// lower than either side, so the verifier's fixed point still terminates.
pub(super) fn join_ref_sets(p: &Program, xs: &[TypeSig], ys: &[TypeSig]) -> VType {
    if let ([x], [y]) = (xs, ys) {
        if p.assignable(x, y) {
            return VType::Ref(y.clone());
        }
        if p.assignable(y, x) {
            return VType::Ref(x.clone());
        }
    }
    let all = |ts: &[TypeSig]| -> Option<Vec<ClassId>> {
        let mut out = Vec::new();
        for t in ts {
            for c in supertypes(p, t)? {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        Some(out)
    };
    let (Some(xa), Some(ya)) = (all(xs), all(ys)) else {
        return match (xs, ys) {
            ([x], [y]) => VType::Ref(join_refs(p, x, y)),
            _ => VType::Ref(TypeSig::class(OBJECT)),
        };
    };
    let common: Vec<ClassId> = xa.into_iter().filter(|c| ya.contains(c)).collect();
    let mut minimal: Vec<TypeSig> = common
        .iter()
        .copied()
        .filter(|&c| !common.iter().any(|&d| d != c && p.class_assignable(d, c)))
        .map(|c| TypeSig::Class(p.def(c).name.clone()))
        .collect();
    minimal.sort_by_key(|t| t.to_string());
    match minimal.len() {
        0 => VType::Ref(TypeSig::class(OBJECT)),
        1 => VType::Ref(minimal.swap_remove(0)),
        _ => VType::Join(minimal.into_boxed_slice()),
    }
}

/// The type two references merge to: one of them if the other is assignable
/// to it, else their closest common superclass other than `object`, else
/// their unique most specific common interface, else `object`.
pub(super) fn join_refs(p: &Program, a: &TypeSig, b: &TypeSig) -> TypeSig {
    if p.assignable(a, b) {
        return b.clone();
    }
    if p.assignable(b, a) {
        return a.clone();
    }
    let obj = TypeSig::class(OBJECT);
    let (TypeSig::Class(x), TypeSig::Class(y)) = (a, b) else {
        return obj;
    };
    let (Some(xi), Some(yi)) = (p.class(x), p.class(y)) else {
        return obj;
    };
    if p.def(xi).kind == TypeKind::Class && p.def(yi).kind == TypeKind::Class {
        let ya = p.ancestors(yi);
        if let Some(c) = p.ancestors(xi).into_iter().find(|c| ya.contains(c)) {
            if p.def(c).name != OBJECT {
                return TypeSig::Class(p.def(c).name.clone());
            }
        }
    }
    let yif = p.interfaces_of(yi);
    let common: Vec<ClassId> = p
        .interfaces_of(xi)
        .into_iter()
        .filter(|i| yif.contains(i))
        .collect();
    let specific: Vec<ClassId> = common
        .iter()
        .copied()
        .filter(|&i| !common.iter().any(|&j| j != i && p.class_assignable(j, i)))
        .collect();
    match specific[..] {
        [i] => TypeSig::Class(p.def(i).name.clone()),
        _ => obj,
    }
}
