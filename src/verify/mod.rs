//! The verifier: the gate between loaded libraries and execution.
//!
//! [`verify_program`] checks a whole [`Program`] against the rules of
//! `kasm.md` "Verification" (see `docs/verifier.md`) and reports every error it
//! finds, each with its file, line, class, method and bytecode offset. On
//! success it returns, for every method with a body, the evaluation-stack
//! types before every instruction ([`MethodInfo::stack`], stored as shared
//! nodes so that memory is linear in the code, see [`Stacks`]) and the
//! method's `max_stack`.
//!
//! Invariants guaranteed to consumers (the interpreter and the JIT trust them
//! and do not re-check):
//! - every reachable instruction has a known stack ([`MethodInfo::stack`] is `Some`),
//!   and its operands have the types the instruction needs; every join point
//!   agrees in depth and primitive types, so a value's stack slot always holds
//!   the same kind of 64-bit value (`i32`, `i64`, `f32`, `f64`, `ptr`, ref);
//! - a reference of static type `Ref(T)` is null or points to an object whose
//!   class is assignable to `T`; every field, element, argument and local
//!   receives a value assignable to its declared type;
//! - every branch target is an instruction start of the same method, no path
//!   falls off the end, `ret` leaves exactly the return value;
//! - every member and type operand resolves (`Program::resolve_member`, or the
//!   implicit empty `ctor` of a class that declares none), with access,
//!   mutability and static/instance kind as the instruction needs;
//! - exception regions are properly nested, entered only at a try's start with
//!   an empty stack, left only by `leave`, `throw`, `rethrow`, `endfinally`;
//!   `endfinally` is only in a finally, `rethrow` only in a catch;
//! - class structure is sound: acyclic single inheritance from existing,
//!   non-sealed classes; every virtual/interface method a concrete class can
//!   receive a call for is implemented with the same signature.
//!
//! The verifier never panics and always terminates, whatever the input: every
//! index is checked, hierarchy walks are bounded ([`Program`] guarantees it),
//! and the abstract interpretation has explicit work and memory bounds
//! (per method, linear in its instruction count).

mod blocks;
mod body;
mod classes;
mod stacks;
#[cfg(test)]
mod tests;

use crate::bytecode::{DecodeError, Insn, Op};
use crate::library::program::{ClassId, MemberId, Program};
use crate::library::{Access, Prim, TypeKind, TypeSig};
use std::collections::HashMap;
use std::fmt;

pub use stacks::{RefMap, Stack, StackShot, Stacks, NODE_BYTES, SHOWN};

/// Deepest evaluation stack a method may use.
pub const MAX_STACK: usize = 1024;

/// The type of one evaluation-stack value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VType {
    /// `bool`, `u8`, `char`, `i32`.
    I32,
    /// `i64`, `u64`.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `ptr`, `mutptr`.
    Ptr,
    /// The null reference (`ldnull`), assignable to every reference type.
    Null,
    /// A reference of static type `Class(name)` or `Array(elem)`.
    Ref(TypeSig),
    /// A reference where paths with unrelated classes meet: it is assignable
    /// to each of these classes and interfaces (at least two, none assignable
    /// to another, sorted by name; never `object` or an array). For example
    /// classes `A : Base implements I` and `B : Base implements I` merge to
    /// `Base & I`, so the value may be used as either.
    Join(Box<[TypeSig]>),
}

impl VType {
    /// The stack type of a value of declared type `t` (`atomic T` gives `T`'s).
    pub fn of(t: &TypeSig) -> VType {
        match t {
            TypeSig::Prim(p) | TypeSig::Atomic(p) => match p {
                Prim::Bool | Prim::Char | Prim::U8 | Prim::I32 => VType::I32,
                Prim::I64 | Prim::U64 => VType::I64,
                Prim::F32 => VType::F32,
                Prim::F64 => VType::F64,
                Prim::Ptr | Prim::MutPtr => VType::Ptr,
            },
            TypeSig::Class(_) | TypeSig::Array(_) => VType::Ref(t.clone()),
        }
    }

    /// True for `Null`, `Ref` and `Join`: the values the collector traces.
    pub fn is_ref(&self) -> bool {
        matches!(self, VType::Null | VType::Ref(_) | VType::Join(_))
    }

    /// True for `I32` and `I64`.
    pub fn is_int(&self) -> bool {
        matches!(self, VType::I32 | VType::I64)
    }

    /// True for `I32`, `I64`, `F32`, `F64`.
    pub fn is_num(&self) -> bool {
        matches!(self, VType::I32 | VType::I64 | VType::F32 | VType::F64)
    }
}

impl fmt::Display for VType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VType::I32 => f.write_str("i32"),
            VType::I64 => f.write_str("i64"),
            VType::F32 => f.write_str("f32"),
            VType::F64 => f.write_str("f64"),
            VType::Ptr => f.write_str("ptr"),
            VType::Null => f.write_str("null"),
            VType::Ref(t) => write!(f, "{t}"),
            VType::Join(ts) => {
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" & ")?;
                    }
                    write!(f, "{t}")?;
                }
                Ok(())
            }
        }
    }
}

/// One decoded instruction (its stack: [`MethodInfo::stack`]).
#[derive(Clone, Debug, PartialEq)]
pub struct VInsn {
    /// Byte offset in the method's code.
    pub offset: u32,
    /// The instruction.
    pub insn: Insn,
    /// Its source line.
    pub line: u32,
}

/// The verifier's result for one method body.
///
/// The stack before each instruction is not a vector of its own (that is
/// instructions × depth): stacks are shared nodes ([`Stacks`]), and
/// [`MethodInfo::stack`] gives a view of one.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodInfo {
    /// Every instruction, in code order.
    pub insns: Vec<VInsn>,
    /// The deepest evaluation stack any path reaches.
    pub max_stack: u32,
    /// Per instruction, its stack's top node (`stacks::NONE`: unreachable).
    tops: Vec<u32>,
    stacks: Stacks,
}

impl MethodInfo {
    /// Index in `insns` of the instruction starting at byte `offset`.
    pub fn index_of(&self, offset: u32) -> Option<usize> {
        self.insns.binary_search_by_key(&offset, |i| i.offset).ok()
    }

    /// The stack types before instruction `i` (bottom first), or `None` if
    /// no path reaches it (unreachable code is never executed, so it is not
    /// typed) or `i` is out of range. O(1).
    pub fn stack(&self, i: usize) -> Option<Stack<'_>> {
        let top = *self.tops.get(i)?;
        (top != stacks::NONE).then_some(Stack {
            s: &self.stacks,
            top,
        })
    }

    /// Is instruction `i` reachable (typed)?
    pub fn reachable(&self, i: usize) -> bool {
        self.stack(i).is_some()
    }

    /// Does any reachable instruction's stack hold a value of a type that
    /// satisfies `pred`? Linear in the distinct stack types, not in
    /// instructions × depth.
    pub fn any_stack_type(&self, pred: impl FnMut(&VType) -> bool) -> bool {
        // Compacted: every type in the table is on some reachable stack.
        self.stacks.types.iter().any(pred)
    }

    /// Which stack positions hold references before each instruction, in
    /// shared form (the collector's map of the evaluation stack; `null`
    /// counts as a reference). Linear in the stored stack nodes.
    pub fn ref_map(&self) -> RefMap {
        self.stacks.ref_map(&self.tops)
    }

    /// The shared stack nodes (for measuring their size).
    pub fn stacks(&self) -> &Stacks {
        &self.stacks
    }
}

/// The verifier's output: every method with a body, by id.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    /// Per method (with a body): instructions, stacks, `max_stack`.
    pub methods: HashMap<MemberId, MethodInfo>,
}

/// One verification error with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError {
    /// File of the library.
    pub file: String,
    /// Source line (0 if unknown).
    pub line: u32,
    /// Class (empty for program-wide errors).
    pub class: String,
    /// Method, if the error is inside one.
    pub method: Option<String>,
    /// Bytecode offset, if the error is at an instruction.
    pub offset: Option<u32>,
    /// What is wrong.
    pub kind: VerifyErrorKind,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        let mut place = String::new();
        match (&self.class[..], &self.method) {
            ("", None) => {}
            ("", Some(m)) => place.push_str(m),
            (c, None) => place.push_str(c),
            (c, Some(m)) => place = format!("{c}::{m}"),
        }
        if let Some(o) = self.offset {
            if !place.is_empty() {
                place.push(' ');
            }
            place.push_str(&format!("@{o}"));
        }
        if !place.is_empty() {
            write!(f, "{place}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for VerifyError {}

/// Which kind of protected block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// A `.try` range.
    Try,
    /// A `catch` handler.
    Catch,
    /// A `finally` handler.
    Finally,
}

impl fmt::Display for BlockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockKind::Try => "try block",
            BlockKind::Catch => "catch block",
            BlockKind::Finally => "finally block",
        })
    }
}

/// What is wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum VerifyErrorKind {
    // ---- program and class structure ----
    /// No class of the program's file defines a static `main`.
    NoMain,
    /// A second static `main` (the first one named).
    DuplicateMain {
        /// `Class::main` of the first definition.
        first: String,
    },
    /// `main` has a signature other than `() | (string[])` -> `void | i32`.
    BadMainSignature,
    /// A class other than `Object` has no base class.
    MissingBase,
    /// The base class does not exist.
    UnknownBase(String),
    /// The base is an interface.
    BaseNotClass(String),
    /// The base class is sealed.
    SealedBase(String),
    /// The parent chain loops.
    InheritanceCycle,
    /// An interface extends itself, directly or not.
    InterfaceCycle,
    /// An interface declares a base class.
    InterfaceWithBase(String),
    /// `implements X` / `.interface I : X` where `X` is not an interface.
    NotAnInterface(String),
    /// A type name that no library defines.
    UnknownType(String),
    /// A private class used from another library.
    InaccessibleType(String),
    /// `atomic T` outside a field type.
    AtomicNotAllowed(TypeSig),
    /// `atomic T` with a `T` that cannot be atomic.
    BadAtomic(Prim),
    /// Two members of one class share a name.
    DuplicateMember {
        /// "field", "method" or "property".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An interface declares a field.
    InterfaceField(String),
    /// Contradictory or misplaced method modifiers.
    BadModifiers(&'static str),
    /// A method reuses the name of an inherited virtual method without `override`.
    MissingOverride {
        /// `Base::m`.
        base: String,
    },
    /// An override's signature differs from the overridden method's.
    OverrideMismatch {
        /// `Base::m`.
        base: String,
    },
    /// `override` without an inherited virtual method of that name.
    NothingToOverride,
    /// A method reuses the name of an inherited non-virtual method.
    ReusedName {
        /// `Base::m`.
        base: String,
    },
    /// An `abstract` method in a non-abstract class.
    AbstractInConcrete,
    /// A non-abstract class leaves an abstract or interface method unimplemented.
    NotImplemented {
        /// `Base::m` or `Interface::m`.
        method: String,
    },
    /// A method with an interface method's name cannot implement it.
    BadImplementation {
        /// `Interface::m`.
        method: String,
        /// Why not.
        why: &'static str,
    },
    /// A `native` method with code.
    NativeWithBody,
    /// An `abstract` or interface method with code.
    AbstractWithBody,
    /// A method that needs code has none.
    MissingBody,
    /// A property names a missing or unsuitable accessor.
    BadProperty {
        /// Property name.
        property: String,
        /// Why.
        why: String,
    },
    /// A method has more exception handlers than the verifier accepts.
    TooManyHandlers(usize),

    // ---- instructions ----
    /// The code does not decode.
    Decode(DecodeError),
    /// An instruction pops more values than the stack holds.
    StackUnderflow {
        /// The instruction.
        op: Op,
        /// Values it needs.
        needed: usize,
        /// Values present.
        depth: usize,
    },
    /// Operand types do not fit the instruction.
    BadOperands {
        /// The instruction.
        op: Op,
        /// What it needs.
        expected: &'static str,
        /// What the stack holds (top last).
        found: Vec<VType>,
    },
    /// A value is not assignable to its destination.
    NotAssignable {
        /// The destination ("local `x`", "argument 1 of `C::m`", ...).
        dest: String,
        /// Its declared type.
        expected: TypeSig,
        /// The value's type.
        found: VType,
    },
    /// `ldarg`/`starg`/`ldloc`/`stloc` index out of range.
    BadVarIndex {
        /// "argument" or "local".
        what: &'static str,
        /// The index.
        index: u16,
        /// How many exist.
        count: usize,
    },
    /// A branch target that is not an instruction start of this method.
    BadTarget(u32),
    /// Control reaches the end of the code.
    FallsOffEnd,
    /// Two paths bring different stacks to an instruction.
    StackMismatch {
        /// Offset of the join point.
        target: u32,
        /// Stack already recorded there.
        expected: StackShot,
        /// Stack this instruction brings.
        found: StackShot,
    },
    /// `ret` with a stack that is not exactly the return value.
    BadReturn {
        /// Declared return type.
        expected: Option<TypeSig>,
        /// Stack at the `ret`.
        found: StackShot,
    },
    /// `ldstr` index out of range.
    BadStringIndex(u32),
    /// A member reference index out of range.
    BadMemberRef(u32),
    /// A type reference index out of range.
    BadTypeRef(u32),
    /// A member reference that resolves to nothing.
    UnknownMember {
        /// "method" or "field".
        what: &'static str,
        /// `Class::name` as referenced.
        name: String,
    },
    /// A member reference of the wrong kind (a field where a method is needed).
    WrongMemberKind {
        /// `Class::name`.
        name: String,
        /// "method" or "field".
        expected: &'static str,
    },
    /// A member that is not accessible from here.
    Inaccessible {
        /// `Class::name`.
        member: String,
        /// Its access.
        access: Access,
    },
    /// A store to an immutable or `mutable(self)` field from the wrong place.
    ReadOnlyField {
        /// `Class::field`.
        field: String,
        /// Where it may be stored.
        allowed: String,
    },
    /// `call` of an abstract or interface method.
    CallAbstract(String),
    /// `callvirt` of a static method.
    CallvirtNotInstance(String),
    /// `callvirt` of a constructor.
    CallvirtCtor(String),
    /// `call C::ctor` outside a constructor of `C` or one of its subclasses.
    CtorCallOutsideCtor(String),
    /// `call`/`callvirt`/`newobj` of a static constructor (only the runtime runs it, once).
    CallCctor(String),
    /// `newobj` of something that is not a `ctor`.
    NewobjNotCtor(String),
    /// `newobj` of an abstract class or an interface.
    NewobjAbstract(String),
    /// Instance field access on a static field or vice versa.
    FieldStaticness {
        /// `Class::field`.
        field: String,
        /// True if the instruction needs a static field.
        want_static: bool,
    },
    /// `atomic.*` on a field that is not atomic.
    NotAtomic(String),
    /// `atomic.add` on an `atomic bool` field.
    AtomicAddType(String),
    /// `ldelem`/`stelem` type differs from the array's element type.
    ElementType {
        /// The instruction's type operand.
        expected: TypeSig,
        /// The array operand's type.
        found: VType,
    },
    /// A type operand that cannot be used here (e.g. `isinst i32`).
    BadTypeOperand {
        /// The instruction.
        op: Op,
        /// The type.
        ty: TypeSig,
    },
    /// `throw` of something that is not an `Exception`.
    ThrowNotException(VType),

    // ---- exception structure ----
    /// A handler clause with an invalid range.
    BadHandlerRange(&'static str),
    /// Two protected blocks overlap without nesting.
    BlocksOverlap,
    /// A catch type that is not `Exception` or a subclass.
    BadCatchType(TypeSig),
    /// Control enters a try block other than at its start.
    EnterTryMiddle,
    /// Control enters a handler other than by an exception.
    EnterHandler(BlockKind),
    /// Control leaves a protected block other than by `leave`/`throw`/`rethrow`/`endfinally`.
    ExitProtected(BlockKind),
    /// `leave` out of a finally block (use `endfinally`).
    LeaveFinally,
    /// `ret` inside a protected block.
    RetInProtected,
    /// The stack is not empty on entry to a try block.
    TryStackNotEmpty(StackShot),
    /// `endfinally` outside a finally block.
    EndfinallyOutsideFinally,
    /// `rethrow` outside a catch block.
    RethrowOutsideCatch,
    /// The evaluation stack grows beyond [`MAX_STACK`].
    StackTooDeep,
    /// The method exceeds the verifier's work bound (instruction visits of
    /// the abstract interpretation: 16 per instruction plus 100,000).
    TooComplex,
    /// The method's stack types need more shared stack nodes than the
    /// verifier's memory bound allows (`limit`: 32 per instruction plus
    /// 131,072, of [`NODE_BYTES`] each).
    TooManyStackTypes {
        /// The bound for this method.
        limit: usize,
    },
}

fn stack_str(s: &[VType]) -> String {
    let parts: Vec<String> = s.iter().map(|t| t.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for VerifyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use VerifyErrorKind::*;
        match self {
            NoMain => f.write_str("no class defines a static `main` method"),
            DuplicateMain { first } => write!(f, "duplicate static `main` (first: {first})"),
            BadMainSignature => f.write_str(
                "bad `main` signature: expected main() or main(args: string[]) returning void or i32",
            ),
            MissingBase => f.write_str("class has no base class"),
            UnknownBase(b) => write!(f, "base class `{b}` does not exist"),
            BaseNotClass(b) => write!(f, "base `{b}` is an interface, not a class"),
            SealedBase(b) => write!(f, "cannot extend sealed class `{b}`"),
            InheritanceCycle => f.write_str("inheritance cycle"),
            InterfaceCycle => f.write_str("interface inheritance cycle"),
            InterfaceWithBase(b) => write!(f, "an interface cannot extend class `{b}`"),
            NotAnInterface(n) => write!(f, "`{n}` is not an interface"),
            UnknownType(n) => write!(f, "unknown type `{n}`"),
            InaccessibleType(n) => write!(f, "type `{n}` is private to its library"),
            AtomicNotAllowed(t) => write!(f, "`{t}` is only allowed as a field type"),
            BadAtomic(p) => write!(f, "`atomic {}`: only bool, u8, i64 and u64 can be atomic", p.name()),
            DuplicateMember { what, name } => write!(f, "duplicate {what} `{name}`"),
            InterfaceField(n) => write!(f, "interface declares field `{n}`"),
            BadModifiers(why) => write!(f, "bad modifiers: {why}"),
            MissingOverride { base } => {
                write!(f, "method hides inherited virtual method `{base}`: declare it `override`")
            }
            OverrideMismatch { base } => {
                write!(f, "override of `{base}` has a different signature")
            }
            NothingToOverride => f.write_str("`override` method overrides no inherited virtual method"),
            ReusedName { base } => {
                write!(f, "method reuses the name of inherited non-virtual method `{base}`")
            }
            AbstractInConcrete => f.write_str("abstract method in a non-abstract class"),
            NotImplemented { method } => {
                write!(f, "non-abstract class does not implement `{method}`")
            }
            BadImplementation { method, why } => {
                write!(f, "cannot implement interface method `{method}`: {why}")
            }
            NativeWithBody => f.write_str("native method has a body"),
            AbstractWithBody => f.write_str("abstract or interface method has a body"),
            MissingBody => f.write_str("method has no body"),
            BadProperty { property, why } => write!(f, "property `{property}`: {why}"),
            TooManyHandlers(n) => write!(f, "too many exception handlers ({n}, limit {})", blocks::MAX_HANDLERS),
            Decode(e) => write!(f, "bad code: {e}"),
            StackUnderflow { op, needed, depth } => {
                write!(f, "stack underflow: `{op}` needs {needed} value(s), the stack holds {depth}")
            }
            BadOperands { op, expected, found } => {
                write!(f, "`{op}` expects {expected}, found {}", stack_str(found))
            }
            NotAssignable { dest, expected, found } => {
                write!(f, "type mismatch: {found} is not assignable to {dest} of type {expected}")
            }
            BadVarIndex { what, index, count } => {
                write!(f, "{what} index {index} out of range ({count} declared)")
            }
            BadTarget(t) => write!(f, "branch target {t} is not an instruction of this method"),
            FallsOffEnd => f.write_str("control falls off the end of the method"),
            StackMismatch { target, expected, found } => write!(
                f,
                "stack mismatch at join point @{target}: {found} here, {expected} on another path",
            ),
            BadReturn { expected: None, found } => {
                write!(f, "bad return: void method returns with stack {found}")
            }
            BadReturn { expected: Some(t), found } => {
                write!(f, "bad return: expected exactly one {t} on the stack, found {found}")
            }
            BadStringIndex(i) => write!(f, "string index {i} out of range"),
            BadMemberRef(i) => write!(f, "member reference {i} out of range"),
            BadTypeRef(i) => write!(f, "type reference {i} out of range"),
            UnknownMember { what, name } => write!(f, "unknown {what} `{name}`"),
            WrongMemberKind { name, expected } => write!(f, "`{name}` is not a {expected}"),
            Inaccessible { member, access } => {
                write!(f, "`{member}` is {} and not accessible here", access.name())
            }
            ReadOnlyField { field, allowed } => {
                write!(f, "field `{field}` cannot be stored here: {allowed}")
            }
            CallAbstract(m) => write!(f, "`call` of abstract method `{m}` (use callvirt)"),
            CallvirtNotInstance(m) => write!(f, "`callvirt` needs an instance method, `{m}` is not"),
            CallvirtCtor(m) => write!(f, "`callvirt` cannot call constructor `{m}` (use newobj or call)"),
            CtorCallOutsideCtor(m) => {
                write!(f, "`call {m}` is only allowed in a constructor of that class or a subclass")
            }
            CallCctor(m) => write!(
                f,
                "static constructor `{m}` cannot be called: the runtime runs it once, at load"
            ),
            NewobjNotCtor(m) => write!(f, "`newobj` needs a constructor, `{m}` is not a ctor"),
            NewobjAbstract(c) => write!(f, "`newobj` of abstract class or interface `{c}`"),
            FieldStaticness { field, want_static: true } => {
                write!(f, "`{field}` is an instance field, not a static field")
            }
            FieldStaticness { field, want_static: false } => {
                write!(f, "`{field}` is a static field, not an instance field")
            }
            NotAtomic(n) => write!(f, "field `{n}` is not atomic"),
            AtomicAddType(n) => write!(f, "`atomic.add` needs atomic u8, i64 or u64; `{n}` is atomic bool"),
            ElementType { expected, found } => {
                write!(f, "element type mismatch: instruction names {expected}[], array is {found}")
            }
            BadTypeOperand { op, ty } => write!(f, "`{op}` cannot take type {ty}"),
            ThrowNotException(t) => write!(f, "`throw` needs an Exception, found {t}"),
            BadHandlerRange(why) => write!(f, "bad exception handler: {why}"),
            BlocksOverlap => f.write_str("protected blocks overlap without nesting"),
            BadCatchType(t) => write!(f, "catch type {t} is not Exception or a subclass"),
            EnterTryMiddle => f.write_str("control enters a try block other than at its start"),
            EnterHandler(k) => write!(f, "control enters a {k} other than by an exception"),
            ExitProtected(k) => {
                write!(f, "control leaves a {k} other than by leave, throw, rethrow or endfinally")
            }
            LeaveFinally => f.write_str("`leave` out of a finally block (use endfinally)"),
            RetInProtected => f.write_str("`ret` inside a protected block (use leave)"),
            TryStackNotEmpty(s) => write!(f, "stack not empty on entry to a try block: {s}"),
            EndfinallyOutsideFinally => f.write_str("`endfinally` outside a finally block"),
            RethrowOutsideCatch => f.write_str("`rethrow` outside a catch block"),
            StackTooDeep => write!(f, "evaluation stack deeper than {MAX_STACK}"),
            TooComplex => f.write_str("method too large or complex to verify"),
            TooManyStackTypes { limit } => write!(
                f,
                "method too large or complex to verify: its stack types need more than {limit} shared stack nodes (limit: 32 per instruction + 131072)"
            ),
        }
    }
}

/// What the verifier requires of a whole program beyond each library's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The last (main) library must define exactly one static `main` with a
    /// valid signature: the entry point of `kiln run`. Hosts that call
    /// methods directly ([`crate::host::Vm`]) turn this off.
    pub require_main: bool,
}

impl Default for VerifyOptions {
    fn default() -> VerifyOptions {
        VerifyOptions { require_main: true }
    }
}

/// Verify every library of `program` as a runnable program (it has a
/// `main`). `files[i]` names the file of `program.libs[i]`.
///
/// Returns every method body's typed instructions, or all errors found.
pub fn verify_program(program: &Program, files: &[String]) -> Result<Verified, Vec<VerifyError>> {
    verify_program_with(program, files, VerifyOptions::default())
}

/// [`verify_program`] with explicit [`VerifyOptions`].
pub fn verify_program_with(
    program: &Program,
    files: &[String],
    opts: VerifyOptions,
) -> Result<Verified, Vec<VerifyError>> {
    let mut cx = Cx {
        p: program,
        files,
        errors: Vec::new(),
    };
    classes::check_classes(&mut cx);
    if opts.require_main {
        classes::check_main(&mut cx);
    }
    let mut verified = Verified::default();
    for id in program.all_classes() {
        let def = program.def(id);
        for (mi, m) in def.methods.iter().enumerate() {
            if !m.has_body() || def.kind == TypeKind::Interface {
                continue;
            }
            let mid = MemberId {
                class: id,
                index: mi as u32,
            };
            if let Some(info) = body::verify_method(&mut cx, mid) {
                verified.methods.insert(mid, info);
            }
        }
    }
    if cx.errors.is_empty() {
        Ok(verified)
    } else {
        // Report in load order of the files, then by line (stable: errors of
        // one line keep their discovery order).
        let mut errors = cx.errors;
        errors.sort_by_key(|e| (files.iter().position(|f| *f == e.file), e.line));
        Err(errors)
    }
}

/// Shared verification context: the program and the growing error list.
struct Cx<'a> {
    p: &'a Program,
    files: &'a [String],
    errors: Vec<VerifyError>,
}

impl Cx<'_> {
    /// File name of library `li`.
    fn file(&self, li: usize) -> String {
        match self.files.get(li) {
            Some(f) => f.clone(),
            None => self
                .p
                .libs
                .get(li)
                .map(|l| format!("{}.kasm", l.name))
                .unwrap_or_default(),
        }
    }

    /// Record an error for class `id` (and optionally a method / offset).
    fn err(
        &mut self,
        id: ClassId,
        line: u32,
        method: Option<&str>,
        offset: Option<u32>,
        kind: VerifyErrorKind,
    ) {
        let e = VerifyError {
            file: self.file(id.lib as usize),
            line,
            class: self.p.def(id).name.clone(),
            method: method.map(str::to_string),
            offset,
            kind,
        };
        self.errors.push(e);
    }

    /// Check that `t` names existing types visible from library `li`. `field`
    /// allows `atomic T` at the top level.
    fn check_type(&self, li: usize, t: &TypeSig, field: bool) -> Result<(), VerifyErrorKind> {
        match t {
            TypeSig::Prim(_) => Ok(()),
            TypeSig::Atomic(p) if !field => {
                Err(VerifyErrorKind::AtomicNotAllowed(TypeSig::Atomic(*p)))
            }
            TypeSig::Atomic(p) if !p.can_be_atomic() => Err(VerifyErrorKind::BadAtomic(*p)),
            TypeSig::Atomic(_) => Ok(()),
            TypeSig::Array(e) => self.check_type(li, e, false),
            TypeSig::Class(n) => self.check_class_name(li, n).map(|_| ()),
        }
    }

    /// Resolve a class name used from library `li` (exists and visible).
    fn check_class_name(&self, li: usize, name: &str) -> Result<ClassId, VerifyErrorKind> {
        let id = self
            .p
            .class(name)
            .ok_or_else(|| VerifyErrorKind::UnknownType(name.to_string()))?;
        if id.lib as usize != li && self.p.def(id).access != Access::Public {
            return Err(VerifyErrorKind::InaccessibleType(name.to_string()));
        }
        Ok(id)
    }
}

/// `Class::member` for messages.
fn qual(p: &Program, m: MemberId, method: bool) -> String {
    let d = p.def(m.class);
    let name = if method {
        &p.method(m).name
    } else {
        &p.field(m).name
    };
    format!("{}::{}", d.name, name)
}
