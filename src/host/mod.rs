//! The embedding API: what a Rust program uses to run Kiln code (see
//! `docs/embedding.md`).
//!
//! - [`Config`] says how code runs; [`Linker`] holds the host's natives;
//!   [`Vm::new`] loads [`Source`]s (files, `.klib` bytes, kasm text),
//!   verifies them, builds the runtime tables, binds natives and runs every
//!   `cctor`. [`Metadata::load`] reads the same sources for reflection only.
//! - [`Vm::call`] / [`Object::call`] invoke methods with dynamic [`Value`]s;
//!   [`Vm::typed`] gives a [`TypedMethod`] whose signature is checked once.
//! - [`Object`] is a rooted handle: the collector marks its slot in the
//!   root table (`GcState` host roots); the handle reads its object through
//!   the slot; dropping it releases the slot.
//!
//! Threads: a [`Vm`] is `Send + Sync` and cheap to clone. A host thread that
//! calls in is registered with the safepoint module on its first call and
//! stays registered (counting as stopped, "in native") between calls; for
//! the duration of each call (and of every handle operation) it is
//! attached to the runtime with a [`ThreadCtx`] from a pool, whose native
//! stack limit comes from the thread's real stack bounds, and runs like any
//! Kiln thread (stopping at safepoints). A native called by Kiln code that
//! calls back in reuses the calling thread's context.
//!
//! Invariants: no public item exposes a raw pointer; every raw object
//! address the host module holds is either in a handle slot, in a frame or
//! handle scope of an attached thread, or only used while this thread is
//! attached and running (so no collection can run in between).

mod config;
mod error;
mod interrupt;
mod natives;
mod reflect;
mod source;
mod typed;
mod value;

pub use crate::exchange::{ExchangeError, Limits as ExchangeLimits};
pub use crate::library::{
    Access, AttrArg, AttrValue, Attribute, MethodFlags, Mutability, Prim, TypeKind, TypeSig, Var,
};
pub use crate::runtime::ExecMode;
pub use config::Config;
pub use error::{Error, Exception, NativeSite};
pub use interrupt::InterruptHandle;
pub use natives::{Caller, IntoNative, Linker, NativeReturn, Throw};
pub use reflect::{
    ClassInfo, FieldInfo, LibraryInfo, Metadata, MethodInfo, ProgramRef, PropertyInfo,
};
pub use source::Source;
pub use typed::{HostParams, HostReturn, HostType, TypedMethod};
pub use value::{Object, Value};

use crate::library::program::{ClassId, MemberId};
use crate::runtime::{call_from_host, Runtime};
use crate::safepoint;
use crate::vm::tables::MethodHandle;
use crate::vm::thread::ThreadCtx;
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};

/// A loaded, verified, running program: the handle a host holds. Cheap to
/// clone (all clones are the same program); `Send + Sync`, so several host
/// threads may call into it at once.
///
/// ```
/// use kiln::{Config, Linker, Source, Value, Vm};
/// let src = ".library demo\n.class public M {\n .method public static twice(x: i64) -> i64 {\n  ldarg x\n  ldarg x\n  add\n  ret\n }\n}\n";
/// let vm = Vm::new(&Config::new(), &Linker::new(), &[Source::kasm("demo", src)])?;
/// assert_eq!(vm.call("M::twice", &[Value::I64(21)])?, Value::I64(42));
/// let twice = vm.typed::<(i64,), i64>("M::twice")?;
/// assert_eq!(twice.call((5,))?, 10);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone)]
pub struct Vm {
    pub(crate) inner: Arc<Inner>,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Vm>();
    send_sync::<Object>();
    send_sync::<Value>();
    send_sync::<Error>();
    send_sync::<TypedMethod<(i64,), i64>>();
};

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("libraries", &self.inner.rt.files)
            .field("mode", &self.inner.mode)
            .finish()
    }
}

/// A pooled thread context (owned by one attaching thread at a time).
struct PooledCtx(Box<ThreadCtx>);
// SAFETY: a pooled context is only used by the thread that took it out of
// the pool; its raw pointers refer to its own value stack and the runtime.
unsafe impl Send for PooledCtx {}

pub(crate) struct Inner {
    pub(crate) rt: Arc<Runtime>,
    mode: ExecMode,
    pool: Mutex<Vec<PooledCtx>>,
    /// The per-call deadline timer, started by the first limited call.
    deadlines: std::sync::OnceLock<interrupt::DeadlineTimer>,
}

thread_local! {
    /// Contexts of calls in progress on this thread: (runtime address, context).
    static ACTIVE: RefCell<Vec<(usize, *mut ThreadCtx)>> = const { RefCell::new(Vec::new()) };
    /// This host thread's safepoint registration, kept between calls.
    static REGISTRATION: RefCell<Option<safepoint::ThreadGuard>> = const { RefCell::new(None) };
    /// Lowest usable native stack address of this thread (0 = not computed).
    static STACK_LOW: Cell<usize> = const { Cell::new(0) };
}

/// The native stack limit for the current thread: its lowest address plus
/// a margin for the runtime's own work (JIT compilation, exception setup).
fn stack_limit() -> usize {
    let low = STACK_LOW.with(|c| {
        if c.get() == 0 {
            c.set(thread_stack_low().unwrap_or(0));
        }
        c.get()
    });
    let sp = crate::vm::thread::approx_sp();
    if low == 0 || low >= sp {
        // Unknown bounds: assume 1 MiB below here.
        return sp.saturating_sub(768 << 10);
    }
    let size = sp - low;
    let margin = (size / 4).clamp(256 << 10, 4 << 20);
    low + margin.min(size / 2)
}

#[cfg(target_os = "linux")]
fn thread_stack_low() -> Option<usize> {
    // SAFETY: `attr` is initialised by pthread_getattr_np before use and
    // destroyed once; the out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (r == 0).then_some(addr as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn thread_stack_low() -> Option<usize> {
    None
}

/// Pops the ACTIVE entry, detaches and returns the context to the pool,
/// and marks the thread as in native again, even if the call panics.
struct Attachment<'a> {
    inner: &'a Inner,
    ctx: Option<PooledCtx>,
    attached: Option<crate::runtime::roots::Attached<'a>>,
}

impl Drop for Attachment<'_> {
    fn drop(&mut self) {
        ACTIVE.with(|a| {
            a.borrow_mut().pop();
        });
        self.inner.rt.flush_stdout();
        drop(self.attached.take());
        REGISTRATION.with(|r| {
            if let Some(g) = r.borrow().as_ref() {
                g.set_data(0);
            }
        });
        safepoint::enter_native();
        if let Some(mut c) = self.ctx.take() {
            let t = &mut *c.0;
            t.pending = std::ptr::null_mut();
            t.trace.clear();
            t.roots.clear();
            t.vs_top = t.vs_base;
            // A deadline is per call: one that fired after the call's last
            // poll must not hit the next call that gets this context.
            t.interrupt
                .clear_if(crate::safepoint::interrupt::Reason::Deadline as u32);
            self.inner
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }
}

impl Vm {
    /// Load `sources` (with `std` and their imports), verify them, build
    /// the runtime tables, bind `linker`'s natives, install the JIT (in JIT
    /// mode) and run every `cctor` in load order.
    ///
    /// Errors: [`Error::Io`], [`Error::Format`], [`Error::Assembly`],
    /// [`Error::Link`], [`Error::Verification`] (every error with its
    /// location), [`Error::UnboundNative`], [`Error::NativeSignature`],
    /// [`Error::Setup`], or [`Error::Exception`] from a `cctor`.
    pub fn new(config: &Config, linker: &Linker, sources: &[Source]) -> Result<Vm, Error> {
        let (program, files) = source::load_program(sources)?;
        // An embedded program need not have a `main`: the host calls in.
        let no_main = crate::verify::VerifyOptions {
            require_main: false,
        };
        let verified = crate::verify::verify_program_with(&program, &files, no_main)
            .map_err(Error::Verification)?;
        let cell = Arc::new(std::sync::OnceLock::new());
        let host = linker.bind(&program, &files, &cell)?;
        let opts = config.opts.clone();
        let rt = crate::engine::new_runtime_with_host_natives(
            program,
            files,
            &verified,
            opts.clone(),
            host,
        )
        .map_err(Error::from_load)?;
        let rt = Arc::new(rt);
        rt.set_shared();
        let mut mode = opts.mode;
        if mode == ExecMode::Jit && crate::engine::install_jit(&rt, verified).is_err() {
            mode = ExecMode::Interp; // no Cranelift backend for this host
        }
        let vm = Vm {
            inner: Arc::new(Inner {
                rt,
                mode,
                pool: Mutex::new(Vec::new()),
                deadlines: std::sync::OnceLock::new(),
            }),
        };
        let _ = cell.set(Arc::downgrade(&vm.inner));
        vm.run_cctors()?;
        Ok(vm)
    }

    /// [`Vm::new`] with one kasm source and no host natives.
    pub fn from_kasm(config: &Config, name: &str, text: &str) -> Result<Vm, Error> {
        Vm::new(config, &Linker::new(), &[Source::kasm(name, text)])
    }

    fn run_cctors(&self) -> Result<(), Error> {
        let rt = &self.inner.rt;
        let cctors: Vec<*const MethodHandle> = rt
            .program
            .all_classes()
            .filter_map(|id| {
                let def = rt.program.def(id);
                def.methods
                    .iter()
                    .position(|m| m.name == "cctor" && m.flags.is_static && m.has_body())
                    .map(|i| {
                        rt.tables.method(MemberId {
                            class: id,
                            index: i as u32,
                        })
                    })
            })
            .collect();
        self.enter(|ctx| {
            for mh in cctors {
                // SAFETY: a live handle of this runtime; a cctor takes no arguments.
                unsafe { call_from_host(ctx, mh, std::ptr::null()) };
                self.check_pending(ctx)?;
            }
            Ok(())
        })
    }

    /// The execution mode in effect (`Interp` if JIT mode was asked for on
    /// a CPU without a Cranelift backend).
    pub fn mode(&self) -> ExecMode {
        self.inner.mode
    }

    pub(crate) fn rt(&self) -> &Runtime {
        &self.inner.rt
    }

    /// Run `f` with this thread attached and running (see the module docs).
    pub(crate) fn enter<R>(
        &self,
        f: impl FnOnce(&mut ThreadCtx) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let key = Arc::as_ptr(&self.inner.rt) as usize;
        // A call from a native of this runtime on this thread: reuse its context.
        let active = ACTIVE.with(|a| a.borrow().last().copied());
        if let Some((k, ctx)) = active {
            if k != key {
                return Err(Error::ThreadBusy);
            }
            // SAFETY: the context of a call in progress on this thread,
            // whose native is running (so nothing else uses it now).
            return f(unsafe { &mut *ctx });
        }
        // Register this host thread once; it stays in native between calls.
        let fresh = REGISTRATION.with(|r| {
            let mut r = r.borrow_mut();
            if r.is_some() {
                return Ok(false);
            }
            if safepoint::is_registered() {
                return Err(Error::ThreadBusy);
            }
            match safepoint::register_thread() {
                Ok(g) => {
                    *r = Some(g);
                    Ok(true)
                }
                // A thread the collector cannot stop must not have its
                // roots missed: no collections for this runtime from now on.
                Err(_) => {
                    self.inner
                        .rt
                        .gc
                        .collector
                        .enabled
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                    Ok(false)
                }
            }
        })?;
        if !fresh {
            safepoint::leave_native();
        }
        let rt: &Runtime = &self.inner.rt;
        let mut pooled = self
            .inner
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| PooledCtx(Box::new(ThreadCtx::new(rt, 1 << 20))));
        pooled.0.stack_limit = stack_limit();
        let ctx: *mut ThreadCtx = &mut *pooled.0;
        let attached = REGISTRATION.with(|r| {
            r.borrow().as_ref().map(|g| {
                // SAFETY: `ctx` is boxed (stable address) and outlives the
                // attachment (both are dropped by `Attachment`, attachment first).
                unsafe { crate::runtime::roots::attach_registered(rt, ctx, g) }
            })
        });
        ACTIVE.with(|a| a.borrow_mut().push((key, ctx)));
        let guard = Attachment {
            inner: &self.inner,
            ctx: Some(pooled),
            attached,
        };
        // The deadline timer is dropped (cancelled, joined) before `guard`
        // returns the context to the pool.
        let deadline = match rt.opts.deadline {
            Some(d) => {
                let timer = match self.inner.deadlines.get() {
                    Some(t) => t,
                    None => {
                        let t = interrupt::DeadlineTimer::start()?;
                        // A racing thread may have set it first: use that one.
                        self.inner.deadlines.get_or_init(|| t)
                    }
                };
                Some(timer.arm(ctx, d))
            }
            None => None,
        };
        // SAFETY: the pooled context is owned by this call until `guard` drops.
        let r = f(unsafe { &mut *ctx });
        drop(deadline);
        drop(guard);
        r
    }

    /// A runtime fault (allocation failure) as [`Error::Exception`].
    pub(crate) fn fault(&self, ctx: &mut ThreadCtx, f: crate::vm::fault::Fault) -> Error {
        ctx.raise(f);
        match self.check_pending(ctx) {
            Err(e) => e,
            Ok(()) => Error::Setup("fault without an exception".into()),
        }
    }

    /// Turn a pending exception into [`Error::Exception`] (clearing it).
    pub(crate) fn check_pending(&self, ctx: &mut ThreadCtx) -> Result<(), Error> {
        if !ctx.has_pending() {
            return Ok(());
        }
        let exc = ctx.pending;
        let rt = self.rt();
        // SAFETY: a pending exception is a live object; its message field is a string or null.
        let (class, message) = unsafe {
            let cd = crate::vm::object::class_of(exc);
            let m = *(exc.add(rt.message_offset) as *const *const u8);
            let msg = if m.is_null() {
                String::new()
            } else {
                String::from_utf8_lossy(crate::vm::object::string_bytes(m)).into_owned()
            };
            ((*cd).name().to_string(), msg)
        };
        let trace = ctx
            .trace
            .frames()
            // SAFETY: trace entries are live handles of this runtime.
            .map(|m| rt.method_name(unsafe { &*m }))
            .collect();
        let frames = ctx.trace.frames().map(|m| m as usize).collect();
        let omitted = ctx.trace.omitted();
        let omitted_at = ctx.trace.omitted_at();
        let object = Some(Object::new(self, exc));
        ctx.pending = std::ptr::null_mut();
        ctx.trace.clear();
        Err(Error::Exception(Box::new(Exception {
            class,
            message,
            trace,
            omitted,
            omitted_at,
            object,
            frames,
        })))
    }

    /// Call the static method `"Class::method"` with `args`; returns its
    /// result ([`Value::Void`] for a `void` method).
    ///
    /// Errors: [`Error::BadName`], [`Error::UnknownClass`],
    /// [`Error::UnknownMethod`], [`Error::WrongMethodKind`],
    /// [`Error::ArgumentCount`], [`Error::ArgumentType`],
    /// [`Error::Exception`].
    pub fn call(&self, method: &str, args: &[Value]) -> Result<Value, Error> {
        let (class, name) = split_name(method)?;
        let id = self.class_id(class)?;
        let m = self.find_method(id, name)?;
        let def = self.rt().program.method(m);
        if !def.flags.is_static {
            return Err(Error::WrongMethodKind {
                method: method.to_string(),
                is_static: false,
            });
        }
        self.enter(|ctx| self.invoke(ctx, m, None, args))
    }

    /// Call method `m` with an optional receiver (already type-checked).
    pub(crate) fn invoke(
        &self,
        ctx: &mut ThreadCtx,
        m: MemberId,
        this: Option<*mut u8>,
        args: &[Value],
    ) -> Result<Value, Error> {
        let rt = self.rt();
        let def = rt.program.method(m);
        let mname = || format!("{}::{}", rt.program.def(m.class).name, def.name);
        if args.len() != def.params.len() {
            return Err(Error::ArgumentCount {
                method: mname(),
                expected: def.params.len(),
                found: args.len(),
            });
        }
        let mut slots = Vec::with_capacity(args.len() + 1);
        if let Some(t) = this {
            slots.push(t as u64);
        }
        for (i, (a, p)) in args.iter().zip(&def.params).enumerate() {
            let v = value::to_slot(self, a, &p.ty).map_err(|found| Error::ArgumentType {
                method: mname(),
                index: i,
                expected: p.ty.to_string(),
                found,
            })?;
            slots.push(v);
        }
        let mh = rt.tables.method(m);
        // SAFETY: a live handle of this runtime; `slots` holds the receiver
        // and one correctly typed slot per parameter (checked above); the
        // referenced objects are rooted by the caller's handles.
        let r = unsafe { call_from_host(ctx, mh, slots.as_ptr()) };
        self.check_pending(ctx)?;
        match &def.ret {
            None => Ok(Value::Void),
            Some(t) => Ok(value::from_slot(self, r, t)),
        }
    }

    pub(crate) fn class_id(&self, name: &str) -> Result<ClassId, Error> {
        self.rt()
            .program
            .class(name)
            .ok_or_else(|| Error::UnknownClass(name.to_string()))
    }

    /// Find `name` in `class` or its ancestors (nearest first).
    pub(crate) fn find_method(&self, class: ClassId, name: &str) -> Result<MemberId, Error> {
        let p = &self.rt().program;
        if name == "cctor" {
            return Err(Error::CallCctor(p.def(class).name.clone()));
        }
        p.ancestors(class)
            .into_iter()
            .find_map(|c| {
                p.def(c)
                    .methods
                    .iter()
                    .position(|m| m.name == name)
                    .map(|i| MemberId {
                        class: c,
                        index: i as u32,
                    })
            })
            .ok_or_else(|| Error::UnknownMethod {
                class: p.def(class).name.clone(),
                method: name.to_string(),
            })
    }

    /// A new string object holding `s`.
    pub fn new_string(&self, s: &str) -> Result<Object, Error> {
        self.enter(|ctx| {
            let p = self
                .rt()
                .new_string(s.as_bytes())
                .map_err(|f| self.fault(ctx, f))?;
            Ok(Object::new(self, p))
        })
    }

    /// A new object of `class`, initialised by its `ctor` with `args` (a
    /// class without a `ctor` takes no arguments; its fields are zero).
    ///
    /// Errors: [`Error::UnknownClass`], [`Error::Type`] (an interface or
    /// abstract class), argument errors, [`Error::Exception`] from the ctor.
    pub fn new_object(&self, class: &str, args: &[Value]) -> Result<Object, Error> {
        let id = self.class_id(class)?;
        let rt = self.rt();
        let def = rt.program.def(id);
        if def.kind == TypeKind::Interface || def.is_abstract {
            return Err(Error::Type {
                what: format!("new {class}"),
                expected: "a concrete class".into(),
                found: if def.is_abstract {
                    "an abstract class".into()
                } else {
                    "an interface".into()
                },
            });
        }
        let ctor = def
            .methods
            .iter()
            .position(|m| m.name == "ctor" && !m.flags.is_static)
            .map(|i| MemberId {
                class: id,
                index: i as u32,
            });
        if ctor.is_none() && !args.is_empty() {
            return Err(Error::ArgumentCount {
                method: format!("{class}::ctor"),
                expected: 0,
                found: args.len(),
            });
        }
        let desc = rt.tables.class(id);
        self.enter(|ctx| {
            // SAFETY: `desc` is the live descriptor of a concrete class.
            let obj = unsafe { rt.alloc_object(desc) }.map_err(|f| self.fault(ctx, f))?;
            let handle = Object::new(self, obj);
            if let Some(c) = ctor {
                self.invoke(ctx, c, Some(obj), args)?;
            }
            Ok(handle)
        })
    }

    /// A new array of `len` zero/null elements; `elem` is a kasm type
    /// (`"i64"`, `"string"`, `"Point"`, `"f64[]"`).
    pub fn new_array(&self, elem: &str, len: usize) -> Result<Object, Error> {
        let ty = value::parse_type(self, elem)?;
        let arr_ty = TypeSig::Array(Box::new(ty));
        let rt = self.rt();
        let ac = rt.tables.array_class(&rt.program, &arr_ty);
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        self.enter(|ctx| {
            // SAFETY: `ac` is a live array class descriptor.
            let a = unsafe { rt.alloc_array(ac, len) }.map_err(|f| self.fault(ctx, f))?;
            Ok(Object::new(self, a))
        })
    }

    /// Read the static field `"Class::field"`.
    pub fn get_static(&self, field: &str) -> Result<Value, Error> {
        let (class, name) = split_name(field)?;
        let (m, ty) = self.static_field(class, name)?;
        let fh = self.rt().tables.field(m);
        let addr = fh.static_addr as usize;
        // SAFETY: the static memory of a live class, read while attached.
        self.enter(|_| Ok(unsafe { value::load_value(self, addr as *const u8, &ty) }))
    }

    /// Store `v` into the static field `"Class::field"` (which must be `mutable`).
    pub fn set_static(&self, field: &str, v: &Value) -> Result<(), Error> {
        let (class, name) = split_name(field)?;
        let (m, ty) = self.static_field(class, name)?;
        let rt = self.rt();
        let fd = &rt.program.def(m.class).fields[m.index as usize];
        if fd.mutability == Mutability::Immutable {
            return Err(Error::Immutable(field.to_string()));
        }
        let addr = rt.tables.field(m).static_addr as usize;
        self.enter(|_| {
            let slot = value::to_slot(self, v, &value::storage_type(&ty)).map_err(|found| {
                Error::Type {
                    what: field.to_string(),
                    expected: ty.to_string(),
                    found,
                }
            })?;
            // SAFETY: the static memory of a live class, written while attached.
            unsafe { value::store_slot(addr as *mut u8, &ty, slot) };
            Ok(())
        })
    }

    fn static_field(&self, class: &str, name: &str) -> Result<(MemberId, TypeSig), Error> {
        let id = self.class_id(class)?;
        let p = &self.rt().program;
        let m = p
            .find_field(id, name)
            .filter(|m| p.def(m.class).fields[m.index as usize].is_static)
            .ok_or_else(|| Error::UnknownField {
                class: class.to_string(),
                field: name.to_string(),
            })?;
        Ok((m, p.def(m.class).fields[m.index as usize].ty.clone()))
    }

    /// Collect garbage now (from this thread); returns false if collection
    /// is unavailable (no safepoint support on this platform).
    pub fn collect(&self) -> bool {
        self.enter(|_| {
            Ok(
                crate::runtime::roots::collect(self.rt(), crate::heap::gc::Reason::Explicit)
                    .is_some(),
            )
        })
        .unwrap_or(false)
    }

    /// Bytes of managed objects currently allocated.
    pub fn heap_used(&self) -> usize {
        self.rt().heap.used()
    }

    /// Number of collections so far.
    pub fn gc_count(&self) -> u64 {
        self.rt()
            .gc
            .collector
            .count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A handle that interrupts this Vm's running code from any thread
    /// (see [`InterruptHandle`]).
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle {
            inner: self.inner.rt.interrupt_handle(),
        }
    }

    /// Import an object graph exported by [`Object::export`] (possibly by
    /// another Vm or process) as a new object of `class`, matching fields
    /// by name id and type (see `docs/exchange.md`). Constructors are not
    /// run; fields the encoding does not mention stay zero/null.
    ///
    /// Errors: [`Error::UnknownClass`], [`Error::Exchange`] (malformed or
    /// mismatched input, naming the byte offset and the field path).
    pub fn import(&self, class: &str, bytes: &[u8]) -> Result<Object, Error> {
        let id = self.class_id(class)?;
        let rt = self.rt();
        let desc = rt.tables.class(id);
        self.enter(|ctx| {
            // SAFETY: `desc` is a live descriptor of this runtime; `ctx` is
            // this thread's attached context, with no frames: every object
            // the host holds is rooted by a handle.
            let p = unsafe { crate::exchange::import(rt, ctx, desc, bytes) }
                .map_err(Error::Exchange)?;
            Ok(Object::new(self, p))
        })
    }

    /// Number of methods compiled by the JIT so far (0 in interpreter mode).
    pub fn compiled_methods(&self) -> usize {
        self.rt().compiled.get().map_or(0, |j| j.compile_count())
    }

    /// Number of live [`Object`] handles of this Vm.
    pub fn handle_count(&self) -> usize {
        self.rt().gc.host_root_count()
    }

    /// Reflection over the loaded program (the same view as [`Metadata`]).
    pub fn metadata(&self) -> ProgramRef<'_> {
        ProgramRef {
            program: &self.rt().program,
            files: &self.rt().files,
        }
    }
}

/// Split `"Class::member"`.
pub(crate) fn split_name(s: &str) -> Result<(&str, &str), Error> {
    match s.split_once("::") {
        Some((c, m)) if !c.is_empty() && !m.is_empty() && !m.contains("::") => Ok((c, m)),
        _ => Err(Error::BadName(s.to_string())),
    }
}
