//! The loader: reads the main file (`.klib` bytes, recognised by their magic,
//! or kasm text), assembles `std` from the embedded `std.kasm`, resolves
//! `.import`s recursively (the importer's directory, then each `KILN_PATH`
//! directory), orders libraries `std` first and imports before importers,
//! indexes them as a [`Program`] and verifies it.
//!
//! Invariants: every error carries the file it concerns (and the line where
//! one is known); nothing is executed here; import resolution terminates
//! (cycles are reported, each library is loaded once).

use crate::asm::{self, AsmError};
use crate::format::{self, FormatError};
use crate::library::program::Program;
use crate::library::Library;
use crate::verify::{self, Verified, VerifyError};
use std::fmt;
use std::path::{Path, PathBuf};

/// The embedded standard library source.
pub const STD_SOURCE: &str = include_str!("std.kasm");

/// Why a program could not be loaded.
#[derive(Clone, Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io {
        /// The file.
        file: String,
        /// The OS error.
        error: String,
    },
    /// A `.klib` file is malformed.
    Format {
        /// The file.
        file: String,
        /// The reader's error (with byte offset).
        error: FormatError,
    },
    /// A kasm file does not assemble.
    Asm(AsmError),
    /// An imported library was not found.
    ImportNotFound {
        /// The importing file.
        file: String,
        /// Line of its `.import`.
        line: u32,
        /// The imported name.
        name: String,
        /// Directories searched.
        searched: Vec<String>,
    },
    /// A found library's `.library` name is not the imported name.
    ImportNameMismatch {
        /// The importing file.
        file: String,
        /// Line of its `.import`.
        line: u32,
        /// The imported name.
        expected: String,
        /// The file found for it.
        path: String,
        /// That file's `.library` name.
        found: String,
    },
    /// Libraries import each other in a cycle.
    ImportCycle {
        /// The file closing the cycle.
        file: String,
        /// Line of its `.import` that closes it.
        line: u32,
        /// The library names along the cycle.
        cycle: Vec<String>,
    },
    /// Two libraries define the same class.
    DuplicateClass {
        /// File of the second definition.
        file: String,
        /// Its line.
        line: u32,
        /// The class.
        name: String,
        /// Library of the first definition.
        first: String,
    },
    /// A verification error.
    Verify(VerifyError),
    /// A native method no table binds.
    UnboundNative {
        /// The file.
        file: String,
        /// Declaration line.
        line: u32,
        /// Class.
        class: String,
        /// Method.
        method: String,
    },
    /// No static `main`.
    NoMain {
        /// The main file.
        file: String,
    },
    /// More than one class defines a static `main`.
    MultipleMain {
        /// The main file.
        file: String,
        /// The classes.
        classes: Vec<String>,
    },
    /// `main` has an unsupported signature.
    BadMain {
        /// The file.
        file: String,
        /// Declaration line.
        line: u32,
        /// Its class.
        class: String,
    },
    /// The std library lacks a member the runtime needs (a broken std).
    StdMissing {
        /// The member (`Exception::message`, `Runnable`, ...).
        name: String,
    },
    /// A class the tables need does not exist (the verifier should have
    /// rejected the program).
    MissingClass {
        /// The class name.
        class: String,
    },
    /// A verified method could not be resolved for execution.
    Resolve(super::resolve::ResolveError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { file, error } => write!(f, "{file}: cannot read: {error}"),
            LoadError::Format { file, error } => write!(f, "{file}: {error}"),
            LoadError::Asm(e) => write!(f, "{e}"),
            LoadError::ImportNotFound { file, line, name, searched } => write!(
                f,
                "{file}:{line}: import {name}: no {name}.klib or {name}.kasm in {}",
                if searched.is_empty() { "any directory".to_string() } else { searched.join(", ") }
            ),
            LoadError::ImportNameMismatch { file, line, expected, path, found } => {
                write!(f, "{file}:{line}: import {expected}: {path} is library {found}, not {expected}")
            }
            LoadError::ImportCycle { file, line, cycle } => {
                write!(f, "{file}:{line}: import cycle: {}", cycle.join(" -> "))
            }
            LoadError::DuplicateClass { file, line, name, first } => {
                write!(f, "{file}:{line}: class {name} is already defined by library {first}")
            }
            LoadError::Verify(e) => write!(f, "{e}"),
            LoadError::UnboundNative { file, line, class, method } => {
                write!(f, "{file}:{line}: native method {class}::{method} is not bound by the runtime")
            }
            LoadError::NoMain { file } => write!(f, "{file}:1: no class defines a static main method"),
            LoadError::MultipleMain { file, classes } => {
                write!(f, "{file}:1: several classes define a static main: {}", classes.join(", "))
            }
            LoadError::BadMain { file, line, class } => write!(
                f,
                "{file}:{line}: {class}::main must be `main() -> void|i32` or `main(args: string[]) -> void|i32`"
            ),
            LoadError::StdMissing { name } => write!(f, "std: {name} is missing"),
            LoadError::MissingClass { class } => write!(f, "missing class {class}"),
            LoadError::Resolve(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Read one library file: `.klib` if it starts with the magic, else kasm.
pub fn read_library(path: &Path) -> Result<Library, Vec<LoadError>> {
    let file = path.display().to_string();
    let bytes = format::read_file(path).map_err(|e| {
        vec![match e {
            format::ReadFileError::Io(e) => LoadError::Io {
                file: file.clone(),
                error: e.to_string(),
            },
            format::ReadFileError::TooLarge(error) => LoadError::Format {
                file: file.clone(),
                error,
            },
        }]
    })?;
    if bytes.starts_with(&format::MAGIC) || path.extension().is_some_and(|e| e == "klib") {
        return format::read(&bytes).map_err(|error| vec![LoadError::Format { file, error }]);
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        vec![LoadError::Io {
            file: file.clone(),
            error: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        }]
    })?;
    asm::assemble(&text, &file).map_err(|es| es.into_iter().map(LoadError::Asm).collect())
}

/// The standard library.
pub fn std_library() -> Result<Library, Vec<LoadError>> {
    asm::assemble(STD_SOURCE, "std").map_err(|es| es.into_iter().map(LoadError::Asm).collect())
}

fn search_dirs(importer: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![importer
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))];
    if let Ok(p) = std::env::var("KILN_PATH") {
        dirs.extend(p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    dirs
}

struct Loader {
    libs: Vec<Library>,
    files: Vec<String>,
    stack: Vec<String>,
    errors: Vec<LoadError>,
}

impl Loader {
    /// Load the imports of `lib` (read from `path`) depth first, then `lib`.
    fn add(&mut self, lib: Library, path: &Path) {
        let file = path.display().to_string();
        self.stack.push(lib.name.clone());
        for imp in lib.imports.clone() {
            let (name, line) = (imp.name, imp.line);
            if name == "std" || self.libs.iter().any(|l| l.name == name) {
                continue;
            }
            if let Some(pos) = self.stack.iter().position(|n| *n == name) {
                let mut cycle = self.stack[pos..].to_vec();
                cycle.push(name.clone());
                self.errors.push(LoadError::ImportCycle {
                    file: file.clone(),
                    line,
                    cycle,
                });
                continue;
            }
            let dirs = search_dirs(path);
            let found = dirs.iter().find_map(|d| {
                ["klib", "kasm"]
                    .iter()
                    .map(|ext| d.join(format!("{name}.{ext}")))
                    .find(|p| p.is_file())
            });
            let Some(found) = found else {
                self.errors.push(LoadError::ImportNotFound {
                    file: file.clone(),
                    line,
                    name: name.clone(),
                    searched: dirs.iter().map(|d| d.display().to_string()).collect(),
                });
                continue;
            };
            match read_library(&found) {
                Ok(l) if l.name != name => self.errors.push(LoadError::ImportNameMismatch {
                    file: file.clone(),
                    line,
                    expected: name.clone(),
                    path: found.display().to_string(),
                    found: l.name,
                }),
                Ok(l) => self.add(l, &found),
                Err(es) => self.errors.extend(es),
            }
        }
        self.stack.pop();
        self.libs.push(lib);
        self.files.push(file);
    }
}

/// Load, resolve and verify; also returns the verifier's output.
pub fn load_verified(path: &Path) -> Result<(Program, Vec<String>, Verified), Vec<LoadError>> {
    let std = std_library()?;
    let main = read_library(path)?;
    let mut l = Loader {
        libs: vec![std],
        files: vec!["std".into()],
        stack: Vec::new(),
        errors: Vec::new(),
    };
    l.add(main, path);
    if !l.errors.is_empty() {
        return Err(l.errors);
    }
    let Loader { libs, files, .. } = l;
    let program = link_program(libs, &files)?;
    let verified = verify::verify_program(&program, &files)
        .map_err(|es| es.into_iter().map(LoadError::Verify).collect::<Vec<_>>())?;
    Ok((program, files, verified))
}

/// Link libraries (`files[i]` names the file of `libs[i]`) into a
/// [`Program`]; a class defined twice is a [`LoadError::DuplicateClass`]
/// naming the file of the second definition. Shared by the CLI loader and the
/// host API.
pub(crate) fn link_program(
    libs: Vec<Library>,
    files: &[String],
) -> Result<Program, Vec<LoadError>> {
    let names: Vec<(String, String)> = libs
        .iter()
        .map(|l| l.name.clone())
        .zip(files.iter().cloned())
        .collect();
    Program::new(libs).map_err(|dups| {
        dups.into_iter()
            .map(|d| LoadError::DuplicateClass {
                file: names
                    .iter()
                    .find(|(n, _)| *n == d.second)
                    .map(|(_, f)| f.clone())
                    .unwrap_or_default(),
                line: d.line,
                name: d.name,
                first: d.first,
            })
            .collect()
    })
}

#[allow(clippy::result_large_err)] // signature fixed by the module interface
/// Load `path` with `std` and its imports, verified (see the module docs).
/// `files[i]` names the file of `program.libs[i]`. Only the first error is
/// returned; [`load_verified`] returns all of them.
pub fn load_program(path: &Path) -> Result<(Program, Vec<String>), LoadError> {
    load_verified(path)
        .map(|(p, f, _)| (p, f))
        .map_err(|mut es| es.swap_remove(0))
}
