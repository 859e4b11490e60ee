//! `.env` files as the Go server reads them (joho/godotenv): `KEY=VALUE` lines, read from
//! the working directory at start-up, applied only where the variable is not already set.
//!
//! Accepted, as godotenv accepts them: blank lines and `#` comments; an `export ` prefix;
//! `KEY=VALUE` or `KEY: VALUE`; unquoted values (trimmed, a ` #` starts a comment);
//! `'single'` quoted values (literal) and `"double"` quoted values (`\n`, `\t`, `\"`,
//! `\\` escapes), either of which may span lines; `$VAR` and `${VAR}` in unquoted and
//! double-quoted values, expanded from the file's earlier lines, then the environment.
//!
//! Unlike the Go server, which ignores a `.env` it cannot parse, a malformed line is an
//! error naming the file and the line. Errors never quote a value: a `.env` holds secrets.

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

/// Reads `path` into `(name, value)` pairs in file order. `required`: a missing file is an
/// error (`--env-file`); otherwise a missing file reads as empty.
pub fn read(path: &Path, required: bool, env: &[(String, String)]) -> Result<Vec<(String, String)>, DotenvError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| DotenvError::Read { path: path.to_owned(), message: "not UTF-8 text".into() })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Vec::new()),
        Err(e) => return Err(DotenvError::Read { path: path.to_owned(), message: e.to_string() }),
    };
    parse(&text, env).map_err(|(line, problem)| DotenvError::Malformed { path: path.to_owned(), line, problem })
}

/// Parses the text of a `.env` file; an error is `(line number, problem)`.
pub fn parse(text: &str, env: &[(String, String)]) -> Result<Vec<(String, String)>, (usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let line = lines[i].trim_start_matches('\u{feff}').trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some(sep) = line.find(['=', ':']) else {
            return Err((number, "expected KEY=VALUE".into()));
        };
        let name = line[..sep].trim();
        if name.is_empty() {
            return Err((number, "no variable name before '='".into()));
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
            return Err((number, format!("unexpected character {bad:?} in a variable name")));
        }
        let rest = line[sep + 1..].trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // A quoted value runs to its closing quote, perhaps on a later line.
                let mut buf = rest[1..].to_owned();
                let close = loop {
                    if let Some(end) = closing_quote(&buf, q) {
                        break end;
                    }
                    let Some(next) = lines.get(i) else {
                        return Err((number, format!("the value of {name} has no closing {q}")));
                    };
                    buf.push('\n');
                    buf.push_str(next);
                    i += 1;
                };
                let after = buf[close + 1..].trim();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err((number, format!("unexpected text after the quoted value of {name}")));
                }
                let inner = &buf[..close];
                if q == '\'' { inner.to_owned() } else { expand(&unescape(inner), &out, env) }
            }
            _ => {
                let bare = match rest.find(" #").or_else(|| rest.find("\t#")) {
                    Some(c) => &rest[..c],
                    None => rest,
                };
                expand(bare.trim(), &out, env)
            }
        };
        out.retain(|(k, _)| k != name);
        out.push((name.to_owned(), value));
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

fn closing_quote(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if q == '"' && !escaped => escaped = true,
            c if c == q && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            // `\$` stays escaped for `expand`, which drops the backslash.
            Some('$') => out.push_str("\\$"),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Expands `$NAME` and `${NAME}` from the earlier lines, then the environment; `\$` is a
/// literal dollar; an unknown name expands to nothing (as in godotenv).
fn expand(s: &str, earlier: &[(String, String)], env: &[(String, String)]) -> String {
    let lookup = |name: &str| -> String {
        earlier.iter().rev().chain(env.iter()).find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(['$', '\\']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("\\$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('\\') {
            out.push('\\');
            rest = after;
        } else if let Some(braced) = tail.strip_prefix("${")
            && let Some(end) = braced.find('}')
        {
            out.push_str(&lookup(&braced[..end]));
            rest = &braced[end + 1..];
        } else {
            let name_len = tail[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len() - 1);
            if name_len == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&tail[1..1 + name_len]));
            }
            rest = &tail[1 + name_len..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text, &[("HOME_DIR".into(), "/home/x".into())]).unwrap()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_go_servers_env_example_parses() {
        // The Go server's .env.example, comments in Korean included.
        let text = "# Cloudflare R2 설정\n# cp .env.example .env\n\nR2_ACCESS_KEY=your-access-key-here\n\
                    R2_ENDPOINT=https://your-account-id.r2.cloudflarestorage.com\n# R2_BUCKETS=bucket-a,bucket-b\n\
                    R2_BUCKET=your-bucket-name\n# SERVER_PORT=4000\n";
        assert_eq!(
            ok(text),
            pairs(&[
                ("R2_ACCESS_KEY", "your-access-key-here"),
                ("R2_ENDPOINT", "https://your-account-id.r2.cloudflarestorage.com"),
                ("R2_BUCKET", "your-bucket-name"),
            ])
        );
    }

    #[test]
    fn quotes_export_comments_colons_and_expansion() {
        let text = "export A=1\nB = 'lit $A # not a comment'\nC=\"x\\ny $A ${HOME_DIR}\"\nD=plain # comment\n\
                    E: yaml-style\nF=\"two\nlines\"\nG=\nH=a#b\nI=\\$A\n";
        assert_eq!(
            ok(text),
            pairs(&[
                ("A", "1"),
                ("B", "lit $A # not a comment"),
                ("C", "x\ny 1 /home/x"),
                ("D", "plain"),
                ("E", "yaml-style"),
                ("F", "two\nlines"),
                ("G", ""),
                ("H", "a#b"),
                ("I", "$A"),
            ])
        );
    }

    #[test]
    fn malformed_lines_name_the_line_and_never_the_value() {
        let cases = [
            ("A=1\nR2_SECRET_KEY hunter2\n", 2, "expected KEY=VALUE"),
            ("A=1\n\nMY KEY=hunter2\n", 3, "unexpected character ' ' in a variable name"),
            ("=hunter2\n", 1, "no variable name"),
            ("S=\"hunter2\n", 1, "the value of S has no closing \""),
            ("S='hunter2' trailing\n", 1, "unexpected text after the quoted value of S"),
        ];
        for (text, line, problem) in cases {
            let (l, p) = parse(text, &[]).unwrap_err();
            assert_eq!(l, line, "{text:?}");
            assert!(p.contains(problem), "{text:?}: {p}");
            assert!(!p.contains("hunter2"), "a value leaked: {p}");
        }
    }

    #[test]
    fn values_apply_only_where_the_variable_is_not_set() {
        let mut env = pairs(&[("R2_BUCKET", "from-env"), ("SERVER_PORT", "")]);
        let added = apply(&mut env, pairs(&[("R2_BUCKET", "from-file"), ("SERVER_PORT", "9000"), ("X", "1")]));
        assert_eq!(added, ["X"]);
        assert_eq!(env, pairs(&[("R2_BUCKET", "from-env"), ("SERVER_PORT", ""), ("X", "1")]));
    }

    #[test]
    fn a_missing_default_file_is_fine_a_missing_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join(".env");
        assert!(read(&missing, false, &[]).unwrap().is_empty());
        let err = read(&missing, true, &[]).unwrap_err().to_string();
        assert!(err.contains("cannot read env file") && err.contains(".env"), "{err}");
    }
}
