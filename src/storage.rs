//! The bucket: one small interface over `object_store` for the local directory (the
//! embedded default), S3-compatible services (R2, AWS S3, MinIO) and memory (tests).
//!
//! Keys that come from a bucket listing or an API request are untrusted. On the local
//! and in-memory backends every key is checked by [`check_key`] before it reaches them
//! (`../x`, `/etc/passwd`, `a//b` are refused), and the local backend (`local`) resolves
//! every path beneath its root at the moment of the I/O with no symbolic link followed
//! (`beneath`), so it never reads or writes outside its root, whatever links the
//! directory holds. An S3 bucket has no directories to escape: every key S3 and R2
//! allow is a key here (`a//b.jpg`, `./x.jpg`, `../x.jpg`, a TAB). Its listing is our
//! own (`raw`), and a key `object_store` cannot name exactly goes through `raw` too.
//!
//! # Layout
//!
//! - `error` — [`ObjectInfo`] and [`StorageError`];
//! - `key` — the check of untrusted keys, [`check_key`];
//! - `local` — the local-directory backend, with `beneath` (paths resolved beneath the
//!   root), `cas` (its conditional writes and deletes), `walk` (its listing in key
//!   order) and `files` (errors, ETags and temporary files they share);
//! - `limit` — the S3 request window: at most `pipeline.max_requests` open, halved when
//!   the store throttles and grown back gradually (AIMD), [`RequestLimiter`];
//! - `raw` — the S3 listing, and the requests for keys `object_store` cannot name,
//!   signed and sent by us (with `raw/sign`, SigV4, and `raw/page`, a listing page).

mod beneath;
mod cas;
#[cfg(test)]
mod cas_tests;
mod error;
mod files;
mod key;
mod limit;
mod local;
#[cfg(test)]
mod local_tests;
#[cfg(test)]
pub(crate) mod probe;
mod raw;
mod walk;

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};

pub use self::error::{ObjectInfo, StorageError};
pub use self::key::check_key;
pub use self::limit::{LimitSnapshot, RequestLimiter};
use self::local::LocalBucket;
use self::raw::RawS3;

/// The metadata an output carries naming its source (`x-amz-meta-ics-source` on S3).
const SOURCE_METADATA: &str = "ics-source";

/// What is escaped in a metadata value: controls, non-ASCII (by the set), and `%`.
const METADATA_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// A metadata value travels as an HTTP header: ASCII only, so a key is percent-encoded.
fn encode_metadata(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, METADATA_ESCAPES).to_string()
}

/// How [`Storage::put_output`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputWrite {
    /// A plain PUT, replacing whatever is there.
    Overwrite,
    /// Only when no object exists (`If-None-Match: *`).
    Create,
    /// Only over the version with this ETag (`If-Match`).
    Update(String),
}
use crate::config::{S3Config, StorageConfig};

/// The Content-Type every WebP is stored with.
pub const WEBP_CONTENT_TYPE: &str = "image/webp";

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
    backend: Backend,
    bucket: String,
    kind: BackendKind,
    /// S3: the window of open requests (AIMD); none for local and memory buckets.
    limiter: Option<RequestLimiter>,
    /// S3: the listing and the keys `object_store` cannot name; none for the others.
    raw: Option<RawS3>,
}

/// Where one key's request goes.
enum Target<'a> {
    Local(&'a LocalBucket),
    /// `object_store`, with the key's exact path.
    Store(&'a Arc<dyn ObjectStore>, Path),
    Raw(&'a RawS3),
}

/// Where the objects are: a local directory (our own code, for its listing order,
/// conditional writes and confinement to the root) or an `object_store`.
#[derive(Clone)]
enum Backend {
    Local(LocalBucket),
    Store(Arc<dyn ObjectStore>),
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

    /// Another bucket of the same configured store, named `bucket_name`. An S3 bucket
    /// shares this one's request window: the buckets sit behind one endpoint and one
    /// account's limits, so `pipeline.max_requests` bounds all of their requests together,
    /// and a throttle seen in one narrows the window for all.
    pub fn open_beside(&self, config: &StorageConfig, bucket_name: &str) -> Result<Self, StorageError> {
        match (config, &self.limiter) {
            (StorageConfig::S3(s3), Some(limiter)) => {
                Self::s3_limited(s3, limiter.clone()).map(|s| Self { bucket: bucket_name.to_owned(), ..s })
            }
            _ => Self::open(config, bucket_name),
        }
    }

    /// A local directory as a bucket.
    pub fn local(root: &FsPath) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root)
            .map_err(|e| StorageError::Setup(format!("cannot create {}: {e}", root.display())))?;
        let bucket = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let root = root.canonicalize().map_err(|e| StorageError::Setup(format!("{}: {e}", root.display())))?;
        let backend = Backend::Local(LocalBucket::new(root));
        Ok(Self { backend, bucket, kind: BackendKind::Local, limiter: None, raw: None })
    }

    /// The same local bucket, resolving paths with `resolver` (tests run both ways).
    #[cfg(test)]
    pub(crate) fn with_resolver(self, resolver: beneath::Resolver) -> Self {
        match self.backend {
            Backend::Local(local) => Self { backend: Backend::Local(local.with_resolver(resolver)), ..self },
            Backend::Store(_) => self,
        }
    }

    /// An S3-compatible bucket, path-style by default, SigV4-signed.
    /// Every request goes through a window of `c.retry.max_requests` (see `limit`).
    pub fn s3(c: &S3Config) -> Result<Self, StorageError> {
        Self::s3_limited(c, RequestLimiter::new(c.retry.max_requests))
    }

    /// An S3-compatible bucket whose requests go through `limiter`'s window.
    fn s3_limited(c: &S3Config, limiter: RequestLimiter) -> Result<Self, StorageError> {
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
                    .with_allow_http(c.endpoint.starts_with("http://"))
                    // The window, not the pool, bounds what is open; keep enough idle
                    // connections to reuse them all.
                    .with_pool_max_idle_per_host(c.retry.max_requests.max(1)),
            )
            .with_http_connector(limit::LimitedConnector { limiter: limiter.clone() })
            .build()
            .map_err(|e| StorageError::Setup(format!("S3 bucket {} at {}: {e}", c.bucket, c.endpoint)))?;
        Ok(Self {
            backend: Backend::Store(Arc::new(store)),
            bucket: c.bucket.clone(),
            kind: BackendKind::S3,
            raw: Some(RawS3::new(c, limiter.clone())?),
            limiter: Some(limiter),
        })
    }

    /// A bucket held in memory, for tests.
    pub fn in_memory(bucket: &str) -> Self {
        Self {
            backend: Backend::Store(Arc::new(InMemory::new())),
            bucket: bucket.to_owned(),
            kind: BackendKind::Memory,
            limiter: None,
            raw: None,
        }
    }

    /// Any `object_store` as the bucket named `bucket` (a wrapped in-memory store in
    /// tests: latency, pauses, counted writes). It must honour conditional PUTs
    /// (`PutMode::Create` and `PutMode::Update`) for `state.backend: bucket`.
    pub fn from_store(store: Arc<dyn ObjectStore>, bucket: &str) -> Self {
        let bucket = bucket.to_owned();
        Self { backend: Backend::Store(store), bucket, kind: BackendKind::Memory, limiter: None, raw: None }
    }

    /// The bucket's name (used in `r2://bucket/key` addresses).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The S3 request window now (none for a local or in-memory bucket).
    pub fn request_limit(&self) -> Option<LimitSnapshot> {
        self.limiter.as_ref().map(RequestLimiter::snapshot)
    }

    /// Where `key`'s request goes, once the key is checked: on S3 any key S3 allows
    /// (`object_store` for the keys it names exactly, `raw` for the rest), elsewhere
    /// only a key [`check_key`] passes.
    /// Whether this bucket can hold `key` as it is (S3 and R2: any key they allow; the
    /// local directory and memory: a safe path); the error says why not.
    pub fn check(&self, key: &str) -> Result<(), StorageError> {
        self.target(key).map(|_| ())
    }

    fn target(&self, key: &str) -> Result<Target<'_>, StorageError> {
        match (&self.backend, &self.raw) {
            (Backend::Local(local), _) => check_key(key).map(|_| Target::Local(local)),
            // What S3 refuses is refused before any request, whichever client sends it.
            (Backend::Store(store), Some(raw)) => key::check_s3_key(key).map(|()| match key::exact_path(key) {
                Some(path) => Target::Store(store, path),
                None => Target::Raw(raw),
            }),
            (Backend::Store(store), None) => check_key(key).map(|path| Target::Store(store, path)),
        }
    }

    /// Streams every object under `prefix` (a `/`-separated key prefix, or the whole
    /// bucket), page by page: the listing is never held in memory.
    pub fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
        let prefix = prefix.map(str::trim).filter(|p| !p.is_empty());
        if let Some(raw) = &self.raw {
            return raw.list(prefix.map(|p| format!("{}/", p.trim_end_matches('/'))), None, false);
        }
        let prefix_path = match prefix {
            None => None,
            Some(p) => match check_key(p.trim_end_matches('/')) {
                Ok(path) => Some(path),
                Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
            },
        };
        let store = match &self.backend {
            Backend::Local(local) => {
                let dir = prefix_path.map(|p| p.to_string()).unwrap_or_default();
                return local.list(dir, None, false);
            }
            Backend::Store(store) => store,
        };
        let shown = prefix.unwrap_or("").to_owned();
        store
            .list(prefix_path.as_ref())
            .map(move |r| r.map(ObjectInfo::from).map_err(|e| StorageError::backend("list", &shown, e)))
            .boxed()
    }

    /// Streams the whole bucket in key order (byte order of the UTF-8 keys, as S3 and R2
    /// list), starting after `offset` when given. The pipeline's merge of sources with
    /// their WebPs relies on this order; the local backend walks its directories sorted so
    /// that it lists in the same order. Names that cannot be keys here (a local name that
    /// is not UTF-8 or that [`check_key`] refuses, an S3 entry that cannot be read) come as
    /// [`StorageError::Unlistable`] items, and the listing goes on after them.
    pub fn list_ordered(&self, offset: Option<&str>) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
        if let Some(raw) = &self.raw {
            return raw.list(None, offset.map(str::to_owned), false);
        }
        let store = match &self.backend {
            Backend::Local(local) => return local.list(String::new(), offset.map(str::to_owned), true),
            Backend::Store(store) => store,
        };
        let stream = match offset {
            Some(o) => match check_key(o) {
                Ok(p) => store.list_with_offset(None, &p),
                Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
            },
            None => store.list(None),
        };
        stream.map(|r| r.map(ObjectInfo::from).map_err(|e| StorageError::backend("list", "", e))).boxed()
    }

    /// The objects directly under `dir` (one level, no recursion). On S3, entries that
    /// cannot be read are left out: one odd key never fails its folder's listing.
    pub async fn list_dir(&self, dir: Option<&str>) -> Result<Vec<ObjectInfo>, StorageError> {
        if let Some(raw) = &self.raw {
            let prefix = dir.filter(|d| !d.is_empty()).map(|d| format!("{}/", d.trim_end_matches('/')));
            let mut objects = Vec::new();
            let mut listing = raw.list(prefix, None, true);
            while let Some(item) = listing.next().await {
                match item {
                    Ok(info) => objects.push(info),
                    Err(StorageError::Unlistable { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(objects);
        }
        let path = dir.filter(|d| !d.is_empty()).map(|d| check_key(d.trim_end_matches('/'))).transpose()?;
        let store = match &self.backend {
            Backend::Local(local) => return local.list_dir(path.as_ref().map(|p| p.as_ref()).unwrap_or("")).await,
            Backend::Store(store) => store,
        };
        let res = store
            .list_with_delimiter(path.as_ref())
            .await
            .map_err(|e| StorageError::backend("list", dir.unwrap_or(""), e))?;
        Ok(res.objects.into_iter().map(ObjectInfo::from).collect())
    }

    /// Whether the bucket exists and answers (`/ready`'s probe): one listing of `prefix`,
    /// a prefix that need not hold anything — a HEAD's 404 cannot tell a missing key from
    /// a missing bucket, a listing's can ([`StorageError::NoBucket`]); for a local bucket,
    /// its directory opened.
    pub async fn check_bucket(&self, prefix: &str) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(local) => local.check_root().await,
            Backend::Store(_) => self.list_dir(Some(prefix)).await.map(drop),
        }
    }

    /// Metadata of one object.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        match self.target(key)? {
            Target::Local(local) => local.head(key).await,
            Target::Raw(raw) => raw.head(key).await.map(|(info, _)| info),
            Target::Store(store, path) => {
                store.head(&path).await.map(ObjectInfo::from).map_err(|e| StorageError::backend("head", key, e))
            }
        }
    }

    /// Reads a whole object, refusing (before reading the body) one larger than `max_bytes`.
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<(ObjectInfo, Bytes), StorageError> {
        let (store, path) = match self.target(key)? {
            Target::Local(local) => return local.get(key, max_bytes).await,
            Target::Raw(raw) => return raw.get(key, max_bytes).await,
            Target::Store(store, path) => (store, path),
        };
        let res =
            store.get_opts(&path, GetOptions::default()).await.map_err(|e| StorageError::backend("get", key, e))?;
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
        if let Target::Local(local) = self.target(key)? {
            return local.put(key, data).await.map(Some);
        }
        self.put_mode(key, data, content_type, PutMode::Overwrite, None).await
    }

    /// Like [`Storage::put`] but only when no object exists (`If-None-Match: *`);
    /// [`StorageError::AlreadyExists`] otherwise. On the local backend it runs under the
    /// key's directory lock, like [`Storage::put_if_match`].
    pub async fn put_new(&self, key: &str, data: Bytes, content_type: &str) -> Result<Option<String>, StorageError> {
        if let Target::Local(local) = self.target(key)? {
            return local.put_locked(key, data, cas::Condition::Absent).await.map(Some);
        }
        self.put_mode(key, data, content_type, PutMode::Create, None).await
    }

    /// Like [`Storage::put`] but only over the version with `etag` (`If-Match`), a
    /// compare-and-swap; [`StorageError::Changed`] when the object is no longer that
    /// version or is gone. Returns the new version's ETag.
    ///
    /// On the local backend (where object_store has no compare-and-swap for files) the
    /// swap runs under an exclusive lock on the key's directory, and every version it
    /// writes gets an ETag no earlier version had: see `storage/cas.rs`.
    pub async fn put_if_match(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        etag: &str,
    ) -> Result<Option<String>, StorageError> {
        if let Target::Local(local) = self.target(key)? {
            return local.put_locked(key, data, cas::Condition::Matches(etag.to_owned())).await.map(Some);
        }
        let version = UpdateVersion { e_tag: Some(etag.to_owned()), version: None };
        self.put_mode(key, data, content_type, PutMode::Update(version), None).await
    }

    /// Writes a converted output under `key` by `write` (a plain PUT, `If-None-Match: *`
    /// or `If-Match`, as [`Storage::put`], [`Storage::put_new`], [`Storage::put_if_match`])
    /// with `Content-Type: image/webp` and, where the backend keeps metadata (S3, R2,
    /// MinIO, memory; not the local directory), the key of the `source` it was made from
    /// (`x-amz-meta-ics-source`, percent-encoded): [`Storage::output_source`] reads it
    /// back, so that only what this daemon made of a source is deleted with it.
    pub async fn put_output(
        &self,
        key: &str,
        data: Bytes,
        source: &str,
        write: OutputWrite,
    ) -> Result<Option<String>, StorageError> {
        if let Backend::Local(_) = &self.backend {
            return match write {
                OutputWrite::Overwrite => self.put(key, data, WEBP_CONTENT_TYPE).await,
                OutputWrite::Create => self.put_new(key, data, WEBP_CONTENT_TYPE).await,
                OutputWrite::Update(etag) => self.put_if_match(key, data, WEBP_CONTENT_TYPE, &etag).await,
            };
        }
        let mode = match write {
            OutputWrite::Overwrite => PutMode::Overwrite,
            OutputWrite::Create => PutMode::Create,
            OutputWrite::Update(etag) => PutMode::Update(UpdateVersion { e_tag: Some(etag), version: None }),
        };
        self.put_mode(key, data, WEBP_CONTENT_TYPE, mode, Some(source)).await
    }

    /// The source an output was made from, as [`Storage::put_output`] recorded it:
    /// `None` for an object this daemon did not write (uploaded by someone else, or
    /// written before outputs named their source) and on the local backend, which keeps
    /// no metadata. [`StorageError::NotFound`] when there is no such object.
    pub async fn output_source(&self, key: &str) -> Result<Option<String>, StorageError> {
        let decode = |v: &str| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
        let (store, path) = match self.target(key)? {
            Target::Local(local) => return local.head(key).await.map(|_| None),
            Target::Raw(raw) => return Ok(raw.metadata(key, SOURCE_METADATA).await?.as_deref().map(decode)),
            Target::Store(store, path) => (store, path),
        };
        let opts = GetOptions { head: true, ..Default::default() };
        let res = store.get_opts(&path, opts).await.map_err(|e| StorageError::backend("head", key, e))?;
        Ok(res.attributes.get(&Attribute::Metadata(SOURCE_METADATA.into())).map(|v| decode(v)))
    }

    async fn put_mode(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        mode: PutMode,
        source: Option<&str>,
    ) -> Result<Option<String>, StorageError> {
        let (store, path) = match self.target(key)? {
            Target::Local(_) => unreachable!("local puts are handled by the callers"),
            Target::Raw(raw) => {
                let write = match mode {
                    PutMode::Overwrite => raw::Write::Overwrite,
                    PutMode::Create => raw::Write::Create,
                    PutMode::Update(v) => raw::Write::Update(v.e_tag.unwrap_or_default()),
                };
                let meta = source.map(|s| (SOURCE_METADATA, encode_metadata(s)));
                return raw.put(key, data, content_type, write, meta).await;
            }
            Target::Store(store, path) => (store, path),
        };
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        if let Some(source) = source {
            attributes.insert(Attribute::Metadata(SOURCE_METADATA.into()), encode_metadata(source).into());
        }
        let op = if matches!(mode, PutMode::Update(_)) { "update" } else { "put" };
        let opts = PutOptions { mode, attributes, ..Default::default() };
        store
            .put_opts(&path, PutPayload::from_bytes(data), opts)
            .await
            .map(|r| r.e_tag)
            .map_err(|e| StorageError::backend(op, key, e))
    }

    /// The Content-Type an object is stored with, where the backend keeps one (the local
    /// backend keeps none).
    pub async fn content_type(&self, key: &str) -> Result<Option<String>, StorageError> {
        let (store, path) = match self.target(key)? {
            Target::Local(local) => return local.head(key).await.map(|_| None),
            Target::Raw(raw) => return raw.head(key).await.map(|(_, content_type)| content_type),
            Target::Store(store, path) => (store, path),
        };
        let opts = GetOptions { head: true, ..Default::default() };
        let res = store.get_opts(&path, opts).await.map_err(|e| StorageError::backend("head", key, e))?;
        Ok(res.attributes.get(&Attribute::ContentType).map(|v| v.to_string()))
    }

    /// Deletes one object; deleting a missing object is not an error. On the local
    /// backend it runs under the key's directory lock (so it cannot slip between a
    /// compare-and-swap's check and its write) and removes directories it leaves empty.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let (store, path) = match self.target(key)? {
            Target::Local(local) => return local.delete(key).await,
            Target::Raw(raw) => return raw.delete(key).await,
            Target::Store(store, path) => (store, path),
        };
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::backend("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buckets_beside_an_s3_bucket_share_its_request_window_and_others_do_not() {
        let s3 = |bucket: &str| {
            StorageConfig::S3(S3Config {
                endpoint: "http://127.0.0.1:9".into(),
                bucket: bucket.into(),
                buckets: vec!["a".into(), "b".into()],
                region: "us-east-1".into(),
                access_key: crate::secret::Secret::new("k"),
                secret_key: crate::secret::Secret::new("s"),
                virtual_hosted_style: false,
                retry: Default::default(),
            })
        };
        let a = Storage::open(&s3("a"), "a").unwrap();
        let b = a.open_beside(&s3("b"), "b").unwrap();
        assert_eq!(b.bucket(), "b");
        let alone = Storage::open(&s3("b"), "b").unwrap();
        let _held = a.limiter.as_ref().unwrap().acquire().await;
        assert_eq!(b.request_limit().unwrap().open, 1, "one window for both buckets");
        assert_eq!(alone.request_limit().unwrap().open, 0);
        // A local bucket beside another opens on its own (there is no window).
        let dir = tempfile::tempdir().unwrap();
        let local = StorageConfig::Local { root: dir.path().join("x") };
        let first = Storage::open(&local, "x").unwrap();
        assert!(first.open_beside(&local, "x").unwrap().request_limit().is_none());
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
