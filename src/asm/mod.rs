//! The kasm assembler ([`assemble`]) and disassembler ([`disassemble`]).
//!
//! kasm (see `shared/spec/kasm.md`) is assembled by a hand-written lexer
//! (`lexer`) and a token-driven parser (`parser`): newlines carry no meaning,
//! each instruction knows from [`crate::bytecode::Op::operand_kind`] how many
//! operand tokens follow. Every error is collected with its file, line and
//! column; the parser resynchronises (next line, next member, next class) and
//! keeps going, so one run reports all errors. No input makes it panic.
//!
//! Invariants of an assembled [`Library`](crate::library::Library):
//! - `strings`, `type_refs` and `member_refs` are deduplicated and in order of
//!   first use in the source (instructions and `catch` clauses, in text order);
//! - every method has a `LineEntry` for its first instruction and for every
//!   instruction whose line differs from the previous entry's;
//! - handlers are recorded innermost first: a `.try` construct's clauses are
//!   appended together when the construct ends (so every construct nested in
//!   it comes earlier); a `finally` after catches covers the try block and the
//!   catch blocks; a construct always contains at least one instruction;
//! - a class (not an interface) without a `ctor` gets a real public
//!   `ctor() { ret }` appended to its methods, at the class's line;
//! - `private mutable(self)` is stored as `private mutable` (the field-flag
//!   encoding cannot tell them apart).
//!
//! The disassembler prints any library that the assembler produced so that it
//! assembles back to an equal library (and so identical `.klib` bytes); it
//! uses the `.line N` extension directive (the next line is line `N`) to
//! reproduce every recorded line, and `nan(0x...)` for NaNs other than the
//! canonical `nan` / `-nan`. Malformed libraries (e.g. read from hostile bytes)
//! are printed as faithfully as kasm allows, with `; error:` comments where it
//! cannot express them.

mod disasm;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

pub use disasm::disassemble;
pub use parser::assemble;

use std::fmt;

/// One assembly error, with its position in the source.
#[derive(Clone, Debug, PartialEq)]
pub struct AsmError {
    /// File name as given to [`assemble`].
    pub file: String,
    /// Line (1-based; after `.line` adjustments).
    pub line: u32,
    /// Column (1-based, in characters).
    pub col: u32,
    /// What is wrong.
    pub kind: AsmErrorKind,
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.kind)
    }
}

impl std::error::Error for AsmError {}

/// The kinds of assembly error.
#[derive(Clone, Debug, PartialEq)]
pub enum AsmErrorKind {
    /// A character that starts no token.
    UnexpectedChar(char),
    /// A string literal not closed on its line.
    UnterminatedString,
    /// A character literal not closed on its line.
    UnterminatedChar,
    /// An escape other than `\n \t \r \0 \\ \" \' \u{...}` (the text after the backslash).
    BadEscape(String),
    /// A character literal that is empty or holds several characters.
    BadCharLiteral(&'static str),
    /// A malformed number.
    BadNumber(String),
    /// An integer literal outside the range its use allows.
    IntOutOfRange {
        /// The literal as written.
        literal: String,
        /// What it is used for.
        what: String,
        /// Smallest accepted value.
        min: i128,
        /// Largest accepted value.
        max: i128,
    },
    /// A malformed float literal.
    BadFloat(String),
    /// A malformed `.line` directive.
    BadLineDirective(String),
    /// The parser expected something else.
    Expected {
        /// What would have been accepted.
        expected: String,
        /// What was found.
        found: String,
    },
    /// A token that makes no sense where it is.
    Unexpected {
        /// What was found.
        found: String,
        /// Where (e.g. "at top level").
        context: &'static str,
    },
    /// No `.library` directive at the start.
    MissingLibrary,
    /// `.library` after other directives.
    LibraryNotFirst,
    /// A second `.library`.
    DuplicateLibrary,
    /// An unknown `.directive`.
    UnknownDirective(String),
    /// A mnemonic that is not an instruction.
    UnknownInstruction(String),
    /// `atomic` of a type that cannot be atomic.
    BadAtomic(String),
    /// An array type nested too deeply.
    ArrayTooDeep,
    /// A name declared twice in one scope.
    Duplicate {
        /// Kind of name ("label", "local", "field", ...).
        what: &'static str,
        /// The name.
        name: String,
        /// Line of the first declaration.
        first_line: u32,
    },
    /// A branch to a label that is never defined.
    UndefinedLabel(String),
    /// `ldarg`/`starg` of a name that is not an argument.
    UnknownArg {
        /// The name used.
        name: String,
        /// The method.
        method: String,
    },
    /// `ldloc`/`stloc` of a name that is not a local.
    UnknownLocal {
        /// The name used.
        name: String,
        /// The method.
        method: String,
    },
    /// An argument or local index past the end.
    VarIndexOutOfRange {
        /// "argument" or "local".
        what: &'static str,
        /// The index used.
        index: i128,
        /// How many the method has.
        count: usize,
    },
    /// `this` in a static method.
    NoThis(String),
    /// `this` declared as a parameter.
    ReservedName(String),
    /// A modifier not allowed on this kind of declaration.
    BadModifier {
        /// The modifier.
        modifier: String,
        /// The declaration kind.
        on: &'static str,
    },
    /// The same modifier twice.
    DuplicateModifier(String),
    /// Two modifiers that exclude each other.
    ConflictingModifiers(String, String),
    /// A method without a body that is neither abstract nor native.
    MissingBody(String),
    /// A body on a method that must not have one.
    UnexpectedBody {
        /// The method.
        method: String,
        /// "abstract", "native" or "interface".
        why: &'static str,
    },
    /// A `{` that is never closed.
    Unclosed(&'static str),
    /// `.try` without `catch` or `finally`.
    TryWithoutHandler,
    /// A clause after `finally`.
    ClauseAfterFinally,
    /// A `.try` construct without any instruction in it.
    EmptyTry,
    /// `.attr` not followed by something it can apply to.
    DanglingAttr,
    /// Something exceeds a format limit.
    TooLarge(String),
}

impl fmt::Display for AsmErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use AsmErrorKind::*;
        match self {
            UnexpectedChar(c) => write!(f, "unexpected character {c:?}"),
            UnterminatedString => f.write_str("unterminated string literal"),
            UnterminatedChar => f.write_str("unterminated character literal"),
            BadEscape(s) => write!(
                f,
                "invalid escape sequence `\\{s}` (allowed: \\n \\t \\r \\0 \\\\ \\\" \\' \\u{{hex scalar value}})"
            ),
            BadCharLiteral(why) => write!(f, "invalid character literal: {why}"),
            BadNumber(t) => write!(f, "invalid number literal `{t}`"),
            IntOutOfRange { literal, what, min, max } => {
                write!(f, "integer literal {literal} out of range for {what} ({min}..={max})")
            }
            BadFloat(t) => write!(f, "invalid float literal {t}"),
            BadLineDirective(why) => write!(f, "malformed `.line` directive: {why}"),
            Expected { expected, found } => write!(f, "expected {expected}, found {found}"),
            Unexpected { found, context } => write!(f, "unexpected {found} {context}"),
            MissingLibrary => f.write_str("missing `.library` directive (it must come first)"),
            LibraryNotFirst => f.write_str("`.library` must be the first directive"),
            DuplicateLibrary => f.write_str("duplicate `.library` directive (exactly one is allowed)"),
            UnknownDirective(d) => write!(f, "unknown directive `.{d}`"),
            UnknownInstruction(m) => write!(f, "unknown instruction `{m}`"),
            BadAtomic(t) => {
                write!(f, "`atomic` applies only to bool, u8, i64 and u64, not to {t}")
            }
            ArrayTooDeep => f.write_str("array type nested more than 32 levels deep"),
            Duplicate { what, name, first_line } => {
                write!(f, "duplicate {what} `{name}` (first declared on line {first_line})")
            }
            UndefinedLabel(l) => write!(f, "undefined label `{l}`"),
            UnknownArg { name, method } => {
                write!(f, "method `{method}` has no argument named `{name}`")
            }
            UnknownLocal { name, method } => {
                write!(f, "method `{method}` has no local named `{name}`")
            }
            VarIndexOutOfRange { what, index, count } => {
                write!(f, "{what} index {index} out of range (the method has {count} {what}s)")
            }
            NoThis(m) => write!(f, "`this` used in static method `{m}`"),
            ReservedName(m) => {
                write!(f, "`this` cannot be declared as a parameter (in method `{m}`)")
            }
            BadModifier { modifier, on } => write!(f, "modifier `{modifier}` is not allowed on {on}"),
            DuplicateModifier(m) => write!(f, "duplicate modifier `{m}`"),
            ConflictingModifiers(a, b) => write!(f, "conflicting modifiers `{a}` and `{b}`"),
            MissingBody(m) => write!(
                f,
                "method `{m}` has no body (only abstract and native methods may omit it)"
            ),
            UnexpectedBody { method, why } => write!(f, "{why} method `{method}` cannot have a body"),
            Unclosed(what) => write!(f, "unterminated {what}: this `{{` is never closed"),
            TryWithoutHandler => {
                f.write_str("`.try` block needs at least one `catch` or `finally` clause")
            }
            ClauseAfterFinally => f.write_str("`finally` must be the last clause of a `.try`"),
            EmptyTry => f.write_str("`.try` construct contains no instructions"),
            DanglingAttr => {
                f.write_str("`.attr` must be followed by a class, an interface or a member")
            }
            TooLarge(what) => write!(f, "{what} is too large"),
        }
    }
}
