//! Object layouts: the header every managed object starts with, strings
//! and arrays, the header tag bits, and the small-object size classes that
//! the allocator, the runtime and compiled code's inline allocation share.
//!
//! Invariants: an object's first word is its class descriptor pointer (null
//! only for a free cell); compiled code reads these layouts through the
//! `*_OFFSET` constants, never through hard-coded numbers.

use super::tables::ClassDesc;

/// Header of every managed object.
#[repr(C)]
#[derive(Debug)]
pub struct ObjHeader {
    /// The object's class descriptor (for arrays: the array class).
    pub class: *const ClassDesc,
    /// Reserved for the collector and monitors (mark bits, hash); zero now.
    pub tags: u64,
}

/// Layout of a string object; the UTF-8 bytes follow at [`STRING_DATA_OFFSET`].
#[repr(C)]
#[derive(Debug)]
pub struct StrHeader {
    /// Common header.
    pub header: ObjHeader,
    /// 32-bit FNV-1a hash of the bytes.
    pub hash_code: u32,
    /// Length in bytes.
    pub len: u32,
}

/// Layout of an array object; the elements follow at [`ARRAY_DATA_OFFSET`].
#[repr(C)]
#[derive(Debug)]
pub struct ArrHeader {
    /// Common header.
    pub header: ObjHeader,
    /// Number of elements.
    pub length: u32,
    /// Keeps the elements 8-byte aligned.
    pub pad: u32,
}

/// Size of [`ObjHeader`]; the first instance field is at this offset or later.
pub const HEADER_SIZE: usize = std::mem::size_of::<ObjHeader>();
/// Offset of a string's bytes.
pub const STRING_DATA_OFFSET: usize = std::mem::size_of::<StrHeader>();
/// Offset of an array's first element.
pub const ARRAY_DATA_OFFSET: usize = std::mem::size_of::<ArrHeader>();
/// Offset of the class pointer in an object.
pub const OBJ_CLASS_OFFSET: usize = std::mem::offset_of!(ObjHeader, class);
/// Offset of the `tags` word in an object (a free cell's next-cell link).
pub const OBJ_TAGS_OFFSET: usize = std::mem::offset_of!(ObjHeader, tags);
/// Offset of a string's `len`.
pub const STRING_LEN_OFFSET: usize = std::mem::offset_of!(StrHeader, len);
/// Offset of a string's `hash_code`.
pub const STRING_HASH_OFFSET: usize = std::mem::offset_of!(StrHeader, hash_code);
/// Offset of an array's `length`.
pub const ARRAY_LEN_OFFSET: usize = std::mem::offset_of!(ArrHeader, length);

/// Objects larger than this get their own mapping (large objects).
pub const LARGE_OBJECT: usize = 8 << 10;
/// Cell sizes of the small-object size classes (bytes, multiples of 8).
pub const SIZE_CLASSES: [usize; 23] = [
    16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024, 1536, 2048, 3072,
    4096, 6144, 8192,
];
/// Number of size classes.
pub const NCLASSES: usize = SIZE_CLASSES.len();

/// `tags` bit: reached by the current marking.
pub const TAG_MARK: u64 = 1;
/// `tags` bit: never freed (interned strings), never traced.
pub const TAG_PINNED: u64 = 2;

/// Size classes a thread keeps a private cache of free cells for
/// (`Heap::take_cells`, `ThreadCtx::alloc_cache`): the first
/// `CACHED_CLASSES`, cells of up to 256 bytes.
pub const CACHED_CLASSES: usize = 12;

/// The cached size class of a plain object of `instance_size` bytes, if its
/// cell is small enough to come from a thread's allocation cache.
pub fn cached_class_of_object(instance_size: usize) -> Option<usize> {
    class_of_size(instance_size.max(HEADER_SIZE)).filter(|&c| c < CACHED_CLASSES)
}

/// The size class of a small allocation of `n` bytes.
pub fn class_of_size(n: usize) -> Option<usize> {
    if n > LARGE_OBJECT {
        return None;
    }
    Some(SIZE_CLASSES.partition_point(|&c| c < n))
}

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The bytes of a string object.
///
/// # Safety
/// `s` must be a live, non-null string object; the slice must not outlive it.
pub unsafe fn string_bytes<'a>(s: *const u8) -> &'a [u8] {
    // SAFETY: caller guarantees a live string; its bytes follow the header.
    unsafe {
        let len = (*(s as *const StrHeader)).len as usize;
        std::slice::from_raw_parts(s.add(STRING_DATA_OFFSET), len)
    }
}

/// The class descriptor of a live object.
///
/// # Safety
/// `o` must be a live, non-null object.
pub unsafe fn class_of(o: *const u8) -> *const ClassDesc {
    // SAFETY: every object starts with an ObjHeader.
    unsafe { (*(o as *const ObjHeader)).class }
}

/// The length of a live array.
///
/// # Safety
/// `a` must be a live, non-null array.
pub unsafe fn array_len(a: *const u8) -> u32 {
    // SAFETY: caller guarantees an array.
    unsafe { (*(a as *const ArrHeader)).length }
}
