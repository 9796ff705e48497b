//! libFuzzer target `assembler`: `targets::target_assembler` (the invariants of
//! `tests/fuzz/targets.rs`); a broken invariant panics, which libFuzzer
//! reports as a crash and saves.
#![no_main]

#[path = "../../targets.rs"]
#[allow(dead_code)]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = targets::target_assembler(data) {
        panic!("assembler invariant: {e}");
    }
});
