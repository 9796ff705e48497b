//! The fuzz targets' invariants, shared by the mutation fuzzer
//! (`tests/fuzz.rs`, stable toolchain, part of `cargo test`) and the
//! coverage-guided libFuzzer targets (`tests/fuzz/libfuzzer`, `cargo fuzz`
//! on a nightly toolchain). Each target takes bytes and returns `Err` with a
//! description when an invariant is broken; a panic is a finding too.
//! Keep these free of harness state (no watchdog, no allocation
//! accounting): both harnesses include this file with `#[path]`.

use kiln::bytecode::{self, Insn, Op, Operand};
use kiln::library::program::Program;
use kiln::library::{Library, TypeKind, TypeSig};
use kiln::{asm, format, verify};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Inputs the verifier accepted (statistics).
pub static VERIFY_OK: AtomicU64 = AtomicU64::new(0);

pub fn target_reader(bytes: &[u8]) -> Result<(), String> {
    match format::read(bytes) {
        Err(e) => {
            let _ = e.to_string();
            if e.offset() > bytes.len() {
                return Err(format!(
                    "error offset past the end: offset {} of a {}-byte file: {e}",
                    e.offset(),
                    bytes.len()
                ));
            }
            Ok(())
        }
        Ok(lib) => {
            let again = format::write(&lib);
            if again != bytes {
                let at = again
                    .iter()
                    .zip(bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(again.len().min(bytes.len()));
                return Err(format!(
                    "non-canonical: read accepted bytes that write encodes differently (first difference at byte {at}, lengths {} vs {})",
                    bytes.len(),
                    again.len()
                ));
            }
            let _ = format::inspect(&lib);
            let text = asm::disassemble(&lib);
            if let Err(errs) = asm::assemble(&text, "dis.kasm") {
                for e in errs {
                    let _ = e.to_string();
                }
            }
            Ok(())
        }
    }
}

pub fn target_assembler(bytes: &[u8]) -> Result<(), String> {
    let src = String::from_utf8_lossy(bytes);
    match asm::assemble(&src, "fuzz.kasm") {
        Err(errs) => {
            if errs.is_empty() {
                return Err("assemble: Err with no errors".into());
            }
            for e in errs {
                let _ = e.to_string();
            }
            Ok(())
        }
        Ok(lib) => {
            let bytes = format::write(&lib);
            match format::read(&bytes) {
                Ok(back) => {
                    if format::write(&back) != bytes {
                        return Err(
                            "write-read: assembled library changes through write/read".into()
                        );
                    }
                }
                Err(e) => {
                    return Err(format!(
                        "write-read: reader rejects an assembled library: {e}"
                    ))
                }
            }
            let dis = asm::disassemble(&lib);
            match asm::assemble(&dis, "dis.kasm") {
                Ok(lib2) => {
                    if format::write(&lib2) != bytes {
                        return Err("roundtrip: dis/asm changes the bytes".into());
                    }
                }
                Err(errs) => {
                    return Err(format!(
                        "roundtrip: disassembly does not assemble: {}",
                        errs[0]
                    ))
                }
            }
            Ok(())
        }
    }
}

pub fn std_lib() -> &'static Library {
    static STD: OnceLock<Library> = OnceLock::new();
    STD.get_or_init(|| {
        let src = kiln::runtime::load::STD_SOURCE;
        asm::assemble(src, "std.kasm").expect("std.kasm assembles")
    })
}

pub fn target_verifier(bytes: &[u8]) -> Result<(), String> {
    let Ok(lib) = format::read(bytes) else {
        return Ok(());
    };
    let std = std_lib();
    let clash = lib.types.iter().any(|t| std.type_named(&t.name).is_some());
    let (libs, files) = if clash {
        (vec![lib], vec!["fuzz.klib".to_string()])
    } else {
        (
            vec![std.clone(), lib],
            vec!["std.kasm".to_string(), "fuzz.klib".to_string()],
        )
    };
    let Ok(program) = Program::new(libs) else {
        return Ok(());
    };
    match verify::verify_program(&program, &files) {
        Err(errs) => {
            if errs.is_empty() {
                return Err("verify: Err with no errors".into());
            }
            for e in &errs {
                let _ = e.to_string();
            }
            Ok(())
        }
        Ok(v) => {
            VERIFY_OK.fetch_add(1, Ordering::Relaxed);
            check_verified(&program, &v)
        }
    }
}

/// Instruction equality by encoding (so NaN operands compare equal).
pub fn same_insn(a: &Insn, b: &Insn) -> bool {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    bytecode::encode(&mut x, a.op, &a.operand);
    if b.op.operand_kind() != a.op.operand_kind() {
        return false;
    }
    bytecode::encode(&mut y, b.op, &b.operand);
    x == y
}

/// The locally checkable guarantees of an accepted program.
pub fn check_verified(p: &Program, v: &verify::Verified) -> Result<(), String> {
    for id in p.all_classes() {
        let def = p.def(id);
        if def.kind == TypeKind::Interface {
            continue;
        }
        for (mi, m) in def.methods.iter().enumerate() {
            if !m.has_body() {
                continue;
            }
            let here = format!("{}::{}", def.name, m.name);
            let mid = kiln::library::program::MemberId {
                class: id,
                index: mi as u32,
            };
            let Some(info) = v.methods.get(&mid) else {
                return Err(format!("accepted: no MethodInfo for {here}"));
            };
            let Ok(decoded) = bytecode::decode_all(&m.code) else {
                return Err(format!("accepted: undecodable code in {here}"));
            };
            if decoded.is_empty() {
                return Err(format!("accepted: empty body in {here}"));
            }
            if decoded.len() != info.insns.len()
                || decoded
                    .iter()
                    .zip(&info.insns)
                    .any(|((o, i), vi)| *o != vi.offset || !same_insn(i, &vi.insn))
            {
                return Err(format!("accepted: insns differ from the code in {here}"));
            }
            if info.max_stack as usize > 1024 {
                return Err(format!("accepted: max_stack {} in {here}", info.max_stack));
            }
            if info.stack(0).is_none_or(|s| !s.is_empty()) {
                return Err(format!("accepted: entry not reachable with [] in {here}"));
            }
            let reachable = |off: u32| info.index_of(off).is_some_and(|i| info.reachable(i));
            for (i, vi) in info.insns.iter().enumerate() {
                let Some(stack) = info.stack(i).map(|s| s.to_vec()) else {
                    continue;
                };
                if stack.len() > info.max_stack as usize {
                    return Err(format!(
                        "accepted: stack deeper than max_stack at {here} @{}",
                        vi.offset
                    ));
                }
                for t in &stack {
                    let sigs: &[TypeSig] = match t {
                        verify::VType::Ref(sig) => std::slice::from_ref(sig),
                        verify::VType::Join(sigs) if sigs.len() >= 2 => sigs,
                        verify::VType::Join(_) => {
                            return Err(format!(
                                "accepted: a Join of fewer than two types at {here} @{}",
                                vi.offset
                            ))
                        }
                        _ => &[],
                    };
                    for sig in sigs {
                        let mut e = sig;
                        while let TypeSig::Array(inner) = e {
                            e = inner;
                        }
                        let ok = match e {
                            TypeSig::Class(n) => p.class(n).is_some(),
                            TypeSig::Atomic(_) => false,
                            _ => true,
                        };
                        if !ok {
                            return Err(format!(
                                "accepted: stack holds a bad reference type {sig} at {here} @{}",
                                vi.offset
                            ));
                        }
                    }
                }
                if vi.insn.op == Op::Ret && stack.len() != m.ret.is_some() as usize {
                    return Err(format!(
                        "accepted: ret with {} stack values at {here} @{}",
                        stack.len(),
                        vi.offset
                    ));
                }
                let targets: Vec<u32> = match &vi.insn.operand {
                    Operand::Target(t) => vec![*t],
                    Operand::Switch(ts) => ts.clone(),
                    _ => Vec::new(),
                };
                for t in targets {
                    if !reachable(t) {
                        return Err(format!(
                            "accepted: branch to a non-instruction or untyped target at {here} @{} -> {t}",
                            vi.offset
                        ));
                    }
                }
                if !vi.insn.op.is_terminator() {
                    match info.insns.get(i + 1) {
                        Some(_) if info.reachable(i + 1) => {}
                        Some(_) => {
                            return Err(format!(
                                "accepted: fall-through to untyped code at {here} @{}",
                                vi.offset
                            ))
                        }
                        None => {
                            return Err(format!(
                                "accepted: falls off the end at {here} @{}",
                                vi.offset
                            ))
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
