//! The managed heap: object layouts, the allocator and the collector's
//! mark/sweep primitives (the root-finding half is [`gc`]).
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
//! [`Heap::new_string`] and [`Heap::new_array`], plus [`Heap::take_cells`],
//! which hands a batch of free cells to one thread's allocation cache
//! (`ThreadCtx::alloc_cache`; the thread turns them into objects itself);
//! none of them collects (the runtime collects at safepoints, see [`gc`],
//! and then calls them). Cached cells look free (null class): every cache
//! is emptied before a sweep.
//!
//! Allocator: non-moving. Small objects (up to [`LARGE_OBJECT`] bytes) live in
//! 256 KiB chunks (`mmap`), each chunk holding equal cells of one of
//! [`SIZE_CLASSES`]; free cells (class pointer null, `tags` = next free cell)
//! form one free list per size class. Larger objects get their own mapping.
//! The sweep frees every allocated, unmarked, unpinned cell, rebuilds the
//! free lists in address order, keeps up to [`POOL_CHUNKS`] chunks without
//! live objects for reuse and unmaps the rest, and unmaps dead large
//! objects, so memory beyond the pool goes back to the system.
//!
//! Invariants: every returned object is zeroed except its header (and a
//! string's length, hash and bytes), 8-byte aligned, and stays at its address
//! until it is swept (objects never move). A free cell has a null class
//! pointer; an allocated one never does. `used()` is the bytes of allocated
//! cells and large mappings; it never exceeds `max` except through
//! allocations made with `unlimited = true` (the runtime's own exception
//! objects and interned strings, so raising `OutOfMemoryException` cannot
//! itself fail). Mark bits ([`TAG_MARK`]) are clear outside a collection.

pub mod gc;

use crate::vm::object::*;
use crate::vm::tables::ClassDesc;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Size of a small-object chunk (one size class per chunk).
pub const CHUNK_SIZE: usize = 256 << 10;
/// Minimum collection threshold (bytes allocated before the first collection).
pub const MIN_THRESHOLD: usize = 4 << 20;
/// After a collection the next one comes when the heap holds
/// `max(2 × live, live + ALLOC_BUDGET)` bytes (capped by the heap limit):
/// at least this much is allocated between collections, so a program with a
/// small live set and a high allocation rate (binary-trees) is not marked
/// again every few megabytes.
pub const ALLOC_BUDGET: usize = 16 << 20;
/// Chunks a sweep empties are kept, up to this many, and reused by
/// `add_chunk` before anything new is mapped: re-mapping costs a page
/// fault and a kernel page clear per 4 KiB, which for a program that frees
/// whole chunks every cycle cost more than the sweep itself. Their memory
/// stays resident (at most `POOL_CHUNKS × CHUNK_SIZE` = 16 MiB).
pub const POOL_CHUNKS: usize = 64;

/// Thread allocation caches ([`Heap::take_cells`]) stop at `max - (max >>
/// CACHE_RESERVE_SHIFT)` (7/8 of the heap limit); the last eighth is for
/// direct allocations: arrays, strings, large objects, and the one object a
/// thread allocates directly when its cache cannot be refilled even after a
/// collection. So cells other threads hold in their caches (at most one
/// batch of about 4 KiB per size class per thread, and never beyond 7/8 of
/// the limit) cannot make an allocation fail while the live data plus the
/// objects being allocated at that moment fit in the limit.
pub const CACHE_RESERVE_SHIFT: u32 = 3;

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

/// A memory mapping owned by the heap (a chunk or a large object).
struct Mapping {
    start: *mut u8,
    len: usize,
}

impl Mapping {
    /// Map `len` zeroed, read-write bytes (`len` is rounded up to pages).
    fn new(len: usize) -> Option<Mapping> {
        let len = len.checked_add(4095)? & !4095;
        // SAFETY: an anonymous private mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Mapping {
            start: p as *mut u8,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `Mapping::new` and is unmapped
        // once, when nothing in it is reachable any more (swept or heap dropped).
        unsafe { libc::munmap(self.start as *mut libc::c_void, self.len) };
    }
}

/// A chunk of equal-sized cells of one size class.
struct Chunk {
    map: Mapping,
    class: usize,
}

struct Inner {
    chunks: Vec<Chunk>,
    /// Empty chunks kept for reuse (at most [`POOL_CHUNKS`]); their cells
    /// hold garbage, `add_chunk` rewrites every header.
    pool: Vec<Mapping>,
    /// Free-list heads per size class (free cells: class null, `tags` = next).
    free: [*mut u8; NCLASSES],
    /// Large objects, each in its own mapping.
    large: Vec<Mapping>,
}

impl Inner {
    /// Take a pooled chunk, or map a fresh one, for size class `c` and
    /// thread its cells (class null = free) onto that class's free list in
    /// address order. `false` if the system refused the memory.
    fn add_chunk(&mut self, c: usize) -> bool {
        let Some(m) = self.pool.pop().or_else(|| Mapping::new(CHUNK_SIZE)) else {
            return false;
        };
        let cell = SIZE_CLASSES[c];
        let mut next = self.free[c];
        for i in (0..CHUNK_SIZE / cell).rev() {
            // SAFETY: cell i lies inside the mapping, which holds no object
            // (fresh, or a pooled chunk whose objects were all dead); a
            // pooled chunk's old cell boundaries may differ, so both header
            // words are written.
            unsafe {
                let p = m.start.add(i * cell);
                let h = p as *mut ObjHeader;
                (*h).class = std::ptr::null();
                (*h).tags = next as u64;
                next = p;
            }
        }
        self.free[c] = next;
        self.chunks.push(Chunk { map: m, class: c });
        true
    }
}

/// What a sweep found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Bytes of live objects (cell sizes and large mappings).
    pub live: usize,
    /// Bytes freed.
    pub freed: usize,
    /// Objects freed.
    pub freed_objects: usize,
    /// Chunks and large mappings returned to the system.
    pub unmapped: usize,
    /// Empty chunks kept for reuse instead (see [`POOL_CHUNKS`]).
    pub pooled: usize,
}

/// The managed heap (see the module docs).
pub struct Heap {
    max: usize,
    used: AtomicUsize,
    threshold: AtomicUsize,
    inner: Mutex<Inner>,
}

// SAFETY: the raw block pointers are only touched under the mutex, and the
// memory they own is not tied to any thread.
unsafe impl Send for Heap {}
// SAFETY: as above; the counters are atomic.
unsafe impl Sync for Heap {}

/// How many cells one refill of a thread's cache takes (about 4 KiB, at
/// most 64 cells): one lock and one accounting update per batch.
pub fn cache_batch(class: usize) -> usize {
    (4096 / SIZE_CLASSES[class]).clamp(1, 64)
}

impl Heap {
    /// A heap that refuses to grow beyond `max` bytes of objects.
    pub fn new(max: usize) -> Heap {
        Heap {
            max,
            used: AtomicUsize::new(0),
            threshold: AtomicUsize::new(MIN_THRESHOLD.min(max)),
            inner: Mutex::new(Inner {
                chunks: Vec::new(),
                pool: Vec::new(),
                free: [std::ptr::null_mut(); NCLASSES],
                large: Vec::new(),
            }),
        }
    }

    /// Bytes in allocated objects (live or not yet collected), by cell size.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Allocation volume at which the next collection is due.
    pub fn threshold(&self) -> usize {
        self.threshold.load(Ordering::Relaxed)
    }

    /// Set the collection threshold (after a collection).
    pub fn set_threshold(&self, t: usize) {
        self.threshold.store(t, Ordering::Relaxed);
    }

    /// Would allocating `size` more bytes pass the collection threshold?
    pub fn wants_collection(&self, size: u64) -> bool {
        (self.used() as u64).saturating_add(size) > self.threshold() as u64
    }

    /// Bytes of memory mapped for objects (chunks in use and large
    /// objects; empty chunks kept for reuse are [`Heap::pooled`]).
    pub fn mapped(&self) -> usize {
        let g = self.lock();
        g.chunks.len() * CHUNK_SIZE + g.large.iter().map(|m| m.len).sum::<usize>()
    }

    /// Bytes in empty chunks kept for reuse.
    pub fn pooled(&self) -> usize {
        self.lock().pool.len() * CHUNK_SIZE
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocate `size` zeroed bytes, 8-byte aligned. Never collects: the
    /// runtime decides when to collect (at a safepoint) and calls this after.
    /// The lock is held only for a free-list pop or a chunk mapping, never
    /// across anything that waits for other threads.
    fn alloc(&self, size: u64, unlimited: bool) -> Result<*mut u8, HeapError> {
        let limit_err = HeapError::LimitExceeded {
            requested: size,
            max: self.max,
        };
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= isize::MAX as usize / 2)
            .ok_or_else(|| limit_err.clone())?
            .max(HEADER_SIZE);
        let class = class_of_size(size);
        let n = match class {
            Some(c) => SIZE_CLASSES[c],
            None => (size + 4095) & !4095,
        };
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
        let undo = || {
            self.used.fetch_sub(n, Ordering::Relaxed);
            HeapError::SystemOutOfMemory {
                requested: size as u64,
            }
        };
        let Some(c) = class else {
            let m = Mapping::new(n).ok_or_else(undo)?;
            let p = m.start;
            self.lock().large.push(m);
            return Ok(p);
        };
        let mut g = self.lock();
        if g.free[c].is_null() && !g.add_chunk(c) {
            drop(g);
            return Err(undo());
        }
        let p = g.free[c];
        // SAFETY: `p` is a free cell of class `c` (class null, tags = next);
        // once unlinked it is ours, and we zero all of it.
        unsafe {
            g.free[c] = (*(p as *mut ObjHeader)).tags as *mut u8;
            drop(g);
            std::ptr::write_bytes(p, 0, SIZE_CLASSES[c]);
        }
        Ok(p)
    }

    /// Reserve and unlink up to `want` (at least 1) free cells of size class
    /// `class` (`< CACHED_CLASSES`) for a thread's private allocation cache.
    /// Returns the first cell and how many were taken; the cells are linked
    /// through their `tags` word (the last one's is 0), their class pointer
    /// is null (so a sweep counts them as free: every cache must be emptied
    /// before a sweep, see `heap::gc::collect`), and the rest of each cell
    /// holds garbage: the taker zeroes a cell when it hands it out. Their
    /// bytes count in `used()` from now on (as allocated) until the next
    /// sweep recounts. Fails, taking nothing, if not even one cell fits under
    /// the limit or the system refuses a new chunk.
    pub fn take_cells(&self, class: usize, want: usize) -> Result<(*mut u8, usize), HeapError> {
        let cell = SIZE_CLASSES[class];
        let limit_err = HeapError::LimitExceeded {
            requested: cell as u64,
            max: self.max,
        };
        let mut want = want.max(1);
        // Reserve as many cells as fit under the cache limit (at least
        // one): caches never take the last [`CACHE_RESERVE_SHIFT`] part of
        // the heap, which only direct allocations use.
        let cache_max = self.max - (self.max >> CACHE_RESERVE_SHIFT);
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let room = cache_max.saturating_sub(cur) / cell;
            if room == 0 {
                return Err(limit_err);
            }
            want = want.min(room);
            match self.used.compare_exchange_weak(
                cur,
                cur + want * cell,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        let mut g = self.lock();
        if g.free[class].is_null() && !g.add_chunk(class) {
            drop(g);
            self.used.fetch_sub(want * cell, Ordering::Relaxed);
            return Err(HeapError::SystemOutOfMemory {
                requested: cell as u64,
            });
        }
        let head = g.free[class];
        let mut last = head;
        let mut got = 1;
        // SAFETY: every cell on the free list is a free cell of this class
        // (class null, tags = next cell or 0); we unlink a prefix of it.
        unsafe {
            while got < want {
                let next = (*(last as *mut ObjHeader)).tags as *mut u8;
                if next.is_null() {
                    break;
                }
                last = next;
                got += 1;
            }
            g.free[class] = (*(last as *mut ObjHeader)).tags as *mut u8;
            (*(last as *mut ObjHeader)).tags = 0;
        }
        drop(g);
        if got < want {
            self.used.fetch_sub((want - got) * cell, Ordering::Relaxed);
        }
        Ok((head, got))
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

    /// Size in bytes of an array of `len` elements of `class` (saturating).
    ///
    /// # Safety
    /// `class` must point to a live array class descriptor.
    pub unsafe fn array_bytes(class: *const ClassDesc, len: i64) -> u64 {
        // SAFETY: caller guarantees `class` is live.
        let esize = unsafe { (*class).elem_size } as u64;
        (len.max(0) as u64)
            .checked_mul(esize)
            .and_then(|b| b.checked_add(ARRAY_DATA_OFFSET as u64))
            .unwrap_or(u64::MAX)
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
        let bytes = unsafe { Heap::array_bytes(class, len) };
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

    /// Free every allocated object that is neither marked nor pinned, clear
    /// the marks, rebuild the free lists (address order) and unmap chunks
    /// without live objects and dead large objects. `used()` becomes the
    /// live volume.
    ///
    /// # Safety
    /// Only while no mutator can touch the heap (the world is stopped, or a
    /// single-threaded test), after marking every reachable object.
    pub unsafe fn sweep(&self) -> SweepStats {
        let mut st = SweepStats::default();
        let mut g = self.lock();
        let inner = &mut *g;
        let mut tails: [*mut u8; NCLASSES] = [std::ptr::null_mut(); NCLASSES];
        inner.free = [std::ptr::null_mut(); NCLASSES];
        let mut keep = Vec::with_capacity(inner.chunks.len());
        for ch in inner.chunks.drain(..) {
            let cell = SIZE_CLASSES[ch.class];
            let mut live = 0usize;
            let mut head: *mut u8 = std::ptr::null_mut();
            let mut tail: *mut u8 = std::ptr::null_mut();
            for i in 0..CHUNK_SIZE / cell {
                // SAFETY: cell i is inside the chunk; every cell starts with a header.
                unsafe {
                    let p = ch.map.start.add(i * cell);
                    let h = &mut *(p as *mut ObjHeader);
                    if !h.class.is_null() {
                        if h.tags & (TAG_MARK | TAG_PINNED) != 0 {
                            h.tags &= !TAG_MARK;
                            live += 1;
                            continue;
                        }
                        st.freed += cell;
                        st.freed_objects += 1;
                        h.class = std::ptr::null();
                    }
                    h.tags = 0;
                    if tail.is_null() {
                        head = p;
                    } else {
                        (*(tail as *mut ObjHeader)).tags = p as u64;
                    }
                    tail = p;
                }
            }
            if live == 0 {
                // Nothing in it is reachable: keep it for reuse, or unmap it.
                if inner.pool.len() < POOL_CHUNKS {
                    st.pooled += 1;
                    inner.pool.push(ch.map);
                } else {
                    st.unmapped += 1;
                }
                continue;
            }
            st.live += live * cell;
            if !head.is_null() {
                let c = ch.class;
                if tails[c].is_null() {
                    inner.free[c] = head;
                } else {
                    // SAFETY: tails[c] is a free cell of class c.
                    unsafe { (*(tails[c] as *mut ObjHeader)).tags = head as u64 };
                }
                tails[c] = tail;
            }
            keep.push(ch);
        }
        inner.chunks = keep;
        let mut large = Vec::with_capacity(inner.large.len());
        for m in inner.large.drain(..) {
            // SAFETY: each large mapping holds one object at its start.
            let h = unsafe { &mut *(m.start as *mut ObjHeader) };
            if h.tags & (TAG_MARK | TAG_PINNED) != 0 {
                h.tags &= !TAG_MARK;
                st.live += m.len;
                large.push(m);
            } else {
                st.freed += m.len;
                st.freed_objects += 1;
                st.unmapped += 1;
            }
        }
        inner.large = large;
        self.used.store(st.live, Ordering::Relaxed);
        st
    }
}

/// Pin `obj`: it is never freed and never traced (interned strings, which
/// hold no references).
///
/// # Safety
/// `obj` must be a live object with no reference fields.
pub unsafe fn pin(obj: *mut u8) {
    // SAFETY: caller guarantees a live object.
    unsafe { (*(obj as *mut ObjHeader)).tags |= TAG_PINNED };
}

/// The marking phase's work list: an explicit stack, so deep object graphs
/// never recurse on the native stack.
pub struct Marker {
    stack: Vec<*mut u8>,
    /// Objects marked so far.
    pub marked: usize,
}

impl Default for Marker {
    fn default() -> Self {
        Marker::new()
    }
}

impl Marker {
    /// An empty marker.
    pub fn new() -> Marker {
        Marker {
            stack: Vec::with_capacity(1024),
            marked: 0,
        }
    }

    /// Mark `obj` (a reference or null) and queue it for scanning.
    ///
    /// # Safety
    /// `obj` must be null or a live object of this heap.
    #[inline]
    pub unsafe fn mark(&mut self, obj: *mut u8) {
        if obj.is_null() {
            return;
        }
        // SAFETY: caller guarantees a live object.
        let h = unsafe { &mut *(obj as *mut ObjHeader) };
        if h.tags & (TAG_MARK | TAG_PINNED) != 0 {
            return;
        }
        h.tags |= TAG_MARK;
        self.marked += 1;
        self.stack.push(obj);
    }

    /// Mark the reference stored at `slot`.
    ///
    /// # Safety
    /// `slot` must be readable and hold null or a live object.
    #[inline]
    pub unsafe fn mark_slot(&mut self, slot: *const u64) {
        // SAFETY: caller contract.
        unsafe { self.mark(*slot as *mut u8) }
    }

    /// Scan queued objects until none is left: plain objects by their
    /// class's reference field offsets, arrays of references element by
    /// element; strings and primitive arrays hold no references.
    ///
    /// # Safety
    /// Every queued object is live, and every reference in a live object is
    /// null or live (the heap's invariant).
    pub unsafe fn drain(&mut self) {
        while let Some(o) = self.stack.pop() {
            // SAFETY: `o` is live (queued by `mark`); so is its class descriptor.
            unsafe {
                let cd = &*class_of(o);
                if cd.kind == crate::vm::tables::kind::ARRAY {
                    if cd.elem_item_type == 0 && cd.elem_size == 8 {
                        let n = array_len(o) as usize;
                        let data = o.add(ARRAY_DATA_OFFSET) as *const u64;
                        for i in 0..n {
                            self.mark_slot(data.add(i));
                        }
                    }
                } else {
                    for i in 0..cd.ref_count as usize {
                        let off = *cd.ref_offsets.add(i) as usize;
                        self.mark_slot(o.add(off) as *const u64);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::tables::kind;

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
    fn size_classes_are_sorted_and_aligned() {
        for w in SIZE_CLASSES.windows(2) {
            assert!(w[0] < w[1]);
        }
        assert!(SIZE_CLASSES.iter().all(|c| c % 8 == 0));
        assert_eq!(*SIZE_CLASSES.last().unwrap(), LARGE_OBJECT);
        assert_eq!(class_of_size(16), Some(0));
        assert_eq!(class_of_size(17), Some(1));
        assert_eq!(class_of_size(8192), Some(NCLASSES - 1));
        assert_eq!(class_of_size(8193), None);
    }

    /// Walk a list of cells linked through `tags`.
    fn cells(mut p: *mut u8) -> Vec<*mut u8> {
        let mut v = Vec::new();
        while !p.is_null() {
            v.push(p);
            // SAFETY: cells handed out by take_cells, linked through tags.
            p = unsafe { (*(p as *const ObjHeader)).tags } as *mut u8;
        }
        v
    }

    #[test]
    fn take_cells_reserves_links_and_respects_the_limit() {
        let c = cached_class_of_object(24).unwrap();
        assert_eq!(SIZE_CLASSES[c], 24);
        assert_eq!(cached_class_of_object(257), None);
        assert_eq!(cache_batch(c), 64);
        // Caches may use 7/8 of the limit (210 of 240 bytes): room for 8
        // cells of 24 bytes; the last eighth is for direct allocations.
        let h = Heap::new(240);
        let (head, got) = h.take_cells(c, 64).unwrap();
        assert_eq!(got, 8);
        assert_eq!(h.used(), 192);
        let list = cells(head);
        assert_eq!(list.len(), 8);
        let mut sorted = list.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 8, "distinct cells");
        assert!(list.iter().all(|&p| (p as usize).is_multiple_of(8)));
        assert!(matches!(
            h.take_cells(c, 1),
            Err(HeapError::LimitExceeded { .. })
        ));
        // A sweep with nothing marked finds the cached cells free (class
        // null) and recounts: they can be taken again.
        // SAFETY: no collection is running and no object is live.
        let st = unsafe { h.sweep() };
        assert_eq!(st.live, 0);
        assert_eq!(h.used(), 0);
        let (head2, got2) = h.take_cells(c, 4).unwrap();
        assert_eq!(got2, 4);
        assert_eq!(cells(head2).len(), 4);
        // Cells are never shared between two takers.
        let (head3, _) = h.take_cells(c, 6).unwrap();
        let a = cells(head2);
        assert!(cells(head3).iter().all(|p| !a.contains(p)));
    }

    fn arr_class(elem_ref: bool) -> Box<ClassDesc> {
        let mut cd = Box::new(ClassDesc::blank());
        cd.kind = kind::ARRAY;
        cd.elem_size = 8;
        cd.elem_item_type = if elem_ref { 0 } else { 14 };
        cd
    }

    #[test]
    fn limit_and_zeroing() {
        let h = Heap::new(4096);
        let cd = arr_class(false);
        let cp: *const ClassDesc = &*cd;
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

    #[test]
    fn sweep_frees_unmarked_and_reuses_cells() {
        let h = Heap::new(64 << 20);
        let cd = arr_class(false);
        let cp: *const ClassDesc = &*cd;
        // SAFETY: single-threaded test heap; every object is live until swept.
        unsafe {
            let objs: Vec<*mut u8> = (0..1000)
                .map(|_| h.new_array(cp, 2, false).unwrap())
                .collect();
            assert_eq!(h.used(), 1000 * 40);
            let mut m = Marker::new();
            for (i, &o) in objs.iter().enumerate() {
                if i % 2 == 0 {
                    m.mark(o);
                }
                *(o.add(ARRAY_DATA_OFFSET) as *mut u64) = i as u64;
            }
            m.drain();
            let st = h.sweep();
            assert_eq!(st.freed_objects, 500);
            assert_eq!(st.live, 500 * 40);
            assert_eq!(h.used(), 500 * 40);
            // survivors intact, marks cleared
            for (i, &o) in objs.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
                assert_eq!(*(o.add(ARRAY_DATA_OFFSET) as *const u64), i as u64);
                assert_eq!((*(o as *const ObjHeader)).tags, 0);
            }
            // freed cells come back first, in address order, zeroed
            let dead: Vec<*mut u8> = objs.iter().copied().skip(1).step_by(2).collect();
            let again: Vec<*mut u8> = (0..500)
                .map(|_| h.new_array(cp, 2, false).unwrap())
                .collect();
            let mut d = dead.clone();
            d.sort();
            assert_eq!(again, d);
            assert!(again
                .iter()
                .all(|&o| *(o.add(ARRAY_DATA_OFFSET) as *const u64) == 0));
            // nothing marked: everything goes, the empty chunk is pooled
            for &o in &again {
                *(o.add(ARRAY_DATA_OFFSET) as *mut u64) = u64::MAX;
            }
            let st = h.sweep();
            assert_eq!(st.live, 0);
            assert_eq!((st.pooled, st.unmapped), (1, 0));
            assert_eq!(h.used(), 0);
            assert_eq!(h.mapped(), 0);
            assert_eq!(h.pooled(), CHUNK_SIZE);
            // ...and reused for another size class: every cell reads zero
            // although the old cells were dirty and had other boundaries,
            // and the cells not handed out count as free (class null)
            let n = CHUNK_SIZE / 64;
            let objs: Vec<*mut u8> = (0..n / 2)
                .map(|_| h.new_array(cp, 5, false).unwrap())
                .collect();
            assert_eq!(h.pooled(), 0);
            assert_eq!(h.mapped(), CHUNK_SIZE);
            assert!(objs
                .iter()
                .all(|&o| (0..5).all(|k| *(o.add(ARRAY_DATA_OFFSET + 8 * k) as *const u64) == 0)));
            m.mark(objs[0]);
            m.drain();
            let st = h.sweep();
            assert_eq!((st.freed_objects, st.live), (n / 2 - 1, 64));
            // a full pool unmaps instead
            let extra: Vec<*mut u8> = (0..(POOL_CHUNKS + 1) * n - 1)
                .map(|_| h.new_array(cp, 5, false).unwrap())
                .collect();
            drop(extra);
            let st = h.sweep();
            assert_eq!((st.pooled, st.unmapped), (POOL_CHUNKS, 1));
            assert_eq!(h.mapped(), 0);
            assert_eq!(h.pooled(), POOL_CHUNKS * CHUNK_SIZE);
        }
    }

    #[test]
    fn large_objects_are_unmapped_and_pins_survive() {
        let h = Heap::new(1 << 30);
        let cd = arr_class(false);
        let cp: *const ClassDesc = &*cd;
        // SAFETY: single-threaded test heap.
        unsafe {
            let big = h.new_array(cp, 1 << 20, false).unwrap();
            let keep = h.new_array(cp, 1 << 20, false).unwrap();
            let pinned = h.new_string(cp, b"interned", true).unwrap();
            pin(pinned);
            assert!(h.mapped() >= 16 << 20);
            let mut m = Marker::new();
            m.mark(keep);
            m.drain();
            let st = h.sweep();
            assert_eq!(st.freed_objects, 1);
            assert!(st.freed >= 8 << 20);
            assert!(h.mapped() < (9 << 20) + CHUNK_SIZE);
            assert_eq!(array_len(keep), 1 << 20);
            assert_eq!(string_bytes(pinned), b"interned");
            let _ = big;
            // allocating the freed volume again works under a limit that
            // only fits after the sweep
            let h2 = Heap::new(10 << 20);
            let a = h2.new_array(cp, 1 << 20, false).unwrap();
            assert!(h2.new_array(cp, 1 << 20, false).is_err());
            h2.sweep();
            assert!(h2.new_array(cp, 1 << 20, false).is_ok());
            let _ = a;
        }
    }

    #[test]
    fn marking_a_million_long_list_uses_no_recursion() {
        // a linked list of 1M arrays of references (element 0 = next)
        let h = Heap::new(1 << 30);
        let cd = arr_class(true);
        let cp: *const ClassDesc = &*cd;
        // SAFETY: single-threaded test heap.
        unsafe {
            let mut head: *mut u8 = std::ptr::null_mut();
            for _ in 0..1_000_000 {
                let n = h.new_array(cp, 1, false).unwrap();
                *(n.add(ARRAY_DATA_OFFSET) as *mut *mut u8) = head;
                head = n;
            }
            let garbage = h.new_array(cp, 1, false).unwrap();
            *(garbage.add(ARRAY_DATA_OFFSET) as *mut *mut u8) = head;
            // mark from the head on a small thread stack: recursion would overflow
            let hp = head as usize;
            let marked = std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let mut m = Marker::new();
                    m.mark(hp as *mut u8);
                    m.drain();
                    m.marked
                })
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(marked, 1_000_000);
            let st = h.sweep();
            assert_eq!(st.freed_objects, 1);
            assert_eq!(st.live, 1_000_000 * 32);
        }
    }
}
