//! The engine: the one module that names both tiers. It builds a
//! [`Runtime`] whose methods start in the interpreter ([`tiers`]), installs
//! the Cranelift tier in JIT mode ([`install_jit`]), and runs a program file
//! the way `kiln run` does ([`run_file`]).
//!
//! Invariant: `interp` and `jit` import nothing from each other; what one
//! tier needs of the other (the interpreter entry the JIT falls back to)
//! reaches it through [`Tiers`], which only this module fills in.

use crate::library::program::{MemberId, Program};
use crate::library::TypeSig;
use crate::runtime::{ExecMode, HostNativeFn, LoadError, Options, Runtime, Tiers};
use crate::verify::Verified;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The tier entry points every runtime is built with.
pub fn tiers() -> Tiers {
    Tiers {
        interp_entry: crate::interp::interp_entry,
    }
}

/// A runtime for a verified program, every method starting in the
/// interpreter (call [`install_jit`] for JIT mode).
pub fn new_runtime(
    program: Program,
    files: Vec<String>,
    verified: &Verified,
    opts: Options,
) -> Result<Runtime, Vec<LoadError>> {
    Runtime::new(program, files, verified, opts, HashMap::new(), tiers())
}

/// [`new_runtime`], also binding the host's natives by `(class, method)`.
pub fn new_runtime_with_host_natives(
    program: Program,
    files: Vec<String>,
    verified: &Verified,
    opts: Options,
    host: HashMap<(String, String), HostNativeFn>,
) -> Result<Runtime, Vec<LoadError>> {
    Runtime::new(program, files, verified, opts, host, tiers())
}

/// JIT mode for `rt`: every bytecode method's slot gets the compile stub
/// (before any cctor runs). `Err` (nothing changed) if Cranelift has no
/// backend for this host.
pub fn install_jit(rt: &Runtime, verified: Verified) -> Result<(), crate::jit::JitError> {
    crate::jit::install(rt, verified)
}

#[allow(clippy::result_large_err)]
/// Find the entry point: exactly one class of the program defines a static
/// `main` (the main file's library is searched first).
fn find_main(program: &Program, files: &[String]) -> Result<MemberId, LoadError> {
    let last = program.libs.len().saturating_sub(1);
    let file = files.get(last).cloned().unwrap_or_default();
    let mut found = Vec::new();
    for id in program.all_classes() {
        if id.lib as usize != last {
            continue;
        }
        for (i, m) in program.def(id).methods.iter().enumerate() {
            if m.name == "main" && m.flags.is_static {
                found.push(MemberId {
                    class: id,
                    index: i as u32,
                });
            }
        }
    }
    match found.len() {
        0 => Err(LoadError::NoMain { file }),
        1 => {
            let m = program.method(found[0]);
            let ok_params = m.params.is_empty()
                || (m.params.len() == 1
                    && m.params[0].ty
                        == TypeSig::Array(Box::new(TypeSig::class(crate::library::STRING))));
            let ok_ret = matches!(m.ret, None | Some(TypeSig::Prim(crate::library::Prim::I32)));
            if ok_params && ok_ret && m.has_body() {
                Ok(found[0])
            } else {
                Err(LoadError::BadMain {
                    file,
                    line: m.line,
                    class: program.def(found[0].class).name.clone(),
                })
            }
        }
        _ => Err(LoadError::MultipleMain {
            file,
            classes: found
                .iter()
                .map(|m| program.def(m.class).name.clone())
                .collect(),
        }),
    }
}

fn print_errors(errs: &[LoadError]) {
    let mut s = String::new();
    for e in errs {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    let _ = std::io::stderr().write_all(s.as_bytes());
}

/// Load, verify and run a program (see the module docs). Returns the exit
/// code: 3 if it does not load or verify (nothing ran), 1 after an uncaught
/// exception, else `main`'s result `& 0xFF`.
pub fn run_file(path: &Path, args: &[String], opts: &Options) -> i32 {
    let (program, files, verified) = match crate::runtime::load::load_verified(path) {
        Ok(x) => x,
        Err(e) => {
            print_errors(&e);
            return 3;
        }
    };
    let main = match find_main(&program, &files) {
        Ok(m) => m,
        Err(e) => {
            print_errors(&[e]);
            return 3;
        }
    };
    let rt = match new_runtime(program, files, &verified, opts.clone()) {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            print_errors(&e);
            return 3;
        }
    };
    // JIT hook: in `ExecMode::Jit` every bytecode method's slot gets the
    // compile stub (before any cctor runs); without a Cranelift backend for
    // this host, everything stays in the interpreter.
    if opts.mode == ExecMode::Jit {
        if let Err(e) = install_jit(&rt, verified) {
            eprintln!("kiln: no JIT for this host ({e}); running in the interpreter");
        }
    }
    rt.set_shared();
    let rt2 = Arc::clone(&rt);
    let args = args.to_vec();
    // The deadline counts from here; the watchdog is cancelled when main ends.
    let watchdog = match opts.deadline {
        Some(d) => match crate::runtime::interrupt::Watchdog::start(rt.interrupt_handle(), d) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("kiln: cannot start the deadline watchdog: {e}");
                return 2;
            }
        },
        None => None,
    };
    let res = std::thread::Builder::new()
        .name("kiln-main".into())
        .stack_size(opts.stack_size)
        .spawn(move || {
            let code = rt2.run_main(main, &args);
            rt2.flush_stdout();
            code
        })
        .map(|h| h.join());
    let code = match res {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => {
            eprintln!("kiln: internal error: the main thread panicked");
            101
        }
        Err(e) => {
            eprintln!("kiln: cannot start the main thread: {e}");
            2
        }
    };
    drop(watchdog);
    rt.flush_stdout();
    // Threads still running keep their own Arc; the process exits anyway.
    code
}
