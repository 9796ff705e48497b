//! [`Error`]: every way a host call can fail, and [`Exception`], a Kiln
//! exception that reached the host.

use super::Object;
use crate::asm::AsmError;
use crate::format::FormatError;
use crate::runtime::LoadError;
use crate::verify::VerifyError;
use std::fmt;

/// Where a `native` method is declared (for binding errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeSite {
    /// The library's file (or the name given to an in-memory source).
    pub file: String,
    /// Declaration line.
    pub line: u32,
    /// Class.
    pub class: String,
    /// Method.
    pub method: String,
}

impl fmt::Display for NativeSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}::{}",
            self.file, self.line, self.class, self.method
        )
    }
}

/// A Kiln exception that was not caught inside Kiln: its class, message and
/// the methods it passed through (innermost first), plus the exception
/// object itself.
#[derive(Clone, Debug)]
pub struct Exception {
    /// The exception's class (`ArithmeticException`, ...).
    pub class: String,
    /// Its `message` field (empty if null).
    pub message: String,
    /// `Class::method` of every frame it unwound, innermost first. A trace
    /// deeper than [`TRACE_MAX`](crate::vm::thread::TRACE_MAX) +
    /// [`TRACE_TAIL`](crate::vm::thread::TRACE_TAIL) keeps only its innermost
    /// `TRACE_MAX` and outermost `TRACE_TAIL` frames.
    pub trace: Vec<String>,
    /// How many frames it unwound between `trace[omitted_at - 1]` and
    /// `trace[omitted_at]` that are not in `trace` (0 unless it was deeper).
    pub omitted: u64,
    /// Where in `trace` the omitted frames lie.
    pub omitted_at: usize,
    /// The exception object (read its other fields through it).
    pub object: Option<Object>,
    /// The trace as method handles (kept so a native can rethrow it as is).
    pub(crate) frames: Vec<usize>,
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)?;
        for (i, t) in self.trace.iter().enumerate() {
            if i == self.omitted_at && self.omitted > 0 {
                write!(f, "\n  ... {} more frames", self.omitted)?;
            }
            write!(f, "\n  at {t}")?;
        }
        if self.omitted_at >= self.trace.len() && self.omitted > 0 {
            write!(f, "\n  ... {} more frames", self.omitted)?;
        }
        Ok(())
    }
}

/// Every error of the embedding API.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A `KILN_*` variable has a bad value ([`Config::from_env`](super::Config::from_env)).
    Config {
        /// The variable.
        variable: String,
        /// What is wrong and the accepted values.
        message: String,
    },
    /// A file could not be read.
    Io {
        /// The file.
        file: String,
        /// The OS error.
        message: String,
    },
    /// `.klib` bytes are malformed.
    Format {
        /// The file (or source name).
        file: String,
        /// The reader's error, with its byte offset.
        error: FormatError,
    },
    /// kasm text does not assemble: every error, each with file, line and column.
    Assembly(Vec<AsmError>),
    /// Imports cannot be resolved or two libraries define the same class
    /// (each error names its file).
    Link(Vec<LoadError>),
    /// The program does not verify: every error, each with its file, line,
    /// class, method and bytecode offset where known.
    Verification(Vec<VerifyError>),
    /// `native` methods that neither the runtime nor the [`Linker`](super::Linker) binds.
    UnboundNative(Vec<NativeSite>),
    /// A typed native's Rust signature does not match its kasm declaration.
    NativeSignature {
        /// The declaration.
        site: Box<NativeSite>,
        /// The kasm signature.
        declared: String,
        /// The Rust closure's signature.
        bound: String,
    },
    /// [`Linker`](super::Linker) registration of a name the runtime already binds.
    NativeClash {
        /// Class.
        class: String,
        /// Method.
        method: String,
    },
    /// [`Linker`](super::Linker) registration of the same name twice.
    DuplicateNative {
        /// Class.
        class: String,
        /// Method.
        method: String,
    },
    /// Runtime setup failed (a broken std library, no memory for tables).
    Setup(String),
    /// No class of that name.
    UnknownClass(String),
    /// No method of that name in the class or its ancestors.
    UnknownMethod {
        /// The class searched.
        class: String,
        /// The method name.
        method: String,
    },
    /// No field of that name in the class or its ancestors.
    UnknownField {
        /// The class searched.
        class: String,
        /// The field name.
        field: String,
    },
    /// A method name not of the form `Class::method`.
    BadName(String),
    /// A call of a class's static constructor (`Class::cctor`): the runtime
    /// runs it once, at load, and nothing may run it again.
    CallCctor(String),
    /// A static method called as an instance method or the reverse.
    WrongMethodKind {
        /// `Class::method`.
        method: String,
        /// True if the method is static.
        is_static: bool,
    },
    /// Wrong number of arguments.
    ArgumentCount {
        /// `Class::method`.
        method: String,
        /// Declared parameters (without `this`).
        expected: usize,
        /// Arguments given.
        found: usize,
    },
    /// An argument of the wrong type.
    ArgumentType {
        /// `Class::method`.
        method: String,
        /// Parameter index (0 = first declared parameter).
        index: usize,
        /// The declared type (kasm syntax).
        expected: String,
        /// What was given.
        found: String,
    },
    /// A [`TypedMethod`](super::TypedMethod)'s Rust signature does not
    /// match the method's declaration.
    Signature {
        /// `Class::method`.
        method: String,
        /// The declaration (kasm syntax).
        declared: String,
        /// The requested Rust signature.
        requested: String,
    },
    /// A value of the wrong type for a field, array element or conversion.
    Type {
        /// What was accessed (`Point::x`, `i64[] element`, ...).
        what: String,
        /// The type it has or needs.
        expected: String,
        /// What was given or found.
        found: String,
    },
    /// A store to a field that is not `mutable`.
    Immutable(String),
    /// An array index outside `0..len`.
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// An [`Object`] of another [`Vm`](super::Vm) was passed.
    ForeignObject,
    /// This thread is already running code of another [`Vm`](super::Vm)
    /// (or is a thread Kiln started): call in through the native's
    /// [`Caller`](super::Caller) instead.
    ThreadBusy,
    /// The safepoint mechanism could not deliver an interrupt, or a
    /// deadline timer could not start.
    Interrupt(String),
    /// Object exchange failed: malformed or mismatched bytes, or a graph
    /// that cannot be exported (each error names the offset and field).
    Exchange(crate::exchange::ExchangeError),
    /// An exception thrown by Kiln code that no handler caught (boxed: it
    /// is much larger than the other variants, and `Result`s stay small).
    Exception(Box<Exception>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: &[T]) -> fmt::Result {
            for (i, e) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str("\n")?;
                }
                write!(f, "{e}")?;
            }
            Ok(())
        }
        match self {
            Error::Config { message, .. } => f.write_str(message),
            Error::Io { file, message } => write!(f, "{file}: cannot read: {message}"),
            Error::Format { file, error } => write!(f, "{file}: {error}"),
            Error::Assembly(v) => list(f, v),
            Error::Link(v) => list(f, v),
            Error::Verification(v) => list(f, v),
            Error::UnboundNative(v) => {
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(
                        f,
                        "{}:{}: native method {}::{} is not bound by the runtime or the host",
                        s.file, s.line, s.class, s.method
                    )?;
                }
                Ok(())
            }
            Error::NativeSignature {
                site,
                declared,
                bound,
            } => write!(
                f,
                "{}:{}: native {}::{} is declared `{declared}` but bound to a Rust function `{bound}`",
                site.file, site.line, site.class, site.method
            ),
            Error::NativeClash { class, method } => write!(
                f,
                "{class}::{method} is a built-in native: the host cannot rebind it"
            ),
            Error::DuplicateNative { class, method } => {
                write!(f, "native {class}::{method} is already defined in this linker")
            }
            Error::Setup(m) => write!(f, "setup: {m}"),
            Error::UnknownClass(c) => write!(f, "no class named {c}"),
            Error::UnknownMethod { class, method } => {
                write!(f, "class {class} has no method named {method}")
            }
            Error::UnknownField { class, field } => {
                write!(f, "class {class} has no field named {field}")
            }
            Error::BadName(n) => write!(f, "{n:?} is not a method name of the form Class::method"),
            Error::CallCctor(c) => write!(
                f,
                "static constructor `{c}::cctor` cannot be called: the runtime runs it once, at load"
            ),
            Error::WrongMethodKind { method, is_static } => {
                if *is_static {
                    write!(f, "{method} is static: call it without a receiver")
                } else {
                    write!(f, "{method} is an instance method: call it on an object")
                }
            }
            Error::ArgumentCount {
                method,
                expected,
                found,
            } => write!(
                f,
                "{method} takes {expected} argument(s), {found} given"
            ),
            Error::ArgumentType {
                method,
                index,
                expected,
                found,
            } => write!(
                f,
                "{method}: argument {index} must be {expected}, {found} given"
            ),
            Error::Signature {
                method,
                declared,
                requested,
            } => write!(
                f,
                "{method} is declared `{declared}`, not `{requested}`"
            ),
            Error::Type {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected {expected}, found {found}"),
            Error::Immutable(w) => write!(f, "{w} is not mutable"),
            Error::IndexOutOfRange { index, len } => write!(
                f,
                "index {index} is out of range for an array of length {len}"
            ),
            Error::ForeignObject => f.write_str("the object belongs to another Vm"),
            Error::ThreadBusy => f.write_str(
                "this thread is running code of another Vm (or is a Kiln thread): call in through the native's Caller",
            ),
            Error::Interrupt(m) => write!(f, "interrupt: {m}"),
            Error::Exchange(e) => write!(f, "object exchange: {e}"),
            Error::Exception(e) => write!(f, "unhandled exception: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The exception, if this error is an uncaught Kiln exception.
    pub fn exception(&self) -> Option<&Exception> {
        match self {
            Error::Exception(e) => Some(e),
            _ => None,
        }
    }

    /// Group the loader's errors into one typed error (the loader reports
    /// one phase at a time, so the list is of one kind; the first decides).
    pub(crate) fn from_load(mut errs: Vec<LoadError>) -> Error {
        let Some(first) = errs.first() else {
            return Error::Setup("load failed without an error".into());
        };
        match first {
            LoadError::Io { file, error } => Error::Io {
                file: file.clone(),
                message: error.clone(),
            },
            LoadError::Format { .. } => match errs.swap_remove(0) {
                LoadError::Format { file, error } => Error::Format { file, error },
                _ => unreachable!("matched above"),
            },
            LoadError::Asm(_) => Error::Assembly(
                errs.into_iter()
                    .filter_map(|e| match e {
                        LoadError::Asm(a) => Some(a),
                        _ => None,
                    })
                    .collect(),
            ),
            LoadError::Verify(_) => Error::Verification(
                errs.into_iter()
                    .filter_map(|e| match e {
                        LoadError::Verify(v) => Some(v),
                        _ => None,
                    })
                    .collect(),
            ),
            LoadError::UnboundNative { .. } => Error::UnboundNative(
                errs.into_iter()
                    .filter_map(|e| match e {
                        LoadError::UnboundNative {
                            file,
                            line,
                            class,
                            method,
                        } => Some(NativeSite {
                            file,
                            line,
                            class,
                            method,
                        }),
                        _ => None,
                    })
                    .collect(),
            ),
            e @ (LoadError::StdMissing { .. }
            | LoadError::MissingClass { .. }
            | LoadError::Resolve(_)) => Error::Setup(e.to_string()),
            _ => Error::Link(errs),
        }
    }
}
