//! The data-driven test runner: every `jit-tests/**/*.kasm` file is a test case,
//! run through the real `kiln` binary in every execution mode, plus a
//! disassembly round-trip check. Directives live in the file as `;!` comments
//! (see `jit-tests/README.md`). Directories named `lib` hold libraries imported
//! by other cases and are not cases themselves.
//!
//! Adding an execution mode means adding an entry to [`MODES`]; nothing else.

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// (test-name prefix, environment). A `-gcstress` mode is its base mode with
/// `KILN_GC_STRESS=1` (a collection at every allocation); `;! mode: interp`
/// selects `interp` and `interp-gcstress`, `;! no-gcstress` skips the stress
/// modes (say why in the file).
const MODES: &[(&str, &[(&str, &str)])] = &[
    ("interp", &[("KILN_JIT", "0")]),
    ("jit", &[("KILN_JIT", "1")]),
    (
        "interp-gcstress",
        &[("KILN_JIT", "0"), ("KILN_GC_STRESS", "1")],
    ),
    (
        "jit-gcstress",
        &[("KILN_JIT", "1"), ("KILN_GC_STRESS", "1")],
    ),
];

/// Features not implemented yet. A case that `;! requires:` one of these is
/// listed as ignored; remove the name here when the feature lands, and the
/// cases run again.
const KNOWN_MISSING: &[&str] = &[];

#[derive(Debug, Default, Clone)]
struct Expect {
    stdout: Vec<String>,
    exit: i32,
    stderr: Vec<String>,
    args: Vec<String>,
    only_mode: Option<String>,
    roundtrip: bool,
    truncate: Option<usize>,
    patches: Vec<(usize, Vec<u8>)>,
    env: Vec<(String, String)>,
    /// Features the case needs that are not built yet (`;! requires: X`):
    /// such cases are reported as ignored, never as passing.
    requires: Vec<String>,
    /// Skip the `-gcstress` modes (`;! no-gcstress`).
    no_gcstress: bool,
}

fn parse_directives(path: &Path, src: &str) -> Result<Expect, String> {
    let mut e = Expect {
        roundtrip: true,
        ..Default::default()
    };
    for (i, line) in src.lines().enumerate() {
        let Some(pos) = line.find(";!") else { continue };
        let d = &line[pos + 2..];
        let d = d.strip_prefix(' ').unwrap_or(d);
        let (key, val) = match d.find(':') {
            Some(c) => (d[..c].trim(), &d[c + 1..]),
            None => (d.trim(), ""),
        };
        // A single space after the colon is part of the syntax, the rest is data.
        let val_exact = val.strip_prefix(' ').unwrap_or(val);
        let bad = |what: &str| {
            format!(
                "{}:{}: bad `{key}` directive: {what}",
                path.display(),
                i + 1
            )
        };
        match key {
            "stdout" => e.stdout.push(val_exact.to_string()),
            // `\n` stands for a line break (to check lines that follow each other)
            "stderr" => e.stderr.push(val_exact.replace("\\n", "\n")),
            "exit" => e.exit = val.trim().parse().map_err(|_| bad("expected an integer"))?,
            "args" => e.args = val.split_whitespace().map(String::from).collect(),
            "mode" => e.only_mode = Some(val.trim().to_string()),
            "no-roundtrip" => e.roundtrip = false,
            "no-gcstress" => e.no_gcstress = true,
            "truncate" => {
                e.truncate = Some(val.trim().parse().map_err(|_| bad("expected a length"))?)
            }
            "patch" => {
                let mut it = val.split_whitespace();
                let off = it
                    .next()
                    .and_then(parse_usize)
                    .ok_or_else(|| bad("expected OFFSET HEX"))?;
                let hex = it.next().ok_or_else(|| bad("expected OFFSET HEX"))?;
                let bytes = parse_hex(hex).ok_or_else(|| bad("bad hex bytes"))?;
                e.patches.push((off, bytes));
            }
            "env" => {
                let (k, v) = val
                    .trim()
                    .split_once('=')
                    .ok_or_else(|| bad("expected NAME=VALUE"))?;
                e.env.push((k.to_string(), v.to_string()));
            }
            "requires" => {
                let feature = val.split_whitespace().next().unwrap_or("");
                if !KNOWN_MISSING.contains(&feature) {
                    return Err(bad("unknown feature (see KNOWN_MISSING)"));
                }
                e.requires.push(feature.to_string());
            }
            _ => return Err(bad("unknown directive")),
        }
    }
    Ok(e)
}

fn parse_usize(s: &str) -> Option<usize> {
    match s.strip_prefix("0x") {
        Some(h) => usize::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// How long one `kiln run` of a case may take before it counts as hung:
/// `KILN_TEST_TIMEOUT` seconds, default 300 (generous: GC-stress modes on a
/// loaded 2-core machine are slow, but a hang must fail, not stall CI).
fn case_timeout() -> Duration {
    let secs = std::env::var("KILN_TEST_TIMEOUT")
        .ok()
        .map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("KILN_TEST_TIMEOUT={v:?}: expected whole seconds"))
        })
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// `cmd.output()`, but the child is killed (and the case fails) if it runs
/// longer than `limit`. Output is drained by threads so a chatty child
/// cannot block on a full pipe.
fn output_with_timeout(cmd: &mut Command, limit: Duration) -> Result<Output, Failed> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timed out after {} s (KILN_TEST_TIMEOUT); killed",
                limit.as_secs()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-jit-tests-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

fn scratch_name(rel: &str, suffix: &str) -> PathBuf {
    scratch_dir().join(format!("{}{suffix}", rel.replace(['/', '\\'], "__")))
}

fn show(o: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Assemble `src` to a .klib in the scratch dir, apply truncation/patches.
fn build_klib(path: &Path, rel: &str, e: &Expect) -> Result<PathBuf, Failed> {
    let out = scratch_name(rel, ".klib");
    let o = kiln()
        .arg("asm")
        .arg(path)
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("kiln asm failed\n{}", show(&o)).into());
    }
    let mut bytes = std::fs::read(&out).map_err(|e| e.to_string())?;
    for (off, patch) in &e.patches {
        if off + patch.len() > bytes.len() {
            return Err(format!("patch at {off} is past the end ({} bytes)", bytes.len()).into());
        }
        bytes[*off..off + patch.len()].copy_from_slice(patch);
    }
    if let Some(n) = e.truncate {
        bytes.truncate(n);
    }
    std::fs::write(&out, bytes).map_err(|e| e.to_string())?;
    Ok(out)
}

fn run_case(path: &Path, rel: &str, mode: &str, mode_env: &[(&str, &str)]) -> Result<(), Failed> {
    let src = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let e = parse_directives(path, &src)?;
    let target = if e.truncate.is_some() || !e.patches.is_empty() {
        build_klib(path, &format!("{rel}.{mode}"), &e)?
    } else {
        path.to_path_buf()
    };
    let mut cmd = kiln();
    cmd.arg("run").arg(&target).args(&e.args);
    cmd.env_remove("KILN_GC_STRESS");
    for (k, v) in mode_env {
        cmd.env(k, v);
    }
    for (k, v) in &e.env {
        cmd.env(k, v);
    }
    let o = output_with_timeout(&mut cmd, case_timeout())?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    let want: String = e.stdout.iter().map(|l| format!("{l}\n")).collect();
    let mut problems = Vec::new();
    if stdout != want {
        problems.push(format!("stdout differs\n--- expected ---\n{want}"));
    }
    if o.status.code() != Some(e.exit) {
        problems.push(format!("expected exit {}", e.exit));
    }
    let stderr = String::from_utf8_lossy(&o.stderr);
    for s in &e.stderr {
        if !stderr.contains(s.as_str()) {
            problems.push(format!("stderr lacks {s:?}"));
        }
    }
    if e.exit == 0 && e.stderr.is_empty() && !stderr.is_empty() {
        problems.push("unexpected stderr output".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", problems.join("\n"), show(&o)).into())
    }
}

/// `kiln asm` → `kiln dis` → `kiln asm` gives byte-identical libraries.
fn run_roundtrip(path: &Path, rel: &str) -> Result<(), Failed> {
    let first = scratch_name(rel, ".rt1.klib");
    let o = kiln()
        .arg("asm")
        .arg(path)
        .arg("-o")
        .arg(&first)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        // Files that do not assemble are checked by their run case.
        return Ok(());
    }
    let o = kiln()
        .arg("dis")
        .arg(&first)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("kiln dis failed\n{}", show(&o)).into());
    }
    let text = scratch_name(rel, ".rt.kasm");
    std::fs::write(&text, &o.stdout).map_err(|e| e.to_string())?;
    let second = scratch_name(rel, ".rt2.klib");
    let o2 = kiln()
        .arg("asm")
        .arg(&text)
        .arg("-o")
        .arg(&second)
        .output()
        .map_err(|e| e.to_string())?;
    if !o2.status.success() {
        return Err(format!(
            "disassembly does not re-assemble\n{}\n--- text ---\n{}",
            show(&o2),
            String::from_utf8_lossy(&o.stdout)
        )
        .into());
    }
    let a = std::fs::read(&first).map_err(|e| e.to_string())?;
    let b = std::fs::read(&second).map_err(|e| e.to_string())?;
    if a != b {
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return Err(format!(
            "re-assembled library differs at byte {at} ({} vs {} bytes)\n--- text ---\n{}",
            a.len(),
            b.len(),
            String::from_utf8_lossy(&o.stdout)
        )
        .into());
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "lib") {
                collect(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "kasm") {
            out.push(p);
        }
    }
}

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect(&root.join("jit-tests"), &mut files);
    let mut trials = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(root.join("jit-tests"))
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let src = std::fs::read_to_string(&path).unwrap_or_default();
        let directives = parse_directives(&path, &src);
        for &(mode, mode_env) in MODES {
            let base = mode.strip_suffix("-gcstress");
            if let Ok(d) = &directives {
                if d.only_mode
                    .as_deref()
                    .is_some_and(|m| m != mode && Some(m) != base)
                {
                    continue;
                }
                if d.no_gcstress && base.is_some() {
                    continue;
                }
            }
            let (p, r) = (path.clone(), rel.clone());
            let pending = directives.as_ref().is_ok_and(|d| !d.requires.is_empty());
            trials.push(
                Trial::test(format!("{mode}::{rel}"), move || {
                    run_case(&p, &r, mode, mode_env)
                })
                .with_ignored_flag(pending),
            );
        }
        if directives.as_ref().map(|d| d.roundtrip).unwrap_or(true) {
            let (p, r) = (path.clone(), rel.clone());
            trials.push(Trial::test(format!("roundtrip::{rel}"), move || {
                run_roundtrip(&p, &r)
            }));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let _ = std::fs::remove_dir_all(scratch_dir());
    conclusion.exit();
}
