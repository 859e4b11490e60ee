//! `.env` files exactly as the Go server reads them: joho/godotenv v1.5.1 (its `go.mod`'s
//! version), read from the working directory at start-up, each variable applied only
//! where the environment does not already set it (`godotenv.Load`, not `Overload`).
//!
//! The parser is a port of godotenv's `parser.go`, checked against godotenv itself
//! (`testdata/godotenv/`: its fixtures, its tests, and the outputs of v1.5.1 for chosen
//! and random texts). What that means, in short:
//! - A statement is `[export ]NAME=value` or `NAME: value`; blank lines and lines whose
//!   first character is `#` are skipped. A name has letters, digits, `_` and `.`; it is
//!   read byte by byte, so white space inside it is kept (`MY KEY`) and most non-ASCII
//!   letters, a hyphen and a byte-order mark are refused.
//! - An unquoted value runs to the end of the line and is trimmed; its last ` #` (a `#`
//!   after a space or tab) starts a comment: `a # b # c` is `a # b`.
//! - `'single'` quotes keep everything literally. `"double"` quotes turn `\n` and `\r`
//!   into line breaks and drop any other backslash. Either may span lines. Text after the
//!   closing quote is read as the next statement (or a comment).
//! - `$NAME`, `${NAME}` expand in unquoted and double-quoted values, but only for names
//!   of capitals, digits and `_`, and only from the file's earlier lines (never the
//!   process environment); an undefined name expands to nothing. A `$` followed by
//!   anything else (`Tr0ub$dor&3`) stays as it is; `\$` is a literal `$`.
//!
//! Unlike the Go server, which ignores a `.env` it cannot parse as a whole, a file
//! godotenv refuses is an error naming the file and the line, and so is a statement
//! with no name (godotenv reads a last line without `=` as the value of an empty name,
//! which the Go server then drops). Errors never quote a value: a `.env` holds secrets.

use std::path::{Path, PathBuf};

/// The file read when `--env-file` is not given (in the working directory).
pub const DEFAULT_ENV_FILE: &str = ".env";

/// Why a `.env` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error("cannot read env file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("env file {path}, line {line}: {problem}")]
    Malformed { path: PathBuf, line: usize, problem: String },
}

/// A `.env` file's variables, in file order (a name set twice keeps its last value), and
/// what the file does that its author may not expect.
#[derive(Debug, Default, PartialEq)]
pub struct EnvFile {
    pub vars: Vec<(String, String)>,
    /// `(variable, warning)`: the warning names the file, the line and the variable,
    /// never a value.
    pub warnings: Vec<(String, String)>,
}

/// One `NAME=value` of a file: its name, its value, the line it starts on, and whether
/// its value referred to a variable the file does not define earlier.
struct Statement {
    name: String,
    value: String,
    line: usize,
    undefined_reference: bool,
}

/// Reads `path`. `required`: a missing file is an error (`--env-file`); otherwise a
/// missing file reads as empty.
pub fn read(path: &Path, required: bool) -> Result<EnvFile, DotenvError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| DotenvError::Read { path: path.to_owned(), message: "not UTF-8 text".into() })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(EnvFile::default()),
        Err(e) => return Err(DotenvError::Read { path: path.to_owned(), message: e.to_string() }),
    };
    let malformed = |line, problem| DotenvError::Malformed { path: path.to_owned(), line, problem };
    let statements = statements(&text).map_err(|(line, problem)| malformed(line, problem))?;
    let mut file = EnvFile::default();
    for s in statements {
        if s.name.is_empty() {
            return Err(malformed(
                s.line,
                "no variable name: a statement without '=' or ':' (godotenv reads it as the value of an empty \
                 name, which the Go server drops)"
                    .into(),
            ));
        }
        if s.undefined_reference {
            let warning = format!(
                "env file {}, line {} ({}): a $NAME or ${{NAME}} in the value names no variable defined earlier \
                 in the file and expands to nothing, as in the Go server (godotenv); write \\$ or use single \
                 quotes for a literal $",
                path.display(),
                s.line,
                s.name
            );
            file.warnings.push((s.name.clone(), warning));
        }
        insert(&mut file.vars, s.name, s.value);
    }
    Ok(file)
}

/// Parses the text of a `.env` file as godotenv's `Unmarshal` does: the variables in
/// file order, a name set twice keeping its last value (an empty name included); an
/// error is `(line number, problem)`.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out = Vec::new();
    for s in statements(text)? {
        insert(&mut out, s.name, s.value);
    }
    Ok(out)
}

/// Adds the file's variables to `env` where the name is not already present (even with
/// an empty value), as godotenv's `Load` does. Returns the names that were added.
pub fn apply(env: &mut Vec<(String, String)>, from_file: Vec<(String, String)>) -> Vec<String> {
    let mut added = Vec::new();
    for (k, v) in from_file {
        if !env.iter().any(|(name, _)| *name == k) {
            added.push(k.clone());
            env.push((k, v));
        }
    }
    added
}

fn insert(vars: &mut Vec<(String, String)>, name: String, value: String) {
    match vars.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    }
}

/// godotenv's `isSpace`: white space that does not end a line.
fn is_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}')
}

/// `parseBytes`: every statement of `text`, in order.
fn statements(text: &str) -> Result<Vec<Statement>, (usize, String)> {
    let src = text.replace("\r\n", "\n");
    let line_at = |offset: usize| src.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
    let offset_of = |rest: &str| src.len() - rest.len();
    let mut out: Vec<Statement> = Vec::new();
    let mut rest: &str = &src;
    while let Some(start) = statement_start(rest) {
        let line = line_at(offset_of(start));
        let (name, after) = key_name(start).map_err(|(at, problem)| (line_at(offset_of(start) + at), problem))?;
        let (value, after, undefined_reference) = value(after, &out).map_err(|problem| (line, problem))?;
        out.push(Statement { name, value, line, undefined_reference });
        rest = after;
    }
    Ok(out)
}

/// `getStatementStart`: `src` from its next statement, skipping white space and `#` lines.
fn statement_start(mut src: &str) -> Option<&str> {
    loop {
        src = &src[src.find(|c: char| !c.is_whitespace())?..];
        if !src.starts_with('#') {
            return Some(src);
        }
        src = &src[src.find('\n')?..];
    }
}

/// `locateKeyName`: the name and the text after its `=` or `:`. An error is the byte
/// offset in `src` of what is wrong and the problem.
fn key_name(input: &str) -> Result<(String, &str), (usize, String)> {
    let mut src = input.trim_start_matches(is_space);
    if let Some(after) = src.strip_prefix("export")
        && after.starts_with(is_space)
    {
        src = after.trim_start_matches(is_space);
    }
    // godotenv reads the name byte by byte, each byte as the Latin-1 character of its
    // value: white space is skipped, `=` or `:` ends the name.
    let mut end = None;
    for (i, &b) in src.as_bytes().iter().enumerate() {
        let c = char::from(b);
        match b {
            _ if is_space(c) => {}
            b'=' | b':' => {
                end = Some(i);
                break;
            }
            b'_' | b'.' => {}
            _ if c.is_alphabetic() || c.is_numeric() => {}
            _ => return Err((input.len() - src.len() + i, unexpected(src, i))),
        }
    }
    if src.is_empty() {
        return Err((input.len(), "export without a variable name".into()));
    }
    // No `=` before the end of the file: godotenv reads the rest as the value of "".
    let (name, offset) = match end {
        Some(i) => (&src[..i], i + 1),
        None => ("", 0),
    };
    Ok((name.trim_end_matches(char::is_whitespace).to_owned(), src[offset..].trim_start_matches(is_space)))
}

/// The problem of the byte at `i` of a name (a line break, a byte-order mark, another
/// character), without the rest of the line.
fn unexpected(src: &str, i: usize) -> String {
    let b = src.as_bytes()[i];
    if b == b'\n' {
        "expected KEY=VALUE: no '=' or ':' before the end of the line".into()
    } else if src.starts_with('\u{feff}') && i < '\u{feff}'.len_utf8() {
        "a byte-order mark (U+FEFF) before the name, which godotenv refuses: save the file without it".into()
    } else if b.is_ascii() {
        format!("unexpected character {:?} in a variable name (allowed: letters, digits, _ and .)", b as char)
    } else {
        "a non-ASCII character in a variable name, which godotenv refuses (allowed: letters, digits, _ and .)".into()
    }
}

/// `extractVarValue`: the value at the start of `src`, the text after it, and whether
/// it referred to a variable the `earlier` statements do not set.
fn value<'a>(src: &'a str, earlier: &[Statement]) -> Result<(String, &'a str, bool), String> {
    let bytes = src.as_bytes();
    if let Some(&q @ (b'"' | b'\'')) = bytes.first() {
        // The closing quote is the first one not right after a backslash.
        let Some(close) = (1..bytes.len()).find(|&i| bytes[i] == q && bytes[i - 1] != b'\\') else {
            return Err(format!("unterminated quoted value: no closing {} after the opening one", q as char));
        };
        let quote = q as char;
        let inner = src[..close].trim_end_matches(quote).trim_start_matches(quote);
        let rest = &src[close + 1..];
        if q == b'\'' {
            return Ok((inner.to_owned(), rest, false));
        }
        let (value, undefined) = expand_variables(&expand_escapes(inner), earlier);
        return Ok((value, rest, undefined));
    }
    let (line, rest) = match src.find(['\n', '\r']) {
        Some(end) => src.split_at(end),
        None => (src, ""),
    };
    // The last `#` after white space starts a comment (not a `#` that begins the value).
    let chars: Vec<char> = line.chars().collect();
    let end = (1..chars.len()).rev().find(|&i| chars[i] == '#' && is_space(chars[i - 1])).unwrap_or(chars.len());
    let bare: String = chars[..end].iter().collect();
    let (value, undefined) = expand_variables(bare.trim_matches(is_space), earlier);
    Ok((value, rest, undefined))
}

/// `expandEscapes`: `\n` and `\r` become line breaks, then a backslash before anything
/// but `$` is dropped (`\$` is left for [`expand_variables`]).
fn expand_escapes(s: &str) -> String {
    let mut first = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('\\', Some(next)) if next != '\n' => {
                chars.next();
                match next {
                    'n' => first.push('\n'),
                    'r' => first.push('\r'),
                    other => {
                        first.push('\\');
                        first.push(other);
                    }
                }
            }
            _ => first.push(c),
        }
    }
    let mut out = String::with_capacity(first.len());
    let mut chars = first.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('\\', Some(next)) if next != '$' => {
                chars.next();
                out.push(next);
            }
            _ => out.push(c),
        }
    }
    out
}

/// `expandVariables`, godotenv's `(\\)?(\$)(\()?\{?([A-Z0-9_]+)?\}?`: `\$…` loses its
/// backslash and is kept; `$NAME` (with an optional `(`, `{` before and `}` after the
/// name) becomes the earlier value or nothing; a `$` without such a name is kept. The
/// flag: some name was not defined earlier.
fn expand_variables(s: &str, earlier: &[Statement]) -> (String, bool) {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut undefined = false;
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        let escaped = b[i] == b'\\' && b.get(i + 1) == Some(&b'$');
        if !escaped && b[i] != b'$' {
            i += 1;
            continue;
        }
        let mut j = if escaped { i + 2 } else { i + 1 };
        j += usize::from(b.get(j) == Some(&b'('));
        j += usize::from(b.get(j) == Some(&b'{'));
        let name_start = j;
        while j < b.len() && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        let name = &s[name_start..j];
        j += usize::from(b.get(j) == Some(&b'}'));
        out.push_str(&s[copied..i]);
        if escaped {
            out.push_str(&s[i + 1..j]);
        } else if name.is_empty() {
            out.push_str(&s[i..j]);
        } else {
            let found = earlier.iter().rev().find(|s| s.name == name).map(|s| s.value.as_str());
            undefined |= found.is_none();
            out.push_str(found.unwrap_or(""));
        }
        (i, copied) = (j, j);
    }
    out.push_str(&s[copied..]);
    (out, undefined)
}

#[cfg(test)]
#[path = "dotenv_tests.rs"]
mod tests;
