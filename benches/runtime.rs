//! Criterion benchmarks of what the runtime itself does (issue 6, part 3):
//! compile time per method, call overhead (interp→JIT, JIT→JIT, JIT→native),
//! allocation rate, safepoint poll cost, start-up to the first instruction
//! (in process) and `kiln run` of a hello-world (whole process).
//!
//! Run: `cargo bench --bench runtime` (all, about two minutes), or a group:
//! `cargo bench --bench runtime -- call/`. Measurement times are short on
//! purpose (`config()`); pass `--measurement-time 5` for steadier numbers.
//! Results and their reading: `docs/performance.md`.
//!
//! Per-operation benchmarks run a kasm loop of `iters` operations in one
//! call (`iter_custom`), so each sample is the loop's time divided by the
//! operations; the loop's own overhead (a compare, an add and a branch, plus
//! the back-edge poll) is included, which is why `poll/` measures the poll
//! separately.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::runtime::{load, ExecMode, Options, Runtime};
use kiln::vm::tables::MethodHandle;
use kiln::vm::thread::{call_method, ThreadCtx};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Loops over the operations measured; each takes the count `n` (i64).
const LOOPS: &str = r#"
.library benchrt
.class public Node {
  .field public left: Node
  .field public right: Node
  .method public ctor() {
    ret
  }
}
.class public P {
  .method public static inc(x: i64) -> i64 {
    ldarg x
    ldc.i64 1
    add
    ret
  }
  ; n calls of a compiled static method
  .method public static calls(n: i64) -> i64 {
    .locals (i: i64, acc: i64)
  top:
    ldloc i
    ldarg n
    bge done
    ldloc acc
    call P::inc
    stloc acc
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  done:
    ldloc acc
    ret
  }
  ; n calls of a native (Std::len of a literal)
  .method public static natives(n: i64) -> i64 {
    .locals (i: i64, acc: i64)
  top:
    ldloc i
    ldarg n
    bge done
    ldloc acc
    ldstr "hello"
    call Std::len
    conv.i64
    add
    stloc acc
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  done:
    ldloc acc
    ret
  }
  ; n objects allocated (two reference fields, 32 bytes) and dropped
  .method public static allocs(n: i64) -> i64 {
    .locals (i: i64, last: Node)
  top:
    ldloc i
    ldarg n
    bge done
    newobj Node::ctor
    stloc last
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  done:
    ldloc i
    ret
  }
  ; n iterations of an empty loop (one back-edge poll each); no references
  .method public static spin(n: i64) -> i64 {
    .locals (i: i64)
  top:
    ldloc i
    ldarg n
    bge done
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  done:
    ldloc i
    ret
  }
  ; the same with a reference live across the loop (the poll also stores it)
  .method public static spin_ref(n: i64, o: Node) -> i64 {
    .locals (i: i64)
  top:
    ldloc i
    ldarg n
    bge done
    ldloc i
    ldc.i64 1
    add
    stloc i
    br top
  done:
    ldloc i
    ret
  }
  .method public static main() -> i32 {
    ldc.i32 0
    ret
  }
}
"#;

const HELLO: &str = r#"
.library hello
.class public Program {
  .method public static main() -> i32 {
    ldstr "hello, world"
    call Std::println
    ldc.i32 0
    ret
  }
}
"#;

fn write_src(name: &str, src: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(format!("{name}.kasm"));
    std::fs::write(&p, src).expect("write kasm");
    p
}

/// Load, verify and lay out `path`; in JIT mode, install the JIT.
fn runtime(path: &Path, jit: bool) -> Runtime {
    let (program, files, verified) = load::load_verified(path).expect("loads");
    let opts = Options {
        mode: if jit { ExecMode::Jit } else { ExecMode::Interp },
        stack_size: 8 << 20,
        ..Options::default()
    };
    let rt = kiln::engine::new_runtime(program, files, &verified, opts).expect("lays out");
    if jit {
        kiln::jit::install(&rt, verified).expect("a JIT for this host");
    }
    rt
}

fn method<'a>(rt: &'a Runtime, name: &str) -> &'a MethodHandle {
    rt.tables
        .all_methods()
        .find(|m| rt.method_name(m) == name)
        .unwrap_or_else(|| panic!("no method {name}"))
}

/// Call `mh` with `args` on this thread (attached for the call); panics on
/// an exception.
fn call(rt: &Runtime, mh: &MethodHandle, args: &[u64]) -> u64 {
    let mut ctx = ThreadCtx::new(rt, 8 << 20);
    // SAFETY: `ctx` outlives the attachment guard, dropped at the end of this function.
    let _att = unsafe { kiln::runtime::roots::attach(rt, &mut ctx) };
    // SAFETY: a live handle of `rt`; `args` has its arguments.
    let r = unsafe { call_method(&mut ctx, mh, args.as_ptr()) };
    assert!(!ctx.has_pending(), "{} threw", rt.method_name(mh));
    r
}

/// Time `iters` operations of the loop method `name` (first argument `n`).
fn loop_time(rt: &Runtime, name: &str, extra: &[u64], iters: u64) -> Duration {
    let mh = method(rt, name);
    let mut args = vec![iters];
    args.extend_from_slice(extra);
    // The thread context and its attachment are set up outside the timing.
    let mut ctx = ThreadCtx::new(rt, 8 << 20);
    // SAFETY: `ctx` outlives the attachment guard, dropped at the end of this function.
    let _att = unsafe { kiln::runtime::roots::attach(rt, &mut ctx) };
    let t = Instant::now();
    // SAFETY: a live handle of `rt`; `args` has its arguments.
    let r = unsafe { call_method(&mut ctx, mh, args.as_ptr()) };
    let elapsed = t.elapsed();
    assert!(!ctx.has_pending(), "{name} threw");
    black_box(r);
    elapsed
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

fn compile(c: &mut Criterion) {
    use cranelift_codegen::control::ControlPlane;
    use cranelift_codegen::Context;
    use cranelift_frontend::FunctionBuilderContext;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/programs");
    let isa = kiln::jit::host_isa().expect("a JIT for this host");
    let mut g = c.benchmark_group("compile");
    for (file, name) in [
        ("fib", "Program::fib"),
        ("sieve", "Program::count_primes"),
        ("nbody", "Program::advance"),
        ("fannkuch", "Program::run"),
        ("binary_trees", "Node::check"),
    ] {
        let path = root.join(format!("{file}.kasm"));
        let (program, files, verified) = load::load_verified(&path).expect("loads");
        let rt = kiln::engine::new_runtime(program, files, &verified, Options::default())
            .expect("lays out");
        let mh = method(&rt, name);
        let info = &verified.methods[&mh.member];
        let mut fctx = FunctionBuilderContext::new();
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let f = kiln::jit::translate::translate(&rt, mh, info, &*isa, &mut fctx)
                    .expect("translates");
                let mut ctx = Context::for_function(f);
                ctx.compile(&*isa, &mut ControlPlane::default())
                    .expect("compiles");
                black_box(ctx.compiled_code().map(|c| c.code_buffer().len()))
            })
        });
    }
    g.finish();
}

fn calls(c: &mut Criterion) {
    let path = write_src("loops", LOOPS);
    let jit = runtime(&path, true);
    let mixed = runtime(&path, true);
    // interp→JIT: the caller's loop runs in the interpreter (its slot set to
    // the interpreter adapter before its first call), the callee is compiled.
    method(&mixed, "P::calls").entry.store(
        kiln::interp::interp_entry as *const () as usize,
        Ordering::Release,
    );
    let interp = runtime(&path, false);
    let mut g = c.benchmark_group("call");
    g.throughput(Throughput::Elements(1));
    g.bench_function("jit_to_jit", |b| {
        b.iter_custom(|n| loop_time(&jit, "P::calls", &[], n))
    });
    g.bench_function("jit_to_native", |b| {
        b.iter_custom(|n| loop_time(&jit, "P::natives", &[], n))
    });
    g.bench_function("interp_to_jit", |b| {
        b.iter_custom(|n| loop_time(&mixed, "P::calls", &[], n))
    });
    g.bench_function("interp_to_interp", |b| {
        b.iter_custom(|n| loop_time(&interp, "P::calls", &[], n))
    });
    g.finish();
}

fn alloc(c: &mut Criterion) {
    let path = write_src("loops", LOOPS);
    let jit = runtime(&path, true);
    let mut g = c.benchmark_group("alloc");
    g.throughput(Throughput::Elements(1));
    g.bench_function("jit_object_32b", |b| {
        b.iter_custom(|n| loop_time(&jit, "P::allocs", &[], n))
    });
    g.finish();
}

fn polls(c: &mut Criterion) {
    let path = write_src("loops", LOOPS);
    let with = runtime(&path, true);
    // `KILN_NO_POLLS=1` is read when the JIT is created: this runtime's
    // compiled loops have no poll (set and removed before any other thread
    // of this process reads the environment).
    std::env::set_var("KILN_NO_POLLS", "1");
    let without = runtime(&path, true);
    std::env::remove_var("KILN_NO_POLLS");
    let mut g = c.benchmark_group("poll");
    g.throughput(Throughput::Elements(1));
    for (rt, label) in [(&with, "with_polls"), (&without, "no_polls")] {
        g.bench_function(format!("loop_no_refs/{label}"), |b| {
            b.iter_custom(|n| loop_time(rt, "P::spin", &[], n))
        });
        g.bench_function(format!("loop_one_ref/{label}"), |b| {
            b.iter_custom(|n| loop_time(rt, "P::spin_ref", &[0], n))
        });
    }
    g.finish();
}

fn startup(c: &mut Criterion) {
    let path = write_src("hello", HELLO);
    let mut g = c.benchmark_group("startup");
    // Load, verify and lay out std + the program, install the JIT, compile
    // `main` and reach its first instruction (`main` here returns at once).
    let quiet = write_src("quiet", LOOPS);
    g.bench_function("in_process_to_first_instruction", |b| {
        b.iter(|| {
            let rt = runtime(&quiet, true);
            black_box(call(&rt, method(&rt, "P::main"), &[]))
        })
    });
    // The whole `kiln run hello.kasm` process, as a user sees it.
    let kiln = env!("CARGO_BIN_EXE_kiln");
    g.bench_function("kiln_run_hello_process", |b| {
        b.iter(|| {
            let st = std::process::Command::new(kiln)
                .arg("run")
                .arg(&path)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("kiln runs");
            assert!(st.success());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = compile, calls, alloc, polls, startup
}
criterion_main!(benches);
