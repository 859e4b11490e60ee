//! The bucket: one small interface over `object_store` for the local directory (the
//! embedded default), S3-compatible services (R2, AWS S3, MinIO) and memory (tests).
//!
//! Keys that come from a bucket listing or an API request are untrusted. Every key is
//! checked by [`check_key`] before it reaches a backend, so the local backend can never
//! read or write outside its root (`../x`, `/etc/passwd`, `a//b` are refused).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};

use crate::config::{S3Config, StorageConfig};
use crate::storage_local;

/// The Content-Type every WebP is stored with.
pub const WEBP_CONTENT_TYPE: &str = "image/webp";

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
    #[error("cannot open storage: {0}")]
    Setup(String),
    #[error("{op} {key}: {source}")]
    Backend {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    /// A file-system operation of the local backend's locked writes failed.
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    fn backend(op: &'static str, key: &str, source: object_store::Error) -> Self {
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

/// Which kind of backend a [`Storage`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Local,
    S3,
    Memory,
}

/// A bucket. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    kind: BackendKind,
    /// The local backend's root (canonical), for the key-ordered listing and the locked
    /// conditional writes.
    root: Option<PathBuf>,
    /// The local backend itself, to name a key's file exactly as `store` does.
    local: Option<LocalFileSystem>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("bucket", &self.bucket).field("kind", &self.kind).finish()
    }
}

impl Storage {
    /// Opens the configured backend. A local root is created if missing.
    pub fn open(config: &StorageConfig, bucket_name: &str) -> Result<Self, StorageError> {
        match config {
            StorageConfig::Local { root } => Self::local(root),
            StorageConfig::S3(s3) => Self::s3(s3),
            StorageConfig::Memory { bucket } => Ok(Self::in_memory(bucket)),
        }
        .map(|s| Self { bucket: bucket_name.to_owned(), ..s })
    }

    /// A local directory as a bucket.
    pub fn local(root: &FsPath) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root)
            .map_err(|e| StorageError::Setup(format!("cannot create {}: {e}", root.display())))?;
        let store = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| StorageError::Setup(format!("{}: {e}", root.display())))?
            .with_automatic_cleanup(true);
        let bucket = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let root = Some(root.canonicalize().unwrap_or_else(|_| root.to_owned()));
        Ok(Self { store: Arc::new(store.clone()), bucket, kind: BackendKind::Local, root, local: Some(store) })
    }

    /// An S3-compatible bucket, path-style by default, SigV4-signed.
    pub fn s3(c: &S3Config) -> Result<Self, StorageError> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&c.endpoint)
            .with_region(&c.region)
            .with_bucket_name(&c.bucket)
            .with_access_key_id(c.access_key.expose())
            .with_secret_access_key(c.secret_key.expose())
            .with_virtual_hosted_style_request(c.virtual_hosted_style)
            .with_allow_http(c.endpoint.starts_with("http://"))
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig {
                    init_backoff: c.retry.initial_backoff,
                    max_backoff: std::time::Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: c.retry.max_retries,
                retry_timeout: c.retry.retry_timeout,
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(c.retry.request_timeout)
                    .with_allow_http(c.endpoint.starts_with("http://")),
            )
            .build()
            .map_err(|e| StorageError::Setup(format!("S3 bucket {} at {}: {e}", c.bucket, c.endpoint)))?;
        Ok(Self { store: Arc::new(store), bucket: c.bucket.clone(), kind: BackendKind::S3, root: None, local: None })
    }

    /// A bucket held in memory, for tests.
    pub fn in_memory(bucket: &str) -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            bucket: bucket.to_owned(),
            kind: BackendKind::Memory,
            root: None,
            local: None,
        }
    }

    /// The bucket's name (used in `r2://bucket/key` addresses).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Streams every object under `prefix` (a `/`-separated key prefix, or the whole
    /// bucket), page by page: the listing is never held in memory.
    pub fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
        let prefix_path = match prefix.map(str::trim).filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => match check_key(p.trim_end_matches('/')) {
                Ok(path) => Some(path),
                Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
            },
        };
        let shown = prefix.unwrap_or("").to_owned();
        self.store
            .list(prefix_path.as_ref())
            .map(move |r| r.map(ObjectInfo::from).map_err(|e| StorageError::backend("list", &shown, e)))
            .boxed()
    }

    /// Streams the whole bucket in key order (byte order of the UTF-8 keys, as S3 and R2
    /// list), starting after `offset` when given. The pipeline's merge of sources with
    /// their WebPs relies on this order; the local backend walks its directories sorted so
    /// that it lists in the same order.
    pub fn list_ordered(&self, offset: Option<&str>) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
        if let Some(root) = &self.root {
            return storage_local::list_ordered(root.clone(), offset.map(str::to_owned));
        }
        let stream = match offset {
            Some(o) => match check_key(o) {
                Ok(p) => self.store.list_with_offset(None, &p),
                Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
            },
            None => self.store.list(None),
        };
        stream.map(|r| r.map(ObjectInfo::from).map_err(|e| StorageError::backend("list", "", e))).boxed()
    }

    /// The objects directly under `dir` (one level, no recursion).
    pub async fn list_dir(&self, dir: Option<&str>) -> Result<Vec<ObjectInfo>, StorageError> {
        let path = dir.filter(|d| !d.is_empty()).map(|d| check_key(d.trim_end_matches('/'))).transpose()?;
        let res = self
            .store
            .list_with_delimiter(path.as_ref())
            .await
            .map_err(|e| StorageError::backend("list", dir.unwrap_or(""), e))?;
        Ok(res.objects.into_iter().map(ObjectInfo::from).collect())
    }

    /// Metadata of one object.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let path = check_key(key)?;
        self.store.head(&path).await.map(ObjectInfo::from).map_err(|e| StorageError::backend("head", key, e))
    }

    /// Reads a whole object, refusing (before reading the body) one larger than `max_bytes`.
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<(ObjectInfo, Bytes), StorageError> {
        let path = check_key(key)?;
        let res = self
            .store
            .get_opts(&path, GetOptions::default())
            .await
            .map_err(|e| StorageError::backend("get", key, e))?;
        let info = ObjectInfo::from(res.meta.clone());
        if info.size > max_bytes {
            return Err(StorageError::TooLarge { key: key.to_owned(), size: info.size, max: max_bytes });
        }
        let body = res.bytes().await.map_err(|e| StorageError::backend("get", key, e))?;
        if body.len() as u64 != info.size {
            // A short read must never become a short WebP.
            return Err(StorageError::backend(
                "get",
                key,
                object_store::Error::Generic {
                    store: "storage",
                    source: format!("body was {} bytes, expected {}", body.len(), info.size).into(),
                },
            ));
        }
        Ok((info, body))
    }

    /// Writes `data` under `key` with `content_type` (where the backend stores one),
    /// replacing what was there. Returns the new object's ETag when the backend gives one.
    pub async fn put(&self, key: &str, data: Bytes, content_type: &str) -> Result<Option<String>, StorageError> {
        self.put_mode(key, data, content_type, PutMode::Overwrite).await
    }

    /// Like [`Storage::put`] but only when no object exists (`If-None-Match: *`);
    /// [`StorageError::AlreadyExists`] otherwise. On the local backend it runs under the
    /// key's directory lock, like [`Storage::put_if_match`].
    pub async fn put_new(&self, key: &str, data: Bytes, content_type: &str) -> Result<Option<String>, StorageError> {
        if let Some((root, file)) = self.local_file(key, "put")? {
            let cond = storage_local::Condition::Absent;
            let put = move |key: &str| storage_local::put_locked(&root, &file, key, &data, cond);
            return blocking("put", key, put).await.map(Some);
        }
        self.put_mode(key, data, content_type, PutMode::Create).await
    }

    /// Like [`Storage::put`] but only over the version with `etag` (`If-Match`), a
    /// compare-and-swap; [`StorageError::Changed`] when the object is no longer that
    /// version or is gone. Returns the new version's ETag.
    ///
    /// On the local backend (where object_store has no compare-and-swap for files) the
    /// swap runs under an exclusive lock on the key's directory, and every version it
    /// writes gets an ETag no earlier version had: see `storage_local`.
    pub async fn put_if_match(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        etag: &str,
    ) -> Result<Option<String>, StorageError> {
        if let Some((root, file)) = self.local_file(key, "update")? {
            let cond = storage_local::Condition::Matches(etag.to_owned());
            let swap = move |key: &str| storage_local::put_locked(&root, &file, key, &data, cond);
            return blocking("update", key, swap).await.map(Some);
        }
        let version = UpdateVersion { e_tag: Some(etag.to_owned()), version: None };
        self.put_mode(key, data, content_type, PutMode::Update(version)).await
    }

    /// The root and the file that hold `key` on the local backend; `None` on the others.
    fn local_file(&self, key: &str, op: &'static str) -> Result<Option<(PathBuf, PathBuf)>, StorageError> {
        let (Some(local), Some(root)) = (&self.local, &self.root) else { return Ok(None) };
        let file = local.path_to_filesystem(&check_key(key)?).map_err(|e| StorageError::backend(op, key, e))?;
        if !file.starts_with(root) {
            return Err(StorageError::UnsafeKey { key: key.to_owned(), reason: "outside the bucket's root" });
        }
        Ok(Some((root.clone(), file)))
    }

    async fn put_mode(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        mode: PutMode,
    ) -> Result<Option<String>, StorageError> {
        let path = check_key(key)?;
        let mut attributes = Attributes::new();
        // The local file system stores no attributes and rejects puts that carry them.
        if self.kind != BackendKind::Local {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        }
        let op = if matches!(mode, PutMode::Update(_)) { "update" } else { "put" };
        let opts = PutOptions { mode, attributes, ..Default::default() };
        self.store
            .put_opts(&path, PutPayload::from_bytes(data), opts)
            .await
            .map(|r| r.e_tag)
            .map_err(|e| StorageError::backend(op, key, e))
    }

    /// The Content-Type an object is stored with, where the backend keeps one.
    pub async fn content_type(&self, key: &str) -> Result<Option<String>, StorageError> {
        let path = check_key(key)?;
        let opts = GetOptions { head: true, ..Default::default() };
        let res = self.store.get_opts(&path, opts).await.map_err(|e| StorageError::backend("head", key, e))?;
        Ok(res.attributes.get(&Attribute::ContentType).map(|v| v.to_string()))
    }

    /// Deletes one object; deleting a missing object is not an error. On the local
    /// backend it runs under the key's directory lock (so it cannot slip between a
    /// compare-and-swap's check and its write) and removes directories it leaves empty.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        if let Some((root, file)) = self.local_file(key, "delete")? {
            return blocking("delete", key, move |key: &str| storage_local::delete_locked(&root, &file, key)).await;
        }
        let path = check_key(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::backend("delete", key, e)),
        }
    }
}

/// Runs blocking file-system work for `key` off the async threads.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    key: &str,
    f: impl FnOnce(&str) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let owned = key.to_owned();
    tokio::task::spawn_blocking(move || f(&owned)).await.map_err(|e| StorageError::Io {
        op,
        key: key.to_owned(),
        source: std::io::Error::other(e),
    })?
}

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

    #[tokio::test]
    async fn memory_round_trip_with_content_type() {
        let s = Storage::in_memory("b");
        s.put("x/a.webp", Bytes::from_static(b"RIFF"), WEBP_CONTENT_TYPE).await.unwrap();
        let (info, body) = s.get("x/a.webp", 100).await.unwrap();
        assert_eq!(info.size, 4);
        assert_eq!(&body[..], b"RIFF");
        assert_eq!(s.content_type("x/a.webp").await.unwrap().as_deref(), Some("image/webp"));
        assert!(matches!(s.get("x/a.webp", 3).await, Err(StorageError::TooLarge { .. })));
        assert!(matches!(
            s.put_new("x/a.webp", Bytes::new(), WEBP_CONTENT_TYPE).await,
            Err(StorageError::AlreadyExists { .. })
        ));
        let etag = s.head("x/a.webp").await.unwrap().etag.unwrap();
        let next = s.put_if_match("x/a.webp", Bytes::from_static(b"RIFF2"), WEBP_CONTENT_TYPE, &etag).await.unwrap();
        assert!(next.is_some_and(|n| n != etag));
        assert!(matches!(
            s.put_if_match("x/a.webp", Bytes::new(), WEBP_CONTENT_TYPE, &etag).await,
            Err(StorageError::Changed { .. })
        ));
        let listed: Vec<_> = s.list(Some("x")).collect().await;
        assert_eq!(listed.len(), 1);
        s.delete("x/a.webp").await.unwrap();
        assert!(matches!(s.head("x/a.webp").await, Err(StorageError::NotFound { .. })));
    }

    #[tokio::test]
    async fn local_backend_stays_inside_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
        let s = Storage::local(&root).unwrap();
        let err = s.get("../secret.txt", 1 << 20).await.unwrap_err();
        assert!(matches!(err, StorageError::UnsafeKey { .. }), "{err}");
        let err = s.put("../evil.webp", Bytes::from_static(b"x"), WEBP_CONTENT_TYPE).await.unwrap_err();
        assert!(matches!(err, StorageError::UnsafeKey { .. }), "{err}");
        assert!(!dir.path().join("evil.webp").exists());
        s.put("a/b.webp", Bytes::from_static(b"RIFF"), WEBP_CONTENT_TYPE).await.unwrap();
        assert_eq!(std::fs::read(root.join("a/b.webp")).unwrap(), b"RIFF");
        let listed: Vec<_> = s.list(None).collect().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].as_ref().unwrap().key, "a/b.webp");
        let ordered: Vec<_> = s.list_ordered(None).collect().await;
        let head = s.head("a/b.webp").await.unwrap();
        assert_eq!(ordered[0].as_ref().unwrap().etag, head.etag, "a listed ETag works with If-Match");
    }
}
