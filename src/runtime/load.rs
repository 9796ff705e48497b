//! The one loader, shared by `kiln run` ([`load_verified`]) and the host
//! API (`host::Source`, through [`load_libraries`]): reads a library file
//! (`.klib` bytes, recognised by their magic, or kasm text), assembles `std`
//! from the embedded `std.kasm`, resolves `.import`s (among the given
//! libraries, then the importer's directory, then each `KILN_PATH`
//! directory), orders libraries `std` first and imports before importers,
//! indexes them as a [`Program`] and (for the CLI) verifies it.
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

/// A library given to the loader (not found through an `.import`).
pub struct Root {
    /// The library.
    pub lib: Library,
    /// Its file label in errors and traces.
    pub file: String,
    /// Where it was read from: its imports are searched beside it first.
    pub path: Option<PathBuf>,
}

fn search_dirs(importer: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(p) = importer {
        dirs.push(
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        );
    }
    if let Ok(p) = std::env::var("KILN_PATH") {
        dirs.extend(p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    dirs
}

/// The one loader (the CLI's and the host's): the given libraries, then
/// their `.import`s, resolved among the given libraries first and then on
/// disk (breadth first; the importing file's directory, then each
/// `KILN_PATH` directory, `.klib` before `.kasm`); ordered `std` first, then
/// imports before importers (depth-first post-order from the roots in
/// order), so class constructors run dependencies first; linked into one
/// [`Program`] (not verified). `files[i]` labels `program.libs[i]`.
/// Terminates on any input: each library name is loaded once, and a cycle
/// is an [`LoadError::ImportCycle`] naming it. All errors of a phase are
/// returned.
pub fn load_libraries(roots: Vec<Root>) -> Result<(Program, Vec<String>), Vec<LoadError>> {
    let mut entries = roots;
    let mut errors = Vec::new();
    // Resolve imports not among the given libraries from disk (breadth first).
    let mut i = 0;
    while i < entries.len() {
        let imports = entries[i].lib.imports.clone();
        for imp in imports {
            let (name, line) = (imp.name, imp.line);
            if name == "std" || entries.iter().any(|e| e.lib.name == name) {
                continue;
            }
            let dirs = search_dirs(entries[i].path.as_deref());
            let found = dirs.iter().find_map(|d| {
                ["klib", "kasm"]
                    .iter()
                    .map(|ext| d.join(format!("{name}.{ext}")))
                    .find(|p| p.is_file())
            });
            let Some(found) = found else {
                errors.push(LoadError::ImportNotFound {
                    file: entries[i].file.clone(),
                    line,
                    name: name.clone(),
                    searched: dirs.iter().map(|d| d.display().to_string()).collect(),
                });
                continue;
            };
            match read_library(&found) {
                Ok(l) if l.name != name => errors.push(LoadError::ImportNameMismatch {
                    file: entries[i].file.clone(),
                    line,
                    expected: name.clone(),
                    path: found.display().to_string(),
                    found: l.name,
                }),
                Ok(l) => entries.push(Root {
                    lib: l,
                    file: found.display().to_string(),
                    path: Some(found),
                }),
                Err(es) => errors.extend(es),
            }
        }
        i += 1;
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Order: imports before importers (depth-first post-order), cycles reported.
    let mut order: Vec<usize> = Vec::new();
    let mut state = vec![0u8; entries.len()]; // 0 new, 1 on stack, 2 done
    fn visit(
        i: usize,
        entries: &[Root],
        state: &mut [u8],
        stack: &mut Vec<usize>,
        order: &mut Vec<usize>,
        errors: &mut Vec<LoadError>,
    ) {
        if state[i] == 2 {
            return;
        }
        if state[i] == 1 {
            let pos = stack.iter().position(|&s| s == i).unwrap_or(0);
            let mut cycle: Vec<String> = stack[pos..]
                .iter()
                .map(|&s| entries[s].lib.name.clone())
                .collect();
            cycle.push(entries[i].lib.name.clone());
            let last = &entries[*stack.last().unwrap_or(&i)];
            let line = last
                .lib
                .imports
                .iter()
                .find(|m| m.name == entries[i].lib.name)
                .map_or(0, |m| m.line);
            errors.push(LoadError::ImportCycle {
                file: last.file.clone(),
                line,
                cycle,
            });
            return;
        }
        state[i] = 1;
        stack.push(i);
        for imp in &entries[i].lib.imports {
            if let Some(j) = entries.iter().position(|e| e.lib.name == imp.name) {
                visit(j, entries, state, stack, order, errors);
            }
        }
        stack.pop();
        state[i] = 2;
        order.push(i);
    }
    for i in 0..entries.len() {
        visit(
            i,
            &entries,
            &mut state,
            &mut Vec::new(),
            &mut order,
            &mut errors,
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut libs = vec![std_library()?];
    let mut files = vec!["std".to_string()];
    let mut slots: Vec<Option<Root>> = entries.into_iter().map(Some).collect();
    for i in order {
        if let Some(e) = slots[i].take() {
            libs.push(e.lib);
            files.push(e.file);
        }
    }
    let program = link_program(libs, &files)?;
    Ok((program, files))
}

/// Load, resolve and verify; also returns the verifier's output.
pub fn load_verified(path: &Path) -> Result<(Program, Vec<String>, Verified), Vec<LoadError>> {
    let main = read_library(path)?;
    let (program, files) = load_libraries(vec![Root {
        lib: main,
        file: path.display().to_string(),
        path: Some(path.to_path_buf()),
    }])?;
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
