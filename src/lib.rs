//! Kiln: a JIT-compiling runtime for libraries of stack bytecode.
//!
//! The flow (see `docs/architecture.md`):
//! `.kasm` text → [`asm`] → [`library::Library`] ⇄ [`format`] (`.klib` bytes)
//! → [`verify`] (typed stack at every instruction, frame layout)
//! → [`runtime`] (tables in native memory, loader, resolution into [`ir`],
//! natives, GC roots) → [`interp`] and the Cranelift tier [`jit`], which
//! share the layouts of [`vm`] and allocate through [`heap`]; [`engine`] is
//! the one module that names both tiers.
//!
//! Embedding hosts use [`host`] (re-exported here: [`Vm`], [`Config`],
//! [`Linker`], [`Source`], [`Value`], [`Object`], [`TypedMethod`],
//! [`Metadata`], [`Error`]); see `docs/embedding.md`.

#![deny(missing_docs)]

pub mod asm;
pub mod bytecode;
pub mod engine;
pub mod exchange;
pub mod format;
pub mod heap;
pub mod host;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod library;
pub mod runtime;
pub mod safepoint;
pub mod verify;
pub mod vm;

pub use host::{
    Caller, Config, Error, ExecMode, InterruptHandle, Linker, Metadata, Object, Source, Throw,
    TypedMethod, Value, Vm,
};
