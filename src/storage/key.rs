//! Checking an untrusted key (from a listing or an API request) before it reaches a
//! backend: [`check_key`] for the local and in-memory backends, which hold keys as paths;
//! [`check_s3_key`] and [`exact_path`] for S3, where any key S3 allows is a key.

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

/// The longest key S3 and R2 accept, in bytes.
pub const MAX_S3_KEY_BYTES: usize = 1024;

/// Checks a key for an S3 bucket: any key S3 and R2 accept (`a//b`, `./x`, `../x`, a
/// TAB: an S3 bucket has no directories to escape), refusing only what they refuse.
pub(crate) fn check_s3_key(key: &str) -> Result<(), StorageError> {
    let bad = |reason| Err(StorageError::UnsafeKey { key: key.to_owned(), reason });
    if key.is_empty() {
        return bad("empty key");
    }
    if key.len() > MAX_S3_KEY_BYTES {
        return bad("longer than S3's 1,024 bytes");
    }
    Ok(())
}

/// `key` as an `object_store` path when that path names exactly this key; `None` when
/// `object_store` would refuse or change it (empty, `.` or `..` segments, an ASCII
/// control character, a leading or trailing `/`): such a key goes through the raw client.
pub(crate) fn exact_path(key: &str) -> Option<Path> {
    Path::parse(key).ok().filter(|p| p.as_ref() == key && !key.is_empty())
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

    #[test]
    fn keys_object_store_would_refuse_or_change_go_raw_on_s3() {
        for key in ["a//b.jpg", "./x.jpg", "../x.jpg", "tab\there.jpg", "c\u{1}.jpg", "/abs.jpg", "dir/", "a/./b"] {
            assert!(exact_path(key).is_none(), "{key:?} must go raw");
            check_s3_key(key).unwrap();
        }
        for key in ["photos/cat.jpg", "a b/ü.png", "%2E/x.jpg", "x{1}^.jpg"] {
            assert_eq!(exact_path(key).unwrap().as_ref(), key);
        }
        assert!(check_s3_key("").is_err());
        assert!(check_s3_key(&"k".repeat(1025)).is_err());
        check_s3_key(&"k".repeat(1024)).unwrap();
    }
}
