//! The kasm parser: tokens to a [`Library`].
//!
//! Token driven (newlines carry no meaning). Error recovery: a bad top-level
//! item skips to the next top-level directive, a bad member to the next member
//! directive or the class's `}` (skipping balanced braces), a bad instruction
//! to the next line (or a `}` / directive). Every loop consumes at least one
//! token per iteration or ends, so any input terminates.
//!
//! Method bodies are parsed in one pass into pending instructions whose code
//! offsets are already known (operand sizes depend only on the opcode and the
//! number of `switch` targets); labels, argument and local names are resolved
//! when the body ends, so they may be used before they are declared.

use super::lexer::{lex, Tok, Token};
use super::{AsmError, AsmErrorKind};
use crate::bytecode::{self, Op, Operand, OperandKind};
use crate::library::{
    Access, AttrArg, AttrValue, Attribute, FieldDef, Handler, HandlerKind, Import, Library,
    LineEntry, MemberKind, MemberRef, MethodDef, MethodFlags, Mutability, Prim, PropertyDef,
    TypeDef, TypeKind, TypeSig, Var, OBJECT, STRING,
};
use std::collections::HashMap;

/// Assemble kasm source text into a library. `file` names the source in errors.
///
/// Returns every error found (sorted by position) if there is any.
pub fn assemble(src: &str, file: &str) -> Result<Library, Vec<AsmError>> {
    let mut errors = Vec::new();
    let toks = lex(src, file, &mut errors);
    let mut p = Parser {
        toks,
        pos: 0,
        file,
        errors,
        lib: Library::default(),
        strings: HashMap::new(),
        types: HashMap::new(),
        members: HashMap::new(),
    };
    p.parse_file();
    if p.errors.is_empty() {
        Ok(p.lib)
    } else {
        // One error per position: the first (lexical errors come first, so an
        // invalid token does not also produce "expected X, found invalid token").
        let mut errors = p.errors;
        errors.sort_by_key(|e| (e.line, e.col));
        errors.dedup_by(|b, a| (a.line, a.col) == (b.line, b.col));
        Err(errors)
    }
}

/// Deepest array nesting accepted in a type (`T[][]...`).
const MAX_ARRAY_RANK: usize = 32;

type PResult<T> = Result<T, AsmError>;

const TOP_DIRECTIVES: &[&str] = &["class", "interface", "import", "library"];
const MEMBER_DIRECTIVES: &[&str] = &["field", "method", "property", "attr"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Modifier {
    Public,
    Private,
    Protected,
    Static,
    Virtual,
    Override,
    Abstract,
    Sealed,
    Native,
    Mutable,
    MutableSelf,
}

impl Modifier {
    fn from_word(w: &str) -> Option<Modifier> {
        Some(match w {
            "public" => Modifier::Public,
            "private" => Modifier::Private,
            "protected" => Modifier::Protected,
            "static" => Modifier::Static,
            "virtual" => Modifier::Virtual,
            "override" => Modifier::Override,
            "abstract" => Modifier::Abstract,
            "sealed" => Modifier::Sealed,
            "native" => Modifier::Native,
            "mutable" => Modifier::Mutable,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Modifier::Public => "public",
            Modifier::Private => "private",
            Modifier::Protected => "protected",
            Modifier::Static => "static",
            Modifier::Virtual => "virtual",
            Modifier::Override => "override",
            Modifier::Abstract => "abstract",
            Modifier::Sealed => "sealed",
            Modifier::Native => "native",
            Modifier::Mutable => "mutable",
            Modifier::MutableSelf => "mutable(self)",
        }
    }

    fn access(self) -> Option<Access> {
        match self {
            Modifier::Public => Some(Access::Public),
            Modifier::Private => Some(Access::Private),
            Modifier::Protected => Some(Access::Protected),
            _ => None,
        }
    }
}

const TYPE_MODS: &[Modifier] = &[
    Modifier::Public,
    Modifier::Private,
    Modifier::Protected,
    Modifier::Abstract,
    Modifier::Sealed,
];
const FIELD_MODS: &[Modifier] = &[
    Modifier::Public,
    Modifier::Private,
    Modifier::Protected,
    Modifier::Static,
    Modifier::Mutable,
    Modifier::MutableSelf,
];
const METHOD_MODS: &[Modifier] = &[
    Modifier::Public,
    Modifier::Private,
    Modifier::Protected,
    Modifier::Static,
    Modifier::Virtual,
    Modifier::Override,
    Modifier::Abstract,
    Modifier::Native,
];
const PROPERTY_MODS: &[Modifier] = &[Modifier::Public, Modifier::Private, Modifier::Protected];

/// Modifiers seen on one declaration.
#[derive(Default)]
struct Mods {
    access: Option<(Access, &'static str)>,
    seen: Vec<Modifier>,
    mutability: Option<(Mutability, &'static str)>,
}

impl Mods {
    fn has(&self, m: Modifier) -> bool {
        self.seen.contains(&m)
    }
}

/// An argument or local as written in an operand.
enum VarRef {
    Name(String),
    Index(Option<i128>),
}

/// An operand whose final value is only known when the body ends.
enum PArg {
    Ready(Operand),
    Label(String, Token),
    Switch(Vec<(String, Token)>),
    Arg(VarRef, Token),
    Local(VarRef, Token),
}

struct PInsn {
    op: Op,
    arg: PArg,
    line: u32,
}

#[derive(Clone, Copy)]
enum TryState {
    Try,
    Catch(u32),
    Finally,
    /// A block opened on a line skipped after an error: its `}` only closes it.
    Skipped,
}

struct TryFrame {
    open: Token,
    try_start: u32,
    try_end: u32,
    state: TryState,
    block_start: u32,
    clauses: Vec<(HandlerKind, u32, u32)>,
}

struct Body {
    insns: Vec<PInsn>,
    /// Code size so far (saturating; `too_large` records an overflow).
    code_len: u32,
    too_large: bool,
    labels: HashMap<String, (u32, u32)>,
    locals: Vec<Var>,
    local_lines: HashMap<String, u32>,
    tries: Vec<TryFrame>,
    handlers: Vec<Handler>,
}

/// A float literal before it is given a width.
enum FloatLit {
    Text(String),
    Inf(bool),
    Nan(bool),
    NanBits(Option<i128>, String),
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    file: &'a str,
    errors: Vec<AsmError>,
    lib: Library,
    strings: HashMap<String, u32>,
    types: HashMap<TypeSig, u32>,
    members: HashMap<MemberRef, u32>,
}

fn is_directive(t: &Tok, set: &[&str]) -> bool {
    matches!(t, Tok::Directive(d) if set.contains(&d.as_str()))
}

fn is_word(t: &Tok, w: &str) -> bool {
    matches!(t, Tok::Ident(s) if s == w)
}

fn class_name(s: &str) -> String {
    match s {
        "string" => STRING.to_string(),
        "object" => OBJECT.to_string(),
        _ => s.to_string(),
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Parser<'_> {
    // ---- token access -------------------------------------------------

    fn peek(&self) -> &Token {
        // The lexer always ends the stream with Eof, and `pos` never passes it.
        let i = self.pos.min(self.toks.len().saturating_sub(1));
        &self.toks[i]
    }

    fn peek_n(&self, n: usize) -> &Tok {
        let i = (self.pos + n).min(self.toks.len().saturating_sub(1));
        &self.toks[i].tok
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err(&self, at: &Token, kind: AsmErrorKind) -> AsmError {
        AsmError {
            file: self.file.to_string(),
            line: at.line,
            col: at.col,
            kind,
        }
    }

    fn report(&mut self, at: &Token, kind: AsmErrorKind) {
        let e = self.err(at, kind);
        self.errors.push(e);
    }

    /// "expected `what`, found <next token>" at the next token (not consumed),
    /// or "found end of line" after the previous token if the next one is on a
    /// later line.
    fn expected(&self, what: &str) -> AsmError {
        let t = self.peek();
        let expected = what.to_string();
        if let Some(prev) = self.pos.checked_sub(1).and_then(|i| self.toks.get(i)) {
            if prev.phys != t.phys {
                let found = "end of line".to_string();
                return AsmError {
                    file: self.file.to_string(),
                    line: prev.line,
                    col: prev.end,
                    kind: AsmErrorKind::Expected { expected, found },
                };
            }
        }
        self.err(
            t,
            AsmErrorKind::Expected {
                expected,
                found: t.tok.describe(),
            },
        )
    }

    fn expect(&mut self, tok: Tok, what: &str) -> PResult<Token> {
        if self.peek().tok == tok {
            Ok(self.next())
        } else {
            Err(self.expected(what))
        }
    }

    /// A name (identifier without dots).
    fn name(&mut self, what: &str) -> PResult<(String, Token)> {
        match &self.peek().tok {
            Tok::Ident(s) if !s.contains('.') => {
                let s = s.clone();
                Ok((s, self.next()))
            }
            _ => Err(self.expected(what)),
        }
    }

    // ---- recovery -----------------------------------------------------

    /// Skip to the next top-level directive (or the end).
    fn skip_top(&mut self) {
        while !matches!(self.peek().tok, Tok::Eof) {
            if is_directive(&self.peek().tok, TOP_DIRECTIVES)
                || is_directive(&self.peek().tok, &["attr"])
            {
                return;
            }
            self.next();
        }
    }

    /// Skip to the next member or top-level directive, or to the `}` closing
    /// the current class body (balanced braces in between are skipped).
    fn skip_member(&mut self) {
        let mut depth = 0usize;
        loop {
            let t = &self.peek().tok;
            match t {
                Tok::Eof => return,
                Tok::Directive(_)
                    if is_directive(t, TOP_DIRECTIVES) || is_directive(t, MEMBER_DIRECTIVES) =>
                {
                    return
                }
                Tok::LBrace => depth += 1,
                Tok::RBrace => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                }
                _ => {}
            }
            self.next();
        }
    }

    /// Skip the rest of physical line `phys`, stopping before a `}`, a directive or the end.
    /// Returns how many `{` were skipped.
    fn skip_line(&mut self, phys: u32) -> usize {
        let mut opened = 0;
        loop {
            let t = self.peek();
            if t.phys != phys || matches!(t.tok, Tok::Eof | Tok::RBrace | Tok::Directive(_)) {
                return opened;
            }
            if t.tok == Tok::LBrace {
                opened += 1;
            }
            self.next();
        }
    }

    /// [`Self::skip_line`] inside a method body: every `{` skipped opens a
    /// block whose `}` must still be matched, so it gets a placeholder frame.
    fn skip_body_line(&mut self, phys: u32, body: &mut Body) {
        for _ in 0..self.skip_line(phys) {
            body.tries.push(TryFrame {
                open: self.peek().clone(),
                try_start: body.code_len,
                try_end: body.code_len,
                state: TryState::Skipped,
                block_start: body.code_len,
                clauses: Vec::new(),
            });
        }
    }

    // ---- tables -------------------------------------------------------

    fn intern_string(&mut self, s: String) -> u32 {
        if let Some(&i) = self.strings.get(&s) {
            return i;
        }
        let i = len_u32(self.lib.strings.len());
        self.strings.insert(s.clone(), i);
        self.lib.strings.push(s);
        i
    }

    fn intern_type(&mut self, t: TypeSig) -> u32 {
        if let Some(&i) = self.types.get(&t) {
            return i;
        }
        let i = len_u32(self.lib.type_refs.len());
        self.types.insert(t.clone(), i);
        self.lib.type_refs.push(t);
        i
    }

    fn intern_member(&mut self, m: MemberRef) -> u32 {
        if let Some(&i) = self.members.get(&m) {
            return i;
        }
        let i = len_u32(self.lib.member_refs.len());
        self.members.insert(m.clone(), i);
        self.lib.member_refs.push(m);
        i
    }

    // ---- top level ----------------------------------------------------

    fn parse_file(&mut self) {
        let first = self.peek().clone();
        let mut seen_library = false;
        let mut seen_other = false;
        let mut imports: HashMap<String, u32> = HashMap::new();
        let mut class_lines: HashMap<String, u32> = HashMap::new();
        let mut attrs: Vec<Attribute> = Vec::new();
        let mut attr_tok: Option<Token> = None;
        loop {
            let t = self.peek().clone();
            let Tok::Directive(d) = &t.tok else {
                if t.tok == Tok::Eof {
                    break;
                }
                self.report(
                    &t,
                    AsmErrorKind::Unexpected {
                        found: t.tok.describe(),
                        context: "at top level",
                    },
                );
                self.next();
                self.skip_top();
                continue;
            };
            match d.as_str() {
                "library" => {
                    self.next();
                    if seen_library {
                        self.report(&t, AsmErrorKind::DuplicateLibrary);
                    } else if seen_other {
                        self.report(&t, AsmErrorKind::LibraryNotFirst);
                    }
                    match self.name("a library name") {
                        Ok((n, _)) if !seen_library => self.lib.name = n,
                        Ok(_) => {}
                        Err(e) => {
                            self.errors.push(e);
                            self.skip_top();
                        }
                    }
                    seen_library = true;
                }
                "import" => {
                    seen_other = true;
                    self.next();
                    match self.name("a library name") {
                        Ok((n, nt)) => {
                            if let Some(&first_line) = imports.get(&n) {
                                self.report(
                                    &nt,
                                    AsmErrorKind::Duplicate {
                                        what: "import",
                                        name: n,
                                        first_line,
                                    },
                                );
                            } else {
                                imports.insert(n.clone(), nt.line);
                                self.lib.imports.push(Import {
                                    name: n,
                                    line: nt.line,
                                });
                            }
                        }
                        Err(e) => {
                            self.errors.push(e);
                            self.skip_top();
                        }
                    }
                }
                "class" | "interface" => {
                    seen_other = true;
                    attr_tok = None;
                    let a = std::mem::take(&mut attrs);
                    self.parse_type_decl(a, &mut class_lines);
                }
                "attr" => {
                    seen_other = true;
                    match self.parse_attr() {
                        Ok(a) => {
                            attrs.push(a);
                            attr_tok.get_or_insert(t);
                        }
                        Err(e) => {
                            self.errors.push(e);
                            self.skip_top();
                        }
                    }
                }
                other => {
                    let kind = if MEMBER_DIRECTIVES.contains(&other)
                        || other == "locals"
                        || other == "try"
                    {
                        AsmErrorKind::Unexpected {
                            found: t.tok.describe(),
                            context: "outside a class",
                        }
                    } else {
                        AsmErrorKind::UnknownDirective(other.to_string())
                    };
                    self.report(&t, kind);
                    self.next();
                    self.skip_top();
                }
            }
        }
        if let Some(t) = attr_tok {
            self.report(&t, AsmErrorKind::DanglingAttr);
        }
        if !seen_library {
            self.report(&first, AsmErrorKind::MissingLibrary);
        }
    }

    /// `.attr Name(args...)`, the directive not yet consumed.
    fn parse_attr(&mut self) -> PResult<Attribute> {
        self.next();
        let (name, _) = self.name("an attribute name")?;
        let mut args = Vec::new();
        if self.peek().tok == Tok::LParen {
            self.next();
            loop {
                if self.peek().tok == Tok::RParen {
                    self.next();
                    break;
                }
                let arg_name =
                    if matches!(self.peek().tok, Tok::Ident(_)) && *self.peek_n(1) == Tok::Eq {
                        let (n, _) = self.name("an argument name")?;
                        self.next();
                        Some(n)
                    } else {
                        None
                    };
                let value = self.attr_value()?;
                args.push(AttrArg {
                    name: arg_name,
                    value,
                });
                match self.peek().tok {
                    Tok::Comma => {
                        self.next();
                    }
                    Tok::RParen => {}
                    _ => return Err(self.expected("`,` or `)`")),
                }
            }
        }
        Ok(Attribute { name, args })
    }

    fn attr_value(&mut self) -> PResult<AttrValue> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Int { .. } => {
                let v = self.int_in("an attribute argument", -(1i128 << 63), (1i128 << 64) - 1)?;
                Ok(AttrValue::Int(v as u64 as i64))
            }
            Tok::Str(s) => {
                let s = s.clone();
                self.next();
                Ok(AttrValue::Str(s))
            }
            Tok::Char(c) => {
                let c = *c;
                self.next();
                Ok(AttrValue::Char(c))
            }
            Tok::Ident(w) if w == "true" || w == "false" => {
                self.next();
                Ok(AttrValue::Bool(w == "true"))
            }
            Tok::Float(_) | Tok::Ident(_) if self.float_starts() => {
                Ok(AttrValue::Float(self.f64_lit()?))
            }
            _ => {
                Err(self
                    .expected("an attribute value (integer, float, string, char, true or false)"))
            }
        }
    }

    // ---- types ----------------------------------------------------------

    fn parse_typesig(&mut self) -> PResult<TypeSig> {
        let t = self.peek().clone();
        let w = match &t.tok {
            Tok::Ident(w) if !w.contains('.') => w.clone(),
            _ => return Err(self.expected("a type")),
        };
        self.next();
        let mut ty = if w == "atomic" {
            let t2 = self.peek().clone();
            match &t2.tok {
                Tok::Ident(p) => {
                    let p = p.clone();
                    self.next();
                    match Prim::from_name(&p) {
                        Some(pr) if pr.can_be_atomic() => TypeSig::Atomic(pr),
                        _ => return Err(self.err(&t2, AsmErrorKind::BadAtomic(format!("`{p}`")))),
                    }
                }
                _ => return Err(self.expected("a type after `atomic`")),
            }
        } else if let Some(p) = Prim::from_name(&w) {
            TypeSig::Prim(p)
        } else {
            TypeSig::Class(class_name(&w))
        };
        let mut rank = 0;
        while self.peek().tok == Tok::LBracket {
            let lb = self.peek().clone();
            if matches!(ty, TypeSig::Atomic(_)) {
                return Err(self.err(
                    &lb,
                    AsmErrorKind::Unexpected {
                        found: "`[`".to_string(),
                        context: "after an atomic type",
                    },
                ));
            }
            self.next();
            self.expect(Tok::RBracket, "`]`")?;
            rank += 1;
            if rank > MAX_ARRAY_RANK {
                return Err(self.err(&lb, AsmErrorKind::ArrayTooDeep));
            }
            ty = TypeSig::Array(Box::new(ty));
        }
        Ok(ty)
    }

    // ---- modifiers --------------------------------------------------------

    /// Reads modifiers; a modifier word directly followed by a token for which
    /// `name_follows` holds is the declaration's name instead.
    fn parse_modifiers(
        &mut self,
        name_follows: fn(&Tok, &Tok) -> bool,
        on: &'static str,
        allowed: &[Modifier],
    ) -> Mods {
        let mut mods = Mods::default();
        loop {
            let t = self.peek().clone();
            let Tok::Ident(w) = &t.tok else { break };
            let Some(mut m) = Modifier::from_word(w) else {
                break;
            };
            if name_follows(self.peek_n(1), self.peek_n(2)) {
                break;
            }
            self.next();
            if m == Modifier::Mutable && self.peek().tok == Tok::LParen {
                self.next();
                if is_word(&self.peek().tok, "self") {
                    self.next();
                    if let Err(e) = self.expect(Tok::RParen, "`)`") {
                        self.errors.push(e);
                    }
                } else {
                    let e = self.expected("`self`");
                    self.errors.push(e);
                }
                m = Modifier::MutableSelf;
            }
            if !allowed.contains(&m) {
                self.report(
                    &t,
                    AsmErrorKind::BadModifier {
                        modifier: m.name().to_string(),
                        on,
                    },
                );
            } else if mods.has(m) {
                self.report(&t, AsmErrorKind::DuplicateModifier(m.name().to_string()));
            } else if let (Some(_), Some((_, prev))) = (m.access(), mods.access) {
                self.report(
                    &t,
                    AsmErrorKind::ConflictingModifiers(prev.to_string(), m.name().to_string()),
                );
            } else if let (Modifier::Mutable | Modifier::MutableSelf, Some((_, prev))) =
                (m, mods.mutability)
            {
                self.report(
                    &t,
                    AsmErrorKind::ConflictingModifiers(prev.to_string(), m.name().to_string()),
                );
            } else {
                if let Some(a) = m.access() {
                    mods.access = Some((a, m.name()));
                }
                match m {
                    Modifier::Mutable => mods.mutability = Some((Mutability::Mutable, m.name())),
                    Modifier::MutableSelf => {
                        mods.mutability = Some((Mutability::MutableSelf, m.name()))
                    }
                    _ => {}
                }
                mods.seen.push(m);
            }
        }
        mods
    }

    // ---- classes ----------------------------------------------------------

    fn parse_type_decl(&mut self, attrs: Vec<Attribute>, class_lines: &mut HashMap<String, u32>) {
        let dir = self.next();
        let kind = if is_directive(&dir.tok, &["interface"]) {
            TypeKind::Interface
        } else {
            TypeKind::Class
        };
        let mut ty = TypeDef {
            name: String::new(),
            kind,
            access: Access::Public,
            is_abstract: false,
            is_sealed: false,
            parent: None,
            interfaces: Vec::new(),
            fields: Vec::new(),
            methods: Vec::new(),
            properties: Vec::new(),
            attrs,
            line: dir.line,
        };
        let open = match self.parse_type_header(&mut ty, class_lines) {
            Ok(open) => open,
            Err(e) => {
                self.errors.push(e);
                // Resynchronise on the body's `{` if it is there.
                while !matches!(self.peek().tok, Tok::Eof | Tok::LBrace)
                    && !is_directive(&self.peek().tok, TOP_DIRECTIVES)
                {
                    self.next();
                }
                if self.peek().tok != Tok::LBrace {
                    return;
                }
                self.next()
            }
        };
        self.parse_type_body(&mut ty, &open);
        if ty.kind == TypeKind::Class && !ty.methods.iter().any(|m| m.name == "ctor") {
            let mut code = Vec::new();
            bytecode::encode(&mut code, Op::Ret, &Operand::None);
            ty.methods.push(MethodDef {
                name: "ctor".to_string(),
                access: Access::Public,
                flags: MethodFlags::default(),
                params: Vec::new(),
                ret: None,
                locals: Vec::new(),
                code,
                handlers: Vec::new(),
                lines: vec![LineEntry {
                    offset: 0,
                    line: ty.line,
                }],
                attrs: Vec::new(),
                line: ty.line,
            });
        }
        self.lib.types.push(ty);
    }

    /// Everything from the modifiers to the opening `{` (returned).
    fn parse_type_header(
        &mut self,
        ty: &mut TypeDef,
        class_lines: &mut HashMap<String, u32>,
    ) -> PResult<Token> {
        // A modifier word is the type's name if `:` or `{` follows it, or
        // `implements` and then an interface name. `implements` followed by
        // `:`, `{` or `implements` is itself the name (so `.class public
        // implements : Object {` is a public class named `implements`).
        fn name_follows(t: &Tok, after: &Tok) -> bool {
            matches!(t, Tok::Colon | Tok::LBrace)
                || (is_word(t, "implements")
                    && matches!(after, Tok::Ident(_))
                    && !is_word(after, "implements"))
        }
        let on = if ty.kind == TypeKind::Interface {
            "an interface"
        } else {
            "a class"
        };
        let mods = self.parse_modifiers(name_follows, on, TYPE_MODS);
        ty.access = mods.access.map_or(Access::Public, |a| a.0);
        ty.is_abstract = mods.has(Modifier::Abstract);
        ty.is_sealed = mods.has(Modifier::Sealed);
        let (name, nt) = self.name(if ty.kind == TypeKind::Interface {
            "an interface name"
        } else {
            "a class name"
        })?;
        if let Some(&first_line) = class_lines.get(&name) {
            self.report(
                &nt,
                AsmErrorKind::Duplicate {
                    what: "class",
                    name: name.clone(),
                    first_line,
                },
            );
        } else {
            class_lines.insert(name.clone(), nt.line);
        }
        ty.name = name;
        match ty.kind {
            TypeKind::Class => {
                if self.peek().tok == Tok::Colon {
                    self.next();
                    let (base, _) = self.name("a base class name")?;
                    ty.parent = Some(class_name(&base));
                } else if ty.name != OBJECT {
                    ty.parent = Some(OBJECT.to_string());
                }
                if is_word(&self.peek().tok, "implements") {
                    self.next();
                    self.name_list(&mut ty.interfaces, "an interface name")?;
                }
            }
            TypeKind::Interface => {
                if self.peek().tok == Tok::Colon || is_word(&self.peek().tok, "implements") {
                    self.next();
                    self.name_list(&mut ty.interfaces, "an interface name")?;
                }
            }
        }
        self.expect(Tok::LBrace, "`{`")
    }

    /// `A, B C` (commas optional) up to the next token that is not a name.
    fn name_list(&mut self, out: &mut Vec<String>, what: &str) -> PResult<()> {
        let (n, _) = self.name(what)?;
        out.push(class_name(&n));
        loop {
            if self.peek().tok == Tok::Comma {
                self.next();
                let (n, _) = self.name(what)?;
                out.push(class_name(&n));
            } else if matches!(&self.peek().tok, Tok::Ident(s) if !s.contains('.')) {
                let (n, _) = self.name(what)?;
                out.push(class_name(&n));
            } else {
                return Ok(());
            }
        }
    }

    fn parse_type_body(&mut self, ty: &mut TypeDef, open: &Token) {
        let mut attrs: Vec<Attribute> = Vec::new();
        let mut field_lines: HashMap<String, u32> = HashMap::new();
        let mut method_lines: HashMap<String, u32> = HashMap::new();
        let mut prop_lines: HashMap<String, u32> = HashMap::new();
        loop {
            let t = self.peek().clone();
            let result = match &t.tok {
                Tok::RBrace => {
                    self.next();
                    break;
                }
                Tok::Eof => {
                    self.report(open, AsmErrorKind::Unclosed("class body"));
                    break;
                }
                Tok::Directive(d) => match d.as_str() {
                    "field" => self.parse_field(ty, std::mem::take(&mut attrs), &mut field_lines),
                    "method" => {
                        self.parse_method(ty, std::mem::take(&mut attrs), &mut method_lines)
                    }
                    "property" => {
                        self.parse_property(ty, std::mem::take(&mut attrs), &mut prop_lines)
                    }
                    "attr" => self.parse_attr().map(|a| attrs.push(a)),
                    d if TOP_DIRECTIVES.contains(&d) => {
                        self.report(open, AsmErrorKind::Unclosed("class body"));
                        break;
                    }
                    "locals" | "try" => {
                        self.next();
                        Err(self.err(
                            &t,
                            AsmErrorKind::Unexpected {
                                found: t.tok.describe(),
                                context: "outside a method body",
                            },
                        ))
                    }
                    other => {
                        self.next();
                        Err(self.err(&t, AsmErrorKind::UnknownDirective(other.to_string())))
                    }
                },
                _ => {
                    self.next();
                    Err(self.err(
                        &t,
                        AsmErrorKind::Unexpected {
                            found: t.tok.describe(),
                            context: "in a class body",
                        },
                    ))
                }
            };
            if let Err(e) = result {
                self.errors.push(e);
                self.skip_member();
            }
        }
        // Attributes after the last member apply to the class.
        ty.attrs.extend(attrs);
    }

    fn check_dup(
        &mut self,
        seen: &mut HashMap<String, u32>,
        what: &'static str,
        name: &str,
        at: &Token,
    ) {
        if let Some(&first_line) = seen.get(name) {
            self.report(
                at,
                AsmErrorKind::Duplicate {
                    what,
                    name: name.to_string(),
                    first_line,
                },
            );
        } else {
            seen.insert(name.to_string(), at.line);
        }
    }

    fn parse_field(
        &mut self,
        ty: &mut TypeDef,
        attrs: Vec<Attribute>,
        seen: &mut HashMap<String, u32>,
    ) -> PResult<()> {
        let dir = self.next();
        let mods = self.parse_modifiers(|t, _| *t == Tok::Colon, "a field", FIELD_MODS);
        let (name, nt) = self.name("a field name")?;
        self.expect(Tok::Colon, "`:`")?;
        let fty = self.parse_typesig()?;
        let access = mods.access.map_or(Access::Private, |a| a.0);
        let mut mutability = mods.mutability.map_or(Mutability::Immutable, |m| m.0);
        if access == Access::Private && mutability == Mutability::MutableSelf {
            mutability = Mutability::Mutable;
        }
        self.check_dup(seen, "field", &name, &nt);
        ty.fields.push(FieldDef {
            name,
            ty: fty,
            access,
            mutability,
            is_static: mods.has(Modifier::Static),
            attrs,
            line: dir.line,
        });
        Ok(())
    }

    fn parse_property(
        &mut self,
        ty: &mut TypeDef,
        attrs: Vec<Attribute>,
        seen: &mut HashMap<String, u32>,
    ) -> PResult<()> {
        let dir = self.next();
        let mods = self.parse_modifiers(|t, _| *t == Tok::Colon, "a property", PROPERTY_MODS);
        let (name, nt) = self.name("a property name")?;
        self.expect(Tok::Colon, "`:`")?;
        let pty = self.parse_typesig()?;
        let mut getter = None;
        let mut setter = None;
        loop {
            let t = self.peek().clone();
            let slot = if is_word(&t.tok, "get") {
                &mut getter
            } else if is_word(&t.tok, "set") {
                &mut setter
            } else {
                break;
            };
            self.next();
            let (m, _) = self.name("a method name")?;
            if slot.is_some() {
                let w = if is_word(&t.tok, "get") { "get" } else { "set" };
                self.report(&t, AsmErrorKind::DuplicateModifier(w.to_string()));
            }
            *slot = Some(m);
        }
        self.check_dup(seen, "property", &name, &nt);
        ty.properties.push(PropertyDef {
            name,
            ty: pty,
            access: mods.access.map_or(Access::Public, |a| a.0),
            getter,
            setter,
            attrs,
            line: dir.line,
        });
        Ok(())
    }

    fn parse_method(
        &mut self,
        ty: &mut TypeDef,
        attrs: Vec<Attribute>,
        seen: &mut HashMap<String, u32>,
    ) -> PResult<()> {
        let dir = self.next();
        let mods = self.parse_modifiers(|t, _| *t == Tok::LParen, "a method", METHOD_MODS);
        let (name, nt) = self.name("a method name")?;
        self.expect(Tok::LParen, "`(`")?;
        let mut params: Vec<Var> = Vec::new();
        let mut param_lines: HashMap<String, u32> = HashMap::new();
        loop {
            if self.peek().tok == Tok::RParen {
                self.next();
                break;
            }
            let (pname, pt) = self.name("a parameter name or `)`")?;
            self.expect(Tok::Colon, "`:`")?;
            let pty = self.parse_typesig()?;
            if pname == "this" {
                self.report(&pt, AsmErrorKind::ReservedName(name.clone()));
            }
            self.check_dup(&mut param_lines, "parameter", &pname, &pt);
            params.push(Var {
                name: pname,
                ty: pty,
            });
            if self.peek().tok == Tok::Comma {
                self.next();
            }
        }
        let ret = if self.peek().tok == Tok::Arrow {
            self.next();
            if is_word(&self.peek().tok, "void") {
                self.next();
                None
            } else {
                Some(self.parse_typesig()?)
            }
        } else {
            None
        };
        let is_interface = ty.kind == TypeKind::Interface;
        let mut flags = MethodFlags {
            is_static: mods.has(Modifier::Static),
            is_virtual: mods.has(Modifier::Virtual),
            is_override: mods.has(Modifier::Override),
            is_abstract: mods.has(Modifier::Abstract),
            is_native: mods.has(Modifier::Native),
        };
        let mut m = MethodDef {
            name: name.clone(),
            access: mods.access.map_or(Access::Public, |a| a.0),
            flags,
            params,
            ret,
            locals: Vec::new(),
            code: Vec::new(),
            handlers: Vec::new(),
            lines: Vec::new(),
            attrs,
            line: dir.line,
        };
        if self.peek().tok == Tok::LBrace {
            let open = self.next();
            let why = if is_interface {
                Some("interface")
            } else if flags.is_abstract {
                Some("abstract")
            } else if flags.is_native {
                Some("native")
            } else {
                None
            };
            if let Some(why) = why {
                self.report(
                    &open,
                    AsmErrorKind::UnexpectedBody {
                        method: name.clone(),
                        why,
                    },
                );
            }
            self.parse_body(&open, &mut m);
        } else if is_interface {
            flags.is_abstract = true;
            m.flags = flags;
        } else if !flags.is_abstract && !flags.is_native {
            self.report(&nt, AsmErrorKind::MissingBody(name.clone()));
        }
        self.check_dup(seen, "method", &name, &nt);
        ty.methods.push(m);
        Ok(())
    }

    // ---- method bodies ------------------------------------------------------

    fn parse_body(&mut self, open: &Token, m: &mut MethodDef) {
        let mut body = Body {
            insns: Vec::new(),
            code_len: 0,
            too_large: false,
            labels: HashMap::new(),
            locals: Vec::new(),
            local_lines: HashMap::new(),
            tries: Vec::new(),
            handlers: Vec::new(),
        };
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::RBrace => {
                    self.next();
                    if body.tries.is_empty() {
                        break;
                    }
                    self.close_block(&mut body);
                }
                Tok::Eof => {
                    self.report(open, AsmErrorKind::Unclosed("method body"));
                    break;
                }
                Tok::Directive(d) => match d.as_str() {
                    "locals" => {
                        self.next();
                        if let Err(e) = self.parse_locals(&mut body) {
                            self.errors.push(e);
                            self.skip_body_line(t.phys, &mut body);
                        }
                    }
                    "try" => {
                        self.next();
                        match self.expect(Tok::LBrace, "`{` after `.try`") {
                            Ok(_) => body.tries.push(TryFrame {
                                open: t.clone(),
                                try_start: body.code_len,
                                try_end: body.code_len,
                                state: TryState::Try,
                                block_start: body.code_len,
                                clauses: Vec::new(),
                            }),
                            Err(e) => {
                                self.errors.push(e);
                                self.skip_body_line(t.phys, &mut body);
                            }
                        }
                    }
                    d if TOP_DIRECTIVES.contains(&d) || MEMBER_DIRECTIVES.contains(&d) => {
                        self.report(open, AsmErrorKind::Unclosed("method body"));
                        break;
                    }
                    other => {
                        self.report(&t, AsmErrorKind::UnknownDirective(other.to_string()));
                        self.next();
                        self.skip_body_line(t.phys, &mut body);
                    }
                },
                Tok::Ident(w) if *self.peek_n(1) == Tok::Colon && !w.contains('.') => {
                    self.next();
                    self.next();
                    if let Some(&(_, first_line)) = body.labels.get(w.as_str()) {
                        self.report(
                            &t,
                            AsmErrorKind::Duplicate {
                                what: "label",
                                name: w.clone(),
                                first_line,
                            },
                        );
                    } else {
                        body.labels.insert(w.clone(), (body.code_len, t.line));
                    }
                }
                Tok::Ident(w) => {
                    self.next();
                    let Some(op) = Op::from_mnemonic(w) else {
                        let kind = if w == "catch" || w == "finally" {
                            AsmErrorKind::Unexpected {
                                found: t.tok.describe(),
                                context: "without a preceding `.try { ... }` block",
                            }
                        } else {
                            AsmErrorKind::UnknownInstruction(w.clone())
                        };
                        self.report(&t, kind);
                        self.skip_body_line(t.phys, &mut body);
                        continue;
                    };
                    match self.parse_operand(op) {
                        Ok((arg, n_targets)) => {
                            let size = match op.operand_kind().fixed_size() {
                                Some(n) => 1 + n as u64,
                                None => 5 + 4 * n_targets as u64,
                            };
                            let end = body.code_len as u64 + size;
                            if end > u32::MAX as u64 {
                                if !body.too_large {
                                    self.report(
                                        &t,
                                        AsmErrorKind::TooLarge(format!(
                                            "the code of method `{}`",
                                            m.name
                                        )),
                                    );
                                }
                                body.too_large = true;
                            } else {
                                body.code_len = end as u32;
                            }
                            body.insns.push(PInsn {
                                op,
                                arg,
                                line: t.line,
                            });
                        }
                        Err(e) => {
                            self.errors.push(e);
                            self.skip_body_line(t.phys, &mut body);
                        }
                    }
                }
                _ => {
                    self.report(
                        &t,
                        AsmErrorKind::Unexpected {
                            found: t.tok.describe(),
                            context: "in a method body",
                        },
                    );
                    self.next();
                    self.skip_body_line(t.phys, &mut body);
                }
            }
        }
        self.finish_body(body, m);
    }

    fn parse_locals(&mut self, body: &mut Body) -> PResult<()> {
        if is_word(&self.peek().tok, "init") {
            self.next();
        }
        self.expect(Tok::LParen, "`(`")?;
        loop {
            if self.peek().tok == Tok::RParen {
                self.next();
                return Ok(());
            }
            let (name, nt) = self.name("a local name or `)`")?;
            self.expect(Tok::Colon, "`:`")?;
            let ty = self.parse_typesig()?;
            if let Some(&first_line) = body.local_lines.get(&name) {
                self.report(
                    &nt,
                    AsmErrorKind::Duplicate {
                        what: "local",
                        name: name.clone(),
                        first_line,
                    },
                );
            } else {
                body.local_lines.insert(name.clone(), nt.line);
            }
            body.locals.push(Var { name, ty });
            if self.peek().tok == Tok::Comma {
                self.next();
            }
        }
    }

    /// After the `}` of a try, catch or finally block.
    fn close_block(&mut self, body: &mut Body) {
        let end = body.code_len;
        let Some(frame) = body.tries.last_mut() else {
            return;
        };
        let was_finally = matches!(frame.state, TryState::Finally);
        match frame.state {
            TryState::Skipped => {
                body.tries.pop();
                return;
            }
            TryState::Try => frame.try_end = end,
            TryState::Catch(t) => {
                frame
                    .clauses
                    .push((HandlerKind::Catch(t), frame.block_start, end))
            }
            TryState::Finally => frame
                .clauses
                .push((HandlerKind::Finally, frame.block_start, end)),
        }
        let t = self.peek().clone();
        let is_clause = (is_word(&t.tok, "catch") || is_word(&t.tok, "finally"))
            && *self.peek_n(1) != Tok::Colon;
        if is_clause {
            self.next();
            if was_finally {
                self.report(&t, AsmErrorKind::ClauseAfterFinally);
            }
            let state = if is_word(&t.tok, "catch") {
                match self.parse_typesig() {
                    Ok(ty) => TryState::Catch(self.intern_type(ty)),
                    Err(e) => {
                        self.errors.push(e);
                        TryState::Catch(0)
                    }
                }
            } else {
                TryState::Finally
            };
            if let Err(e) = self.expect(Tok::LBrace, "`{`") {
                self.errors.push(e);
                // Resynchronise on the clause's `{` if it is on this line.
                while self.peek().phys == t.phys
                    && !matches!(
                        self.peek().tok,
                        Tok::Eof | Tok::LBrace | Tok::RBrace | Tok::Directive(_)
                    )
                {
                    self.next();
                }
                if self.peek().tok == Tok::LBrace {
                    self.next();
                }
            }
            if let Some(frame) = body.tries.last_mut() {
                frame.state = state;
                frame.block_start = end;
            }
            return;
        }
        // The construct ends here.
        let Some(frame) = body.tries.pop() else {
            return;
        };
        if frame.clauses.is_empty() {
            self.report(&frame.open, AsmErrorKind::TryWithoutHandler);
        } else if end == frame.try_start {
            self.report(&frame.open, AsmErrorKind::EmptyTry);
        }
        let mut covered_end = frame.try_end;
        for (kind, hs, he) in frame.clauses {
            let try_end = match kind {
                HandlerKind::Catch(_) => frame.try_end,
                HandlerKind::Finally => covered_end,
            };
            body.handlers.push(Handler {
                try_start: frame.try_start,
                try_end,
                handler_start: hs,
                handler_end: he,
                kind,
            });
            covered_end = he;
        }
    }

    /// Parses the operand of `op`; returns it and the number of `switch` targets.
    fn parse_operand(&mut self, op: Op) -> PResult<(PArg, usize)> {
        let ready = |o| Ok((PArg::Ready(o), 0));
        match op.operand_kind() {
            OperandKind::None => ready(Operand::None),
            OperandKind::I32 => {
                let v = self.int_in("ldc.i32", -(1i128 << 31), (1i128 << 32) - 1)?;
                ready(Operand::I32(v as u32 as i32))
            }
            OperandKind::I64 => {
                let v = self.int_in("ldc.i64", -(1i128 << 63), (1i128 << 64) - 1)?;
                ready(Operand::I64(v as u64 as i64))
            }
            OperandKind::F32 => ready(Operand::F32(self.f32_lit()?)),
            OperandKind::F64 => ready(Operand::F64(self.f64_lit()?)),
            OperandKind::Bool => {
                let t = &self.peek().tok;
                if is_word(t, "true") || is_word(t, "false") {
                    let v = is_word(t, "true");
                    self.next();
                    ready(Operand::Bool(v))
                } else {
                    Err(self.expected("`true` or `false`"))
                }
            }
            OperandKind::Char => match self.peek().tok {
                Tok::Char(c) => {
                    self.next();
                    ready(Operand::Char(c))
                }
                Tok::Int { .. } => {
                    let v = self.int_in("ldc.char", 0, 0x10FFFF)?;
                    ready(Operand::Char(v as u32))
                }
                _ => Err(self.expected("a character literal or code point")),
            },
            OperandKind::Str => match &self.peek().tok {
                Tok::Str(s) => {
                    let s = s.clone();
                    self.next();
                    ready(Operand::Str(self.intern_string(s)))
                }
                _ => Err(self.expected("a string literal")),
            },
            OperandKind::Var => {
                let t = self.peek().clone();
                let v = match &t.tok {
                    Tok::Ident(s) if !s.contains('.') => VarRef::Name(s.clone()),
                    Tok::Int { value, .. } => VarRef::Index(*value),
                    _ => {
                        let what = if matches!(op, Op::Ldarg | Op::Starg) {
                            "an argument name or index"
                        } else {
                            "a local name or index"
                        };
                        return Err(self.expected(what));
                    }
                };
                self.next();
                if matches!(op, Op::Ldarg | Op::Starg) {
                    Ok((PArg::Arg(v, t), 0))
                } else {
                    Ok((PArg::Local(v, t), 0))
                }
            }
            OperandKind::Target => {
                let (l, t) = self.name("a label")?;
                Ok((PArg::Label(l, t), 0))
            }
            OperandKind::Switch => {
                self.expect(Tok::LParen, "`(` starting the switch targets")?;
                let mut targets = Vec::new();
                loop {
                    if self.peek().tok == Tok::RParen {
                        self.next();
                        break;
                    }
                    targets.push(self.name("a label or `)`")?);
                    if self.peek().tok == Tok::Comma {
                        self.next();
                    }
                }
                let n = targets.len();
                if u32::try_from(n).is_err() {
                    return Err(self.expected("fewer switch targets"));
                }
                Ok((PArg::Switch(targets), n))
            }
            kind @ (OperandKind::Method | OperandKind::Field) => {
                let (class, _) = self.name("`Class::member`")?;
                self.expect(
                    Tok::ColonColon,
                    "`::` (operands are written `Class::member`)",
                )?;
                let (name, _) = self.name("a member name after `::`")?;
                let kind = if kind == OperandKind::Method {
                    MemberKind::Method
                } else {
                    MemberKind::Field
                };
                let i = self.intern_member(MemberRef {
                    class: class_name(&class),
                    name,
                    kind,
                });
                if kind == MemberKind::Method {
                    ready(Operand::Method(i))
                } else {
                    ready(Operand::Field(i))
                }
            }
            OperandKind::Type => {
                let ty = self.parse_typesig()?;
                ready(Operand::Type(self.intern_type(ty)))
            }
        }
    }

    /// An integer literal within `min..=max` (consumed only if it is an integer).
    fn int_in(&mut self, what: &str, min: i128, max: i128) -> PResult<i128> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Int { value, text, .. } => {
                self.next();
                match value {
                    Some(v) if (min..=max).contains(v) => Ok(*v),
                    _ => Err(self.err(
                        &t,
                        AsmErrorKind::IntOutOfRange {
                            literal: text.clone(),
                            what: what.to_string(),
                            min,
                            max,
                        },
                    )),
                }
            }
            _ => Err(self.expected("an integer literal")),
        }
    }

    /// Does a float literal start at the next token?
    fn float_starts(&self) -> bool {
        match &self.peek().tok {
            Tok::Float(_) => true,
            Tok::Int { hex: false, .. } => true,
            Tok::Ident(w) => w == "inf" || w == "nan",
            _ => false,
        }
    }

    fn float_lit(&mut self) -> PResult<(FloatLit, Token)> {
        let t = self.peek().clone();
        let lit = match &t.tok {
            Tok::Float(s) if s == "-inf" => FloatLit::Inf(true),
            Tok::Float(s) if s == "-nan" => FloatLit::Nan(true),
            Tok::Float(s) => FloatLit::Text(s.clone()),
            Tok::Int {
                hex: false, text, ..
            } => FloatLit::Text(text.clone()),
            Tok::Ident(w) if w == "inf" => FloatLit::Inf(false),
            Tok::Ident(w) if w == "nan" => {
                if *self.peek_n(1) == Tok::LParen {
                    self.next();
                    self.next();
                    let bt = self.peek().clone();
                    let Tok::Int {
                        value,
                        text,
                        hex: true,
                    } = &bt.tok
                    else {
                        return Err(self.expected("the hexadecimal bits of a NaN"));
                    };
                    let lit = FloatLit::NanBits(*value, text.clone());
                    self.next();
                    self.expect(Tok::RParen, "`)`")?;
                    return Ok((lit, bt));
                }
                FloatLit::Nan(false)
            }
            _ => return Err(self.expected("a float literal")),
        };
        self.next();
        Ok((lit, t))
    }

    fn f64_lit(&mut self) -> PResult<f64> {
        let (lit, t) = self.float_lit()?;
        match lit {
            FloatLit::Text(s) => s
                .parse::<f64>()
                .map_err(|_| self.err(&t, AsmErrorKind::BadFloat(format!("`{s}`")))),
            FloatLit::Inf(neg) => Ok(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }),
            FloatLit::Nan(neg) => Ok(if neg { -f64::NAN } else { f64::NAN }),
            FloatLit::NanBits(v, text) => {
                match v.and_then(|v| u64::try_from(v).ok()).map(f64::from_bits) {
                    Some(f) if f.is_nan() => Ok(f),
                    _ => Err(self.err(
                        &t,
                        AsmErrorKind::BadFloat(format!("nan({text}) (not the bits of an f64 NaN)")),
                    )),
                }
            }
        }
    }

    fn f32_lit(&mut self) -> PResult<f32> {
        let (lit, t) = self.float_lit()?;
        match lit {
            FloatLit::Text(s) => s
                .parse::<f32>()
                .map_err(|_| self.err(&t, AsmErrorKind::BadFloat(format!("`{s}`")))),
            FloatLit::Inf(neg) => Ok(if neg {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            }),
            FloatLit::Nan(neg) => Ok(if neg { -f32::NAN } else { f32::NAN }),
            FloatLit::NanBits(v, text) => {
                match v.and_then(|v| u32::try_from(v).ok()).map(f32::from_bits) {
                    Some(f) if f.is_nan() => Ok(f),
                    _ => Err(self.err(
                        &t,
                        AsmErrorKind::BadFloat(format!("nan({text}) (not the bits of an f32 NaN)")),
                    )),
                }
            }
        }
    }

    /// Resolves labels and variables, encodes the code and fills `m`.
    fn finish_body(&mut self, body: Body, m: &mut MethodDef) {
        let argc = m.params.len() + usize::from(!m.flags.is_static);
        // Name lookups (first declaration wins; duplicates are already reported).
        let mut param_ix: HashMap<&str, usize> = HashMap::new();
        for (i, p) in m.params.iter().enumerate() {
            param_ix.entry(p.name.as_str()).or_insert(i);
        }
        let mut local_ix: HashMap<&str, usize> = HashMap::new();
        for (i, l) in body.locals.iter().enumerate() {
            local_ix.entry(l.name.as_str()).or_insert(i);
        }
        let mut code = Vec::with_capacity(body.code_len as usize);
        let mut lines: Vec<LineEntry> = Vec::new();
        for ins in body.insns {
            let operand = match ins.arg {
                PArg::Ready(o) => o,
                PArg::Label(l, t) => Operand::Target(self.label(&body.labels, &l, &t)),
                PArg::Switch(ls) => Operand::Switch(
                    ls.iter()
                        .map(|(l, t)| self.label(&body.labels, l, t))
                        .collect(),
                ),
                PArg::Arg(v, t) => {
                    let idx = match v {
                        VarRef::Name(n) if n == "this" => {
                            if m.flags.is_static {
                                self.report(&t, AsmErrorKind::NoThis(m.name.clone()));
                            }
                            Some(0)
                        }
                        VarRef::Name(n) => match param_ix.get(n.as_str()).copied() {
                            Some(i) => Some(i + usize::from(!m.flags.is_static)),
                            None => {
                                self.report(
                                    &t,
                                    AsmErrorKind::UnknownArg {
                                        name: n,
                                        method: m.name.clone(),
                                    },
                                );
                                None
                            }
                        },
                        VarRef::Index(i) => self.var_index(i, argc, "argument", &t),
                    };
                    Operand::Var(self.var_u16(idx, &t))
                }
                PArg::Local(v, t) => {
                    let idx = match v {
                        VarRef::Name(n) => match local_ix.get(n.as_str()).copied() {
                            Some(i) => Some(i),
                            None => {
                                self.report(
                                    &t,
                                    AsmErrorKind::UnknownLocal {
                                        name: n,
                                        method: m.name.clone(),
                                    },
                                );
                                None
                            }
                        },
                        VarRef::Index(i) => self.var_index(i, body.locals.len(), "local", &t),
                    };
                    Operand::Var(self.var_u16(idx, &t))
                }
            };
            if body.too_large {
                continue;
            }
            if lines.last().map(|e| e.line) != Some(ins.line) {
                lines.push(LineEntry {
                    offset: len_u32(code.len()),
                    line: ins.line,
                });
            }
            bytecode::encode(&mut code, ins.op, &operand);
        }
        m.code = code;
        m.lines = lines;
        m.handlers = body.handlers;
        m.locals = body.locals;
    }

    fn label(&mut self, labels: &HashMap<String, (u32, u32)>, l: &str, t: &Token) -> u32 {
        match labels.get(l) {
            Some(&(off, _)) => off,
            None => {
                self.report(t, AsmErrorKind::UndefinedLabel(l.to_string()));
                0
            }
        }
    }

    fn var_index(
        &mut self,
        i: Option<i128>,
        count: usize,
        what: &'static str,
        t: &Token,
    ) -> Option<usize> {
        match i {
            Some(i) if i >= 0 && (i as u128) < count as u128 => Some(i as usize),
            _ => {
                let index = i.unwrap_or(i128::MAX);
                self.report(t, AsmErrorKind::VarIndexOutOfRange { what, index, count });
                None
            }
        }
    }

    fn var_u16(&mut self, idx: Option<usize>, t: &Token) -> u16 {
        match idx.map(u16::try_from) {
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                self.report(
                    t,
                    AsmErrorKind::TooLarge("argument or local index (at most 65535)".to_string()),
                );
                0
            }
            None => 0,
        }
    }
}
