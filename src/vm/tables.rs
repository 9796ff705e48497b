//! Runtime table layouts in native memory (see `docs/runtime-tables.md`):
//! everything generated code and both tiers read by address.
//!
//! Everything here is `#[repr(C)]`; `runtime::tables::Tables` allocates and
//! owns the instances (boxed, so addresses never change while the tables
//! live). Generated code uses these structures by address and by the
//! [`offsets`] constants (checked against `offset_of!` by tests), never by
//! hard-coded numbers.
//!
//! Two layers:
//! - the *executable* handles of the Runtime Library Format: [`TypeHandle`],
//!   [`FieldHandle`], [`MethodHandle`] (with the method slot `entry`),
//!   [`StackHandle`] per argument and local, and the class descriptor
//!   [`ClassDesc`] (super, size, vtable, interface slot table, interface
//!   bitmap, depth + display for O(1) subclass tests, element type);
//! - MOSA-style *metadata* definitions: [`LibraryDef`], [`TypeDefinition`],
//!   [`FieldDefinition`], [`PropertyDefinition`], [`MethodDefinition`],
//!   [`ParameterDefinition`], [`CustomAttr`], [`ProtectedRegion`], [`GcData`]
//!   and the method lookup table ([`MethodLookupEntry`]).
//!
//! Invariants: every pointer in these tables points into the same tables
//! (or into the `Program` they were built from, which outlives them), or is
//! null. A method's frame is `frame_slots` 64-bit slots:
//! `[args | locals | evaluation stack]`.

use super::fault::Fault;
use crate::library::program::MemberId;
use crate::library::{Prim, TypeSig};
use crate::vm::thread::ThreadCtx;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// A native method's Rust implementation.
pub type NativeFn = fn(&mut ThreadCtx, &[u64]) -> Result<u64, Fault>;

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
    pub(crate) const NONE: RtStr = RtStr {
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
    /// Bits 8..16: the `ir::Intrinsic` a native bound to exactly the
    /// runtime's own implementation is (0: none); compiled code computes it
    /// inline, and the interpreter `Std::sqrt` too.
    pub const INTRINSIC_MASK: u32 = 0xFF << INTRINSIC_SHIFT;
    /// Shift of [`INTRINSIC_MASK`].
    pub const INTRINSIC_SHIFT: u32 = 8;
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
    /// The resolved method (`*const ir::Code`, owned by the runtime;
    /// read through `MethodHandle::code`), or null.
    pub code: AtomicPtr<u8>,
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
    pub const TC_PENDING: usize = offset_of!(crate::vm::thread::ThreadCtx, pending);
    /// `ThreadCtx::interrupt` (checked after every safepoint poll).
    pub const TC_INTERRUPT: usize = offset_of!(crate::vm::thread::ThreadCtx, interrupt);
    /// `ThreadCtx::alloc_cache` (one pointer per cached size class).
    pub const TC_ALLOC_CACHE: usize = offset_of!(crate::vm::thread::ThreadCtx, alloc_cache);
    /// `ThreadCtx::stack_limit` (compared with the native stack pointer on entry).
    pub const TC_STACK_LIMIT: usize = offset_of!(crate::vm::thread::ThreadCtx, stack_limit);
    /// `ThreadCtx::vs_top` (next free value-stack slot: compiled frames push their record here).
    pub const TC_VS_TOP: usize = offset_of!(crate::vm::thread::ThreadCtx, vs_top);
    /// `ThreadCtx::vs_end` (end of the value stack).
    pub const TC_VS_END: usize = offset_of!(crate::vm::thread::ThreadCtx, vs_end);
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

/// Look up the method whose code contains `pc` in a sorted lookup table.
pub fn lookup_method(table: &[MethodLookupEntry], pc: usize) -> Option<*const MethodDefinition> {
    let i = table.partition_point(|e| e.code_start <= pc);
    let e = table.get(i.checked_sub(1)?)?;
    (pc < e.code_start + e.code_size).then_some(e.method)
}
