//! The binary library format `.klib`: [`write`](fn@write), [`read`] and [`inspect`].
//!
//! A `.klib` file is a fixed 36-byte header followed by three sections in a
//! fixed order: the string heap, the metadata tables and the code section.
//! `docs/format.md` is the normative grammar; this is a summary.
//!
//! ```text
//! file    := header strheap meta code          (nothing after code)
//! header  := "KLIB" major:u16 minor:u16 flags:u32
//!            heap_off:u32 heap_len:u32 meta_off:u32 meta_len:u32
//!            code_off:u32 code_len:u32
//! ```
//!
//! All integers are little endian and fixed width. Every name or string
//! constant is a `u32` index into the string heap.
//!
//! Invariants:
//! - [`write`](fn@write) is deterministic: the same [`Library`] always gives the same
//!   bytes (no hash-map iteration order reaches the output).
//! - The encoding is canonical: every [`Library`] that satisfies the
//!   structural rules below has exactly one encoding, and the reader rejects
//!   any other byte sequence. So `read(b) == Ok(l)` implies `write(&l) == b`,
//!   and `read(&write(l)) == Ok(l)` for every structurally valid `l`.
//! - [`read`] never panics, never reads out of bounds, never recurses without
//!   a bound and never allocates from a count it has not first bounded by the
//!   bytes that remain; every failure is a [`FormatError`] carrying the byte
//!   offset (from the start of the file) where the problem was found.
//!
//! Structural rules a library must satisfy to round-trip (the assembler's
//! output always does; [`read`] rejects files that break them):
//! - at most [`MAX_SIG_DEPTH`] nested array levels in any [`TypeSig`];
//! - every method body's code decodes into whole instructions
//!   ([`crate::bytecode::decode_all`]) whose `Str`, `Method`, `Field` and
//!   `Type` operands index this library's `strings`, `member_refs` and
//!   `type_refs`;
//! - handler ranges have `start <= end`, lie inside the code and start and end
//!   on instruction boundaries (an end may equal the code length); a catch
//!   clause's type index is in range of `type_refs`;
//! - line entries are sorted by offset (non-decreasing), each offset the
//!   start of an instruction;
//! - a field that is `private mutable(self)` is stored with the field flags of
//!   kasm.md, in which it means `private mutable`, and reads back as
//!   [`Mutability::Mutable`](crate::library::Mutability::Mutable);
//! - no string and no table is longer than `u32::MAX` (else [`write`](fn@write) panics).
//!
//! Size cap: [`read`] refuses any input longer than [`MAX_LIBRARY_SIZE`]
//! ([`FormatError::TooLarge`]) before parsing anything, and [`read_file`]
//! refuses a file longer than that before reading it into memory (it checks
//! the file's length first and never reads more than the cap plus one byte,
//! so a pipe or a device that claims length 0 cannot make it allocate more).
//! The load paths of the host API (`Source`) and of `kiln run` read library
//! files, `.klib` or kasm text, through [`read_file`].
//!
//! Semantic checks (names resolve, types match, branch targets, access rules)
//! belong to the verifier, which reports them with source lines.
//!
//! [`TypeSig`]: crate::library::TypeSig

mod inspect;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use crate::bytecode::DecodeError;
use crate::library::Library;
use std::fmt;

/// The four magic bytes every `.klib` file starts with.
pub const MAGIC: [u8; 4] = *b"KLIB";
/// Format major version written and read by this build. A file with another
/// major version is rejected.
pub const VERSION_MAJOR: u16 = 2;
/// Format minor version written by this build. Files with a minor version up
/// to this one are read; newer minors are rejected.
pub const VERSION_MINOR: u16 = 0;
/// Size of the fixed header in bytes; the string heap starts right after it.
pub const HEADER_SIZE: usize = 36;
/// Maximum number of nested array levels (`T[][]...`) in a type signature.
pub const MAX_SIG_DEPTH: usize = 64;
/// The largest library this build reads: 256 MiB, for a `.klib` byte buffer
/// or a library file (`.klib` or kasm text). Loading is linear in the input,
/// but with a constant of several bytes of tables (and, for kasm text, of
/// assembler state) per input byte, and a verified library is then laid out
/// again in native memory; the cap keeps one hostile file from taking
/// gigabytes before anything has been checked. Real libraries are far
/// smaller (std is about 20 KB; the 1,000,000-target `switch` of
/// `tests/hardening.rs` is 4 MB).
pub const MAX_LIBRARY_SIZE: usize = 256 << 20;
/// Marker for "no string" in an optional string reference, and for "no body"
/// in a method's body offset.
pub const NONE: u32 = u32::MAX;

/// Byte offsets of the header fields (for tools and for tests that patch files).
pub mod header {
    /// `"KLIB"`.
    pub const MAGIC: usize = 0;
    /// `major: u16`.
    pub const MAJOR: usize = 4;
    /// `minor: u16`.
    pub const MINOR: usize = 6;
    /// `flags: u32` (reserved, must be zero).
    pub const FLAGS: usize = 8;
    /// `heap_off: u32` (must equal [`super::HEADER_SIZE`]).
    pub const HEAP_OFF: usize = 12;
    /// `heap_len: u32`.
    pub const HEAP_LEN: usize = 16;
    /// `meta_off: u32` (must equal `heap_off + heap_len`).
    pub const META_OFF: usize = 20;
    /// `meta_len: u32`.
    pub const META_LEN: usize = 24;
    /// `code_off: u32` (must equal `meta_off + meta_len`).
    pub const CODE_OFF: usize = 28;
    /// `code_len: u32` (`code_off + code_len` must equal the file length).
    pub const CODE_LEN: usize = 32;
}

/// Why a byte sequence is not a valid `.klib` file. Every variant carries the
/// byte offset, from the start of the file, at which the problem was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// The input is longer than [`MAX_LIBRARY_SIZE`]; nothing was parsed.
    /// The offset is the first byte past the limit.
    TooLarge {
        /// Byte offset where the problem was found ([`MAX_LIBRARY_SIZE`]).
        offset: usize,
        /// The input's size in bytes (for a file: at least this many).
        size: u64,
        /// The limit, [`MAX_LIBRARY_SIZE`].
        limit: usize,
    },
    /// The file does not start with `"KLIB"`.
    BadMagic {
        /// Byte offset where the problem was found.
        offset: usize,
        /// What was found.
        found: Vec<u8>,
    },
    /// The header's version is not one this reader understands.
    UnsupportedVersion {
        /// Byte offset where the problem was found.
        offset: usize,
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The data ends (file or section) before an item is complete.
    Truncated {
        /// Byte offset where the problem was found.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A section's offset or length in the header is inconsistent.
    BadSection {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The section.
        section: &'static str,
        /// The value found.
        value: u32,
        /// The value expected.
        expected: u64,
    },
    /// A count claims more elements than the remaining bytes can hold.
    CountTooLarge {
        /// Byte offset where the problem was found.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// The count found.
        count: u32,
        /// The largest possible count.
        max: usize,
    },
    /// An index points outside its table.
    IndexOutOfRange {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The table.
        table: &'static str,
        /// The index.
        index: u32,
        /// The table length.
        len: usize,
    },
    /// A string heap entry is not valid UTF-8.
    InvalidUtf8 {
        /// Byte offset where the problem was found.
        offset: usize,
    },
    /// A tag byte has no meaning here.
    BadTag {
        /// Byte offset where the problem was found.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// The tag byte.
        tag: u8,
    },
    /// A type signature nests arrays deeper than [`MAX_SIG_DEPTH`].
    SigTooDeep {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The nesting limit.
        limit: usize,
    },
    /// A flags field has bits set that mean nothing.
    FlagsOutOfRange {
        /// Byte offset where the problem was found.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// The value found.
        value: u32,
    },
    /// Bytes are left over at the end of a section.
    TrailingBytes {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The section.
        section: &'static str,
        /// The count found.
        count: usize,
    },
    /// The encoding is well formed but not the canonical one the writer
    /// produces (string heap order or duplicates, an empty body record).
    NonCanonical {
        /// Byte offset where the problem was found.
        offset: usize,
        /// What was being read.
        what: String,
    },
    /// A method's body offset is not where the next body record starts.
    BadBodyOffset {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The method.
        method: String,
        /// What was found.
        found: u32,
        /// The value expected.
        expected: u32,
    },
    /// A method's code does not decode into whole instructions.
    BadCode {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The method.
        method: String,
        /// The decoder error.
        error: DecodeError,
    },
    /// An instruction operand indexes outside its table.
    BadOperand {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The method.
        method: String,
        /// The table.
        table: &'static str,
        /// The index.
        index: u32,
        /// The table length.
        len: usize,
    },
    /// A protected-region clause lies outside the code or not on instruction boundaries.
    BadHandler {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The method.
        method: String,
        /// What is wrong.
        reason: String,
    },
    /// A line table entry is out of order or not at an instruction start.
    BadLineTable {
        /// Byte offset where the problem was found.
        offset: usize,
        /// The method.
        method: String,
        /// What is wrong.
        reason: String,
    },
}

impl FormatError {
    /// Byte offset from the start of the file at which the problem was found.
    pub fn offset(&self) -> usize {
        match self {
            FormatError::TooLarge { offset, .. }
            | FormatError::BadMagic { offset, .. }
            | FormatError::UnsupportedVersion { offset, .. }
            | FormatError::Truncated { offset, .. }
            | FormatError::BadSection { offset, .. }
            | FormatError::CountTooLarge { offset, .. }
            | FormatError::IndexOutOfRange { offset, .. }
            | FormatError::InvalidUtf8 { offset }
            | FormatError::BadTag { offset, .. }
            | FormatError::SigTooDeep { offset, .. }
            | FormatError::FlagsOutOfRange { offset, .. }
            | FormatError::TrailingBytes { offset, .. }
            | FormatError::NonCanonical { offset, .. }
            | FormatError::BadBodyOffset { offset, .. }
            | FormatError::BadCode { offset, .. }
            | FormatError::BadOperand { offset, .. }
            | FormatError::BadHandler { offset, .. }
            | FormatError::BadLineTable { offset, .. } => *offset,
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {} (0x{:x}): ", self.offset(), self.offset())?;
        match self {
            FormatError::TooLarge { size, limit, .. } => write!(
                f,
                "library is {size} bytes, larger than the limit of {limit} bytes ({} MiB)",
                limit >> 20
            ),
            FormatError::BadMagic { found, .. } => {
                write!(f, "bad magic {found:02x?}, expected \"KLIB\" (not a .klib file)")
            }
            FormatError::UnsupportedVersion { major, minor, .. } => write!(
                f,
                "unsupported format version {major}.{minor} (this build reads {VERSION_MAJOR}.0 to {VERSION_MAJOR}.{VERSION_MINOR})"
            ),
            FormatError::Truncated { what, needed, available, .. } => write!(
                f,
                "truncated {what}: needs {needed} bytes, only {available} left"
            ),
            FormatError::BadSection { section, value, expected, .. } => {
                write!(f, "bad {section} in header: {value}, expected {expected}")
            }
            FormatError::CountTooLarge { what, count, max, .. } => write!(
                f,
                "{what} count {count} too large for the remaining bytes (at most {max})"
            ),
            FormatError::IndexOutOfRange { table, index, len, .. } => {
                write!(f, "{table} index {index} out of range (table has {len})")
            }
            FormatError::InvalidUtf8 { .. } => write!(f, "string heap entry is not valid UTF-8"),
            FormatError::BadTag { what, tag, .. } => write!(f, "invalid {what} tag 0x{tag:02x}"),
            FormatError::SigTooDeep { limit, .. } => {
                write!(f, "type signature nests arrays deeper than {limit}")
            }
            FormatError::FlagsOutOfRange { what, value, .. } => {
                write!(f, "{what} 0x{value:x} has undefined bits set")
            }
            FormatError::TrailingBytes { section, count, .. } => {
                write!(f, "{count} unexpected trailing bytes after the {section}")
            }
            FormatError::NonCanonical { what, .. } => write!(f, "non-canonical encoding: {what}"),
            FormatError::BadBodyOffset { method, found, expected, .. } => write!(
                f,
                "method {method}: body offset {found} where the next body record is at {expected}"
            ),
            FormatError::BadCode { method, error, .. } => {
                write!(f, "method {method}: bad code: {error}")
            }
            FormatError::BadOperand { method, table, index, len, .. } => write!(
                f,
                "method {method}: operand indexes {table} entry {index}, but the table has {len}"
            ),
            FormatError::BadHandler { method, reason, .. } => {
                write!(f, "method {method}: bad protected-region clause: {reason}")
            }
            FormatError::BadLineTable { method, reason, .. } => {
                write!(f, "method {method}: bad line table: {reason}")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Serialise `lib` to `.klib` bytes. Deterministic: equal libraries give equal bytes.
///
/// # Panics
/// If a string, a table or the whole file exceeds `u32::MAX` bytes or entries,
/// which the format cannot express.
pub fn write(lib: &Library) -> Vec<u8> {
    writer::write(lib)
}

/// Parse and validate `.klib` bytes. Never panics; see the module invariants.
/// Input longer than [`MAX_LIBRARY_SIZE`] is refused with
/// [`FormatError::TooLarge`] before anything is parsed.
pub fn read(bytes: &[u8]) -> Result<Library, FormatError> {
    if bytes.len() > MAX_LIBRARY_SIZE {
        return Err(too_large(bytes.len() as u64));
    }
    reader::read(bytes)
}

fn too_large(size: u64) -> FormatError {
    FormatError::TooLarge {
        offset: MAX_LIBRARY_SIZE,
        size,
        limit: MAX_LIBRARY_SIZE,
    }
}

/// Why [`read_file`] returned no bytes.
#[derive(Debug)]
pub enum ReadFileError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file is longer than [`MAX_LIBRARY_SIZE`]
    /// ([`FormatError::TooLarge`]).
    TooLarge(FormatError),
}

impl fmt::Display for ReadFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadFileError::Io(e) => write!(f, "cannot read: {e}"),
            ReadFileError::TooLarge(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadFileError {}

/// Reads a library file (`.klib` or kasm text) whole, refusing one longer
/// than [`MAX_LIBRARY_SIZE`]: a regular file's length is checked before
/// anything is read, and at most `MAX_LIBRARY_SIZE + 1` bytes are ever read
/// (for pipes, devices and files that grow while being read).
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ReadFileError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadFileError::Io)?;
    let len = file.metadata().map_err(ReadFileError::Io)?.len();
    if len > MAX_LIBRARY_SIZE as u64 {
        return Err(ReadFileError::TooLarge(too_large(len)));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_LIBRARY_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadFileError::Io)?;
    if bytes.len() > MAX_LIBRARY_SIZE {
        return Err(ReadFileError::TooLarge(too_large(bytes.len() as u64)));
    }
    Ok(bytes)
}

/// A human-readable dump of every metadata table of `lib` (what
/// `kiln inspect FILE` prints for a reflection-only load). Never panics, even
/// for a library with dangling indices.
pub fn inspect(lib: &Library) -> String {
    inspect::inspect(lib)
}

/// Codes shared by the writer and the reader (see `docs/format.md`).
mod codes {
    use crate::library::{Access, Prim};

    /// Sig tag for `void` (return position only).
    pub const SIG_VOID: u8 = 0x00;
    /// Sig tag for `atomic P`, followed by a prim code.
    pub const SIG_ATOMIC: u8 = 0x0f;
    /// Sig tag for a class, followed by a string reference.
    pub const SIG_CLASS: u8 = 0x10;
    /// Sig tag for an array, followed by the element sig.
    pub const SIG_ARRAY: u8 = 0x11;

    /// Attribute value tags.
    pub const ATTR_INT: u8 = 0;
    pub const ATTR_FLOAT: u8 = 1;
    pub const ATTR_STR: u8 = 2;
    pub const ATTR_BOOL: u8 = 3;
    pub const ATTR_CHAR: u8 = 4;

    /// Member reference kinds.
    pub const MEMBER_FIELD: u8 = 0;
    pub const MEMBER_METHOD: u8 = 1;

    /// Handler kinds.
    pub const HANDLER_CATCH: u8 = 0;
    pub const HANDLER_FINALLY: u8 = 1;

    /// Type flags.
    pub const TYPE_INTERFACE: u8 = 1;
    pub const TYPE_ABSTRACT: u8 = 2;
    pub const TYPE_SEALED: u8 = 4;
    pub const TYPE_ALL: u8 = 7;

    /// Field flags: bits 0-2 are kasm.md's field flags, bit 3 is `static`.
    pub const FIELD_STATIC: u8 = 8;
    pub const FIELD_ALL: u8 = 15;

    /// Method flags.
    pub const METHOD_STATIC: u8 = 1;
    pub const METHOD_VIRTUAL: u8 = 2;
    pub const METHOD_OVERRIDE: u8 = 4;
    pub const METHOD_ABSTRACT: u8 = 8;
    pub const METHOD_NATIVE: u8 = 16;
    pub const METHOD_ALL: u8 = 31;

    /// Primitive codes: the memory-layout note's item type ids, `i32` = 14.
    pub const fn prim_code(p: Prim) -> u8 {
        match p {
            Prim::Bool => 1,
            Prim::Char => 2,
            Prim::U8 => 3,
            Prim::I64 => 4,
            Prim::U64 => 5,
            Prim::F32 => 6,
            Prim::F64 => 7,
            Prim::Ptr => 8,
            Prim::MutPtr => 9,
            Prim::I32 => 14,
        }
    }

    /// Inverse of [`prim_code`].
    pub fn prim_from_code(c: u8) -> Option<Prim> {
        Prim::ALL.into_iter().find(|&p| prim_code(p) == c)
    }

    /// Access codes (types, methods, properties).
    pub const fn access_code(a: Access) -> u8 {
        match a {
            Access::Private => 0,
            Access::Public => 1,
            Access::Protected => 2,
        }
    }

    /// Inverse of [`access_code`].
    pub fn access_from_code(c: u8) -> Option<Access> {
        match c {
            0 => Some(Access::Private),
            1 => Some(Access::Public),
            2 => Some(Access::Protected),
            _ => None,
        }
    }
}
