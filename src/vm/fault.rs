//! Runtime faults: the exceptions the runtime raises itself ([`FaultKind`])
//! and their messages ([`Fault`]). Both tiers build faults here, so the two
//! execution modes produce the same messages.

use std::fmt;

/// Exceptions the runtime raises itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `NullReferenceException`.
    NullReference,
    /// `IndexOutOfRangeException`.
    IndexOutOfRange,
    /// `ArithmeticException`.
    Arithmetic,
    /// `InvalidCastException`.
    InvalidCast,
    /// `StackOverflowException`.
    StackOverflow,
    /// `OutOfMemoryException`.
    OutOfMemory,
    /// `Exception` (internal errors).
    Exception,
    /// `InterruptedException` (an interrupt or deadline, delivered at a
    /// safepoint poll: see `safepoint::interrupt`).
    Interrupted,
}

impl FaultKind {
    pub(crate) const ALL: [FaultKind; 8] = [
        FaultKind::NullReference,
        FaultKind::IndexOutOfRange,
        FaultKind::Arithmetic,
        FaultKind::InvalidCast,
        FaultKind::StackOverflow,
        FaultKind::OutOfMemory,
        FaultKind::Exception,
        FaultKind::Interrupted,
    ];

    /// The std class name.
    pub fn class_name(self) -> &'static str {
        match self {
            FaultKind::NullReference => "NullReferenceException",
            FaultKind::IndexOutOfRange => "IndexOutOfRangeException",
            FaultKind::Arithmetic => "ArithmeticException",
            FaultKind::InvalidCast => "InvalidCastException",
            FaultKind::StackOverflow => "StackOverflowException",
            FaultKind::OutOfMemory => "OutOfMemoryException",
            FaultKind::Exception => "Exception",
            FaultKind::Interrupted => "InterruptedException",
        }
    }
}

/// A runtime fault about to become an exception object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which exception.
    pub kind: FaultKind,
    /// Its message (never empty).
    pub message: String,
}

impl Fault {
    /// Build a fault.
    pub fn new(kind: FaultKind, message: impl Into<String>) -> Fault {
        Fault {
            kind,
            message: message.into(),
        }
    }

    /// `NullReferenceException`.
    pub fn null(what: &str) -> Fault {
        Fault::new(FaultKind::NullReference, format!("null reference: {what}"))
    }

    // --- Faults raised by executing bytecode. The interpreter and the JIT's
    // helpers (src/jit/helpers.rs) both build them here, so the two execution
    // modes produce the same messages.

    /// A null reference used by instruction `what` (`ldfld`, `callvirt receiver`, ...).
    pub fn null_in(what: &str) -> Fault {
        Fault::new(
            FaultKind::NullReference,
            format!("null reference in {what}"),
        )
    }

    /// `call` of an instance method `method` (`Class::name`) on null.
    pub fn null_receiver(method: &str) -> Fault {
        Fault::new(
            FaultKind::NullReference,
            format!("null receiver in call to {method}"),
        )
    }

    /// Integer `div`/`rem` by zero.
    pub fn div_by_zero() -> Fault {
        Fault::new(FaultKind::Arithmetic, "integer division by zero")
    }

    /// Signed `MIN / -1` (or `rem`); `min` is the dividend.
    pub fn div_overflow(min: impl fmt::Display) -> Fault {
        Fault::new(
            FaultKind::Arithmetic,
            format!("integer overflow: {min} / -1"),
        )
    }

    /// Array index out of range.
    pub fn index_out_of_range(i: i32, len: u32) -> Fault {
        Fault::new(
            FaultKind::IndexOutOfRange,
            format!("index {i} is out of range for an array of length {len}"),
        )
    }

    /// `newarr` with a negative length.
    pub fn negative_length(n: i32) -> Fault {
        Fault::new(FaultKind::Arithmetic, format!("negative array length {n}"))
    }

    /// Failed `castclass`.
    pub fn bad_cast(from: &str, to: &str) -> Fault {
        Fault::new(
            FaultKind::InvalidCast,
            format!("cannot cast {from} to {to}"),
        )
    }

    /// Interface call on an object whose class does not implement the interface.
    pub fn not_implemented() -> Fault {
        Fault::new(
            FaultKind::InvalidCast,
            "object does not implement the interface",
        )
    }

    /// `throw` of null.
    pub fn throw_null() -> Fault {
        Fault::new(FaultKind::NullReference, "throw of a null reference")
    }

    /// `conv.char` of a value that is not a Unicode scalar value.
    pub fn conv_char(n: i64) -> Fault {
        Fault::new(
            FaultKind::InvalidCast,
            format!("conv.char: {n} (0x{n:x}) is not a Unicode scalar value"),
        )
    }

    /// The native stack limit was reached on entry to a method.
    pub fn native_stack_overflow() -> Fault {
        Fault::new(
            FaultKind::StackOverflow,
            "stack overflow: the native stack is exhausted",
        )
    }
}
