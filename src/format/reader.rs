//! Parsing and validation of `.klib` bytes into a [`Library`].
//!
//! Invariants:
//! - the fixed header is read only after checking the file holds all of it;
//!   every later read goes through [`Cur`], which checks the bytes are there
//!   (within the current section) before touching them, so no input can read
//!   out of bounds or panic;
//! - every count is checked against the bytes left in its section divided by
//!   the minimum encoded size of one element before anything is allocated;
//! - type signatures are parsed iteratively with a depth limit;
//! - string heap references must appear in first-use order (the writer's
//!   order) and every heap entry must be referenced, so accepted files are
//!   exactly the writer's canonical output.

use super::codes::*;
use super::{FormatError, HEADER_SIZE, MAGIC, MAX_SIG_DEPTH, NONE, VERSION_MAJOR, VERSION_MINOR};
use crate::bytecode::{decode_all, DecodeError, Operand};
use crate::library::{
    field_flags_decode, AttrArg, AttrValue, Attribute, FieldDef, Handler, HandlerKind, Import,
    Library, LineEntry, MemberKind, MemberRef, MethodDef, MethodFlags, PropertyDef, TypeDef,
    TypeKind, TypeSig, Var,
};
use std::collections::HashMap;

type Result<T> = std::result::Result<T, FormatError>;

/// Minimum encoded sizes of table elements, used to bound counts.
mod min {
    pub const STR_REF: usize = 4;
    pub const IMPORT: usize = 8;
    pub const HEAP_ENTRY: usize = 4;
    pub const SIG: usize = 1;
    pub const MEMBER_REF: usize = 9;
    pub const TYPE: usize = 34;
    pub const ATTR: usize = 8;
    pub const ATTR_ARG: usize = 6;
    pub const FIELD: usize = 14;
    pub const PROPERTY: usize = 22;
    pub const METHOD: usize = 27;
    pub const VAR: usize = 5;
    pub const HANDLER: usize = 21;
    pub const LINE: usize = 8;
}

/// A bounded cursor over one section of the file. Offsets are absolute.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cur<'a> {
    fn left(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let available = self.left();
        let truncated = FormatError::Truncated {
            offset: self.pos,
            what,
            needed: n,
            available,
        };
        if n > available {
            return Err(truncated);
        }
        let s = self.buf.get(self.pos..self.pos + n).ok_or(truncated)?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Reads a count and checks that `count * min_size` bytes can follow.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u32(what)?;
        let max = self.left() / min_size;
        if n as usize > max {
            return Err(FormatError::CountTooLarge {
                offset: at,
                what,
                count: n,
                max,
            });
        }
        Ok(n as usize)
    }
}

fn header_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn header_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

struct Reader<'a> {
    meta: Cur<'a>,
    code: Cur<'a>,
    code_start: usize,
    heap: Vec<&'a str>,
    heap_offsets: Vec<usize>,
    /// Number of heap entries referenced so far (first-use order).
    next_new: usize,
    n_strings: usize,
    n_members: usize,
    n_typerefs: usize,
}

impl<'a> Reader<'a> {
    fn str_index(&mut self, at: usize, i: u32) -> Result<String> {
        let len = self.heap.len();
        let s = *self
            .heap
            .get(i as usize)
            .ok_or(FormatError::IndexOutOfRange {
                offset: at,
                table: "string heap",
                index: i,
                len,
            })?;
        let i = i as usize;
        if i > self.next_new {
            return Err(FormatError::NonCanonical {
                offset: at,
                what: format!(
                    "string heap entry {i} is referenced before entry {} (entries must be in first-use order)",
                    self.next_new
                ),
            });
        }
        if i == self.next_new {
            self.next_new += 1;
        }
        Ok(s.to_string())
    }

    fn str(&mut self, what: &'static str) -> Result<String> {
        let at = self.meta.pos;
        let i = self.meta.u32(what)?;
        self.str_index(at, i)
    }

    fn opt_str(&mut self, what: &'static str) -> Result<Option<String>> {
        let at = self.meta.pos;
        match self.meta.u32(what)? {
            NONE => Ok(None),
            i => self.str_index(at, i).map(Some),
        }
    }

    fn sig(&mut self) -> Result<TypeSig> {
        let at = self.meta.pos;
        match self.sig_or_void()? {
            Some(s) => Ok(s),
            None => Err(FormatError::BadTag {
                offset: at,
                what: "type signature (void)",
                tag: SIG_VOID,
            }),
        }
    }

    /// Parses a signature iteratively: array tags are counted (bounded by
    /// [`MAX_SIG_DEPTH`]), then the element type is read and wrapped.
    fn sig_or_void(&mut self) -> Result<Option<TypeSig>> {
        let mut depth = 0usize;
        let base = loop {
            let at = self.meta.pos;
            let tag = self.meta.u8("type signature")?;
            match tag {
                SIG_ARRAY => {
                    depth += 1;
                    if depth > MAX_SIG_DEPTH {
                        return Err(FormatError::SigTooDeep {
                            offset: at,
                            limit: MAX_SIG_DEPTH,
                        });
                    }
                }
                SIG_VOID if depth == 0 => return Ok(None),
                SIG_ATOMIC => {
                    let pat = self.meta.pos;
                    let p = self.meta.u8("atomic primitive")?;
                    let p = prim_from_code(p).ok_or(FormatError::BadTag {
                        offset: pat,
                        what: "atomic primitive",
                        tag: p,
                    })?;
                    break TypeSig::Atomic(p);
                }
                SIG_CLASS => break TypeSig::Class(self.str("class name")?),
                _ => match prim_from_code(tag) {
                    Some(p) => break TypeSig::Prim(p),
                    None => {
                        return Err(FormatError::BadTag {
                            offset: at,
                            what: "type signature",
                            tag,
                        })
                    }
                },
            }
        };
        let mut sig = base;
        for _ in 0..depth {
            sig = TypeSig::Array(Box::new(sig));
        }
        Ok(Some(sig))
    }

    fn access(&mut self) -> Result<crate::library::Access> {
        let at = self.meta.pos;
        let tag = self.meta.u8("access")?;
        access_from_code(tag).ok_or(FormatError::BadTag {
            offset: at,
            what: "access",
            tag,
        })
    }

    fn attrs(&mut self) -> Result<Vec<Attribute>> {
        let n = self.meta.count("attribute", min::ATTR)?;
        let mut attrs = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str("attribute name")?;
            let nargs = self.meta.count("attribute argument", min::ATTR_ARG)?;
            let mut args = Vec::with_capacity(nargs);
            for _ in 0..nargs {
                let name = self.opt_str("attribute argument name")?;
                let at = self.meta.pos;
                let tag = self.meta.u8("attribute value")?;
                let value = match tag {
                    ATTR_INT => AttrValue::Int(self.meta.u64("attribute integer")? as i64),
                    ATTR_FLOAT => {
                        AttrValue::Float(f64::from_bits(self.meta.u64("attribute float")?))
                    }
                    ATTR_STR => AttrValue::Str(self.str("attribute string")?),
                    ATTR_BOOL => {
                        let bat = self.meta.pos;
                        match self.meta.u8("attribute bool")? {
                            0 => AttrValue::Bool(false),
                            1 => AttrValue::Bool(true),
                            b => {
                                return Err(FormatError::BadTag {
                                    offset: bat,
                                    what: "attribute bool",
                                    tag: b,
                                })
                            }
                        }
                    }
                    ATTR_CHAR => AttrValue::Char(self.meta.u32("attribute char")?),
                    _ => {
                        return Err(FormatError::BadTag {
                            offset: at,
                            what: "attribute value",
                            tag,
                        })
                    }
                };
                args.push(AttrArg { name, value });
            }
            attrs.push(Attribute { name, args });
        }
        Ok(attrs)
    }

    fn vars(&mut self, what: &'static str) -> Result<Vec<Var>> {
        let n = self.meta.count(what, min::VAR)?;
        let mut vars = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str("variable name")?;
            let ty = self.sig()?;
            vars.push(Var { name, ty });
        }
        Ok(vars)
    }

    fn field(&mut self) -> Result<FieldDef> {
        let name = self.str("field name")?;
        let at = self.meta.pos;
        let flags = self.meta.u8("field flags")?;
        if flags & !FIELD_ALL != 0 {
            return Err(FormatError::FlagsOutOfRange {
                offset: at,
                what: "field flags",
                value: flags as u32,
            });
        }
        let (access, mutability) =
            field_flags_decode(flags & 7).ok_or(FormatError::FlagsOutOfRange {
                offset: at,
                what: "field flags",
                value: flags as u32,
            })?;
        let ty = self.sig()?;
        let line = self.meta.u32("field line")?;
        let attrs = self.attrs()?;
        Ok(FieldDef {
            name,
            ty,
            access,
            mutability,
            is_static: flags & FIELD_STATIC != 0,
            attrs,
            line,
        })
    }

    fn property(&mut self) -> Result<PropertyDef> {
        let name = self.str("property name")?;
        let ty = self.sig()?;
        let access = self.access()?;
        let getter = self.opt_str("property getter")?;
        let setter = self.opt_str("property setter")?;
        let line = self.meta.u32("property line")?;
        let attrs = self.attrs()?;
        Ok(PropertyDef {
            name,
            ty,
            access,
            getter,
            setter,
            attrs,
            line,
        })
    }

    fn method(&mut self, class: &str) -> Result<MethodDef> {
        let name = self.str("method name")?;
        let access = self.access()?;
        let at = self.meta.pos;
        let f = self.meta.u8("method flags")?;
        if f & !METHOD_ALL != 0 {
            return Err(FormatError::FlagsOutOfRange {
                offset: at,
                what: "method flags",
                value: f as u32,
            });
        }
        let flags = MethodFlags {
            is_static: f & METHOD_STATIC != 0,
            is_virtual: f & METHOD_VIRTUAL != 0,
            is_override: f & METHOD_OVERRIDE != 0,
            is_abstract: f & METHOD_ABSTRACT != 0,
            is_native: f & METHOD_NATIVE != 0,
        };
        let line = self.meta.u32("method line")?;
        let ret = self.sig_or_void()?;
        let params = self.vars("parameter")?;
        let locals = self.vars("local")?;
        let attrs = self.attrs()?;
        let body_at = self.meta.pos;
        let body = self.meta.u32("method body offset")?;
        let mut m = MethodDef {
            name,
            access,
            flags,
            params,
            ret,
            locals,
            code: Vec::new(),
            handlers: Vec::new(),
            lines: Vec::new(),
            attrs,
            line,
        };
        if body != NONE {
            let qualified = format!("{class}::{}", m.name);
            let expected = (self.code.pos - self.code_start) as u32;
            if body != expected {
                return Err(FormatError::BadBodyOffset {
                    offset: body_at,
                    method: qualified,
                    found: body,
                    expected,
                });
            }
            self.body(&mut m, &qualified)?;
        }
        Ok(m)
    }

    /// Reads the body record at the code cursor into `m` and validates it.
    fn body(&mut self, m: &mut MethodDef, method: &str) -> Result<()> {
        let record_at = self.code.pos;
        let len = self.code.u32("code length")? as usize;
        let code_at = self.code.pos;
        let code = self.code.take(len, "method code")?;
        let insns = decode_all(code).map_err(|error| {
            let rel = match error {
                DecodeError::BadOpcode { offset, .. }
                | DecodeError::Truncated { offset }
                | DecodeError::BadBool { offset, .. } => offset as usize,
            };
            FormatError::BadCode {
                offset: code_at + rel,
                method: method.to_string(),
                error,
            }
        })?;
        for (off, insn) in &insns {
            let (table, index, len) = match insn.operand {
                Operand::Str(i) => ("string literals", i, self.n_strings),
                Operand::Method(i) | Operand::Field(i) => ("member references", i, self.n_members),
                Operand::Type(i) => ("type references", i, self.n_typerefs),
                _ => continue,
            };
            if index as usize >= len {
                return Err(FormatError::BadOperand {
                    offset: code_at + *off as usize + 1,
                    method: method.to_string(),
                    table,
                    index,
                    len,
                });
            }
        }
        let code_len = code.len() as u32;
        let is_boundary =
            |x: u32| x == code_len || insns.binary_search_by_key(&x, |(o, _)| *o).is_ok();

        let nh = self.code.count("handler", min::HANDLER)?;
        let mut handlers = Vec::with_capacity(nh);
        for _ in 0..nh {
            let at = self.code.pos;
            let try_start = self.code.u32("handler try start")?;
            let try_end = self.code.u32("handler try end")?;
            let handler_start = self.code.u32("handler start")?;
            let handler_end = self.code.u32("handler end")?;
            let kat = self.code.pos;
            let kind = self.code.u8("handler kind")?;
            let tat = self.code.pos;
            let ty = self.code.u32("handler catch type")?;
            let kind = match kind {
                HANDLER_CATCH => {
                    if ty as usize >= self.n_typerefs {
                        return Err(FormatError::IndexOutOfRange {
                            offset: tat,
                            table: "type references (catch clause)",
                            index: ty,
                            len: self.n_typerefs,
                        });
                    }
                    HandlerKind::Catch(ty)
                }
                HANDLER_FINALLY => {
                    if ty != 0 {
                        return Err(FormatError::NonCanonical {
                            offset: tat,
                            what: format!("finally clause carries type index {ty} (must be 0)"),
                        });
                    }
                    HandlerKind::Finally
                }
                tag => {
                    return Err(FormatError::BadTag {
                        offset: kat,
                        what: "handler kind",
                        tag,
                    })
                }
            };
            for (what, start, end) in [
                ("try", try_start, try_end),
                ("handler", handler_start, handler_end),
            ] {
                let reason = if start > end {
                    Some(format!("{what} range {start}..{end} is reversed"))
                } else if end > code_len {
                    Some(format!(
                        "{what} range {start}..{end} ends past the code ({code_len} bytes)"
                    ))
                } else if !is_boundary(start) {
                    Some(format!(
                        "{what} start {start} is not an instruction boundary"
                    ))
                } else if !is_boundary(end) {
                    Some(format!("{what} end {end} is not an instruction boundary"))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(FormatError::BadHandler {
                        offset: at,
                        method: method.to_string(),
                        reason,
                    });
                }
            }
            handlers.push(Handler {
                try_start,
                try_end,
                handler_start,
                handler_end,
                kind,
            });
        }

        let nl = self.code.count("line", min::LINE)?;
        let mut lines: Vec<LineEntry> = Vec::with_capacity(nl);
        for _ in 0..nl {
            let at = self.code.pos;
            let offset = self.code.u32("line entry offset")?;
            let line = self.code.u32("line entry line")?;
            let reason = if offset >= code_len {
                Some(format!(
                    "offset {offset} is past the code ({code_len} bytes)"
                ))
            } else if !is_boundary(offset) {
                Some(format!("offset {offset} is not an instruction start"))
            } else {
                match lines.last() {
                    Some(prev) if prev.offset > offset => Some(format!(
                        "offset {offset} follows offset {} (not sorted)",
                        prev.offset
                    )),
                    _ => None,
                }
            };
            if let Some(reason) = reason {
                return Err(FormatError::BadLineTable {
                    offset: at,
                    method: method.to_string(),
                    reason,
                });
            }
            lines.push(LineEntry { offset, line });
        }

        if code.is_empty() && handlers.is_empty() && lines.is_empty() {
            return Err(FormatError::NonCanonical {
                offset: record_at,
                what: format!("empty body record for {method} (must be omitted)"),
            });
        }
        m.code = code.to_vec();
        m.handlers = handlers;
        m.lines = lines;
        Ok(())
    }

    fn typedef(&mut self) -> Result<TypeDef> {
        let name = self.str("type name")?;
        let at = self.meta.pos;
        let flags = self.meta.u8("type flags")?;
        if flags & !TYPE_ALL != 0 {
            return Err(FormatError::FlagsOutOfRange {
                offset: at,
                what: "type flags",
                value: flags as u32,
            });
        }
        let access = self.access()?;
        let parent = self.opt_str("parent name")?;
        let line = self.meta.u32("type line")?;
        let ni = self.meta.count("interface", min::STR_REF)?;
        let mut interfaces = Vec::with_capacity(ni);
        for _ in 0..ni {
            interfaces.push(self.str("interface name")?);
        }
        let attrs = self.attrs()?;
        let nf = self.meta.count("field", min::FIELD)?;
        let mut fields = Vec::with_capacity(nf);
        for _ in 0..nf {
            fields.push(self.field()?);
        }
        let np = self.meta.count("property", min::PROPERTY)?;
        let mut properties = Vec::with_capacity(np);
        for _ in 0..np {
            properties.push(self.property()?);
        }
        let nm = self.meta.count("method", min::METHOD)?;
        let mut methods = Vec::with_capacity(nm);
        for _ in 0..nm {
            methods.push(self.method(&name)?);
        }
        Ok(TypeDef {
            name,
            kind: if flags & TYPE_INTERFACE != 0 {
                TypeKind::Interface
            } else {
                TypeKind::Class
            },
            access,
            is_abstract: flags & TYPE_ABSTRACT != 0,
            is_sealed: flags & TYPE_SEALED != 0,
            parent,
            interfaces,
            fields,
            methods,
            properties,
            attrs,
            line,
        })
    }

    fn library(&mut self) -> Result<Library> {
        let name = self.str("library name")?;
        let n = self.meta.count("import", min::IMPORT)?;
        let mut imports = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str("import name")?;
            let line = self.meta.u32("import line")?;
            imports.push(Import { name, line });
        }
        let n = self.meta.count("string literal", min::STR_REF)?;
        let mut strings = Vec::with_capacity(n);
        for _ in 0..n {
            strings.push(self.str("string literal")?);
        }
        self.n_strings = strings.len();
        let n = self.meta.count("type reference", min::SIG)?;
        let mut type_refs = Vec::with_capacity(n);
        for _ in 0..n {
            type_refs.push(self.sig()?);
        }
        self.n_typerefs = type_refs.len();
        let n = self.meta.count("member reference", min::MEMBER_REF)?;
        let mut member_refs = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.meta.pos;
            let kind = match self.meta.u8("member reference kind")? {
                MEMBER_FIELD => MemberKind::Field,
                MEMBER_METHOD => MemberKind::Method,
                tag => {
                    return Err(FormatError::BadTag {
                        offset: at,
                        what: "member reference kind",
                        tag,
                    })
                }
            };
            let class = self.str("member reference class")?;
            let name = self.str("member reference name")?;
            member_refs.push(MemberRef { class, name, kind });
        }
        self.n_members = member_refs.len();
        let n = self.meta.count("type", min::TYPE)?;
        let mut types = Vec::with_capacity(n);
        for _ in 0..n {
            types.push(self.typedef()?);
        }
        Ok(Library {
            name,
            imports,
            strings,
            type_refs,
            member_refs,
            types,
        })
    }
}

/// Parses the string heap section `[start, end)`.
fn read_heap(buf: &[u8], start: usize, end: usize) -> Result<(Vec<&str>, Vec<usize>)> {
    let mut c = Cur {
        buf,
        pos: start,
        end,
    };
    let n = c.count("string heap entry", min::HEAP_ENTRY)?;
    let mut heap = Vec::with_capacity(n);
    let mut offsets = Vec::with_capacity(n);
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
    for i in 0..n {
        let at = c.pos;
        let len = c.u32("string length")? as usize;
        let bytes_at = c.pos;
        let bytes = c.take(len, "string bytes")?;
        let s = std::str::from_utf8(bytes).map_err(|e| FormatError::InvalidUtf8 {
            offset: bytes_at + e.valid_up_to(),
        })?;
        if let Some(first) = seen.insert(s, i) {
            return Err(FormatError::NonCanonical {
                offset: at,
                what: format!("string heap entry {i} duplicates entry {first}"),
            });
        }
        heap.push(s);
        offsets.push(at);
    }
    if c.left() != 0 {
        return Err(FormatError::TrailingBytes {
            offset: c.pos,
            section: "string heap",
            count: c.left(),
        });
    }
    Ok((heap, offsets))
}

pub(super) fn read(buf: &[u8]) -> Result<Library> {
    let magic_len = buf.len().min(MAGIC.len());
    if buf[..magic_len] != MAGIC[..magic_len] {
        return Err(FormatError::BadMagic {
            offset: 0,
            found: buf[..magic_len].to_vec(),
        });
    }
    if buf.len() < HEADER_SIZE {
        return Err(FormatError::Truncated {
            offset: 0,
            what: "header",
            needed: HEADER_SIZE,
            available: buf.len(),
        });
    }
    use super::header as h;
    let (major, minor) = (header_u16(buf, h::MAJOR), header_u16(buf, h::MINOR));
    if major != VERSION_MAJOR || minor > VERSION_MINOR {
        return Err(FormatError::UnsupportedVersion {
            offset: h::MAJOR,
            major,
            minor,
        });
    }
    let flags = header_u32(buf, h::FLAGS);
    if flags != 0 {
        return Err(FormatError::FlagsOutOfRange {
            offset: h::FLAGS,
            what: "header flags",
            value: flags,
        });
    }
    let heap_off = header_u32(buf, h::HEAP_OFF);
    if heap_off as usize != HEADER_SIZE {
        return Err(FormatError::BadSection {
            offset: h::HEAP_OFF,
            section: "string heap offset",
            value: heap_off,
            expected: HEADER_SIZE as u64,
        });
    }
    let heap_end = heap_off as u64 + header_u32(buf, h::HEAP_LEN) as u64;
    let meta_off = header_u32(buf, h::META_OFF);
    if meta_off as u64 != heap_end {
        return Err(FormatError::BadSection {
            offset: h::META_OFF,
            section: "metadata offset",
            value: meta_off,
            expected: heap_end,
        });
    }
    let meta_end = meta_off as u64 + header_u32(buf, h::META_LEN) as u64;
    let code_off = header_u32(buf, h::CODE_OFF);
    if code_off as u64 != meta_end {
        return Err(FormatError::BadSection {
            offset: h::CODE_OFF,
            section: "code section offset",
            value: code_off,
            expected: meta_end,
        });
    }
    let code_end = code_off as u64 + header_u32(buf, h::CODE_LEN) as u64;
    if code_end > buf.len() as u64 {
        return Err(FormatError::Truncated {
            offset: 0,
            what: "file (length declared by the header)",
            needed: code_end as usize,
            available: buf.len(),
        });
    }
    let (heap_end, meta_end, code_end) = (heap_end as usize, meta_end as usize, code_end as usize);
    if code_end < buf.len() {
        return Err(FormatError::TrailingBytes {
            offset: code_end,
            section: "code section",
            count: buf.len() - code_end,
        });
    }

    let (heap, heap_offsets) = read_heap(buf, HEADER_SIZE, heap_end)?;
    let mut r = Reader {
        meta: Cur {
            buf,
            pos: meta_off as usize,
            end: meta_end,
        },
        code: Cur {
            buf,
            pos: code_off as usize,
            end: code_end,
        },
        code_start: code_off as usize,
        heap,
        heap_offsets,
        next_new: 0,
        n_strings: 0,
        n_members: 0,
        n_typerefs: 0,
    };
    let lib = r.library()?;
    if r.meta.left() != 0 {
        return Err(FormatError::TrailingBytes {
            offset: r.meta.pos,
            section: "metadata",
            count: r.meta.left(),
        });
    }
    if r.code.left() != 0 {
        return Err(FormatError::TrailingBytes {
            offset: r.code.pos,
            section: "last method body",
            count: r.code.left(),
        });
    }
    if r.next_new < r.heap.len() {
        return Err(FormatError::NonCanonical {
            offset: r.heap_offsets[r.next_new],
            what: format!("string heap entry {} is never referenced", r.next_new),
        });
    }
    Ok(lib)
}
