//! Kiln: a JIT-compiling runtime for libraries of stack bytecode.
//!
//! The flow (see `docs/architecture.md`):
//! `.kasm` text → [`asm`] → [`library::Library`] ⇄ [`format`] (`.klib` bytes)
//! → [`verify`] (typed stack at every instruction, frame layout)
//! → [`runtime`] (tables in native memory, loader, natives)
//! → [`interp`] and the Cranelift tier [`jit`], allocating through [`heap`].

pub mod asm;
pub mod bytecode;
pub mod exchange;
pub mod format;
pub mod heap;
pub mod interp;
pub mod jit;
pub mod library;
pub mod runtime;
pub mod safepoint;
pub mod verify;
