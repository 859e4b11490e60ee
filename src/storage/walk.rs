//! The local backend's listing, in S3's key order, through directory handles.
//!
//! `object_store`'s local listing follows the file system's order, but the pipeline needs
//! S3's: keys sorted by their UTF-8 bytes. Each directory's entries are sorted with
//! directories compared as `name/` (a directory `a` holds keys `a/…`, which sort after
//! `a.jpg` because `.` < `/`); a depth-first walk in that order then yields exact key
//! order, since every key under `a/` shares that prefix.
//!
//! Each directory is read and entered through a handle relative to its parent's, with
//! `O_NOFOLLOW`: symbolic links are never followed (nothing outside the root is listed),
//! also when a directory is swapped for a link during the walk. Temporary upload files
//! (`.ics-tmp-…`) are skipped. Every other name is listed, `#` included. A name that is
//! not UTF-8, or a file whose key [`check_key`] refuses (a control character or a
//! backslash in its name), cannot be a key this backend reads or writes safely, so it
//! comes as a [`StorageError::Unlistable`] item carrying the name (invalid bytes escaped
//! as `\xNN`) and why, for the run to count and ledger; the walk goes on after it.

use std::os::fd::OwnedFd;

use futures::stream::{self, BoxStream, StreamExt};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use tokio::sync::mpsc;

use super::beneath::{self, Beneath, Refused};
use super::error::{ObjectInfo, StorageError};
use super::files::{TEMP_PREFIX, fail, info_of};
use super::key::check_key;

type Tx = mpsc::Sender<Result<ObjectInfo, StorageError>>;

/// Streams every file under directory `dir` of the root `open` gives, in key order,
/// after `offset`.
pub(crate) fn list_ordered(
    open: impl FnOnce() -> Result<Beneath, Refused> + Send + 'static,
    dir: String,
    offset: Option<String>,
    report_unlistable: bool,
) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
    // A small channel: the walk runs ahead of its consumer by at most 256 entries.
    let (tx, rx) = mpsc::channel(256);
    tokio::task::spawn_blocking(move || {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let walk = Walk { offset: offset.as_deref(), report_unlistable, tx: &tx };
        // A missing directory under the root lists nothing; a missing root is a bucket
        // that is gone (unmounted, removed), not an empty one whose ledger a run may prune.
        let result = match open() {
            Err(e) if e.is_not_found() => Err(StorageError::NoBucket),
            root => match root.and_then(|b| b.dir(&dir, false)) {
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(fail("list", &dir)(e)),
                Ok(handle) => walk.dir(&handle, &prefix),
            },
        };
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
}

/// The regular files directly in `dir` (keys `prefix` + name), unsorted.
pub(crate) fn files_in(dir: &OwnedFd, prefix: &str) -> Result<Vec<ObjectInfo>, Refused> {
    Ok(entries(dir, prefix)?
        .into_iter()
        .filter_map(|(key, entry)| match entry {
            Entry::File(st) => Some(info_of(key, &st)),
            _ => None,
        })
        .collect())
}

enum Entry {
    File(Box<rustix::fs::Stat>),
    Dir(String),
    /// A name that cannot be a key here, and why.
    Unlistable(&'static str),
}

/// The entries of `dir` worth listing, sorted by key.
fn entries(dir: &OwnedFd, prefix: &str) -> Result<Vec<(String, Entry)>, Refused> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let Ok(name) = std::str::from_utf8(raw) else {
            out.push((format!("{prefix}{}", escape(raw)), Entry::Unlistable("its name is not valid UTF-8")));
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        // Gone since it was read: not listed.
        let Some(st) = beneath::stat(dir, name)? else { continue };
        match beneath::kind(&st) {
            FileType::Directory => out.push((format!("{prefix}{name}/"), Entry::Dir(name.to_owned()))),
            FileType::RegularFile => {
                let key = format!("{prefix}{name}");
                let entry = match check_key(&key) {
                    Ok(_) => Entry::File(Box::new(st)),
                    Err(StorageError::UnsafeKey { reason, .. }) => Entry::Unlistable(reason),
                    Err(_) => Entry::Unlistable("not a valid object key"),
                };
                out.push((key, entry));
            }
            // Links are never followed; FIFOs, sockets and devices are not objects.
            _ => {}
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

struct Walk<'a> {
    offset: Option<&'a str>,
    report_unlistable: bool,
    tx: &'a Tx,
}

impl Walk<'_> {
    /// Lists `dir` (whose keys start with `prefix`) in key order. `Ok` also when the
    /// receiver went away (the listing was dropped).
    fn dir(&self, dir: &OwnedFd, prefix: &str) -> Result<(), StorageError> {
        let fail = fail("list", prefix);
        for (key, entry) in entries(dir, prefix).map_err(fail)? {
            let item = match entry {
                Entry::Dir(name) => {
                    // Skip directories whose every key sorts at or before the offset.
                    if self.offset.is_some_and(|o| key.as_str() < o && !o.starts_with(&key)) {
                        continue;
                    }
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    match rustix::fs::openat(dir, name.as_str(), flags, Mode::empty()) {
                        Ok(sub) => self.dir(&sub, &key)?,
                        // Removed, or swapped for a link or a file, since it was read.
                        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => {}
                        Err(e) => return Err(fail(e.into())),
                    }
                    continue;
                }
                _ if self.offset.is_some_and(|o| key.as_str() <= o) => continue,
                Entry::File(st) => Ok(info_of(key, &st)),
                Entry::Unlistable(reason) if self.report_unlistable => Err(StorageError::Unlistable { key, reason }),
                Entry::Unlistable(_) => continue,
            };
            if self.tx.blocking_send(item).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// `raw` as text: valid UTF-8 kept, every other byte as `\xNN`.
pub(crate) fn escape(raw: &[u8]) -> String {
    let mut out = String::new();
    for chunk in raw.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}
