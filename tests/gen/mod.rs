//! Random generator of well-typed kasm programs for the differential test
//! (`tests/differential.rs`).
//!
//! Invariants:
//! - Deterministic: a program is a pure function of its `u64` seed
//!   ([`program`]); the PRNG is SplitMix64 ([`Rng`]), no global state.
//! - Well-typed by construction: every expression production pushes exactly one
//!   value of the requested stack type, every statement leaves the evaluation
//!   stack as it found it (empty), so every program must verify. A program that
//!   does not is a generator bug.
//! - Terminating: loops have constant trip counts, calls form a DAG (a method
//!   only calls methods generated before it), and every method carries a cost
//!   estimate that bounds the work of its loops and callees.
//! - Exceptions only where intended: operations that can throw (division by
//!   zero or `MIN / -1`, out-of-range indices, `conv.char` of non-scalars, null
//!   receivers, failed casts, negative array lengths, user `throw`) are emitted
//!   raw only in *protected* contexts (inside `.try` with a catch-all, or in the
//!   deliberately risky last function of a program); elsewhere their operands
//!   are guarded so that they cannot throw.

pub mod method;
pub mod program;

pub use program::program;

/// SplitMix64: tiny, fast, good enough, and fully reproducible from a seed.
pub struct Rng(std::cell::Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(std::cell::Cell::new(seed ^ 0x4b49_4c4e_4449_4646))
    }

    pub fn next_u64(&self) -> u64 {
        let mut z = self.0.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.0.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo + 1) as usize) as u32
    }

    /// True with probability `pct` percent.
    pub fn pct(&self, pct: u32) -> bool {
        self.below(100) < pct as usize
    }

    pub fn pick<'a, T>(&self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// Index chosen with the given weights (at least one non-zero).
    pub fn weighted(&self, w: &[u32]) -> usize {
        let total: u32 = w.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, &wi) in w.iter().enumerate() {
            if x < wi {
                return i;
            }
            x -= wi;
        }
        unreachable!("weights sum checked above")
    }
}

/// Evaluation-stack types of numeric values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    I32,
    I64,
    F32,
    F64,
}

impl St {
    pub const ALL: [St; 4] = [St::I32, St::I64, St::F32, St::F64];

    pub fn is_int(self) -> bool {
        matches!(self, St::I32 | St::I64)
    }
}

/// Declared (slot) types: locals, arguments, fields, elements, returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dt {
    I32,
    I64,
    U64,
    F32,
    F64,
    Bool,
    U8,
    Char,
}

impl Dt {
    pub const ALL: [Dt; 8] = [
        Dt::I32,
        Dt::I64,
        Dt::U64,
        Dt::F32,
        Dt::F64,
        Dt::Bool,
        Dt::U8,
        Dt::Char,
    ];

    pub fn st(self) -> St {
        match self {
            Dt::I32 | Dt::Bool | Dt::U8 | Dt::Char => St::I32,
            Dt::I64 | Dt::U64 => St::I64,
            Dt::F32 => St::F32,
            Dt::F64 => St::F64,
        }
    }

    pub fn kasm(self) -> &'static str {
        match self {
            Dt::I32 => "i32",
            Dt::I64 => "i64",
            Dt::U64 => "u64",
            Dt::F32 => "f32",
            Dt::F64 => "f64",
            Dt::Bool => "bool",
            Dt::U8 => "u8",
            Dt::Char => "char",
        }
    }

    /// The `P::` print helper that prints a value of this slot type (`char`
    /// slots hold unchecked values, so they print as integers).
    pub fn printer(self) -> &'static str {
        match self {
            Dt::I32 | Dt::U8 | Dt::Char => "P::i",
            Dt::Bool => "P::b",
            Dt::I64 => "P::l",
            Dt::U64 => "P::u",
            Dt::F32 => "P::f",
            Dt::F64 => "P::d",
        }
    }
}

/// Formats an f64 as a kasm float literal that parses back to the same value.
pub fn f64_lit(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        let s = format!("{v:?}");
        s
    }
}

/// Formats an f32 as a kasm float literal.
pub fn f32_lit(v: f32) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v:?}")
    }
}
