//! JIT unit tests: slot write-back, compile-once under a race, the method
//! lookup table, and aarch64 cross-compilation of every jit-test method.

use super::*;
use crate::runtime::{load, Options, Runtime};
use crate::vm::thread::{call_method, ThreadCtx};
use cranelift_codegen::control::ControlPlane;
use std::path::{Path, PathBuf};

fn stub() -> usize {
    jit_compile_stub as *const () as usize
}

/// Load, verify and set up `src` (a kasm program) with the JIT installed.
fn jit_runtime(name: &str, src: &str) -> Runtime {
    let dir = std::env::temp_dir().join(format!("kiln-jit-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.kasm"));
    std::fs::write(&p, src).unwrap();
    let (program, files, verified) = load::load_verified(&p).unwrap_or_else(|e| panic!("{e:?}"));
    let opts = Options {
        stack_size: 8 << 20,
        heap_max: 16 << 20,
        ..Options::default()
    };
    let rt = crate::engine::new_runtime(program, files, &verified, opts)
        .unwrap_or_else(|e| panic!("{e:?}"));
    install(&rt, verified).unwrap();
    rt
}

fn method<'a>(rt: &'a Runtime, name: &str) -> &'a MethodHandle {
    rt.tables
        .all_methods()
        .find(|m| rt.method_name(m) == name)
        .unwrap_or_else(|| panic!("no method {name}"))
}

const SRC: &str = "
.library jt
.class public P {
  .method public static sq(x: i64) -> i64 {
    ldarg x
    ldarg x
    mul
    ret
  }
  .method public static sum(n: i64) -> i64 {
    .locals (acc: i64)
  top:
    ldarg n
    ldc.i64 0
    ble done
    ldloc acc
    ldarg n
    call P::sq
    add
    stloc acc
    ldarg n
    ldc.i64 1
    sub
    starg n
    br top
  done:
    ldloc acc
    ret
  }
  .method public static main() {
    ret
  }
}
";

#[test]
fn slot_is_written_back_after_first_call() {
    let rt = jit_runtime("writeback", SRC);
    let sum = method(&rt, "P::sum");
    let sq = method(&rt, "P::sq");
    assert_eq!(sum.entry.load(Ordering::Acquire), stub());
    assert_eq!(sq.entry.load(Ordering::Acquire), stub());
    let mut ctx = ThreadCtx::new(&rt, 8 << 20);
    // SAFETY: `ctx` outlives the attachment (dropped first, in reverse order).
    let _att = unsafe { crate::runtime::roots::attach(&rt, &mut ctx) };
    let args = [10u64];
    // SAFETY: `sum` takes one i64 argument.
    let r = unsafe { call_method(&mut ctx, sum, args.as_ptr()) };
    assert!(!ctx.has_pending());
    assert_eq!(r, 385);
    let e = sum.entry.load(Ordering::Acquire);
    assert_ne!(e, stub());
    assert_ne!(e, rt.tiers.interp_entry as usize);
    // the callee was compiled by its own first call, from compiled code
    assert_ne!(sq.entry.load(Ordering::Acquire), stub());
    // both have register entries; their slots hold the one trampoline of
    // the signature (i64) -> i64
    assert_ne!(sum.fast.load(Ordering::Acquire), 0);
    assert_ne!(sq.fast.load(Ordering::Acquire), 0);
    assert_eq!(sq.entry.load(Ordering::Acquire), e);
    let jit = crate::jit::jit_of(&rt).unwrap();
    assert_eq!(jit.compile_count(), 2);
    // later calls go straight to the code: nothing is compiled again
    // SAFETY: as above.
    let r = unsafe { call_method(&mut ctx, sum, args.as_ptr()) };
    assert_eq!(r, 385);
    assert_eq!(jit.compile_count(), 2);
    assert_eq!(sum.entry.load(Ordering::Acquire), e);
}

#[test]
fn racing_first_calls_compile_once() {
    let rt = jit_runtime("race", SRC);
    let sq = method(&rt, "P::sq");
    let sq_addr = sq as *const MethodHandle as usize;
    let n = 4;
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        for k in 0..n {
            let (rt, barrier) = (&rt, &barrier);
            s.spawn(move || {
                let mut ctx = ThreadCtx::new(rt, 2 << 20);
                // SAFETY: `ctx` outlives the attachment.
                let _att = unsafe { crate::runtime::roots::attach(rt, &mut ctx) };
                let args = [k as u64 + 3];
                barrier.wait();
                // SAFETY: `sq` takes one i64 argument.
                let r =
                    unsafe { call_method(&mut ctx, sq_addr as *const MethodHandle, args.as_ptr()) };
                assert_eq!(r, (k as u64 + 3) * (k as u64 + 3));
            });
        }
    });
    assert_eq!(crate::jit::jit_of(&rt).unwrap().compile_count(), 1);
    assert_ne!(sq.entry.load(Ordering::Acquire), stub());
}

#[test]
fn lookup_maps_native_pcs_to_methods() {
    let rt = jit_runtime("lookup", SRC);
    let sq = method(&rt, "P::sq");
    let sum = method(&rt, "P::sum");
    // before compilation: the bytecode range maps to the method
    let found = rt.lookup(sum.instruction_ptr as usize + 1).unwrap();
    assert!(std::ptr::eq(found, sum));
    let mut ctx = ThreadCtx::new(&rt, 8 << 20);
    // SAFETY: `ctx` outlives the attachment (dropped first, in reverse order).
    let _att = unsafe { crate::runtime::roots::attach(&rt, &mut ctx) };
    let args = [7u64];
    // SAFETY: `sq` takes one i64 argument.
    assert_eq!(unsafe { call_method(&mut ctx, sq, args.as_ptr()) }, 49);
    // the slot holds the shared trampoline; the code is the register entry
    let code = sq.fast.load(Ordering::Acquire);
    assert!(rt.lookup(sq.entry.load(Ordering::Acquire)).is_none());
    for pc in [code, code + 1, code + 8] {
        let found = rt.lookup(pc).expect("pc inside compiled code");
        assert!(std::ptr::eq(found, sq), "pc {pc:#x}");
    }
    let local = 0u8;
    assert!(rt.lookup(&local as *const u8 as usize).is_none());
}

/// A call to a method compiled before the caller is a direct call to its
/// register entry; before that, the caller tests the callee's `fast` word
/// and falls back to its slot.
#[test]
fn compiled_callers_call_register_entries() {
    let rt = jit_runtime("direct", SRC);
    let (sq, sum) = (method(&rt, "P::sq"), method(&rt, "P::sum"));
    let jit = crate::jit::jit_of(&rt).unwrap();
    let info = &jit.verified.methods[&sum.member];
    let isa = host_isa().unwrap();
    let mut fctx = FunctionBuilderContext::new();
    let before = translate::translate(&rt, sum, info, &*isa, &mut fctx).unwrap();
    let text = before.display().to_string();
    assert!(text.contains("atomic_load"), "{text}");
    let mut ctx = ThreadCtx::new(&rt, 8 << 20);
    // SAFETY: `ctx` outlives the attachment (dropped first, in reverse order).
    let _att = unsafe { crate::runtime::roots::attach(&rt, &mut ctx) };
    let args = [5u64];
    // SAFETY: `sq` takes one i64 argument.
    assert_eq!(unsafe { call_method(&mut ctx, sq, args.as_ptr()) }, 25);
    let fast = sq.fast.load(Ordering::Acquire);
    assert_ne!(fast, 0);
    let after = translate::translate(&rt, sum, info, &*isa, &mut fctx).unwrap();
    let text = after.display().to_string();
    assert!(!text.contains("atomic_load"), "{text}");
    let konst = format!("iconst.i64 {fast:#x}");
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    assert!(digits.contains(&konst), "no constant {fast:#x} in {text}");
    // and the result is the same through either path
    // SAFETY: `sum` takes one i64 argument.
    assert_eq!(unsafe { call_method(&mut ctx, sum, args.as_ptr()) }, 55);
}

fn kasm_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut es: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    es.sort_by_key(|e| e.path());
    for e in es {
        let p = e.path();
        if p.is_dir() {
            kasm_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "kasm") {
            out.push(p);
        }
    }
}

/// Every method of every jit-test program that loads and verifies compiles
/// for aarch64: the lowering never depends on the host ISA.
#[test]
fn every_jit_test_method_cross_compiles_for_aarch64() {
    let isa = isa_by_name("aarch64").expect("the arm64 backend is enabled");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("jit-tests");
    let mut files = Vec::new();
    kasm_files(&root, &mut files);
    let mut fctx = FunctionBuilderContext::new();
    let (mut programs, mut methods) = (0, 0);
    let mut std_done = false;
    for f in &files {
        let Ok((program, names, verified)) = load::load_verified(f) else {
            continue; // assembly / load / verification error cases
        };
        let Ok(rt) = crate::engine::new_runtime(program, names, &verified, Options::default())
        else {
            continue;
        };
        programs += 1;
        // As in JIT mode before anything runs: calls to bytecode methods
        // then test the callee's register entry (the run-time choice).
        for mh in rt.tables.all_methods() {
            if mh.code().is_some() {
                mh.entry.store(stub(), Ordering::Release);
            }
        }
        for mh in rt.tables.all_methods() {
            if mh.code().is_none() {
                continue;
            }
            if mh.member.class.lib == 0 && std_done {
                continue; // std is the same in every program
            }
            let info = &verified.methods[&mh.member];
            let name = rt.method_name(mh);
            let func = translate::translate(&rt, mh, info, &*isa, &mut fctx)
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", f.display()));
            let mut ctx = Context::for_function(func);
            ctx.compile(&*isa, &mut ControlPlane::default())
                .unwrap_or_else(|e| panic!("{}: {name}: {:?}", f.display(), e.inner));
            methods += 1;
        }
        std_done = true;
    }
    assert!(programs > 100, "only {programs} programs loaded");
    assert!(methods > 500, "only {methods} methods compiled");
}
