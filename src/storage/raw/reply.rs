//! What the raw client makes of an answer: an object's metadata from its headers, an S3
//! error's status and code, a transport error's causes, the error a failure becomes for
//! its caller — and the jittered pause before a retry. Plain functions, no I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};

use crate::storage::{ObjectInfo, StorageError};

/// `backoff` scaled into its upper half at random (so that many clients throttled at once
/// do not retry in step), from the clock's nanoseconds: no generator needed.
pub(super) fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    backoff.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

/// A failed request as object_store's errors say it (a transient backend error).
pub(super) fn generic(op: &'static str, key: &str, message: String) -> StorageError {
    StorageError::Backend {
        op,
        key: key.to_owned(),
        source: object_store::Error::Generic { store: "S3", source: message.into() },
    }
}

/// A transport error with its causes (a connection refused, a TLS failure), no URL.
pub(super) fn transport(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// `HTTP 403 AccessDenied: Access Denied`, from an S3 error answer.
pub(super) fn s3_error(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find('<')? + start;
        Some(text[start..end].to_owned())
    };
    match (field("Code"), field("Message")) {
        (Some(code), Some(message)) => format!("HTTP {}: {code}: {message}", status.as_u16()),
        (Some(code), None) => format!("HTTP {}: {code}", status.as_u16()),
        _ => format!("HTTP {}", status.as_u16()),
    }
}

pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// An object's metadata from a HEAD or GET answer.
pub(super) fn info_of(key: &str, headers: &HeaderMap) -> Result<ObjectInfo, StorageError> {
    let text = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let size = text(http::header::CONTENT_LENGTH)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| generic("head", key, "the answer has no Content-Length".into()))?;
    let last_modified = text(http::header::LAST_MODIFIED)
        .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| generic("head", key, "the answer has no readable Last-Modified".into()))?;
    let etag = text(http::header::ETAG).map(str::to_owned);
    Ok(ObjectInfo { key: key.to_owned(), size, last_modified, etag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_answer_is_named_by_status_code_and_message() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(s3_error(StatusCode::FORBIDDEN, body), "HTTP 403: AccessDenied: Access Denied");
        assert_eq!(s3_error(StatusCode::BAD_GATEWAY, b"<html>oops</html>"), "HTTP 502");
    }

    #[test]
    fn metadata_comes_from_the_headers_or_is_a_specific_error() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "12".parse().unwrap());
        h.insert("last-modified", "Sun, 06 Dec 2026 13:46:04 GMT".parse().unwrap());
        h.insert("etag", "\"abc\"".parse().unwrap());
        let info = info_of("./x.jpg", &h).unwrap();
        assert_eq!((info.key.as_str(), info.size, info.etag.as_deref()), ("./x.jpg", 12, Some("\"abc\"")));
        assert_eq!(info.last_modified.to_rfc3339(), "2026-12-06T13:46:04+00:00");
        h.remove("last-modified");
        let err = info_of("./x.jpg", &h).unwrap_err().to_string();
        assert!(err.contains("./x.jpg") && err.contains("Last-Modified"), "{err}");
    }

    #[test]
    fn a_jittered_backoff_stays_within_its_upper_half() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000), "{d:?}");
        }
    }
}
