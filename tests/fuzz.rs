//! Mutation fuzzer for the library reader, the assembler and the verifier.
//!
//! Runs on the stable toolchain with no extra dependencies: there is no
//! coverage feedback, so the mutators are structure-aware instead (section
//! fix-ups for `.klib` bytes, token-level edits for kasm text, edits of the
//! `Library` model for the verifier) and inputs that get past the first
//! layer of validation are kept in a bounded corpus for further mutation.
//!
//! Targets (each takes bytes; a *finding* is a panic, a broken invariant, a
//! hang longer than the timeout or an absurd allocation):
//! - `reader`: `format::read`; if it accepts, `format::write` must give the
//!   input back (one encoding per library), and `disassemble` / `inspect` of
//!   the result and `assemble` of the disassembly must not panic; an error's
//!   offset lies inside the file.
//! - `assembler`: `asm::assemble` of (lossy UTF-8) text; if it accepts, the
//!   library survives `write` → `read`, and `disassemble` → `assemble` gives
//!   identical `write` bytes.
//! - `verifier`: `format::read` then `verify::verify_program` on std plus the
//!   library (or the library alone if it redefines a std class); if it
//!   accepts, the output is checked for the guarantees of docs/verifier.md
//!   that can be checked locally (every body typed, decoded instructions
//!   match the code, stacks within `max_stack`, reachable code never falls
//!   off the end, branch targets are reachable instruction starts).
//!
//! Invariants of the harness: inputs are a pure function of
//! `KILN_FUZZ_SEED` and the seed corpus (jit-tests, std, `tests/fuzz/seeds`),
//! so a run is reproducible; trials run one at a time (the watchdog, the
//! allocation accounting and the current-input buffer are process-wide).
//!
//! Environment: `KILN_FUZZ_ITERS=N` (inputs per target), `KILN_FUZZ_TARGET=t`
//! (only that target, plus the regression inputs), `KILN_FUZZ_SEED=S`,
//! `KILN_FUZZ_TIMEOUT_MS=ms` (per input), `KILN_FUZZ_REPLAY=file` (run one
//! input, the target taken from the file name prefix), `KILN_FUZZ_RUN_DIR=dir`
//! (every `.klib` or assembling kasm file under `dir` through the `run`
//! target, e.g. a libFuzzer corpus). See docs/security.md.

#[path = "fuzz/targets.rs"]
mod targets;

use kiln::bytecode::{self, Insn, Op, Operand, OperandKind};
use kiln::library::program::Program;
use kiln::library::{
    Access, Handler, HandlerKind, Library, MemberKind, MethodDef, Mutability, Prim, TypeKind,
    TypeSig, Var,
};
use kiln::{asm, format, verify};
use libtest_mimic::{Arguments, Failed, Trial};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Allocation accounting
// ---------------------------------------------------------------------------

/// A single request above this is refused: the process aborts after saving
/// the input (an absurd allocation is a finding, and the OS may not survive it).
const HARD_ALLOC_LIMIT: usize = 1 << 31;
/// Growth of live heap bytes during one input above this is a finding.
const SOFT_ALLOC_LIMIT: usize = 256 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct CountingAlloc;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn note_alloc(size: usize) {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Called (without allocating) when a request exceeds [`HARD_ALLOC_LIMIT`].
fn huge_request() {
    let mut err = std::io::stderr();
    let _ = err.write_all(b"\nFUZZ FINDING: allocation request above 2 GiB; input saved to target/fuzz-findings/abort-input\n");
    if let (Some(f), Ok(cur)) = (ABORT_FILE.get(), CURRENT.try_lock()) {
        let mut f: &File = f;
        let _ = f.write_all(&cur);
        let _ = f.flush();
    }
}

// SAFETY: every method forwards to `System` with the caller's layout and
// pointer unchanged, so `System`'s guarantees carry over; the bookkeeping only
// touches atomics and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_ALLOC_LIMIT {
            huge_request();
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as ours (non-zero size layout from the caller).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_ALLOC_LIMIT {
            huge_request();
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (we forward all allocations).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > HARD_ALLOC_LIMIT {
            huge_request();
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr`/`layout` come from `System` via us; the caller upholds `new_size` rules.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            note_alloc(new_size);
        }
        p
    }
}

// ---------------------------------------------------------------------------
// Current input, watchdog, panic capture
// ---------------------------------------------------------------------------

/// The input being run (for the watchdog and the huge-allocation report).
static CURRENT: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static CURRENT_TARGET: Mutex<&'static str> = Mutex::new("");
static ABORT_FILE: OnceLock<File> = OnceLock::new();
/// Incremented at the start and end of every input.
static EPOCH: AtomicU64 = AtomicU64::new(0);
static BUSY: AtomicBool = AtomicBool::new(false);
static PANIC_MSG: Mutex<Option<String>> = Mutex::new(None);

fn findings_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("fuzz-findings")
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Save an input that produced a finding; returns the path.
fn save_finding(target: &str, input: &[u8]) -> PathBuf {
    let dir = findings_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{:016x}", fnv(input)));
    let _ = std::fs::write(&path, input);
    path
}

fn timeout() -> Duration {
    let default = if cfg!(debug_assertions) {
        10_000
    } else {
        2_000
    };
    Duration::from_millis(env_u64("KILN_FUZZ_TIMEOUT_MS").unwrap_or(default))
}

/// The watchdog's limit for one input of `target`: [`timeout`], and for
/// `run` also the time its two children may take (each is killed at
/// [`run_bound`]; starting, killing and reaping processes on a loaded machine
/// takes time of its own).
fn watchdog_limit(target: &str) -> Duration {
    if target == "run" {
        timeout() + 4 * run_bound()
    } else {
        timeout()
    }
}

/// Start the watchdog once: if one input runs longer than [`watchdog_limit`], save
/// it, report it and abort the process (a hang cannot be unwound).
fn start_watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let dir = findings_dir();
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(f) = File::create(dir.join("abort-input")) {
            let _ = ABORT_FILE.set(f);
        }
        std::thread::spawn(|| {
            let mut seen = u64::MAX;
            let mut since = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let e = EPOCH.load(Ordering::SeqCst);
                if e != seen || !BUSY.load(Ordering::SeqCst) {
                    seen = e;
                    since = Instant::now();
                    continue;
                }
                let target = *CURRENT_TARGET.lock().unwrap();
                let limit = watchdog_limit(target);
                if since.elapsed() > limit {
                    let input = CURRENT.lock().map(|c| c.clone()).unwrap_or_default();
                    let path = save_finding(target, &input);
                    eprintln!(
                        "\nFUZZ FINDING [{target}]: one input ran longer than {limit:?} (hang); saved to {}",
                        path.display()
                    );
                    eprintln!("0 passed, 1 failed (aborted on hang)");
                    std::process::abort();
                }
            }
        });
        std::panic::set_hook(Box::new(|info| {
            let loc = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                s.to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "?".to_string()
            };
            if let Ok(mut m) = PANIC_MSG.lock() {
                *m = Some(format!("panic at {loc}: {msg}"));
            }
        }));
    });
}

/// Run one input through `f` under the watchdog and `catch_unwind`. Returns
/// the finding, if any, as (dedup key, description).
fn run_one(
    target: &'static str,
    input: &[u8],
    f: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Option<(String, String)> {
    {
        let mut cur = CURRENT.lock().unwrap();
        cur.clear();
        cur.extend_from_slice(input);
    }
    *CURRENT_TARGET.lock().unwrap() = target;
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    EPOCH.fetch_add(1, Ordering::SeqCst);
    BUSY.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| f(input)));
    BUSY.store(false, Ordering::SeqCst);
    EPOCH.fetch_add(1, Ordering::SeqCst);
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    match r {
        Err(_) => {
            let msg = PANIC_MSG
                .lock()
                .unwrap()
                .take()
                .unwrap_or_else(|| "panic".into());
            let key = msg.split(": ").next().unwrap_or("").to_string();
            Some((key, msg))
        }
        Ok(Err(msg)) => {
            let key = msg.split(':').next().unwrap_or("").to_string();
            Some((key, msg))
        }
        Ok(Ok(())) if grew > SOFT_ALLOC_LIMIT => Some((
            "alloc".into(),
            format!("allocated {} MiB for one input", grew >> 20),
        )),
        Ok(Ok(())) => None,
    }
}

// ---------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------

/// Programs the `run` target executed, and how many of their runs hit the
/// time bound or were compared between the modes (statistics).
static RUN_EXECUTED: AtomicU64 = AtomicU64::new(0);
static RUN_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
static RUN_COMPARED: AtomicU64 = AtomicU64::new(0);

/// Wall-clock bound of one `kiln run` child of the `run` target: a quarter of
/// the per-input timeout, so both modes fit inside the watchdog's limit.
fn run_bound() -> Duration {
    timeout() / 4
}

struct ChildRun {
    /// Exit code, or `None` when the bound killed it.
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// `kiln run FILE` with `KILN_JIT=jit` (and `KILN_GC_STRESS=1` when
/// `gc_stress`), a 64 MiB heap and [`run_bound`];
/// `Err` for a death by a signal we did not send.
fn run_child(file: &Path, jit: &str, gc_stress: bool) -> Result<ChildRun, String> {
    use std::os::unix::process::ExitStatusExt;
    let out = file.with_extension(format!("{jit}.out"));
    let err = file.with_extension(format!("{jit}.err"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("run")
        .arg(file)
        .env("KILN_JIT", jit)
        .env("KILN_HEAP_MAX", "64M")
        .env("KILN_GC_STRESS", if gc_stress { "1" } else { "0" })
        .env("KILN_PATH", file.parent().unwrap_or(Path::new(".")))
        .stdin(std::process::Stdio::null())
        .stdout(File::create(&out).map_err(|e| format!("run: {e}"))?)
        .stderr(File::create(&err).map_err(|e| format!("run: {e}"))?)
        .spawn()
        .map_err(|e| format!("run: cannot start kiln: {e}"))?;
    let start = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("run: {e}"))? {
            break st;
        }
        if start.elapsed() > run_bound() {
            let _ = child.kill();
            killed = true;
            break child.wait().map_err(|e| format!("run: {e}"))?;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    // Output beyond 1 MiB is not compared (a printing loop cut by the bound).
    let read = |p: &Path| {
        let mut v = std::fs::read(p).unwrap_or_default();
        v.truncate(1 << 20);
        let _ = std::fs::remove_file(p);
        v
    };
    let (stdout, stderr) = (
        read(&out),
        String::from_utf8_lossy(&read(&err)).into_owned(),
    );
    if killed {
        return Ok(ChildRun {
            code: None,
            stdout,
            stderr,
        });
    }
    if let Some(sig) = status.signal() {
        return Err(format!(
            "run: KILN_JIT={jit}: killed by signal {sig}\n{stderr}"
        ));
    }
    let code = status.code();
    if code == Some(101)
        || stderr.contains("internal error")
        || stderr.contains("internal JIT error")
        || stderr.contains("panicked")
    {
        return Err(format!(
            "run: KILN_JIT={jit}: internal error (exit {code:?})\n{stderr}"
        ));
    }
    Ok(ChildRun {
        code,
        stdout,
        stderr,
    })
}

/// `run`: a library that verifies (with std) is run by the `kiln` binary in
/// both modes (the JIT run of every fourth library with `KILN_GC_STRESS=1`),
/// with a 64 MiB heap and a wall-clock bound. Findings: a death
/// by a signal, an internal error (exit 101, "internal error", a panic), or —
/// when both runs finish, the program starts no thread and reads no clock,
/// and neither overflowed its stack (the depth differs between the modes) —
/// different exit codes, stdout or stderr between the interpreter and the
/// JIT. A run cut by the bound is counted, not a finding (verified programs
/// may loop forever).
fn target_run(bytes: &[u8]) -> Result<(), String> {
    let Ok(lib) = format::read(bytes) else {
        return Ok(());
    };
    let std = targets::std_lib();
    if lib.types.iter().any(|t| std.type_named(&t.name).is_some()) {
        return Ok(()); // the loader always adds std: a load error
    }
    let nondeterministic = lib
        .member_refs
        .iter()
        .any(|m| matches!(m.name.as_str(), "start" | "join" | "clock_ns"));
    let files = vec!["std.kasm".to_string(), "fuzz.klib".to_string()];
    let Ok(program) = Program::new(vec![std.clone(), lib]) else {
        return Ok(());
    };
    if verify::verify_program(&program, &files).is_err() {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("kiln-fuzz-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("run: {e}"))?;
    let file = dir.join("fuzz.klib");
    std::fs::write(&file, bytes).map_err(|e| format!("run: {e}"))?;
    RUN_EXECUTED.fetch_add(1, Ordering::Relaxed);
    // Every fourth library runs its JIT child with a collection at every
    // allocation (the outputs must still agree).
    let gc_stress = fnv(bytes).is_multiple_of(4);
    let interp = run_child(&file, "0", false)?;
    let jit = run_child(&file, "1", gc_stress)?;
    if interp.code.is_none() || jit.code.is_none() {
        RUN_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let overflow = |r: &ChildRun| r.stderr.contains("StackOverflowException");
    if nondeterministic || overflow(&interp) || overflow(&jit) {
        return Ok(());
    }
    RUN_COMPARED.fetch_add(1, Ordering::Relaxed);
    if interp.code != jit.code || interp.stdout != jit.stdout || interp.stderr != jit.stderr {
        return Err(format!(
            "run: interpreter and JIT disagree: exit {:?} / {:?}\n--- interp stdout ---\n{}\n--- jit stdout ---\n{}\n--- interp stderr ---\n{}\n--- jit stderr ---\n{}",
            interp.code,
            jit.code,
            String::from_utf8_lossy(&interp.stdout[..interp.stdout.len().min(2000)]),
            String::from_utf8_lossy(&jit.stdout[..jit.stdout.len().min(2000)]),
            &interp.stderr[..interp.stderr.len().min(2000)],
            &jit.stderr[..jit.stderr.len().min(2000)],
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// PRNG and generic byte mutators
// ---------------------------------------------------------------------------

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// One random byte-level mutation; returns (position, length delta) for
/// section fix-ups.
fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) -> (usize, isize) {
    if data.is_empty() {
        data.push(rng.next() as u8);
        return (0, 1);
    }
    let len = data.len();
    let pos = rng.below(len);
    match rng.below(10) {
        0 => {
            data[pos] ^= 1 << rng.below(8);
            (pos, 0)
        }
        1 => {
            data[pos] = rng.next() as u8;
            (pos, 0)
        }
        2 => {
            // Interesting value, 1/2/4/8 bytes, little endian.
            let v = *rng.pick(INTERESTING);
            let w = *rng.pick(&[1usize, 2, 4, 4, 8]);
            for k in 0..w {
                if pos + k < len {
                    data[pos + k] = (v >> (8 * k)) as u8;
                }
            }
            (pos, 0)
        }
        3 => {
            // Small delta on a u32 (counts and lengths ±1).
            if pos + 4 <= len {
                let old = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap());
                let d = *rng.pick(&[1i64, -1, 2, -2, 4, -4, 8, -8, 16]);
                let new = (old as i64 + d) as u32;
                data[pos..pos + 4].copy_from_slice(&new.to_le_bytes());
            }
            (pos, 0)
        }
        4 => {
            let n = 1 + rng.below((len - pos).min(64));
            data.drain(pos..pos + n);
            (pos, -(n as isize))
        }
        5 => {
            let n = 1 + rng.below(16);
            let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(pos..pos, ins);
            (pos, n as isize)
        }
        6 => {
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(64));
            let chunk = data[from..from + n].to_vec();
            data.splice(pos..pos, chunk);
            (pos, n as isize)
        }
        7 if !other.is_empty() => {
            // Splice a chunk of another input in.
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(128));
            data.splice(pos..pos, other[from..from + n].iter().copied());
            (pos, n as isize)
        }
        8 if !other.is_empty() => {
            // Overwrite with a chunk of another input.
            let from = rng.below(other.len());
            let n = (1 + rng.below(32)).min(other.len() - from).min(len - pos);
            data[pos..pos + n].copy_from_slice(&other[from..from + n]);
            (pos, 0)
        }
        _ => {
            let n = 1 + rng.below(8);
            let from = pos.saturating_sub(n);
            data.swap(from, pos);
            (pos, 0)
        }
    }
}

// ---------------------------------------------------------------------------
// .klib-aware mutation
// ---------------------------------------------------------------------------

fn rd32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
}

fn wr32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Section boundaries `[heap_start, meta_start, code_start, end]` of a header
/// that is consistent, else `None`.
fn sections(b: &[u8]) -> Option<[usize; 4]> {
    let h = format::header::HEAP_OFF;
    let heap_off = rd32(b, h)? as usize;
    let heap_len = rd32(b, h + 4)? as usize;
    let meta_off = rd32(b, h + 8)? as usize;
    let meta_len = rd32(b, h + 12)? as usize;
    let code_off = rd32(b, h + 16)? as usize;
    let code_len = rd32(b, h + 20)? as usize;
    (heap_off == format::HEADER_SIZE
        && meta_off == heap_off + heap_len
        && code_off == meta_off + meta_len
        && code_off + code_len == b.len())
    .then_some([heap_off, meta_off, code_off, b.len()])
}

/// Adjust the header after an insertion/deletion of `delta` bytes at `pos`
/// in a file whose sections were `secs` before the edit.
fn fixup(b: &mut [u8], secs: [usize; 4], pos: usize, delta: isize) {
    if delta == 0 || pos < format::HEADER_SIZE {
        return;
    }
    let h = format::header::HEAP_OFF;
    // Section index containing pos (0 heap, 1 meta, 2 code).
    let s = if pos < secs[1] {
        0
    } else if pos < secs[2] {
        1
    } else {
        2
    };
    let len_field = h + 4 + 8 * s;
    let old = rd32(b, len_field).unwrap_or(0) as isize;
    wr32(b, len_field, (old + delta).max(0) as u32);
    for later in (s + 1)..3 {
        let off_field = h + 8 * later;
        let old = rd32(b, off_field).unwrap_or(0) as isize;
        wr32(b, off_field, (old + delta).max(0) as u32);
    }
}

/// Offsets of the string heap entries' length fields.
fn heap_entries(b: &[u8], secs: [usize; 4]) -> Vec<usize> {
    let mut out = Vec::new();
    let Some(n) = rd32(b, secs[0]) else {
        return out;
    };
    let mut at = secs[0] + 4;
    for _ in 0..n.min(10_000) {
        let Some(l) = rd32(b, at) else { break };
        if at + 4 + l as usize > secs[1] {
            break;
        }
        out.push(at);
        at += 4 + l as usize;
    }
    out
}

fn mutate_klib(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let secs = sections(data);
    match (secs, rng.below(10)) {
        (Some(secs), 0..=4) => {
            // Edit inside the file and keep the header consistent.
            let (pos, delta) = mutate_bytes(rng, data, other);
            if pos >= format::HEADER_SIZE {
                fixup(data, secs, pos, delta);
            }
        }
        (Some(secs), 5) => {
            // Counts and fields at known places: heap count, library name,
            // import count, first body's code length.
            let at = *rng.pick(&[secs[0], secs[1], secs[1] + 4, secs[1] + 8, secs[2]]);
            if let Some(old) = rd32(data, at) {
                let v = if rng.chance(2) {
                    (old as i64 + *rng.pick(&[1i64, -1, 2, -2])) as u32
                } else {
                    *rng.pick(INTERESTING) as u32
                };
                wr32(data, at, v);
            }
        }
        (Some(secs), 6) => {
            // A string heap entry: change a byte of its text, or its length.
            let entries = heap_entries(data, secs);
            if !entries.is_empty() {
                let e = *rng.pick(&entries);
                let l = rd32(data, e).unwrap_or(0) as usize;
                if l > 0 && rng.chance(2) {
                    let k = e + 4 + rng.below(l);
                    data[k] = *rng.pick(b"AaZz_0.:$\xc3\xff");
                } else if rng.chance(2) && l > 0 {
                    // Drop the last byte and fix the lengths.
                    wr32(data, e, (l - 1) as u32);
                    data.remove(e + 4 + l - 1);
                    fixup(data, secs, e + 4, -1);
                } else {
                    wr32(data, e, l as u32 + 1);
                    data.insert(e + 4 + l, b'x');
                    fixup(data, secs, e + 4, 1);
                }
            }
        }
        (Some(_), 7) => {
            // A header field.
            let at = 4 + 2 * rng.below(16);
            let v = *rng.pick(INTERESTING) as u32;
            wr32(data, at, v);
        }
        _ => {
            mutate_bytes(rng, data, other);
        }
    }
}

// ---------------------------------------------------------------------------
// kasm text mutation
// ---------------------------------------------------------------------------

const KEYWORDS: &[&str] = &[
    ".library",
    ".import",
    ".class",
    ".interface",
    ".field",
    ".method",
    ".property",
    ".locals",
    ".try",
    ".attr",
    ".line",
    ".bogus",
    "catch",
    "finally",
    "public",
    "private",
    "protected",
    "static",
    "virtual",
    "override",
    "abstract",
    "native",
    "sealed",
    "mutable",
    "mutable(self)",
    "atomic",
    "implements",
    "get",
    "set",
    "init",
    "this",
    "self",
    "void",
    "object",
    "string",
    "ctor",
    "cctor",
    "main",
    "true",
    "false",
    "nan",
    "-nan",
    "inf",
    "-inf",
    "nan(0x1)",
    "bool",
    "char",
    "u8",
    "i32",
    "i64",
    "u64",
    "f32",
    "f64",
    "ptr",
    "mutptr",
    "Object",
    "String",
    "Exception",
    "Std",
    "[]",
    "->",
    "::",
    ":",
    ",",
    "{",
    "}",
    "(",
    ")",
    "=",
    ";",
    "\"",
    "'",
    "'\\u{110000}'",
    "'\\u{D800}'",
    "\"\\q\"",
    "\"a\\u{41}\"",
];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "0x7f",
    "0xFFFFFFFF",
    "0x",
    "1e309",
    "-1e-320",
    "1.5",
    "3.4028236e38",
    "1_000",
    "99999999999999999999999999999999",
];

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '$' | '-')
}

/// Split a line into tokens: runs of word characters, and single other chars.
fn tokens(line: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut it = line.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut end = i + c.len_utf8();
        if is_word(c) {
            while let Some(&(j, d)) = it.peek() {
                if !is_word(d) {
                    break;
                }
                end = j + d.len_utf8();
                it.next();
            }
        }
        out.push((i, end));
    }
    out
}

fn word_pool(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        for (a, b) in tokens(line) {
            let w = &line[a..b];
            if w.chars().next().is_some_and(is_word) && seen.insert(w) {
                out.push(w.to_string());
            }
            if out.len() > 400 {
                return out;
            }
        }
    }
    out
}

fn mutate_text(rng: &mut Rng, text: &str, other: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let n = lines.len();
    let i = rng.below(n);
    match rng.below(12) {
        0 => {
            lines.remove(i);
        }
        1 => {
            let l = lines[i].clone();
            lines.insert(rng.below(n + 1), l);
        }
        2 => {
            let j = rng.below(n);
            lines.swap(i, j);
        }
        3 => {
            let l = lines.remove(i);
            let j = rng.below(lines.len() + 1);
            lines.insert(j, l);
        }
        4 => {
            // A line from another input.
            let ol: Vec<&str> = other.lines().collect();
            if !ol.is_empty() {
                lines.insert(i, rng.pick(&ol).to_string());
            }
        }
        5..=9 => {
            // Replace a token with a dictionary word.
            let toks = tokens(&lines[i]);
            if !toks.is_empty() {
                let (a, b) = *rng.pick(&toks);
                let word: String = match rng.below(5) {
                    0 => rng.pick(Op::ALL).mnemonic().to_string(),
                    1 => rng.pick(KEYWORDS).to_string(),
                    2 => rng.pick(NUMBERS).to_string(),
                    _ => {
                        let pool = word_pool(if rng.chance(4) { other } else { text });
                        if pool.is_empty() {
                            "x".into()
                        } else {
                            rng.pick(&pool).clone()
                        }
                    }
                };
                if rng.chance(8) {
                    // Insert instead of replace.
                    lines[i].insert_str(a, &format!("{word} "));
                } else if rng.chance(8) {
                    lines[i].replace_range(a..b, "");
                } else {
                    lines[i].replace_range(a..b, &word);
                }
            }
        }
        10 => {
            // An instruction line with a random mnemonic and operand.
            let op = rng.pick(Op::ALL);
            let operand = match rng.below(3) {
                0 => rng.pick(NUMBERS).to_string(),
                1 => {
                    let pool = word_pool(text);
                    if pool.is_empty() {
                        String::new()
                    } else {
                        rng.pick(&pool).clone()
                    }
                }
                _ => String::new(),
            };
            lines.insert(i, format!("    {} {operand}", op.mnemonic()));
        }
        _ => {
            // Byte-level edit of one line.
            let mut b = lines[i].clone().into_bytes();
            mutate_bytes(rng, &mut b, other.as_bytes());
            lines[i] = String::from_utf8_lossy(&b).into_owned();
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------
// Library model mutation (verifier)
// ---------------------------------------------------------------------------

struct Names {
    classes: Vec<String>,
    members: Vec<String>,
}

fn names_of(lib: &Library) -> Names {
    let mut classes: Vec<String> = targets::std_lib()
        .types
        .iter()
        .map(|t| t.name.clone())
        .collect();
    classes.extend(lib.types.iter().map(|t| t.name.clone()));
    classes.push("Nope".into());
    let mut members: Vec<String> = vec!["ctor".into(), "cctor".into(), "main".into()];
    for t in lib.types.iter().chain(&targets::std_lib().types) {
        members.extend(t.methods.iter().map(|m| m.name.clone()));
        members.extend(t.fields.iter().map(|f| f.name.clone()));
    }
    members.truncate(300);
    Names { classes, members }
}

fn rand_sig(rng: &mut Rng, names: &Names, depth: u32) -> TypeSig {
    match rng.below(if depth > 3 { 3 } else { 5 }) {
        0 => TypeSig::Prim(*rng.pick(&Prim::ALL)),
        1 => TypeSig::Class(rng.pick(&names.classes).clone()),
        2 if rng.chance(4) => TypeSig::Atomic(*rng.pick(&Prim::ALL)),
        2 => TypeSig::Prim(*rng.pick(&Prim::ALL)),
        _ => TypeSig::Array(Box::new(rand_sig(rng, names, depth + 1))),
    }
}

fn rand_access(rng: &mut Rng) -> Access {
    *rng.pick(&[Access::Public, Access::Private, Access::Protected])
}

fn rand_operand(rng: &mut Rng, kind: OperandKind, lib: &Library, starts: &[u32]) -> Operand {
    let idx = |rng: &mut Rng, n: usize| -> u32 {
        if n == 0 || rng.chance(16) {
            rng.below(n + 2) as u32
        } else {
            rng.below(n) as u32
        }
    };
    let target = |rng: &mut Rng| -> u32 {
        if starts.is_empty() || rng.chance(8) {
            *rng.pick(INTERESTING) as u32 % 1024
        } else {
            *rng.pick(starts)
        }
    };
    match kind {
        OperandKind::None => Operand::None,
        OperandKind::I32 => Operand::I32(*rng.pick(INTERESTING) as i32),
        OperandKind::I64 => Operand::I64(*rng.pick(INTERESTING) as i64),
        OperandKind::F32 => Operand::F32(*rng.pick(&[0.0, -0.0, 1.5, f32::NAN, f32::INFINITY])),
        OperandKind::F64 => Operand::F64(*rng.pick(&[0.0, -1.0, f64::NAN, f64::MAX])),
        OperandKind::Bool => Operand::Bool(rng.chance(2)),
        OperandKind::Char => Operand::Char(*rng.pick(&[0, 0x41, 0xD800, 0x10FFFF, 0x110000])),
        OperandKind::Str => Operand::Str(idx(rng, lib.strings.len())),
        OperandKind::Var => Operand::Var(if rng.chance(8) {
            rng.next() as u16
        } else {
            rng.below(5) as u16
        }),
        OperandKind::Target => Operand::Target(target(rng)),
        OperandKind::Switch => {
            let n = rng.below(4);
            Operand::Switch((0..n).map(|_| target(rng)).collect())
        }
        OperandKind::Method | OperandKind::Field => {
            let i = idx(rng, lib.member_refs.len());
            if kind == OperandKind::Method {
                Operand::Method(i)
            } else {
                Operand::Field(i)
            }
        }
        OperandKind::Type => Operand::Type(idx(rng, lib.type_refs.len())),
    }
}

/// Instruction-level edit of one method body, remapping branch targets,
/// handlers and line entries to the new offsets.
fn mutate_code(rng: &mut Rng, lib: &Library, m: &mut MethodDef) {
    let Ok(decoded) = bytecode::decode_all(&m.code) else {
        mutate_bytes(rng, &mut m.code, &[]);
        return;
    };
    let old_len = m.code.len() as u32;
    let starts: Vec<u32> = decoded.iter().map(|(o, _)| *o).collect();
    let mut list: Vec<(Option<u32>, Insn)> =
        decoded.into_iter().map(|(o, i)| (Some(o), i)).collect();
    let n = list.len();
    let i = rng.below(n);
    match rng.below(9) {
        0 if n > 0 => {
            list.remove(i);
        }
        1 if n > 0 => {
            let x = list[i].1.clone();
            list.insert(i, (None, x));
        }
        2 if n > 0 => {
            // Same operand kind, other opcode (add -> sub, ldfld -> stfld...).
            let kind = list[i].1.op.operand_kind();
            let same: Vec<Op> = Op::ALL
                .iter()
                .copied()
                .filter(|o| o.operand_kind() == kind)
                .collect();
            list[i].1.op = *rng.pick(&same);
        }
        3 if n > 0 => {
            let kind = list[i].1.op.operand_kind();
            list[i].1.operand = rand_operand(rng, kind, lib, &starts);
        }
        4 if n > 1 => {
            let j = rng.below(n);
            list.swap(i, j);
        }
        5 if n > 0 => {
            let x = list.remove(i);
            let j = rng.below(list.len() + 1);
            list.insert(j, x);
        }
        6 => {
            mutate_bytes(rng, &mut m.code, &[]);
            return;
        }
        _ => {
            let op = *rng.pick(Op::ALL);
            let operand = rand_operand(rng, op.operand_kind(), lib, &starts);
            list.insert(rng.below(n + 1), (None, Insn { op, operand }));
        }
    }
    // Re-encode and remap.
    let mut map: HashMap<u32, u32> = HashMap::new();
    let mut offs = Vec::with_capacity(list.len());
    let mut at = 0u32;
    for (old, insn) in &list {
        if let Some(o) = old {
            map.entry(*o).or_insert(at);
        }
        offs.push(at);
        at += bytecode::encoded_len(insn.op, &insn.operand) as u32;
    }
    let new_len = at;
    let remap = |o: u32| -> u32 {
        if o == old_len {
            new_len
        } else {
            map.get(&o).copied().unwrap_or(o)
        }
    };
    let mut code = Vec::with_capacity(new_len as usize);
    for (_, insn) in &mut list {
        match &mut insn.operand {
            Operand::Target(t) => *t = remap(*t),
            Operand::Switch(ts) => ts.iter_mut().for_each(|t| *t = remap(*t)),
            _ => {}
        }
        bytecode::encode(&mut code, insn.op, &insn.operand);
    }
    m.code = code;
    for h in &mut m.handlers {
        h.try_start = remap(h.try_start);
        h.try_end = remap(h.try_end);
        h.handler_start = remap(h.handler_start);
        h.handler_end = remap(h.handler_end);
    }
    let mut lines: Vec<_> = m
        .lines
        .iter()
        .filter_map(|l| {
            map.get(&l.offset).map(|&o| kiln::library::LineEntry {
                offset: o,
                line: l.line,
            })
        })
        .collect();
    lines.sort_by_key(|l| l.offset);
    m.lines = lines;
}

fn mutate_handlers(rng: &mut Rng, lib: &Library, m: &mut MethodDef) {
    let mut bounds: Vec<u32> = bytecode::decode_all(&m.code)
        .map(|d| d.into_iter().map(|(o, _)| o).collect())
        .unwrap_or_default();
    bounds.push(m.code.len() as u32);
    let pick = |rng: &mut Rng| *rng.pick(&bounds);
    let nt = lib.type_refs.len();
    match rng.below(5) {
        0 | 1 if !m.handlers.is_empty() => {
            let i = rng.below(m.handlers.len());
            let h = &mut m.handlers[i];
            match rng.below(6) {
                0 => h.try_start = pick(rng),
                1 => h.try_end = pick(rng),
                2 => h.handler_start = pick(rng),
                3 => h.handler_end = pick(rng),
                4 => {
                    h.kind = if rng.chance(2) {
                        HandlerKind::Finally
                    } else {
                        HandlerKind::Catch(rng.below(nt.max(1)) as u32)
                    }
                }
                _ => {
                    let j = rng.below(m.handlers.len());
                    m.handlers.swap(i, j);
                }
            }
        }
        2 if !m.handlers.is_empty() => {
            let i = rng.below(m.handlers.len());
            m.handlers.remove(i);
        }
        3 if !m.handlers.is_empty() => {
            let i = rng.below(m.handlers.len());
            let h = m.handlers[i].clone();
            m.handlers.insert(rng.below(m.handlers.len() + 1), h);
        }
        _ => {
            let mut a = [pick(rng), pick(rng), pick(rng), pick(rng)];
            if rng.chance(2) {
                a.sort_unstable();
            }
            let kind = if nt == 0 || rng.chance(3) {
                HandlerKind::Finally
            } else {
                HandlerKind::Catch(rng.below(nt) as u32)
            };
            m.handlers.insert(
                rng.below(m.handlers.len() + 1),
                Handler {
                    try_start: a[0],
                    try_end: a[1],
                    handler_start: a[2],
                    handler_end: a[3],
                    kind,
                },
            );
        }
    }
}

/// One structural edit of the library model.
fn mutate_library(rng: &mut Rng, lib: &mut Library, other: &Library) {
    let names = names_of(lib);
    let nty = lib.types.len();
    if nty == 0 {
        if let Some(t) = other.types.first() {
            lib.types.push(t.clone());
        }
        return;
    }
    let ti = rng.below(nty);
    let snapshot = lib.clone();
    match rng.below(20) {
        0..=5 => {
            // Code of a method with a body.
            let t = &mut lib.types[ti];
            let with_code: Vec<usize> = (0..t.methods.len())
                .filter(|&i| !t.methods[i].code.is_empty())
                .collect();
            if !with_code.is_empty() {
                let mi = *rng.pick(&with_code);
                mutate_code(rng, &snapshot, &mut lib.types[ti].methods[mi]);
            }
        }
        6 => {
            let t = &mut lib.types[ti];
            if !t.methods.is_empty() {
                let mi = rng.below(t.methods.len());
                mutate_handlers(rng, &snapshot, &mut t.methods[mi]);
            }
        }
        7 if !lib.member_refs.is_empty() => {
            let i = rng.below(lib.member_refs.len());
            let r = &mut lib.member_refs[i];
            match rng.below(3) {
                0 => r.class = rng.pick(&names.classes).clone(),
                1 => r.name = rng.pick(&names.members).clone(),
                _ => {
                    r.kind = match r.kind {
                        MemberKind::Field => MemberKind::Method,
                        MemberKind::Method => MemberKind::Field,
                    }
                }
            }
        }
        8 if !lib.type_refs.is_empty() => {
            let i = rng.below(lib.type_refs.len());
            lib.type_refs[i] = rand_sig(rng, &names, 0);
        }
        9 => {
            // Method flags / access.
            let t = &mut lib.types[ti];
            if !t.methods.is_empty() {
                let mi = rng.below(t.methods.len());
                let m = &mut t.methods[mi];
                match rng.below(6) {
                    0 => m.flags.is_static ^= true,
                    1 => m.flags.is_virtual ^= true,
                    2 => m.flags.is_override ^= true,
                    3 => m.flags.is_abstract ^= true,
                    4 => m.flags.is_native ^= true,
                    _ => m.access = rand_access(rng),
                }
            }
        }
        10 => {
            // Type flags / kind / access.
            let t = &mut lib.types[ti];
            match rng.below(4) {
                0 => t.is_abstract ^= true,
                1 => t.is_sealed ^= true,
                2 => {
                    t.kind = match t.kind {
                        TypeKind::Class => TypeKind::Interface,
                        TypeKind::Interface => TypeKind::Class,
                    }
                }
                _ => t.access = rand_access(rng),
            }
        }
        11 => {
            // Parent: another class (maybe a subclass or itself), none.
            let t = &mut lib.types[ti];
            t.parent = if rng.chance(5) {
                None
            } else {
                Some(rng.pick(&names.classes).clone())
            };
        }
        12 => {
            let t = &mut lib.types[ti];
            if !t.interfaces.is_empty() && rng.chance(2) {
                let i = rng.below(t.interfaces.len());
                t.interfaces.remove(i);
            } else {
                t.interfaces.push(rng.pick(&names.classes).clone());
            }
        }
        13 => {
            // Field type / flags.
            let t = &mut lib.types[ti];
            if !t.fields.is_empty() {
                let fi = rng.below(t.fields.len());
                let f = &mut t.fields[fi];
                match rng.below(4) {
                    0 => f.ty = rand_sig(rng, &names, 0),
                    1 => f.is_static ^= true,
                    2 => f.access = rand_access(rng),
                    _ => {
                        f.mutability = *rng.pick(&[
                            Mutability::Immutable,
                            Mutability::Mutable,
                            Mutability::MutableSelf,
                        ])
                    }
                }
            }
        }
        14 => {
            // Signature: params, return, locals.
            let t = &mut lib.types[ti];
            if !t.methods.is_empty() {
                let mi = rng.below(t.methods.len());
                let m = &mut t.methods[mi];
                let v = Var {
                    name: format!("v{}", rng.below(4)),
                    ty: rand_sig(rng, &names, 0),
                };
                match rng.below(6) {
                    0 => m.params.push(v),
                    1 if !m.params.is_empty() => {
                        let i = rng.below(m.params.len());
                        m.params.remove(i);
                    }
                    2 if !m.params.is_empty() => {
                        let i = rng.below(m.params.len());
                        m.params[i].ty = v.ty;
                    }
                    3 => m.ret = if rng.chance(3) { None } else { Some(v.ty) },
                    4 if !m.locals.is_empty() => {
                        let i = rng.below(m.locals.len());
                        m.locals[i].ty = v.ty;
                    }
                    _ => m.locals.push(v),
                }
            }
        }
        15 => {
            // Rename a type, method or field (duplicates, ctor, main...).
            let t = &mut lib.types[ti];
            match rng.below(3) {
                0 => t.name = rng.pick(&names.classes).clone(),
                1 if !t.methods.is_empty() => {
                    let i = rng.below(t.methods.len());
                    t.methods[i].name = rng.pick(&names.members).clone();
                }
                _ if !t.fields.is_empty() => {
                    let i = rng.below(t.fields.len());
                    t.fields[i].name = rng.pick(&names.members).clone();
                }
                _ => {}
            }
        }
        16 => {
            // Move, duplicate or delete a method.
            if !lib.types[ti].methods.is_empty() {
                let mi = rng.below(lib.types[ti].methods.len());
                match rng.below(3) {
                    0 => {
                        let m = lib.types[ti].methods.remove(mi);
                        let tj = rng.below(nty);
                        lib.types[tj].methods.push(m);
                    }
                    1 => {
                        let m = lib.types[ti].methods[mi].clone();
                        lib.types[ti].methods.push(m);
                    }
                    _ => {
                        lib.types[ti].methods.remove(mi);
                    }
                }
            }
        }
        17 => {
            // Delete or duplicate a type, or delete a field.
            match rng.below(3) {
                0 => {
                    lib.types.remove(ti);
                }
                1 => {
                    let t = lib.types[ti].clone();
                    lib.types.push(t);
                }
                _ => {
                    let t = &mut lib.types[ti];
                    if !t.fields.is_empty() {
                        let i = rng.below(t.fields.len());
                        t.fields.remove(i);
                    }
                }
            }
        }
        18 if !other.types.is_empty() => {
            // Splice a type (or a method) from another library.
            let t = rng.pick(&other.types).clone();
            if rng.chance(2) || t.methods.is_empty() {
                lib.types.push(t);
            } else {
                let m = rng.pick(&t.methods).clone();
                lib.types[ti].methods.push(m);
            }
        }
        _ => {
            // Property and attributes are metadata only; change a line number
            // or add a member ref / type ref / string.
            match rng.below(3) {
                0 => lib.member_refs.push(kiln::library::MemberRef {
                    class: rng.pick(&names.classes).clone(),
                    name: rng.pick(&names.members).clone(),
                    kind: if rng.chance(2) {
                        MemberKind::Field
                    } else {
                        MemberKind::Method
                    },
                }),
                1 => lib.type_refs.push(rand_sig(rng, &names, 0)),
                _ => lib.types[ti].line = rng.next() as u32,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Corpus and driver
// ---------------------------------------------------------------------------

struct Seeds {
    /// kasm texts (jit-tests, std, tests/fuzz/seeds/*.kasm).
    texts: Vec<String>,
    /// `format::write` of every text that assembles.
    klibs: Vec<Vec<u8>>,
}

fn collect_kasm(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_kasm(&p, out);
        } else if p.extension().is_some_and(|e| e == "kasm") {
            out.push(p);
        }
    }
}

fn seeds() -> Seeds {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect_kasm(&root.join("jit-tests"), &mut files);
    collect_kasm(&root.join("tests/fuzz/seeds"), &mut files);
    let mut texts = vec![include_str!("../src/runtime/std.kasm").to_string()];
    texts.extend(files.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    let mut klibs: Vec<Vec<u8>> = texts
        .iter()
        .filter_map(|t| asm::assemble(t, "seed.kasm").ok())
        .map(|l| format::write(&l))
        .collect();
    if let Ok(rd) = std::fs::read_dir(root.join("tests/fuzz/seeds")) {
        let mut ps: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        ps.sort();
        for p in ps {
            if p.extension().is_some_and(|e| e == "klib") {
                if let Ok(b) = std::fs::read(&p) {
                    klibs.push(b);
                }
            }
        }
    }
    Seeds { texts, klibs }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

type TargetFn = fn(&[u8]) -> Result<(), String>;

fn target_fn(name: &str) -> Option<TargetFn> {
    match name {
        "reader" => Some(targets::target_reader),
        "assembler" => Some(targets::target_assembler),
        "verifier" => Some(targets::target_verifier),
        "run" => Some(target_run),
        _ => None,
    }
}

/// Findings of one run, deduplicated by key.
#[derive(Default)]
struct Report {
    runs: u64,
    accepted: u64,
    by_key: HashMap<String, (u64, String, PathBuf)>,
}

impl Report {
    fn record(&mut self, target: &'static str, input: &[u8], key: String, msg: String) {
        let e = self.by_key.entry(key).or_insert_with(|| {
            let path = save_finding(target, input);
            eprintln!(
                "FUZZ FINDING [{target}]: {msg}\n  input: {}",
                path.display()
            );
            (0, msg, path)
        });
        e.0 += 1;
    }
}

const CORPUS_CAP: usize = 4000;

/// Add `x` to a bounded corpus (replacing a random non-seed entry when full).
fn keep(rng: &mut Rng, corpus: &mut Vec<Vec<u8>>, nseeds: usize, x: Vec<u8>) {
    if corpus.len() < CORPUS_CAP {
        corpus.push(x);
    } else if corpus.len() > nseeds {
        let i = nseeds + rng.below(corpus.len() - nseeds);
        corpus[i] = x;
    }
}

fn fuzz(target: &'static str, iters: u64, seed: u64, seeds: &Seeds) -> Report {
    start_watchdog();
    let f = target_fn(target).unwrap();
    let mut rng = Rng(seed ^ fnv(target.as_bytes()));
    let mut report = Report::default();
    let mut corpus: Vec<Vec<u8>> = match target {
        "assembler" => seeds.texts.iter().map(|t| t.as_bytes().to_vec()).collect(),
        _ => seeds.klibs.clone(),
    };
    let nseeds = corpus.len();
    let libs: Vec<Library> = seeds
        .klibs
        .iter()
        .filter_map(|b| format::read(b).ok())
        .collect();
    let started = Instant::now();
    // The seeds themselves first (not for `run`: jit-tests already runs
    // every seed in both modes).
    let seed_pass = if target == "run" {
        Vec::new()
    } else {
        corpus.clone()
    };
    for s in seed_pass {
        if let Some((k, m)) = run_one(target, &s, &f) {
            report.record(target, &s, k, m);
        }
        report.runs += 1;
    }
    let mut last_progress = Instant::now();
    while report.runs < iters {
        if last_progress.elapsed() > Duration::from_secs(30) {
            last_progress = Instant::now();
            eprintln!(
                "  fuzz {target}: {} inputs, {} accepted, corpus {}, {} findings, {:.0?}",
                report.runs,
                report.accepted,
                corpus.len(),
                report.by_key.len(),
                started.elapsed()
            );
        }
        let base = corpus[rng.below(corpus.len())].clone();
        let other = &corpus[rng.below(corpus.len())];
        let max_stack = if rng.chance(4) { 8 } else { 3 };
        let stack = 1 + rng.below(max_stack);
        let input: Vec<u8> = match target {
            "reader" => {
                let mut b = base;
                for _ in 0..stack {
                    mutate_klib(&mut rng, &mut b, other);
                }
                b
            }
            "assembler" => {
                let mut t = String::from_utf8_lossy(&base).into_owned();
                let o = String::from_utf8_lossy(other).into_owned();
                for _ in 0..stack {
                    t = mutate_text(&mut rng, &t, &o);
                }
                t.into_bytes()
            }
            _ => match rng.below(10) {
                0..=6 => match format::read(&base) {
                    Ok(mut lib) => {
                        let other_lib = rng.pick(&libs);
                        for _ in 0..stack {
                            mutate_library(&mut rng, &mut lib, other_lib);
                        }
                        format::write(&lib)
                    }
                    Err(_) => base,
                },
                7 => {
                    // A mutated kasm text that assembles.
                    let t = rng.pick(&seeds.texts);
                    let o = rng.pick(&seeds.texts);
                    let mut t = t.clone();
                    for _ in 0..stack {
                        t = mutate_text(&mut rng, &t, o);
                    }
                    match asm::assemble(&t, "fuzz.kasm") {
                        Ok(l) => format::write(&l),
                        Err(_) => continue,
                    }
                }
                _ => {
                    let mut b = base;
                    mutate_klib(&mut rng, &mut b, other);
                    b
                }
            },
        };
        report.runs += 1;
        if let Some((k, m)) = run_one(target, &input, &f) {
            report.record(target, &input, k, m);
            continue;
        }
        // Keep inputs that pass the first layer (they reach deeper code).
        let deeper = match target {
            "assembler" => asm::assemble(&String::from_utf8_lossy(&input), "x").is_ok(),
            _ => format::read(&input).is_ok(),
        };
        if deeper {
            report.accepted += 1;
            if rng.chance(4) {
                keep(&mut rng, &mut corpus, nseeds, input);
            }
        }
    }
    let verified = match target {
        "verifier" => format!(", {} verified", targets::VERIFY_OK.load(Ordering::Relaxed)),
        "run" => format!(
            ", {} verified and run in both modes, {} of them hit the {:?} bound, {} compared",
            RUN_EXECUTED.load(Ordering::Relaxed),
            RUN_TIMEOUTS.load(Ordering::Relaxed),
            run_bound(),
            RUN_COMPARED.load(Ordering::Relaxed)
        ),
        _ => String::new(),
    };
    eprintln!(
        "fuzz {target}: {} inputs ({} accepted by the {}{verified}), {} distinct findings, {:.1?}, seed {seed}",
        report.runs,
        report.accepted,
        if target == "assembler" { "assembler" } else { "reader" },
        report.by_key.len(),
        started.elapsed()
    );
    report
}

fn regression_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file() && target_of(p).is_some());
    out.sort();
    out
}

/// Target named by a file's name prefix (`reader-…`, `assembler-…`, `verifier-…`).
fn target_of(p: &Path) -> Option<&'static str> {
    let name = p.file_name()?.to_str()?;
    ["reader", "assembler", "verifier", "run"]
        .into_iter()
        .find(|t| name.starts_with(&format!("{t}-")))
}

fn replay(p: &Path) -> Result<(), Failed> {
    start_watchdog();
    let target =
        target_of(p).ok_or("file name must start with reader-, assembler-, verifier- or run-")?;
    let input = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let f = target_fn(target).unwrap();
    match run_one(target, &input, &f) {
        None => Ok(()),
        Some((_, msg)) => Err(format!("{}: {msg}", p.display()).into()),
    }
}

/// `KILN_FUZZ_RUN_DIR=dir`: every file under `dir` (a `.klib`, or kasm text
/// that assembles, such as a libFuzzer corpus) through the `run` target:
/// programs found by coverage feedback, run in both modes and compared.
fn run_dir(dir: &Path) -> (u64, u64) {
    start_watchdog();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            eprintln!("{}: not a readable directory", d.display());
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let f = target_fn("run").unwrap();
    let (mut runs, mut failed) = (0, 0);
    for p in &files {
        let Ok(input) = std::fs::read(p) else {
            continue;
        };
        let bytes = if format::read(&input).is_ok() {
            input
        } else {
            match asm::assemble(&String::from_utf8_lossy(&input), "fuzz.kasm") {
                Ok(lib) => format::write(&lib),
                Err(_) => continue,
            }
        };
        runs += 1;
        if let Some((_, msg)) = run_one("run", &bytes, &f) {
            failed += 1;
            let saved = save_finding("run", &bytes);
            eprintln!("{}: {msg}\n  saved as {}", p.display(), saved.display());
        }
    }
    eprintln!(
        "run dir {}: {} files, {runs} libraries, {} verified and run in both modes ({} hit the bound, {} compared)",
        dir.display(),
        files.len(),
        RUN_EXECUTED.load(Ordering::Relaxed),
        RUN_TIMEOUTS.load(Ordering::Relaxed),
        RUN_COMPARED.load(Ordering::Relaxed),
    );
    (runs - failed, failed)
}

fn main() {
    let mut args = Arguments::from_args();
    // The watchdog, allocation accounting and current input are process-wide.
    args.test_threads = Some(1);
    if let Ok(d) = std::env::var("KILN_FUZZ_RUN_DIR") {
        let (passed, failed) = run_dir(Path::new(&d));
        eprintln!("{passed} passed, {failed} failed");
        std::process::exit(if failed == 0 { 0 } else { 101 });
    }
    if let Ok(p) = std::env::var("KILN_FUZZ_REPLAY") {
        let r = replay(Path::new(&p));
        match &r {
            Ok(()) => eprintln!("1 passed, 0 failed"),
            Err(e) => eprintln!("{e:?}\n0 passed, 1 failed"),
        }
        std::process::exit(if r.is_ok() { 0 } else { 101 });
    }
    let only = std::env::var("KILN_FUZZ_TARGET").ok();
    let seed = env_u64("KILN_FUZZ_SEED").unwrap_or(1);
    let iters_env = env_u64("KILN_FUZZ_ITERS");
    let mut trials = Vec::new();
    for target in ["reader", "assembler", "verifier", "run"] {
        if only.as_deref().is_some_and(|o| o != target) {
            continue;
        }
        // Defaults: a few seconds per target in the debug profile (`run`
        // starts two processes per library that verifies).
        let default = match target {
            "reader" => 20_000,
            "assembler" => 5_000,
            "run" => 600,
            _ => 5_000,
        };
        let iters = iters_env.unwrap_or(default);
        trials.push(Trial::test(format!("fuzz::{target}"), move || {
            let seeds = seeds();
            let r = fuzz(target, iters, seed, &seeds);
            if r.by_key.is_empty() {
                Ok(())
            } else {
                let mut msg = format!("{} distinct findings:\n", r.by_key.len());
                for (n, m, p) in r.by_key.values() {
                    msg.push_str(&format!("  {n}x {m}\n    {}\n", p.display()));
                }
                Err(msg.into())
            }
        }));
    }
    for p in regression_files() {
        let name = format!("regression::{}", p.file_name().unwrap().to_string_lossy());
        trials.push(Trial::test(name, move || replay(&p)));
    }
    libtest_mimic::run(&args, trials).exit();
}
