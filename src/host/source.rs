//! [`Source`]: the libraries a [`Vm`](super::Vm) or [`Metadata`](super::Metadata)
//! loads. Reading a source is here; resolving its imports, ordering and
//! linking is the runtime's one loader (`runtime::load`), which `kiln run`
//! uses too.
//!
//! Invariant: nothing here executes code.

use super::Error;
use crate::format;
use crate::library::program::Program;
use crate::library::Library;
use crate::runtime::load::{load_libraries, read_library, Root};
use crate::runtime::LoadError;
use std::path::PathBuf;

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

/// Read the sources and everything they import (the runtime's one loader,
/// [`crate::runtime::load::load_libraries`]); returns the program (not
/// verified) and the file label of each library.
pub(crate) fn load_program(sources: &[Source]) -> Result<(Program, Vec<String>), Error> {
    let mut roots = Vec::new();
    let mut errors = Vec::new();
    for s in sources {
        match s.read() {
            Ok((lib, file, path)) => roots.push(Root { lib, file, path }),
            Err(es) => errors.extend(es),
        }
    }
    if !errors.is_empty() {
        return Err(Error::from_load(errors));
    }
    load_libraries(roots).map_err(Error::from_load)
}
