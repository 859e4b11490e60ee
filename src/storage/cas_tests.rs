//! Tests of the local backend's conditional writes, deletes and listing order (the
//! attacks on its root are in `local_tests`).

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
    let outside_etag =
        crate::storage::files::info_of("k".into(), &rustix::fs::stat(outside.join("k.json")).unwrap()).etag.unwrap();
    let results = [
        s.head("link/k.json").await.map(drop),
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
