//! libFuzzer target `verify_kasm`: kasm text is assembled and, when it
//! assembles, its `.klib` encoding goes through the `verifier` target's
//! checks. Text mutations keep far more inputs well-formed than byte edits
//! of `.klib` files do, so this reaches deep into the verifier.
#![no_main]

#[path = "../../targets.rs"]
#[allow(dead_code)]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let Ok(lib) = kiln::asm::assemble(&src, "fuzz.kasm") else {
        return;
    };
    let bytes = kiln::format::write(&lib);
    if let Err(e) = targets::target_verifier(&bytes) {
        panic!("verify_kasm invariant: {e}");
    }
});
