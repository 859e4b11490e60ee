//! The local backend's listing in key order.
//!
//! `object_store`'s local listing follows the file system's order, but the pipeline
//! needs S3's: keys sorted by their UTF-8 bytes. Each directory's entries are sorted
//! with directories compared as `name/` (a directory `a` holds keys `a/…`, which sort
//! after `a.jpg` because `.` < `/`); a depth-first walk in that order then yields exact
//! key order, since every key under `a/` shares that prefix. Symbolic links are never
//! followed (nothing outside the root is listed), and `object_store`'s in-progress
//! upload files (`name#n`) are skipped.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::storage::{ObjectInfo, StorageError};

type Tx = mpsc::Sender<Result<ObjectInfo, StorageError>>;

/// Streams every file under `root` in key order, after `offset` if given.
pub fn list_ordered(root: PathBuf, offset: Option<String>) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
    // A small channel: the walk runs ahead of its consumer by at most 256 entries.
    let (tx, rx) = mpsc::channel(256);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = walk(&root, "", offset.as_deref(), &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
}

/// Lists `dir` (whose keys start with `prefix`) in key order. `Ok` also when the
/// receiver went away (the listing was dropped).
fn walk(dir: &Path, prefix: &str, offset: Option<&str>, tx: &Tx) -> Result<(), StorageError> {
    let err = |e: std::io::Error| StorageError::Setup(format!("listing {}: {e}", dir.display()));
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let meta = entry.metadata().map_err(err)?;
        if meta.file_type().is_symlink() || name.contains('#') {
            continue;
        }
        let key = if meta.is_dir() { format!("{prefix}{name}/") } else { format!("{prefix}{name}") };
        entries.push((key, meta));
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (key, meta) in entries {
        if meta.is_dir() {
            // Skip directories whose every key sorts at or before the offset.
            if offset.is_some_and(|o| key.as_str() < o && !o.starts_with(&key)) {
                continue;
            }
            walk(&dir.join(&key[prefix.len()..key.len() - 1]), &key, offset, tx)?;
        } else if meta.is_file() {
            if offset.is_some_and(|o| key.as_str() <= o) {
                continue;
            }
            let info = ObjectInfo {
                etag: Some(format!(
                    "{:x}-{:x}-{:x}",
                    meta.ino(),
                    meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                    meta.len()
                )),
                last_modified: DateTime::<Utc>::from(meta.modified().map_err(err)?),
                size: meta.len(),
                key,
            };
            if tx.blocking_send(Ok(info)).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use crate::storage::Storage;

    #[tokio::test]
    async fn local_listing_is_in_s3_key_order_and_resumes_after_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        for key in ["a.jpg", "a/x.jpg", "a/y/z.png", "ab.jpg", "a.k.jpg", "a.webp", "B.jpg", "ü.jpg", "z/1", "a0"] {
            let p = root.join(key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, key).unwrap();
        }
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let s = Storage::local(&root).unwrap();
        let keys: Vec<String> = s.list_ordered(None).map(|r| r.unwrap().key).collect().await;
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(keys.len(), 10, "{keys:?}");
        assert!(!keys.iter().any(|k| k.starts_with("link")), "symlinks are not followed");
        let after: Vec<String> = s.list_ordered(Some("a/x.jpg")).map(|r| r.unwrap().key).collect().await;
        assert_eq!(after, expected.iter().filter(|k| k.as_str() > "a/x.jpg").cloned().collect::<Vec<_>>());
    }
}
