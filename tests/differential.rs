//! Differential test: random well-typed kasm programs (`tests/gen/`) run with
//! `KILN_JIT=0` (interpreter) and `KILN_JIT=1` (JIT); stdout, stderr and the
//! exit code must be identical. One trial per program, plus a `coverage`
//! trial that assembles every generated program in-process and requires that
//! the run exercises every opcode of `kiln::bytecode::Op::ALL`.
//!
//! Environment:
//! - `KILN_DIFF_PROGRAMS=N` number of programs (default [`DEFAULT_PROGRAMS`]),
//! - `KILN_DIFF_SEED=S` seed of the first program (default 1); program `i`
//!   uses seed `S + i`, so `KILN_DIFF_SEED=S KILN_DIFF_PROGRAMS=1` reproduces
//!   the failure of seed `S`,
//! - `KILN_DIFF_KEEP=DIR` also writes every generated program to `DIR`,
//! - `KILN_DIFF_TIMEOUT=S`: per-process wall-clock limit (default 60),
//! - `KILN_DIFF_GCSTRESS=N`: programs whose seed is a multiple of `N`
//!   (default 10; 0 = none) also run with `KILN_GC_STRESS=1` (a collection at
//!   every allocation) in both modes, and must match the plain interpreter.
//!
//! A failing program is written to `target/difftest-failures/seed_S.kasm`
//! with `;!` directives holding the interpreter's results, ready to be copied
//! into `jit-tests/` as a regression case. A program the interpreter rejects
//! (exit 3) is a generator bug and fails with the verifier's message.

#[path = "gen/mod.rs"]
mod gen;

use libtest_mimic::{Arguments, Failed, Trial};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_PROGRAMS: u64 = 100;
/// Programs whose seed is a multiple of this also run with `KILN_GC_STRESS=1`
/// in both modes (`KILN_DIFF_GCSTRESS=N`; 0 turns it off).
const DEFAULT_GCSTRESS_EVERY: u64 = 10;
/// Coverage is only asserted for runs at least this large.
const COVERAGE_MIN_PROGRAMS: u64 = 50;
/// Larger runs generate each program inside its trial and skip the
/// up-front statistics and the coverage trial.
const STATS_MAX_PROGRAMS: u64 = 2000;
/// Per-process wall-clock limit in seconds (`KILN_DIFF_TIMEOUT=S`):
/// generated programs are tiny, so hitting it on an idle machine is a bug;
/// a long run at `nice 19` on a busy machine needs a larger value (its
/// GC-stress processes can wait minutes for a CPU).
const DEFAULT_TIMEOUT_SECS: u64 = 60;

fn timeout() -> Duration {
    Duration::from_secs(env_u64("KILN_DIFF_TIMEOUT", DEFAULT_TIMEOUT_SECS).max(1))
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, got {v:?}")),
        Err(_) => default,
    }
}

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-difftest-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

fn failure_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("difftest-failures")
}

struct RunResult {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// Runs `kiln run FILE` with `KILN_JIT=jit`, output to files (no pipe
/// deadlocks), killed after [`timeout`].
fn run_kiln(file: &Path, jit: &str) -> Result<RunResult, String> {
    run_kiln_env(file, jit, false)
}

/// [`run_kiln`], with `KILN_GC_STRESS=1` (a collection at every allocation)
/// when `gc_stress`.
fn run_kiln_env(file: &Path, jit: &str, gc_stress: bool) -> Result<RunResult, String> {
    let tag = if gc_stress { "gc" } else { "" };
    let out_path = file.with_extension(format!("jit{jit}{tag}.out"));
    let err_path = file.with_extension(format!("jit{jit}{tag}.err"));
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("run")
        .arg(file)
        .env("KILN_JIT", jit)
        .env("KILN_GC_STRESS", if gc_stress { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start kiln: {e}"))?;
    let start = Instant::now();
    let limit = timeout();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "KILN_JIT={jit} KILN_GC_STRESS={}: timed out after {limit:?} (wall clock; KILN_DIFF_TIMEOUT)",
                u8::from(gc_stress)
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let r = RunResult {
        stdout: read(&out_path),
        stderr: read(&err_path),
        code: status.code(),
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(r)
}

/// The program with `;!` directives describing the interpreter's behaviour.
fn regression_case(seed: u64, src: &str, interp: &RunResult) -> String {
    let mut s = format!(
        "; differential test failure, seed {seed}\n\
         ; reproduce: KILN_DIFF_SEED={seed} KILN_DIFF_PROGRAMS=1 cargo test --test differential\n\
         ; directives: the interpreter's (KILN_JIT=0) output\n"
    );
    for line in interp.stdout.lines() {
        s.push_str(&format!(";! stdout: {line}\n"));
    }
    if let Some(c) = interp.code {
        if c != 0 {
            s.push_str(&format!(";! exit: {c}\n"));
        }
    }
    if interp.stdout.contains('\r') {
        s.push_str("; note: stdout contains carriage returns, which `;! stdout:` lines cannot express exactly\n");
    }
    if let Some(first) = interp.stderr.lines().next() {
        s.push_str(&format!(";! stderr: {first}\n"));
    }
    s.push_str(src);
    s
}

fn save_failure(seed: u64, contents: &str) -> String {
    let dir = failure_dir();
    let path = dir.join(format!("seed_{seed}.kasm"));
    match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, contents)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(could not write {}: {e})", path.display()),
    }
}

/// First differing line of two texts, for the failure message.
fn first_difference(a: &str, b: &str) -> String {
    let (al, bl): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..al.len().max(bl.len()) {
        let (x, y) = (al.get(i), bl.get(i));
        if x != y {
            return format!(
                "  line {}:\n    interp: {}\n    jit:    {}",
                i + 1,
                x.copied().unwrap_or("<missing>"),
                y.copied().unwrap_or("<missing>")
            );
        }
    }
    "  (only line endings differ)".into()
}

fn check_program(seed: u64, src: &str, gc_stress: bool) -> Result<(), Failed> {
    let file = scratch_dir().join(format!("seed_{seed}.kasm"));
    std::fs::write(&file, src).map_err(|e| e.to_string())?;
    let interp = run_kiln(&file, "0")?;
    // Every program prints before anything can fail, so exit code 3 with no
    // output means "does not assemble/load/verify" (main may return 3 itself).
    if interp.code == Some(3) && interp.stdout.is_empty() {
        let saved = save_failure(seed, src);
        return Err(format!(
            "seed {seed}: generator bug: the program does not assemble/verify (saved as {saved})\n{}",
            interp.stderr
        )
        .into());
    }
    let mut runs = vec![("KILN_JIT=1", run_kiln(&file, "1")?)];
    if gc_stress {
        runs.push((
            "KILN_JIT=0 KILN_GC_STRESS=1",
            run_kiln_env(&file, "0", true)?,
        ));
        runs.push((
            "KILN_JIT=1 KILN_GC_STRESS=1",
            run_kiln_env(&file, "1", true)?,
        ));
    }
    let _ = std::fs::remove_file(&file);
    for (what, other) in runs {
        let problems = compare(&interp, &other);
        if problems.is_empty() {
            continue;
        }
        let saved = save_failure(seed, &regression_case(seed, src, &interp));
        return Err(format!(
            "seed {seed}: KILN_JIT=0 and {what} disagree (program saved as {saved})\n\
             reproduce: KILN_DIFF_SEED={seed} KILN_DIFF_PROGRAMS=1 cargo test --test differential\n{}",
            problems.join("\n")
        )
        .into());
    }
    Ok(())
}

/// Every way the two runs differ (empty: identical).
fn compare(interp: &RunResult, jit: &RunResult) -> Vec<String> {
    let mut problems = Vec::new();
    if interp.code != jit.code {
        problems.push(format!(
            "exit code: interp {:?}, jit {:?}",
            interp.code, jit.code
        ));
    }
    if interp.stdout != jit.stdout {
        problems.push(format!(
            "stdout differs\n{}",
            first_difference(&interp.stdout, &jit.stdout)
        ));
    }
    if interp.stderr != jit.stderr {
        problems.push(format!(
            "stderr differs\n--- interp ---\n{}--- jit ---\n{}",
            interp.stderr, jit.stderr
        ));
    }
    problems
}

/// The tester must bite: a fabricated one-line difference in stdout, a
/// different exit code and a different stderr are each reported, and the
/// regression case written for a failure is itself a passing jit-test in the
/// interpreter (its `;!` directives reproduce the interpreter's output).
fn self_test(seed: u64, src: &str) -> Result<(), Failed> {
    let file = scratch_dir().join(format!("selftest_{seed}.kasm"));
    std::fs::write(&file, src).map_err(|e| e.to_string())?;
    let interp = run_kiln(&file, "0")?;
    let same = RunResult {
        stdout: interp.stdout.clone(),
        stderr: interp.stderr.clone(),
        code: interp.code,
    };
    if !compare(&interp, &same).is_empty() {
        return Err("identical runs reported as different".into());
    }
    let mut lines: Vec<String> = interp.stdout.lines().map(String::from).collect();
    let k = lines.len() / 2;
    lines[k].push('0');
    let altered = RunResult {
        stdout: lines.join("\n") + "\n",
        ..same
    };
    if compare(&interp, &altered).is_empty() {
        return Err("a changed stdout line went unnoticed".into());
    }
    let altered = RunResult {
        stdout: interp.stdout.clone(),
        stderr: interp.stderr.clone(),
        code: Some(42),
    };
    if compare(&interp, &altered).is_empty() {
        return Err("a changed exit code went unnoticed".into());
    }
    let altered = RunResult {
        stdout: interp.stdout.clone(),
        stderr: "x".into(),
        code: interp.code,
    };
    if compare(&interp, &altered).is_empty() {
        return Err("a changed stderr went unnoticed".into());
    }
    if interp.stdout.contains('\r') {
        return Ok(()); // not expressible as `;! stdout:` lines (noted in the case)
    }
    let case = regression_case(seed, src, &interp);
    let case_file = scratch_dir().join(format!("selftest_{seed}_case.kasm"));
    std::fs::write(&case_file, &case).map_err(|e| e.to_string())?;
    let rerun = run_kiln(&case_file, "0")?;
    let mut want = String::new();
    let mut exit = 0;
    let mut stderr_wants = Vec::new();
    for l in case.lines() {
        if let Some(v) = l.strip_prefix(";! stdout: ") {
            want.push_str(v);
            want.push('\n');
        } else if let Some(v) = l.strip_prefix(";! exit: ") {
            exit = v.parse().map_err(|_| "bad exit directive")?;
        } else if let Some(v) = l.strip_prefix(";! stderr: ") {
            stderr_wants.push(v);
        }
    }
    if rerun.stdout != want
        || rerun.code != Some(exit)
        || stderr_wants.iter().any(|w| !rerun.stderr.contains(w))
    {
        return Err(format!(
            "the regression case for seed {seed} does not reproduce the interpreter's output"
        )
        .into());
    }
    Ok(())
}

/// Opcode counts over all programs (assembled in-process), and the number of
/// instructions.
fn coverage(
    programs: &[Arc<gen::program::Generated>],
) -> Result<(BTreeMap<kiln::bytecode::Op, u64>, u64), String> {
    let mut counts = BTreeMap::new();
    let mut total = 0u64;
    for g in programs {
        let lib = kiln::asm::assemble(&g.source, &format!("seed_{}.kasm", g.seed))
            .map_err(|errs| format!("seed {}: does not assemble: {}", g.seed, errs[0]))?;
        for t in &lib.types {
            for m in &t.methods {
                let insns = kiln::bytecode::decode_all(&m.code)
                    .map_err(|e| format!("seed {}: {}::{}: {e}", g.seed, t.name, m.name))?;
                for (_, insn) in insns {
                    *counts.entry(insn.op).or_insert(0) += 1;
                    total += 1;
                }
            }
        }
    }
    Ok((counts, total))
}

fn main() {
    let mut args = Arguments::from_args();
    // Each trial runs two processes one after the other: at most 2 at a time.
    args.test_threads = Some(args.test_threads.unwrap_or(2).min(2));
    let n = env_u64("KILN_DIFF_PROGRAMS", DEFAULT_PROGRAMS);
    let seed0 = env_u64("KILN_DIFF_SEED", 1);
    let keep = std::env::var_os("KILN_DIFF_KEEP").map(PathBuf::from);
    let gc_every = env_u64("KILN_DIFF_GCSTRESS", DEFAULT_GCSTRESS_EVERY);

    // Programs are generated where they are used (the long mode would not
    // fit in memory otherwise); the statistics and the coverage trial only
    // for runs up to STATS_MAX_PROGRAMS.
    let small = n <= STATS_MAX_PROGRAMS;
    let programs: Vec<Arc<gen::program::Generated>> = if small || keep.is_some() {
        (0..n)
            .map(|i| Arc::new(gen::program(seed0.wrapping_add(i))))
            .collect()
    } else {
        Vec::new()
    };
    if let Some(dir) = &keep {
        std::fs::create_dir_all(dir).expect("create KILN_DIFF_KEEP dir");
        for g in &programs {
            std::fs::write(dir.join(format!("seed_{}.kasm", g.seed)), &g.source)
                .expect("write program");
        }
    }
    if small {
        let functions: usize = programs.iter().map(|g| g.functions).sum();
        let risky = programs.iter().filter(|g| g.shape.risky).count();
        eprintln!(
            "differential: {n} programs (seeds {seed0}..={}), {functions} generated functions, {risky} may end in an uncaught exception",
            seed0.wrapping_add(n.saturating_sub(1))
        );
    } else {
        eprintln!(
            "differential: {n} programs (seeds {seed0}..={}), generated one at a time",
            seed0.wrapping_add(n.saturating_sub(1))
        );
    }

    let mut trials = Vec::new();
    {
        let programs = programs.clone();
        trials.push(
            Trial::test("coverage", move || {
                let (counts, total) = coverage(&programs)?;
                let missing: Vec<&str> = kiln::bytecode::Op::ALL
                    .iter()
                    .filter(|op| !counts.contains_key(op))
                    .map(|op| op.mnemonic())
                    .collect();
                eprintln!(
                    "differential coverage: {total} instructions, {} of {} opcodes; rarest: {}",
                    counts.len(),
                    kiln::bytecode::Op::ALL.len(),
                    {
                        let mut v: Vec<_> = counts.iter().collect();
                        v.sort_by_key(|(_, c)| **c);
                        v.iter()
                            .take(6)
                            .map(|(o, c)| format!("{} {c}", o.mnemonic()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
                if n >= COVERAGE_MIN_PROGRAMS && !missing.is_empty() {
                    return Err(format!("opcodes never generated: {}", missing.join(" ")).into());
                }
                Ok(())
            })
            .with_ignored_flag(n < COVERAGE_MIN_PROGRAMS || !small),
        );
    }
    // A risky program, so the self test also covers exit code and stderr.
    let first = programs
        .iter()
        .find(|g| g.shape.risky)
        .or(programs.first())
        .cloned()
        .or_else(|| (n > 0).then(|| Arc::new(gen::program(seed0))));
    if let Some(g) = first {
        trials.push(Trial::test("self_test", move || {
            self_test(g.seed, &g.source)
        }));
    }
    for i in 0..n {
        let seed = seed0.wrapping_add(i);
        let gc = gc_every != 0 && seed % gc_every == 0;
        let pre = programs.get(i as usize).cloned();
        trials.push(Trial::test(format!("seed_{seed}"), move || {
            let g = pre.unwrap_or_else(|| Arc::new(gen::program(seed)));
            check_program(g.seed, &g.source, gc)
        }));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let _ = std::fs::remove_dir_all(scratch_dir());
    conclusion.exit();
}
