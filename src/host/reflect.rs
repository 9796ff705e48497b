//! Reflection over a program's metadata: libraries, classes, fields,
//! methods, properties and custom attributes. [`Metadata::load`] reads
//! sources without verifying them or building executable tables;
//! [`Vm::metadata`](super::Vm::metadata) gives the same view of a loaded Vm.
//!
//! The views borrow the program's in-memory library model
//! ([`crate::library`]); nothing here touches the heap.

use super::source::{load_program, Source};
use super::{Access, Attribute, Error, MethodFlags, Mutability, TypeKind, TypeSig, Var};
use crate::library::program::{ClassId, Program};
use crate::library::{FieldDef, Library, MethodDef, PropertyDef, TypeDef};

/// The metadata of a set of libraries (with `std` and their imports),
/// loaded for reflection only: nothing is verified or executable.
///
/// ```
/// use kiln::{Metadata, Source};
/// let src = ".library shapes\n.attr Doc(\"a shape\", version = 2)\n.class public abstract Shape {\n .method public virtual abstract area() -> f64\n}\n";
/// let md = Metadata::load(&[Source::kasm("shapes", src)])?;
/// let shape = md.program().class("Shape").unwrap();
/// assert!(shape.is_abstract());
/// assert_eq!(shape.attributes()[0].name, "Doc");
/// assert_eq!(shape.method("area").unwrap().signature(), "area() -> f64");
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Debug)]
pub struct Metadata {
    program: Program,
    files: Vec<String>,
}

impl Metadata {
    /// Read `sources` and their imports. Errors: [`Error::Io`],
    /// [`Error::Format`], [`Error::Assembly`], [`Error::Link`].
    pub fn load(sources: &[Source]) -> Result<Metadata, Error> {
        let (program, files) = load_program(sources)?;
        Ok(Metadata { program, files })
    }

    /// The reflection view.
    pub fn program(&self) -> ProgramRef<'_> {
        ProgramRef {
            program: &self.program,
            files: &self.files,
        }
    }
}

/// A view of a program's metadata (from [`Metadata::program`] or
/// [`Vm::metadata`](super::Vm::metadata)).
#[derive(Clone, Copy)]
pub struct ProgramRef<'a> {
    pub(crate) program: &'a Program,
    pub(crate) files: &'a [String],
}

impl<'a> ProgramRef<'a> {
    /// Every library, `std` first, imports before importers.
    pub fn libraries(&self) -> impl Iterator<Item = LibraryInfo<'a>> + 'a {
        let p = self.program;
        let files = self.files;
        p.libs.iter().enumerate().map(move |(i, lib)| LibraryInfo {
            program: p,
            lib,
            index: i as u32,
            file: files.get(i).map(String::as_str).unwrap_or(""),
        })
    }

    /// The library named `name`.
    pub fn library(&self, name: &str) -> Option<LibraryInfo<'a>> {
        self.libraries().find(|l| l.name() == name)
    }

    /// The class or interface named `name`.
    pub fn class(&self, name: &str) -> Option<ClassInfo<'a>> {
        self.program.class(name).map(|id| ClassInfo {
            program: self.program,
            id,
        })
    }

    /// Every class and interface of every library.
    pub fn classes(&self) -> impl Iterator<Item = ClassInfo<'a>> + 'a {
        self.libraries().flat_map(|l| l.classes())
    }
}

impl std::fmt::Debug for ProgramRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.program.libs.iter().map(|l| &l.name))
            .finish()
    }
}

/// One library.
#[derive(Clone, Copy)]
pub struct LibraryInfo<'a> {
    program: &'a Program,
    lib: &'a Library,
    index: u32,
    file: &'a str,
}

impl<'a> LibraryInfo<'a> {
    /// Its `.library` name.
    pub fn name(&self) -> &'a str {
        &self.lib.name
    }

    /// The file (or source name) it came from.
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// The libraries it imports (names and the lines of their `.import`s).
    pub fn imports(&self) -> &'a [crate::library::Import] {
        &self.lib.imports
    }

    /// Its classes and interfaces, in declaration order.
    pub fn classes(&self) -> impl Iterator<Item = ClassInfo<'a>> + 'a {
        let p = self.program;
        let lib = self.index;
        (0..self.lib.types.len() as u32).map(move |ty| ClassInfo {
            program: p,
            id: ClassId { lib, ty },
        })
    }
}

impl std::fmt::Debug for LibraryInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LibraryInfo({})", self.name())
    }
}

/// One class or interface.
#[derive(Clone, Copy)]
pub struct ClassInfo<'a> {
    program: &'a Program,
    id: ClassId,
}

impl<'a> ClassInfo<'a> {
    fn def(&self) -> &'a TypeDef {
        self.program.def(self.id)
    }

    /// Its name.
    pub fn name(&self) -> &'a str {
        &self.def().name
    }

    /// The name of the library defining it.
    pub fn library(&self) -> &'a str {
        &self.program.lib_of(self.id).name
    }

    /// Class or interface.
    pub fn kind(&self) -> TypeKind {
        self.def().kind
    }

    /// Its visibility.
    pub fn access(&self) -> Access {
        self.def().access
    }

    /// `abstract`.
    pub fn is_abstract(&self) -> bool {
        self.def().is_abstract
    }

    /// `sealed`.
    pub fn is_sealed(&self) -> bool {
        self.def().is_sealed
    }

    /// The base class name (None for `Object` and interfaces).
    pub fn parent(&self) -> Option<&'a str> {
        self.def().parent.as_deref()
    }

    /// The interfaces it declares (directly).
    pub fn interfaces(&self) -> &'a [String] {
        &self.def().interfaces
    }

    /// Every interface it implements, transitively (through base classes
    /// and interface inheritance).
    pub fn all_interfaces(&self) -> Vec<&'a str> {
        self.program
            .interfaces_of(self.id)
            .into_iter()
            .filter(|&i| i != self.id)
            .map(|i| self.program.def(i).name.as_str())
            .collect()
    }

    /// Whether it is `class` or derives from it.
    pub fn is_subclass_of(&self, class: &str) -> bool {
        self.program
            .class(class)
            .is_some_and(|c| self.program.is_subclass(self.id, c))
    }

    /// Its declared fields (not inherited ones).
    pub fn fields(&self) -> impl Iterator<Item = FieldInfo<'a>> + 'a {
        self.def().fields.iter().map(|def| FieldInfo { def })
    }

    /// The field `name`, declared here or inherited.
    pub fn field(&self, name: &str) -> Option<FieldInfo<'a>> {
        self.program.find_field(self.id, name).map(|m| FieldInfo {
            def: &self.program.def(m.class).fields[m.index as usize],
        })
    }

    /// Its declared methods.
    pub fn methods(&self) -> impl Iterator<Item = MethodInfo<'a>> + 'a {
        let class = self.def();
        class
            .methods
            .iter()
            .map(move |def| MethodInfo { class, def })
    }

    /// The method `name`, declared here or inherited (nearest first).
    pub fn method(&self, name: &str) -> Option<MethodInfo<'a>> {
        let p = self.program;
        p.ancestors(self.id).into_iter().find_map(|c| {
            let class = p.def(c);
            class
                .methods
                .iter()
                .find(|m| m.name == name)
                .map(|def| MethodInfo { class, def })
        })
    }

    /// Its declared properties.
    pub fn properties(&self) -> impl Iterator<Item = PropertyInfo<'a>> + 'a {
        self.def().properties.iter().map(|def| PropertyInfo { def })
    }

    /// Its custom attributes.
    pub fn attributes(&self) -> &'a [Attribute] {
        &self.def().attrs
    }

    /// Declaration line.
    pub fn line(&self) -> u32 {
        self.def().line
    }
}

impl std::fmt::Debug for ClassInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClassInfo({})", self.name())
    }
}

/// One field.
#[derive(Clone, Copy)]
pub struct FieldInfo<'a> {
    def: &'a FieldDef,
}

impl<'a> FieldInfo<'a> {
    /// Its name.
    pub fn name(&self) -> &'a str {
        &self.def.name
    }

    /// Its type (`atomic T` for atomic fields).
    pub fn ty(&self) -> &'a TypeSig {
        &self.def.ty
    }

    /// Visibility.
    pub fn access(&self) -> Access {
        self.def.access
    }

    /// Who may store it.
    pub fn mutability(&self) -> Mutability {
        self.def.mutability
    }

    /// `static`.
    pub fn is_static(&self) -> bool {
        self.def.is_static
    }

    /// `atomic`.
    pub fn is_atomic(&self) -> bool {
        matches!(self.def.ty, TypeSig::Atomic(_))
    }

    /// The 3-bit field flags of the library format (access and mutability).
    pub fn flags(&self) -> u8 {
        crate::library::field_flags(self.def.access, self.def.mutability)
    }

    /// Its custom attributes.
    pub fn attributes(&self) -> &'a [Attribute] {
        &self.def.attrs
    }
}

impl std::fmt::Debug for FieldInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FieldInfo({}: {})", self.name(), self.ty())
    }
}

/// One method.
#[derive(Clone, Copy)]
pub struct MethodInfo<'a> {
    class: &'a TypeDef,
    def: &'a MethodDef,
}

impl<'a> MethodInfo<'a> {
    /// Its name.
    pub fn name(&self) -> &'a str {
        &self.def.name
    }

    /// The class declaring it.
    pub fn class(&self) -> &'a str {
        &self.class.name
    }

    /// Parameters (name and type), without the receiver.
    pub fn params(&self) -> &'a [Var] {
        &self.def.params
    }

    /// Return type (None for `void`).
    pub fn ret(&self) -> Option<&'a TypeSig> {
        self.def.ret.as_ref()
    }

    /// Modifier flags (static, virtual, override, abstract, native).
    pub fn flags(&self) -> MethodFlags {
        self.def.flags
    }

    /// Visibility.
    pub fn access(&self) -> Access {
        self.def.access
    }

    /// `static`.
    pub fn is_static(&self) -> bool {
        self.def.flags.is_static
    }

    /// `native`.
    pub fn is_native(&self) -> bool {
        self.def.flags.is_native
    }

    /// The signature in kasm syntax: `add(a: i64, b: i64) -> i64`.
    pub fn signature(&self) -> String {
        signature_of(self.def)
    }

    /// Its custom attributes.
    pub fn attributes(&self) -> &'a [Attribute] {
        &self.def.attrs
    }

    /// Declaration line.
    pub fn line(&self) -> u32 {
        self.def.line
    }
}

impl std::fmt::Debug for MethodInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MethodInfo({}::{})", self.class(), self.signature())
    }
}

/// One property.
#[derive(Clone, Copy)]
pub struct PropertyInfo<'a> {
    def: &'a PropertyDef,
}

impl<'a> PropertyInfo<'a> {
    /// Its name.
    pub fn name(&self) -> &'a str {
        &self.def.name
    }

    /// Its type.
    pub fn ty(&self) -> &'a TypeSig {
        &self.def.ty
    }

    /// Visibility.
    pub fn access(&self) -> Access {
        self.def.access
    }

    /// The getter method's name.
    pub fn getter(&self) -> Option<&'a str> {
        self.def.getter.as_deref()
    }

    /// The setter method's name.
    pub fn setter(&self) -> Option<&'a str> {
        self.def.setter.as_deref()
    }

    /// Its custom attributes.
    pub fn attributes(&self) -> &'a [Attribute] {
        &self.def.attrs
    }
}

impl std::fmt::Debug for PropertyInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PropertyInfo({}: {})", self.name(), self.ty())
    }
}

/// `name(a: i64, b: f64) -> i64` (kasm syntax; `void` results omit the arrow).
pub(crate) fn signature_of(m: &MethodDef) -> String {
    let params: Vec<String> = m
        .params
        .iter()
        .map(|p| format!("{}: {}", p.name, p.ty))
        .collect();
    match &m.ret {
        Some(t) => format!("{}({}) -> {t}", m.name, params.join(", ")),
        None => format!("{}({})", m.name, params.join(", ")),
    }
}
