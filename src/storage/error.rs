//! What the bucket answers: [`ObjectInfo`] for an object, [`StorageError`] for a failure.
//!
//! A leaf module: both the [`Storage`](super::Storage) facade and the local backend's
//! parts use these types, so they live apart from both.

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;

/// What went wrong talking to the bucket.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{key}: object not found")]
    NotFound { key: String },
    #[error("{key:?}: unsafe object key: {reason}")]
    UnsafeKey { key: String, reason: &'static str },
    #[error("{key}: object is {size} bytes, over the limit of {max} bytes")]
    TooLarge { key: String, size: u64, max: u64 },
    #[error("{key}: object already exists")]
    AlreadyExists { key: String },
    /// A conditional update lost: the object is no longer the version it was read as.
    #[error("{key}: object changed since it was read (ETag no longer matches)")]
    Changed { key: String },
    /// The listing found an object it cannot name as a key (a local file name that is
    /// not UTF-8); `key` shows it with its invalid bytes escaped (`\xNN`).
    #[error("{key}: cannot be used as an object key: {reason}")]
    Unlistable { key: String, reason: &'static str },
    #[error("cannot open storage: {0}")]
    Setup(String),
    /// The bucket itself is missing: S3 answered a listing 404 (`NoSuchBucket`), or a
    /// local bucket's directory is gone.
    #[error("the bucket does not exist")]
    NoBucket,
    #[error("{op} {key}: {source}")]
    Backend {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// A file-system operation of the local backend failed. The key is relative to the
    /// bucket and the OS error carries no path: answers never show where the bucket lives.
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// Why an image met this error, as the ledger, the metrics and the API classify it.
    pub fn reason(&self) -> crate::reason::Reason {
        use crate::reason::Reason as R;
        match self {
            Self::NotFound { .. } => R::NotFound,
            Self::TooLarge { .. } => R::TooLarge,
            Self::UnsafeKey { .. } => R::UnsafeKey,
            _ => R::StorageError,
        }
    }

    pub(super) fn backend(op: &'static str, key: &str, source: object_store::Error) -> Self {
        if op == "list" && is_missing_bucket(&source) {
            return Self::NoBucket;
        }
        match source {
            object_store::Error::NotFound { .. } => Self::NotFound { key: key.to_owned() },
            object_store::Error::AlreadyExists { .. } => Self::AlreadyExists { key: key.to_owned() },
            object_store::Error::Precondition { .. } if op == "update" => Self::Changed { key: key.to_owned() },
            object_store::Error::Precondition { .. } => Self::AlreadyExists { key: key.to_owned() },
            source => Self::Backend { op, key: key.to_owned(), source },
        }
    }

    /// Worth retrying: the backend failed, not the request. (A local file system that
    /// cannot support compare-and-swap at all is not transient.)
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Backend { .. } => true,
            Self::Io { source, .. } => source.kind() != std::io::ErrorKind::Unsupported,
            _ => false,
        }
    }
}

/// Whether a listing failed because the bucket does not exist. A listing answers 404
/// only then (an empty prefix is an empty page), and object_store keeps the answer only
/// as text: S3, R2 and MinIO name the code `NoSuchBucket`.
fn is_missing_bucket(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if text.contains("NoSuchBucket") || text.contains("status code: 404") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// One object as a listing or HEAD describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub etag: Option<String>,
}

impl From<ObjectMeta> for ObjectInfo {
    fn from(m: ObjectMeta) -> Self {
        Self { key: m.location.to_string(), size: m.size, last_modified: m.last_modified, etag: m.e_tag }
    }
}
