//! The disassembler: a [`Library`] back to kasm text.
//!
//! Every library the assembler produces prints to text that assembles back to
//! an equal library: definitions and instructions go on lines whose numbers
//! match the recorded ones (a `.line N` directive is emitted whenever the next
//! output line would otherwise get a different number; an instruction without
//! a line entry is put on its predecessor's line the same way), branch targets
//! become `L_<offset>` labels, arguments and locals are named, and floats are
//! printed so that they re-parse to the same bits.
//!
//! Protected regions are rebuilt into nested `.try` constructs from the
//! handler list, which the assembler writes innermost first with the clauses
//! of one construct together: consecutive catches sharing a try range, plus a
//! `finally` covering the try and catch blocks, form one construct, and a
//! construct adopts the earlier unadopted constructs that lie inside one of
//! its blocks. Any input terminates: every step of the emission loop either
//! advances the code position, enters a construct once, or leaves a block.

use crate::bytecode::{decode, Insn, Op, Operand};
use crate::library::{
    AttrValue, Attribute, FieldDef, Handler, HandlerKind, Library, MethodDef, Mutability,
    PropertyDef, TypeDef, TypeKind, OBJECT,
};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

/// Print `lib` as kasm text that assembles back to the same library.
pub fn disassemble(lib: &Library) -> String {
    let mut out = Out {
        s: String::new(),
        next_line: 1,
    };
    out.free(0, &format!(".library {}", lib.name));
    for i in &lib.imports {
        out.at(0, i.line, &format!(".import {}", i.name));
    }
    for t in &lib.types {
        out.type_def(lib, t);
    }
    out.s
}

/// Output text plus the line number the next output line will have.
struct Out {
    s: String,
    next_line: u64,
}

fn indent(s: &mut String, n: usize) {
    for _ in 0..n {
        s.push_str("  ");
    }
}

impl Out {
    /// Emit `text` so that it lands on logical line `line`.
    fn at(&mut self, ind: usize, line: u32, text: &str) {
        if line as u64 != self.next_line {
            indent(&mut self.s, ind);
            let _ = writeln!(self.s, ".line {line}");
            self.next_line = line as u64;
        }
        self.free(ind, text);
    }

    /// Emit `text` on the next line, whatever its number.
    fn free(&mut self, ind: usize, text: &str) {
        indent(&mut self.s, ind);
        self.s.push_str(text);
        self.s.push('\n');
        self.next_line += 1;
    }

    fn attrs(&mut self, ind: usize, attrs: &[Attribute]) {
        for a in attrs {
            let args: Vec<String> = a
                .args
                .iter()
                .map(|arg| match &arg.name {
                    Some(n) => format!("{n} = {}", attr_value(&arg.value)),
                    None => attr_value(&arg.value),
                })
                .collect();
            self.free(ind, &format!(".attr {}({})", a.name, args.join(", ")));
        }
    }

    fn type_def(&mut self, lib: &Library, t: &TypeDef) {
        self.attrs(0, &t.attrs);
        let mut h = String::new();
        h.push_str(if t.kind == TypeKind::Interface {
            ".interface "
        } else {
            ".class "
        });
        h.push_str(t.access.name());
        if t.is_abstract {
            h.push_str(" abstract");
        }
        if t.is_sealed {
            h.push_str(" sealed");
        }
        h.push(' ');
        h.push_str(&t.name);
        match t.kind {
            TypeKind::Class => {
                match &t.parent {
                    Some(p) => {
                        let _ = write!(h, " : {p}");
                    }
                    None if t.name != OBJECT => {
                        self.free(
                            0,
                            &format!(
                                "; error: class {} has no base class, which kasm cannot express",
                                t.name
                            ),
                        );
                    }
                    None => {}
                }
                if !t.interfaces.is_empty() {
                    let _ = write!(h, " implements {}", t.interfaces.join(", "));
                }
            }
            TypeKind::Interface => {
                if !t.interfaces.is_empty() {
                    let _ = write!(h, " : {}", t.interfaces.join(", "));
                }
            }
        }
        h.push_str(" {");
        self.at(0, t.line, &h);
        // Interleave the three member lists by line, keeping each list's order.
        let (mut fi, mut pi, mut mi) = (0, 0, 0);
        loop {
            let fl = t.fields.get(fi).map(|f| f.line);
            let pl = t.properties.get(pi).map(|p| p.line);
            let ml = t.methods.get(mi).map(|m| m.line);
            let min = [fl, pl, ml].into_iter().flatten().min();
            let Some(min) = min else { break };
            if fl == Some(min) {
                self.field(&t.fields[fi]);
                fi += 1;
            } else if pl == Some(min) {
                self.property(&t.properties[pi]);
                pi += 1;
            } else {
                self.method(lib, t, &t.methods[mi]);
                mi += 1;
            }
        }
        self.free(0, "}");
    }

    fn field(&mut self, f: &FieldDef) {
        self.attrs(1, &f.attrs);
        let mut s = format!(".field {}", f.access.name());
        if f.is_static {
            s.push_str(" static");
        }
        match f.mutability {
            Mutability::Immutable => {}
            Mutability::Mutable => s.push_str(" mutable"),
            Mutability::MutableSelf => s.push_str(" mutable(self)"),
        }
        let _ = write!(s, " {}: {}", f.name, f.ty);
        self.at(1, f.line, &s);
    }

    fn property(&mut self, p: &PropertyDef) {
        self.attrs(1, &p.attrs);
        let mut s = format!(".property {} {}: {}", p.access.name(), p.name, p.ty);
        if let Some(g) = &p.getter {
            let _ = write!(s, " get {g}");
        }
        if let Some(g) = &p.setter {
            let _ = write!(s, " set {g}");
        }
        self.at(1, p.line, &s);
    }

    fn method(&mut self, lib: &Library, t: &TypeDef, m: &MethodDef) {
        self.attrs(1, &m.attrs);
        let mut s = format!(".method {}", m.access.name());
        let f = m.flags;
        for (on, word) in [
            (f.is_static, "static"),
            (f.is_virtual, "virtual"),
            (f.is_override, "override"),
            (f.is_abstract && t.kind != TypeKind::Interface, "abstract"),
            (f.is_native, "native"),
        ] {
            if on {
                s.push(' ');
                s.push_str(word);
            }
        }
        let params: Vec<String> = m
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.ty))
            .collect();
        let _ = write!(s, " {}({})", m.name, params.join(", "));
        if let Some(r) = &m.ret {
            let _ = write!(s, " -> {r}");
        }
        if !m.has_body() {
            self.at(1, m.line, &s);
            return;
        }
        s.push_str(" {");
        self.at(1, m.line, &s);
        if !m.locals.is_empty() {
            let ls: Vec<String> = m
                .locals
                .iter()
                .map(|l| format!("{}: {}", l.name, l.ty))
                .collect();
            self.free(2, &format!(".locals ({})", ls.join(", ")));
        }
        self.body(lib, m);
        self.free(1, "}");
    }

    fn body(&mut self, lib: &Library, m: &MethodDef) {
        // Decode as far as possible.
        let mut insns: Vec<(u32, Insn)> = Vec::new();
        let mut decode_error = None;
        let mut pos = 0usize;
        while pos < m.code.len() {
            match decode(&m.code, pos) {
                Ok((insn, next)) => {
                    insns.push((pos as u32, insn));
                    pos = next;
                }
                Err(e) => {
                    decode_error = Some(e);
                    break;
                }
            }
        }
        let code_end = u32::try_from(pos).unwrap_or(u32::MAX);
        let names = VarNames::new(m);
        let mut labels: BTreeSet<u32> = BTreeSet::new();
        for (_, i) in &insns {
            match &i.operand {
                Operand::Target(t) => {
                    labels.insert(*t);
                }
                Operand::Switch(ts) => labels.extend(ts.iter().copied()),
                _ => {}
            }
        }
        let mut line_of: HashMap<u32, u32> = HashMap::new();
        for e in &m.lines {
            line_of.entry(e.offset).or_insert(e.line);
        }
        let tree = Tree::build(&m.handlers);
        let mut emitted_labels: BTreeSet<u32> = BTreeSet::new();

        struct Frame {
            group: Option<usize>,
            block: usize,
            end: u32,
            ci: usize,
        }
        let mut stack = vec![Frame {
            group: None,
            block: 0,
            end: code_end,
            ci: 0,
        }];
        let mut pos: u32 = 0;
        let mut ii = 0usize;
        let mut prev_line: Option<u32> = None;
        loop {
            let depth = stack.len();
            let Some(f) = stack.last_mut() else { break };
            let kids: &[usize] = match f.group {
                None => &tree.roots,
                Some(g) => &tree.groups[g].children[f.block],
            };
            while f.ci < kids.len() && tree.groups[kids[f.ci]].start < pos {
                f.ci += 1;
            }
            if f.ci < kids.len() && tree.groups[kids[f.ci]].start == pos {
                let c = kids[f.ci];
                f.ci += 1;
                self.free(depth + 1, ".try {");
                let end = tree.groups[c].blocks[0].2;
                stack.push(Frame {
                    group: Some(c),
                    block: 0,
                    end,
                    ci: 0,
                });
                continue;
            }
            if let Some((off, insn)) = insns.get(ii) {
                if *off < f.end {
                    if *off > pos {
                        pos = *off;
                        continue;
                    }
                    if labels.contains(off) {
                        self.free(depth + 1, &format!("L_{off}:"));
                        emitted_labels.insert(*off);
                    }
                    let text = insn_text(lib, &names, insn);
                    let line = match line_of.get(off) {
                        Some(&l) => l,
                        None => prev_line.unwrap_or(m.line),
                    };
                    self.at(depth + 1, line, &text);
                    prev_line = Some(line);
                    ii += 1;
                    pos = insns.get(ii).map_or(code_end, |(o, _)| *o);
                    continue;
                }
            }
            // The block is done.
            let (group, block) = (f.group, f.block);
            stack.pop();
            if let Some(g) = group {
                let blocks = &tree.groups[g].blocks;
                if let Some(&(kind, start, end)) = blocks.get(block + 1) {
                    let _ = start;
                    let head = match kind {
                        Some(HandlerKind::Catch(t)) => format!("}} catch {} {{", type_ref(lib, *t)),
                        Some(HandlerKind::Finally) | None => "} finally {".to_string(),
                    };
                    self.free(depth, &head);
                    stack.push(Frame {
                        group: Some(g),
                        block: block + 1,
                        end,
                        ci: 0,
                    });
                } else {
                    self.free(depth, "}");
                }
            }
        }
        if labels.contains(&code_end) {
            self.free(2, &format!("L_{code_end}:"));
            emitted_labels.insert(code_end);
        }
        for l in labels.difference(&emitted_labels) {
            self.free(
                2,
                &format!("; error: branch target {l} is not the start of an instruction"),
            );
        }
        if let Some(e) = decode_error {
            self.free(2, &format!("; error: {e}"));
        }
    }
}

/// One `.try` construct: its try block and clauses, as (clause kind or
/// `None` for the try block, start, end), and the constructs nested in each block.
struct Group<'a> {
    start: u32,
    end: u32,
    blocks: Vec<(Option<&'a HandlerKind>, u32, u32)>,
    children: Vec<Vec<usize>>,
}

struct Tree<'a> {
    groups: Vec<Group<'a>>,
    roots: Vec<usize>,
}

impl<'a> Tree<'a> {
    fn build(hs: &'a [Handler]) -> Tree<'a> {
        let mut groups: Vec<Group<'a>> = Vec::new();
        let mut i = 0;
        while i < hs.len() {
            let h = &hs[i];
            let mut blocks = vec![
                (None, h.try_start, h.try_end),
                (Some(&h.kind), h.handler_start, h.handler_end),
            ];
            i += 1;
            if let HandlerKind::Catch(_) = h.kind {
                let mut last_end = h.handler_end;
                while let Some(n) = hs.get(i) {
                    if matches!(n.kind, HandlerKind::Catch(_))
                        && (n.try_start, n.try_end) == (h.try_start, h.try_end)
                        && n.handler_start == last_end
                    {
                        blocks.push((Some(&n.kind), n.handler_start, n.handler_end));
                        last_end = n.handler_end;
                        i += 1;
                    } else {
                        break;
                    }
                }
                if let Some(n) = hs.get(i) {
                    if n.kind == HandlerKind::Finally
                        && n.try_start == h.try_start
                        && n.try_end == last_end
                        && n.handler_start == last_end
                    {
                        blocks.push((Some(&n.kind), n.handler_start, n.handler_end));
                        i += 1;
                    }
                }
            }
            let end = blocks.iter().map(|b| b.2).max().unwrap_or(h.try_end);
            let n = blocks.len();
            groups.push(Group {
                start: h.try_start,
                end,
                blocks,
                children: vec![Vec::new(); n],
            });
        }
        // Adopt nested constructs (they come earlier in the list).
        let mut pending: Vec<usize> = Vec::new();
        for g in 0..groups.len() {
            while let Some(&c) = pending.last() {
                let (cs, ce) = (groups[c].start, groups[c].end);
                let Some(b) = groups[g]
                    .blocks
                    .iter()
                    .position(|&(_, s, e)| s <= cs && ce <= e)
                else {
                    break;
                };
                groups[g].children[b].push(c);
                pending.pop();
            }
            for ch in &mut groups[g].children {
                ch.reverse();
            }
            pending.push(g);
        }
        Tree {
            groups,
            roots: pending,
        }
    }
}

/// Printable names of a method's arguments and locals (`None`: print the index).
struct VarNames {
    is_static: bool,
    args: Vec<Option<String>>,
    locals: Vec<Option<String>>,
}

fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn printable_names(vars: &[crate::library::Var]) -> Vec<Option<String>> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for v in vars {
        *count.entry(v.name.as_str()).or_insert(0) += 1;
    }
    vars.iter()
        .map(|v| {
            let ok =
                is_ident(&v.name) && v.name != "this" && count.get(v.name.as_str()) == Some(&1);
            ok.then(|| v.name.clone())
        })
        .collect()
}

impl VarNames {
    fn new(m: &MethodDef) -> VarNames {
        VarNames {
            is_static: m.flags.is_static,
            args: printable_names(&m.params),
            locals: printable_names(&m.locals),
        }
    }

    fn arg(&self, i: u16) -> String {
        if !self.is_static && i == 0 {
            return "this".to_string();
        }
        let pi = i as usize - usize::from(!self.is_static);
        match self.args.get(pi) {
            Some(Some(n)) => n.clone(),
            _ => i.to_string(),
        }
    }

    fn local(&self, i: u16) -> String {
        match self.locals.get(i as usize) {
            Some(Some(n)) => n.clone(),
            _ => i.to_string(),
        }
    }
}

fn type_ref(lib: &Library, i: u32) -> String {
    match lib.type_refs.get(i as usize) {
        Some(t) => t.to_string(),
        None => format!("<invalid type reference #{i}>"),
    }
}

fn insn_text(lib: &Library, names: &VarNames, insn: &Insn) -> String {
    let mn = insn.op.mnemonic();
    let operand = match &insn.operand {
        Operand::None => return mn.to_string(),
        Operand::I32(v) => v.to_string(),
        Operand::I64(v) => v.to_string(),
        Operand::F32(v) => fmt_f32(*v),
        Operand::F64(v) => fmt_f64(*v),
        Operand::Bool(b) => b.to_string(),
        Operand::Char(c) => match char::from_u32(*c) {
            Some(ch) => quote(&ch.to_string(), '\''),
            None => c.to_string(),
        },
        Operand::Str(i) => match lib.strings.get(*i as usize) {
            Some(s) => quote(s, '"'),
            None => format!("<invalid string reference #{i}>"),
        },
        Operand::Var(i) => match insn.op {
            Op::Ldarg | Op::Starg => names.arg(*i),
            _ => names.local(*i),
        },
        Operand::Target(t) => format!("L_{t}"),
        Operand::Switch(ts) => {
            let ls: Vec<String> = ts.iter().map(|t| format!("L_{t}")).collect();
            format!("({})", ls.join(", "))
        }
        Operand::Method(i) | Operand::Field(i) => match lib.member_refs.get(*i as usize) {
            Some(r) => format!("{}::{}", r.class, r.name),
            None => format!("<invalid member reference #{i}>"),
        },
        Operand::Type(i) => type_ref(lib, *i),
    };
    format!("{mn} {operand}")
}

fn attr_value(v: &AttrValue) -> String {
    match v {
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Float(f) => fmt_f64(*f),
        AttrValue::Str(s) => quote(s, '"'),
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Char(c) => match char::from_u32(*c) {
            Some(ch) => quote(&ch.to_string(), '\''),
            None => format!("<invalid char {c}>"),
        },
    }
}

/// A float that re-parses to the same bits.
pub(crate) fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        let b = v.to_bits();
        if b == f64::NAN.to_bits() {
            "nan".to_string()
        } else if b == (-f64::NAN).to_bits() {
            "-nan".to_string()
        } else {
            format!("nan(0x{b:016x})")
        }
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:?}")
    }
}

/// A float that re-parses to the same bits (as `f32`).
pub(crate) fn fmt_f32(v: f32) -> String {
    if v.is_nan() {
        let b = v.to_bits();
        if b == f32::NAN.to_bits() {
            "nan".to_string()
        } else if b == (-f32::NAN).to_bits() {
            "-nan".to_string()
        } else {
            format!("nan(0x{b:08x})")
        }
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:?}")
    }
}

/// `s` as a kasm string (`q == '"'`) or char (`q == '\''`) literal.
pub(crate) fn quote(s: &str, q: char) -> String {
    let mut out = String::new();
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}
