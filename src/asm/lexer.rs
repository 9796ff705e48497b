//! The kasm lexer: text to tokens, with every lexical error collected.
//!
//! Newlines are not tokens: the parser is token driven, and every token
//! carries its logical line (after `.line` adjustments), its physical line
//! (for error recovery) and its column (1-based, in characters).
//!
//! `.line N` is handled here and never reaches the parser: it says that the
//! next physical line is logical line `N` (like C's `#line`).

use super::{AsmError, AsmErrorKind};

/// Token kinds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// Identifier or mnemonic (`ldc.i32`, `conv.f32.un` keep their dots).
    Ident(String),
    /// `.name`.
    Directive(String),
    /// Integer literal; `value` is `None` when it does not fit in an `i128`.
    Int {
        value: Option<i128>,
        text: String,
        hex: bool,
    },
    /// Float literal (decimal with `.` or exponent, or `-inf` / `-nan`), as written.
    Float(String),
    /// String literal (escapes resolved).
    Str(String),
    /// Character literal (a Unicode scalar value).
    Char(u32),
    /// Text that is no token; the lexer has reported it.
    Bad,
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Colon,
    ColonColon,
    Arrow,
    Eq,
    Eof,
}

impl Tok {
    /// How the token is named in "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Directive(s) => format!("directive `.{s}`"),
            Tok::Int { text, .. } => format!("integer `{text}`"),
            Tok::Float(t) => format!("float `{t}`"),
            Tok::Str(_) => "string literal".to_string(),
            Tok::Char(_) => "character literal".to_string(),
            Tok::Bad => "invalid token".to_string(),
            Tok::LBrace => "`{`".to_string(),
            Tok::RBrace => "`}`".to_string(),
            Tok::LParen => "`(`".to_string(),
            Tok::RParen => "`)`".to_string(),
            Tok::LBracket => "`[`".to_string(),
            Tok::RBracket => "`]`".to_string(),
            Tok::Comma => "`,`".to_string(),
            Tok::Colon => "`:`".to_string(),
            Tok::ColonColon => "`::`".to_string(),
            Tok::Arrow => "`->`".to_string(),
            Tok::Eq => "`=`".to_string(),
            Tok::Eof => "end of file".to_string(),
        }
    }
}

/// A token with its position.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Logical line (what errors and line tables report).
    pub line: u32,
    /// Physical line in the text (used to resynchronise after errors).
    pub phys: u32,
    /// Column, 1-based, in characters.
    pub col: u32,
    /// Column just after the token's last character (on its last line).
    pub end: u32,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    phys: u32,
    col: u32,
    /// logical line = physical line + delta (set by `.line`).
    delta: i64,
    file: &'a str,
    toks: Vec<Token>,
    errors: &'a mut Vec<AsmError>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied()?;
        self.pos += 1;
        if c == '\n' {
            self.phys = self.phys.saturating_add(1);
            self.col = 1;
        } else {
            self.col = self.col.saturating_add(1);
        }
        Some(c)
    }

    fn logical(&self, phys: u32) -> u32 {
        (phys as i64 + self.delta).clamp(0, u32::MAX as i64) as u32
    }

    fn error_at(&mut self, phys: u32, col: u32, kind: AsmErrorKind) {
        let line = self.logical(phys);
        self.errors.push(AsmError {
            file: self.file.to_string(),
            line,
            col,
            kind,
        });
    }

    fn push(&mut self, tok: Tok, phys: u32, col: u32) {
        let line = self.logical(phys);
        let end = if self.phys == phys { self.col } else { col };
        self.toks.push(Token {
            tok,
            line,
            phys,
            col,
            end,
        });
    }

    fn skip_ident_chars(&mut self) {
        while self.peek().is_some_and(|c| is_ident_char(c) || c == '.') {
            self.bump();
        }
    }

    fn run(&mut self) {
        while let Some(c) = self.peek() {
            let (phys, col) = (self.phys, self.col);
            match c {
                '\n' | ' ' | '\t' | '\r' => {
                    self.bump();
                }
                ';' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                '{' | '}' | '(' | ')' | '[' | ']' | ',' | '=' => {
                    self.bump();
                    let t = match c {
                        '{' => Tok::LBrace,
                        '}' => Tok::RBrace,
                        '(' => Tok::LParen,
                        ')' => Tok::RParen,
                        '[' => Tok::LBracket,
                        ']' => Tok::RBracket,
                        ',' => Tok::Comma,
                        _ => Tok::Eq,
                    };
                    self.push(t, phys, col);
                }
                ':' => {
                    self.bump();
                    if self.peek() == Some(':') {
                        self.bump();
                        self.push(Tok::ColonColon, phys, col);
                    } else {
                        self.push(Tok::Colon, phys, col);
                    }
                }
                '-' => {
                    if self.peek_at(1) == Some('>') {
                        self.bump();
                        self.bump();
                        self.push(Tok::Arrow, phys, col);
                    } else if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) {
                        self.number(phys, col);
                    } else if self.special_float_follows(1) {
                        self.bump();
                        let word: String = (0..3).filter_map(|_| self.bump()).collect();
                        self.push(Tok::Float(format!("-{word}")), phys, col);
                    } else {
                        self.bump();
                        self.error_at(phys, col, AsmErrorKind::UnexpectedChar('-'));
                        self.push(Tok::Bad, phys, col);
                    }
                }
                '0'..='9' => self.number(phys, col),
                '"' => self.string(phys, col),
                '\'' => self.char_lit(phys, col),
                '.' => {
                    self.bump();
                    if self.peek().is_some_and(is_ident_start) {
                        let mut name = String::new();
                        while let Some(c) = self.peek().filter(|&c| is_ident_char(c)) {
                            name.push(c);
                            self.bump();
                        }
                        if name == "line" {
                            self.line_directive(phys, col);
                        } else {
                            self.push(Tok::Directive(name), phys, col);
                        }
                    } else {
                        self.error_at(phys, col, AsmErrorKind::UnexpectedChar('.'));
                        self.push(Tok::Bad, phys, col);
                    }
                }
                c if is_ident_start(c) => {
                    let mut s = String::new();
                    loop {
                        while let Some(c) = self.peek().filter(|&c| is_ident_char(c)) {
                            s.push(c);
                            self.bump();
                        }
                        if self.peek() == Some('.') && self.peek_at(1).is_some_and(is_ident_char) {
                            s.push('.');
                            self.bump();
                        } else {
                            break;
                        }
                    }
                    self.push(Tok::Ident(s), phys, col);
                }
                other => {
                    self.bump();
                    self.error_at(phys, col, AsmErrorKind::UnexpectedChar(other));
                    self.push(Tok::Bad, phys, col);
                }
            }
        }
        let (phys, col) = (self.phys, self.col);
        self.push(Tok::Eof, phys, col);
    }

    /// Is `inf` or `nan` (not followed by an identifier character) at `pos + n`?
    fn special_float_follows(&self, n: usize) -> bool {
        let w: String = (n..n + 3).filter_map(|i| self.peek_at(i)).collect();
        (w == "inf" || w == "nan") && !self.peek_at(n + 3).is_some_and(is_ident_char)
    }

    fn number(&mut self, phys: u32, col: u32) {
        let mut text = String::new();
        let neg = self.peek() == Some('-');
        if neg {
            text.push('-');
            self.bump();
        }
        let mut ok = true;
        if self.peek() == Some('0') && matches!(self.peek_at(1), Some('x' | 'X')) {
            text.push('0');
            self.bump();
            text.push('x');
            self.bump();
            let mut value: Option<i128> = Some(0);
            let mut digits = 0;
            while let Some(d) = self.peek().and_then(|c| c.to_digit(16)) {
                text.push(self.bump().unwrap_or('0'));
                digits += 1;
                value = value
                    .and_then(|v| v.checked_mul(16))
                    .and_then(|v| v.checked_add(d as i128));
            }
            if digits == 0 || self.peek().is_some_and(|c| is_ident_char(c) || c == '.') {
                ok = false;
            }
            if ok {
                let value = if neg { value.map(|v| -v) } else { value };
                self.push(
                    Tok::Int {
                        value,
                        text,
                        hex: true,
                    },
                    phys,
                    col,
                );
                return;
            }
        } else {
            let mut is_float = false;
            let mut value: Option<i128> = Some(0);
            while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
                text.push(self.bump().unwrap_or('0'));
                value = value
                    .and_then(|v| v.checked_mul(10))
                    .and_then(|v| v.checked_add(d as i128));
            }
            if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
                is_float = true;
                text.push('.');
                self.bump();
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    text.push(self.bump().unwrap_or('0'));
                }
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                let digit_at = if matches!(self.peek_at(1), Some('+' | '-')) {
                    2
                } else {
                    1
                };
                if self.peek_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                    is_float = true;
                    for _ in 0..digit_at {
                        text.push(self.bump().unwrap_or('e'));
                    }
                    while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        text.push(self.bump().unwrap_or('0'));
                    }
                }
            }
            if self.peek().is_some_and(|c| is_ident_char(c) || c == '.') {
                ok = false;
            }
            if ok {
                if is_float {
                    self.push(Tok::Float(text), phys, col);
                } else {
                    let value = if neg { value.map(|v| -v) } else { value };
                    self.push(
                        Tok::Int {
                            value,
                            text,
                            hex: false,
                        },
                        phys,
                        col,
                    );
                }
                return;
            }
        }
        // Malformed: swallow the rest of the word so that one error is reported.
        let start = self.pos;
        self.skip_ident_chars();
        text.extend(&self.chars[start..self.pos]);
        self.error_at(phys, col, AsmErrorKind::BadNumber(text));
        self.push(Tok::Bad, phys, col);
    }

    /// Reads one escape sequence after the backslash (already consumed).
    /// Returns `None` after reporting an error.
    fn escape(&mut self, phys: u32, col: u32) -> Option<char> {
        let c = match self.peek() {
            Some(c) if c != '\n' => c,
            _ => {
                self.error_at(phys, col, AsmErrorKind::BadEscape(String::new()));
                return None;
            }
        };
        self.bump();
        match c {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            '0' => Some('\0'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            '\'' => Some('\''),
            'u' => {
                let mut text = String::from("u");
                if self.peek() != Some('{') {
                    self.error_at(phys, col, AsmErrorKind::BadEscape(text));
                    return None;
                }
                self.bump();
                text.push('{');
                let mut digits = String::new();
                while let Some(d) = self.peek().filter(|c| c.is_ascii_hexdigit()) {
                    digits.push(d);
                    self.bump();
                }
                text.push_str(&digits);
                if self.peek() != Some('}') || digits.is_empty() || digits.len() > 6 {
                    self.error_at(phys, col, AsmErrorKind::BadEscape(text));
                    return None;
                }
                self.bump();
                text.push('}');
                let v = u32::from_str_radix(&digits, 16)
                    .ok()
                    .and_then(char::from_u32);
                if v.is_none() {
                    self.error_at(phys, col, AsmErrorKind::BadEscape(text));
                }
                v
            }
            other => {
                self.error_at(phys, col, AsmErrorKind::BadEscape(other.to_string()));
                None
            }
        }
    }

    fn string(&mut self, phys: u32, col: u32) {
        self.bump();
        let mut s = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => {
                    self.error_at(phys, col, AsmErrorKind::UnterminatedString);
                    break;
                }
                Some('"') => {
                    self.bump();
                    break;
                }
                Some('\\') => {
                    let (ep, ec) = (self.phys, self.col);
                    self.bump();
                    if let Some(c) = self.escape(ep, ec) {
                        s.push(c);
                    }
                }
                Some(c) => {
                    s.push(c);
                    self.bump();
                }
            }
        }
        self.push(Tok::Str(s), phys, col);
    }

    fn char_lit(&mut self, phys: u32, col: u32) {
        self.bump();
        let mut chars = Vec::new();
        let mut bad_escape = false;
        loop {
            match self.peek() {
                None | Some('\n') => {
                    self.error_at(phys, col, AsmErrorKind::UnterminatedChar);
                    self.push(Tok::Bad, phys, col);
                    return;
                }
                Some('\'') => {
                    self.bump();
                    break;
                }
                Some('\\') => {
                    let (ep, ec) = (self.phys, self.col);
                    self.bump();
                    match self.escape(ep, ec) {
                        Some(c) => chars.push(c),
                        None => bad_escape = true,
                    }
                }
                Some(c) => {
                    chars.push(c);
                    self.bump();
                }
            }
        }
        if bad_escape {
            // Already reported; still produce a token so parsing continues.
            self.push(Tok::Char(0), phys, col);
            return;
        }
        match chars.as_slice() {
            [c] => self.push(Tok::Char(*c as u32), phys, col),
            [] => {
                self.error_at(phys, col, AsmErrorKind::BadCharLiteral("it is empty"));
                self.push(Tok::Char(0), phys, col);
            }
            _ => {
                self.error_at(
                    phys,
                    col,
                    AsmErrorKind::BadCharLiteral("it holds more than one character"),
                );
                self.push(Tok::Char(0), phys, col);
            }
        }
    }

    /// `.line N` (the `.line` word is consumed): the next physical line is line `N`.
    fn line_directive(&mut self, phys: u32, col: u32) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
        let mut digits = String::new();
        while let Some(d) = self.peek().filter(|c| c.is_ascii_digit()) {
            digits.push(d);
            self.bump();
        }
        // Rest of the line: only blanks and a comment.
        let mut junk = false;
        while let Some(c) = self.peek() {
            match c {
                '\n' => break,
                ' ' | '\t' | '\r' => {
                    self.bump();
                }
                ';' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                _ => {
                    junk = true;
                    self.bump();
                }
            }
        }
        let n = match digits.parse::<u32>() {
            Ok(n) if !junk => n,
            _ => {
                self.error_at(
                    phys,
                    col,
                    AsmErrorKind::BadLineDirective(
                        "expected a line number (0..=4294967295) alone on the line".to_string(),
                    ),
                );
                return;
            }
        };
        // The next physical line (phys + 1) is logical line n.
        self.delta = n as i64 - (phys as i64 + 1);
    }
}

/// Splits `src` into tokens (always ending with [`Tok::Eof`]); lexical errors go to `errors`.
pub(crate) fn lex(src: &str, file: &str, errors: &mut Vec<AsmError>) -> Vec<Token> {
    let mut lx = Lexer {
        chars: src
            .strip_prefix('\u{feff}')
            .unwrap_or(src)
            .chars()
            .collect(),
        pos: 0,
        phys: 1,
        col: 1,
        delta: 0,
        file,
        toks: Vec::new(),
        errors,
    };
    lx.run();
    lx.toks
}
