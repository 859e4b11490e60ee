//! Attacks on the local backend's root through symbolic links, each run with both
//! resolvers (`openat2` and the component walk): links placed before the call, a
//! directory swapped for a link between a listing and the I/O, and random layouts.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;

use super::beneath::Resolver;
use crate::storage::{Storage, StorageError, WEBP_CONTENT_TYPE};

const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];
const SECRET: &[u8] = b"OUTSIDE-SECRET";

/// Everything under `dir`: path → (is a link, content or link target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (bool, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    path.clone(),
                    (true, std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes()),
                );
            } else if meta.is_dir() {
                out.insert(path.clone(), (false, Vec::new()));
                todo.push(path);
            } else {
                out.insert(path.clone(), (false, std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn unsafe_key<T: std::fmt::Debug>(r: Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::UnsafeKey { .. }))
}

/// `bucket/link -> /outside` and `bucket/sfile.jpg -> /outside/secret.jpg`: no operation
/// reads, writes, lists or deletes anything outside through them.
#[tokio::test]
async fn bucket_link_to_outside_and_sfile_link_to_outside_secret_are_refused_by_every_operation() {
    for resolver in RESOLVERS {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("bucket"), dir.path().join("outside"));
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("secret.jpg"), SECRET).unwrap();
        let s = Storage::local(&root).unwrap().with_resolver(resolver);
        symlink(&outside, root.join("link")).unwrap();
        symlink(outside.join("secret.jpg"), root.join("sfile.jpg")).unwrap();
        let before = snapshot(&outside);
        let etag = super::files::info_of("x".into(), &rustix::fs::stat(outside.join("secret.jpg")).unwrap()).etag;
        let etag = etag.unwrap();
        let data = || Bytes::from_static(b"RIFF");

        for key in ["link/secret.jpg", "sfile.jpg"] {
            assert!(unsafe_key(s.get(key, 1 << 20).await), "{resolver:?} get {key}");
            assert!(unsafe_key(s.head(key).await), "{resolver:?} head {key}");
            assert!(unsafe_key(s.put_if_match(key, data(), WEBP_CONTENT_TYPE, &etag).await), "{resolver:?} {key}");
            assert!(unsafe_key(s.put_new(key, data(), WEBP_CONTENT_TYPE).await), "{resolver:?} put_new {key}");
        }
        for key in ["link/secret.webp", "link/sub/x.webp", "link/new/dir/x.webp"] {
            assert!(unsafe_key(s.put(key, data(), WEBP_CONTENT_TYPE).await), "{resolver:?} put {key}");
            assert!(unsafe_key(s.put_new(key, data(), WEBP_CONTENT_TYPE).await), "{resolver:?} put_new {key}");
        }
        assert!(unsafe_key(s.delete("link/secret.jpg").await), "{resolver:?}");
        assert!(unsafe_key(s.list_dir(Some("link")).await), "{resolver:?}");
        let listed: Vec<_> = s.list_ordered(None).collect().await;
        assert!(listed.is_empty(), "{resolver:?}: {listed:?}");
        let listed: Vec<_> = s.list(Some("link")).collect().await;
        assert!(listed.iter().all(|r| r.is_err()), "{resolver:?}: {listed:?}");
        // Writing the link's own name replaces the link inside the root, never its target.
        s.put("sfile.jpg", data(), WEBP_CONTENT_TYPE).await.unwrap();
        assert_eq!(std::fs::read(root.join("sfile.jpg")).unwrap(), b"RIFF");
        assert_eq!(snapshot(&outside), before, "{resolver:?}: something outside changed");
    }
}

/// A run lists `d/img.jpg`, then `d` is moved out and replaced by a link to where it went:
/// the get and the put that follow refuse the key instead of reading or writing there.
#[tokio::test]
async fn a_directory_swapped_for_a_link_between_listing_and_get_or_put_is_not_followed() {
    for resolver in RESOLVERS {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("bucket"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("d/img.jpg"), SECRET).unwrap();
        let s = Storage::local(&root).unwrap().with_resolver(resolver);
        let listed: Vec<String> = s.list_ordered(None).map(|r| r.unwrap().key).collect().await;
        assert_eq!(listed, ["d/img.jpg"]);

        std::fs::rename(root.join("d"), outside.join("d")).unwrap();
        symlink(outside.join("d"), root.join("d")).unwrap();
        let before = snapshot(&outside);
        assert!(unsafe_key(s.get("d/img.jpg", 1 << 20).await), "{resolver:?}");
        assert!(unsafe_key(s.put("d/img.webp", Bytes::from_static(b"RIFF"), WEBP_CONTENT_TYPE).await));
        assert!(unsafe_key(s.put_new("d/img.webp", Bytes::from_static(b"RIFF"), WEBP_CONTENT_TYPE).await));
        assert!(unsafe_key(s.delete("d/img.jpg").await), "{resolver:?}");
        assert_eq!(snapshot(&outside), before, "{resolver:?}: something outside changed");
    }
}

use crate::test_rng::Rng;

const NAMES: [&str; 4] = ["a", "b", "c.jpg", "d.webp"];

/// Fills `dir` at random: files, directories, and links to the outside (directory,
/// file, relative `../` paths), to each other, and dangling ones.
fn random_tree(rng: &mut Rng, dir: &Path, root: &Path, outside: &Path, depth: usize) {
    for name in NAMES {
        let path = dir.join(name);
        match rng.below(if depth == 0 { 5 } else { 8 }) {
            0 => {}
            1 | 2 => std::fs::write(&path, format!("inside {}", path.display())).unwrap(),
            3 => symlink(outside, &path).unwrap(),
            4 => symlink(outside.join("secret.jpg"), &path).unwrap(),
            5 => symlink(format!("{}../outside", "../".repeat(depth)), &path).unwrap(),
            6 => symlink(root.join(NAMES[rng.below(4)]), &path).unwrap(),
            _ => {
                std::fs::create_dir(&path).unwrap();
                random_tree(rng, &path, root, outside, depth - 1);
            }
        }
    }
}

fn random_key(rng: &mut Rng) -> String {
    let parts: Vec<&str> = (0..1 + rng.below(3)).map(|_| NAMES[rng.below(4)]).collect();
    parts.join("/")
}

/// Random link layouts, random operations: nothing outside the root is ever read
/// (no body carries the outside's marker), written or removed, and no key the listing
/// gives passes through a link.
#[tokio::test]
async fn random_symlink_layouts_never_read_or_write_outside_the_root() {
    let mut worked = 0;
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let resolver = RESOLVERS[seed as usize % 2];
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("bucket"), dir.path().join("outside"));
        for name in NAMES {
            std::fs::create_dir_all(outside.join(name)).unwrap();
            std::fs::write(outside.join(name).join("secret.jpg"), SECRET).unwrap();
        }
        std::fs::write(outside.join("secret.jpg"), SECRET).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        random_tree(&mut rng, &root, &root, &outside, 2);
        let s = Storage::local(&root).unwrap().with_resolver(resolver);
        let before = snapshot(&outside);
        for _ in 0..30 {
            let key = random_key(&mut rng);
            let data = Bytes::from(format!("written {key}"));
            let ok = match rng.below(7) {
                0 => s.get(&key, 1 << 20).await.map(|(_, body)| assert!(!body.starts_with(SECRET), "{seed}: {key}")),
                1 => s.head(&key).await.map(drop),
                2 => s.put(&key, data, WEBP_CONTENT_TYPE).await.map(drop),
                3 => s.put_new(&key, data, WEBP_CONTENT_TYPE).await.map(drop),
                4 => {
                    let etag = s.head(&key).await.ok().and_then(|i| i.etag).unwrap_or_default();
                    s.put_if_match(&key, data, WEBP_CONTENT_TYPE, &etag).await.map(drop)
                }
                5 => s.delete(&key).await,
                _ => s.list_dir(Some(&key)).await.map(drop),
            };
            worked += usize::from(ok.is_ok());
        }
        let listed: Vec<_> = s.list_ordered(None).filter_map(|r| async move { r.ok() }).collect().await;
        for info in listed {
            let mut at = root.clone();
            for part in info.key.split('/') {
                at.push(part);
                assert!(!std::fs::symlink_metadata(&at).unwrap().file_type().is_symlink(), "{seed}: {}", info.key);
            }
        }
        assert_eq!(snapshot(&outside), before, "seed {seed} ({resolver:?}): something outside changed");
    }
    assert!(worked > 200, "only {worked} operations succeeded: the layouts test too little");
}
