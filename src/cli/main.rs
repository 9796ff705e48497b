//! The `kiln` command: `run`, `asm`, `dis`, `inspect`.
//!
//! Exit codes (kasm.md "Running"): a program's own code from `main`; 1 for an
//! uncaught exception; 3 when the input does not assemble, load or verify
//! (nothing runs); 2 for usage errors and bad `KILN_*` settings.

use clap::{Parser, Subcommand};
use kiln::library::Library;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: a JIT-compiling bytecode runtime"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a program (`.kasm` text or `.klib` library); ARGS go to `main(args: string[])`.
    Run {
        /// Print the CLIF and the machine code of METHOD (`Class::method`) on
        /// stderr when it is compiled (JIT mode; it is compiled at load).
        #[arg(long, value_name = "METHOD")]
        dump_clif: Option<String>,
        /// The program.
        file: PathBuf,
        /// Arguments for the program: every word after FILE, even one that
        /// looks like an option (`split_program_args` hands them over).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Assemble kasm text into a `.klib` library.
    Asm {
        /// The kasm source.
        file: PathBuf,
        /// Output file (default: FILE with extension `.klib`).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Disassemble a library (or kasm file) to kasm text on standard output.
    Dis {
        /// The library.
        file: PathBuf,
    },
    /// Print a library's metadata tables (a reflection-only load: no code is verified or run).
    Inspect {
        /// The library.
        file: PathBuf,
    },
}

/// Read a library without verifying it: `.klib` bytes or kasm text.
fn read_library(path: &Path) -> Result<Library, String> {
    let bytes = kiln::format::read_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.starts_with(&kiln::format::MAGIC) {
        kiln::format::read(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        let text = String::from_utf8(bytes).map_err(|e| {
            format!(
                "{}: not a .klib library and not UTF-8 text (byte {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        kiln::asm::assemble(&text, &path.display().to_string()).map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }
}

fn fail(msg: &str, code: u8) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(code)
}

/// Split `kiln run [OPTIONS] FILE ARGS...` at FILE: what comes after it
/// belongs to the program (kasm.md: `main` receives ARGS), even words that
/// look like `kiln`'s own options (`--help`, `--`, `--dump-clif`), so only
/// the part up to FILE goes to the option parser. Other command lines are
/// returned whole.
fn split_program_args(argv: Vec<OsString>) -> (Vec<OsString>, Vec<OsString>) {
    if argv.get(1).map(|a| a.as_os_str()) != Some(OsStr::new("run")) {
        return (argv, Vec::new());
    }
    let mut i = 2;
    while i < argv.len() {
        let a = argv[i].as_os_str();
        if a == "--" {
            // the next word is FILE, whatever it looks like
            i += 1;
            break;
        }
        if a == "--dump-clif" {
            i += 2; // the option and its METHOD
            continue;
        }
        if a.as_encoded_bytes().starts_with(b"-") && a.len() > 1 {
            i += 1; // another option: clap accepts or rejects it
            continue;
        }
        break;
    }
    if i >= argv.len() {
        return (argv, Vec::new());
    }
    let mut parsed = argv;
    let program = parsed.split_off(i + 1);
    (parsed, program)
}

fn main() -> ExitCode {
    let (argv, program_args) = split_program_args(std::env::args_os().collect());
    let cli = Cli::parse_from(argv);
    match cli.cmd {
        Cmd::Run {
            file,
            args: _,
            dump_clif,
        } => {
            let mut args = Vec::with_capacity(program_args.len());
            for (i, a) in program_args.into_iter().enumerate() {
                match a.into_string() {
                    Ok(s) => args.push(s),
                    Err(a) => {
                        return fail(
                            &format!(
                                "kiln: program argument {} is not valid UTF-8: {}",
                                i + 1,
                                a.to_string_lossy()
                            ),
                            2,
                        )
                    }
                }
            }
            // JIT hook: `--dump-clif`.
            if let Some(m) = &dump_clif {
                kiln::jit::set_dump_clif(m);
            }
            let opts = match kiln::runtime::Options::from_env() {
                Ok(o) => o,
                Err(msg) => return fail(&format!("kiln: {msg}"), 2),
            };
            if dump_clif.is_some() && opts.mode != kiln::runtime::ExecMode::Jit {
                eprintln!("kiln: --dump-clif has no effect with KILN_JIT=0 (nothing is compiled)");
            }
            let code = kiln::engine::run_file(&file, &args, &opts);
            ExitCode::from((code & 0xFF) as u8)
        }
        Cmd::Asm { file, output } => {
            let out = output.unwrap_or_else(|| file.with_extension("klib"));
            let text = match kiln::format::read_file(&file).and_then(|b| {
                String::from_utf8(b).map_err(|e| {
                    kiln::format::ReadFileError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
                    ))
                })
            }) {
                Ok(t) => t,
                Err(e) => return fail(&format!("{}: {e}", file.display()), 3),
            };
            match kiln::asm::assemble(&text, &file.display().to_string()) {
                Ok(lib) => match std::fs::write(&out, kiln::format::write(&lib)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&format!("{}: cannot write: {e}", out.display()), 2),
                },
                Err(errs) => {
                    for e in errs {
                        eprintln!("{e}");
                    }
                    ExitCode::from(3)
                }
            }
        }
        Cmd::Dis { file } => match read_library(&file) {
            Ok(lib) => {
                print!("{}", kiln::asm::disassemble(&lib));
                ExitCode::SUCCESS
            }
            Err(msg) => fail(&msg, 3),
        },
        Cmd::Inspect { file } => match read_library(&file) {
            Ok(lib) => {
                print!("{}", kiln::format::inspect(&lib));
                ExitCode::SUCCESS
            }
            Err(msg) => fail(&msg, 3),
        },
    }
}
