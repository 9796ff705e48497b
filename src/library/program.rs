//! A set of libraries seen as one program: class lookup by name across
//! libraries, the inheritance chain, interface closure, member lookup that
//! follows inheritance, and assignability of types.
//!
//! Invariants: class names are unique across the program (checked by
//! [`Program::new`]); every walk up a parent chain is bounded by the number of
//! classes, so a cyclic hierarchy in a hostile library cannot hang (the
//! verifier reports the cycle).

use super::{Library, MemberKind, TypeDef, TypeKind, TypeSig};
use std::collections::HashMap;

/// Identifies a type definition: (library index, type index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId {
    /// Index of the library in [`Program::libs`].
    pub lib: u32,
    /// Index of the type in that library's `types`.
    pub ty: u32,
}

/// Identifies a field or method: its declaring class and index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    /// Declaring class.
    pub class: ClassId,
    /// Index in the class's `fields` or `methods`.
    pub index: u32,
}

/// Two libraries define the same class name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateClass {
    /// The class name.
    pub name: String,
    /// Library that defined it first.
    pub first: String,
    /// Library that defines it again.
    pub second: String,
    /// Line of the second definition.
    pub line: u32,
}

/// Libraries in load order (`std` first, imports before importers) with a class index.
#[derive(Debug, Default)]
pub struct Program {
    /// The libraries.
    pub libs: Vec<Library>,
    by_name: HashMap<String, ClassId>,
}

impl Program {
    /// Index `libs`. Fails with every duplicate class name.
    pub fn new(libs: Vec<Library>) -> Result<Program, Vec<DuplicateClass>> {
        let mut by_name: HashMap<String, ClassId> = HashMap::new();
        let mut dups = Vec::new();
        for (li, lib) in libs.iter().enumerate() {
            for (ti, t) in lib.types.iter().enumerate() {
                let id = ClassId {
                    lib: li as u32,
                    ty: ti as u32,
                };
                if let Some(prev) = by_name.get(&t.name) {
                    dups.push(DuplicateClass {
                        name: t.name.clone(),
                        first: libs[prev.lib as usize].name.clone(),
                        second: lib.name.clone(),
                        line: t.line,
                    });
                } else {
                    by_name.insert(t.name.clone(), id);
                }
            }
        }
        if dups.is_empty() {
            Ok(Program { libs, by_name })
        } else {
            Err(dups)
        }
    }

    /// Look up a class or interface by name.
    pub fn class(&self, name: &str) -> Option<ClassId> {
        self.by_name.get(name).copied()
    }

    /// Number of types in the program.
    pub fn class_count(&self) -> usize {
        self.by_name.len()
    }

    /// All type ids in load order.
    pub fn all_classes(&self) -> impl Iterator<Item = ClassId> + '_ {
        self.libs.iter().enumerate().flat_map(|(li, l)| {
            (0..l.types.len()).map(move |ti| ClassId {
                lib: li as u32,
                ty: ti as u32,
            })
        })
    }

    /// The definition of a type.
    pub fn def(&self, id: ClassId) -> &TypeDef {
        &self.libs[id.lib as usize].types[id.ty as usize]
    }

    /// The library defining a type.
    pub fn lib_of(&self, id: ClassId) -> &Library {
        &self.libs[id.lib as usize]
    }

    /// The base class, if it exists.
    pub fn parent(&self, id: ClassId) -> Option<ClassId> {
        self.def(id).parent.as_deref().and_then(|p| self.class(p))
    }

    /// `id` and its ancestors, nearest first. Stops (without error) at a cycle or
    /// an unknown parent.
    pub fn ancestors(&self, id: ClassId) -> Vec<ClassId> {
        let mut out = vec![id];
        let mut cur = id;
        while let Some(p) = self.parent(cur) {
            if out.contains(&p) || out.len() > self.class_count() {
                break;
            }
            out.push(p);
            cur = p;
        }
        out
    }

    /// True if the parent chain of `id` loops back on itself.
    pub fn has_cycle(&self, id: ClassId) -> bool {
        let mut seen = vec![id];
        let mut cur = id;
        while let Some(p) = self.parent(cur) {
            if seen.contains(&p) {
                return true;
            }
            seen.push(p);
            cur = p;
        }
        false
    }

    /// Is `a` the class `b` or a subclass of it?
    pub fn is_subclass(&self, a: ClassId, b: ClassId) -> bool {
        self.ancestors(a).contains(&b)
    }

    /// Every interface `id` implements (for an interface: itself and those it
    /// extends), transitively, including through base classes. Deduplicated,
    /// in discovery order.
    pub fn interfaces_of(&self, id: ClassId) -> Vec<ClassId> {
        let mut out: Vec<ClassId> = Vec::new();
        let mut work: Vec<ClassId> = Vec::new();
        if self.def(id).kind == TypeKind::Interface {
            work.push(id);
        }
        for c in self.ancestors(id) {
            for name in &self.def(c).interfaces {
                if let Some(i) = self.class(name) {
                    work.push(i);
                }
            }
        }
        work.reverse();
        while let Some(i) = work.pop() {
            if out.contains(&i) || self.def(i).kind != TypeKind::Interface {
                continue;
            }
            out.push(i);
            for name in self.def(i).interfaces.iter().rev() {
                if let Some(j) = self.class(name) {
                    work.push(j);
                }
            }
        }
        out
    }

    /// Can a reference to class/interface `from` be used where `to` is expected?
    pub fn class_assignable(&self, from: ClassId, to: ClassId) -> bool {
        if from == to {
            return true;
        }
        match self.def(to).kind {
            TypeKind::Interface => self.interfaces_of(from).contains(&to),
            TypeKind::Class => {
                if self.def(to).name == super::OBJECT {
                    return true;
                }
                self.def(from).kind == TypeKind::Class && self.is_subclass(from, to)
            }
        }
    }

    /// Is a value of declared type `from` assignable to `to`? Primitives must
    /// match exactly; every reference is assignable to `object`; arrays are
    /// invariant.
    pub fn assignable(&self, from: &TypeSig, to: &TypeSig) -> bool {
        match (from, to) {
            (_, TypeSig::Class(o)) if o == super::OBJECT && from.is_ref() => true,
            (TypeSig::Class(a), TypeSig::Class(b)) => match (self.class(a), self.class(b)) {
                (Some(a), Some(b)) => self.class_assignable(a, b),
                _ => a == b,
            },
            _ => from == to,
        }
    }

    /// Find a field named `name` in `class` or its ancestors.
    pub fn find_field(&self, class: ClassId, name: &str) -> Option<MemberId> {
        self.ancestors(class).into_iter().find_map(|c| {
            self.def(c)
                .fields
                .iter()
                .position(|f| f.name == name)
                .map(|i| MemberId {
                    class: c,
                    index: i as u32,
                })
        })
    }

    /// Find a method named `name` in `class` or its ancestors (for an
    /// interface: in it or the interfaces it extends). `ctor` and `cctor` are
    /// only found in `class` itself.
    pub fn find_method(&self, class: ClassId, name: &str) -> Option<MemberId> {
        let own = |c: ClassId| {
            self.def(c)
                .methods
                .iter()
                .position(|m| m.name == name)
                .map(|i| MemberId {
                    class: c,
                    index: i as u32,
                })
        };
        if name == "ctor" || name == "cctor" {
            return own(class);
        }
        if self.def(class).kind == TypeKind::Interface {
            return self.interfaces_of(class).into_iter().find_map(own);
        }
        self.ancestors(class).into_iter().find_map(own)
    }

    /// Resolve a member reference of library `lib` to its definition.
    pub fn resolve_member(&self, lib: usize, index: u32) -> Option<(MemberKind, MemberId)> {
        let r = self.libs.get(lib)?.member_refs.get(index as usize)?;
        let class = self.class(&r.class)?;
        let m = match r.kind {
            MemberKind::Field => self.find_field(class, &r.name)?,
            MemberKind::Method => self.find_method(class, &r.name)?,
        };
        Some((r.kind, m))
    }

    /// The field definition behind a member id.
    pub fn field(&self, m: MemberId) -> &super::FieldDef {
        &self.def(m.class).fields[m.index as usize]
    }

    /// The method definition behind a member id.
    pub fn method(&self, m: MemberId) -> &super::MethodDef {
        &self.def(m.class).methods[m.index as usize]
    }
}
