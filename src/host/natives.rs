//! Host natives: [`Linker`] maps `native` methods declared in kasm to Rust
//! closures, registered before [`Vm::new`](super::Vm::new) binds them.
//!
//! A bound closure runs on the thread that called the native, which stays
//! attached and running: its arguments are in the calling frame's slots (a
//! call safepoint), so they stay alive; it may call back into Kiln through
//! its [`Caller`] (or any [`Vm`] method), which reuses the thread's context.
//! A closure returning `Err(Throw)` throws a Kiln exception; a panic is
//! caught here (it never unwinds through runtime or JIT frames) and
//! becomes an `Exception` naming the native.

use super::typed::private::{Sealed, SealedParams, SealedReturn};
use super::typed::{HostParams, HostReturn, HostType};
use super::{Error, NativeSite, Object, Value, Vm};
use crate::library::program::Program;
use crate::library::{MethodDef, TypeSig};
use crate::runtime::HostNativeFn;
use crate::vm::fault::{Fault, FaultKind};
use crate::vm::thread::ThreadCtx;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

/// An exception a native throws into Kiln code: return `Err(Throw)`.
///
/// ```
/// use kiln::Throw;
/// let t = Throw::new("ArithmeticException", "negative input");
/// assert_eq!(t.to_string(), "ArithmeticException: negative input");
/// ```
#[derive(Debug)]
pub struct Throw {
    kind: ThrowKind,
}

#[derive(Debug)]
enum ThrowKind {
    New {
        class: String,
        message: String,
    },
    /// An exception object, the frames it already passed (method handles),
    /// how many more it passed and where those lie among the frames
    /// (`Exception::omitted`, `Exception::omitted_at`).
    Existing(Object, Vec<usize>, u64, usize),
}

impl Throw {
    /// A new exception of `class` (`Exception` or a subclass; other names
    /// become an `Exception` saying so) with `message`. The object is
    /// created without running a constructor; its `message` field is set.
    pub fn new(class: impl Into<String>, message: impl Into<String>) -> Throw {
        Throw {
            kind: ThrowKind::New {
                class: class.into(),
                message: message.into(),
            },
        }
    }

    /// Rethrow an existing exception object.
    pub fn object(exception: Object) -> Throw {
        Throw {
            kind: ThrowKind::Existing(exception, Vec::new(), 0, 0),
        }
    }
}

impl std::fmt::Display for Throw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ThrowKind::New { class, message } => write!(f, "{class}: {message}"),
            ThrowKind::Existing(o, ..) => write!(f, "rethrow of {}", o.class_name()),
        }
    }
}

/// A Kiln exception from a call back into Kiln is rethrown as is (so
/// `?` propagates it through the native); any other error becomes an
/// `Exception` carrying the error's message.
impl From<Error> for Throw {
    fn from(e: Error) -> Throw {
        match e {
            Error::Exception(x) => match *x {
                super::Exception {
                    object: Some(o),
                    frames,
                    omitted,
                    omitted_at,
                    ..
                } => Throw {
                    kind: ThrowKind::Existing(o, frames, omitted, omitted_at),
                },
                x => Throw::new("Exception", Error::Exception(Box::new(x)).to_string()),
            },
            e => Throw::new("Exception", e.to_string()),
        }
    }
}

/// What a native closure sees of its caller: the [`Vm`] to call back into
/// (strings, objects, other methods) on the same thread.
pub struct Caller {
    vm: Vm,
}

impl Caller {
    /// The Vm whose code called the native.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }
}

/// The result of a native closure: a [`HostType`], `()`, or a `Result` of
/// either with [`Throw`] to throw an exception.
pub trait NativeReturn: private::SealedNativeReturn {}

pub(crate) mod private {
    use super::*;

    /// Conversions of a [`NativeReturn`] (sealed).
    pub trait SealedNativeReturn {
        /// The success type.
        type Ok: HostReturn;
        /// Split into success or throw.
        fn into_result(self) -> Result<Self::Ok, Throw>;
    }

    /// The type-erased form of a native closure.
    pub type RawFn = Arc<dyn Fn(&mut Caller, &[u64], &Decl) -> Result<u64, Throw> + Send + Sync>;

    /// The declaration a closure is bound to: parameter types (receiver
    /// first for instance natives) and return type.
    pub struct Decl {
        /// Parameter types, receiver first.
        pub params: Vec<TypeSig>,
        /// Return type (None = void).
        pub ret: Option<TypeSig>,
        /// `Class::method`.
        pub name: String,
    }

    /// Checks a declaration against a Rust signature; `Err` is the Rust signature.
    pub type CheckFn = Box<dyn Fn(&Decl) -> Result<(), String> + Send + Sync>;

    /// A registered native: its Rust signature (typed form) and closure.
    pub struct NativeDef {
        /// The signature check (typed form only).
        pub check: Option<CheckFn>,
        /// The closure.
        pub f: RawFn,
    }

    /// Conversion of a closure into a [`NativeDef`] (sealed).
    pub trait SealedIntoNative<P, R> {
        /// Erase the closure.
        fn into_def(self) -> NativeDef;
    }
}
use private::{Decl, NativeDef, SealedIntoNative, SealedNativeReturn};

impl<T: HostReturn> SealedNativeReturn for T {
    type Ok = T;
    fn into_result(self) -> Result<T, Throw> {
        Ok(self)
    }
}
impl<T: HostReturn> NativeReturn for T {}

impl<T: HostReturn> SealedNativeReturn for Result<T, Throw> {
    type Ok = T;
    fn into_result(self) -> Result<T, Throw> {
        self
    }
}
impl<T: HostReturn> NativeReturn for Result<T, Throw> {}

/// A Rust closure that can implement a native: `Fn(A1, .., An) -> R` or
/// `Fn(&mut Caller, A1, .., An) -> R` with up to eight [`HostType`]
/// arguments (the receiver first for an instance native) and a
/// [`NativeReturn`] result.
pub trait IntoNative<P, R>: SealedIntoNative<P, R> {}
impl<F: SealedIntoNative<P, R>, P, R> IntoNative<P, R> for F {}

fn check_typed<P: HostParams, R: HostReturn>(d: &Decl) -> Result<(), String> {
    if P::matches(&d.params) && R::matches(d.ret.as_ref()) {
        Ok(())
    } else {
        Err(super::typed::rust_signature::<P, R>())
    }
}

fn encode<R: NativeReturn>(
    r: R,
    caller: &mut Caller,
    d: &Decl,
    ctx: *mut ThreadCtx,
) -> Result<u64, Throw> {
    let ok = r.into_result()?;
    // SAFETY: `ctx` is the context of the native call in progress on this thread.
    let ctx = unsafe { &mut *ctx };
    ok.into_ret(&caller.vm, ctx, d.ret.as_ref())
        .map_err(|e| Throw::new("Exception", format!("native {} result: {e}", d.name)))
}

fn bad_arg(d: &Decl, (i, why): (usize, String)) -> Throw {
    let class = if why == "null" {
        "NullReferenceException"
    } else {
        "InvalidCastException"
    };
    Throw::new(class, format!("native {} argument {i}: {why}", d.name))
}

thread_local! {
    /// The context of the innermost native call on this thread (for `encode`).
    static NATIVE_CTX: std::cell::Cell<*mut ThreadCtx> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

macro_rules! into_native {
    ($($t:ident $i:tt),*) => {
        impl<F, R, $($t,)*> SealedIntoNative<($($t,)*), R> for F
        where
            F: Fn($($t),*) -> R + Send + Sync + 'static,
            R: NativeReturn + 'static,
            $($t: HostType + 'static,)*
        {
            fn into_def(self) -> NativeDef {
                NativeDef {
                    check: Some(Box::new(check_typed::<($($t,)*), R::Ok>)),
                    f: Arc::new(move |caller: &mut Caller, a: &[u64], d: &Decl| {
                        #[allow(unused_variables)]
                        let args = <($($t,)*)>::read(&caller.vm, a).map_err(|e| bad_arg(d, e))?;
                        let r = (self)($(args.$i),*);
                        encode(r, caller, d, NATIVE_CTX.with(|c| c.get()))
                    }),
                }
            }
        }

        impl<F, R, $($t,)*> SealedIntoNative<(Caller, $($t,)*), R> for F
        where
            F: Fn(&mut Caller, $($t),*) -> R + Send + Sync + 'static,
            R: NativeReturn + 'static,
            $($t: HostType + 'static,)*
        {
            fn into_def(self) -> NativeDef {
                NativeDef {
                    check: Some(Box::new(check_typed::<($($t,)*), R::Ok>)),
                    f: Arc::new(move |caller: &mut Caller, a: &[u64], d: &Decl| {
                        #[allow(unused_variables)]
                        let args = <($($t,)*)>::read(&caller.vm, a).map_err(|e| bad_arg(d, e))?;
                        let r = (self)(caller, $(args.$i),*);
                        encode(r, caller, d, NATIVE_CTX.with(|c| c.get()))
                    }),
                }
            }
        }
    };
}

into_native!();
into_native!(A 0);
into_native!(A 0, B 1);
into_native!(A 0, B 1, C 2);
into_native!(A 0, B 1, C 2, D 3);
into_native!(A 0, B 1, C 2, D 3, E 4);
into_native!(A 0, B 1, C 2, D 3, E 4, G 5);
into_native!(A 0, B 1, C 2, D 3, E 4, G 5, H 6);
into_native!(A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7);

/// The host's natives, registered by `(class, method)` before loading.
///
/// ```
/// use kiln::{Caller, Config, Linker, Source, Throw, Value, Vm};
/// let mut linker = Linker::new();
/// linker.func("Host", "add", |a: i64, b: i64| a + b)?;
/// linker.func("Host", "sqrt", |x: f64| -> Result<f64, Throw> {
///     if x < 0.0 { Err(Throw::new("ArithmeticException", "negative")) } else { Ok(x.sqrt()) }
/// })?;
/// linker.func("Host", "greet", |c: &mut Caller, name: String| -> Result<kiln::Object, Throw> {
///     Ok(c.vm().new_string(&format!("hello, {name}"))?)
/// })?;
/// let src = ".library n\n.class public Host {\n .method public static native add(a: i64, b: i64) -> i64\n .method public static native sqrt(x: f64) -> f64\n .method public static native greet(n: string) -> string\n}\n";
/// let vm = Vm::new(&Config::new(), &linker, &[Source::kasm("n", src)])?;
/// assert_eq!(vm.call("Host::add", &[Value::I64(2), Value::I64(3)])?, Value::I64(5));
/// let e = vm.call("Host::sqrt", &[Value::F64(-1.0)]).unwrap_err();
/// assert_eq!(e.exception().unwrap().class, "ArithmeticException");
/// let s = vm.new_string("kiln")?;
/// assert_eq!(vm.call("Host::greet", &[s.into()])?.as_string().unwrap(), "hello, kiln");
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Default)]
pub struct Linker {
    defs: HashMap<(String, String), NativeDef>,
}

impl std::fmt::Debug for Linker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self.defs.keys().map(|(c, m)| format!("{c}::{m}")).collect();
        names.sort();
        f.debug_struct("Linker").field("natives", &names).finish()
    }
}

impl Linker {
    /// An empty linker.
    pub fn new() -> Linker {
        Linker::default()
    }

    fn insert(&mut self, class: &str, method: &str, def: NativeDef) -> Result<&mut Linker, Error> {
        if crate::runtime::natives::lookup(class, method).is_some() {
            return Err(Error::NativeClash {
                class: class.into(),
                method: method.into(),
            });
        }
        let key = (class.to_string(), method.to_string());
        if self.defs.contains_key(&key) {
            return Err(Error::DuplicateNative {
                class: class.into(),
                method: method.into(),
            });
        }
        self.defs.insert(key, def);
        Ok(self)
    }

    /// Bind `class::method` to a typed closure (see [`IntoNative`]); its
    /// signature is checked against the kasm declaration at load
    /// ([`Error::NativeSignature`]). Errors now: [`Error::NativeClash`] for
    /// a built-in native, [`Error::DuplicateNative`].
    pub fn func<P, R>(
        &mut self,
        class: &str,
        method: &str,
        f: impl IntoNative<P, R>,
    ) -> Result<&mut Linker, Error> {
        self.insert(class, method, f.into_def())
    }

    /// Bind `class::method` to a closure over dynamic [`Value`]s (the
    /// receiver first for an instance native), for any declaration. A
    /// result of the wrong type throws `InvalidCastException`.
    pub fn func_dynamic(
        &mut self,
        class: &str,
        method: &str,
        f: impl Fn(&mut Caller, &[Value]) -> Result<Value, Throw> + Send + Sync + 'static,
    ) -> Result<&mut Linker, Error> {
        let raw: private::RawFn = Arc::new(move |caller: &mut Caller, a: &[u64], d: &Decl| {
            let args: Vec<Value> = a
                .iter()
                .zip(&d.params)
                .map(|(&v, t)| super::value::from_slot(&caller.vm, v, t))
                .collect();
            let r = f(caller, &args)?;
            match &d.ret {
                None if r == Value::Void => Ok(0),
                None => Err(Throw::new(
                    "InvalidCastException",
                    format!("native {} is void but returned {}", d.name, r.type_name()),
                )),
                Some(t) => super::value::to_slot(&caller.vm, &r, t).map_err(|found| {
                    Throw::new(
                        "InvalidCastException",
                        format!("native {} must return {t}, returned {found}", d.name),
                    )
                }),
            }
        });
        self.insert(
            class,
            method,
            NativeDef {
                check: None,
                f: raw,
            },
        )
    }

    /// Check and wrap every native of `program` this linker binds.
    pub(crate) fn bind(
        &self,
        program: &Program,
        files: &[String],
        vm: &Arc<OnceLock<Weak<super::Inner>>>,
    ) -> Result<HashMap<(String, String), HostNativeFn>, Error> {
        let mut out = HashMap::new();
        for id in program.all_classes() {
            let def = program.def(id);
            for m in def.methods.iter().filter(|m| m.flags.is_native) {
                let key = (def.name.clone(), m.name.clone());
                let Some(nd) = self.defs.get(&key) else {
                    continue;
                };
                let decl = decl_of(&def.name, m);
                if let Some(check) = &nd.check {
                    check(&decl).map_err(|bound| Error::NativeSignature {
                        site: Box::new(NativeSite {
                            file: files.get(id.lib as usize).cloned().unwrap_or_default(),
                            line: m.line,
                            class: def.name.clone(),
                            method: m.name.clone(),
                        }),
                        declared: super::reflect::signature_of(m),
                        bound,
                    })?;
                }
                out.insert(key, wrap(Arc::clone(&nd.f), decl, Arc::clone(vm)));
            }
        }
        Ok(out)
    }
}

fn decl_of(class: &str, m: &MethodDef) -> Decl {
    let mut params = Vec::new();
    if !m.flags.is_static {
        params.push(TypeSig::class(class));
    }
    params.extend(m.params.iter().map(|p| p.ty.clone()));
    Decl {
        params,
        ret: m.ret.clone(),
        name: format!("{class}::{}", m.name),
    }
}

/// The runtime-facing closure of a host native (see the module docs).
fn wrap(f: private::RawFn, decl: Decl, cell: Arc<OnceLock<Weak<super::Inner>>>) -> HostNativeFn {
    Arc::new(move |t: &mut ThreadCtx, a: &[u64]| -> Result<u64, Fault> {
        let mh = t.native_method;
        let Some(inner) = cell.get().and_then(Weak::upgrade) else {
            return Err(Fault::new(FaultKind::Exception, "the host Vm is gone"));
        };
        let vm = Vm { inner };
        let tp: *mut ThreadCtx = t;
        let key = Arc::as_ptr(&vm.inner.rt) as usize;
        super::ACTIVE.with(|s| s.borrow_mut().push((key, tp)));
        let prev = NATIVE_CTX.with(|c| c.replace(tp));
        let mut caller = Caller { vm: vm.clone() };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut caller, a, &decl)));
        NATIVE_CTX.with(|c| c.set(prev));
        super::ACTIVE.with(|s| {
            s.borrow_mut().pop();
        });
        // SAFETY: `tp` is this native call's live context (`t`).
        let t = unsafe { &mut *tp };
        let throw = match r {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(th)) => th,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Throw::new("Exception", format!("native {} panicked: {msg}", decl.name))
            }
        };
        raise(&vm, t, throw)?;
        t.trace.push(mh);
        Ok(0)
    })
}

/// Make `th` the pending exception of `t` (an allocation failure is
/// returned as a fault instead).
fn raise(vm: &Vm, t: &mut ThreadCtx, th: Throw) -> Result<(), Fault> {
    let rt = vm.rt();
    let (class, message) = match th.kind {
        ThrowKind::Existing(o, frames, omitted, at) if o.belongs_to(vm) => {
            t.throw(o.raw());
            let handle = |m: usize| m as *const crate::vm::tables::MethodHandle;
            let at = at.min(frames.len());
            t.trace.extend(frames[..at].iter().map(|&m| handle(m)));
            t.trace.omit(omitted);
            t.trace.extend(frames[at..].iter().map(|&m| handle(m)));
            return Ok(());
        }
        ThrowKind::Existing(..) => (
            "Exception".to_string(),
            "a native threw an exception object of another Vm".to_string(),
        ),
        ThrowKind::New { class, message } => (class, message),
    };
    let exc = rt.program.class(crate::library::EXCEPTION);
    let (id, message) = match rt.program.class(&class) {
        Some(id)
            if exc.is_some_and(|e| rt.program.is_subclass(id, e))
                && !rt.program.def(id).is_abstract =>
        {
            (id, message)
        }
        _ => (
            exc.ok_or_else(|| Fault::new(FaultKind::Exception, message.clone()))?,
            format!("{class} is not a concrete exception class: {message}"),
        ),
    };
    let desc = rt.tables.class(id);
    // SAFETY: `desc` is the live descriptor of a concrete exception class.
    let obj = unsafe { rt.alloc_object(desc) }?;
    t.roots.push(obj);
    let s = rt.new_string(message.as_bytes());
    t.roots.pop();
    let s = s?;
    // SAFETY: every Exception instance has the message field at message_offset.
    unsafe { *(obj.add(rt.message_offset) as *mut *mut u8) = s };
    t.throw(obj);
    Ok(())
}

// Keep the sealed traits' items reachable for rustdoc links.
#[allow(dead_code)]
fn _assert_traits<T: Sealed + SealedReturn, P: SealedParams>() {}
