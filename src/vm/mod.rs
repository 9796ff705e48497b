//! Layouts only: the `#[repr(C)]` structures and constants that both tiers,
//! the collector and the runtime share by address: object headers
//! ([`object`]), runtime tables ([`tables`]: `MethodHandle`, `ClassDesc` and
//! the metadata definitions, with every `offset_of!` constant generated code
//! uses), per-thread state and the frame record ([`thread`]), and runtime
//! faults ([`fault`]).
//!
//! Invariant: `vm` depends only on `safepoint` (the interrupt word) and the
//! front end's ids (`library`); it imports nothing from `heap`, `runtime`,
//! the tiers or `host`. Behaviour that needs the runtime (allocation,
//! raising a fault as an exception object) lives in `runtime` as further
//! `impl` blocks on these types.

pub mod fault;
pub mod object;
pub mod tables;
pub mod thread;

pub use fault::{Fault, FaultKind};
pub use thread::{frame, ThreadCtx, Trace};
