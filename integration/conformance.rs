//! One storage conformance suite (issue 22, item 5), in the manner of object_store's
//! shared tests: the same cases against every backend the daemon writes to — the local
//! directory, the in-memory store, and S3 (moto, with the test server). Each case is what
//! the pipeline relies on: reads and writes with ETags and times, the listing's key order
//! and offset, a folder's objects, conditional writes, deletes, the size limit before a
//! read, specific errors, and an output's source named in its metadata.

use crate::common;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use ics::storage::{BackendKind, OutputWrite, Storage, StorageError};

async fn keys(storage: &Storage, offset: Option<&str>) -> Vec<String> {
    let mut listing = storage.list_ordered(offset);
    let mut out = Vec::new();
    while let Some(item) = listing.next().await {
        out.push(item.unwrap().key);
    }
    out
}

/// Every case, on an empty bucket.
async fn conformance(s: &Storage) {
    let put =
        |k: &'static str, body: &'static [u8]| async move { s.put(k, Bytes::from_static(body), "image/png").await };

    // Read what was written: its bytes, size, ETag and time.
    let etag = put("p/a.png", b"first").await.unwrap();
    let (info, body) = s.get("p/a.png", 1 << 20).await.unwrap();
    assert_eq!((body.as_ref(), info.size), (&b"first"[..], 5));
    assert!(info.etag.is_some() && info.etag == etag, "{info:?} {etag:?}");
    let head = s.head("p/a.png").await.unwrap();
    assert_eq!((head.size, &head.etag), (5, &info.etag));
    assert!((chrono::Utc::now() - head.last_modified).num_seconds().abs() < 120, "{head:?}");

    // A rewrite has another ETag and is no older.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let etag2 = put("p/a.png", b"second").await.unwrap();
    assert_ne!(etag, etag2);
    assert!(s.head("p/a.png").await.unwrap().last_modified >= head.last_modified);

    // The listing: every key in byte order, from an offset, and one folder's objects.
    for k in ["p/b.jpg", "p/a.webp", "q/c.png", "p/sub/d.gif", "p/B.png"] {
        put(k, b"x").await.unwrap();
    }
    let all = keys(s, None).await;
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "the listing is in key order");
    assert_eq!(all, ["p/B.png", "p/a.png", "p/a.webp", "p/b.jpg", "p/sub/d.gif", "q/c.png"]);
    assert_eq!(keys(s, Some("p/a.")).await, ["p/a.png", "p/a.webp", "p/b.jpg", "p/sub/d.gif", "q/c.png"]);
    assert_eq!(keys(s, Some("p/b.jpg")).await, ["p/sub/d.gif", "q/c.png"], "after the offset, not at it");
    let mut dir: Vec<String> = s.list_dir(Some("p")).await.unwrap().into_iter().map(|o| o.key).collect();
    dir.sort();
    assert_eq!(dir, ["p/B.png", "p/a.png", "p/a.webp", "p/b.jpg"], "one level, no recursion");

    // Conditional writes: create only when absent, replace only the version seen.
    let created = s.put_new("c/new.webp", Bytes::from_static(b"1"), "image/webp").await.unwrap();
    let again = s.put_new("c/new.webp", Bytes::from_static(b"2"), "image/webp").await.unwrap_err();
    assert!(matches!(again, StorageError::AlreadyExists { .. }), "{again}");
    let stale = s.put_if_match("c/new.webp", Bytes::from_static(b"3"), "image/webp", "\"not-it\"").await;
    assert!(matches!(stale, Err(StorageError::Changed { .. })), "{stale:?}");
    let swapped = s.put_if_match("c/new.webp", Bytes::from_static(b"4"), "image/webp", &created.unwrap()).await;
    assert!(swapped.is_ok(), "{swapped:?}");
    assert_eq!(s.get("c/new.webp", 100).await.unwrap().1.as_ref(), b"4");
    let gone = s.put_if_match("c/none.webp", Bytes::from_static(b"5"), "image/webp", "\"x\"").await;
    assert!(matches!(gone, Err(StorageError::Changed { .. })), "over a missing object: {gone:?}");

    // An output names its source where the backend keeps metadata; the local
    // directory keeps none.
    s.put_output("o/cat.webp", Bytes::from_static(b"w"), "o/cat ü.jpg", OutputWrite::Create).await.unwrap();
    let source = s.output_source("o/cat.webp").await.unwrap();
    match s.kind() {
        BackendKind::Local => assert_eq!(source, None),
        _ => assert_eq!(source.as_deref(), Some("o/cat ü.jpg")),
    }
    assert_eq!(s.output_source("p/a.png").await.unwrap(), None, "not an output of ours");
    assert!(matches!(s.output_source("o/none.webp").await, Err(StorageError::NotFound { .. })));
    let refused = s.put_output("o/cat.webp", Bytes::from_static(b"w2"), "o/cat.jpg", OutputWrite::Create).await;
    assert!(matches!(refused, Err(StorageError::AlreadyExists { .. })), "{refused:?}");

    // Specific errors: missing, and over the size limit (before the body is read).
    assert!(matches!(s.get("p/none.png", 100).await, Err(StorageError::NotFound { .. })));
    assert!(matches!(s.head("p/none.png").await, Err(StorageError::NotFound { .. })));
    let big = s.get("p/a.png", 3).await.unwrap_err();
    assert!(matches!(big, StorageError::TooLarge { size: 6, max: 3, .. }), "{big}");

    // Deletes: gone after, and deleting what is missing is no error.
    s.delete("q/c.png").await.unwrap();
    s.delete("q/c.png").await.unwrap();
    assert!(matches!(s.head("q/c.png").await, Err(StorageError::NotFound { .. })));
    assert!(!keys(s, None).await.contains(&"q/c.png".to_owned()));
}

#[actix_web::test]
async fn the_local_directory_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&Storage::local(dir.path()).unwrap()).await;
}

#[actix_web::test]
async fn the_in_memory_store_conforms() {
    conformance(&Storage::in_memory("mem")).await;
}

#[actix_web::test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
async fn s3_conforms() {
    need_s3!();
    let bucket = new_bucket("conformance");
    conformance(&Storage::open(&s3_config(&bucket).storage, &bucket).unwrap()).await;
}
