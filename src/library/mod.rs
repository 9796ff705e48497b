//! The in-memory model of one library: exactly what a `.klib` file holds.
//!
//! The assembler produces a [`Library`], the writer serialises it, the reader
//! rebuilds it (bit for bit: `read(write(lib)) == lib`), and the disassembler
//! prints it. Nothing here is resolved: class and member names are strings, and
//! code is raw bytecode (see [`crate::bytecode`]) whose operands index this
//! library's `strings`, `type_refs` and `member_refs`. Resolution across
//! libraries happens in [`program`], verification in `crate::verify`.
//!
//! Invariants a producer must keep (the reader checks the structural ones, the
//! verifier the semantic ones):
//! - `code` of a method with a body decodes into whole instructions;
//! - `lines` is sorted by `offset`, each offset an instruction start;
//! - `handlers` are ordered innermost first, as in CIL.

pub mod program;

/// Built-in names of the reference types the language spells specially.
pub const OBJECT: &str = "Object";
/// The class behind the `string` keyword.
pub const STRING: &str = "String";
/// Root of every exception class.
pub const EXCEPTION: &str = "Exception";

/// Primitive value types (the memory-layout note's item types, plus `i32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prim {
    /// `bool`, 1 byte.
    Bool,
    /// `char`, 4 bytes.
    Char,
    /// `u8`, 1 byte.
    U8,
    /// `i32`, 4 bytes (extension; no item type id).
    I32,
    /// `i64`, 8 bytes.
    I64,
    /// `u64`, 8 bytes.
    U64,
    /// `f32`, 4 bytes.
    F32,
    /// `f64`, 8 bytes.
    F64,
    /// `ptr`, 8 bytes.
    Ptr,
    /// `mutptr`, 8 bytes.
    MutPtr,
}

impl Prim {
    /// Every primitive, in declaration order.
    pub const ALL: [Prim; 10] = [
        Prim::Bool,
        Prim::Char,
        Prim::U8,
        Prim::I32,
        Prim::I64,
        Prim::U64,
        Prim::F32,
        Prim::F64,
        Prim::Ptr,
        Prim::MutPtr,
    ];

    /// kasm spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Prim::Bool => "bool",
            Prim::Char => "char",
            Prim::U8 => "u8",
            Prim::I32 => "i32",
            Prim::I64 => "i64",
            Prim::U64 => "u64",
            Prim::F32 => "f32",
            Prim::F64 => "f64",
            Prim::Ptr => "ptr",
            Prim::MutPtr => "mutptr",
        }
    }

    /// Parse a kasm primitive type keyword.
    pub fn from_name(s: &str) -> Option<Prim> {
        Prim::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Storage size in bytes.
    pub const fn size(self) -> u32 {
        match self {
            Prim::Bool | Prim::U8 => 1,
            Prim::Char | Prim::I32 | Prim::F32 => 4,
            Prim::I64 | Prim::U64 | Prim::F64 | Prim::Ptr | Prim::MutPtr => 8,
        }
    }

    /// Item type id of the memory-layout note (`None` for the `i32` extension).
    pub const fn item_type_id(self) -> Option<u8> {
        match self {
            Prim::Bool => Some(1),
            Prim::Char => Some(2),
            Prim::U8 => Some(3),
            Prim::I64 => Some(4),
            Prim::U64 => Some(5),
            Prim::F32 => Some(6),
            Prim::F64 => Some(7),
            Prim::Ptr => Some(8),
            Prim::MutPtr => Some(9),
            Prim::I32 => None,
        }
    }

    /// Whether `atomic <self>` is a valid field type.
    pub const fn can_be_atomic(self) -> bool {
        matches!(self, Prim::Bool | Prim::U8 | Prim::I64 | Prim::U64)
    }
}

/// A type as written in a signature, field or instruction operand.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TypeSig {
    /// A primitive value type.
    Prim(Prim),
    /// `atomic T` (fields only; `T` satisfies [`Prim::can_be_atomic`]).
    Atomic(Prim),
    /// A class or interface by name (`object` is `Object`, `string` is `String`).
    Class(String),
    /// `T[]`.
    Array(Box<TypeSig>),
}

impl TypeSig {
    /// True for object references (classes, interfaces, arrays).
    pub fn is_ref(&self) -> bool {
        matches!(self, TypeSig::Class(_) | TypeSig::Array(_))
    }

    /// Storage size in bytes of a value of this type in a field, element or slot.
    pub fn size(&self) -> u32 {
        match self {
            TypeSig::Prim(p) | TypeSig::Atomic(p) => p.size(),
            TypeSig::Class(_) | TypeSig::Array(_) => 8,
        }
    }

    /// Shorthand for `TypeSig::Class(name)`.
    pub fn class(name: &str) -> TypeSig {
        TypeSig::Class(name.to_string())
    }
}

impl std::fmt::Display for TypeSig {
    /// Prints kasm syntax (`string`, `object`, `i64`, `Circle[]`, `atomic i64`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TypeSig::Prim(p) => f.write_str(p.name()),
            TypeSig::Atomic(p) => write!(f, "atomic {}", p.name()),
            TypeSig::Class(n) if n == STRING => f.write_str("string"),
            TypeSig::Class(n) if n == OBJECT => f.write_str("object"),
            TypeSig::Class(n) => f.write_str(n),
            TypeSig::Array(e) => write!(f, "{e}[]"),
        }
    }
}

/// Member visibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Visible everywhere.
    Public,
    /// Only the declaring class.
    Private,
    /// The declaring class and its subclasses.
    Protected,
}

impl Access {
    /// kasm keyword.
    pub const fn name(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Private => "private",
            Access::Protected => "protected",
        }
    }
}

/// Who may store a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutability {
    /// Stored only in the declaring class's `ctor` (instance) or `cctor` (static).
    Immutable,
    /// Stored by anyone who can see it.
    Mutable,
    /// Stored only by the declaring class's methods.
    MutableSelf,
}

/// The 3-bit field flags of the library format (kasm.md "Field flags").
pub fn field_flags(access: Access, m: Mutability) -> u8 {
    match (access, m) {
        (Access::Private, Mutability::Immutable) => 0,
        (Access::Private, _) => 1,
        (Access::Public, Mutability::Immutable) => 2,
        (Access::Public, Mutability::Mutable) => 3,
        (Access::Public, Mutability::MutableSelf) => 4,
        (Access::Protected, Mutability::Immutable) => 5,
        (Access::Protected, Mutability::Mutable) => 6,
        (Access::Protected, Mutability::MutableSelf) => 7,
    }
}

/// Inverse of [`field_flags`]; `None` for values above 7.
pub fn field_flags_decode(bits: u8) -> Option<(Access, Mutability)> {
    Some(match bits {
        0 => (Access::Private, Mutability::Immutable),
        1 => (Access::Private, Mutability::Mutable),
        2 => (Access::Public, Mutability::Immutable),
        3 => (Access::Public, Mutability::Mutable),
        4 => (Access::Public, Mutability::MutableSelf),
        5 => (Access::Protected, Mutability::Immutable),
        6 => (Access::Protected, Mutability::Mutable),
        7 => (Access::Protected, Mutability::MutableSelf),
        _ => return None,
    })
}

/// Class or interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeKind {
    /// `.class`.
    Class,
    /// `.interface`.
    Interface,
}

/// A constant argument of a custom attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// Integer literal.
    Int(i64),
    /// Float literal.
    Float(f64),
    /// String literal.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// Char literal.
    Char(u32),
}

/// One attribute argument: positional (`name == None`) or named (`version = 2`).
#[derive(Clone, Debug, PartialEq)]
pub struct AttrArg {
    /// Name of a named argument.
    pub name: Option<String>,
    /// The value.
    pub value: AttrValue,
}

/// `.attr Name(args...)` on a class or member.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Arguments in source order.
    pub args: Vec<AttrArg>,
}

/// A field declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDef {
    /// Field name.
    pub name: String,
    /// Declared type.
    pub ty: TypeSig,
    /// Visibility.
    pub access: Access,
    /// Who may store it.
    pub mutability: Mutability,
    /// `static`: lives in the type's global memory.
    pub is_static: bool,
    /// Custom attributes.
    pub attrs: Vec<Attribute>,
    /// Source line of the declaration (0 if unknown).
    pub line: u32,
}

/// A property: metadata naming getter/setter methods of the same class.
#[derive(Clone, Debug, PartialEq)]
pub struct PropertyDef {
    /// Property name.
    pub name: String,
    /// Its type.
    pub ty: TypeSig,
    /// Visibility.
    pub access: Access,
    /// Getter method name.
    pub getter: Option<String>,
    /// Setter method name.
    pub setter: Option<String>,
    /// Custom attributes.
    pub attrs: Vec<Attribute>,
    /// Source line.
    pub line: u32,
}

/// A named, typed argument or local.
#[derive(Clone, Debug, PartialEq)]
pub struct Var {
    /// Name as written.
    pub name: String,
    /// Declared type.
    pub ty: TypeSig,
}

/// The kind of a protected-region clause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerKind {
    /// `catch T`: index into the library's `type_refs`.
    Catch(u32),
    /// `finally`.
    Finally,
}

/// One protected-region clause (byte offsets into the method's code; ends exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    /// First byte of the protected range.
    pub try_start: u32,
    /// One past its last byte.
    pub try_end: u32,
    /// First byte of the handler block.
    pub handler_start: u32,
    /// One past its last byte.
    pub handler_end: u32,
    /// Catch or finally.
    pub kind: HandlerKind,
}

/// Maps code offsets to source lines: applies from `offset` until the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineEntry {
    /// Instruction offset.
    pub offset: u32,
    /// Source line.
    pub line: u32,
}

/// Method modifier flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MethodFlags {
    /// `static`.
    pub is_static: bool,
    /// `virtual`.
    pub is_virtual: bool,
    /// `override`.
    pub is_override: bool,
    /// `abstract` (no body; also every interface method).
    pub is_abstract: bool,
    /// `native` (body supplied by the runtime or the host).
    pub is_native: bool,
}

/// A method declaration with its body.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodDef {
    /// Method name (`ctor`, `cctor` are special).
    pub name: String,
    /// Visibility.
    pub access: Access,
    /// Modifiers.
    pub flags: MethodFlags,
    /// Declared parameters (without the implicit `this`).
    pub params: Vec<Var>,
    /// Return type, `None` for void.
    pub ret: Option<TypeSig>,
    /// Declared locals.
    pub locals: Vec<Var>,
    /// Raw bytecode (empty for abstract and native methods).
    pub code: Vec<u8>,
    /// Protected regions, innermost first.
    pub handlers: Vec<Handler>,
    /// Source lines of instructions.
    pub lines: Vec<LineEntry>,
    /// Custom attributes.
    pub attrs: Vec<Attribute>,
    /// Source line of the declaration.
    pub line: u32,
}

impl MethodDef {
    /// True if the method has a bytecode body.
    pub fn has_body(&self) -> bool {
        !self.flags.is_abstract && !self.flags.is_native
    }

    /// Source line of the instruction at `offset` (the declaration's line if unknown).
    pub fn line_at(&self, offset: u32) -> u32 {
        match self.lines.partition_point(|e| e.offset <= offset) {
            0 => self.line,
            i => self.lines[i - 1].line,
        }
    }
}

/// A class or interface definition.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeDef {
    /// Type name (one namespace across all loaded libraries).
    pub name: String,
    /// Class or interface.
    pub kind: TypeKind,
    /// Visibility.
    pub access: Access,
    /// `abstract` class.
    pub is_abstract: bool,
    /// `sealed` class.
    pub is_sealed: bool,
    /// Base class (`None` only for `Object` and for interfaces).
    pub parent: Option<String>,
    /// Implemented interfaces (for an interface: the interfaces it extends).
    pub interfaces: Vec<String>,
    /// Fields in declaration order.
    pub fields: Vec<FieldDef>,
    /// Methods in declaration order.
    pub methods: Vec<MethodDef>,
    /// Properties.
    pub properties: Vec<PropertyDef>,
    /// Custom attributes.
    pub attrs: Vec<Attribute>,
    /// Source line of the declaration.
    pub line: u32,
}

/// Field or method reference kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberKind {
    /// A field.
    Field,
    /// A method.
    Method,
}

/// `Class::member` as referenced by an instruction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberRef {
    /// Class named in the reference (the member may be inherited).
    pub class: String,
    /// Member name.
    pub name: String,
    /// Field or method.
    pub kind: MemberKind,
}

/// `.import name`: a library this one needs, and the line that names it
/// (load errors about the import point there).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Import {
    /// The imported library's name.
    pub name: String,
    /// Source line of the `.import`.
    pub line: u32,
}

/// One library: the unit of assembly, serialisation and loading.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Library {
    /// `.library name`.
    pub name: String,
    /// `.import`ed libraries, in order.
    pub imports: Vec<Import>,
    /// String literals used by `ldstr`, deduplicated, in first-use order.
    pub strings: Vec<String>,
    /// Types used by `newarr`, `isinst`, `castclass`, `ldelem`, `stelem`, `catch`.
    pub type_refs: Vec<TypeSig>,
    /// Fields and methods used by instructions.
    pub member_refs: Vec<MemberRef>,
    /// Classes and interfaces in declaration order.
    pub types: Vec<TypeDef>,
}

impl Library {
    /// Find a type defined in this library.
    pub fn type_named(&self, name: &str) -> Option<&TypeDef> {
        self.types.iter().find(|t| t.name == name)
    }
}
