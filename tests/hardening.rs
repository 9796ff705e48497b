//! Hostile inputs too large to check in as `jit-tests/` files, generated
//! here, and the W^X check of the JIT's code pages.
//!
//! Every generated program runs through the real `kiln` binary in both
//! execution modes (and with `KILN_GC_STRESS=1` where that stays cheap); each
//! run must finish within a time bound with a bounded peak resident set
//! (the child's `VmHWM`, sampled from `/proc/PID/status` every few
//! milliseconds while it runs), with the expected output or a clean
//! load error. Libraries are assembled in-process and written as `.klib`
//! files, so the runs measure loading, verification and execution rather than
//! the assembler.
//!
//! - `switch_million_targets`: one `switch` with 1,000,000 targets (a 4 MB
//!   method: the JIT leaves it to the interpreter, `jit::MAX_JIT_CODE_SIZE`);
//! - `locals_max_recursion`: a method with 65,535 locals (the most an operand
//!   can name) recursing until `StackOverflowException`;
//! - `locals_many_straight_line`: 60,000 locals touched by 240,000
//!   instructions (verification is linear in code size);
//! - `nested_try_max` / `nested_try_over_limit`: 1,024 nested `.try/finally`
//!   blocks that an exception passes through, and one more (a load error);
//! - `throw_catch_loop_memory_is_bounded`: 3,000,000 faults thrown and
//!   caught in a loop that allocates nothing else (the runtime's exception
//!   objects are collected although they bypass allocation's triggers);
//! - `deep_stacks_load_in_linear_memory`: four methods that keep 1,000
//!   references on the stack across 16,000 instructions (the verifier's
//!   stacks are shared nodes, not a vector per instruction);
//! - `many_classes`: 20,000 classes;
//! - `many_fields`: 100,000 instance and 100,000 static fields, 2,000
//!   objects of 800 KB allocated (the collector reclaims them);
//! - `count_fields_claim_millions`: every aligned 32-bit field of a real
//!   library overwritten with huge counts (2^24, 2^31−1, 2^32−1): the reader
//!   answers at once with an error (or a valid library) and allocates little
//!   (a counting global allocator measures it);
//! - `library_size_cap_kiln_run` / `library_size_cap_host_api`: a library
//!   one byte over `format::MAX_LIBRARY_SIZE` (a sparse file, `.klib` or
//!   kasm; bytes; text) is refused by `kiln run`, `Vm::new` and
//!   `Metadata::load` with the typed error before it is read; `/dev/zero`
//!   is read only up to the cap;
//! - `wx_never_during_compilation`: the JIT compiles 3,000 methods in-process
//!   while another thread samples `/proc/self/maps`; no mapping may ever be
//!   writable and executable.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts the bytes allocated and freed by each thread (thread-local, so the
/// tests running in parallel do not disturb each other's figures) and the
/// thread's peak of net allocation since the last [`reset_peak`].
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn reset_peak() -> isize {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    live
}

fn peak() -> isize {
    PEAK.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts (in
// const-initialised thread-locals, which never allocate).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let _ = LIVE.try_with(|c| {
                let now = c.get() + l.size() as isize;
                c.set(now);
                let _ = PEAK.try_with(|pk| pk.set(pk.get().max(now)));
            });
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|c| c.set(c.get() - l.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d.join(name)
}

/// Assembles `src` in-process and writes the `.klib`.
fn klib(name: &str, src: &str) -> PathBuf {
    let lib = kiln::asm::assemble(src, name)
        .unwrap_or_else(|e| panic!("generated program {name} does not assemble: {}", e[0]));
    let path = scratch(&format!("{name}.klib"));
    std::fs::write(&path, kiln::format::write(&lib)).expect("write klib");
    path
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
    elapsed: Duration,
}

/// Runs `kiln run FILE` with `env`, killed after `limit`. The peak resident
/// set is the child's `VmHWM` from `/proc/PID/status`, sampled until it
/// exits: `wait4`'s `ru_maxrss` cannot be used, because Linux records the
/// high-water mark of the address space replaced by `execve` too, which for a
/// child spawned by this (large) test process is the parent's own peak.
fn run(file: &Path, env: &[(&str, &str)], limit: Duration) -> Outcome {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let out = scratch(&format!("run{}.out", RUNS.fetch_add(1, Ordering::Relaxed)));
    let err = out.with_extension("err");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("run").arg(file).stdin(Stdio::null());
    cmd.stdout(std::fs::File::create(&out).expect("out"));
    cmd.stderr(std::fs::File::create(&err).expect("err"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    // Reaped below with `wait4` (polling without blocking), not `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("spawn kiln");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut hwm_kib = 0i64;
    loop {
        // The sample before the final `wait4` covers all but the last few
        // milliseconds of the child's life.
        if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(v) = st
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            {
                hwm_kib = hwm_kib.max(v);
            }
        }
        // SAFETY: pid is our child; status and ru are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed");
        if start.elapsed() > limit {
            // SAFETY: pid is our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            panic!("{} {env:?}: no result within {limit:?}", file.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        panic!(
            "{} {env:?}: killed by signal {}",
            file.display(),
            libc::WTERMSIG(status)
        );
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let o = Outcome {
        code,
        stdout: read(&out),
        stderr: read(&err),
        max_rss_kib: hwm_kib,
        elapsed,
    };
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    o
}

const MODES: &[&[(&str, &str)]] = &[&[("KILN_JIT", "0")], &[("KILN_JIT", "1")]];
const GCSTRESS: &[&[(&str, &str)]] = &[
    &[("KILN_JIT", "0"), ("KILN_GC_STRESS", "1")],
    &[("KILN_JIT", "1"), ("KILN_GC_STRESS", "1")],
];

/// Runs `file` in `modes`, requiring exit `code`, exactly `stdout`, `stderr`
/// containing `stderr_has`, within `limit` and `rss_mib`.
fn expect(
    file: &Path,
    modes: &[&[(&str, &str)]],
    code: i32,
    stdout: &str,
    stderr_has: &str,
    limit: Duration,
    rss_mib: i64,
) {
    for env in modes {
        let o = run(file, env, limit);
        let what = format!("{} {env:?}", file.display());
        assert_eq!(o.code, code, "{what}: exit code; stderr:\n{}", o.stderr);
        assert_eq!(o.stdout, stdout, "{what}: stdout");
        assert!(
            o.stderr.contains(stderr_has),
            "{what}: stderr lacks {stderr_has:?}:\n{}",
            o.stderr
        );
        if stderr_has.is_empty() {
            assert!(
                o.stderr.is_empty(),
                "{what}: unexpected stderr:\n{}",
                o.stderr
            );
        }
        assert!(
            o.max_rss_kib < rss_mib * 1024,
            "{what}: peak RSS {} KiB above {rss_mib} MiB",
            o.max_rss_kib
        );
        eprintln!("{what}: {:?}, peak RSS {} KiB", o.elapsed, o.max_rss_kib);
    }
}

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn switch_million_targets() {
    let n = 1_000_000;
    let mut s = String::from(
        ".library sw\n.class public Program {\n  .method public static f(x: i32) -> i32 {\n    ldarg x\n    switch (",
    );
    for i in 0..n {
        s.push_str(if i == 0 { "L" } else { ",L" });
    }
    let _ = write!(
        s,
        ")\n    ldc.i32 -1\n    ret\n  L:\n    ldc.i32 7\n    ret\n  }}\n\
         .method public static main() {{\n    ldc.i32 {}\n    call Program::f\n    conv.i64\n    call Std::str_i64\n    call Std::println\n\
         ldc.i32 {n}\n    call Program::f\n    conv.i64\n    call Std::str_i64\n    call Std::println\n    ret\n  }}\n}}\n",
        n - 1
    );
    let f = klib("switch_million_targets", &s);
    expect(&f, MODES, 0, "7\n-1\n", "", LIMIT, 512);
}

fn locals_decl(n: usize) -> String {
    (0..n)
        .map(|i| format!("l{i}: i64"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn locals_max_recursion() {
    let n = 65535;
    let src = format!(
        ".library biglocals\n.class public Program {{\n  .field public static mutable depth: i64\n\
         .method public static f(d: i64) -> i64 {{\n    .locals ({})\n    ldarg d\n    stsfld Program::depth\n\
         ldarg d\n    stloc l{}\n    ldloc l{}\n    ldc.i64 1\n    add\n    call Program::f\n    ldloc l0\n    add\n    ret\n  }}\n\
         .method public static main() {{\n    .try {{\n      ldc.i64 0\n      call Program::f\n      pop\n      leave done\n\
         }} catch StackOverflowException {{\n      pop\n      ldstr \"caught StackOverflowException\"\n      call Std::println\n      leave done\n    }}\n\
         done:\n    ldsfld Program::depth\n    ldc.i64 100\n    cgt\n    call Std::str_bool\n    call Std::println\n    ret\n  }}\n}}\n",
        locals_decl(n),
        n - 1,
        n - 1
    );
    let f = klib("locals_max_recursion", &src);
    let all: Vec<_> = MODES.iter().chain(GCSTRESS).copied().collect();
    expect(
        &f,
        &all,
        0,
        "caught StackOverflowException\ntrue\n",
        "",
        LIMIT,
        768,
    );
}

#[test]
fn locals_many_straight_line() {
    let n = 60_000;
    let mut body = String::new();
    for i in 0..n {
        let _ = write!(
            body,
            "    ldloc l{i}\n    ldc.i64 1\n    add\n    stloc l{}\n",
            (i + 1) % n
        );
    }
    let src = format!(
        ".library manylocals\n.class public Program {{\n  .method public static f() -> i64 {{\n    .locals ({})\n    ldc.i64 1\n    stloc l0\n{body}    ldloc l0\n    ret\n  }}\n\
         .method public static main() {{\n    call Program::f\n    call Std::str_i64\n    call Std::println\n    ret\n  }}\n}}\n",
        locals_decl(n)
    );
    let f = klib("locals_many_straight_line", &src);
    expect(&f, MODES, 0, &format!("{}\n", n + 1), "", LIMIT, 512);
}

fn nested_try(n: usize) -> String {
    let mut s = String::from(
        ".library nested\n.class public Program {\n  .field public static mutable finals: i64\n  .method public static inner() {\n",
    );
    for _ in 0..n {
        s.push_str("    .try {\n");
    }
    s.push_str("    ldstr \"deep\"\n    newobj ArithmeticException::ctor\n    throw\n");
    for _ in 0..n {
        s.push_str("    } finally {\n      ldsfld Program::finals\n      ldc.i64 1\n      add\n      stsfld Program::finals\n      endfinally\n    }\n");
    }
    s.push_str(
        "  }\n  .method public static main() {\n    .try {\n      call Program::inner\n      leave done\n    } catch ArithmeticException {\n      pop\n      leave done\n    }\n\
         done:\n    ldsfld Program::finals\n    call Std::str_i64\n    call Std::println\n    ret\n  }\n}\n",
    );
    s
}

#[test]
fn nested_try_max() {
    let f = klib("nested_try_max", &nested_try(1023));
    let all: Vec<_> = MODES.iter().chain(GCSTRESS).copied().collect();
    expect(&f, &all, 0, "1023\n", "", LIMIT, 256);
}

#[test]
fn nested_try_over_limit() {
    let f = klib("nested_try_over_limit", &nested_try(1025));
    expect(
        &f,
        MODES,
        3,
        "",
        "too many exception handlers (1025, limit 1024)",
        LIMIT,
        256,
    );
}

/// The binary format lets a handler come before its try block (kasm always
/// puts it after). Then `throw` -> handler -> `leave` forward into the try
/// -> `throw` is a loop without a backward branch: entering such a handler
/// must poll, or KILN_DEADLINE (and every stop-the-world) waits forever.
#[test]
fn handler_before_try_loop_is_interruptible() {
    // Assembled with the handler after the try, then the two ranges are
    // swapped: `br B` enters the (new) try at its start; the handler (old
    // try range) pops the exception and leaves forward into the try again.
    let src = ".library exloop\n.class public P {\n  .method public static main() -> i32 {\n    .locals (n: i64)\n    ldstr \"spinning\"\n    call Std::println\n    br B\n  .try {\n  A:\n    pop\n    leave B\n  } catch Exception {\n  B:\n    ldloc n\n    ldc.i64 1\n    add\n    stloc n\n    ldnull\n    throw\n  }\n  }\n}\n";
    let mut lib = kiln::asm::assemble(src, "exloop.kasm").expect("assembles");
    let m = lib
        .types
        .iter_mut()
        .flat_map(|t| t.methods.iter_mut())
        .find(|m| m.name == "main")
        .expect("main");
    assert_eq!(m.handlers.len(), 1);
    let h = &mut m.handlers[0];
    let (ts, te, hs, he) = (h.try_start, h.try_end, h.handler_start, h.handler_end);
    assert!(te <= hs, "assembled with the handler after the try");
    (h.try_start, h.try_end, h.handler_start, h.handler_end) = (hs, he, ts, te);
    let path = scratch("handler_before_try.klib");
    std::fs::write(&path, kiln::format::write(&lib)).expect("write klib");
    let mut modes: Vec<Vec<(&str, &str)>> = Vec::new();
    for env in MODES.iter().chain(GCSTRESS) {
        let mut e = env.to_vec();
        e.push(("KILN_DEADLINE", "1s"));
        modes.push(e);
    }
    let modes: Vec<&[(&str, &str)]> = modes.iter().map(|v| v.as_slice()).collect();
    expect(
        &path,
        &modes,
        1,
        "spinning\n",
        "InterruptedException: deadline of 1s exceeded",
        LIMIT,
        256,
    );
}

/// A loop whose only allocations are the exceptions the runtime makes for
/// its faults (`ldnull; throw` raises `NullReferenceException`, `div` by
/// zero `ArithmeticException`). Those objects are allocated outside the
/// collection triggers of ordinary allocation (a fault is not a safepoint
/// in compiled code); before the fix nothing ever collected them, and the
/// process grew by about 600 MB a second in both modes, past any
/// `KILN_HEAP_MAX`. Now the thread collects at its next poll.
#[test]
fn throw_catch_loop_memory_is_bounded() {
    let src = ".library throwloop\n.class public P {\n  .method public static main() -> i32 {\n    .locals (n: i64, z: i32)\n  top:\n    .try {\n      ldloc n\n      ldc.i64 1\n      and\n      brtrue odd\n      ldnull\n      throw\n    odd:\n      ldc.i32 1\n      ldloc z\n      div\n      pop\n      leave next\n    } catch Exception {\n      pop\n      leave next\n    }\n  next:\n    ldloc n\n    ldc.i64 1\n    add\n    dup\n    stloc n\n    ldc.i64 3000000\n    blt top\n    ldloc n\n    call Std::str_i64\n    call Std::println\n    ldc.i32 0\n    ret\n  }\n}\n";
    let path = klib("throwloop", src);
    let mut modes: Vec<Vec<(&str, &str)>> = Vec::new();
    for env in MODES {
        let mut e = env.to_vec();
        e.push(("KILN_HEAP_MAX", "64M"));
        modes.push(e);
    }
    let modes: Vec<&[(&str, &str)]> = modes.iter().map(|v| v.as_slice()).collect();
    expect(&path, &modes, 0, "3000000\n", "", LIMIT, 160);
}

/// A method that pushes its string argument `refs` times and keeps the
/// copies on the evaluation stack across `body` instructions (the first a
/// safepoint with all of them live: `newarr`, which collects under GC
/// stress), then checks each copy is still the argument: returns `len +
/// body / 4 + refs`.
fn deep_stack_method(name: &str, refs: usize, body: usize) -> String {
    let mut s = format!(
        "  .method public static {name}(s: string, len: i32) -> i32 {{\n    .locals (x: i32)\n"
    );
    s.push_str(&"    ldarg s\n".repeat(refs));
    s.push_str("    ldarg len\n    newarr i32\n    ldlen\n    stloc x\n");
    s.push_str(&"    ldloc x\n    ldc.i32 1\n    add\n    stloc x\n".repeat(body / 4));
    s.push_str(&"    ldarg s\n    ceq\n    ldloc x\n    add\n    stloc x\n".repeat(refs));
    s.push_str("    ldloc x\n    ret\n  }\n");
    s
}

#[test]
fn deep_stacks_load_in_linear_memory() {
    let (methods, refs, body) = (4, 1000, 10_000);
    let mut src = String::from(".library deepstack\n.class public Program {\n");
    for k in 0..methods {
        src.push_str(&deep_stack_method(&format!("m{k}"), refs, body));
    }
    src.push_str(
        "  .method public static main() -> i32 {\n    ldstr \"s\"\n    ldc.i32 3\n    call Program::m0\n    conv.i64\n    call Std::str_i64\n    call Std::println\n    ldc.i32 0\n    ret\n  }\n}\n",
    );
    let expected = format!("{}\n", 3 + body / 4 + refs);

    // In-process: what the verifier allocates (and keeps) for it.
    let lib = kiln::asm::assemble(&src, "deepstack.kasm").expect("assembles");
    let std =
        kiln::asm::assemble(kiln::runtime::load::STD_SOURCE, "std.kasm").expect("std assembles");
    let insns: usize = lib.types[0]
        .methods
        .iter()
        .map(|m| kiln::bytecode::decode_all(&m.code).expect("decodes").len())
        .sum();
    assert!(insns > methods * 16_000, "{insns} instructions");
    let program = kiln::library::program::Program::new(vec![std, lib]).expect("program");
    let files = ["std.kasm".to_string(), "deepstack.kasm".to_string()];
    let base = reset_peak();
    let t = Instant::now();
    let v = kiln::verify::verify_program(&program, &files).expect("verifies");
    let grew = (peak() - base) as usize;
    let kept: usize = v.methods.values().map(|m| m.stacks().bytes()).sum();
    eprintln!(
        "deep stacks: {insns} instructions verified in {:?}, peak {grew} bytes allocated, stacks kept {kept} bytes",
        t.elapsed()
    );
    // About 200 bytes per instruction (the decoded code, the dataflow state,
    // the shared stacks); 4 × 16,000 × 1,000 stack slots before.
    assert!(
        grew < 512 * insns + (16 << 20),
        "the verifier allocated {grew} bytes for {insns} instructions"
    );
    assert!(kept < 64 * insns, "{kept} bytes of stacks kept");
    drop(v);

    let f = klib("deepstack", &src);
    let all: Vec<_> = MODES.iter().chain(GCSTRESS).copied().collect();
    expect(&f, &all, 0, &expected, "", Duration::from_secs(60), 96);
}

/// Threads that end without being joined keep nothing but a small record:
/// 12,000 short threads started one after another and never joined used to
/// keep every stack (104 MiB peak in the interpreter, 107 MiB in the JIT;
/// 40,000 aborted the process at the system's mapping limit), because a
/// `std::thread` that is never joined is never reaped.
#[test]
fn unjoined_thread_churn_memory_is_bounded() {
    let n = 12_000;
    let src = format!(
        ".library churn\n.class public Nop implements Runnable {{\n  .method public run() {{\n    ret\n  }}\n}}\n\
         .class public Program {{\n  .method public static main() {{\n    .locals (i: i32)\n  loop:\n    ldloc i\n    ldc.i32 {n}\n    bge done\n\
         newobj Nop::ctor\n    call Thread::start\n    pop\n    ldloc i\n    ldc.i32 1\n    add\n    stloc i\n    br loop\n\
         done:\n    ldstr \"started\"\n    call Std::println\n    ret\n  }}\n}}\n"
    );
    let f = klib("thread_churn", &src);
    expect(&f, MODES, 0, "started\n", "", LIMIT, 48);
}

/// Starting threads that never end until the system would refuse: the
/// start past the thread limit (`KILN_MAX_THREADS`, by default what the
/// system's mapping and thread limits leave room for) raises a catchable
/// `OutOfMemoryException`, and the program goes on, allocating and
/// printing, and exits normally with the threads still blocked (each joins
/// the one started before it; the first spins). Before, the process
/// aborted in 7 of 8 runs.
#[test]
fn thread_exhaustion_is_catchable() {
    let src = ".library exhaust\n.class public Slots {\n  .field public static mutable last: Thread\n}\n\
        .class public Blocker implements Runnable {\n  .field public prev: Thread\n  .method public ctor(p: Thread) {\n    ldarg this\n    ldarg p\n    stfld Blocker::prev\n    ret\n  }\n\
        .method public run() {\n    ldarg this\n    ldfld Blocker::prev\n    brfalse self\n    ldarg this\n    ldfld Blocker::prev\n    callvirt Thread::join\n    ret\n  self:\n    br self\n  }\n}\n\
        .class public Program {\n  .method public static main() -> i32 {\n    .locals (n: i64, e: Exception)\n  loop:\n    .try {\n      ldsfld Slots::last\n      newobj Blocker::ctor\n      call Thread::start\n      stsfld Slots::last\n      leave next\n\
        } catch OutOfMemoryException {\n      stloc e\n      ldstr \"refused: \"\n      ldloc e\n      ldfld Exception::message\n      call Std::concat\n      call Std::println\n      leave out\n    }\n\
        next:\n    ldloc n\n    ldc.i64 1\n    add\n    stloc n\n    br loop\n  out:\n    ldloc n\n    ldc.i64 100\n    bgt many\n    ldstr \"too few threads\"\n    call Std::println\n\
        many:\n    ldstr \"went on\"\n    call Std::println\n    ldc.i32 0\n    ret\n  }\n}\n";
    let f = klib("thread_exhaustion", src);
    for env in MODES {
        let mut e = env.to_vec();
        e.push(("KILN_HEAP_MAX", "512m"));
        let o = run(&f, &e, LIMIT);
        let what = format!("{e:?}");
        assert_eq!(o.code, 0, "{what}: exit code; stderr:\n{}", o.stderr);
        assert!(
            o.stdout.starts_with("refused: cannot start thread: ")
                && o.stdout.ends_with("\nwent on\n"),
            "{what}: stdout:\n{}",
            o.stdout
        );
        assert!(o.stderr.is_empty(), "{what}: stderr:\n{}", o.stderr);
    }
    // A small limit: the refusal names it.
    for env in MODES {
        let mut e = env.to_vec();
        e.push(("KILN_MAX_THREADS", "150"));
        let o = run(&f, &e, LIMIT);
        assert_eq!(o.code, 0, "{e:?}: stderr:\n{}", o.stderr);
        assert_eq!(
            o.stdout,
            "refused: cannot start thread: 150 threads are running, the limit (KILN_MAX_THREADS)\nwent on\n",
            "{e:?}"
        );
    }
}

/// A heap limit with many threads and a small live set: 8 rounds of 48
/// threads, each allocating 3,000 small objects and arrays of 10 size
/// classes while keeping about 1.5 KB live, under `KILN_HEAP_MAX=1m`. Every
/// run used to report several `OutOfMemoryException`s in both modes: the
/// threads' allocation caches (a batch per size class per thread) filled the
/// heap between a collection and the retry it was for. Caches now stop at
/// 7/8 of the limit and the retry allocates directly from the rest.
#[test]
fn many_threads_small_heap_no_spurious_oom() {
    let src = r#".library oom
.class public Cell {
  .field public mutable v: i64
  .field public mutable next: Cell
}
.class public Stats {
  .field public static mutable ooms: atomic i64
}
.class public Worker implements Runnable {
  .method public run() {
    .locals (i: i32, c: Cell, keep: Cell)
    .try {
    loop:
      ldloc i
      ldc.i32 3000
      bge done
      ldloc i
      ldc.i32 31
      and
      newarr i64
      pop
      newobj Cell::ctor
      stloc c
      ldloc i
      ldc.i32 63
      and
      brtrue skip
      ldloc c
      ldloc keep
      stfld Cell::next
      ldloc c
      stloc keep
    skip:
      ldloc i
      ldc.i32 1
      add
      stloc i
      br loop
    done:
      leave out
    } catch OutOfMemoryException {
      pop
      ldc.i64 1
      atomic.add Stats::ooms
      pop
      leave out
    }
  out:
    ret
  }
}
.class public Program {
  .method public static main() {
    .locals (r: i32, i: i32, ts: Thread[])
    ldc.i32 48
    newarr Thread
    stloc ts
  round:
    ldloc r
    ldc.i32 8
    bge fin
    ldc.i32 0
    stloc i
  st:
    ldloc i
    ldc.i32 48
    bge joinall
    ldloc ts
    ldloc i
    newobj Worker::ctor
    call Thread::start
    stelem Thread
    ldloc i
    ldc.i32 1
    add
    stloc i
    br st
  joinall:
    ldc.i32 0
    stloc i
  jl:
    ldloc i
    ldc.i32 48
    bge nextround
    ldloc ts
    ldloc i
    ldelem Thread
    callvirt Thread::join
    ldloc i
    ldc.i32 1
    add
    stloc i
    br jl
  nextround:
    ldloc r
    ldc.i32 1
    add
    stloc r
    br round
  fin:
    ldstr "out-of-memory exceptions: "
    atomic.load Stats::ooms
    call Std::str_i64
    call Std::concat
    call Std::println
    ret
  }
}
"#;
    let f = klib("threads_small_heap", src);
    for env in MODES {
        let mut e = env.to_vec();
        e.push(("KILN_HEAP_MAX", "1m"));
        for _ in 0..2 {
            let o = run(&f, &e, LIMIT);
            assert_eq!(o.code, 0, "{e:?}: stderr:\n{}", o.stderr);
            assert_eq!(o.stdout, "out-of-memory exceptions: 0\n", "{e:?}");
        }
    }
}

/// A method holding `refs` live references (distinct objects) across
/// `calls` calls, some of which collect: every call is a safepoint naming
/// all of them; the popped objects' fields are summed after the calls, so a
/// wrong map (a reference not in its slot when a collection ran) shows.
fn reference_heavy(name: &str, refs: usize, calls: usize) -> PathBuf {
    let mut s = format!(
        ".library {name}\n.class public Box {{\n  .field public v: i64\n  .method public ctor(v: i64) {{\n    ldarg this\n    ldarg v\n    stfld Box::v\n    ret\n  }}\n}}\n\
         .class public P {{\n  .method public static f(x: i64) -> i64 {{\n    ldarg x\n    ldc.i64 100\n    rem\n    brtrue no\n    call Std::gc\n  no:\n    ldarg x\n    ldc.i64 1\n    add\n    ret\n  }}\n\
         .method public static main() {{\n    .locals (acc: i64, sum: i64)\n"
    );
    for i in 0..refs {
        let _ = writeln!(s, "    ldc.i64 {i}\n    newobj Box::ctor");
    }
    for _ in 0..calls {
        s.push_str("    ldloc acc\n    call P::f\n    stloc acc\n");
    }
    for _ in 0..refs {
        s.push_str("    ldfld Box::v\n    ldloc sum\n    add\n    stloc sum\n");
    }
    s.push_str("    ldloc acc\n    call Std::str_i64\n    call Std::println\n    ldloc sum\n    call Std::str_i64\n    call Std::println\n    ret\n  }\n}\n");
    klib(name, &s)
}

/// Reference-heavy methods compile in memory that grows with what is live
/// at each safepoint, not with live set × safepoints: a reference is stored
/// into its frame slot once while it stays there (compiled code used to
/// store every live reference again at every call), sites with the same
/// live set share one slot list in the safepoint table, and a method that
/// keeps more values across calls than the register allocator handles
/// cheaply (`jit::MAX_JIT_LIVE_ACROSS_CALLS`) stays in the interpreter.
/// 1,000 references across 3,000 calls took 27 s and 3.5 GB in a release
/// build; 300 across 300 (compiled) and 1,000 across 3,000 (interpreted)
/// now stay far below the bound, in every mode, under GC stress too.
#[test]
fn reference_heavy_methods_compile_in_bounded_memory() {
    let all: Vec<_> = MODES.iter().chain(GCSTRESS).copied().collect();
    for (refs, calls) in [(300, 300), (1000, 3000)] {
        let f = reference_heavy(&format!("refheavy_{refs}_{calls}"), refs, calls);
        let sum: u64 = (0..refs as u64).sum();
        expect(&f, &all, 0, &format!("{calls}\n{sum}\n"), "", LIMIT, 128);
    }
}

/// The value stack (frame records) is as large as the native stack, so deep
/// recursion ends at the native stack's limit in both modes: a compiled
/// method with a try region (which keeps a frame record) used to hit
/// `StackOverflowException` at about 1,048,574 frames, when its 64 MiB value
/// stack was full, while the 512 MiB native stack had room for millions.
#[test]
fn value_stack_does_not_overflow_before_the_native_stack() {
    let src = r#".library deep
.class public P {
  .field public static mutable depth: i64
  .method public static down(n: i64) -> i64 {
    .locals (r: i64)
    ldarg n
    stsfld P::depth
    .try {
      ldarg n
      ldc.i64 1
      add
      call P::down
      stloc r
      leave out
    } catch ArithmeticException {
      pop
      leave out
    }
  out:
    ldloc r
    ret
  }
  .method public static main() {
    .try {
      ldc.i64 0
      call P::down
      pop
      leave out
    } catch StackOverflowException {
      pop
      ldstr "overflow at depth "
      ldsfld P::depth
      call Std::str_i64
      call Std::concat
      call Std::println
      leave out
    }
  out:
    ret
  }
}
"#;
    let f = klib("deep_try", src);
    let o = run(&f, &[("KILN_JIT", "1")], LIMIT);
    assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    let depth: u64 = o
        .stdout
        .trim()
        .strip_prefix("overflow at depth ")
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("stdout: {}", o.stdout));
    assert!(depth > 2_000_000, "overflowed at depth {depth}");
    assert!(o.max_rss_kib < 1536 << 10, "peak RSS {} KiB", o.max_rss_kib);
}

#[test]
fn many_classes() {
    let n = 20_000;
    let mut s = String::from(".library many\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            ".class public C{i} {{\n  .field public static mutable x: i64\n  .method public static f() -> i64 {{\n    ldc.i64 {i}\n    ret\n  }}\n}}"
        );
    }
    s.push_str(".class public Program {\n  .method public static main() {\n    ldc.i64 0\n");
    for i in (0..n).step_by(97) {
        let _ = writeln!(s, "    call C{i}::f\n    add");
    }
    s.push_str("    call Std::str_i64\n    call Std::println\n    ret\n  }\n}\n");
    let sum: u64 = (0..n as u64).step_by(97).sum();
    let f = klib("many_classes", &s);
    expect(&f, MODES, 0, &format!("{sum}\n"), "", LIMIT, 512);
}

#[test]
fn many_fields() {
    // 100,000 instance fields (800 KB objects, 2,000 of them allocated: the
    // collector reclaims them) and 100,000 static fields.
    let n = 100_000;
    let mut s = String::from(".library fields\n.class public Big {\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "  .field public mutable f{i}: i64\n  .field public static mutable s{i}: i64"
        );
    }
    let last = n - 1;
    let _ = write!(
        s,
        "  .method public ctor() {{\n    ldarg this\n    ldc.i64 7\n    stfld Big::f{last}\n    ret\n  }}\n}}\n\
         .class public Program {{\n  .method public static main() {{\n    .locals (b: Big, i: i32)\n  again:\n\
         newobj Big::ctor\n    stloc b\n    ldloc i\n    ldc.i32 1\n    add\n    stloc i\n    ldloc i\n    ldc.i32 2000\n    blt again\n\
         ldloc b\n    ldfld Big::f{last}\n    ldc.i64 42\n    stsfld Big::s{last}\n    ldsfld Big::s{last}\n    add\n\
         call Std::str_i64\n    call Std::println\n    ret\n  }}\n}}\n"
    );
    let f = klib("many_fields", &s);
    let all: Vec<_> = MODES.iter().chain(GCSTRESS).copied().collect();
    expect(&f, &all, 0, "49\n", "", LIMIT, 512);
}

#[test]
fn count_fields_claim_millions() {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("jit-tests/programs/fib.kasm"),
    )
    .expect("read fib.kasm");
    let lib = kiln::asm::assemble(&src, "fib.kasm").expect("fib assembles");
    let bytes = kiln::format::write(&lib);
    let mut rejected = 0;
    let mut tried = 0;
    let mut max_grew = 0;
    let start = Instant::now();
    for at in (0..bytes.len().saturating_sub(3)).step_by(4) {
        for v in [1u32 << 24, i32::MAX as u32, u32::MAX, 1_000_000] {
            let mut b = bytes.clone();
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            let base = reset_peak();
            let t = Instant::now();
            let r = kiln::format::read(&b);
            let grew = (peak() - base) as usize;
            tried += 1;
            max_grew = max_grew.max(grew);
            assert!(
                grew < 64 * b.len() + (64 << 10),
                "offset {at} = {v:#x}: the reader allocated {grew} bytes for a {}-byte file",
                b.len()
            );
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "offset {at} = {v:#x}: slow"
            );
            match r {
                Err(e) => {
                    rejected += 1;
                    assert!(
                        e.offset() <= b.len(),
                        "offset {at}: error offset past the end"
                    );
                }
                Ok(l) => assert_eq!(kiln::format::write(&l), b, "offset {at}: not canonical"),
            }
        }
    }
    assert!(rejected > 0, "no patched library was rejected");
    eprintln!(
        "{tried} patched libraries of {} bytes, {rejected} rejected, at most {max_grew} bytes allocated, {:?}",
        bytes.len(),
        start.elapsed()
    );
}

/// Pages mapped writable and executable at once, from `/proc/self/maps`.
fn wx_mappings() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter(|l| {
            let perms = l.split_whitespace().nth(1).unwrap_or("");
            perms.as_bytes().get(1) == Some(&b'w') && perms.as_bytes().get(2) == Some(&b'x')
        })
        .map(String::from)
        .collect()
}

#[test]
fn wx_never_during_compilation() {
    use kiln::engine::run_file;
    use kiln::runtime::{ExecMode, Options};
    let n = 3000;
    let mut s = String::from(".library wx\n.class public Program {\n");
    let _ = writeln!(
        s,
        "  .method public static f0(x: i64) -> i64 {{\n    ldarg x\n    ret\n  }}"
    );
    for i in 1..n {
        let _ = writeln!(
            s,
            "  .method public static f{i}(x: i64) -> i64 {{\n    ldarg x\n    ldc.i64 {i}\n    add\n    call Program::f{}\n    ret\n  }}",
            i - 1
        );
    }
    let _ = writeln!(
        s,
        "  .method public static main() -> i32 {{\n    ldc.i64 0\n    call Program::f{}\n    ldc.i64 {}\n    ceq\n    ret\n  }}\n}}",
        n - 1,
        (n - 1) * n / 2
    );
    let path = scratch("wx.kasm");
    std::fs::write(&path, &s).expect("write wx.kasm");

    // The detector bites: a page mapped RWX by hand is reported.
    // SAFETY: sysconf has no preconditions.
    let len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    // SAFETY: an anonymous private mapping with no address hint.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap RWX failed");
    let seen = wx_mappings();
    // SAFETY: unmapping the page mapped above.
    unsafe { libc::munmap(p, len) };
    let start = format!("{:x}-", p as usize);
    assert!(
        seen.iter().any(|l| l.starts_with(&start)),
        "a hand-made RWX page was not detected: {seen:?}"
    );
    assert!(
        wx_mappings().is_empty(),
        "W+X mapping before the JIT ran: {:?}",
        wx_mappings()
    );
    let stop = AtomicBool::new(false);
    let samples = AtomicUsize::new(0);
    let code = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                bad.extend(wx_mappings());
                samples.fetch_add(1, Ordering::Relaxed);
            }
            bad
        });
        let opts = Options {
            mode: ExecMode::Jit,
            ..Options::default()
        };
        // main returns 1 when the sum is right.
        let code = run_file(&path, &[], &opts);
        stop.store(true, Ordering::Relaxed);
        let bad = sampler.join().expect("sampler");
        assert!(
            bad.is_empty(),
            "writable and executable mappings seen: {bad:?}"
        );
        code
    });
    assert_eq!(code, 1, "the generated program computed the wrong sum");
    let samples = samples.load(Ordering::Relaxed);
    assert!(
        samples >= 10,
        "only {samples} samples of /proc/self/maps were taken"
    );
    assert!(
        wx_mappings().is_empty(),
        "W+X mapping after the JIT ran: {:?}",
        wx_mappings()
    );
    // The JIT did compile code: executable anonymous mappings exist now.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    assert!(
        maps.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1).is_some_and(|p| p.starts_with("r-x")) && f.nth(3).is_none()
        }),
        "no anonymous executable mapping: did the JIT run?"
    );
    eprintln!("{samples} samples of /proc/self/maps, none writable and executable");
}

/// A sparse file of `len` bytes starting with `head` (no data blocks are
/// written past `head`, so this costs no disk space or time).
fn sparse(name: &str, head: &[u8], len: u64) -> PathBuf {
    use std::io::Write as _;
    let path = scratch(name);
    let mut f = std::fs::File::create(&path).expect("create sparse file");
    f.write_all(head).expect("write head");
    f.set_len(len).expect("set_len");
    path
}

const CAP: usize = kiln::format::MAX_LIBRARY_SIZE;

#[test]
fn library_size_cap_kiln_run() {
    // One byte over the cap, as `.klib` (magic) and as kasm text: `kiln run`
    // refuses both before reading them (a load error naming the file, the
    // size and the limit, in a few MiB of memory), in both modes. Exactly
    // the cap is read, and fails as a `.klib` for another reason.
    let over = CAP as u64 + 1;
    for (name, head) in [
        ("over.klib", &kiln::format::MAGIC[..]),
        ("over.kasm", &b".library over\n"[..]),
    ] {
        let f = sparse(name, head, over);
        let msg = format!(
            "{}: byte {CAP} (0x{CAP:x}): library is {over} bytes, larger than the limit of {CAP} bytes (256 MiB)",
            f.display()
        );
        expect(&f, MODES, 3, "", &msg, LIMIT, 64);
    }
    let f = sparse("at_cap.klib", &kiln::format::MAGIC, CAP as u64);
    for env in MODES {
        let o = run(&f, env, LIMIT);
        assert_eq!(o.code, 3, "{env:?}: {}", o.stderr);
        assert!(
            !o.stderr.contains("larger than the limit") && o.stderr.contains("byte "),
            "{env:?}: a file of exactly the cap must be read: {}",
            o.stderr
        );
    }
    // A device that reports length 0 and never ends: at most the cap plus
    // one byte is read.
    let o = run(Path::new("/dev/zero"), MODES[0], LIMIT);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "library is {} bytes, larger than the limit",
            CAP + 1
        )),
        "{}",
        o.stderr
    );
    assert!(
        o.max_rss_kib < (CAP as i64 >> 10) * 3,
        "/dev/zero: peak RSS {} KiB",
        o.max_rss_kib
    );
}

#[test]
fn library_size_cap_host_api() {
    use kiln::{Config, Linker, Metadata, Source, Vm};
    let over = CAP as u64 + 1;
    let f = sparse("host_over.klib", &kiln::format::MAGIC, over);
    let base = reset_peak();
    let e = Vm::new(&Config::new(), &Linker::new(), &[Source::file(&f)])
        .expect_err("a file over the cap must not load");
    let grew = peak() - base;
    let want = format!("library is {over} bytes, larger than the limit of {CAP} bytes");
    assert!(e.to_string().contains(&want), "{e}");
    assert!(e.to_string().contains(&f.display().to_string()), "{e}");
    // The file was never read: the loader (std included) stays far below it.
    assert!(
        grew < 64 << 20,
        "loading a refused file allocated {grew} bytes"
    );
    let e = Metadata::load(&[Source::file(&f)]).expect_err("Metadata::load: over the cap");
    assert!(e.to_string().contains(&want), "{e}");

    // Bytes and text over the cap (zeroed allocations: the pages are never
    // touched, since the length check comes first).
    let e = Vm::new(
        &Config::new(),
        &Linker::new(),
        &[Source::klib("big", vec![0u8; CAP + 1])],
    )
    .expect_err("bytes over the cap");
    assert!(e.to_string().contains("big: byte "), "{e}");
    assert!(e.to_string().contains(&want), "{e}");
    let text = String::from_utf8(vec![0u8; CAP + 1]).expect("NULs are UTF-8");
    let e = Vm::new(
        &Config::new(),
        &Linker::new(),
        &[Source::kasm("bigtext", text)],
    )
    .expect_err("text over the cap");
    assert!(e.to_string().contains("bigtext: byte "), "{e}");
    assert!(e.to_string().contains(&want), "{e}");

    // The reader itself: over the cap, refused at once with the typed error;
    // at the cap, parsed (and rejected for its content, not its size).
    let big = vec![0u8; CAP + 1];
    assert_eq!(
        kiln::format::read(&big),
        Err(kiln::format::FormatError::TooLarge {
            offset: CAP,
            size: CAP as u64 + 1,
            limit: CAP
        })
    );
    assert!(matches!(
        kiln::format::read(&big[..CAP]),
        Err(kiln::format::FormatError::BadMagic { .. })
    ));
    match kiln::format::read_file(&f) {
        Err(kiln::format::ReadFileError::TooLarge(kiln::format::FormatError::TooLarge {
            size,
            ..
        })) => assert_eq!(size, over),
        other => panic!("read_file over the cap: {:?}", other.map(|b| b.len())),
    }
}
