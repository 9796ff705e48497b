//! [`Value`] (a dynamically typed Kiln value) and [`Object`] (a rooted
//! handle to a managed object), with their conversions to and from the
//! runtime's 64-bit slots and storage.
//!
//! Slot representation (as everywhere in the runtime): `i32`, `bool`, `u8`
//! and `char` sign-/zero-extended to 64 bits, `f32` bits in the low 32,
//! `f64` bits, references as addresses (0 = null).
//!
//! Invariant: every function that reads an object's memory or turns an
//! address into an [`Object`] runs while the thread is attached to the
//! runtime and running (inside [`Vm::enter`](super::Vm)), so no collection
//! runs in between.

use super::{Error, Vm};
use crate::library::{Mutability, Prim, TypeSig, OBJECT, STRING};
use crate::vm::object::{array_len, class_of, string_bytes, ARRAY_DATA_OFFSET};
use crate::vm::tables::{kind, ClassDesc};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// A Kiln value passed to or returned from Kiln code.
///
/// Build them with the variants or with `From`: `Value::from(5i64)`,
/// `3.5f64.into()`, `Value::from(&object)`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// The result of a `void` method.
    Void,
    /// A null reference (valid for any reference type).
    Null,
    /// `bool`.
    Bool(bool),
    /// `u8`.
    U8(u8),
    /// `char`.
    Char(char),
    /// `i32`.
    I32(i32),
    /// `i64`.
    I64(i64),
    /// `u64`.
    U64(u64),
    /// `f32`.
    F32(f32),
    /// `f64`.
    F64(f64),
    /// `ptr` / `mutptr`: an opaque native address, as an integer.
    Ptr(usize),
    /// A reference to an object, string or array.
    Object(Object),
}

macro_rules! value_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Value {
                Value::$v(x)
            }
        }
    )*};
}
value_from!(bool => Bool, u8 => U8, char => Char, i32 => I32, i64 => I64, u64 => U64, f32 => F32, f64 => F64, Object => Object);

impl From<&Object> for Value {
    fn from(o: &Object) -> Value {
        Value::Object(o.clone())
    }
}

impl From<Option<Object>> for Value {
    fn from(o: Option<Object>) -> Value {
        o.map_or(Value::Null, Value::Object)
    }
}

impl Value {
    /// The `i32`, if this is one.
    pub fn as_i32(&self) -> Option<i32> {
        match self {
            Value::I32(x) => Some(*x),
            _ => None,
        }
    }

    /// The `i64`, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::I64(x) => Some(*x),
            _ => None,
        }
    }

    /// The `f64`, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(x) => Some(*x),
            _ => None,
        }
    }

    /// The `bool`, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(x) => Some(*x),
            _ => None,
        }
    }

    /// The object, if this is a non-null reference.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The contents of a string reference (`None` for anything else).
    pub fn as_string(&self) -> Option<String> {
        self.as_object().and_then(|o| o.to_str().ok())
    }

    /// A short description of the value's type (for error messages).
    pub fn type_name(&self) -> String {
        match self {
            Value::Void => "void".into(),
            Value::Null => "null".into(),
            Value::Bool(_) => "bool".into(),
            Value::U8(_) => "u8".into(),
            Value::Char(_) => "char".into(),
            Value::I32(_) => "i32".into(),
            Value::I64(_) => "i64".into(),
            Value::U64(_) => "u64".into(),
            Value::F32(_) => "f32".into(),
            Value::F64(_) => "f64".into(),
            Value::Ptr(_) => "ptr".into(),
            Value::Object(o) => format!("an object of class {}", o.class_name()),
        }
    }
}

/// A rooted handle to a managed object (an instance, string or array).
///
/// While a handle exists its object stays alive across collections: the
/// handle owns a slot of the runtime's host root table, which the collector
/// marks, and reads its object through that slot. Dropping the handle
/// releases the slot. Cloning makes a second handle (a second slot) to the
/// same object. Handles are `Send + Sync`; every operation attaches the
/// calling thread for its duration.
///
/// ```
/// # use kiln::{Config, Vm, Value};
/// let src = ".library p\n.class public P {\n .field public mutable x: i64\n .method public ctor(x: i64) {\n  ldarg this\n  ldarg x\n  stfld P::x\n  ret\n }\n .method public get() -> i64 {\n  ldarg this\n  ldfld P::x\n  ret\n }\n}\n";
/// let vm = Vm::from_kasm(&Config::new(), "p", src)?;
/// let p = vm.new_object("P", &[Value::I64(7)])?;
/// assert_eq!(p.get("x")?, Value::I64(7));
/// p.set("x", 9i64)?;
/// assert_eq!(p.call("get", &[])?, Value::I64(9));
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Object {
    vm: Vm,
    slot: u32,
}

impl Object {
    /// A new handle for `p` (non-null). Must run while attached.
    pub(crate) fn new(vm: &Vm, p: *mut u8) -> Object {
        Object {
            vm: vm.clone(),
            slot: vm.rt().gc.add_host_root(p),
        }
    }

    /// The object's address (read through the root slot).
    pub(crate) fn raw(&self) -> *mut u8 {
        self.vm.rt().gc.host_root(self.slot)
    }

    pub(crate) fn belongs_to(&self, vm: &Vm) -> bool {
        std::sync::Arc::ptr_eq(&self.vm.inner, &vm.inner)
    }

    /// The [`Vm`] this object belongs to.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    fn desc(&self) -> &ClassDesc {
        // SAFETY: the handle keeps the object alive; its class descriptor
        // lives as long as the runtime, which the handle keeps alive.
        unsafe { &*class_of(self.raw()) }
    }

    /// The object's class name (`Point`, `String`, `i64[]`).
    pub fn class_name(&self) -> String {
        self.desc().name().to_string()
    }

    /// Whether the object is an instance of `class` (a class or interface
    /// name, or an array type such as `i64[]`).
    pub fn instance_of(&self, class: &str) -> Result<bool, Error> {
        let ty = parse_type(&self.vm, class)?;
        let rt = self.vm.rt();
        let target = rt
            .tables
            .type_class(&rt.program, &ty)
            .ok_or_else(|| Error::UnknownClass(class.to_string()))?;
        // SAFETY: a live descriptor of this runtime.
        Ok(self.desc().instance_of(unsafe { &*target }))
    }

    /// Whether both handles refer to the same object.
    pub fn same(&self, other: &Object) -> bool {
        self.raw() == other.raw()
    }

    /// Whether this is a string.
    pub fn is_string(&self) -> bool {
        std::ptr::eq(self.desc(), self.vm.rt().string_class)
    }

    /// Whether this is an array.
    pub fn is_array(&self) -> bool {
        self.desc().kind == kind::ARRAY
    }

    /// The contents of a string (invalid UTF-8 is replaced; Kiln strings
    /// built from text are valid UTF-8). [`Error::Type`] if not a string.
    pub fn to_str(&self) -> Result<String, Error> {
        if !self.is_string() {
            return Err(Error::Type {
                what: "string contents".into(),
                expected: "string".into(),
                found: self.class_name(),
            });
        }
        self.vm.enter(|_| {
            // SAFETY: a live string object (checked above), read while attached.
            let b = unsafe { string_bytes(self.raw()) };
            Ok(String::from_utf8_lossy(b).into_owned())
        })
    }

    /// The length of an array. [`Error::Type`] if not an array.
    pub fn len(&self) -> Result<usize, Error> {
        self.array_type()?;
        // SAFETY: a live array (checked by array_type).
        Ok(unsafe { array_len(self.raw()) } as usize)
    }

    /// Whether this is an empty array ([`Error::Type`] if not an array).
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// The element type of an array.
    fn array_type(&self) -> Result<TypeSig, Error> {
        if !self.is_array() {
            return Err(Error::Type {
                what: "array access".into(),
                expected: "an array".into(),
                found: self.class_name(),
            });
        }
        let name = self.class_name();
        let elem = name.strip_suffix("[]").unwrap_or(&name);
        parse_type(&self.vm, elem)
    }

    fn element_addr(&self, i: usize) -> Result<(TypeSig, usize), Error> {
        let ty = self.array_type()?;
        let len = self.len()?;
        if i >= len {
            return Err(Error::IndexOutOfRange { index: i, len });
        }
        let size = self.desc().elem_size as usize;
        Ok((ty, ARRAY_DATA_OFFSET + i * size))
    }

    /// Element `i` of an array.
    pub fn get_index(&self, i: usize) -> Result<Value, Error> {
        let (ty, off) = self.element_addr(i)?;
        self.vm.enter(|_| {
            // SAFETY: in bounds of a live array of `ty`, read while attached.
            Ok(unsafe { load_value(&self.vm, self.raw().add(off), &ty) })
        })
    }

    /// Store `v` into element `i` of an array.
    pub fn set_index(&self, i: usize, v: impl Into<Value>) -> Result<(), Error> {
        let v = v.into();
        let (ty, off) = self.element_addr(i)?;
        self.vm.enter(|_| {
            let slot = to_slot(&self.vm, &v, &ty).map_err(|found| Error::Type {
                what: format!("{} element", self.class_name()),
                expected: ty.to_string(),
                found,
            })?;
            // SAFETY: in bounds of a live array of `ty`, written while attached.
            unsafe { store_slot(self.raw().add(off), &ty, slot) };
            Ok(())
        })
    }

    /// The elements of an array, in order.
    pub fn to_vec(&self) -> Result<Vec<Value>, Error> {
        (0..self.len()?).map(|i| self.get_index(i)).collect()
    }

    fn field(&self, name: &str) -> Result<(String, TypeSig, usize, Mutability), Error> {
        let rt = self.vm.rt();
        let cname = self.class_name();
        let unknown = || Error::UnknownField {
            class: cname.clone(),
            field: name.to_string(),
        };
        let id = rt.program.class(&cname).ok_or_else(unknown)?;
        let m = rt.program.find_field(id, name).ok_or_else(unknown)?;
        let fd = &rt.program.def(m.class).fields[m.index as usize];
        if fd.is_static {
            return Err(unknown());
        }
        let off = rt.tables.field(m).field_offset as usize;
        Ok((
            format!("{}::{}", rt.program.def(m.class).name, fd.name),
            fd.ty.clone(),
            off,
            fd.mutability,
        ))
    }

    /// Read the instance field `name` (declared by the object's class or an ancestor).
    pub fn get(&self, name: &str) -> Result<Value, Error> {
        let (_, ty, off, _) = self.field(name)?;
        self.vm.enter(|_| {
            // SAFETY: a field of a live object, read while attached.
            Ok(unsafe { load_value(&self.vm, self.raw().add(off), &ty) })
        })
    }

    /// Store `v` into the instance field `name`, which must be `mutable` or
    /// `mutable(self)` ([`Error::Immutable`] otherwise: the JIT may rely on
    /// immutable fields not changing after construction).
    pub fn set(&self, name: &str, v: impl Into<Value>) -> Result<(), Error> {
        let v = v.into();
        let (full, ty, off, m) = self.field(name)?;
        if m == Mutability::Immutable {
            return Err(Error::Immutable(full));
        }
        self.vm.enter(|_| {
            let slot = to_slot(&self.vm, &v, &storage_type(&ty)).map_err(|found| Error::Type {
                what: full.clone(),
                expected: ty.to_string(),
                found,
            })?;
            // SAFETY: a field of a live object, written while attached.
            unsafe { store_slot(self.raw().add(off), &ty, slot) };
            Ok(())
        })
    }

    /// Export the object graph reachable from this object (a tree of
    /// objects and arrays; strings may be shared) in the self-describing
    /// layout (`docs/exchange.md`); [`Vm::import`] rebuilds it.
    ///
    /// Errors: [`Error::Exchange`] for a cycle, a shared object, a raw
    /// pointer field, a string or array root, or an encoding over the size limit.
    pub fn export(&self) -> Result<Vec<u8>, Error> {
        self.vm.enter(|_| {
            // SAFETY: the object is rooted by this handle; the thread is
            // attached and running and export allocates nothing on the
            // managed heap, so no collection runs during the call.
            unsafe { crate::exchange::export(self.vm.rt(), self.raw()) }.map_err(Error::Exchange)
        })
    }

    /// Call the instance method `method` on this object. The method is
    /// looked up by name from the object's own class upwards, so an
    /// override is found before the method it overrides (virtual dispatch).
    pub fn call(&self, method: &str, args: &[Value]) -> Result<Value, Error> {
        let vm = &self.vm;
        let cname = self.class_name();
        let id = vm.class_id(&cname)?;
        let m = vm.find_method(id, method)?;
        let def = vm.rt().program.method(m);
        if def.flags.is_static {
            return Err(Error::WrongMethodKind {
                method: format!("{}::{}", vm.rt().program.def(m.class).name, method),
                is_static: true,
            });
        }
        if def.flags.is_abstract {
            return Err(Error::UnknownMethod {
                class: cname,
                method: method.to_string(),
            });
        }
        vm.enter(|ctx| vm.invoke(ctx, m, Some(self.raw()), args))
    }
}

impl Clone for Object {
    fn clone(&self) -> Object {
        Object {
            vm: self.vm.clone(),
            slot: self.vm.rt().gc.add_host_root(self.raw()),
        }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        self.vm.rt().gc.remove_host_root(self.slot);
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Object) -> bool {
        self.same(other)
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Object({}#{})", self.class_name(), self.slot)
    }
}

/// Strip `atomic`: the value type a field of type `t` holds.
pub(crate) fn storage_type(t: &TypeSig) -> TypeSig {
    match t {
        TypeSig::Atomic(p) => TypeSig::Prim(*p),
        t => t.clone(),
    }
}

/// Parse a kasm type (`i64`, `string`, `object`, `Point`, `f64[]`); class
/// names must exist in the program.
pub(crate) fn parse_type(vm: &Vm, s: &str) -> Result<TypeSig, Error> {
    let s = s.trim();
    if let Some(e) = s.strip_suffix("[]") {
        return Ok(TypeSig::Array(Box::new(parse_type(vm, e)?)));
    }
    if let Some(p) = Prim::from_name(s) {
        return Ok(TypeSig::Prim(p));
    }
    let name = match s {
        "string" => STRING,
        "object" => OBJECT,
        n => n,
    };
    vm.class_id(name)?;
    Ok(TypeSig::class(name))
}

/// Encode `v` as a slot of type `ty`; `Err` describes what was given instead.
/// Must run while attached (it reads object headers).
pub(crate) fn to_slot(vm: &Vm, v: &Value, ty: &TypeSig) -> Result<u64, String> {
    let mismatch = || Err(v.type_name());
    match (ty, v) {
        (TypeSig::Prim(p) | TypeSig::Atomic(p), v) => match (p, v) {
            (Prim::Bool, Value::Bool(b)) => Ok(*b as u64),
            (Prim::U8, Value::U8(x)) => Ok(*x as u64),
            (Prim::Char, Value::Char(c)) => Ok(*c as u64),
            (Prim::I32, Value::I32(x)) => Ok(*x as i64 as u64),
            (Prim::I64, Value::I64(x)) => Ok(*x as u64),
            (Prim::U64, Value::U64(x)) => Ok(*x),
            (Prim::F32, Value::F32(x)) => Ok(x.to_bits() as u64),
            (Prim::F64, Value::F64(x)) => Ok(x.to_bits()),
            (Prim::Ptr | Prim::MutPtr, Value::Ptr(x)) => Ok(*x as u64),
            _ => mismatch(),
        },
        (_, Value::Null) => Ok(0),
        (_, Value::Object(o)) => {
            if !o.belongs_to(vm) {
                return Err("an object of another Vm".into());
            }
            let rt = vm.rt();
            let p = o.raw();
            if let Some(target) = rt.tables.type_class(&rt.program, ty) {
                // SAFETY: live descriptors of this runtime.
                let ok = unsafe { (*class_of(p)).instance_of(&*target) };
                if !ok {
                    return mismatch();
                }
            }
            Ok(p as u64)
        }
        _ => mismatch(),
    }
}

/// Decode a slot of type `ty`. Must run while attached (it makes handles).
pub(crate) fn from_slot(vm: &Vm, v: u64, ty: &TypeSig) -> Value {
    match ty {
        TypeSig::Prim(p) | TypeSig::Atomic(p) => match p {
            Prim::Bool => Value::Bool(v as u32 != 0),
            Prim::U8 => Value::U8(v as u8),
            Prim::Char => Value::Char(char::from_u32(v as u32).unwrap_or('\u{FFFD}')),
            Prim::I32 => Value::I32(v as i32),
            Prim::I64 => Value::I64(v as i64),
            Prim::U64 => Value::U64(v),
            Prim::F32 => Value::F32(f32::from_bits(v as u32)),
            Prim::F64 => Value::F64(f64::from_bits(v)),
            Prim::Ptr | Prim::MutPtr => Value::Ptr(v as usize),
        },
        _ if v == 0 => Value::Null,
        _ => Value::Object(Object::new(vm, v as *mut u8)),
    }
}

/// Load a value of storage type `ty` from `p`.
///
/// # Safety
/// `p` is a valid, aligned location of `ty` in a live object or static
/// memory; the thread is attached.
pub(crate) unsafe fn load_value(vm: &Vm, p: *const u8, ty: &TypeSig) -> Value {
    // SAFETY: per the contract.
    let raw = unsafe {
        match ty {
            TypeSig::Prim(Prim::Bool | Prim::U8) => *p as u64,
            TypeSig::Prim(Prim::I32 | Prim::Char) => *(p as *const i32) as i64 as u64,
            TypeSig::Prim(Prim::F32) => *(p as *const u32) as u64,
            TypeSig::Atomic(Prim::Bool | Prim::U8) => {
                (*(p as *const AtomicU8)).load(Ordering::SeqCst) as u64
            }
            TypeSig::Atomic(_) => (*(p as *const AtomicU64)).load(Ordering::SeqCst),
            _ => *(p as *const u64),
        }
    };
    from_slot(vm, raw, ty)
}

/// Store slot value `v` with storage type `ty` at `p`.
///
/// # Safety
/// As [`load_value`].
pub(crate) unsafe fn store_slot(p: *mut u8, ty: &TypeSig, v: u64) {
    // SAFETY: per the contract.
    unsafe {
        match ty {
            TypeSig::Prim(Prim::Bool) => *p = (v as u32 != 0) as u8,
            TypeSig::Prim(Prim::U8) => *p = v as u8,
            TypeSig::Prim(Prim::I32 | Prim::Char | Prim::F32) => *(p as *mut u32) = v as u32,
            TypeSig::Atomic(Prim::Bool) => {
                (*(p as *const AtomicU8)).store((v as u32 != 0) as u8, Ordering::SeqCst)
            }
            TypeSig::Atomic(Prim::U8) => (*(p as *const AtomicU8)).store(v as u8, Ordering::SeqCst),
            TypeSig::Atomic(_) => (*(p as *const AtomicU64)).store(v, Ordering::SeqCst),
            _ => *(p as *mut u64) = v,
        }
    }
}
