//! Class-level rules: hierarchy, member declarations, overriding, abstract and
//! interface implementation, and the program's `main`.
//!
//! Every hierarchy walk goes through [`Program`]'s bounded walks, and the
//! override/implementation checks are skipped for a class whose ancestry is
//! broken (unknown base, cycle), so hostile hierarchies give errors, not hangs.

use super::{Cx, VerifyErrorKind as K};
use crate::library::program::{ClassId, MemberId, Program};
use crate::library::{MethodDef, TypeDef, TypeKind, TypeSig, OBJECT, STRING};
use std::collections::HashSet;

/// Is `m` (declared in `def`) abstract: flagged so, or an interface method.
pub(super) fn is_abstract(def: &TypeDef, m: &MethodDef) -> bool {
    m.flags.is_abstract || def.kind == TypeKind::Interface
}

/// Is `m` virtual: `virtual`, `override`, abstract or an interface method.
pub(super) fn is_virtual(def: &TypeDef, m: &MethodDef) -> bool {
    !m.flags.is_static && (m.flags.is_virtual || m.flags.is_override || is_abstract(def, m))
}

/// Same parameter types, return type and staticness.
fn same_signature(a: &MethodDef, b: &MethodDef) -> bool {
    a.flags.is_static == b.flags.is_static
        && a.ret == b.ret
        && a.params.len() == b.params.len()
        && a.params.iter().zip(&b.params).all(|(x, y)| x.ty == y.ty)
}

/// True if `id`'s parent chain is complete (ends at a class without parent) and acyclic.
fn ancestry_ok(p: &Program, id: ClassId) -> bool {
    if p.has_cycle(id) {
        return false;
    }
    p.ancestors(id).into_iter().all(|c| match &p.def(c).parent {
        None => true,
        Some(n) => p.class(n).is_some_and(|x| p.def(x).kind == TypeKind::Class),
    })
}

/// True if the interface graph reachable from `id` (through `interfaces`) leads back to `id`.
fn interface_cycle(p: &Program, id: ClassId) -> bool {
    let mut seen = HashSet::new();
    let mut work: Vec<ClassId> = p
        .def(id)
        .interfaces
        .iter()
        .filter_map(|n| p.class(n))
        .collect();
    while let Some(c) = work.pop() {
        if c == id {
            return true;
        }
        if !seen.insert(c) || p.def(c).kind != TypeKind::Interface {
            continue;
        }
        work.extend(p.def(c).interfaces.iter().filter_map(|n| p.class(n)));
    }
    false
}

pub(super) fn check_classes(cx: &mut Cx) {
    let p = cx.p;
    for id in p.all_classes() {
        check_hierarchy(cx, id);
        check_members(cx, id);
        if ancestry_ok(p, id) && !interface_cycle(p, id) {
            check_overrides(cx, id);
            check_implementation(cx, id);
        }
    }
}

fn check_hierarchy(cx: &mut Cx, id: ClassId) {
    let p = cx.p;
    let def = p.def(id);
    let li = id.lib as usize;
    match def.kind {
        TypeKind::Class => match &def.parent {
            None if def.name == OBJECT => {}
            None => cx.err(id, def.line, None, None, K::MissingBase),
            Some(b) => match cx.check_class_name(li, b) {
                Err(K::UnknownType(_)) => {
                    cx.err(id, def.line, None, None, K::UnknownBase(b.clone()))
                }
                Err(e) => cx.err(id, def.line, None, None, e),
                Ok(bid) => {
                    let bdef = p.def(bid);
                    if bdef.kind != TypeKind::Class {
                        cx.err(id, def.line, None, None, K::BaseNotClass(b.clone()));
                    } else if bdef.is_sealed {
                        cx.err(id, def.line, None, None, K::SealedBase(b.clone()));
                    }
                    if p.has_cycle(id) {
                        cx.err(id, def.line, None, None, K::InheritanceCycle);
                    }
                }
            },
        },
        TypeKind::Interface => {
            if let Some(b) = &def.parent {
                cx.err(id, def.line, None, None, K::InterfaceWithBase(b.clone()));
            }
            if def.is_abstract || def.is_sealed {
                cx.err(
                    id,
                    def.line,
                    None,
                    None,
                    K::BadModifiers("an interface cannot be abstract or sealed"),
                );
            }
            if interface_cycle(p, id) {
                cx.err(id, def.line, None, None, K::InterfaceCycle);
            }
        }
    }
    if def.is_abstract && def.is_sealed {
        cx.err(
            id,
            def.line,
            None,
            None,
            K::BadModifiers("a class cannot be both abstract and sealed"),
        );
    }
    let mut seen = HashSet::new();
    for n in &def.interfaces {
        match cx.check_class_name(li, n) {
            Err(e) => cx.err(id, def.line, None, None, e),
            Ok(iid) if p.def(iid).kind != TypeKind::Interface => {
                cx.err(id, def.line, None, None, K::NotAnInterface(n.clone()))
            }
            Ok(_) => {}
        }
        if !seen.insert(n) {
            cx.err(
                id,
                def.line,
                None,
                None,
                K::DuplicateMember {
                    what: "interface",
                    name: n.clone(),
                },
            );
        }
    }
}

fn check_members(cx: &mut Cx, id: ClassId) {
    let p = cx.p;
    let def = p.def(id);
    let li = id.lib as usize;
    let iface = def.kind == TypeKind::Interface;

    let mut names = HashSet::new();
    for f in &def.fields {
        if !names.insert(&f.name) {
            cx.err(
                id,
                f.line,
                None,
                None,
                K::DuplicateMember {
                    what: "field",
                    name: f.name.clone(),
                },
            );
        }
        if iface {
            cx.err(id, f.line, None, None, K::InterfaceField(f.name.clone()));
        }
        if let Err(e) = cx.check_type(li, &f.ty, true) {
            cx.err(id, f.line, None, None, e);
        }
    }

    let mut names = HashSet::new();
    for pr in &def.properties {
        if !names.insert(&pr.name) {
            cx.err(
                id,
                pr.line,
                None,
                None,
                K::DuplicateMember {
                    what: "property",
                    name: pr.name.clone(),
                },
            );
        }
        if let Err(e) = cx.check_type(li, &pr.ty, false) {
            cx.err(id, pr.line, None, None, e);
        }
        check_property_accessors(cx, id, pr);
    }

    let mut names = HashSet::new();
    for m in &def.methods {
        let mname = Some(m.name.as_str());
        if !names.insert(&m.name) {
            cx.err(
                id,
                m.line,
                mname,
                None,
                K::DuplicateMember {
                    what: "method",
                    name: m.name.clone(),
                },
            );
        }
        for v in m.params.iter().chain(&m.locals) {
            if let Err(e) = cx.check_type(li, &v.ty, false) {
                cx.err(id, m.line, mname, None, e);
            }
        }
        if let Some(r) = &m.ret {
            if let Err(e) = cx.check_type(li, r, false) {
                cx.err(id, m.line, mname, None, e);
            }
        }
        let fl = m.flags;
        let mut bad = |why: &'static str| cx.err(id, m.line, mname, None, K::BadModifiers(why));
        if fl.is_static && (fl.is_virtual || fl.is_override || fl.is_abstract) {
            bad("a static method cannot be virtual, override or abstract");
        }
        if fl.is_abstract && fl.is_native {
            bad("a method cannot be both abstract and native");
        }
        if iface && (fl.is_static || fl.is_native || fl.is_override) {
            bad("interface methods are abstract instance methods");
        }
        if m.name == "ctor"
            && (fl.is_static
                || fl.is_virtual
                || fl.is_override
                || fl.is_abstract
                || m.ret.is_some())
        {
            bad("`ctor` is a non-virtual instance method returning void");
        }
        if m.name == "cctor" && (!fl.is_static || !m.params.is_empty() || m.ret.is_some()) {
            bad("`cctor` is a static method without parameters returning void");
        }
        if iface && (m.name == "ctor" || m.name == "cctor") {
            bad("an interface has no constructors");
        }
        if fl.is_abstract && !iface && !def.is_abstract {
            cx.err(id, m.line, mname, None, K::AbstractInConcrete);
        }
        if is_abstract(def, m) {
            if !m.code.is_empty() {
                cx.err(id, m.line, mname, None, K::AbstractWithBody);
            }
        } else if fl.is_native {
            if !m.code.is_empty() {
                cx.err(id, m.line, mname, None, K::NativeWithBody);
            }
        } else if m.code.is_empty() {
            cx.err(id, m.line, mname, None, K::MissingBody);
        }
    }
}

fn check_property_accessors(cx: &mut Cx, id: ClassId, pr: &crate::library::PropertyDef) {
    let p = cx.p;
    let def = p.def(id);
    let find = |n: &str| def.methods.iter().find(|m| m.name == n);
    if let Some(g) = &pr.getter {
        let why = match find(g) {
            None => Some(format!("getter `{g}` is not a method of this class")),
            Some(m) if !m.params.is_empty() || m.ret.as_ref() != Some(&pr.ty) => Some(format!(
                "getter `{g}` must take no arguments and return {}",
                pr.ty
            )),
            Some(_) => None,
        };
        if let Some(why) = why {
            cx.err(
                id,
                pr.line,
                None,
                None,
                K::BadProperty {
                    property: pr.name.clone(),
                    why,
                },
            );
        }
    }
    if let Some(s) = &pr.setter {
        let why = match find(s) {
            None => Some(format!("setter `{s}` is not a method of this class")),
            Some(m) if m.params.len() != 1 || m.params[0].ty != pr.ty || m.ret.is_some() => Some(
                format!("setter `{s}` must take one {} and return void", pr.ty),
            ),
            Some(_) => None,
        };
        if let Some(why) = why {
            cx.err(
                id,
                pr.line,
                None,
                None,
                K::BadProperty {
                    property: pr.name.clone(),
                    why,
                },
            );
        }
    }
}

/// Overriding and name reuse against the base class's methods.
fn check_overrides(cx: &mut Cx, id: ClassId) {
    let p = cx.p;
    let def = p.def(id);
    if def.kind != TypeKind::Class {
        // Interface methods redeclared in a sub-interface must keep their signature.
        for m in &def.methods {
            for iid in p.interfaces_of(id).into_iter().filter(|&i| i != id) {
                let idef = p.def(iid);
                if let Some(im) = idef.methods.iter().find(|x| x.name == m.name) {
                    if !same_signature(m, im) {
                        let base = format!("{}::{}", idef.name, im.name);
                        cx.err(
                            id,
                            m.line,
                            Some(&m.name),
                            None,
                            K::OverrideMismatch { base },
                        );
                    }
                }
            }
        }
        return;
    }
    let parent = p.parent(id);
    for m in &def.methods {
        if m.name == "ctor" || m.name == "cctor" {
            if m.flags.is_override {
                cx.err(id, m.line, Some(&m.name), None, K::NothingToOverride);
            }
            continue;
        }
        let inherited = parent.and_then(|b| p.find_method(b, &m.name));
        match inherited {
            Some(bid) => {
                let bdef = p.def(bid.class);
                let bm = p.method(bid);
                let base = format!("{}::{}", bdef.name, bm.name);
                if is_virtual(bdef, bm) {
                    if !m.flags.is_override {
                        cx.err(id, m.line, Some(&m.name), None, K::MissingOverride { base });
                    } else if !same_signature(m, bm) {
                        cx.err(
                            id,
                            m.line,
                            Some(&m.name),
                            None,
                            K::OverrideMismatch { base },
                        );
                    }
                } else {
                    cx.err(id, m.line, Some(&m.name), None, K::ReusedName { base });
                }
            }
            None if m.flags.is_override => {
                cx.err(id, m.line, Some(&m.name), None, K::NothingToOverride)
            }
            None => {}
        }
    }
}

/// A concrete class implements every inherited abstract method and every
/// interface method; interface implementations are public instance methods with
/// the same signature.
fn check_implementation(cx: &mut Cx, id: ClassId) {
    let p = cx.p;
    let def = p.def(id);
    if def.kind != TypeKind::Class {
        return;
    }
    if !def.is_abstract {
        let mut seen = HashSet::new();
        for a in p.ancestors(id).into_iter().skip(1) {
            let adef = p.def(a);
            for m in adef
                .methods
                .iter()
                .filter(|m| m.flags.is_abstract && !m.flags.is_static)
            {
                if !seen.insert(&m.name) {
                    continue;
                }
                if let Some(found) = p.find_method(id, &m.name) {
                    let fdef = p.def(found.class);
                    if is_abstract(fdef, p.method(found)) && !reported_by_parent(p, id, found) {
                        let method = format!("{}::{}", fdef.name, m.name);
                        cx.err(id, def.line, None, None, K::NotImplemented { method });
                    }
                }
            }
        }
    }
    let parent = p.parent(id);
    let parent_ifaces = parent.map(|b| p.interfaces_of(b)).unwrap_or_default();
    for iid in p.interfaces_of(id) {
        let idef = p.def(iid);
        let inherited_iface = parent_ifaces.contains(&iid);
        for im in &idef.methods {
            let imq = format!("{}::{}", idef.name, im.name);
            match p.find_method(id, &im.name) {
                None => {
                    let parent_reports =
                        inherited_iface && parent.is_some_and(|b| !p.def(b).is_abstract);
                    if !def.is_abstract && !parent_reports {
                        cx.err(id, def.line, None, None, K::NotImplemented { method: imq });
                    }
                }
                Some(found) => {
                    // An implementation inherited from a class that itself has the
                    // interface was checked there.
                    if found.class != id && p.interfaces_of(found.class).contains(&iid) {
                        continue;
                    }
                    let m = p.method(found);
                    let why = if m.flags.is_static {
                        Some("the implementing method is static")
                    } else if m.access != crate::library::Access::Public {
                        Some("the implementing method is not public")
                    } else if !same_signature(m, im) {
                        Some("the signatures differ")
                    } else {
                        None
                    };
                    let line = if found.class == id { m.line } else { def.line };
                    // An own abstract method in a concrete class is reported as
                    // AbstractInConcrete, an inherited one as NotImplemented above.
                    if let Some(why) = why {
                        cx.err(
                            id,
                            line,
                            None,
                            None,
                            K::BadImplementation { method: imq, why },
                        );
                    }
                }
            }
        }
    }
}

/// An unimplemented abstract method found through the parent is reported for
/// the parent already when the parent is itself concrete.
fn reported_by_parent(p: &Program, id: ClassId, found: MemberId) -> bool {
    found.class != id
        && p.parent(id)
            .is_some_and(|b| !p.def(b).is_abstract && p.is_subclass(b, found.class))
}

/// Exactly one class of the last library defines a valid static `main`.
pub(super) fn check_main(cx: &mut Cx) {
    let p = cx.p;
    let Some(li) = p.libs.len().checked_sub(1) else {
        return;
    };
    let mut first: Option<String> = None;
    for (ti, t) in p.libs[li].types.iter().enumerate() {
        let id = ClassId {
            lib: li as u32,
            ty: ti as u32,
        };
        for m in t
            .methods
            .iter()
            .filter(|m| m.name == "main" && m.flags.is_static)
        {
            if let Some(f) = &first {
                cx.err(
                    id,
                    m.line,
                    Some("main"),
                    None,
                    K::DuplicateMain { first: f.clone() },
                );
                continue;
            }
            first = Some(format!("{}::main", t.name));
            let args_ok = match &m.params[..] {
                [] => true,
                [a] => a.ty == TypeSig::Array(Box::new(TypeSig::class(STRING))),
                _ => false,
            };
            let ret_ok = matches!(m.ret, None | Some(TypeSig::Prim(crate::library::Prim::I32)));
            if !args_ok || !ret_ok {
                cx.err(id, m.line, Some("main"), None, K::BadMainSignature);
            }
        }
    }
    if first.is_none() {
        let line = p.libs[li].types.first().map_or(1, |t| t.line);
        cx.errors.push(super::VerifyError {
            file: cx.file(li),
            line,
            class: String::new(),
            method: None,
            offset: None,
            kind: K::NoMain,
        });
    }
}
