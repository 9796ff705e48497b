//! Kiln: a JIT-compiling runtime for libraries of stack bytecode.
//!
//! The flow (see `docs/architecture.md`):
//! `.kasm` text → [`asm`] → [`library::Library`] ⇄ [`format`](mod@format) (`.klib` bytes)
//! → [`verify`] (typed stack at every instruction, frame layout)
//! → [`runtime`] (tables in native memory, loader, resolution into [`ir`],
//! natives, GC roots) → [`interp`] and the Cranelift tier [`jit`], which
//! share the layouts of [`vm`] and allocate through [`heap`]; [`engine`] is
//! the one module that names both tiers.
//!
//! The back end's modules (`vm`, `ir`, `heap`, `runtime`, `interp`, `jit`,
//! `engine`, `safepoint`) are public for the project's own tests, benches and
//! tools but hidden from these docs: their items carry raw pointers and
//! invariants a host cannot keep, and they change without notice. Hosts use
//! [`host`]; compilers that emit libraries use [`library`], [`asm`] and
//! [`format`](mod@format).
//!
//! Embedding hosts use [`host`] (re-exported here: [`Vm`], [`Config`],
//! [`Linker`], [`Source`], [`Value`], [`Object`], [`TypedMethod`],
//! [`Metadata`], [`Error`]); see `docs/embedding.md`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod asm;
pub mod bytecode;
#[doc(hidden)]
pub mod engine;
pub mod exchange;
pub mod format;
#[doc(hidden)]
pub mod heap;
pub mod host;
#[doc(hidden)]
pub mod interp;
#[doc(hidden)]
pub mod ir;
#[doc(hidden)]
pub mod jit;
pub mod library;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod safepoint;
pub mod verify;
#[doc(hidden)]
pub mod vm;

pub use host::{
    Caller, Config, Error, ExecMode, InterruptHandle, Linker, Metadata, Object, Source, Throw,
    TypedMethod, Value, Vm,
};
