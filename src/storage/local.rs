//! The local-directory backend: every read, write, listing and delete of a key runs
//! through directory handles opened beneath the root ([`super::beneath`]), so nothing
//! outside the root is read or written, whatever links the directory holds or gains.
//!
//! Reads open the file with `O_NOFOLLOW | O_NONBLOCK` relative to its directory's handle
//! (a FIFO cannot hang a read; anything but a regular file is "not found"). A plain put
//! writes a temporary file in the key's directory and renames it over the key, both
//! relative to that directory's handle. Conditional writes and deletes are in
//! [`super::cas`], the key-ordered listing in [`super::walk`].
//!
//! Temporary files are named `.ics-tmp-<pid>-<n>`: the listing skips that reserved
//! pattern and lists every other name, `#` included.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use bytes::Bytes;
use futures::stream::BoxStream;
use rustix::fs::{Mode, OFlags};

use super::beneath::{self, Beneath, Refused, Resolver};
use super::cas::{self, Condition};
use super::error::{ObjectInfo, StorageError};
use super::files::{create_temp, etag_of, fail, info_of};
use super::walk;

/// A directory used as a bucket.
#[derive(Debug, Clone)]
pub(crate) struct LocalBucket {
    root: PathBuf,
    resolver: Resolver,
}

impl LocalBucket {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root, resolver: Resolver::Openat2 }
    }

    /// The same bucket, resolving paths with `resolver` (tests run both).
    #[cfg(test)]
    pub(crate) fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    pub(crate) fn beneath(&self) -> Result<Beneath, Refused> {
        Beneath::open(&self.root, self.resolver)
    }

    pub(crate) async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let me = self.clone();
        blocking("head", key, move |key| {
            let (dir, name) = beneath::split(key);
            let fail = fail("head", key);
            let dir = me.beneath().and_then(|b| b.dir(dir, false)).map_err(fail)?;
            match beneath::stat(&dir, name).map_err(fail)? {
                Some(st) if beneath::kind(&st) == rustix::fs::FileType::Symlink => Err(fail(Refused::Link)),
                Some(st) if beneath::kind(&st) == rustix::fs::FileType::RegularFile => Ok(info_of(key.to_owned(), &st)),
                _ => Err(StorageError::NotFound { key: key.to_owned() }),
            }
        })
        .await
    }

    /// `Ok` when the root directory can be opened; [`StorageError::NoBucket`] when it is gone.
    pub(crate) async fn check_root(&self) -> Result<(), StorageError> {
        let me = self.clone();
        blocking("open", "", move |key| match me.beneath() {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(StorageError::NoBucket),
            Err(e) => Err(fail("open", key)(e)),
        })
        .await
    }

    /// Reads a whole object, refusing (before reading the body) one over `max_bytes`.
    pub(crate) async fn get(&self, key: &str, max_bytes: u64) -> Result<(ObjectInfo, Bytes), StorageError> {
        let me = self.clone();
        blocking("get", key, move |key| {
            let (dir, name) = beneath::split(key);
            let fail = fail("get", key);
            let dir = me.beneath().and_then(|b| b.dir(dir, false)).map_err(fail)?;
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|e| fail(e.into()))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| fail(e.into()))?;
            if beneath::kind(&st) != rustix::fs::FileType::RegularFile {
                return Err(StorageError::NotFound { key: key.to_owned() });
            }
            let info = info_of(key.to_owned(), &st);
            if info.size > max_bytes {
                return Err(StorageError::TooLarge { key: key.to_owned(), size: info.size, max: max_bytes });
            }
            let mut body = Vec::with_capacity(info.size as usize);
            File::from(fd).take(info.size + 1).read_to_end(&mut body).map_err(|e| fail(e.into()))?;
            if body.len() as u64 != info.size {
                // A short read must never become a short WebP.
                let e = io::Error::other(format!("body was {} bytes, expected {}", body.len(), info.size));
                return Err(fail(e.into()));
            }
            Ok((info, Bytes::from(body)))
        })
        .await
    }

    /// Writes `data` under `key`, replacing what was there (a link there is replaced, not
    /// followed). Returns the new version's ETag.
    pub(crate) async fn put(&self, key: &str, data: Bytes) -> Result<String, StorageError> {
        let me = self.clone();
        blocking("put", key, move |key| {
            let (dir, name) = beneath::split(key);
            let fail = fail("put", key);
            let dir = me.beneath().and_then(|b| b.dir(dir, true)).map_err(fail)?;
            let (mut tmp, tmp_name) = create_temp(&dir).map_err(fail)?;
            let written = tmp.write_all(&data).and_then(|()| tmp.metadata()).map_err(Refused::Io).and_then(|meta| {
                rustix::fs::renameat(&dir, tmp_name.as_str(), &dir, name)?;
                Ok(etag_of(&meta))
            });
            if written.is_err() {
                let _ = rustix::fs::unlinkat(&dir, tmp_name.as_str(), rustix::fs::AtFlags::empty());
            }
            written.map_err(fail)
        })
        .await
    }

    /// A conditional write under the directory lock; see [`super::cas`].
    pub(crate) async fn put_locked(&self, key: &str, data: Bytes, cond: Condition) -> Result<String, StorageError> {
        let op = if matches!(cond, Condition::Absent) { "put" } else { "update" };
        let me = self.clone();
        blocking(op, key, move |key| cas::put_locked(&me.beneath().map_err(fail(op, key))?, key, &data, cond)).await
    }

    /// Deletes `key` (missing is fine) and the directories it leaves empty.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let me = self.clone();
        blocking("delete", key, move |key| cas::delete_locked(&me.beneath().map_err(fail("delete", key))?, key)).await
    }

    /// The objects directly in directory `dir` (`""`: the root).
    pub(crate) async fn list_dir(&self, dir: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let me = self.clone();
        blocking("list", dir, move |dir| {
            let fail = fail("list", dir);
            let handle = match me.beneath().and_then(|b| b.dir(dir, false)) {
                Err(e) if e.is_not_found() => return Ok(Vec::new()),
                r => r.map_err(fail)?,
            };
            let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
            walk::files_in(&handle, &prefix).map_err(fail)
        })
        .await
    }

    /// Streams the objects under directory `dir` (`""`: all) in key order, after `offset`.
    /// With `report_unlistable`, names that cannot be keys come as
    /// [`StorageError::Unlistable`] items; otherwise they are skipped.
    pub(crate) fn list(
        &self,
        dir: String,
        offset: Option<String>,
        report_unlistable: bool,
    ) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
        let me = self.clone();
        walk::list_ordered(move || me.beneath(), dir, offset, report_unlistable)
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
        source: io::Error::other(e),
    })?
}
