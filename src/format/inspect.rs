//! A readable dump of a library's metadata tables (`kiln inspect`).
//!
//! Invariant: never panics, whatever the library holds: every index (catch
//! clause type, ...) is looked up with `get` and printed as dangling if it is
//! out of range. Strings are printed with Rust's `{:?}` escaping so control
//! characters cannot garble the terminal.

use crate::library::{
    field_flags, AttrValue, Attribute, HandlerKind, Library, MemberKind, MethodDef, Mutability,
    TypeKind, TypeSig, Var,
};
use std::fmt::Write;

fn attr_value(v: &AttrValue) -> String {
    match v {
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Float(f) => format!("{f:?}"),
        AttrValue::Str(s) => format!("{s:?}"),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Char(c) => match char::from_u32(*c) {
            Some(ch) => format!("{ch:?} (U+{c:04X})"),
            None => format!("U+{c:04X} (not a scalar value)"),
        },
    }
}

fn attr(a: &Attribute) -> String {
    let args: Vec<String> = a
        .args
        .iter()
        .map(|arg| match &arg.name {
            Some(n) => format!("{n} = {}", attr_value(&arg.value)),
            None => attr_value(&arg.value),
        })
        .collect();
    format!("{}({})", a.name, args.join(", "))
}

fn attrs(out: &mut String, indent: &str, list: &[Attribute]) {
    for a in list {
        let _ = writeln!(out, "{indent}attr {}", attr(a));
    }
}

fn vars(list: &[Var]) -> String {
    let v: Vec<String> = list
        .iter()
        .map(|v| format!("{}: {}", v.name, v.ty))
        .collect();
    v.join(", ")
}

fn mutability_name(m: Mutability) -> &'static str {
    match m {
        Mutability::Immutable => "immutable",
        Mutability::Mutable => "mutable",
        Mutability::MutableSelf => "mutable(self)",
    }
}

fn type_ref(lib: &Library, i: u32) -> String {
    match lib.type_refs.get(i as usize) {
        Some(t) => format!("{t} (type ref {i})"),
        None => format!("<dangling type ref {i}>"),
    }
}

fn method(out: &mut String, lib: &Library, i: usize, m: &MethodDef) {
    let f = m.flags;
    let mut mods = vec![m.access.name()];
    for (on, name) in [
        (f.is_static, "static"),
        (f.is_virtual, "virtual"),
        (f.is_override, "override"),
        (f.is_abstract, "abstract"),
        (f.is_native, "native"),
    ] {
        if on {
            mods.push(name);
        }
    }
    let ret = match &m.ret {
        Some(t) => format!(" -> {t}"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "        [{i}] {} {}({}){ret}  (line {})",
        mods.join(" "),
        m.name,
        vars(&m.params),
        m.line
    );
    attrs(out, "            ", &m.attrs);
    if !m.locals.is_empty() {
        let _ = writeln!(out, "            locals ({})", vars(&m.locals));
    }
    if m.code.is_empty() {
        let body = if f.is_abstract {
            "abstract"
        } else if f.is_native {
            "native"
        } else {
            "empty"
        };
        let _ = writeln!(out, "            code: none ({body})");
    } else {
        let _ = writeln!(
            out,
            "            code: {} byte{}",
            m.code.len(),
            if m.code.len() == 1 { "" } else { "s" }
        );
    }
    if !m.handlers.is_empty() {
        let _ = writeln!(out, "            handlers ({}):", m.handlers.len());
        for (hi, h) in m.handlers.iter().enumerate() {
            let kind = match h.kind {
                HandlerKind::Catch(t) => format!("catch {}", type_ref(lib, t)),
                HandlerKind::Finally => "finally".to_string(),
            };
            let _ = writeln!(
                out,
                "              [{hi}] try {}..{} {kind} handler {}..{}",
                h.try_start, h.try_end, h.handler_start, h.handler_end
            );
        }
    }
    if !m.lines.is_empty() {
        let entries: Vec<String> = m
            .lines
            .iter()
            .map(|l| format!("@{}:{}", l.offset, l.line))
            .collect();
        let _ = writeln!(
            out,
            "            lines ({}): {}",
            m.lines.len(),
            entries.join(" ")
        );
    }
}

fn sig_kind(t: &TypeSig) -> &'static str {
    if t.is_ref() {
        "ref"
    } else {
        "value"
    }
}

pub(super) fn inspect(lib: &Library) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "library {}", lib.name);
    let _ = writeln!(out, "imports ({}):", lib.imports.len());
    for (i, imp) in lib.imports.iter().enumerate() {
        let _ = writeln!(out, "  [{i}] {} (line {})", imp.name, imp.line);
    }
    let _ = writeln!(out, "string literals ({}):", lib.strings.len());
    for (i, s) in lib.strings.iter().enumerate() {
        let _ = writeln!(out, "  [{i}] {s:?}");
    }
    let _ = writeln!(out, "type refs ({}):", lib.type_refs.len());
    for (i, t) in lib.type_refs.iter().enumerate() {
        let _ = writeln!(out, "  [{i}] {t} ({})", sig_kind(t));
    }
    let _ = writeln!(out, "member refs ({}):", lib.member_refs.len());
    for (i, m) in lib.member_refs.iter().enumerate() {
        let kind = match m.kind {
            MemberKind::Field => "field",
            MemberKind::Method => "method",
        };
        let _ = writeln!(out, "  [{i}] {kind} {}::{}", m.class, m.name);
    }
    let _ = writeln!(out, "types ({}):", lib.types.len());
    for (ti, t) in lib.types.iter().enumerate() {
        let kind = match t.kind {
            TypeKind::Class => "class",
            TypeKind::Interface => "interface",
        };
        let mut mods = vec![t.access.name()];
        if t.is_abstract {
            mods.push("abstract");
        }
        if t.is_sealed {
            mods.push("sealed");
        }
        let _ = writeln!(
            out,
            "  [{ti}] {kind} {} {}  (line {})",
            mods.join(" "),
            t.name,
            t.line
        );
        match &t.parent {
            Some(p) => {
                let _ = writeln!(out, "      parent: {p}");
            }
            None => {
                let _ = writeln!(out, "      parent: none");
            }
        }
        if !t.interfaces.is_empty() {
            let label = if t.kind == TypeKind::Interface {
                "extends"
            } else {
                "implements"
            };
            let _ = writeln!(out, "      {label}: {}", t.interfaces.join(", "));
        }
        attrs(&mut out, "      ", &t.attrs);
        let _ = writeln!(out, "      fields ({}):", t.fields.len());
        for (fi, f) in t.fields.iter().enumerate() {
            let bits = field_flags(f.access, f.mutability);
            let _ = writeln!(
                out,
                "        [{fi}] {}: {}  flags {bits} ({} {}){}  (line {})",
                f.name,
                f.ty,
                f.access.name(),
                mutability_name(f.mutability),
                if f.is_static { " static" } else { " instance" },
                f.line
            );
            attrs(&mut out, "            ", &f.attrs);
        }
        let _ = writeln!(out, "      properties ({}):", t.properties.len());
        for (pi, p) in t.properties.iter().enumerate() {
            let _ = writeln!(
                out,
                "        [{pi}] {} {}: {} get {} set {}  (line {})",
                p.access.name(),
                p.name,
                p.ty,
                p.getter.as_deref().unwrap_or("-"),
                p.setter.as_deref().unwrap_or("-"),
                p.line
            );
            attrs(&mut out, "            ", &p.attrs);
        }
        let _ = writeln!(out, "      methods ({}):", t.methods.len());
        for (mi, m) in t.methods.iter().enumerate() {
            method(&mut out, lib, mi, m);
        }
    }
    out
}
