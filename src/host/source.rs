//! [`Source`]: the libraries a [`Vm`](super::Vm) or [`Metadata`](super::Metadata)
//! loads, and the host's loader: it reads every source, adds `std`,
//! resolves `.import`s among the given libraries first and then on disk
//! (the importing file's directory, then each `KILN_PATH` directory), and
//! orders the libraries `std` first and imports before importers.
//!
//! Invariants: nothing here executes code; import resolution terminates
//! (each library is loaded once; cycles are errors naming the cycle).

use super::Error;
use crate::format;
use crate::library::program::Program;
use crate::library::Library;
use crate::runtime::load::{read_library, std_library};
use crate::runtime::LoadError;
use std::path::{Path, PathBuf};

/// One library to load.
#[derive(Clone, Debug)]
pub enum Source {
    /// A `.klib` or `.kasm` file (recognised by the `.klib` magic).
    File(PathBuf),
    /// `.klib` bytes; `name` labels errors.
    Klib {
        /// Label for error messages.
        name: String,
        /// The library bytes.
        bytes: Vec<u8>,
    },
    /// kasm text; `name` labels errors (`name:line:column`).
    Kasm {
        /// Label for error messages.
        name: String,
        /// The assembly text.
        text: String,
    },
}

impl Source {
    /// A file source.
    pub fn file(path: impl Into<PathBuf>) -> Source {
        Source::File(path.into())
    }

    /// `.klib` bytes, labelled `name` in errors.
    pub fn klib(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Source {
        Source::Klib {
            name: name.into(),
            bytes: bytes.into(),
        }
    }

    /// kasm text, labelled `name` in errors.
    pub fn kasm(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source::Kasm {
            name: name.into(),
            text: text.into(),
        }
    }

    fn label(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Klib { name, .. } | Source::Kasm { name, .. } => name.clone(),
        }
    }

    /// Reads the library. Files, `.klib` bytes and kasm text longer than
    /// [`format::MAX_LIBRARY_SIZE`] are refused before they are parsed.
    fn read(&self) -> Result<(Library, String, Option<PathBuf>), Vec<LoadError>> {
        match self {
            Source::File(p) => Ok((read_library(p)?, p.display().to_string(), Some(p.clone()))),
            Source::Klib { name, bytes } => format::read(bytes)
                .map(|l| (l, name.clone(), None))
                .map_err(|error| {
                    vec![LoadError::Format {
                        file: name.clone(),
                        error,
                    }]
                }),
            // The cap on library files applies to kasm text given directly too.
            Source::Kasm { text, .. } if text.len() > format::MAX_LIBRARY_SIZE => {
                Err(vec![LoadError::Format {
                    file: self.label(),
                    error: format::FormatError::TooLarge {
                        offset: format::MAX_LIBRARY_SIZE,
                        size: text.len() as u64,
                        limit: format::MAX_LIBRARY_SIZE,
                    },
                }])
            }
            Source::Kasm { name, text } => crate::asm::assemble(text, name)
                .map(|l| (l, name.clone(), None))
                .map_err(|es| es.into_iter().map(LoadError::Asm).collect()),
        }
    }
}

struct Entry {
    lib: Library,
    file: String,
    path: Option<PathBuf>,
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

/// Read the sources and everything they import; returns the program (not
/// verified) and the file label of each library.
pub(crate) fn load_program(sources: &[Source]) -> Result<(Program, Vec<String>), Error> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut errors = Vec::new();
    for s in sources {
        match s.read() {
            Ok((lib, file, path)) => entries.push(Entry { lib, file, path }),
            Err(es) => errors.extend(es),
        }
    }
    if !errors.is_empty() {
        return Err(Error::from_load(errors));
    }
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
                Ok(l) => entries.push(Entry {
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
        return Err(Error::from_load(errors));
    }
    // Order: imports before importers (depth-first post-order), cycles reported.
    let mut order: Vec<usize> = Vec::new();
    let mut state = vec![0u8; entries.len()]; // 0 new, 1 on stack, 2 done
    fn visit(
        i: usize,
        entries: &[Entry],
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
        return Err(Error::from_load(errors));
    }
    let mut libs = vec![std_library().map_err(Error::from_load)?];
    let mut files = vec!["std".to_string()];
    let mut slots: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
    for i in order {
        if let Some(e) = slots[i].take() {
            libs.push(e.lib);
            files.push(e.file);
        }
    }
    let program = crate::runtime::load::link_program(libs, &files).map_err(Error::Link)?;
    Ok((program, files))
}
