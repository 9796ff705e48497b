//! Typed values at the boundary: [`HostType`] (a Rust type with a Kiln
//! counterpart), [`HostParams`] (tuples of them), [`HostReturn`], and
//! [`TypedMethod`], a static method whose signature was checked once.
//!
//! The conversions live in a sealed trait (`private::Sealed`), so the set
//! of types is closed and no runtime internals appear in the public API.

use super::{split_name, Error, Object, Vm};
use crate::library::{Prim, TypeSig, STRING};
use crate::runtime::call_from_host;
use crate::vm::tables::MethodHandle;
use crate::vm::thread::ThreadCtx;
use std::marker::PhantomData;

pub(crate) mod private {
    use super::*;

    /// The conversions of a [`HostType`] (sealed).
    pub trait Sealed: Sized {
        /// kasm-like name for signatures in messages.
        const NAME: &'static str;
        /// Whether a declared type accepts this Rust type.
        fn matches(t: &TypeSig) -> bool;
        /// Decode a slot (while attached); `Err` says why not (null, bad char).
        fn from_slot(vm: &Vm, v: u64) -> Result<Self, String>;
        /// Encode as a slot of declared type `ty` (while attached). May
        /// allocate; references are pushed on `ctx.roots` (the caller
        /// truncates them after the call).
        fn into_slot(self, vm: &Vm, ctx: &mut ThreadCtx, ty: &TypeSig) -> Result<u64, String>;
    }

    /// The conversions of a [`HostParams`] tuple (sealed).
    pub trait SealedParams: Sized {
        /// Rust type names, for messages.
        fn names() -> Vec<&'static str>;
        /// Whether each declared parameter accepts the tuple's type.
        fn matches(params: &[TypeSig]) -> bool;
        /// Encode into `out` (while attached); `Err((index, found))`.
        fn write(
            self,
            vm: &Vm,
            ctx: &mut ThreadCtx,
            decl: &[TypeSig],
            out: &mut [u64],
        ) -> Result<(), (usize, String)>;
        /// Decode from argument slots (while attached); `Err((index, why))`.
        fn read(vm: &Vm, a: &[u64]) -> Result<Self, (usize, String)>;
    }

    /// The conversions of a [`HostReturn`] (sealed).
    pub trait SealedReturn: Sized {
        /// Name for messages.
        const NAME: &'static str;
        /// Whether the declared return type (None = void) matches.
        fn matches(t: Option<&TypeSig>) -> bool;
        /// Decode the returned slot (while attached).
        fn from_ret(vm: &Vm, v: u64) -> Result<Self, String>;
        /// Encode a native's result (while attached; may allocate).
        fn into_ret(self, vm: &Vm, ctx: &mut ThreadCtx, t: Option<&TypeSig>)
            -> Result<u64, String>;
    }
}
use private::{Sealed, SealedParams, SealedReturn};

/// A Rust type with a Kiln counterpart: `bool`, `u8`, `char`, `i32`, `i64`,
/// `u64`, `f32`, `f64` (the same primitives), `String` (a non-null
/// `string`), [`Object`] (any non-null reference) and `Option<Object>` (any
/// reference, `None` for null).
pub trait HostType: Sealed {}

/// A tuple of up to eight [`HostType`]s: the parameters of a
/// [`TypedMethod`] or a typed native.
pub trait HostParams: SealedParams {}

/// A [`HostType`] or `()` (for `void`): the result of a [`TypedMethod`].
pub trait HostReturn: SealedReturn {}

macro_rules! prim_host_type {
    ($($t:ty => $p:ident, $name:literal, |$v:ident| $dec:expr, |$x:ident| $enc:expr;)*) => {$(
        impl Sealed for $t {
            const NAME: &'static str = $name;
            fn matches(t: &TypeSig) -> bool {
                *t == TypeSig::Prim(Prim::$p)
            }
            fn from_slot(_vm: &Vm, $v: u64) -> Result<Self, String> {
                Ok($dec)
            }
            fn into_slot(self, _vm: &Vm, _ctx: &mut ThreadCtx, _ty: &TypeSig) -> Result<u64, String> {
                let $x = self;
                Ok($enc)
            }
        }
        impl HostType for $t {}
    )*};
}

prim_host_type! {
    bool => Bool, "bool", |v| v as u32 != 0, |x| x as u64;
    u8 => U8, "u8", |v| v as u8, |x| x as u64;
    i32 => I32, "i32", |v| v as i32, |x| x as i64 as u64;
    i64 => I64, "i64", |v| v as i64, |x| x as u64;
    u64 => U64, "u64", |v| v, |x| x;
    f32 => F32, "f32", |v| f32::from_bits(v as u32), |x| x.to_bits() as u64;
    f64 => F64, "f64", |v| f64::from_bits(v), |x| x.to_bits();
}

impl Sealed for char {
    const NAME: &'static str = "char";
    fn matches(t: &TypeSig) -> bool {
        *t == TypeSig::Prim(Prim::Char)
    }
    fn from_slot(_vm: &Vm, v: u64) -> Result<Self, String> {
        char::from_u32(v as u32).ok_or_else(|| format!("0x{:x} is not a char", v as u32))
    }
    fn into_slot(self, _vm: &Vm, _ctx: &mut ThreadCtx, _ty: &TypeSig) -> Result<u64, String> {
        Ok(self as u64)
    }
}
impl HostType for char {}

impl Sealed for String {
    const NAME: &'static str = "string";
    fn matches(t: &TypeSig) -> bool {
        *t == TypeSig::class(STRING)
    }
    fn from_slot(_vm: &Vm, v: u64) -> Result<Self, String> {
        if v == 0 {
            return Err("null".into());
        }
        // SAFETY: a non-null string-typed slot holds a live string (verified
        // code, or a handle's object); read while attached.
        let b = unsafe { crate::vm::object::string_bytes(v as *const u8) };
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn into_slot(self, vm: &Vm, ctx: &mut ThreadCtx, _ty: &TypeSig) -> Result<u64, String> {
        let p = vm.rt().new_string(self.as_bytes()).map_err(|f| f.message)?;
        ctx.roots.push(p);
        Ok(p as u64)
    }
}
impl HostType for String {}

fn object_slot(o: &Object, vm: &Vm, ctx: &mut ThreadCtx, ty: &TypeSig) -> Result<u64, String> {
    if !o.belongs_to(vm) {
        return Err("an object of another Vm".into());
    }
    let p = o.raw();
    let rt = vm.rt();
    if let Some(target) = rt.tables.type_class(&rt.program, ty) {
        // SAFETY: live descriptors of this runtime (the handle keeps `p` alive).
        if !unsafe { (*crate::vm::object::class_of(p)).instance_of(&*target) } {
            return Err(format!("an object of class {}", o.class_name()));
        }
    }
    ctx.roots.push(p);
    Ok(p as u64)
}

impl Sealed for Object {
    const NAME: &'static str = "Object";
    fn matches(t: &TypeSig) -> bool {
        t.is_ref()
    }
    fn from_slot(vm: &Vm, v: u64) -> Result<Self, String> {
        if v == 0 {
            return Err("null".into());
        }
        Ok(Object::new(vm, v as *mut u8))
    }
    fn into_slot(self, vm: &Vm, ctx: &mut ThreadCtx, ty: &TypeSig) -> Result<u64, String> {
        object_slot(&self, vm, ctx, ty)
    }
}
impl HostType for Object {}

impl Sealed for Option<Object> {
    const NAME: &'static str = "Option<Object>";
    fn matches(t: &TypeSig) -> bool {
        t.is_ref()
    }
    fn from_slot(vm: &Vm, v: u64) -> Result<Self, String> {
        Ok((v != 0).then(|| Object::new(vm, v as *mut u8)))
    }
    fn into_slot(self, vm: &Vm, ctx: &mut ThreadCtx, ty: &TypeSig) -> Result<u64, String> {
        match self {
            None => Ok(0),
            Some(o) => object_slot(&o, vm, ctx, ty),
        }
    }
}
impl HostType for Option<Object> {}

impl<T: HostType> SealedReturn for T {
    const NAME: &'static str = T::NAME;
    fn matches(t: Option<&TypeSig>) -> bool {
        t.is_some_and(T::matches)
    }
    fn from_ret(vm: &Vm, v: u64) -> Result<Self, String> {
        T::from_slot(vm, v)
    }
    fn into_ret(self, vm: &Vm, ctx: &mut ThreadCtx, t: Option<&TypeSig>) -> Result<u64, String> {
        match t {
            Some(t) => self.into_slot(vm, ctx, t),
            None => Err("a value for a void method".into()),
        }
    }
}
impl<T: HostType> HostReturn for T {}

impl SealedReturn for () {
    const NAME: &'static str = "()";
    fn matches(t: Option<&TypeSig>) -> bool {
        t.is_none()
    }
    fn from_ret(_vm: &Vm, _v: u64) -> Result<Self, String> {
        Ok(())
    }
    fn into_ret(self, _vm: &Vm, _ctx: &mut ThreadCtx, _t: Option<&TypeSig>) -> Result<u64, String> {
        Ok(0)
    }
}
impl HostReturn for () {}

macro_rules! tuple_params {
    ($n:literal; $($t:ident $i:tt),*) => {
        impl<$($t: HostType),*> SealedParams for ($($t,)*) {
            fn names() -> Vec<&'static str> {
                vec![$($t::NAME),*]
            }
            fn matches(params: &[TypeSig]) -> bool {
                params.len() == $n $(&& $t::matches(&params[$i]))*
            }
            #[allow(unused_variables)]
            fn write(
                self,
                vm: &Vm,
                ctx: &mut ThreadCtx,
                decl: &[TypeSig],
                out: &mut [u64],
            ) -> Result<(), (usize, String)> {
                $(out[$i] = self.$i.into_slot(vm, ctx, &decl[$i]).map_err(|e| ($i, e))?;)*
                Ok(())
            }
            #[allow(unused_variables)]
            fn read(vm: &Vm, a: &[u64]) -> Result<Self, (usize, String)> {
                Ok(($($t::from_slot(vm, a[$i]).map_err(|e| ($i, e))?,)*))
            }
        }
        impl<$($t: HostType),*> HostParams for ($($t,)*) {}
    };
}

tuple_params!(0;);
tuple_params!(1; A 0);
tuple_params!(2; A 0, B 1);
tuple_params!(3; A 0, B 1, C 2);
tuple_params!(4; A 0, B 1, C 2, D 3);
tuple_params!(5; A 0, B 1, C 2, D 3, E 4);
tuple_params!(6; A 0, B 1, C 2, D 3, E 4, F 5);
tuple_params!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_params!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// `fn(i64, f64) -> i64` for messages.
pub(crate) fn rust_signature<P: HostParams, R: HostReturn>() -> String {
    format!("fn({}) -> {}", P::names().join(", "), R::NAME)
}

/// A static method with a Rust signature checked once by [`Vm::typed`]:
/// calls go straight to the method's entry (compiled code in JIT mode)
/// with no per-call lookup or dynamic type checks of primitives.
///
/// ```
/// # use kiln::{Config, Vm};
/// let src = ".library t\n.class public M {\n .method public static scale(a: i64, f: f64) -> f64 {\n  ldarg a\n  conv.f64\n  ldarg f\n  mul\n  ret\n }\n}\n";
/// let vm = Vm::from_kasm(&Config::new(), "t", src)?;
/// let scale = vm.typed::<(i64, f64), f64>("M::scale")?;
/// assert_eq!(scale.call((4, 0.5))?, 2.0);
/// assert!(vm.typed::<(i64,), f64>("M::scale").is_err()); // wrong signature
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct TypedMethod<P, R> {
    vm: Vm,
    mh: usize,
    name: String,
    params: Vec<TypeSig>,
    _sig: PhantomData<fn(P) -> R>,
}

impl<P, R> Clone for TypedMethod<P, R> {
    fn clone(&self) -> Self {
        TypedMethod {
            vm: self.vm.clone(),
            mh: self.mh,
            name: self.name.clone(),
            params: self.params.clone(),
            _sig: PhantomData,
        }
    }
}

impl<P, R> std::fmt::Debug for TypedMethod<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TypedMethod({})", self.name)
    }
}

impl Vm {
    /// Look up the static method `"Class::method"` and check that its
    /// declaration is `P -> R` ([`Error::Signature`] otherwise).
    pub fn typed<P: HostParams, R: HostReturn>(
        &self,
        method: &str,
    ) -> Result<TypedMethod<P, R>, Error> {
        let (class, name) = split_name(method)?;
        let id = self.class_id(class)?;
        let m = self.find_method(id, name)?;
        let rt = self.rt();
        let def = rt.program.method(m);
        if !def.flags.is_static {
            return Err(Error::WrongMethodKind {
                method: method.to_string(),
                is_static: false,
            });
        }
        let params: Vec<TypeSig> = def.params.iter().map(|p| p.ty.clone()).collect();
        if !P::matches(&params) || !R::matches(def.ret.as_ref()) {
            return Err(Error::Signature {
                method: method.to_string(),
                declared: super::reflect::signature_of(def),
                requested: rust_signature::<P, R>(),
            });
        }
        Ok(TypedMethod {
            vm: self.clone(),
            mh: rt.tables.method(m) as usize,
            name: method.to_string(),
            params,
            _sig: PhantomData,
        })
    }
}

impl<P: HostParams, R: HostReturn> TypedMethod<P, R> {
    /// Call the method. Errors: [`Error::ArgumentType`] (an object of the
    /// wrong class or Vm, or an allocation failure for a `String`
    /// argument), [`Error::Type`] (a null result for `String`/`Object`),
    /// [`Error::Exception`].
    pub fn call(&self, args: P) -> Result<R, Error> {
        let vm = &self.vm;
        vm.enter(|ctx| {
            let roots = ctx.roots.len();
            let mut slots = [0u64; 8];
            let w = args.write(vm, ctx, &self.params, &mut slots);
            let r = match w {
                Err((index, found)) => Err(Error::ArgumentType {
                    method: self.name.clone(),
                    index,
                    expected: self.params[index].to_string(),
                    found,
                }),
                Ok(()) => {
                    // SAFETY: `mh` is a live handle of this Vm's runtime (the
                    // Vm is kept alive by `self`); the slots match the
                    // declaration (checked by `typed` and `write`); the
                    // reference arguments are in `ctx.roots`.
                    let r = unsafe {
                        call_from_host(ctx, self.mh as *const MethodHandle, slots.as_ptr())
                    };
                    vm.check_pending(ctx).and_then(|()| {
                        R::from_ret(vm, r).map_err(|found| Error::Type {
                            what: format!("{} result", self.name),
                            expected: R::NAME.into(),
                            found,
                        })
                    })
                }
            };
            ctx.roots.truncate(roots);
            r
        })
    }

    /// `Class::method`.
    pub fn name(&self) -> &str {
        &self.name
    }
}
