//! `extern "C"` runtime helpers called by compiled code.
//!
//! Compiled code calls these indirectly through their addresses, which
//! `env.rs` embeds as constants (no relocations, so no ±2 GiB call-range
//! limit). Every helper is `extern "C"` and never unwinds: those that run
//! non-trivial Rust code catch panics and turn them into a pending internal
//! `Exception`, like the interpreter's adapter does.
//!
//! Exception handling inside a compiled frame reuses the interpreter's own
//! region logic (`ir::eh::dispatch`, `ir::eh::next_finally`, its `Cont` and
//! `Caught` records) on the method's pre-decoded regions, so a compiled frame
//! runs exactly the same catch / finally / leave / endfinally / rethrow
//! decisions as an interpreted one. The per-frame state (the stack of
//! finally continuations and of caught exceptions) lives in an [`EhState`]
//! that is allocated lazily, only when a frame first needs it, and whose
//! pointer lives in a stack slot of the compiled frame.

use crate::ir::eh::{self, AfterFinally};
use crate::ir::Code;
pub use crate::ir::EhState;
use crate::vm::fault::{Fault, FaultKind};
use crate::vm::tables::{ClassDesc, MethodHandle};
use crate::vm::thread::ThreadCtx;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Fault codes passed to [`jit_fault`].
pub mod code {
    /// `a` = index into [`super::NULL_WHAT`].
    pub const NULL_IN: u32 = 0;
    /// `a` = the callee's `*const MethodHandle`.
    pub const NULL_RECEIVER: u32 = 1;
    /// Integer division by zero.
    pub const DIV_ZERO: u32 = 2;
    /// `i32::MIN / -1`.
    pub const DIV_OVERFLOW32: u32 = 3;
    /// `i64::MIN / -1`.
    pub const DIV_OVERFLOW64: u32 = 4;
    /// `a` = index (sign-extended), `b` = length.
    pub const INDEX: u32 = 5;
    /// `a` = the negative length (sign-extended).
    pub const NEGATIVE_LENGTH: u32 = 6;
    /// `a` = the object, `b` = the target `*const ClassDesc`.
    pub const BAD_CAST: u32 = 7;
    /// Interface not implemented.
    pub const NOT_IMPLEMENTED: u32 = 8;
    /// `a` = the value (as i64).
    pub const CONV_CHAR: u32 = 9;
    /// Native stack exhausted.
    pub const STACK_OVERFLOW: u32 = 10;
    /// Value stack exhausted (no room for the frame record).
    pub const VALUE_STACK_OVERFLOW: u32 = 11;
}

/// The instruction names of `code::NULL_IN` (the interpreter's `nonnull!` texts).
pub const NULL_WHAT: &[&str] = &[
    "callvirt receiver",
    "ldfld",
    "stfld",
    "ldlen",
    "ldelem",
    "stelem",
    "atomic field access",
];

/// Index of `what` in [`NULL_WHAT`].
pub fn null_what(what: &str) -> u64 {
    NULL_WHAT.iter().position(|w| *w == what).unwrap_or(0) as u64
}

/// Run `f`, turning a panic into a pending internal exception.
fn guard<R>(thread: *mut ThreadCtx, dflt: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: `thread` is the live context of the calling thread.
            let t = unsafe { &mut *thread };
            t.raise(Fault::new(
                FaultKind::Exception,
                "internal error in a JIT runtime helper",
            ));
            dflt
        }
    }
}

/// Raise a runtime fault (see [`code`]).
///
/// # Safety
/// `thread` is the live context of the calling thread; pointer arguments are
/// live objects / handles / descriptors as documented per code.
pub unsafe extern "C" fn jit_fault(thread: *mut ThreadCtx, code: u32, a: u64, b: u64) {
    guard(thread, (), || {
        // SAFETY: per this function's contract.
        let t = unsafe { &mut *thread };
        let f = match code {
            code::NULL_IN => Fault::null_in(NULL_WHAT.get(a as usize).copied().unwrap_or("?")),
            // SAFETY: `a` is a live method handle (contract).
            code::NULL_RECEIVER => {
                Fault::null_receiver(&t.rt().method_name(unsafe { &*(a as *const MethodHandle) }))
            }
            code::DIV_ZERO => Fault::div_by_zero(),
            code::DIV_OVERFLOW32 => Fault::div_overflow(i32::MIN),
            code::DIV_OVERFLOW64 => Fault::div_overflow(i64::MIN),
            code::INDEX => Fault::index_out_of_range(a as i32, b as u32),
            code::NEGATIVE_LENGTH => Fault::negative_length(a as i32),
            code::BAD_CAST => {
                // SAFETY: `a` is a live object, `b` a live descriptor (contract).
                let (from, to) = unsafe {
                    (
                        &*crate::vm::object::class_of(a as *const u8),
                        &*(b as *const ClassDesc),
                    )
                };
                Fault::bad_cast(from.name(), to.name())
            }
            code::NOT_IMPLEMENTED => Fault::not_implemented(),
            code::CONV_CHAR => Fault::conv_char(a as i64),
            code::STACK_OVERFLOW => Fault::native_stack_overflow(),
            code::VALUE_STACK_OVERFLOW => Fault::new(
                FaultKind::StackOverflow,
                "stack overflow: the value stack is exhausted",
            ),
            _ => Fault::new(FaultKind::Exception, "internal error: unknown JIT fault"),
        };
        t.raise(f);
    })
}

/// The slow path of a poll whose thread's interrupt word is set:
/// `ThreadCtx::take_interrupt` at a safepoint (it may collect). Returns 1
/// when an `InterruptedException` is now pending (compiled code then
/// branches to its exception path), 0 to go on after the poll.
///
/// # Safety
/// `thread` is the live context of the calling thread, which is at a poll
/// safepoint (its frame's position and live references are stored).
pub unsafe extern "C" fn jit_poll_slow(thread: *mut ThreadCtx) -> u32 {
    guard(thread, 1, || {
        // SAFETY: per this function's contract.
        let t = unsafe { &mut *thread };
        match t.take_interrupt(true) {
            Some(f) => {
                t.raise(f);
                1
            }
            None => 0,
        }
    })
}

/// `throw`: make `exc` pending with a fresh trace (null raises
/// `NullReferenceException`).
///
/// # Safety
/// `thread` is the live context of the calling thread; `exc` is null or live.
pub unsafe extern "C" fn jit_throw(thread: *mut ThreadCtx, exc: *mut u8) {
    guard(thread, (), || {
        // SAFETY: per this function's contract.
        let t = unsafe { &mut *thread };
        if exc.is_null() {
            t.raise(Fault::throw_null());
        } else {
            t.throw(exc);
        }
    })
}

/// Allocate an object of `class` (returns null with an exception pending on failure).
///
/// # Safety
/// `thread` is live; `class` is a live class descriptor of a class.
pub unsafe extern "C" fn jit_new_object(
    thread: *mut ThreadCtx,
    class: *const ClassDesc,
) -> *mut u8 {
    guard(thread, std::ptr::null_mut(), || {
        // SAFETY: per this function's contract.
        let t = unsafe { &mut *thread };
        // SAFETY: `class` is a live class descriptor (contract).
        // The caller stored its references and position (an allocation safepoint).
        // SAFETY: the runtime outlives every thread context (each thread
        // holds an Arc); a separate borrow so `t` can be passed mutably.
        let rt = unsafe { &*(t.runtime as *const crate::runtime::Runtime) };
        // SAFETY: `t` is this thread's attached context (contract).
        match unsafe { rt.alloc_object_in(t, class) } {
            Ok(o) => o,
            Err(f) => {
                t.raise(f);
                std::ptr::null_mut()
            }
        }
    })
}

/// Allocate an array of `n >= 0` elements (null with an exception pending on failure).
///
/// # Safety
/// `thread` is live; `class` is a live array class descriptor.
pub unsafe extern "C" fn jit_new_array(
    thread: *mut ThreadCtx,
    class: *const ClassDesc,
    n: i64,
) -> *mut u8 {
    guard(thread, std::ptr::null_mut(), || {
        // SAFETY: per this function's contract.
        let t = unsafe { &mut *thread };
        // SAFETY: `class` is a live array descriptor (contract).
        // The caller stored its references and position (an allocation safepoint).
        match unsafe { t.rt().alloc_array(class, n) } {
            Ok(a) => a,
            Err(f) => {
                t.raise(f);
                std::ptr::null_mut()
            }
        }
    })
}

/// `Rust`'s `%` on `f32` (fmod).
pub extern "C" fn jit_fmod32(a: f32, b: f32) -> f32 {
    a % b
}

/// `Rust`'s `%` on `f64` (fmod).
pub extern "C" fn jit_fmod64(a: f64, b: f64) -> f64 {
    a % b
}

/// The resolved code of `mh` (for its protected regions).
///
/// # Safety
/// `mh` is a live handle (of a runtime that outlives `'a`).
unsafe fn code_of<'a>(mh: *const MethodHandle) -> Option<&'a Code> {
    // SAFETY: caller contract: the handle (and the code it points to) lives for `'a`.
    unsafe { (*mh).code() }
}

/// The frame's state, allocated on first use.
///
/// # Safety
/// `slot` is the frame's state slot (null or a pointer from `Box::into_raw`).
unsafe fn state<'a>(slot: *mut *mut EhState) -> &'a mut EhState {
    // SAFETY: per the contract; the box is owned by the frame until `free_state`.
    unsafe {
        if (*slot).is_null() {
            *slot = Box::into_raw(Box::default());
        }
        &mut **slot
    }
}

/// Free the frame's state (if any).
///
/// # Safety
/// As [`state`]; the slot is cleared.
unsafe fn free_state(slot: *mut *mut EhState) {
    // SAFETY: per the contract, a non-null slot holds a box we own.
    unsafe {
        if !slot.is_null() && !(*slot).is_null() {
            drop(Box::from_raw(*slot));
            *slot = std::ptr::null_mut();
        }
    }
}

/// Release the frame's exception state (at `ret`).
///
/// # Safety
/// `slot` is the frame's state slot.
pub unsafe extern "C" fn jit_eh_free(slot: *mut *mut EhState) {
    // SAFETY: per this function's contract.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { free_state(slot) }));
}

/// The pending exception leaves this frame: release the state and append
/// the frame to the trace (the caller then returns 0).
///
/// # Safety
/// `thread` and `mh` are live; `slot` is null or the frame's state slot.
pub unsafe extern "C" fn jit_unwind(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    slot: *mut *mut EhState,
) {
    guard(thread, (), || {
        // SAFETY: per this function's contract.
        unsafe {
            free_state(slot);
            (*thread).trace.push(mh);
        }
    })
}

/// An exception is pending at instruction `at`: find its handler in this
/// frame. Returns the handler's instruction index, or -1 to propagate.
///
/// # Safety
/// `thread`, `mh` live; `slot` is the frame's state slot.
pub unsafe extern "C" fn jit_eh_throw(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    slot: *mut *mut EhState,
    at: u32,
) -> i32 {
    guard(thread, -1, || {
        // SAFETY: per this function's contract.
        unsafe {
            let Some(code) = code_of(mh) else { return -1 };
            let t = &mut *thread;
            let st = state(slot);
            let mut pc = 0usize;
            if eh::dispatch(t, code, &mut st.conts, &mut st.caught, 0, at, at, &mut pc) {
                pc as i32
            } else {
                -1
            }
        }
    })
}

/// `leave` from `from` to `target`: returns the next instruction (the first
/// `finally` passed, or `target`).
///
/// # Safety
/// As [`jit_eh_throw`].
pub unsafe extern "C" fn jit_eh_leave(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    slot: *mut *mut EhState,
    from: u32,
    target: u32,
) -> i32 {
    guard(thread, -1, || {
        // SAFETY: per this function's contract.
        unsafe {
            let Some(code) = code_of(mh) else { return -1 };
            let finally = eh::next_finally(code, 0, from, target);
            if (*slot).is_null() && finally.is_none() {
                return target as i32; // nothing caught, nothing to run
            }
            eh::leave(state(slot), code, from, target) as i32
        }
    })
}

/// `endfinally` at `at`: continue the `leave` or the propagation that ran
/// this finally. Returns the next instruction, or -1 to propagate the
/// (re-)pending exception.
///
/// # Safety
/// As [`jit_eh_throw`].
pub unsafe extern "C" fn jit_eh_endfinally(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    slot: *mut *mut EhState,
    at: u32,
) -> i32 {
    guard(thread, -1, || {
        // SAFETY: per this function's contract.
        unsafe {
            let t = &mut *thread;
            let Some(code) = code_of(mh) else { return -1 };
            match eh::endfinally(t, state(slot), code, at) {
                AfterFinally::Goto(pc) | AfterFinally::Handler(pc) => pc as i32,
                AfterFinally::Propagate => -1,
                AfterFinally::NotInFinally => {
                    t.raise(Fault::new(
                        FaultKind::Exception,
                        "endfinally outside a finally block",
                    ));
                    -1
                }
            }
        }
    })
}

/// `rethrow` at `at`: make the caught exception pending again with its
/// original trace (the caller then dispatches it at `at`).
///
/// # Safety
/// As [`jit_eh_throw`].
pub unsafe extern "C" fn jit_eh_rethrow(
    thread: *mut ThreadCtx,
    mh: *const MethodHandle,
    slot: *mut *mut EhState,
    at: u32,
) {
    guard(thread, (), || {
        // SAFETY: per this function's contract.
        unsafe {
            let t = &mut *thread;
            let code = code_of(mh);
            let st = state(slot);
            let c = code.and_then(|code| {
                st.caught
                    .iter()
                    .rev()
                    .find(|c| code.regions[c.region].in_handler(at))
            });
            match c {
                Some(c) => {
                    t.pending = c.exc;
                    t.trace = c.trace.clone();
                }
                None => t.raise(Fault::new(
                    FaultKind::Exception,
                    "rethrow outside a catch block",
                )),
            }
        }
    })
}
