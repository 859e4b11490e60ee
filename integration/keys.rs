//! Every key the store allows (issue 23, item 1). S3 and R2 accept `a//b.jpg`, `./x.jpg`,
//! `../x.jpg` and keys with a TAB or another control character; one such object used to
//! fail the whole listing (`listed 0`, exit 1, on every run): anyone who could upload
//! could switch the cron safety net off. Now each is listed, converted and written
//! beside its source, exactly named, through the real S3-compatible test server; on the
//! local backend, a name it cannot hold safely is listed, ledgered `invalid_key` and
//! skipped while the rest is converted.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::*;
use futures::StreamExt;
use ics::storage::Storage;

/// The attack's keys, with a plain one beside them.
const ODD_KEYS: &[&str] = &["a//b.jpg", "./x.jpg", "../x.jpg", "tab\there.jpg", "ctl\u{1}.jpg", "photos/plain.jpg"];

fn webp_of(key: &str) -> String {
    format!("{}.webp", key.strip_suffix(".jpg").unwrap())
}

fn summary(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("no summary (exit {:?}): {}", o.status.code(), String::from_utf8_lossy(&o.stderr)))
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn one_odd_but_legal_s3_key_no_longer_stops_every_run() {
    need_s3!();
    let bucket = new_bucket("keys");
    // Stored straight into the server (no client of ours names them on the way in).
    let objects: Vec<(String, usize)> = ODD_KEYS.iter().map(|k| (k.to_string(), 0)).collect();
    fill_direct(&bucket, &objects, &[&fixture("jpeg_orient1.jpg")]);
    let state = tempfile::tempdir().unwrap();

    let out = binary_on_s3(&bucket, state.path()).args(["run-once", "--json"]).output().unwrap();
    let s = summary(&out);
    assert_eq!(out.status.code(), Some(0), "{s}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((s["listed"].as_u64(), s["converted"].as_u64()), (Some(6), Some(6)), "{s}");
    assert_eq!(s["failed"], 0, "{s}");

    // Each WebP sits beside its source under exactly its name: nothing collapsed (`a/b`),
    // normalised away (`x.webp`) or percent-encoded into another key (`%2E/x.webp`).
    let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed: BTreeSet<String> = rt.block_on(storage.list_ordered(None).map(|o| o.unwrap().key).collect());
    let expected: BTreeSet<String> = ODD_KEYS.iter().flat_map(|k| [k.to_string(), webp_of(k)]).collect();
    assert_eq!(listed, expected);
    for key in ODD_KEYS {
        let (_, body) = rt.block_on(storage.get(&webp_of(key), 1 << 30)).unwrap();
        ics::convert::decode_webp(&body).unwrap_or_else(|| panic!("{key}: not a WebP"));
        let content_type = rt.block_on(storage.content_type(&webp_of(key))).unwrap();
        assert_eq!(content_type.as_deref(), Some("image/webp"), "{key}");
    }

    // The next run finds every WebP up to date and converts nothing.
    let out = binary_on_s3(&bucket, state.path()).args(["run-once", "--json"]).output().unwrap();
    let s = summary(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_eq!((s["listed"].as_u64(), s["converted"].as_u64()), (Some(12), Some(0)), "{s}");
    assert_eq!((s["skipped"].as_u64(), s["failed"].as_u64()), (Some(6), Some(0)), "{s}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn odd_s3_keys_round_trip_through_every_storage_operation() {
    need_s3!();
    let bucket = new_bucket("keyops");
    let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for key in ["a//b.bin", "./x.bin", "../x.bin", "tab\there.bin", "sp ace+plus%2E.bin"] {
            let first = storage.put_new(key, "one".into(), "text/plain").await.unwrap().expect("an ETag");
            let again = storage.put_new(key, "two".into(), "text/plain").await.unwrap_err();
            assert!(matches!(again, ics::storage::StorageError::AlreadyExists { .. }), "{key}: {again}");
            let head = storage.head(key).await.unwrap();
            assert_eq!((head.key.as_str(), head.size, head.etag.as_deref()), (key, 3, Some(first.as_str())));
            let second = storage.put_if_match(key, "three".into(), "text/plain", &first).await.unwrap().unwrap();
            let stale = storage.put_if_match(key, "four".into(), "text/plain", &first).await.unwrap_err();
            assert!(matches!(stale, ics::storage::StorageError::Changed { .. }), "{key}: {stale}");
            let (info, body) = storage.get(key, 100).await.unwrap();
            assert_eq!((&body[..], info.etag.as_deref()), (&b"three"[..], Some(second.as_str())), "{key}");
            let small = storage.get(key, 2).await.unwrap_err();
            assert!(matches!(small, ics::storage::StorageError::TooLarge { size: 5, .. }), "{key}: {small}");
            assert_eq!(storage.content_type(key).await.unwrap().as_deref(), Some("text/plain"));
            storage.delete(key).await.unwrap();
            let gone = storage.head(key).await.unwrap_err();
            assert!(matches!(gone, ics::storage::StorageError::NotFound { .. }), "{key}: {gone}");
            storage.delete(key).await.unwrap();
        }
    });
    // Nothing was written under any other name.
    let left: Vec<_> = rt.block_on(storage.list_ordered(None).collect::<Vec<_>>());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn an_odd_key_in_a_folder_does_not_stop_convert_of_its_neighbours() {
    need_s3!();
    let bucket = new_bucket("keydir");
    let keys = ["p/plain.jpg", "p/tab\there.jpg", "p/./x.jpg", "p/a//b.jpg", "p/cat.png"];
    let objects: Vec<(String, usize)> = keys.iter().map(|k| (k.to_string(), 0)).collect();
    fill_direct(&bucket, &objects, &[&fixture("jpeg_orient1.jpg")]);
    let config = s3_config(&bucket);
    let storage = Storage::open(&config.storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // One level: `p/./x.jpg` and `p/a//b.jpg` sit in sub-folders (`p/./`, `p/a/`).
    let listed = rt.block_on(storage.list_dir(Some("p"))).unwrap();
    let names: BTreeSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["p/cat.png", "p/plain.jpg", "p/tab\there.jpg"]));
    // `convert` checks the folder for a second source of its WebP, past the odd keys.
    let outcome = actix::System::new().block_on(convert_object(&storage, &config, "p/plain.jpg", None)).unwrap();
    assert!(matches!(outcome, ics::job::Outcome::Converted(_)), "{outcome:?}");
    assert!(rt.block_on(storage.head("p/plain.webp")).is_ok());
    // And an odd key itself converts on request, beside its source (one path, every key).
    let outcome = actix::System::new().block_on(convert_object(&storage, &config, "p/a//b.jpg", None)).unwrap();
    assert!(matches!(outcome, ics::job::Outcome::Converted(_)), "{outcome:?}");
    assert!(rt.block_on(storage.head("p/a//b.webp")).is_ok());
}

#[test]
fn a_local_file_name_the_backend_cannot_hold_safely_is_ledgered_invalid_key_and_the_rest_converted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.yaml");
    std::fs::copy(config, dir.path().join("config/config.yaml")).unwrap();
    for name in ["photos/plain.jpg", "photos/tab\there.jpg", "photos/ctl\u{1}.jpg", "photos/back\\slash.jpg"] {
        let p = dir.path().join("bucket").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, fixture("jpeg_orient1.jpg")).unwrap();
    }
    let out = binary().current_dir(dir.path()).args(["run-once", "--json"]).output().unwrap();
    let s = summary(&out);
    // Exit 2: the three names are failures of their own; the run itself completed.
    assert_eq!(out.status.code(), Some(2), "{s}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((s["listed"].as_u64(), s["converted"].as_u64(), s["failed"].as_u64()), (Some(4), Some(1), Some(3)));
    assert!(dir.path().join("bucket/photos/plain.webp").exists());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).unwrap()).unwrap();
    for key in ["photos/tab\there.jpg", "photos/ctl\u{1}.jpg", "photos/back\\slash.jpg"] {
        let entry = &state["ledger"][key];
        assert_eq!(entry["code"], "invalid_key", "{key}: {state}");
        assert!(!dir.path().join("bucket").join(webp_of(key)).exists(), "{key}");
    }
    // A second run leaves the ledgered names alone and converts nothing.
    let out = binary().current_dir(dir.path()).args(["run-once", "--json"]).output().unwrap();
    let s = summary(&out);
    assert_eq!((s["converted"].as_u64(), s["failed"].as_u64()), (Some(0), Some(0)), "{s}");
}
