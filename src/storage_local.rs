//! The local backend's own pieces: the listing in key order, and conditional writes
//! (create-if-absent, compare-and-swap) that object_store does not make atomic for files.
//!
//! **Listing.** `object_store`'s local listing follows the file system's order, but the
//! pipeline needs S3's: keys sorted by their UTF-8 bytes. Each directory's entries are
//! sorted with directories compared as `name/` (a directory `a` holds keys `a/…`, which
//! sort after `a.jpg` because `.` < `/`); a depth-first walk in that order then yields
//! exact key order, since every key under `a/` shares that prefix. Symbolic links are
//! never followed (nothing outside the root is listed), and in-progress upload files
//! (`name#n`) are skipped.
//!
//! **Conditional writes.** [`put_locked`] (`If-None-Match: *` and `If-Match`) and
//! [`delete_locked`] take an exclusive advisory lock (`flock`) on the key's directory,
//! so writers in any process on the root are serialised per directory. Under the lock a
//! write reads the current version's ETag exactly as `head` reports it (object_store's
//! `"inode-mtime_µs-size"`), checks the condition, writes a `name#n` temporary file
//! (removed on error), fsyncs it and publishes it: a hard link for create-if-absent, a
//! rename over the old version for compare-and-swap. A lock taken on a directory that
//! was meanwhile removed (deletes remove emptied directories, under the same lock) is
//! noticed and retaken. Directories on the key's path must be real directories: a
//! symbolic link there is refused, so nothing outside the root is written.
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

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
                // The same ETag `head` gives, so a listed ETag can be used with `If-Match`.
                etag: Some(etag_of(&meta)),
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

/// What a conditional write requires of the current version.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// No object (`If-None-Match: *`).
    Absent,
    /// The version with this ETag (`If-Match`).
    Matches(String),
}

/// Writes `data` to `file` (the file of `key`, inside `root`) if `cond` holds, under the
/// directory lock; returns the new version's ETag. See the module documentation.
pub(crate) fn put_locked(
    root: &Path,
    file: &Path,
    key: &str,
    data: &[u8],
    cond: Condition,
) -> Result<String, StorageError> {
    let op = if matches!(cond, Condition::Absent) { "put" } else { "update" };
    let io = io_error(op, key);
    let dir = parent(file, key)?;
    let Some(lock) = lock_dir(root, dir, key, op, true)? else { unreachable!("lock_dir creates the directory") };

    // The current version, as `head` sees it (following a symbolic link, as it does).
    let current = match fs::metadata(file) {
        Ok(m) if !m.is_dir() => Some(m),
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    match &cond {
        Condition::Absent if fs::symlink_metadata(file).is_ok() => {
            return Err(StorageError::AlreadyExists { key: key.to_owned() });
        }
        Condition::Absent => {}
        Condition::Matches(etag) => {
            if current.as_ref().map(etag_of).as_deref() != Some(etag.as_str()) {
                return Err(StorageError::Changed { key: key.to_owned() });
            }
        }
    }

    // The new version's mtime: now, but always after the version it replaces.
    let mut stamp = micros(SystemTime::now());
    if let Some(c) = &current {
        stamp = stamp.max(micros(c.modified().map_err(io)?) + 1);
    }
    let (tmp, tmp_path) = create_temp(file).map_err(io)?;
    let renamed = matches!(cond, Condition::Matches(_));
    let written = write_stamped(tmp, data, stamp).map_err(io).and_then(|meta| {
        match cond {
            Condition::Absent => match fs::hard_link(&tmp_path, file) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    Err(StorageError::AlreadyExists { key: key.to_owned() })
                }
                r => r.map_err(io),
            },
            Condition::Matches(_) => fs::rename(&tmp_path, file).map_err(io),
        }?;
        Ok(meta)
    });
    // The temporary name is still ours after an error or a hard link. After a rename it
    // is not: an unlocked plain `put` may already have taken it for its own upload.
    if written.is_err() || !renamed {
        let _ = fs::remove_file(&tmp_path);
    }
    let meta = written?;
    lock.sync_all().map_err(io)?;

    // Let the clock pass the stamp before the next writer can take the lock, so that its
    // "now" is later than every stamp given so far.
    let deadline = Instant::now() + Duration::from_millis(10);
    while micros(SystemTime::now()) <= stamp && Instant::now() < deadline {
        std::thread::yield_now();
    }
    Ok(etag_of(&meta))
}

/// Deletes `file` under the directory lock (a missing file is not an error), then the
/// directories it leaves empty up to `root`, each under its own lock.
pub(crate) fn delete_locked(root: &Path, file: &Path, key: &str) -> Result<(), StorageError> {
    let io = io_error("delete", key);
    let mut dir = parent(file, key)?;
    let Some(mut lock) = lock_dir(root, dir, key, "delete", false)? else { return Ok(()) };
    match fs::remove_file(file) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    }
    while dir != root && fs::remove_dir(dir).is_ok() {
        drop(lock);
        dir = parent(dir, key)?;
        lock = match lock_dir(root, dir, key, "delete", false) {
            Ok(Some(lock)) => lock,
            _ => break,
        };
    }
    Ok(())
}

/// The ETag object_store's local backend gives a file (`"inode-mtime_µs-size"`, hex).
pub(crate) fn etag_of(meta: &Metadata) -> String {
    let mtime = meta.modified().map(micros).unwrap_or_default();
    format!("\"{:x}-{mtime:x}-{:x}\"", meta.ino(), meta.len())
}

/// Microseconds since the epoch (0 before it, as object_store's ETag has it).
fn micros(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()
}

fn io_error<'k>(op: &'static str, key: &'k str) -> impl Fn(io::Error) -> StorageError + Copy + 'k {
    move |source| StorageError::Io { op, key: key.to_owned(), source }
}

fn parent<'a>(path: &'a Path, key: &str) -> Result<&'a Path, StorageError> {
    path.parent().ok_or_else(|| outside_root(key))
}

fn outside_root(key: &str) -> StorageError {
    StorageError::UnsafeKey { key: key.to_owned(), reason: "outside the bucket's root" }
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

/// Creates `name#n` next to `file`, with the first free `n`.
fn create_temp(file: &Path) -> io::Result<(File, PathBuf)> {
    for n in 1..10_000 {
        let mut path = file.as_os_str().to_owned();
        path.push(format!("#{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path.into())),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(ErrorKind::AlreadyExists, "no free temporary file name"))
}

/// Takes the exclusive lock on `dir` (creating it and its parents under `root` when
/// `create`); `None` when it does not exist and `create` is false. Refuses a symbolic
/// link on the way, and retakes the lock if the directory was replaced meanwhile.
fn lock_dir(root: &Path, dir: &Path, key: &str, op: &'static str, create: bool) -> Result<Option<File>, StorageError> {
    let io = io_error(op, key);
    for _ in 0..100 {
        if !real_dir(root, dir, key, op, create)? {
            return Ok(None);
        }
        let handle = match File::open(dir) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        handle.lock().map_err(io)?;
        let locked = handle.metadata().map_err(io)?;
        match fs::symlink_metadata(dir) {
            Ok(m) if m.dev() == locked.dev() && m.ino() == locked.ino() => return Ok(Some(handle)),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(io::Error::other("its directory kept being removed while it was being locked")))
}

/// Whether `dir` (inside `root`) is there, each step a real directory; creates the
/// missing steps when `create`. A symbolic link on the way makes the key unsafe.
fn real_dir(root: &Path, dir: &Path, key: &str, op: &'static str, create: bool) -> Result<bool, StorageError> {
    let io = io_error(op, key);
    let rel = dir.strip_prefix(root).map_err(|_| outside_root(key))?;
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        let meta = match fs::symlink_metadata(&at) {
            Err(e) if e.kind() == ErrorKind::NotFound && create => match fs::create_dir(&at) {
                Ok(()) => continue,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => fs::symlink_metadata(&at).map_err(io)?,
                Err(e) => return Err(io(e)),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            r => r.map_err(io)?,
        };
        if meta.file_type().is_symlink() {
            let reason = "a directory on its path is a symbolic link";
            return Err(StorageError::UnsafeKey { key: key.to_owned(), reason });
        }
        if !meta.is_dir() {
            return Err(io(io::Error::new(ErrorKind::NotADirectory, "a file is where a directory should be")));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures::StreamExt;

    use crate::storage::{Storage, StorageError};

    const JSON: &str = "application/json";

    /// Every file name under `dir`, recursively.
    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            out.push(entry.file_name().to_string_lossy().into_owned());
            if entry.file_type().unwrap().is_dir() {
                out.extend(names(&entry.path()));
            }
        }
        out
    }

    #[tokio::test]
    async fn local_create_if_absent_and_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let s = Storage::local(&root).unwrap();
        let key = "leases/shard-1.json";

        let e1 = s.put_new(key, Bytes::from_static(b"one"), JSON).await.unwrap().unwrap();
        assert_eq!(s.head(key).await.unwrap().etag.as_deref(), Some(e1.as_str()));
        let err = s.put_new(key, Bytes::from_static(b"again"), JSON).await.unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");

        let read = s.head(key).await.unwrap().etag.unwrap();
        let e2 = s.put_if_match(key, Bytes::from_static(b"two"), JSON, &read).await.unwrap().unwrap();
        assert_ne!(e2, e1);
        let (info, body) = s.get(key, 100).await.unwrap();
        assert_eq!(info.etag.as_deref(), Some(e2.as_str()), "the returned ETag is the one head reports");
        assert_eq!(&body[..], b"two");

        let err = s.put_if_match(key, Bytes::from_static(b"stale"), JSON, &e1).await.unwrap_err();
        assert!(matches!(err, StorageError::Changed { .. }), "{err}");
        assert_eq!(&s.get(key, 100).await.unwrap().1[..], b"two");
        let err = s.put_if_match("leases/none.json", Bytes::from_static(b"x"), JSON, &e2).await.unwrap_err();
        assert!(matches!(err, StorageError::Changed { .. }), "{err}");
        assert!(matches!(s.head("leases/none.json").await, Err(StorageError::NotFound { .. })));

        // Missing directories are created; deleting removes them again; nothing temporary lingers.
        let e3 = s.put_new("a/b/c.json", Bytes::from_static(b"{}"), JSON).await.unwrap().unwrap();
        let err = s.put_if_match("a/b/c.json", Bytes::new(), JSON, &e2).await.unwrap_err();
        assert!(matches!(err, StorageError::Changed { .. }), "{err}");
        s.put_if_match("a/b/c.json", Bytes::from_static(b"[]"), JSON, &e3).await.unwrap();
        assert!(!names(&root).iter().any(|n| n.contains('#')), "{:?}", names(&root));
        s.delete("a/b/c.json").await.unwrap();
        s.delete("a/b/c.json").await.unwrap();
        assert!(!root.join("a").exists());
        assert!(root.exists());
        s.delete(key).await.unwrap();
        assert!(!root.join("leases").exists());
        let e4 = s.put_new(key, Bytes::from_static(b"one"), JSON).await.unwrap().unwrap();
        assert_ne!(e4, e1);
    }

    #[tokio::test]
    async fn local_conditional_writes_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("k.json"), b"outside").unwrap();
        let s = Storage::local(&root).unwrap();
        let etag = s.put_new("k.json", Bytes::from_static(b"in"), JSON).await.unwrap().unwrap();
        for key in ["../outside/k.json", "/etc/passwd", "a//b", "./k.json"] {
            let data = Bytes::from_static(b"x");
            let err = s.put_new(key, data.clone(), JSON).await.unwrap_err();
            assert!(matches!(err, StorageError::UnsafeKey { .. }), "{key:?} gave {err}");
            let err = s.put_if_match(key, data, JSON, &etag).await.unwrap_err();
            assert!(matches!(err, StorageError::UnsafeKey { .. }), "{key:?} gave {err}");
            let err = s.delete(key).await.unwrap_err();
            assert!(matches!(err, StorageError::UnsafeKey { .. }), "{key:?} gave {err}");
        }
        // A symbolic link to a directory outside is not followed by the locked writes.
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let outside_etag = s.head("link/k.json").await.unwrap().etag.unwrap();
        let results = [
            s.put_new("link/new.json", Bytes::from_static(b"x"), JSON).await.map(drop),
            s.put_new("link/sub/new.json", Bytes::from_static(b"x"), JSON).await.map(drop),
            s.put_if_match("link/k.json", Bytes::from_static(b"x"), JSON, &outside_etag).await.map(drop),
            s.delete("link/k.json").await,
        ];
        for r in results {
            assert!(matches!(r, Err(StorageError::UnsafeKey { .. })), "{r:?}");
        }
        assert_eq!(std::fs::read(outside.join("k.json")).unwrap(), b"outside");
        assert_eq!(names(&outside), ["k.json"]);
    }

    /// Eight writers (separate `Storage`s, as separate processes would have) each read the
    /// counter and write it plus one with `If-Match`: every success must have read the
    /// version just before it, so the final counter is the number of successes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn concurrent_compare_and_swaps_lose_no_update() {
        const WRITERS: usize = 8;
        const SUCCESSES: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let key = "counter";
        Storage::local(&root).unwrap().put_new(key, Bytes::from_static(b"00000000"), JSON).await.unwrap();
        let wins = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let (s, wins) = (Storage::local(&root).unwrap(), wins.clone());
            tasks.push(tokio::spawn(async move {
                let (mut written, mut lost) = (Vec::new(), 0);
                while wins.load(Ordering::SeqCst) < SUCCESSES {
                    let (info, body) = s.get(key, 64).await.unwrap();
                    let n: u64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
                    let next = Bytes::from(format!("{:08}", n + 1));
                    match s.put_if_match(key, next, JSON, info.etag.as_deref().unwrap()).await {
                        Ok(_) => {
                            written.push(n + 1);
                            wins.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StorageError::Changed { .. }) => lost += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (written, lost)
            }));
        }
        let (mut written, mut lost) = (Vec::new(), 0);
        for task in tasks {
            let (w, l) = task.await.unwrap();
            written.extend(w);
            lost += l;
        }
        let body = Storage::local(&root).unwrap().get(key, 64).await.unwrap().1;
        let stored: u64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
        assert_eq!(stored as usize, written.len(), "an update was lost ({lost} swaps lost their race)");
        written.sort_unstable();
        assert_eq!(written, (1..=stored).collect::<Vec<_>>());
        assert!(lost > 0, "the writers never raced; the test proves nothing");
    }

    /// Same-size versions reuse inodes (ext4 hands a freed inode straight to the next
    /// file), so only the stamped mtimes keep the ETags apart, across deletes too.
    #[tokio::test]
    async fn local_etags_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::local(&dir.path().join("b")).unwrap();
        let key = "l/k";
        let mut etag = s.put_new(key, Bytes::from_static(b"00000000"), JSON).await.unwrap().unwrap();
        let mut seen = HashSet::from([etag.clone()]);
        for i in 1..400u32 {
            let data = Bytes::from(format!("{i:08}"));
            etag = if i % 50 == 0 {
                s.delete(key).await.unwrap();
                s.put_new(key, data, JSON).await.unwrap().unwrap()
            } else {
                s.put_if_match(key, data, JSON, &etag).await.unwrap().unwrap()
            };
            assert!(seen.insert(etag.clone()), "ETag {etag} repeated at version {i}");
        }
        for old in seen.iter().filter(|e| **e != etag) {
            let err = s.put_if_match(key, Bytes::from_static(b"stale"), JSON, old).await.unwrap_err();
            assert!(matches!(err, StorageError::Changed { .. }), "{err}");
        }

        // A version stamped in the future (a clock stepped back) is still followed by a later stamp.
        let file = dir.path().join("b").join(key);
        let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(ahead).unwrap();
        let read = s.head(key).await.unwrap().etag.unwrap();
        let next = s.put_if_match(key, Bytes::from_static(b"00000000"), JSON, &read).await.unwrap().unwrap();
        assert_ne!(next, read);
        assert!(std::fs::metadata(&file).unwrap().modified().unwrap() > ahead);
    }

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
