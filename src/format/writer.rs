//! Serialisation of a [`Library`] into `.klib` bytes.
//!
//! Invariant: the output is a pure function of the library. Strings enter the
//! heap in the order the metadata section first references them (a `Vec` plus
//! a lookup map that is never iterated), which is exactly the order the reader
//! checks, so the heap is canonical.

use super::codes::*;
use super::{header, HEADER_SIZE, MAGIC, NONE, VERSION_MAJOR, VERSION_MINOR};
use crate::library::{
    field_flags, AttrValue, Attribute, FieldDef, HandlerKind, Library, MemberKind, MethodDef,
    PropertyDef, TypeDef, TypeKind, TypeSig, Var,
};
use std::collections::HashMap;

/// Converts a length or count to the format's `u32`.
fn len32(n: usize, what: &str) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("{what} ({n}) exceeds the .klib limit of u32::MAX"))
}

struct Writer<'a> {
    heap: Vec<&'a str>,
    heap_index: HashMap<&'a str, u32>,
    meta: Vec<u8>,
    code: Vec<u8>,
}

impl<'a> Writer<'a> {
    fn u8(&mut self, v: u8) {
        self.meta.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.meta.extend_from_slice(&v.to_le_bytes());
    }

    fn count(&mut self, n: usize, what: &str) {
        self.u32(len32(n, what));
    }

    fn str(&mut self, s: &'a str) {
        let idx = match self.heap_index.get(s) {
            Some(&i) => i,
            None => {
                let i = len32(self.heap.len(), "string heap");
                self.heap.push(s);
                self.heap_index.insert(s, i);
                i
            }
        };
        self.u32(idx);
    }

    fn opt_str(&mut self, s: &'a Option<String>) {
        match s {
            Some(s) => self.str(s),
            None => self.u32(NONE),
        }
    }

    /// Arrays are written iteratively (one tag per level) so a deeply nested
    /// signature cannot exhaust the stack.
    fn sig(&mut self, sig: &'a TypeSig) {
        let mut s = sig;
        while let TypeSig::Array(elem) = s {
            self.u8(SIG_ARRAY);
            s = elem;
        }
        match s {
            TypeSig::Prim(p) => self.u8(prim_code(*p)),
            TypeSig::Atomic(p) => {
                self.u8(SIG_ATOMIC);
                self.u8(prim_code(*p));
            }
            TypeSig::Class(name) => {
                self.u8(SIG_CLASS);
                self.str(name);
            }
            TypeSig::Array(_) => unreachable!("arrays unwrapped above"),
        }
    }

    fn attrs(&mut self, attrs: &'a [Attribute]) {
        self.count(attrs.len(), "attribute count");
        for a in attrs {
            self.str(&a.name);
            self.count(a.args.len(), "attribute argument count");
            for arg in &a.args {
                self.opt_str(&arg.name);
                match &arg.value {
                    AttrValue::Int(v) => {
                        self.u8(ATTR_INT);
                        self.meta.extend_from_slice(&v.to_le_bytes());
                    }
                    AttrValue::Float(v) => {
                        self.u8(ATTR_FLOAT);
                        self.meta.extend_from_slice(&v.to_bits().to_le_bytes());
                    }
                    AttrValue::Str(s) => {
                        self.u8(ATTR_STR);
                        self.str(s);
                    }
                    AttrValue::Bool(b) => {
                        self.u8(ATTR_BOOL);
                        self.u8(*b as u8);
                    }
                    AttrValue::Char(c) => {
                        self.u8(ATTR_CHAR);
                        self.u32(*c);
                    }
                }
            }
        }
    }

    fn vars(&mut self, vars: &'a [Var], what: &str) {
        self.count(vars.len(), what);
        for v in vars {
            self.str(&v.name);
            self.sig(&v.ty);
        }
    }

    fn field(&mut self, f: &'a FieldDef) {
        self.str(&f.name);
        let mut flags = field_flags(f.access, f.mutability);
        if f.is_static {
            flags |= FIELD_STATIC;
        }
        self.u8(flags);
        self.sig(&f.ty);
        self.u32(f.line);
        self.attrs(&f.attrs);
    }

    fn property(&mut self, p: &'a PropertyDef) {
        self.str(&p.name);
        self.sig(&p.ty);
        self.u8(access_code(p.access));
        self.opt_str(&p.getter);
        self.opt_str(&p.setter);
        self.u32(p.line);
        self.attrs(&p.attrs);
    }

    fn method(&mut self, m: &'a MethodDef) {
        self.str(&m.name);
        self.u8(access_code(m.access));
        let f = m.flags;
        let flags = (f.is_static as u8 * METHOD_STATIC)
            | (f.is_virtual as u8 * METHOD_VIRTUAL)
            | (f.is_override as u8 * METHOD_OVERRIDE)
            | (f.is_abstract as u8 * METHOD_ABSTRACT)
            | (f.is_native as u8 * METHOD_NATIVE);
        self.u8(flags);
        self.u32(m.line);
        match &m.ret {
            None => self.u8(SIG_VOID),
            Some(t) => self.sig(t),
        }
        self.vars(&m.params, "parameter count");
        self.vars(&m.locals, "local count");
        self.attrs(&m.attrs);
        if m.code.is_empty() && m.handlers.is_empty() && m.lines.is_empty() {
            self.u32(NONE);
        } else {
            let off = len32(self.code.len(), "code section");
            self.u32(off);
            self.body(m);
        }
    }

    fn body(&mut self, m: &MethodDef) {
        let c = &mut self.code;
        c.extend_from_slice(&len32(m.code.len(), "method code").to_le_bytes());
        c.extend_from_slice(&m.code);
        c.extend_from_slice(&len32(m.handlers.len(), "handler count").to_le_bytes());
        for h in &m.handlers {
            for v in [h.try_start, h.try_end, h.handler_start, h.handler_end] {
                c.extend_from_slice(&v.to_le_bytes());
            }
            let (kind, ty) = match h.kind {
                HandlerKind::Catch(t) => (HANDLER_CATCH, t),
                HandlerKind::Finally => (HANDLER_FINALLY, 0),
            };
            c.push(kind);
            c.extend_from_slice(&ty.to_le_bytes());
        }
        c.extend_from_slice(&len32(m.lines.len(), "line count").to_le_bytes());
        for l in &m.lines {
            c.extend_from_slice(&l.offset.to_le_bytes());
            c.extend_from_slice(&l.line.to_le_bytes());
        }
    }

    fn typedef(&mut self, t: &'a TypeDef) {
        self.str(&t.name);
        let mut flags = 0;
        if t.kind == TypeKind::Interface {
            flags |= TYPE_INTERFACE;
        }
        if t.is_abstract {
            flags |= TYPE_ABSTRACT;
        }
        if t.is_sealed {
            flags |= TYPE_SEALED;
        }
        self.u8(flags);
        self.u8(access_code(t.access));
        self.opt_str(&t.parent);
        self.u32(t.line);
        self.count(t.interfaces.len(), "interface count");
        for i in &t.interfaces {
            self.str(i);
        }
        self.attrs(&t.attrs);
        self.count(t.fields.len(), "field count");
        for f in &t.fields {
            self.field(f);
        }
        self.count(t.properties.len(), "property count");
        for p in &t.properties {
            self.property(p);
        }
        self.count(t.methods.len(), "method count");
        for m in &t.methods {
            self.method(m);
        }
    }

    fn library(&mut self, lib: &'a Library) {
        self.str(&lib.name);
        self.count(lib.imports.len(), "import count");
        for i in &lib.imports {
            self.str(&i.name);
            self.u32(i.line);
        }
        self.count(lib.strings.len(), "string literal count");
        for s in &lib.strings {
            self.str(s);
        }
        self.count(lib.type_refs.len(), "type reference count");
        for t in &lib.type_refs {
            self.sig(t);
        }
        self.count(lib.member_refs.len(), "member reference count");
        for m in &lib.member_refs {
            self.u8(match m.kind {
                MemberKind::Field => MEMBER_FIELD,
                MemberKind::Method => MEMBER_METHOD,
            });
            self.str(&m.class);
            self.str(&m.name);
        }
        self.count(lib.types.len(), "type count");
        for t in &lib.types {
            self.typedef(t);
        }
    }
}

pub(super) fn write(lib: &Library) -> Vec<u8> {
    let mut w = Writer {
        heap: Vec::new(),
        heap_index: HashMap::new(),
        meta: Vec::new(),
        code: Vec::new(),
    };
    w.library(lib);

    let mut heap = Vec::new();
    heap.extend_from_slice(&len32(w.heap.len(), "string heap").to_le_bytes());
    for s in &w.heap {
        heap.extend_from_slice(&len32(s.len(), "string").to_le_bytes());
        heap.extend_from_slice(s.as_bytes());
    }

    let heap_off = HEADER_SIZE;
    let meta_off = heap_off + heap.len();
    let code_off = meta_off + w.meta.len();
    let total = code_off + w.code.len();
    len32(total, "file size");

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION_MAJOR.to_le_bytes());
    out.extend_from_slice(&VERSION_MINOR.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (off, len) in [
        (heap_off, heap.len()),
        (meta_off, w.meta.len()),
        (code_off, w.code.len()),
    ] {
        out.extend_from_slice(&(off as u32).to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    debug_assert_eq!(out.len(), HEADER_SIZE);
    debug_assert_eq!(header::CODE_LEN + 4, HEADER_SIZE);
    out.extend_from_slice(&heap);
    out.extend_from_slice(&w.meta);
    out.extend_from_slice(&w.code);
    out
}
