//! The resolved method both tiers consume, and what they share about it:
//! the one instruction table ([`insn`], `for_each_insn!`), the resolved
//! method with its stack maps and analyses ([`code`]), the interpreter's
//! executable form with superinstructions ([`fuse`]), the exception-region
//! state machine ([`eh`]) and value semantics ([`value`]).
//!
//! Invariant: `ir` depends on `vm` (layouts), the verifier's output types
//! and the bytecode opcodes only; it is built by `runtime::resolve` and read
//! by `interp` and `jit`, which import nothing from each other.

pub mod code;
pub mod eh;
pub mod fuse;
pub mod insn;
pub mod value;

pub use code::Intrinsic;
pub(crate) use code::{intrinsic, is_sqrt};
pub use code::{is_leaf, Code, Region};
pub use eh::EhState;
pub use fuse::{Bin, X};
pub use insn::I;
pub use value::{AOp, Cmp, Kind, Src};
