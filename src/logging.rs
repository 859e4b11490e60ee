//! Log output: `tracing` events as text (default) or JSON lines on stderr.
//!
//! The level comes from `RUST_LOG` when set, else `log.level`. Secrets never reach a log
//! line: they are [`crate::secret::Secret`]s, which print as `***`.
//!
//! Object keys come from the bucket and from API callers, and a key may hold a newline or
//! any other control character (S3 allows them; so does a local file name). Printed raw
//! in the text log, `photos/a.jpg\n2026-… ERROR forged` would forge a log line. So every
//! text line passes through [`EscapingWriter`], which escapes each control character
//! inside it (`\n`, `\r`, `\u{1b}`, …) wherever it came from — a key field, a message, an
//! error's text — and keeps only the line's own final newline (and, on a terminal, the
//! formatter's colour codes). The JSON log escapes them already.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber once; later calls are ignored.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = match config.format {
        LogFormat::Text => {
            text_subscriber(filter, ansi, move || EscapingWriter { inner: io::stderr(), ansi }).try_init()
        }
        LogFormat::Json => tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr).json().try_init(),
    };
}

/// The text log's subscriber, writing through `make_writer`.
fn text_subscriber<W>(
    filter: EnvFilter,
    ansi: bool,
    make_writer: W,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    EnvFilter,
    W,
>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(make_writer).with_ansi(ansi)
}

/// Writes formatted log lines with their control characters escaped. The formatter
/// hands it one whole event per write.
pub struct EscapingWriter<W> {
    inner: W,
    /// Colour codes (`ESC [ … m`) are the formatter's own on a terminal: kept.
    ansi: bool,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(escape_controls(&String::from_utf8_lossy(buf), self.ansi).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `line` with every control character escaped except a final newline (and, when
/// `ansi`, colour codes).
pub fn escape_controls(line: &str, ansi: bool) -> String {
    let (body, end) = match line.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (line, ""),
    };
    let mut out = String::with_capacity(line.len());
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        let sgr = if ansi && c == '\x1b' { colour_code(rest) } else { None };
        if let Some(len) = sgr {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(end);
    out
}

/// The length of a colour code (`ESC [ digits/; m`) at the start of `s`, if one is there.
fn colour_code(s: &str) -> Option<usize> {
    let params = s.strip_prefix("\x1b[")?;
    let n = params.bytes().take_while(|b| b.is_ascii_digit() || *b == b';').count();
    (params.as_bytes().get(n) == Some(&b'm')).then_some(2 + n + 1)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A key with a newline (as a field, in a message and inside an error's text) cannot
    /// start a line of its own in the text log.
    #[test]
    fn a_newline_in_an_object_key_does_not_forge_a_text_log_line() {
        let out = Shared::default();
        let sink = out.clone();
        let subscriber =
            text_subscriber(EnvFilter::new("info"), false, move || EscapingWriter { inner: sink.clone(), ansi: false })
                .finish();
        let key = "photos/a.jpg\n2026-01-01T00:00:00Z ERROR forged: disk wiped\r\x1b[2K";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(key = %key, "Converted image");
            tracing::warn!("Failed: {key}");
            let e = std::io::Error::other(format!("{key}: gone"));
            tracing::error!(error = %e, "Download failed");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines.iter().all(|l| !l.starts_with("2026-01-01T00:00:00Z")), "{text}");
        assert!(lines[0].contains(r"photos/a.jpg\n2026-01-01T00:00:00Z ERROR forged: disk wiped\r"), "{text}");
        assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn colour_codes_survive_on_a_terminal_and_other_escapes_do_not() {
        let line = "\x1b[1mINFO\x1b[0m key=a\x1b]0;title\x07\n";
        assert_eq!(escape_controls(line, true), "\x1b[1mINFO\x1b[0m key=a\\u{1b}]0;title\\u{7}\n");
        assert_eq!(escape_controls(line, false), "\\u{1b}[1mINFO\\u{1b}[0m key=a\\u{1b}]0;title\\u{7}\n");
        assert_eq!(escape_controls("tab\there", false), "tab\\there");
    }
}
