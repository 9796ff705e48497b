//! Runtime tables in native memory (see `docs/runtime-tables.md`).
//!
//! Everything here is `#[repr(C)]`, allocated once per [`Tables`] (boxed, so
//! addresses never change while the tables live) and freed when the tables
//! are dropped. Generated code (the JIT) uses these structures by address and
//! by the `pub const` offsets below, never by hard-coded numbers.
//!
//! Two layers:
//! - the *executable* handles of the Runtime Library Format: [`TypeHandle`],
//!   [`FieldHandle`], [`MethodHandle`] (with the method slot `entry`),
//!   [`StackHandle`] per argument and local, per-type static memory, and the
//!   class descriptor [`ClassDesc`] (super, size, vtable, interface slot table,
//!   interface bitmap, depth + display for O(1) subclass tests, element type);
//! - MOSA-style *metadata* definitions: [`LibraryDef`], [`TypeDefinition`],
//!   [`FieldDefinition`], [`PropertyDefinition`], [`MethodDefinition`],
//!   [`ParameterDefinition`], [`CustomAttr`], [`ProtectedRegion`], [`GcData`]
//!   and the method lookup table ([`MethodLookupEntry`]).
//!
//! Invariants: every pointer in these tables points into the same `Tables`
//! (or into the `Program` the tables were built from, which outlives them),
//! or is null. A method's frame is `frame_slots` 64-bit slots:
//! `[args | locals | evaluation stack]`.

use crate::heap::{ARRAY_DATA_OFFSET, HEADER_SIZE};
use crate::library::program::{ClassId, MemberId, Program};
use crate::library::{AttrValue, Attribute, HandlerKind, Prim, TypeKind, TypeSig};
use crate::runtime::natives::NativeFn;
use crate::runtime::ThreadCtx;
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The one calling convention (interpreter, natives, JIT code): untyped 64-bit
/// argument slots, receiver first; result returned the same way. On an
/// exception the callee sets `thread.pending` and returns 0.
pub type EntryFn = unsafe extern "C" fn(
    thread: *mut ThreadCtx,
    method: *const MethodHandle,
    args: *const u64,
) -> u64;

/// A borrowed string in native memory (UTF-8, not NUL terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RtStr {
    /// First byte (null for an absent string).
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl RtStr {
    const NONE: RtStr = RtStr {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// View as `&str`.
    ///
    /// # Safety
    /// The pointed-to bytes must be live UTF-8 (true for every `RtStr` in live tables).
    pub unsafe fn as_str<'a>(&self) -> &'a str {
        if self.ptr.is_null() {
            return "";
        }
        // SAFETY: caller guarantees live UTF-8 of `len` bytes.
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.ptr, self.len)) }
    }
}

/// `TypeHandle {type_token, type_size}`.
#[repr(C)]
#[derive(Debug)]
pub struct TypeHandle {
    /// Metadata token (`0x02` table, 1-based row).
    pub type_token: u32,
    /// Instance size in bytes (for primitives: the value size).
    pub type_size: u32,
}

/// `FieldHandle {field_token, field_offset, field_size}`.
#[repr(C)]
#[derive(Debug)]
pub struct FieldHandle {
    /// Metadata token (`0x04` table).
    pub field_token: u32,
    /// Byte offset in the object (instance) or in the type's static memory.
    pub field_offset: u32,
    /// Size in bytes.
    pub field_size: u32,
    /// Item type id (0 = object reference, 1..=13 as in the memory-layout note, 14 = i32).
    pub item_type: u8,
    /// 1 if static.
    pub is_static: u8,
    /// 1 if atomic.
    pub is_atomic: u8,
    /// Padding.
    pub pad: u8,
    /// For a static field, its address (`statics + field_offset`); else null.
    pub static_addr: *mut u8,
}

/// `StackHandle {type_handle, offset}`: one argument or local in the frame.
#[repr(C)]
#[derive(Debug)]
pub struct StackHandle {
    /// Its type.
    pub type_handle: *const TypeHandle,
    /// Byte offset from the frame base.
    pub offset: u32,
    /// 1 if the slot holds an object reference (GC root).
    pub is_ref: u32,
}

/// Method flag bits (`MethodHandle::flags`).
pub mod mflags {
    /// Static method.
    pub const STATIC: u32 = 1;
    /// Virtual (has a vtable slot).
    pub const VIRTUAL: u32 = 2;
    /// Abstract or interface method.
    pub const ABSTRACT: u32 = 4;
    /// Native method.
    pub const NATIVE: u32 = 8;
    /// Returns a value.
    pub const RETURNS: u32 = 16;
    /// Declared by an interface.
    pub const INTERFACE: u32 = 32;
}

/// `MethodHandle`: everything a call needs, at stable addresses.
#[repr(C)]
#[derive(Debug)]
pub struct MethodHandle {
    /// The method slot: an [`EntryFn`] stored as `usize`. Interpreted methods
    /// hold the interpreter adapter, natives the native adapter; the JIT
    /// rewrites it with compiled code.
    pub entry: AtomicUsize,
    /// Metadata token (`0x06` table).
    pub method_token: u32,
    /// Maximum evaluation stack depth (from the verifier).
    pub max_stack: u32,
    /// Byte offset of the first local in the frame.
    pub local_offset: u32,
    /// Index in `arg_local_ptr` of the first local (= number of arguments incl. `this`).
    pub local_ptr_offset: u32,
    /// Byte offset of the evaluation stack in the frame.
    pub stack_ptr_offset: u32,
    /// Frame size in 64-bit slots (args + locals + max_stack).
    pub frame_slots: u32,
    /// Number of arguments including `this`.
    pub arg_count: u32,
    /// Number of locals.
    pub local_count: u32,
    /// `arg_count + local_count` stack handles, arguments first.
    pub arg_local_ptr: *const StackHandle,
    /// The raw bytecode (null for abstract and native methods).
    pub instruction_ptr: *const u8,
    /// Bytecode size.
    pub code_size: u32,
    /// [`mflags`] bits.
    pub flags: u32,
    /// Vtable slot of a virtual method, or -1.
    pub vtable_slot: i32,
    /// Index among its interface's methods (interface methods), or -1.
    pub iface_index: i32,
    /// Declaring class.
    pub class: *const ClassDesc,
    /// Metadata definition.
    pub def: *const MethodDefinition,
    /// The Rust function of a native method.
    pub native: Option<NativeFn>,
    /// Pre-decoded interpreter code (owned by the interpreter), or null.
    pub interp_code: AtomicPtr<u8>,
    /// GC data of the frame.
    pub gc: *const GcData,
    /// Method id in the program (for the loader and the interpreter).
    pub member: MemberId,
    /// The register-argument entry of the method's compiled code, or 0.
    ///
    /// Only compiled code calls it, with the JIT's per-method signature
    /// `fn(thread, args as native values…) -> result` (see `docs/jit.md`,
    /// "Calling convention"); everything else calls [`MethodHandle::entry`].
    /// The JIT writes it once, from 0 to the code, with Release ordering,
    /// before it writes the slot; it never changes again.
    pub fast: AtomicUsize,
}

/// Class kinds (`ClassDesc::kind`).
pub mod kind {
    /// A class.
    pub const CLASS: u32 = 0;
    /// An interface.
    pub const INTERFACE: u32 = 1;
    /// An array type.
    pub const ARRAY: u32 = 2;
}

/// Class descriptor: what an object header points to.
#[repr(C)]
#[derive(Debug)]
pub struct ClassDesc {
    /// Token and instance size.
    pub type_handle: TypeHandle,
    /// Instance size in bytes (header included; 8-aligned).
    pub instance_size: u32,
    /// [`kind`] value.
    pub kind: u32,
    /// Base class (null for `Object` and interfaces).
    pub super_: *const ClassDesc,
    /// Number of ancestors (`Object` has 0).
    pub depth: u32,
    /// 1 if abstract, 2 if sealed.
    pub flags: u32,
    /// `depth + 1` entries, root (`Object`) first, `display[depth] == self`.
    pub display: *const *const ClassDesc,
    /// Virtual method table.
    pub vtable: *const *const MethodHandle,
    /// Entries in `vtable`.
    pub vtable_len: u32,
    /// For an interface: its interface id; else `u32::MAX`.
    pub iface_id: u32,
    /// Interface slot table, indexed by interface id: the implementing methods
    /// in the interface's method order, or null if not implemented.
    pub islots: *const *const *const MethodHandle,
    /// Entries in `islots`.
    pub islots_len: u32,
    /// Words in `ibitmap`.
    pub ibitmap_words: u32,
    /// Bit `id` set iff the type implements interface `id`.
    pub ibitmap: *const u64,
    /// Array element size in bytes (arrays only).
    pub elem_size: u32,
    /// Item type id of the element (0 = reference; arrays only).
    pub elem_item_type: u32,
    /// Element class for arrays of references (null for `object`-free primitives).
    pub element: *const ClassDesc,
    /// Static field memory (null if none).
    pub statics: *mut u8,
    /// Byte offsets of reference-typed instance fields (GC).
    pub ref_offsets: *const u32,
    /// Entries in `ref_offsets`.
    pub ref_count: u32,
    /// Size of the static memory.
    pub statics_size: u32,
    /// Metadata definition (null for array types).
    pub type_def: *const TypeDefinition,
    /// Type name (`T[]` for arrays).
    pub name: RtStr,
    /// The `ctor` taking no arguments, if any.
    pub default_ctor: *const MethodHandle,
}

impl ClassDesc {
    /// An all-zero descriptor (to be filled in).
    pub fn blank() -> ClassDesc {
        ClassDesc {
            type_handle: TypeHandle {
                type_token: 0,
                type_size: 0,
            },
            instance_size: 0,
            kind: 0,
            super_: std::ptr::null(),
            depth: 0,
            flags: 0,
            display: std::ptr::null(),
            vtable: std::ptr::null(),
            vtable_len: 0,
            iface_id: u32::MAX,
            islots: std::ptr::null(),
            islots_len: 0,
            ibitmap_words: 0,
            ibitmap: std::ptr::null(),
            elem_size: 0,
            elem_item_type: 0,
            element: std::ptr::null(),
            statics: std::ptr::null_mut(),
            ref_offsets: std::ptr::null(),
            ref_count: 0,
            statics_size: 0,
            type_def: std::ptr::null(),
            name: RtStr::NONE,
            default_ctor: std::ptr::null(),
        }
    }

    /// The type name.
    pub fn name(&self) -> &str {
        // SAFETY: names point into the live tables (invariant of the module).
        unsafe { self.name.as_str() }
    }

    /// O(1) test: is `self` the class `target` or a subclass of it?
    pub fn is_subclass_of(&self, target: &ClassDesc) -> bool {
        if target.depth > self.depth || self.display.is_null() {
            return false;
        }
        // SAFETY: `display` has depth + 1 entries and target.depth <= self.depth.
        unsafe { std::ptr::eq(*self.display.add(target.depth as usize), target) }
    }

    /// O(1) test: does `self` implement the interface with id `iface`?
    pub fn implements(&self, iface: u32) -> bool {
        let w = (iface / 64) as usize;
        if w >= self.ibitmap_words as usize {
            return false;
        }
        // SAFETY: `ibitmap` has `ibitmap_words` entries.
        unsafe { *self.ibitmap.add(w) & (1u64 << (iface % 64)) != 0 }
    }

    /// Is an object of class `self` an instance of `target` (class, interface or array type)?
    pub fn instance_of(&self, target: &ClassDesc) -> bool {
        match target.kind {
            kind::INTERFACE => self.implements(target.iface_id),
            kind::ARRAY => std::ptr::eq(self, target),
            _ => self.is_subclass_of(target),
        }
    }
}

/// Library table entry.
#[repr(C)]
#[derive(Debug)]
pub struct LibraryDef {
    /// `.library` name.
    pub name: RtStr,
    /// 1 if loaded for reflection only (no executable tables); 0 here.
    pub reflection_only: u32,
    /// Number of types.
    pub type_count: u32,
    /// The library's type definitions.
    pub types: *const *const TypeDefinition,
}

/// Type definition (metadata).
#[repr(C)]
#[derive(Debug)]
pub struct TypeDefinition {
    /// Name.
    pub name: RtStr,
    /// Bit 0 interface, bit 1 abstract, bit 2 sealed, bits 4..5 access (0 public, 1 private, 2 protected).
    pub attributes: u32,
    /// Instance size.
    pub size: u32,
    /// Defining library.
    pub library: *const LibraryDef,
    /// Base type definition, or null.
    pub parent: *const TypeDefinition,
    /// Declaring type (always null: kasm has no nested types).
    pub declaring: *const TypeDefinition,
    /// Element type (always null for definitions; array types have no definition).
    pub element: *const TypeDefinition,
    /// The default (argument-less) constructor, or null.
    pub default_ctor: *const MethodDefinition,
    /// Fields.
    pub fields: *const FieldDefinition,
    /// Number of fields.
    pub field_count: u32,
    /// Number of methods.
    pub method_count: u32,
    /// Methods.
    pub methods: *const MethodDefinition,
    /// Properties.
    pub properties: *const PropertyDefinition,
    /// Number of properties.
    pub property_count: u32,
    /// Number of custom attributes.
    pub attr_count: u32,
    /// Custom attributes.
    pub attrs: *const CustomAttr,
    /// Executable side: class descriptor (vtable, interface slot table, bitmap).
    pub class: *const ClassDesc,
}

/// Field definition (metadata).
#[repr(C)]
#[derive(Debug)]
pub struct FieldDefinition {
    /// Name.
    pub name: RtStr,
    /// Type as kasm text.
    pub type_name: RtStr,
    /// Field flags (3 bits, kasm.md), bit 3 static.
    pub attributes: u32,
    /// Number of custom attributes.
    pub attr_count: u32,
    /// Custom attributes.
    pub attrs: *const CustomAttr,
    /// Executable handle.
    pub handle: *const FieldHandle,
}

/// Property definition (metadata).
#[repr(C)]
#[derive(Debug)]
pub struct PropertyDefinition {
    /// Name.
    pub name: RtStr,
    /// Type as kasm text.
    pub type_name: RtStr,
    /// Getter, or null.
    pub getter: *const MethodDefinition,
    /// Setter, or null.
    pub setter: *const MethodDefinition,
}

/// Parameter definition (metadata).
#[repr(C)]
#[derive(Debug)]
pub struct ParameterDefinition {
    /// Name.
    pub name: RtStr,
    /// Type as kasm text.
    pub type_name: RtStr,
}

/// Method definition (metadata).
#[repr(C)]
#[derive(Debug)]
pub struct MethodDefinition {
    /// Name.
    pub name: RtStr,
    /// Return type as kasm text (empty for void).
    pub return_type: RtStr,
    /// [`mflags`] bits; bits 8..9 access.
    pub attributes: u32,
    /// Number of declared parameters.
    pub param_count: u32,
    /// Parameters.
    pub params: *const ParameterDefinition,
    /// Executable handle.
    pub handle: *const MethodHandle,
    /// Protected regions, innermost first.
    pub regions: *const ProtectedRegion,
    /// Number of protected regions.
    pub region_count: u32,
    /// Number of custom attributes.
    pub attr_count: u32,
    /// Custom attributes.
    pub attrs: *const CustomAttr,
    /// Declaring type.
    pub declaring: *const TypeDefinition,
}

/// Custom attribute with its arguments.
#[repr(C)]
#[derive(Debug)]
pub struct CustomAttr {
    /// Attribute name.
    pub name: RtStr,
    /// Number of arguments.
    pub arg_count: u32,
    /// Arguments.
    pub args: *const AttrArgDef,
}

/// One attribute argument: `kind` 0 int, 1 float, 2 string, 3 bool, 4 char.
#[repr(C)]
#[derive(Debug)]
pub struct AttrArgDef {
    /// Name of a named argument (null ptr when positional).
    pub name: RtStr,
    /// Value kind.
    pub kind: u32,
    /// Integer / float bits / bool / char value.
    pub bits: u64,
    /// String value.
    pub text: RtStr,
}

/// Protected region (byte offsets into the bytecode; ends exclusive).
#[repr(C)]
#[derive(Debug)]
pub struct ProtectedRegion {
    /// Try start.
    pub try_start: u32,
    /// Try end.
    pub try_end: u32,
    /// Handler start.
    pub handler_start: u32,
    /// Handler end.
    pub handler_end: u32,
    /// 0 catch, 1 finally.
    pub kind: u32,
    /// Caught class (catch only).
    pub catch_class: *const ClassDesc,
}

/// Per-method GC data: which frame slots (arguments and locals) hold
/// references, and the JIT's safepoint table once the method is compiled.
/// Evaluation-stack slots of interpreted frames are described per
/// instruction by the verifier's types (`interp::Code::stack_ref_slots`).
#[repr(C)]
#[derive(Debug)]
pub struct GcData {
    /// Frame slot indices holding references.
    pub ref_slots: *const u32,
    /// Number of entries.
    pub ref_slot_count: u32,
    /// The compiled code's safepoint table (null until compiled; set once,
    /// owned by this `GcData`).
    pub safepoints: AtomicPtr<SafepointTable>,
}

impl Drop for GcData {
    fn drop(&mut self) {
        let p = *self.safepoints.get_mut();
        if !p.is_null() {
            // SAFETY: set once from `Box::into_raw` (`install_safepoints`), freed once here.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

impl GcData {
    /// Publish the compiled code's safepoint table (first one wins).
    pub fn install_safepoints(&self, t: SafepointTable) {
        let p = Box::into_raw(Box::new(t));
        if self
            .safepoints
            .compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `p` was never published.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// Kind of a safepoint site (MOSA's safepoint table, made real).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SafepointKind {
    /// A polling-page load (method entry, loop back-edge).
    Poll = 0,
    /// A call through a method slot.
    Call = 1,
    /// An allocation helper call.
    Alloc = 2,
}

/// One safepoint site of compiled code.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SafepointEntry {
    /// The position compiled code stores in its frame record before the site.
    pub pos: u32,
    /// What the site is.
    pub kind: SafepointKind,
    /// First index in [`SafepointTable::slots`].
    pub first: u32,
    /// Number of frame slots holding references at the site.
    pub count: u32,
}

/// Per-method safepoint table of compiled code: for each site, the frame
/// slots (arguments, locals, evaluation stack) that compiled code stored
/// references into before reaching it. Sorted by `pos`.
#[derive(Debug, Default)]
pub struct SafepointTable {
    /// Sites, sorted by position (unique).
    pub entries: Vec<SafepointEntry>,
    /// Slot indices of all sites.
    pub slots: Vec<u32>,
}

impl SafepointTable {
    /// Reference slots at position `pos`, if it is a recorded site.
    pub fn slots_at(&self, pos: u32) -> Option<&[u32]> {
        let i = self.entries.binary_search_by_key(&pos, |e| e.pos).ok()?;
        let e = &self.entries[i];
        self.slots
            .get(e.first as usize..(e.first + e.count) as usize)
    }
}

/// Method lookup table entry: maps a code address to its method. For
/// interpreted methods the range is the bytecode; the JIT adds native ranges.
#[repr(C)]
#[derive(Debug)]
pub struct MethodLookupEntry {
    /// First code byte.
    pub code_start: usize,
    /// Code size.
    pub code_size: usize,
    /// The method.
    pub method: *const MethodDefinition,
}

/// Offsets for generated code (asserted by tests; never hard-code these).
pub mod offsets {
    use super::*;
    use std::mem::offset_of;
    /// `MethodHandle::entry`.
    pub const MH_ENTRY: usize = offset_of!(MethodHandle, entry);
    /// `MethodHandle::fast`.
    pub const MH_FAST: usize = offset_of!(MethodHandle, fast);
    /// `MethodHandle::frame_slots`.
    pub const MH_FRAME_SLOTS: usize = offset_of!(MethodHandle, frame_slots);
    /// `MethodHandle::arg_count`.
    pub const MH_ARG_COUNT: usize = offset_of!(MethodHandle, arg_count);
    /// `MethodHandle::vtable_slot`.
    pub const MH_VTABLE_SLOT: usize = offset_of!(MethodHandle, vtable_slot);
    /// `ClassDesc::vtable`.
    pub const CD_VTABLE: usize = offset_of!(ClassDesc, vtable);
    /// `ClassDesc::islots`.
    pub const CD_ISLOTS: usize = offset_of!(ClassDesc, islots);
    /// `ClassDesc::islots_len`.
    pub const CD_ISLOTS_LEN: usize = offset_of!(ClassDesc, islots_len);
    /// `ClassDesc::depth`.
    pub const CD_DEPTH: usize = offset_of!(ClassDesc, depth);
    /// `ClassDesc::display`.
    pub const CD_DISPLAY: usize = offset_of!(ClassDesc, display);
    /// `ClassDesc::ibitmap`.
    pub const CD_IBITMAP: usize = offset_of!(ClassDesc, ibitmap);
    /// `ClassDesc::ibitmap_words`.
    pub const CD_IBITMAP_WORDS: usize = offset_of!(ClassDesc, ibitmap_words);
    /// `ClassDesc::instance_size`.
    pub const CD_INSTANCE_SIZE: usize = offset_of!(ClassDesc, instance_size);
    /// `ClassDesc::elem_size`.
    pub const CD_ELEM_SIZE: usize = offset_of!(ClassDesc, elem_size);
    /// `FieldHandle::field_offset`.
    pub const FH_OFFSET: usize = offset_of!(FieldHandle, field_offset);
    /// `FieldHandle::static_addr`.
    pub const FH_STATIC_ADDR: usize = offset_of!(FieldHandle, static_addr);
    /// `StackHandle::offset`.
    pub const SH_OFFSET: usize = offset_of!(StackHandle, offset);
    /// `TypeHandle::type_size`.
    pub const TH_SIZE: usize = offset_of!(TypeHandle, type_size);
    /// `ClassDesc::kind`.
    pub const CD_KIND: usize = offset_of!(ClassDesc, kind);
    /// `ThreadCtx::pending` (the pending exception, checked after every call).
    pub const TC_PENDING: usize = offset_of!(crate::runtime::ThreadCtx, pending);
    /// `ThreadCtx::interrupt` (checked after every safepoint poll).
    pub const TC_INTERRUPT: usize = offset_of!(crate::runtime::ThreadCtx, interrupt);
    /// `ThreadCtx::alloc_cache` (one pointer per cached size class).
    pub const TC_ALLOC_CACHE: usize = offset_of!(crate::runtime::ThreadCtx, alloc_cache);
    /// `ThreadCtx::stack_limit` (compared with the native stack pointer on entry).
    pub const TC_STACK_LIMIT: usize = offset_of!(crate::runtime::ThreadCtx, stack_limit);
    /// `ThreadCtx::vs_top` (next free value-stack slot: compiled frames push their record here).
    pub const TC_VS_TOP: usize = offset_of!(crate::runtime::ThreadCtx, vs_top);
    /// `ThreadCtx::vs_end` (end of the value stack).
    pub const TC_VS_END: usize = offset_of!(crate::runtime::ThreadCtx, vs_end);
}

/// Item type id of a storage type (0 reference, 14 for `i32`).
pub fn item_type(t: &TypeSig) -> u8 {
    match t {
        TypeSig::Prim(p) => p.item_type_id().unwrap_or(14),
        TypeSig::Atomic(Prim::Bool) => 10,
        TypeSig::Atomic(Prim::U8) => 11,
        TypeSig::Atomic(Prim::U64) => 13,
        TypeSig::Atomic(_) => 12,
        _ => 0,
    }
}

/// Owns every table (see module docs). Built by [`Tables::build`].
// Boxes inside vectors are deliberate: the boxed tables must keep their
// addresses while the vectors grow.
#[allow(clippy::vec_box)]
pub struct Tables {
    /// Class descriptors, indexed like [`Tables::class_index`].
    classes: Vec<Box<ClassDesc>>,
    class_index: HashMap<ClassId, usize>,
    methods: HashMap<MemberId, Box<MethodHandle>>,
    fields: HashMap<MemberId, Box<FieldHandle>>,
    prim_types: Vec<Box<TypeHandle>>,
    array_classes: Mutex<HashMap<TypeSig, Box<ClassDesc>>>,
    /// The library table.
    pub libraries: Vec<Box<LibraryDef>>,
    /// The method lookup table, sorted by `code_start`.
    pub lookup: Vec<MethodLookupEntry>,
    // backing storage, kept alive for the pointers above
    ptr_arrays: Vec<Box<[*const MethodHandle]>>,
    ptr_arrays2: Mutex<Vec<Box<[*const ClassDesc]>>>,
    islot_arrays: Vec<Box<[*const *const MethodHandle]>>,
    u64_arrays: Vec<Box<[u64]>>,
    array_bitmaps: Mutex<Vec<Box<[u64]>>>,
    u32_arrays: Vec<Box<[u32]>>,
    strings: Mutex<Vec<Box<str>>>,
    statics: Vec<(*mut u8, std::alloc::Layout)>,
    stack_handles: Vec<Box<[StackHandle]>>,
    gc_data: Vec<Box<GcData>>,
    type_defs: Vec<Box<TypeDefinition>>,
    type_def_ptrs: Vec<Box<[*const TypeDefinition]>>,
    field_defs: Vec<Box<[FieldDefinition]>>,
    method_defs: Vec<Box<[MethodDefinition]>>,
    prop_defs: Vec<Box<[PropertyDefinition]>>,
    param_defs: Vec<Box<[ParameterDefinition]>>,
    attr_defs: Vec<Box<[CustomAttr]>>,
    attr_arg_defs: Vec<Box<[AttrArgDef]>>,
    region_defs: Vec<Box<[ProtectedRegion]>>,
    object_class: *const ClassDesc,
    interface_count: u32,
}

// SAFETY: after `build` the tables are only read, except `array_classes`,
// `ptr_arrays2`, `strings` (mutex-protected) and the atomic slots.
unsafe impl Send for Tables {}
// SAFETY: as above.
unsafe impl Sync for Tables {}

/// Why the tables could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// A native method no table binds.
    UnboundNative {
        /// Class name.
        class: String,
        /// Method name.
        method: String,
        /// Declaration line.
        line: u32,
        /// Library index.
        lib: usize,
    },
    /// A class that does not exist (should be caught by the verifier).
    MissingClass(String),
}

/// What the builder needs per method from the verifier.
pub struct MethodFrameInfo {
    /// Maximum evaluation stack depth.
    pub max_stack: u32,
}

impl Tables {
    fn rtstr(&self, s: &str) -> RtStr {
        let b: Box<str> = s.into();
        let r = RtStr {
            ptr: b.as_ptr(),
            len: b.len(),
        };
        self.strings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(b);
        r
    }

    /// Build every table for `program`. `frame(m)` gives the verifier's data
    /// for a method with a body; `native(class, name)` binds natives.
    pub fn build(
        program: &Program,
        frame: &dyn Fn(MemberId) -> Option<MethodFrameInfo>,
        native: &dyn Fn(&str, &str) -> Option<NativeFn>,
    ) -> Result<Tables, Vec<TableError>> {
        let mut t = Tables {
            classes: Vec::new(),
            class_index: HashMap::new(),
            methods: HashMap::new(),
            fields: HashMap::new(),
            prim_types: Vec::new(),
            array_classes: Mutex::new(HashMap::new()),
            libraries: Vec::new(),
            lookup: Vec::new(),
            ptr_arrays: Vec::new(),
            ptr_arrays2: Mutex::new(Vec::new()),
            islot_arrays: Vec::new(),
            u64_arrays: Vec::new(),
            array_bitmaps: Mutex::new(Vec::new()),
            u32_arrays: Vec::new(),
            strings: Mutex::new(Vec::new()),
            statics: Vec::new(),
            stack_handles: Vec::new(),
            gc_data: Vec::new(),
            type_defs: Vec::new(),
            type_def_ptrs: Vec::new(),
            field_defs: Vec::new(),
            method_defs: Vec::new(),
            prop_defs: Vec::new(),
            param_defs: Vec::new(),
            attr_defs: Vec::new(),
            attr_arg_defs: Vec::new(),
            region_defs: Vec::new(),
            object_class: std::ptr::null(),
            interface_count: 0,
        };
        let mut errors = Vec::new();
        for (i, p) in Prim::ALL.iter().enumerate() {
            t.prim_types.push(Box::new(TypeHandle {
                type_token: 0x0100_0000 | (i as u32 + 1),
                type_size: p.size(),
            }));
        }
        // 1. descriptors, interface ids
        let ids: Vec<ClassId> = program.all_classes().collect();
        let mut iface_ids: HashMap<ClassId, u32> = HashMap::new();
        for (i, &id) in ids.iter().enumerate() {
            let def = program.def(id);
            let mut cd = Box::new(ClassDesc::blank());
            cd.type_handle.type_token = 0x0200_0000 | (i as u32 + 1);
            cd.kind = if def.kind == TypeKind::Interface {
                kind::INTERFACE
            } else {
                kind::CLASS
            };
            cd.flags = (def.is_abstract as u32) | ((def.is_sealed as u32) << 1);
            if def.kind == TypeKind::Interface {
                let n = iface_ids.len() as u32;
                iface_ids.insert(id, n);
                cd.iface_id = n;
            }
            cd.name = t.rtstr(&def.name);
            t.class_index.insert(id, i);
            t.classes.push(cd);
        }
        t.interface_count = iface_ids.len() as u32;
        let cptr: Vec<*const ClassDesc> =
            t.classes.iter().map(|b| &**b as *const ClassDesc).collect();
        if let Some(o) = program.class(crate::library::OBJECT) {
            t.object_class = cptr[t.class_index[&o]];
        }
        // 2. hierarchy, layout, statics (parents first: ancestors are processed by depth)
        let mut order: Vec<(usize, ClassId)> = ids
            .iter()
            .map(|&id| (program.ancestors(id).len(), id))
            .collect();
        order.sort();
        let mut field_tok = 0u32;
        for &(_, id) in &order {
            let idx = t.class_index[&id];
            let def = program.def(id);
            let anc = program.ancestors(id);
            let parent = if def.kind == TypeKind::Class {
                program.parent(id)
            } else {
                None
            };
            let (mut size, mut refs) = match parent {
                Some(p) => {
                    let pc = &t.classes[t.class_index[&p]];
                    // SAFETY: ref_offsets has ref_count entries (set when the parent was processed).
                    let prefs = unsafe {
                        std::slice::from_raw_parts(pc.ref_offsets, pc.ref_count as usize)
                    };
                    (
                        pc.instance_size,
                        if pc.ref_count == 0 {
                            Vec::new()
                        } else {
                            prefs.to_vec()
                        },
                    )
                }
                None => (HEADER_SIZE as u32, Vec::new()),
            };
            let mut ssize = 0u32;
            let mut sfields = Vec::new();
            for (fi, f) in def.fields.iter().enumerate() {
                let fsize = f.ty.size();
                field_tok += 1;
                let off = if f.is_static {
                    ssize = ssize.div_ceil(fsize) * fsize;
                    let o = ssize;
                    ssize += fsize;
                    sfields.push(fi);
                    o
                } else {
                    size = size.div_ceil(fsize) * fsize;
                    let o = size;
                    size += fsize;
                    if f.ty.is_ref() {
                        refs.push(o);
                    }
                    o
                };
                t.fields.insert(
                    MemberId {
                        class: id,
                        index: fi as u32,
                    },
                    Box::new(FieldHandle {
                        field_token: 0x0400_0000 | field_tok,
                        field_offset: off,
                        field_size: fsize,
                        item_type: item_type(&f.ty),
                        is_static: f.is_static as u8,
                        is_atomic: matches!(f.ty, TypeSig::Atomic(_)) as u8,
                        pad: 0,
                        static_addr: std::ptr::null_mut(),
                    }),
                );
            }
            let size = size.div_ceil(8) * 8;
            let statics = if ssize > 0 {
                let layout = std::alloc::Layout::from_size_align(ssize.div_ceil(8) as usize * 8, 8)
                    .expect("small layout");
                // SAFETY: non-zero size.
                let p = unsafe { std::alloc::alloc_zeroed(layout) };
                if p.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                t.statics.push((p, layout));
                for fi in sfields {
                    let fh = t
                        .fields
                        .get_mut(&MemberId {
                            class: id,
                            index: fi as u32,
                        })
                        .expect("just inserted");
                    // SAFETY: field_offset + size <= ssize, inside the block.
                    fh.static_addr = unsafe { p.add(fh.field_offset as usize) };
                }
                p
            } else {
                std::ptr::null_mut()
            };
            let display: Vec<*const ClassDesc> = if def.kind == TypeKind::Class {
                anc.iter().rev().map(|a| cptr[t.class_index[a]]).collect()
            } else {
                vec![cptr[idx]]
            };
            let disp: Box<[*const ClassDesc]> = display.into_boxed_slice();
            let refs_box: Box<[u32]> = refs.into_boxed_slice();
            // interface bitmap
            let words = (t.interface_count as usize).div_ceil(64).max(1);
            let mut bm = vec![0u64; words];
            for i in program.interfaces_of(id) {
                let n = iface_ids[&i];
                bm[n as usize / 64] |= 1 << (n % 64);
            }
            let bm: Box<[u64]> = bm.into_boxed_slice();
            let cd = &mut t.classes[idx];
            cd.super_ = parent
                .map(|p| cptr[t.class_index[&p]])
                .unwrap_or(std::ptr::null());
            cd.depth = disp.len() as u32 - 1;
            cd.display = disp.as_ptr();
            cd.instance_size = size;
            cd.type_handle.type_size = size;
            cd.ref_offsets = refs_box.as_ptr();
            cd.ref_count = refs_box.len() as u32;
            cd.statics = statics;
            cd.statics_size = ssize;
            cd.ibitmap = bm.as_ptr();
            cd.ibitmap_words = words as u32;
            t.ptr_arrays2
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .push(disp);
            t.u32_arrays.push(refs_box);
            t.u64_arrays.push(bm);
        }
        // 3. method handles
        let mut method_tok = 0u32;
        for &id in &ids {
            let def = program.def(id);
            let is_iface = def.kind == TypeKind::Interface;
            for (mi, m) in def.methods.iter().enumerate() {
                method_tok += 1;
                let mid = MemberId {
                    class: id,
                    index: mi as u32,
                };
                let mut flags = 0;
                if m.flags.is_static {
                    flags |= mflags::STATIC;
                }
                if m.flags.is_abstract || is_iface {
                    flags |= mflags::ABSTRACT;
                }
                if m.flags.is_native {
                    flags |= mflags::NATIVE;
                }
                if m.ret.is_some() {
                    flags |= mflags::RETURNS;
                }
                if is_iface {
                    flags |= mflags::INTERFACE;
                }
                let nargs = m.params.len() as u32 + (!m.flags.is_static) as u32;
                let nlocals = m.locals.len() as u32;
                let max_stack = frame(mid).map(|f| f.max_stack).unwrap_or(0);
                let mut sh = Vec::with_capacity((nargs + nlocals) as usize);
                let mut gc = Vec::new();
                let this_ty = TypeSig::Class(def.name.clone());
                let all = (!m.flags.is_static)
                    .then_some(&this_ty)
                    .into_iter()
                    .chain(m.params.iter().map(|v| &v.ty))
                    .chain(m.locals.iter().map(|v| &v.ty));
                for (si, ty) in all.enumerate() {
                    let th = t.type_handle_of(program, ty, &cptr);
                    if ty.is_ref() {
                        gc.push(si as u32);
                    }
                    sh.push(StackHandle {
                        type_handle: th,
                        offset: si as u32 * 8,
                        is_ref: ty.is_ref() as u32,
                    });
                }
                let sh: Box<[StackHandle]> = sh.into_boxed_slice();
                let gc: Box<[u32]> = gc.into_boxed_slice();
                let gcd = Box::new(GcData {
                    ref_slots: gc.as_ptr(),
                    ref_slot_count: gc.len() as u32,
                    safepoints: AtomicPtr::new(std::ptr::null_mut()),
                });
                let nat = if m.flags.is_native {
                    let f = native(&def.name, &m.name);
                    if f.is_none() {
                        errors.push(TableError::UnboundNative {
                            class: def.name.clone(),
                            method: m.name.clone(),
                            line: m.line,
                            lib: id.lib as usize,
                        });
                    }
                    f
                } else {
                    None
                };
                let entry: EntryFn = if m.flags.is_native {
                    crate::runtime::native_entry
                } else if m.has_body() && !is_iface {
                    crate::interp::interp_entry
                } else {
                    crate::runtime::abstract_entry
                };
                let mh = Box::new(MethodHandle {
                    entry: AtomicUsize::new(entry as usize),
                    method_token: 0x0600_0000 | method_tok,
                    max_stack,
                    local_offset: nargs * 8,
                    local_ptr_offset: nargs,
                    stack_ptr_offset: (nargs + nlocals) * 8,
                    frame_slots: nargs + nlocals + max_stack,
                    arg_count: nargs,
                    local_count: nlocals,
                    arg_local_ptr: sh.as_ptr(),
                    instruction_ptr: if m.code.is_empty() {
                        std::ptr::null()
                    } else {
                        m.code.as_ptr()
                    },
                    code_size: m.code.len() as u32,
                    flags,
                    vtable_slot: -1,
                    iface_index: if is_iface { mi as i32 } else { -1 },
                    class: cptr[t.class_index[&id]],
                    def: std::ptr::null(),
                    native: nat,
                    interp_code: AtomicPtr::new(std::ptr::null_mut()),
                    gc: &*gcd,
                    member: mid,
                    fast: AtomicUsize::new(0),
                });
                t.stack_handles.push(sh);
                t.u32_arrays.push(gc);
                t.gc_data.push(gcd);
                t.methods.insert(mid, mh);
            }
        }
        // 4. vtables (parents first) and interface slot tables
        let mut vtabs: HashMap<ClassId, Vec<*const MethodHandle>> = HashMap::new();
        for &(_, id) in &order {
            let def = program.def(id);
            if def.kind == TypeKind::Interface {
                continue;
            }
            let mut vt = program
                .parent(id)
                .and_then(|p| vtabs.get(&p).cloned())
                .unwrap_or_default();
            for (mi, m) in def.methods.iter().enumerate() {
                if m.flags.is_static
                    || !(m.flags.is_virtual || m.flags.is_abstract || m.flags.is_override)
                {
                    continue;
                }
                let mid = MemberId {
                    class: id,
                    index: mi as u32,
                };
                // an override takes the slot of the inherited method of the same name
                let inherited = program
                    .parent(id)
                    .and_then(|p| program.find_method(p, &m.name));
                let slot = inherited
                    .and_then(|im| t.methods.get(&im))
                    .map(|h| h.vtable_slot)
                    .filter(|&s| s >= 0 && m.flags.is_override);
                let mh = t.methods.get_mut(&mid).expect("built above");
                let s = match slot {
                    Some(s) => s as usize,
                    None => {
                        vt.push(std::ptr::null());
                        vt.len() - 1
                    }
                };
                mh.vtable_slot = s as i32;
                mh.flags |= mflags::VIRTUAL;
                vt[s] = &**mh;
            }
            vtabs.insert(id, vt);
        }
        for &id in &ids {
            let idx = t.class_index[&id];
            let def = program.def(id);
            if def.kind == TypeKind::Interface {
                continue;
            }
            let vt: Box<[*const MethodHandle]> =
                vtabs.remove(&id).unwrap_or_default().into_boxed_slice();
            let ifaces = program.interfaces_of(id);
            let n = ifaces.iter().map(|i| iface_ids[i] + 1).max().unwrap_or(0) as usize;
            let mut islots: Vec<*const *const MethodHandle> = vec![std::ptr::null(); n];
            for i in ifaces {
                let idef = program.def(i);
                let mut row: Vec<*const MethodHandle> = Vec::with_capacity(idef.methods.len());
                for (mi, im) in idef.methods.iter().enumerate() {
                    let imp = program
                        .find_method(id, &im.name)
                        .filter(|m| program.def(m.class).kind == TypeKind::Class);
                    let h = match imp.and_then(|m| t.methods.get(&m)) {
                        // dispatch through the vtable so overrides win
                        Some(h) if h.vtable_slot >= 0 && (h.vtable_slot as usize) < vt.len() => {
                            vt[h.vtable_slot as usize]
                        }
                        Some(h) => &**h as *const MethodHandle,
                        None => &**t
                            .methods
                            .get(&MemberId {
                                class: i,
                                index: mi as u32,
                            })
                            .expect("interface method"),
                    };
                    row.push(h);
                }
                let row: Box<[*const MethodHandle]> = row.into_boxed_slice();
                islots[iface_ids[&i] as usize] = row.as_ptr();
                t.ptr_arrays.push(row);
            }
            let islots: Box<[*const *const MethodHandle]> = islots.into_boxed_slice();
            let cd = &mut t.classes[idx];
            cd.vtable = vt.as_ptr();
            cd.vtable_len = vt.len() as u32;
            cd.islots = islots.as_ptr();
            cd.islots_len = islots.len() as u32;
            if let Some(c) = def
                .methods
                .iter()
                .position(|m| m.name == "ctor" && m.params.is_empty())
            {
                cd.default_ctor = &**t
                    .methods
                    .get(&MemberId {
                        class: id,
                        index: c as u32,
                    })
                    .expect("built");
            }
            t.ptr_arrays.push(vt);
            t.islot_arrays.push(islots);
        }
        t.build_definitions(program, &ids, &cptr);
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    fn type_handle_of(
        &self,
        program: &Program,
        ty: &TypeSig,
        cptr: &[*const ClassDesc],
    ) -> *const TypeHandle {
        match ty {
            TypeSig::Prim(p) | TypeSig::Atomic(p) => {
                let i = Prim::ALL
                    .iter()
                    .position(|q| q == p)
                    .expect("all prims listed");
                &*self.prim_types[i]
            }
            TypeSig::Class(n) => match program.class(n) {
                Some(id) => {
                    // SAFETY: cptr entries point to live boxed descriptors.
                    unsafe { &(*cptr[self.class_index[&id]]).type_handle }
                }
                None => std::ptr::null(),
            },
            TypeSig::Array(_) => {
                let a = self.array_class(program, ty);
                // SAFETY: array descriptors are boxed and live as long as self.
                unsafe { &(*a).type_handle }
            }
        }
    }

    fn attrs(&mut self, attrs: &[Attribute]) -> (*const CustomAttr, u32) {
        if attrs.is_empty() {
            return (std::ptr::null(), 0);
        }
        let mut out = Vec::new();
        for a in attrs {
            let args: Box<[AttrArgDef]> = a
                .args
                .iter()
                .map(|arg| {
                    let name = arg
                        .name
                        .as_deref()
                        .map(|n| self.rtstr(n))
                        .unwrap_or(RtStr::NONE);
                    let (kind, bits, text) = match &arg.value {
                        AttrValue::Int(v) => (0, *v as u64, RtStr::NONE),
                        AttrValue::Float(v) => (1, v.to_bits(), RtStr::NONE),
                        AttrValue::Str(s) => (2, 0, self.rtstr(s)),
                        AttrValue::Bool(b) => (3, *b as u64, RtStr::NONE),
                        AttrValue::Char(c) => (4, *c as u64, RtStr::NONE),
                    };
                    AttrArgDef {
                        name,
                        kind,
                        bits,
                        text,
                    }
                })
                .collect();
            out.push(CustomAttr {
                name: self.rtstr(&a.name),
                arg_count: args.len() as u32,
                args: args.as_ptr(),
            });
            self.attr_arg_defs.push(args);
        }
        let b: Box<[CustomAttr]> = out.into_boxed_slice();
        let r = (b.as_ptr(), b.len() as u32);
        self.attr_defs.push(b);
        r
    }

    fn build_definitions(&mut self, program: &Program, ids: &[ClassId], cptr: &[*const ClassDesc]) {
        let access_bits = |a: crate::library::Access| match a {
            crate::library::Access::Public => 0u32,
            crate::library::Access::Private => 1,
            crate::library::Access::Protected => 2,
        };
        for lib in &program.libs {
            let name = self.rtstr(&lib.name);
            self.libraries.push(Box::new(LibraryDef {
                name,
                reflection_only: 0,
                type_count: lib.types.len() as u32,
                types: std::ptr::null(),
            }));
        }
        let mut tdptr: HashMap<ClassId, *const TypeDefinition> = HashMap::new();
        for &id in ids {
            let def = program.def(id);
            let idx = self.class_index[&id];
            let attributes = (def.kind == TypeKind::Interface) as u32
                | ((def.is_abstract as u32) << 1)
                | ((def.is_sealed as u32) << 2)
                | (access_bits(def.access) << 4);
            let (attrs, attr_count) = self.attrs(&def.attrs);
            let td = Box::new(TypeDefinition {
                name: self.rtstr(&def.name),
                attributes,
                size: self.classes[idx].instance_size,
                library: &*self.libraries[id.lib as usize],
                parent: std::ptr::null(),
                declaring: std::ptr::null(),
                element: std::ptr::null(),
                default_ctor: std::ptr::null(),
                fields: std::ptr::null(),
                field_count: def.fields.len() as u32,
                method_count: def.methods.len() as u32,
                methods: std::ptr::null(),
                properties: std::ptr::null(),
                property_count: def.properties.len() as u32,
                attr_count,
                attrs,
                class: cptr[idx],
            });
            tdptr.insert(id, &*td);
            self.classes[idx].type_def = &*td;
            self.type_defs.push(td);
        }
        for (n, &id) in ids.iter().enumerate() {
            let def = program.def(id);
            let tdp = tdptr[&id];
            let mut fdefs = Vec::new();
            for (fi, f) in def.fields.iter().enumerate() {
                let (attrs, attr_count) = self.attrs(&f.attrs);
                let fh: *const FieldHandle = &**self
                    .fields
                    .get(&MemberId {
                        class: id,
                        index: fi as u32,
                    })
                    .expect("built");
                fdefs.push(FieldDefinition {
                    name: self.rtstr(&f.name),
                    type_name: self.rtstr(&f.ty.to_string()),
                    attributes: crate::library::field_flags(f.access, f.mutability) as u32
                        | ((f.is_static as u32) << 3),
                    attr_count,
                    attrs,
                    handle: fh,
                });
            }
            let fdefs: Box<[FieldDefinition]> = fdefs.into_boxed_slice();
            let mut mdefs = Vec::new();
            for (mi, m) in def.methods.iter().enumerate() {
                let (attrs, attr_count) = self.attrs(&m.attrs);
                let params: Box<[ParameterDefinition]> = m
                    .params
                    .iter()
                    .map(|p| ParameterDefinition {
                        name: self.rtstr(&p.name),
                        type_name: self.rtstr(&p.ty.to_string()),
                    })
                    .collect();
                let regions: Box<[ProtectedRegion]> = m
                    .handlers
                    .iter()
                    .map(|h| ProtectedRegion {
                        try_start: h.try_start,
                        try_end: h.try_end,
                        handler_start: h.handler_start,
                        handler_end: h.handler_end,
                        kind: matches!(h.kind, HandlerKind::Finally) as u32,
                        catch_class: match &h.kind {
                            HandlerKind::Catch(ti) => {
                                match program.libs[id.lib as usize].type_refs.get(*ti as usize) {
                                    Some(TypeSig::Class(c)) => program
                                        .class(c)
                                        .map(|c| cptr[self.class_index[&c]])
                                        .unwrap_or(std::ptr::null()),
                                    _ => std::ptr::null(),
                                }
                            }
                            HandlerKind::Finally => std::ptr::null(),
                        },
                    })
                    .collect();
                let mh: &MethodHandle = self
                    .methods
                    .get(&MemberId {
                        class: id,
                        index: mi as u32,
                    })
                    .expect("built");
                mdefs.push(MethodDefinition {
                    name: self.rtstr(&m.name),
                    return_type: self
                        .rtstr(&m.ret.as_ref().map(|r| r.to_string()).unwrap_or_default()),
                    attributes: mh.flags | (access_bits(m.access) << 8),
                    param_count: params.len() as u32,
                    params: params.as_ptr(),
                    handle: mh,
                    regions: regions.as_ptr(),
                    region_count: regions.len() as u32,
                    attr_count,
                    attrs,
                    declaring: tdp,
                });
                self.param_defs.push(params);
                self.region_defs.push(regions);
            }
            let mdefs: Box<[MethodDefinition]> = mdefs.into_boxed_slice();
            for (mi, md) in mdefs.iter().enumerate() {
                let mid = MemberId {
                    class: id,
                    index: mi as u32,
                };
                let mh = self.methods.get_mut(&mid).expect("built");
                mh.def = md;
                if !mh.instruction_ptr.is_null() {
                    self.lookup.push(MethodLookupEntry {
                        code_start: mh.instruction_ptr as usize,
                        code_size: mh.code_size as usize,
                        method: md,
                    });
                }
            }
            let props: Box<[PropertyDefinition]> = def
                .properties
                .iter()
                .map(|p| {
                    let find = |n: &Option<String>| {
                        n.as_ref()
                            .and_then(|n| def.methods.iter().position(|m| &m.name == n))
                            .map(|i| &mdefs[i] as *const MethodDefinition)
                            .unwrap_or(std::ptr::null())
                    };
                    PropertyDefinition {
                        name: self.rtstr(&p.name),
                        type_name: self.rtstr(&p.ty.to_string()),
                        getter: find(&p.getter),
                        setter: find(&p.setter),
                    }
                })
                .collect();
            let td = &mut self.type_defs[n];
            td.fields = fdefs.as_ptr();
            td.methods = mdefs.as_ptr();
            td.properties = props.as_ptr();
            td.parent = program
                .parent(id)
                .map(|p| tdptr[&p])
                .unwrap_or(std::ptr::null());
            if let Some(c) = def
                .methods
                .iter()
                .position(|m| m.name == "ctor" && m.params.is_empty())
            {
                td.default_ctor = &mdefs[c];
            }
            self.field_defs.push(fdefs);
            self.method_defs.push(mdefs);
            self.prop_defs.push(props);
        }
        for (li, lib) in program.libs.iter().enumerate() {
            let ptrs: Box<[*const TypeDefinition]> = (0..lib.types.len())
                .map(|ti| {
                    tdptr[&ClassId {
                        lib: li as u32,
                        ty: ti as u32,
                    }]
                })
                .collect();
            self.libraries[li].types = ptrs.as_ptr();
            self.type_def_ptrs.push(ptrs);
        }
        self.lookup.sort_by_key(|e| e.code_start);
    }

    /// The descriptor of a class or interface.
    pub fn class(&self, id: ClassId) -> *const ClassDesc {
        &*self.classes[self.class_index[&id]]
    }

    /// The descriptor of a class by name.
    pub fn class_named(&self, program: &Program, name: &str) -> Option<*const ClassDesc> {
        program.class(name).map(|id| self.class(id))
    }

    /// `Object`'s descriptor.
    pub fn object_class(&self) -> *const ClassDesc {
        self.object_class
    }

    /// The handle of a method.
    pub fn method(&self, m: MemberId) -> *const MethodHandle {
        &**self.methods.get(&m).expect("every method has a handle")
    }

    /// Every method handle.
    pub fn all_methods(&self) -> impl Iterator<Item = &MethodHandle> {
        self.methods.values().map(|b| &**b)
    }

    /// The handle of a field.
    pub fn field(&self, f: MemberId) -> &FieldHandle {
        self.fields.get(&f).expect("every field has a handle")
    }

    /// The descriptor for a type used as an `isinst`/`castclass` target or array
    /// element: classes and interfaces by name, arrays created on demand (one
    /// per element type, so array type tests are pointer comparisons).
    pub fn type_class(&self, program: &Program, ty: &TypeSig) -> Option<*const ClassDesc> {
        match ty {
            TypeSig::Class(n) => self.class_named(program, n),
            TypeSig::Array(_) => Some(self.array_class(program, ty)),
            _ => None,
        }
    }

    /// The array class `ty` (which must be `TypeSig::Array`).
    pub fn array_class(&self, program: &Program, ty: &TypeSig) -> *const ClassDesc {
        let TypeSig::Array(elem) = ty else {
            return std::ptr::null();
        };
        if let Some(c) = self
            .array_classes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ty)
        {
            return &**c;
        }
        // element first (may itself be an array), outside the lock
        let element = match &**elem {
            TypeSig::Prim(_) | TypeSig::Atomic(_) => std::ptr::null(),
            e => self.type_class(program, e).unwrap_or(std::ptr::null()),
        };
        let mut cd = Box::new(ClassDesc::blank());
        cd.kind = kind::ARRAY;
        cd.super_ = self.object_class;
        cd.depth = 1;
        cd.elem_size = elem.size();
        cd.elem_item_type = item_type(elem) as u32;
        cd.element = element;
        cd.instance_size = ARRAY_DATA_OFFSET as u32;
        cd.type_handle.type_size = ARRAY_DATA_OFFSET as u32;
        cd.type_handle.type_token = 0x1b00_0000;
        cd.name = self.rtstr(&ty.to_string());
        // an array class inherits Object's vtable
        // SAFETY: object_class points to a live descriptor (or is null in a broken program).
        if let Some(o) = unsafe { self.object_class.as_ref() } {
            cd.vtable = o.vtable;
            cd.vtable_len = o.vtable_len;
        }
        let words = (self.interface_count as usize).div_ceil(64).max(1);
        let bm: Box<[u64]> = vec![0u64; words].into_boxed_slice();
        cd.ibitmap = bm.as_ptr();
        cd.ibitmap_words = words as u32;
        let mut map = self.array_classes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(ty) {
            return &**c;
        }
        let disp: Box<[*const ClassDesc]> =
            vec![self.object_class, &*cd as *const ClassDesc].into_boxed_slice();
        cd.display = disp.as_ptr();
        self.ptr_arrays2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(disp);
        self.array_bitmaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bm);
        let p: *const ClassDesc = &*cd;
        map.insert(ty.clone(), cd);
        p
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        for &(p, layout) in &self.statics {
            // SAFETY: allocated in `build` with exactly this layout, freed once.
            unsafe { std::alloc::dealloc(p, layout) };
        }
        self.statics.clear();
    }
}

/// Look up the method whose code contains `pc` in a sorted lookup table.
pub fn lookup_method(table: &[MethodLookupEntry], pc: usize) -> Option<*const MethodDefinition> {
    let i = table.partition_point(|e| e.code_start <= pc);
    let e = table.get(i.checked_sub(1)?)?;
    (pc < e.code_start + e.code_size).then_some(e.method)
}

/// Helper for tests and the loader: `Ordering` used for method slots.
pub const SLOT_ORDERING: Ordering = Ordering::Acquire;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn offsets_are_stable() {
        assert_eq!(offset_of!(TypeHandle, type_token), 0);
        assert_eq!(offset_of!(TypeHandle, type_size), 4);
        assert_eq!(offset_of!(FieldHandle, field_token), 0);
        assert_eq!(offset_of!(FieldHandle, field_offset), 4);
        assert_eq!(offset_of!(FieldHandle, field_size), 8);
        assert_eq!(offset_of!(FieldHandle, static_addr), 16);
        assert_eq!(offset_of!(StackHandle, type_handle), 0);
        assert_eq!(offset_of!(StackHandle, offset), 8);
        assert_eq!(offsets::MH_ENTRY, 0);
        assert_eq!(offset_of!(MethodHandle, method_token), 8);
        assert_eq!(offset_of!(MethodHandle, max_stack), 12);
        assert_eq!(offset_of!(MethodHandle, local_offset), 16);
        assert_eq!(offset_of!(MethodHandle, local_ptr_offset), 20);
        assert_eq!(offset_of!(MethodHandle, stack_ptr_offset), 24);
        assert_eq!(offsets::MH_FRAME_SLOTS, 28);
        assert_eq!(offsets::MH_ARG_COUNT, 32);
        assert_eq!(offset_of!(MethodHandle, arg_local_ptr), 40);
        assert_eq!(offset_of!(MethodHandle, instruction_ptr), 48);
        assert_eq!(offsets::MH_VTABLE_SLOT, 64);
        assert_eq!(offsets::MH_FAST, 128);
        assert_eq!(offset_of!(ClassDesc, type_handle), 0);
        assert_eq!(offsets::CD_INSTANCE_SIZE, 8);
        assert_eq!(offset_of!(ClassDesc, super_), 16);
        assert_eq!(offsets::CD_DEPTH, 24);
        assert_eq!(offsets::CD_DISPLAY, 32);
        assert_eq!(offsets::CD_VTABLE, 40);
        assert_eq!(offsets::CD_ISLOTS, 56);
        assert_eq!(offsets::CD_ISLOTS_LEN, 64);
        assert_eq!(offsets::CD_IBITMAP_WORDS, 68);
        assert_eq!(offsets::CD_IBITMAP, 72);
        assert_eq!(offsets::CD_ELEM_SIZE, 80);
        assert_eq!(offsets::TH_SIZE, 4);
        assert_eq!(offsets::SH_OFFSET, 8);
        assert_eq!(offsets::FH_OFFSET, 4);
        assert_eq!(offsets::FH_STATIC_ADDR, 16);
        // The thread context fields compiled code reads.
        assert_eq!(offsets::TC_PENDING, 8);
        assert_eq!(offsets::TC_INTERRUPT, 16);
        assert_eq!(offsets::TC_STACK_LIMIT, 24);
        assert_eq!(offsets::TC_VS_TOP, 32);
        assert_eq!(offsets::TC_VS_END, 40);
        assert_eq!(offsets::TC_ALLOC_CACHE % 8, 0);
        assert_eq!(
            std::mem::size_of::<crate::safepoint::interrupt::InterruptWord>(),
            4
        );
    }

    #[test]
    fn lookup_finds_ranges() {
        let d1 = std::ptr::dangling::<MethodDefinition>();
        let d2 = d1.wrapping_add(1);
        let t = vec![
            MethodLookupEntry {
                code_start: 100,
                code_size: 10,
                method: d1,
            },
            MethodLookupEntry {
                code_start: 200,
                code_size: 5,
                method: d2,
            },
        ];
        assert_eq!(lookup_method(&t, 99), None);
        assert_eq!(lookup_method(&t, 100), Some(d1));
        assert_eq!(lookup_method(&t, 109), Some(d1));
        assert_eq!(lookup_method(&t, 110), None);
        assert_eq!(lookup_method(&t, 204), Some(d2));
        assert_eq!(lookup_method(&t, 205), None);
    }
}
