//! The managed heap: object layouts and the allocator.
//!
//! Every managed object starts with an [`ObjHeader`] `{class, tags}`; the
//! class pointer refers to the object's [`ClassDesc`] in the runtime tables.
//! - plain objects: header, then instance fields at their `FieldHandle`
//!   offsets (natural alignment), total size `ClassDesc::instance_size`;
//! - strings ([`StrHeader`]): header, `hash_code: u32` (FNV-1a of the bytes,
//!   computed at creation), `len: u32` (bytes), then the UTF-8 bytes;
//! - arrays ([`ArrHeader`]): header, `length: u32`, padding, then the elements
//!   at [`ARRAY_DATA_OFFSET`], each `ClassDesc::elem_size` bytes (bool/u8 1,
//!   char/i32/f32 4, everything else 8).
//!
//! Allocation goes through exactly three entry points, [`Heap::new_object`],
//! [`Heap::new_string`] and [`Heap::new_array`]; nothing else creates managed
//! objects, so the collector (a later issue) only has to replace what is
//! behind them. The current allocator is non-moving: it bump-allocates
//! zeroed memory in 1 MiB chunks under a mutex (objects larger than a quarter
//! chunk get their own block) and frees everything when the heap is dropped.
//!
//! Invariants: every returned object is zeroed except its header (and a
//! string's length, hash and bytes), 8-byte aligned, and stays at its address
//! until the heap is dropped. `used()` never exceeds `max` except for
//! allocations made with `unlimited = true` (the runtime's own exception
//! objects, so that raising `OutOfMemoryException` cannot itself fail).

use crate::runtime::tables::ClassDesc;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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
/// Offset of a string's `len`.
pub const STRING_LEN_OFFSET: usize = std::mem::offset_of!(StrHeader, len);
/// Offset of a string's `hash_code`.
pub const STRING_HASH_OFFSET: usize = std::mem::offset_of!(StrHeader, hash_code);
/// Offset of an array's `length`.
pub const ARRAY_LEN_OFFSET: usize = std::mem::offset_of!(ArrHeader, length);

const CHUNK_SIZE: usize = 1 << 20;
const LARGE: usize = CHUNK_SIZE / 4;

/// Why an allocation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// The allocation would exceed the heap limit.
    LimitExceeded {
        /// Bytes requested.
        requested: u64,
        /// The limit.
        max: usize,
    },
    /// The operating system refused the memory.
    SystemOutOfMemory {
        /// Bytes requested.
        requested: u64,
    },
    /// An array length below zero.
    NegativeLength(i64),
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapError::LimitExceeded { requested, max } => {
                write!(
                    f,
                    "allocation of {requested} bytes exceeds the heap limit of {max} bytes"
                )
            }
            HeapError::SystemOutOfMemory { requested } => {
                write!(f, "the system could not provide {requested} bytes")
            }
            HeapError::NegativeLength(n) => write!(f, "negative array length {n}"),
        }
    }
}

struct Inner {
    blocks: Vec<(*mut u8, Layout)>,
    cur: usize,
    end: usize,
}

/// The managed heap (see the module docs).
pub struct Heap {
    max: usize,
    used: AtomicUsize,
    inner: Mutex<Inner>,
}

// SAFETY: the raw block pointers are only touched under the mutex, and the
// memory they own is not tied to any thread.
unsafe impl Send for Heap {}
// SAFETY: as above; `used` is atomic.
unsafe impl Sync for Heap {}

impl Heap {
    /// A heap that refuses to grow beyond `max` bytes of objects.
    pub fn new(max: usize) -> Heap {
        Heap {
            max,
            used: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                blocks: Vec::new(),
                cur: 0,
                end: 0,
            }),
        }
    }

    /// Bytes handed out so far.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Allocate `size` zeroed bytes, 8-byte aligned.
    fn alloc(&self, size: u64, unlimited: bool) -> Result<*mut u8, HeapError> {
        let rounded = size.checked_add(7).map(|s| s & !7).unwrap_or(u64::MAX);
        let limit_err = HeapError::LimitExceeded {
            requested: size,
            max: self.max,
        };
        let n = usize::try_from(rounded).map_err(|_| limit_err.clone())?;
        if !unlimited {
            let mut cur = self.used.load(Ordering::Relaxed);
            loop {
                let next = cur.checked_add(n).ok_or_else(|| limit_err.clone())?;
                if next > self.max {
                    return Err(limit_err);
                }
                match self.used.compare_exchange_weak(
                    cur,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(v) => cur = v,
                }
            }
        } else {
            self.used.fetch_add(n, Ordering::Relaxed);
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if n >= LARGE {
            let layout = Layout::from_size_align(n, 8)
                .map_err(|_| HeapError::SystemOutOfMemory { requested: size })?;
            // SAFETY: `layout` has non-zero size (n >= LARGE > 0).
            let p = unsafe { alloc_zeroed(layout) };
            if p.is_null() {
                self.used.fetch_sub(n, Ordering::Relaxed);
                return Err(HeapError::SystemOutOfMemory { requested: size });
            }
            g.blocks.push((p, layout));
            return Ok(p);
        }
        if g.end - g.cur < n.max(8) {
            let layout = Layout::from_size_align(CHUNK_SIZE, 8).expect("constant layout");
            // SAFETY: non-zero constant size.
            let p = unsafe { alloc_zeroed(layout) };
            if p.is_null() {
                self.used.fetch_sub(n, Ordering::Relaxed);
                return Err(HeapError::SystemOutOfMemory { requested: size });
            }
            g.blocks.push((p, layout));
            g.cur = p as usize;
            g.end = p as usize + CHUNK_SIZE;
        }
        let p = g.cur as *mut u8;
        g.cur += n.max(8);
        Ok(p)
    }

    /// Allocate a plain object of `class` (all fields zero).
    ///
    /// # Safety
    /// `class` must point to a live class descriptor of a class (not an
    /// array or string class).
    pub unsafe fn new_object(
        &self,
        class: *const ClassDesc,
        unlimited: bool,
    ) -> Result<*mut u8, HeapError> {
        // SAFETY: caller guarantees `class` is live.
        let size = unsafe { (*class).instance_size } as u64;
        let p = self.alloc(size.max(HEADER_SIZE as u64), unlimited)?;
        // SAFETY: `p` is a fresh, aligned block of at least HEADER_SIZE bytes.
        unsafe { (*(p as *mut ObjHeader)).class = class };
        Ok(p)
    }

    /// Allocate a string holding `bytes` (must be UTF-8; not checked here).
    ///
    /// # Safety
    /// `class` must point to the live `String` class descriptor.
    pub unsafe fn new_string(
        &self,
        class: *const ClassDesc,
        bytes: &[u8],
        unlimited: bool,
    ) -> Result<*mut u8, HeapError> {
        let len = u32::try_from(bytes.len()).map_err(|_| HeapError::LimitExceeded {
            requested: bytes.len() as u64,
            max: self.max,
        })?;
        let p = self.alloc(STRING_DATA_OFFSET as u64 + len as u64, unlimited)?;
        // SAFETY: the block holds the header plus `len` bytes; regions don't overlap.
        unsafe {
            let h = p as *mut StrHeader;
            (*h).header.class = class;
            (*h).hash_code = fnv1a(bytes);
            (*h).len = len;
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(STRING_DATA_OFFSET), bytes.len());
        }
        Ok(p)
    }

    /// Allocate an array of `len` zeroed elements of the array class `class`.
    ///
    /// # Safety
    /// `class` must point to a live array class descriptor.
    pub unsafe fn new_array(
        &self,
        class: *const ClassDesc,
        len: i64,
        unlimited: bool,
    ) -> Result<*mut u8, HeapError> {
        if len < 0 {
            return Err(HeapError::NegativeLength(len));
        }
        // SAFETY: caller guarantees `class` is live.
        let esize = unsafe { (*class).elem_size } as u64;
        let bytes = (len as u64)
            .checked_mul(esize)
            .and_then(|b| b.checked_add(ARRAY_DATA_OFFSET as u64))
            .unwrap_or(u64::MAX);
        if len > u32::MAX as i64 {
            return Err(HeapError::LimitExceeded {
                requested: bytes,
                max: self.max,
            });
        }
        let p = self.alloc(bytes, unlimited)?;
        // SAFETY: fresh block of at least ARRAY_DATA_OFFSET bytes.
        unsafe {
            let h = p as *mut ArrHeader;
            (*h).header.class = class;
            (*h).length = len as u32;
        }
        Ok(p)
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        for &(p, layout) in &g.blocks {
            // SAFETY: each block was allocated with exactly this layout and is freed once.
            unsafe { dealloc(p, layout) };
        }
        g.blocks.clear();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_offsets() {
        assert_eq!(HEADER_SIZE, 16);
        assert_eq!(OBJ_CLASS_OFFSET, 0);
        assert_eq!(STRING_HASH_OFFSET, 16);
        assert_eq!(STRING_LEN_OFFSET, 20);
        assert_eq!(STRING_DATA_OFFSET, 24);
        assert_eq!(ARRAY_LEN_OFFSET, 16);
        assert_eq!(ARRAY_DATA_OFFSET, 24);
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a(b""), 0x811c9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn limit_and_zeroing() {
        let h = Heap::new(4096);
        let cd = Box::new(ClassDesc::blank());
        let mut cdp = cd;
        cdp.elem_size = 8;
        let cp: *const ClassDesc = &*cdp;
        // SAFETY: cp is a live descriptor for the test's duration.
        unsafe {
            let a = h.new_array(cp, 10, false).unwrap();
            assert_eq!(array_len(a), 10);
            let data = std::slice::from_raw_parts(a.add(ARRAY_DATA_OFFSET), 80);
            assert!(data.iter().all(|&b| b == 0));
            assert!(matches!(
                h.new_array(cp, 1 << 30, false),
                Err(HeapError::LimitExceeded { .. })
            ));
            assert!(matches!(
                h.new_array(cp, -1, false),
                Err(HeapError::NegativeLength(-1))
            ));
            assert!(matches!(
                h.new_array(cp, i64::MAX, false),
                Err(HeapError::LimitExceeded { .. })
            ));
            let s = h.new_string(cp, "héllo".as_bytes(), false).unwrap();
            assert_eq!(string_bytes(s), "héllo".as_bytes());
            assert_eq!(
                (*(s as *const StrHeader)).hash_code,
                fnv1a("héllo".as_bytes())
            );
            // a large block and many small ones
            let h2 = Heap::new(64 << 20);
            let big = h2.new_array(cp, 100_000, false).unwrap();
            assert_eq!(array_len(big), 100_000);
            for _ in 0..10_000 {
                h2.new_string(cp, b"xyz", false).unwrap();
            }
        }
    }
}
