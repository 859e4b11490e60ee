//! Checking an untrusted key (from a listing or an API request) before it reaches a backend.

use object_store::path::Path;

use super::error::StorageError;

/// Checks an untrusted key and turns it into a store path.
///
/// Refused: empty keys, absolute keys, `.` and `..` segments, empty segments, backslashes
/// and control characters. What passes cannot name anything outside the bucket's root.
pub fn check_key(key: &str) -> Result<Path, StorageError> {
    let bad = |reason| Err(StorageError::UnsafeKey { key: key.to_owned(), reason });
    if key.is_empty() {
        return bad("empty key");
    }
    if key.starts_with('/') {
        return bad("absolute keys are not allowed");
    }
    if key.contains('\\') {
        return bad("backslashes are not allowed");
    }
    if key.chars().any(char::is_control) {
        return bad("control characters are not allowed");
    }
    for segment in key.split('/') {
        match segment {
            "" => return bad("empty path segment"),
            "." | ".." => return bad("'.' and '..' segments are not allowed"),
            _ => {}
        }
    }
    Path::parse(key).or_else(|_| bad("not a valid object path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_absolute_keys_are_refused() {
        for key in ["../etc/passwd", "a/../../b", "/etc/passwd", "a//b", "./a", "a\\..\\b", "", "a/\0b"] {
            let err = check_key(key).unwrap_err();
            assert!(matches!(err, StorageError::UnsafeKey { .. }), "{key:?} gave {err}");
        }
        assert_eq!(check_key("photos/cat.jpg").unwrap().as_ref(), "photos/cat.jpg");
        assert_eq!(check_key("a b/ü.png").unwrap().as_ref(), "a b/ü.png");
    }
}
