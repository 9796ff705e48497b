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

use crate::library::program::{ClassId, MemberId, Program};
use crate::library::{AttrValue, Attribute, HandlerKind, Prim, TypeKind, TypeSig};
use crate::vm::object::{ARRAY_DATA_OFFSET, HEADER_SIZE};
use crate::vm::tables::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

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
        body_entry: EntryFn,
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
                if let Some((f, i)) = super::natives::intrinsic(&def.name, &m.name) {
                    if nat.is_some_and(|n| n as usize == f as usize) {
                        flags |= i.flags();
                    }
                }
                let entry: EntryFn = if m.flags.is_native {
                    crate::runtime::native_entry
                } else if m.has_body() && !is_iface {
                    body_entry
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
                    code: AtomicPtr::new(std::ptr::null_mut()),
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
