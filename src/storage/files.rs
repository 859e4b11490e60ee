//! What the local backend's parts share about single files: the error a refusal becomes
//! for a key, the [`ObjectInfo`] (and ETag) of a file, and temporary upload files.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::beneath::Refused;
use super::error::{ObjectInfo, StorageError};

/// The prefix of in-progress upload files (never listed).
pub(crate) const TEMP_PREFIX: &str = ".ics-tmp-";

/// Maps a refusal for `key` to the error callers see: a link on the path makes the key
/// unsafe; the OS error never carries a path.
pub(crate) fn fail<'k>(op: &'static str, key: &'k str) -> impl Fn(Refused) -> StorageError + Copy + 'k {
    move |r| match r {
        Refused::Link => StorageError::UnsafeKey { key: key.to_owned(), reason: "a symbolic link is on its path" },
        Refused::Io(e) if e.kind() == io::ErrorKind::NotFound => StorageError::NotFound { key: key.to_owned() },
        Refused::Io(source) => StorageError::Io { op, key: key.to_owned(), source },
    }
}

/// What a listing or HEAD reports for a file: object_store's ETag (`"inode-mtime_µs-size"`),
/// so ETags recorded before this backend existed still match.
pub(crate) fn info_of(key: String, st: &rustix::fs::Stat) -> ObjectInfo {
    let micros = stat_micros(st);
    let last_modified = DateTime::<Utc>::from_timestamp_micros(micros as i64).unwrap_or_default();
    ObjectInfo { key, size: st.st_size as u64, last_modified, etag: Some(etag(st.st_ino, micros, st.st_size as u64)) }
}

/// Creates a new temporary file in `dir`.
pub(crate) fn create_temp(dir: &impl AsFd) -> Result<(File, String), Refused> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for _ in 0..1000 {
        let name = format!("{TEMP_PREFIX}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        match rustix::fs::openat(dir, name.as_str(), flags, Mode::from_raw_mode(0o666)) {
            Ok(fd) => return Ok((File::from(fd), name)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Refused::Io(io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary file name")))
}

/// The ETag of a version: object_store's `"inode-mtime_µs-size"` (hex).
pub(crate) fn etag(ino: u64, mtime_micros: u128, len: u64) -> String {
    format!("\"{ino:x}-{mtime_micros:x}-{len:x}\"")
}

/// The ETag of a file from its metadata.
pub(crate) fn etag_of(meta: &Metadata) -> String {
    etag(meta.ino(), meta.modified().map(micros).unwrap_or_default(), meta.len())
}

/// A stat's mtime in microseconds since the epoch (0 before it, as object_store has it).
pub(crate) fn stat_micros(st: &rustix::fs::Stat) -> u128 {
    if st.st_mtime < 0 {
        return 0;
    }
    st.st_mtime as u128 * 1_000_000 + st.st_mtime_nsec as u128 / 1_000
}

/// Microseconds since the epoch (0 before it).
pub(crate) fn micros(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()
}
