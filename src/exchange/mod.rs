//! Object exchange in the self-describing layout of the memory-layout note
//! (`docs/exchange.md` has the grammar): [`export`] writes the object graph
//! reachable from an object to bytes; [`import`] rebuilds such bytes into a
//! new object of a class with matching fields.
//!
//! An object is `size:u32 count:u32` followed by `count` fields, each a
//! 7-byte id (the low 56 bits of the 64-bit FNV-1a hash of the field's name),
//! a type/flags byte (item type id in bits 0..3, the field's 3-bit access
//! flags in bits 4..6) and the data; references are a kind byte (null,
//! object, string, array) and the value, nested objects inline.
//!
//! Invariants:
//! - The graph must be a tree of objects and arrays: [`export`] fails with
//!   [`ExchangeError::Cycle`] or [`ExchangeError::Shared`] (naming the field)
//!   rather than loop or duplicate; strings are values and may be shared.
//! - [`import`] never trusts a length: every count and length is checked
//!   against the bytes that remain before anything is allocated, and nesting
//!   is bounded ([`Limits::max_depth`]), so malformed input gives an error,
//!   never a panic, a huge allocation or a stack overflow.
//! - Every object [`import`] allocates is on the thread's handle scope
//!   (`ThreadCtx::roots`) from its allocation until `import` returns (the
//!   scope is restored to its previous length on every path), so a
//!   collection at any allocation (GC stress) sees the partial graph.
//! - Raw addresses (`ptr`, `mutptr`) are never exchanged: a field or array
//!   of those types is [`ExchangeError::Unsupported`] in both directions.

#[cfg(test)]
mod tests;

use crate::library::program::ClassId;
use crate::library::{field_flags, Prim, TypeSig};
use crate::runtime::Runtime;
use crate::vm::object::{array_len, class_of, string_bytes, ARRAY_DATA_OFFSET};
use crate::vm::tables::{item_type, kind, ClassDesc};
use crate::vm::thread::ThreadCtx;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Bytes of an object record's header (`size:u32 count:u32`).
pub const OBJECT_HEADER: usize = 8;
/// Bytes of a field's header (7-byte id and the type/flags byte).
pub const FIELD_HEADER: usize = 8;
/// Reference kind byte: null.
pub const REF_NULL: u8 = 0;
/// Reference kind byte: a nested object record follows.
pub const REF_OBJECT: u8 = 1;
/// Reference kind byte: a string (`len:u32` and the bytes) follows.
pub const REF_STRING: u8 = 2;
/// Reference kind byte: an array (element type byte, `len:u32`, elements) follows.
pub const REF_ARRAY: u8 = 3;
/// The item type id Kiln uses for `i32` (the note has none: an extension).
pub const ITEM_I32: u8 = 14;

/// The 7-byte id of a field name: the low 56 bits of the 64-bit FNV-1a hash
/// of its UTF-8 bytes, little-endian.
pub fn field_id(name: &str) -> [u8; 7] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let le = h.to_le_bytes();
    [le[0], le[1], le[2], le[3], le[4], le[5], le[6]]
}

/// Limits of one export or import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of objects and arrays (the root object is depth 1).
    pub max_depth: usize,
    /// Largest encoding [`export`] produces.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 1000,
            max_bytes: 256 << 20,
        }
    }
}

/// Why an export or import failed. `offset` is a byte offset in the
/// encoding (where the problem was read, or where the value would have been
/// written); `path` names the field: the root class, then `.field` and
/// `[index]` steps (an encoded field the target does not have is `#<id hex>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeError {
    /// The input ends before a value that needs `need` more bytes.
    Truncated {
        /// Where the value starts.
        offset: usize,
        /// The field being read.
        path: String,
        /// Bytes needed.
        need: u64,
        /// Bytes left.
        have: usize,
    },
    /// A byte or length that the grammar does not allow.
    Malformed {
        /// Where.
        offset: usize,
        /// The field being read.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// Bytes after the root object.
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        count: usize,
    },
    /// An encoded field id the target class does not have.
    UnknownField {
        /// Where the field starts.
        offset: usize,
        /// The object's path plus `#<id hex>`.
        path: String,
        /// The target class.
        class: String,
    },
    /// The same field id twice in one object.
    DuplicateField {
        /// Where the second one starts.
        offset: usize,
        /// The field.
        path: String,
    },
    /// The encoded type of a field or element is not the target's.
    TypeMismatch {
        /// Where.
        offset: usize,
        /// The field.
        path: String,
        /// The target's type (kasm syntax).
        expected: String,
        /// What the encoding holds.
        found: String,
    },
    /// The target type does not say which class to build (`object`, an
    /// interface or an abstract class for a nested object, `object` for an
    /// array of references), or the class is not an instantiable class.
    NoClass {
        /// Where.
        offset: usize,
        /// The field.
        path: String,
        /// The declared type.
        declared: String,
    },
    /// Two fields of the target class have the same 7-byte id.
    AmbiguousField {
        /// The class.
        class: String,
        /// The two field names.
        names: (String, String),
    },
    /// A raw address (`ptr`, `mutptr`) field or array.
    Unsupported {
        /// Where.
        offset: usize,
        /// The field.
        path: String,
        /// Its type.
        what: String,
    },
    /// Export: an object or array reachable from itself.
    Cycle {
        /// Output offset.
        offset: usize,
        /// The field that closes the cycle.
        path: String,
    },
    /// Export: an object or array reachable along two paths.
    Shared {
        /// Output offset.
        offset: usize,
        /// The second path.
        path: String,
    },
    /// Nesting deeper than [`Limits::max_depth`].
    TooDeep {
        /// Where.
        offset: usize,
        /// The field.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// Export: the encoding would exceed [`Limits::max_bytes`].
    TooLarge {
        /// Output offset reached.
        offset: usize,
        /// The field being written.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// Import: an allocation failed (the heap limit).
    Alloc {
        /// Where.
        offset: usize,
        /// The field.
        path: String,
        /// The runtime's message.
        message: String,
    },
    /// The root is not an object of an instantiable class.
    NotAnObject {
        /// What it is.
        what: String,
    },
}

impl ExchangeError {
    /// The byte offset involved (in the input for import, the output for
    /// export); `None` for errors about a class rather than a position.
    pub fn offset(&self) -> Option<usize> {
        use ExchangeError::*;
        match self {
            Truncated { offset, .. }
            | Malformed { offset, .. }
            | TrailingBytes { offset, .. }
            | UnknownField { offset, .. }
            | DuplicateField { offset, .. }
            | TypeMismatch { offset, .. }
            | NoClass { offset, .. }
            | Unsupported { offset, .. }
            | Cycle { offset, .. }
            | Shared { offset, .. }
            | TooDeep { offset, .. }
            | TooLarge { offset, .. }
            | Alloc { offset, .. } => Some(*offset),
            AmbiguousField { .. } | NotAnObject { .. } => None,
        }
    }

    /// The field path involved (`Class.field[i].sub`), if any.
    pub fn path(&self) -> Option<&str> {
        use ExchangeError::*;
        match self {
            Truncated { path, .. }
            | Malformed { path, .. }
            | UnknownField { path, .. }
            | DuplicateField { path, .. }
            | TypeMismatch { path, .. }
            | NoClass { path, .. }
            | Unsupported { path, .. }
            | Cycle { path, .. }
            | Shared { path, .. }
            | TooDeep { path, .. }
            | TooLarge { path, .. }
            | Alloc { path, .. } => Some(path),
            TrailingBytes { .. } | AmbiguousField { .. } | NotAnObject { .. } => None,
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ExchangeError::*;
        match self {
            Truncated { offset, path, need, have } => write!(
                f,
                "offset {offset}: {path}: truncated: needs {need} bytes, {have} left"
            ),
            Malformed { offset, path, what } => write!(f, "offset {offset}: {path}: {what}"),
            TrailingBytes { offset, count } => {
                write!(f, "offset {offset}: {count} bytes after the root object")
            }
            UnknownField { offset, path, class } => {
                write!(f, "offset {offset}: {path}: class {class} has no field with this id")
            }
            DuplicateField { offset, path } => {
                write!(f, "offset {offset}: {path}: field encoded twice")
            }
            TypeMismatch { offset, path, expected, found } => write!(
                f,
                "offset {offset}: {path}: type mismatch: the target is {expected}, the encoding has {found}"
            ),
            NoClass { offset, path, declared } => write!(
                f,
                "offset {offset}: {path}: cannot build a value of declared type {declared} (not an instantiable class)"
            ),
            AmbiguousField { class, names } => write!(
                f,
                "class {class}: fields {} and {} have the same 7-byte id",
                names.0, names.1
            ),
            Unsupported { offset, path, what } => {
                write!(f, "offset {offset}: {path}: {what} values are not exchanged")
            }
            Cycle { offset, path } => {
                write!(f, "offset {offset}: {path}: the object graph has a cycle here")
            }
            Shared { offset, path } => write!(
                f,
                "offset {offset}: {path}: object already reached by another path (the graph must be a tree)"
            ),
            TooDeep { offset, path, limit } => {
                write!(f, "offset {offset}: {path}: nested deeper than {limit}")
            }
            TooLarge { offset, path, limit } => {
                write!(f, "offset {offset}: {path}: encoding exceeds {limit} bytes")
            }
            Alloc { offset, path, message } => {
                write!(f, "offset {offset}: {path}: allocation failed: {message}")
            }
            NotAnObject { what } => write!(f, "not an exchangeable object: {what}"),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// One step of a field path.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Field(&'a str),
    Index(u32),
    Id([u8; 7]),
}

/// The path of the value being read or written (rendered only for errors).
struct Path<'a> {
    root: &'a str,
    segs: Vec<Seg<'a>>,
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut s = self.root.to_string();
        for g in &self.segs {
            match g {
                Seg::Field(n) => {
                    s.push('.');
                    s.push_str(n);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
                Seg::Id(id) => {
                    s.push_str(".#");
                    for b in id {
                        s.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
        s
    }
}

/// An instance field of a class, for exchange.
struct FieldInfo<'a> {
    name: &'a str,
    ty: &'a TypeSig,
    id: [u8; 7],
    offset: usize,
    item: u8,
    flags: u8,
}

/// The instance fields of `id` (root class first, declaration order).
fn fields_of(rt: &Runtime, id: ClassId) -> Vec<FieldInfo<'_>> {
    let mut chain = rt.program.ancestors(id);
    chain.reverse();
    let mut out = Vec::new();
    for c in chain {
        for (i, f) in rt.program.def(c).fields.iter().enumerate() {
            if f.is_static {
                continue;
            }
            let fh = rt.tables.field(crate::library::program::MemberId {
                class: c,
                index: i as u32,
            });
            out.push(FieldInfo {
                name: &f.name,
                ty: &f.ty,
                id: field_id(&f.name),
                offset: fh.field_offset as usize,
                item: item_type(&f.ty),
                flags: field_flags(f.access, f.mutability),
            });
        }
    }
    out
}

/// The kasm name of an item type id.
fn item_name(t: u8) -> &'static str {
    match t {
        0 => "reference",
        1 => "bool",
        2 => "char",
        3 => "u8",
        4 => "i64",
        5 => "u64",
        6 => "f32",
        7 => "f64",
        8 => "ptr",
        9 => "mutptr",
        10 => "atomic bool",
        11 => "atomic u8",
        12 => "atomic i64",
        13 => "atomic u64",
        14 => "i32",
        _ => "unknown",
    }
}

/// Data bytes of a primitive item type (`None` for references and unknown ids).
fn item_size(t: u8) -> Option<usize> {
    match t {
        1 | 3 | 10 | 11 => Some(1),
        2 | 6 | 14 => Some(4),
        4 | 5 | 7 | 8 | 9 | 12 | 13 => Some(8),
        _ => None,
    }
}

/// The primitive array element type of an item type id (arrays of
/// primitives only; atomics are never array elements).
fn prim_of_item(t: u8) -> Option<Prim> {
    Some(match t {
        1 => Prim::Bool,
        2 => Prim::Char,
        3 => Prim::U8,
        4 => Prim::I64,
        5 => Prim::U64,
        6 => Prim::F32,
        7 => Prim::F64,
        14 => Prim::I32,
        _ => return None,
    })
}

fn sig_name(t: &TypeSig) -> String {
    match t {
        TypeSig::Prim(p) => item_name(item_type(&TypeSig::Prim(*p))).to_string(),
        TypeSig::Atomic(p) => format!("atomic {}", item_name(item_type(&TypeSig::Prim(*p)))),
        TypeSig::Class(c) => c.clone(),
        TypeSig::Array(e) => format!("{}[]", sig_name(e)),
    }
}

// ---------------------------------------------------------------- export

/// Serialise the object graph reachable from `obj` (see the module docs and
/// `docs/exchange.md`) with the default [`Limits`].
///
/// # Safety
/// `obj` is null or a live object of `rt`'s heap, and the graph reachable
/// from it stays alive and unmodified during the call: the calling thread
/// keeps it rooted and is not at a safepoint (no collection can run, since
/// nothing here allocates on the managed heap), and no other thread writes
/// to it.
pub unsafe fn export(rt: &Runtime, obj: *mut u8) -> Result<Vec<u8>, ExchangeError> {
    // SAFETY: the caller's contract.
    unsafe { export_with(rt, obj, &Limits::default()) }
}

/// [`export`] with explicit limits.
///
/// # Safety
/// As for [`export`].
pub unsafe fn export_with(
    rt: &Runtime,
    obj: *mut u8,
    limits: &Limits,
) -> Result<Vec<u8>, ExchangeError> {
    if obj.is_null() {
        return Err(ExchangeError::NotAnObject {
            what: "null".into(),
        });
    }
    // SAFETY: a live object (contract).
    let cd = unsafe { &*class_of(obj) };
    if std::ptr::eq(cd, rt.string_class) || cd.kind != kind::CLASS {
        return Err(ExchangeError::NotAnObject {
            what: format!("an instance of {}", cd.name()),
        });
    }
    let mut w = Writer {
        rt,
        out: Vec::new(),
        limits: *limits,
        path: Path {
            root: cd.name(),
            segs: Vec::new(),
        },
        on_path: HashSet::new(),
        seen: HashSet::new(),
    };
    w.on_path.insert(obj as usize);
    w.seen.insert(obj as usize);
    // SAFETY: a live object of a class (checked above).
    unsafe { w.object(obj, 1)? };
    Ok(w.out)
}

struct Writer<'a> {
    rt: &'a Runtime,
    out: Vec<u8>,
    limits: Limits,
    path: Path<'a>,
    on_path: HashSet<usize>,
    seen: HashSet<usize>,
}

impl<'a> Writer<'a> {
    fn check_size(&self, extra: usize) -> Result<(), ExchangeError> {
        if self.out.len().saturating_add(extra) > self.limits.max_bytes {
            return Err(ExchangeError::TooLarge {
                offset: self.out.len(),
                path: self.path.render(),
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    fn class_id(&self, cd: &ClassDesc) -> Result<ClassId, ExchangeError> {
        self.rt
            .program
            .class(cd.name())
            .ok_or_else(|| ExchangeError::NotAnObject {
                what: format!("an instance of {} (no metadata)", cd.name()),
            })
    }

    /// Write the record of `obj` (a live instance of a class).
    ///
    /// # Safety
    /// `obj` is a live object whose class is a class (not an array or string).
    unsafe fn object(&mut self, obj: *mut u8, depth: usize) -> Result<(), ExchangeError> {
        if depth > self.limits.max_depth {
            return Err(ExchangeError::TooDeep {
                offset: self.out.len(),
                path: self.path.render(),
                limit: self.limits.max_depth,
            });
        }
        // SAFETY: live object (contract).
        let cd = unsafe { &*class_of(obj) };
        let id = self.class_id(cd)?;
        let fields = fields_of(self.rt, id);
        self.check_size(OBJECT_HEADER)?;
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        self.out
            .extend_from_slice(&(fields.len() as u32).to_le_bytes());
        for f in &fields {
            self.path.segs.push(Seg::Field(f.name));
            self.check_size(FIELD_HEADER + 8)?;
            self.out.extend_from_slice(&f.id);
            self.out.push(f.item | (f.flags << 4));
            // SAFETY: `f.offset` is an instance field of `obj`'s class of item type `f.item`.
            unsafe {
                let p = obj.add(f.offset);
                match f.item {
                    0 => {
                        let r = std::ptr::read_unaligned(p as *const *mut u8);
                        self.reference(r, depth)?;
                    }
                    8 | 9 => {
                        return Err(ExchangeError::Unsupported {
                            offset: self.out.len(),
                            path: self.path.render(),
                            what: item_name(f.item).into(),
                        })
                    }
                    10 | 11 => {
                        let v = (*(p as *const AtomicU8)).load(Ordering::SeqCst);
                        self.out.push(v);
                    }
                    12 | 13 => {
                        let v = (*(p as *const AtomicU64)).load(Ordering::SeqCst);
                        self.out.extend_from_slice(&v.to_le_bytes());
                    }
                    t => {
                        let n = item_size(t).unwrap_or(0);
                        self.out
                            .extend_from_slice(std::slice::from_raw_parts(p as *const u8, n));
                    }
                }
            }
            self.path.segs.pop();
        }
        let size = (self.out.len() - start) as u32;
        self.out[start..start + 4].copy_from_slice(&size.to_le_bytes());
        Ok(())
    }

    /// Enter `obj` (an object or array): cycle and sharing checks.
    fn enter(&mut self, obj: *mut u8) -> Result<(), ExchangeError> {
        let a = obj as usize;
        if self.on_path.contains(&a) {
            return Err(ExchangeError::Cycle {
                offset: self.out.len(),
                path: self.path.render(),
            });
        }
        if !self.seen.insert(a) {
            return Err(ExchangeError::Shared {
                offset: self.out.len(),
                path: self.path.render(),
            });
        }
        self.on_path.insert(a);
        Ok(())
    }

    /// Write a reference value (kind byte and payload).
    ///
    /// # Safety
    /// `r` is null or a live object.
    unsafe fn reference(&mut self, r: *mut u8, depth: usize) -> Result<(), ExchangeError> {
        if r.is_null() {
            self.out.push(REF_NULL);
            return Ok(());
        }
        // SAFETY: live object (contract).
        let cd = unsafe { &*class_of(r) };
        if std::ptr::eq(cd, self.rt.string_class) {
            // SAFETY: a live string.
            let b = unsafe { string_bytes(r) };
            self.check_size(5 + b.len())?;
            self.out.push(REF_STRING);
            self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            self.out.extend_from_slice(b);
            return Ok(());
        }
        self.enter(r)?;
        if cd.kind == kind::ARRAY {
            // SAFETY: a live array of this descriptor.
            unsafe { self.array(r, cd, depth + 1)? };
        } else {
            self.check_size(1)?;
            self.out.push(REF_OBJECT);
            // SAFETY: a live object of a class.
            unsafe { self.object(r, depth + 1)? };
        }
        self.on_path.remove(&(r as usize));
        Ok(())
    }

    /// # Safety
    /// `a` is a live array whose descriptor is `cd`.
    unsafe fn array(
        &mut self,
        a: *mut u8,
        cd: &ClassDesc,
        depth: usize,
    ) -> Result<(), ExchangeError> {
        if depth > self.limits.max_depth {
            return Err(ExchangeError::TooDeep {
                offset: self.out.len(),
                path: self.path.render(),
                limit: self.limits.max_depth,
            });
        }
        let et = cd.elem_item_type as u8;
        if et == 8 || et == 9 {
            return Err(ExchangeError::Unsupported {
                offset: self.out.len(),
                path: self.path.render(),
                what: format!("{}[]", item_name(et)),
            });
        }
        // SAFETY: a live array.
        let len = unsafe { array_len(a) };
        let es = cd.elem_size as usize;
        self.check_size(6)?;
        self.out.push(REF_ARRAY);
        self.out.push(et);
        self.out.extend_from_slice(&len.to_le_bytes());
        // SAFETY: `len` elements of `es` bytes follow the array header.
        let data = unsafe { a.add(ARRAY_DATA_OFFSET) };
        if et == 0 {
            for i in 0..len {
                self.path.segs.push(Seg::Index(i));
                self.check_size(1)?;
                // SAFETY: element `i < len` holds a reference.
                unsafe {
                    let r = std::ptr::read_unaligned(data.add(i as usize * 8) as *const *mut u8);
                    self.reference(r, depth)?;
                }
                self.path.segs.pop();
            }
        } else {
            let n = len as usize * es;
            self.check_size(n)?;
            // SAFETY: the element bytes of the live array.
            self.out
                .extend_from_slice(unsafe { std::slice::from_raw_parts(data, n) });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- import

/// Rebuild an encoding made by [`export`] (or any encoding following
/// `docs/exchange.md`) as a new object of `class`, with the default
/// [`Limits`]. Encoded fields are matched to `class`'s instance fields
/// (inherited ones included) by id and must have the target's type; an
/// encoded field the class does not have is an error; a field of the class
/// the encoding does not mention keeps its zero/null value. Constructors are
/// not run. Nested objects are built as the field's declared class, arrays
/// as the declared array type.
///
/// The returned object is not rooted: the caller roots it before its next
/// allocation.
///
/// # Safety
/// `class` is a live descriptor of `rt`; `ctx` is the calling thread's
/// context, attached to `rt` (`heap::gc::attach`) and at a safepoint: every
/// reference the thread still needs is in a frame slot, a static or
/// `ctx.roots` (any allocation here may collect).
pub unsafe fn import(
    rt: &Runtime,
    ctx: &mut ThreadCtx,
    class: *const ClassDesc,
    bytes: &[u8],
) -> Result<*mut u8, ExchangeError> {
    // SAFETY: the caller's contract.
    unsafe { import_with(rt, ctx, class, bytes, &Limits::default()) }
}

/// [`import`] with explicit limits ([`Limits::max_bytes`] is not used).
///
/// # Safety
/// As for [`import`].
pub unsafe fn import_with(
    rt: &Runtime,
    ctx: &mut ThreadCtx,
    class: *const ClassDesc,
    bytes: &[u8],
    limits: &Limits,
) -> Result<*mut u8, ExchangeError> {
    // SAFETY: a live descriptor (contract).
    let cd = unsafe { &*class };
    let name = cd.name();
    let id = match rt.program.class(name) {
        Some(id)
            if cd.kind == kind::CLASS
                && cd.flags & 1 == 0
                && !std::ptr::eq(cd, rt.string_class) =>
        {
            id
        }
        _ => {
            return Err(ExchangeError::NotAnObject {
                what: format!("class {name} is not an instantiable class"),
            })
        }
    };
    let base = ctx.roots.len();
    let mut r = Reader {
        rt,
        ctx,
        bytes,
        pos: 0,
        limits: *limits,
        path: Path {
            root: name,
            segs: Vec::new(),
        },
        fields: HashMap::new(),
    };
    let res = r.object(id, 1).and_then(|obj| {
        if r.pos != bytes.len() {
            Err(ExchangeError::TrailingBytes {
                offset: r.pos,
                count: bytes.len() - r.pos,
            })
        } else {
            Ok(obj)
        }
    });
    r.ctx.roots.truncate(base);
    res
}

struct Reader<'a, 'b> {
    rt: &'a Runtime,
    ctx: &'b mut ThreadCtx,
    bytes: &'b [u8],
    pos: usize,
    limits: Limits,
    path: Path<'a>,
    fields: HashMap<ClassId, std::rc::Rc<Vec<FieldInfo<'a>>>>,
}

impl<'a, 'b> Reader<'a, 'b> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn need(&self, n: u64) -> Result<(), ExchangeError> {
        if n > self.left() as u64 {
            return Err(ExchangeError::Truncated {
                offset: self.pos,
                path: self.path.render(),
                need: n,
                have: self.left(),
            });
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], ExchangeError> {
        self.need(n as u64)?;
        let bytes: &'b [u8] = self.bytes;
        let s = &bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ExchangeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ExchangeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn malformed(&self, offset: usize, what: impl Into<String>) -> ExchangeError {
        ExchangeError::Malformed {
            offset,
            path: self.path.render(),
            what: what.into(),
        }
    }

    fn too_deep(&self, depth: usize) -> Result<(), ExchangeError> {
        if depth > self.limits.max_depth {
            return Err(ExchangeError::TooDeep {
                offset: self.pos,
                path: self.path.render(),
                limit: self.limits.max_depth,
            });
        }
        Ok(())
    }

    fn alloc_err(&self, offset: usize, f: crate::vm::fault::Fault) -> ExchangeError {
        ExchangeError::Alloc {
            offset,
            path: self.path.render(),
            message: f.message,
        }
    }

    fn fields(&mut self, id: ClassId) -> Result<std::rc::Rc<Vec<FieldInfo<'a>>>, ExchangeError> {
        if let Some(f) = self.fields.get(&id) {
            return Ok(f.clone());
        }
        let fs = fields_of(self.rt, id);
        for (i, a) in fs.iter().enumerate() {
            if let Some(b) = fs[..i].iter().find(|b| b.id == a.id) {
                return Err(ExchangeError::AmbiguousField {
                    class: self.rt.program.def(id).name.clone(),
                    names: (b.name.to_string(), a.name.to_string()),
                });
            }
        }
        let rc = std::rc::Rc::new(fs);
        self.fields.insert(id, rc.clone());
        Ok(rc)
    }

    /// Read an object record into a new instance of class `id`.
    fn object(&mut self, id: ClassId, depth: usize) -> Result<*mut u8, ExchangeError> {
        self.too_deep(depth)?;
        let start = self.pos;
        let size = self.u32()? as usize;
        if size < OBJECT_HEADER {
            return Err(self.malformed(
                start,
                format!("object size {size} is below the header size 8"),
            ));
        }
        self.pos = start;
        self.need(size as u64)?;
        self.pos = start + 4;
        let end = start + size;
        let count = self.u32()? as usize;
        if count as u64 * FIELD_HEADER as u64 > (size - OBJECT_HEADER) as u64 {
            return Err(self.malformed(
                start + 4,
                format!("{count} fields cannot fit in an object of {size} bytes"),
            ));
        }
        let fields = self.fields(id)?;
        let desc = self.rt.tables.class(id);
        // SAFETY: `desc` is the live descriptor of an instantiable class
        // (checked by the caller); the thread is at a safepoint (contract).
        let obj = unsafe { self.rt.alloc_object(desc) }.map_err(|f| self.alloc_err(start, f))?;
        self.ctx.roots.push(obj);
        let mut seen = vec![false; fields.len()];
        for _ in 0..count {
            let fstart = self.pos;
            if fstart + FIELD_HEADER > end {
                return Err(self.malformed(fstart, "field header runs past the object's size"));
            }
            let h = self.take(FIELD_HEADER)?;
            let fid = [h[0], h[1], h[2], h[3], h[4], h[5], h[6]];
            let tf = h[7];
            let Some(fi) = fields.iter().position(|f| f.id == fid) else {
                self.path.segs.push(Seg::Id(fid));
                let e = ExchangeError::UnknownField {
                    offset: fstart,
                    path: self.path.render(),
                    class: self.rt.program.def(id).name.clone(),
                };
                return Err(e);
            };
            let f = &fields[fi];
            self.path.segs.push(Seg::Field(f.name));
            if seen[fi] {
                return Err(ExchangeError::DuplicateField {
                    offset: fstart,
                    path: self.path.render(),
                });
            }
            seen[fi] = true;
            if tf & 0x80 != 0 {
                return Err(self.malformed(
                    fstart + 7,
                    format!("type/flags byte {tf:#04x} has bit 7 set"),
                ));
            }
            let t = tf & 0x0F;
            if t > ITEM_I32 {
                return Err(self.malformed(fstart + 7, format!("unknown item type {t}")));
            }
            if t != f.item {
                return Err(ExchangeError::TypeMismatch {
                    offset: fstart + 7,
                    path: self.path.render(),
                    expected: sig_name(f.ty),
                    found: item_name(t).into(),
                });
            }
            if t == 8 || t == 9 {
                return Err(ExchangeError::Unsupported {
                    offset: fstart,
                    path: self.path.render(),
                    what: item_name(t).into(),
                });
            }
            // SAFETY: `obj` is a live, rooted instance of class `id`, which
            // has this field at `f.offset` with item type `t`.
            let p = unsafe { obj.add(f.offset) };
            if t == 0 {
                let v = self.reference(f.ty, depth)?;
                // SAFETY: as above; a reference slot.
                unsafe { std::ptr::write_unaligned(p as *mut *mut u8, v) };
            } else {
                let n = item_size(t).unwrap_or(0);
                let at = self.pos;
                let d = self.take(n)?;
                let mut buf = [0u8; 8];
                buf[..n].copy_from_slice(d);
                check_prim(t, &buf).map_err(|w| self.malformed(at, w))?;
                // SAFETY: as above; `n` is the field's size (atomics are
                // stored with SeqCst like `stfld` on them).
                unsafe {
                    match t {
                        10 | 11 => (*(p as *const AtomicU8)).store(buf[0], Ordering::SeqCst),
                        12 | 13 => (*(p as *const AtomicU64))
                            .store(u64::from_le_bytes(buf), Ordering::SeqCst),
                        _ => std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n),
                    }
                }
            }
            if self.pos > end {
                return Err(self.malformed(fstart, "field data runs past the object's size"));
            }
            self.path.segs.pop();
        }
        if self.pos != end {
            return Err(self.malformed(
                start,
                format!(
                    "object size {size} but its fields end after {} bytes",
                    self.pos - start
                ),
            ));
        }
        Ok(obj)
    }

    /// Read a reference value for a slot of declared type `ty`.
    fn reference(&mut self, ty: &'a TypeSig, depth: usize) -> Result<*mut u8, ExchangeError> {
        let at = self.pos;
        let k = self.u8()?;
        let no_class = |me: &Self| ExchangeError::NoClass {
            offset: at,
            path: me.path.render(),
            declared: sig_name(ty),
        };
        let mismatch = |me: &Self, found: &str| ExchangeError::TypeMismatch {
            offset: at,
            path: me.path.render(),
            expected: sig_name(ty),
            found: found.into(),
        };
        match k {
            REF_NULL => Ok(std::ptr::null_mut()),
            REF_STRING => {
                if !matches!(ty, TypeSig::Class(c) if c == crate::library::STRING || c == "Object")
                {
                    return Err(mismatch(self, "string"));
                }
                let len = self.u32()? as usize;
                self.need(len as u64)?;
                let b = &self.bytes[self.pos..self.pos + len];
                let s = self.rt.new_string(b).map_err(|f| self.alloc_err(at, f))?;
                self.pos += len;
                self.ctx.roots.push(s);
                Ok(s)
            }
            REF_OBJECT => {
                let TypeSig::Class(c) = ty else {
                    return Err(mismatch(self, "object"));
                };
                if c == crate::library::STRING {
                    return Err(mismatch(self, "object"));
                }
                let Some(id) = self.rt.program.class(c) else {
                    return Err(no_class(self));
                };
                let desc = self.rt.tables.class(id);
                // SAFETY: a live descriptor.
                let (dk, df) = unsafe { ((*desc).kind, (*desc).flags) };
                if dk != kind::CLASS || df & 1 != 0 || c == "Object" {
                    return Err(no_class(self));
                }
                self.object(id, depth + 1)
            }
            REF_ARRAY => {
                self.too_deep(depth + 1)?;
                let et_at = self.pos;
                let et = self.u8()?;
                if et > ITEM_I32 || (10..=13).contains(&et) {
                    return Err(self.malformed(et_at, format!("bad array element type {et}")));
                }
                if et == 8 || et == 9 {
                    return Err(ExchangeError::Unsupported {
                        offset: et_at,
                        path: self.path.render(),
                        what: format!("{}[]", item_name(et)),
                    });
                }
                let elem: std::borrow::Cow<'a, TypeSig> = match ty {
                    TypeSig::Array(e) => {
                        if item_type(e) != et || matches!(**e, TypeSig::Atomic(_)) {
                            return Err(mismatch(self, &format!("{}[]", item_name(et))));
                        }
                        std::borrow::Cow::Borrowed(&**e)
                    }
                    TypeSig::Class(c) if c == "Object" => match prim_of_item(et) {
                        Some(p) => std::borrow::Cow::Owned(TypeSig::Prim(p)),
                        None => return Err(no_class(self)),
                    },
                    _ => return Err(mismatch(self, &format!("{}[]", item_name(et)))),
                };
                let len = self.u32()? as usize;
                let es = if et == 0 {
                    1
                } else {
                    item_size(et).unwrap_or(1)
                };
                // Every element needs at least `es` bytes: check before allocating.
                self.need(len as u64 * es as u64)?;
                let arr_ty = TypeSig::Array(Box::new(elem.clone().into_owned()));
                let ac = self.rt.tables.array_class(&self.rt.program, &arr_ty);
                if ac.is_null() {
                    return Err(no_class(self));
                }
                // SAFETY: `ac` is a live array descriptor; at a safepoint.
                let a = unsafe { self.rt.alloc_array(ac, len as i64) }
                    .map_err(|f| self.alloc_err(at, f))?;
                self.ctx.roots.push(a);
                // SAFETY: element storage of the new array.
                let data = unsafe { a.add(ARRAY_DATA_OFFSET) };
                if et == 0 {
                    // The element type is only borrowed from the metadata
                    // when it came from a declared array type.
                    let elem_ty: &'a TypeSig = match elem {
                        std::borrow::Cow::Borrowed(e) => e,
                        std::borrow::Cow::Owned(_) => return Err(no_class(self)),
                    };
                    for i in 0..len {
                        self.path.segs.push(Seg::Index(i as u32));
                        let v = self.reference(elem_ty, depth + 1)?;
                        // SAFETY: element `i < len` of the live, rooted array.
                        unsafe { std::ptr::write_unaligned(data.add(i * 8) as *mut *mut u8, v) };
                        self.path.segs.pop();
                    }
                } else {
                    let n = len * es;
                    let at = self.pos;
                    let d = self.take(n)?;
                    for (i, c) in d.chunks_exact(es).enumerate() {
                        let mut buf = [0u8; 8];
                        buf[..es].copy_from_slice(c);
                        if let Err(w) = check_prim(et, &buf) {
                            self.path.segs.push(Seg::Index(i as u32));
                            let e = self.malformed(at + i * es, w);
                            return Err(e);
                        }
                    }
                    // SAFETY: `n` bytes of element storage of the new array.
                    unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), data, n) };
                }
                Ok(a)
            }
            k => Err(self.malformed(at, format!("bad reference kind {k}"))),
        }
    }
}

/// Validate primitive data of item type `t` (little-endian in `b`).
fn check_prim(t: u8, b: &[u8; 8]) -> Result<(), String> {
    match t {
        1 | 10 if b[0] > 1 => Err(format!("bool byte {} is not 0 or 1", b[0])),
        2 => {
            let c = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if char::from_u32(c).is_none() {
                Err(format!("char {c:#x} is not a Unicode scalar value"))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}
