//! The local backend's conditional writes (create-if-absent, compare-and-swap), which
//! object_store does not make atomic for files, and its deletes.
//!
//! [`put_locked`] (`If-None-Match: *` and `If-Match`) and [`delete_locked`] take an
//! exclusive advisory lock (`flock`) on the key's directory, so writers in any process on
//! the root are serialised per directory. Under the lock a write reads the current
//! version's ETag exactly as `head` reports it (`"inode-mtime_µs-size"`), checks the
//! condition, writes a temporary file (removed on error), fsyncs it and publishes it: a
//! hard link for create-if-absent, a rename over the old version for compare-and-swap —
//! every call relative to the directory's handle, opened beneath the root with no link
//! followed ([`super::beneath`]). A lock taken on a directory that was meanwhile removed
//! (deletes remove emptied directories, under the same lock) is noticed and retaken.
//!
//! **ETags never repeat.** A false match would let a stale compare-and-swap (a lease
//! holder that lost its lease) overwrite a newer version. The inode does not make the
//! ETag unique: a rename frees the old version's inode, and ext4 hands it to the next
//! temporary file at once. Nor does the size (lease bodies keep theirs), nor a
//! kernel-stamped mtime, which is only as fine as the clock tick (often 4 ms). So each
//! locked write stamps its file's mtime itself: the current time in whole microseconds,
//! but at least one microsecond after the version it replaces, and before releasing the
//! lock it waits until the clock has passed that stamp. The versions a key gets through
//! these writes thus carry strictly increasing mtimes, also across a delete and a new
//! create, and their ETags all differ. The stamp is read back; a file system that keeps
//! coarser times (FAT, ext2) is refused with an `Unsupported` error rather than risk a
//! false match. Not covered: plain `put`s (they neither lock nor stamp) and a wall
//! clock stepped backwards past a deleted version's stamp (within the lock's 10 ms wait
//! it is still covered).

use std::fs::{File, Metadata};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use super::beneath::{self, Beneath, Refused};
use super::error::StorageError;
use super::files::{create_temp, etag, etag_of, fail, micros, stat_micros};

/// What a conditional write requires of the current version.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// No object (`If-None-Match: *`).
    Absent,
    /// The version with this ETag (`If-Match`).
    Matches(String),
}

/// Writes `data` to `key` if `cond` holds, under the directory lock; returns the new
/// version's ETag. See the module documentation.
pub(crate) fn put_locked(b: &Beneath, key: &str, data: &[u8], cond: Condition) -> Result<String, StorageError> {
    let op = if matches!(cond, Condition::Absent) { "put" } else { "update" };
    let fail = fail(op, key);
    let (dir, name) = beneath::split(key);
    let Some(lock) = lock_dir(b, dir, true).map_err(fail)? else { unreachable!("lock_dir creates the directory") };

    // The current version, as `head` sees it. A link there is refused, not followed.
    let current = beneath::stat(&lock, name).map_err(fail)?;
    if current.as_ref().is_some_and(|st| beneath::kind(st) == FileType::Symlink) {
        return Err(fail(Refused::Link));
    }
    let current = current.filter(|st| beneath::kind(st) != FileType::Directory);
    match &cond {
        Condition::Absent if current.is_some() => return Err(StorageError::AlreadyExists { key: key.to_owned() }),
        Condition::Absent => {}
        Condition::Matches(expected) => {
            let now = current.as_ref().map(|st| etag(st.st_ino, stat_micros(st), st.st_size as u64));
            if now.as_deref() != Some(expected.as_str()) {
                return Err(StorageError::Changed { key: key.to_owned() });
            }
        }
    }

    // The new version's mtime: now, but always after the version it replaces.
    let mut stamp = micros(SystemTime::now());
    if let Some(c) = &current {
        stamp = stamp.max(stat_micros(c) + 1);
    }
    let (tmp, tmp_name) = create_temp(&lock).map_err(fail)?;
    let written = write_stamped(tmp, data, stamp).map_err(Refused::Io).map_err(fail).and_then(|meta| {
        match cond {
            Condition::Absent => match rustix::fs::linkat(&lock, tmp_name.as_str(), &lock, name, AtFlags::empty()) {
                Err(Errno::EXIST) => Err(StorageError::AlreadyExists { key: key.to_owned() }),
                r => r.map_err(|e| fail(e.into())),
            },
            Condition::Matches(_) => {
                rustix::fs::renameat(&lock, tmp_name.as_str(), &lock, name).map_err(|e| fail(e.into()))
            }
        }?;
        Ok(meta)
    });
    // The temporary name is still ours after an error or a hard link; after a rename it
    // is gone.
    if written.is_err() || matches!(cond, Condition::Absent) {
        let _ = rustix::fs::unlinkat(&lock, tmp_name.as_str(), AtFlags::empty());
    }
    let meta = written?;
    rustix::fs::fsync(&lock).map_err(|e| fail(e.into()))?;

    // Let the clock pass the stamp before the next writer can take the lock, so that its
    // "now" is later than every stamp given so far.
    let deadline = Instant::now() + Duration::from_millis(10);
    while micros(SystemTime::now()) <= stamp && Instant::now() < deadline {
        std::thread::yield_now();
    }
    Ok(etag_of(&meta))
}

/// Deletes `key` under the directory lock (a missing file is not an error), then the
/// directories it leaves empty up to the root, each under its own lock.
pub(crate) fn delete_locked(b: &Beneath, key: &str) -> Result<(), StorageError> {
    let fail = fail("delete", key);
    let (mut dir, name) = beneath::split(key);
    let mut lock = match lock_dir(b, dir, false) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Ok(()),
        Err(e) => return Err(fail(e)),
    };
    if beneath::stat(&lock, name).map_err(fail)?.is_some_and(|st| beneath::kind(&st) == FileType::Directory) {
        return Ok(());
    }
    match rustix::fs::unlinkat(&lock, name, AtFlags::empty()) {
        Ok(()) => {}
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(fail(e.into())),
    }
    while !dir.is_empty() {
        let (parent, child) = beneath::split(dir);
        let Ok(parent_fd) = b.dir(parent, false) else { break };
        if rustix::fs::unlinkat(&parent_fd, child, AtFlags::REMOVEDIR).is_err() {
            break;
        }
        drop(lock);
        dir = parent;
        lock = match lock_dir(b, dir, false) {
            Ok(Some(lock)) => lock,
            _ => break,
        };
    }
    Ok(())
}

/// Writes the temporary file, stamps its mtime, syncs it and checks the stamp held.
fn write_stamped(mut tmp: File, data: &[u8], stamp: u128) -> io::Result<Metadata> {
    tmp.write_all(data)?;
    let micros = u64::try_from(stamp).map_err(io::Error::other)?;
    tmp.set_modified(UNIX_EPOCH + Duration::from_micros(micros))?;
    tmp.sync_all()?;
    let meta = tmp.metadata()?;
    if meta.modified().map(self::micros)? != stamp {
        return Err(io::Error::new(
            ErrorKind::Unsupported,
            "the file system keeps modification times too coarse for a safe compare-and-swap",
        ));
    }
    Ok(meta)
}

/// Takes the exclusive lock on directory `dir` beneath the root (creating it when
/// `create`); `None` when it does not exist and `create` is false. Retakes the lock if
/// the directory was replaced meanwhile.
fn lock_dir(b: &Beneath, dir: &str, create: bool) -> Result<Option<File>, Refused> {
    for _ in 0..100 {
        let handle = match b.dir(dir, create) {
            Err(e) if e.is_not_found() && create => continue,
            Err(e) if e.is_not_found() => return Ok(None),
            r => File::from(r?),
        };
        handle.lock()?;
        let locked = handle.metadata()?;
        match b.dir(dir, false) {
            Ok(now) => {
                let now = rustix::fs::fstat(&now)?;
                if now.st_dev == locked.dev() && now.st_ino == locked.ino() {
                    return Ok(Some(handle));
                }
            }
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Refused::Io(io::Error::other("its directory kept being removed while it was being locked")))
}
