//! Static shards (issue 25, item 2): `run-once --shard I/N` processes, as a Kubernetes
//! Indexed Job or an AWS Batch array job starts them — in any order, one of them killed
//! and re-run by the engine — complete the bucket between them, each WebP stored once,
//! with nothing coordinating them: no lease, heartbeat or run trigger in the bucket; the
//! killed shard's last writes landing after its re-run has listed included.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SHARDS: u32 = 4;

fn shard_cmd(bucket: &str, state: &std::path::Path, spec: &str) -> Command {
    let mut cmd = binary_on_s3(bucket, state);
    cmd.args(["run-once", "--json", "--shard", spec]).stdout(Stdio::piped()).stderr(Stdio::null());
    cmd
}

/// splitmix64, to vary the start order over seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn four_static_shards_in_any_order_one_killed_and_rerun_complete_the_bucket_once() {
    need_s3!();
    for seed in 0..2u64 {
        let bucket = new_bucket("shards");
        let names = ["jpeg_baseline.jpg", "png_rgb.png", "jpeg_gray.jpg", "gif_static.gif"];
        let bodies: Vec<Vec<u8>> = names.iter().map(|n| fixture(n)).collect();
        let objects: Vec<(String, usize)> = (0..160)
            .map(|i| {
                let ext = names[i % names.len()].rsplit('.').next().unwrap();
                (format!("img/{i:03}.{ext}"), i % names.len())
            })
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        fill_direct(&bucket, &objects, &refs);
        // Seed 1: every write sleeps 1.5 s at the server under its key's lock, so the
        // killed shard's last PUTs land after its re-run (started at once) has listed, and
        // the re-run converts those keys again: only its conditional write keeps them
        // stored once.
        if seed == 1 {
            set_race_window(&bucket, 1500);
        }
        let expected: Vec<String> = objects.iter().map(|(k, _)| ics::naming::webp_key(k)).collect();
        // Every shard in its own state directory, as separate pods would be.
        let states: Vec<tempfile::TempDir> = (0..SHARDS).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut order: Vec<u32> = (0..SHARDS).collect();
        order.sort_by_key(|i| mix(seed * 31 + u64::from(*i)));
        let victim = order[(mix(seed) % u64::from(SHARDS)) as usize];
        let mut children = Vec::new();
        for &i in &order {
            let spec = format!("{i}/{SHARDS}");
            children.push((i, shard_cmd(&bucket, states[i as usize].path(), &spec).spawn().unwrap()));
            std::thread::sleep(Duration::from_millis(mix(seed + u64::from(i)) % 300));
        }
        // The engine's pod dies mid-way: SIGKILL once it has stored something (or at once).
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && successful_puts(&bucket).len() < 20 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, mut killed) = children.remove(children.iter().position(|(i, _)| *i == victim).unwrap());
        unsafe { libc::kill(killed.id() as i32, libc::SIGKILL) };
        killed.wait().unwrap();
        // The engine re-runs the failed index: it redoes only its own keys. Seed 0 re-runs it
        // once the others are done, seed 1 at once, while the killed pod's last PUTs are
        // still in the server's write window and the others still run.
        let rerun = || shard_cmd(&bucket, states[victim as usize].path(), &format!("{victim}/{SHARDS}"));
        let early = (seed == 1).then(|| rerun().spawn().unwrap());
        let mut exits = BTreeMap::new();
        for (i, child) in children {
            let out = child.wait_with_output().unwrap();
            exits.insert(i, out.status.code());
        }
        assert!(exits.values().all(|c| *c == Some(0)), "seed {seed}: {exits:?}");
        let out = match early {
            Some(child) => child.wait_with_output().unwrap(),
            None => rerun().output().unwrap(),
        };
        assert_eq!(out.status.code(), Some(0), "seed {seed}: the re-run of shard {victim}");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let theirs = expected.iter().filter(|w| {
            let source = objects.iter().find(|(k, _)| ics::naming::webp_key(k) == **w).unwrap();
            ics::naming::shard_of(&source.0, SHARDS) == victim
        });
        assert!(summary["converted"].as_u64().unwrap() <= theirs.count() as u64, "seed {seed}: {summary}");
        let puts = successful_puts(&bucket);
        for w in &expected {
            assert_eq!(puts.get(w), Some(&1), "seed {seed}: {w} stored once");
        }
        let others: Vec<&String> = puts.keys().filter(|k| !expected.contains(k) && !k.starts_with("img/")).collect();
        assert!(others.is_empty(), "seed {seed}: nothing coordinates the shards, yet the bucket got {others:?}");
        // Each shard kept a state file of its own.
        for (i, dir) in states.iter().enumerate() {
            let file = dir.path().join(format!("state-shard-{i}-of-{SHARDS}.json"));
            assert!(file.exists(), "seed {seed}: {}", file.display());
        }
    }
}

#[test]
fn a_shard_outside_its_range_or_with_no_index_is_refused_as_usage() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["run-once", "--shard", "4/4"], None),
        (vec!["run-once", "--shard", "x/4"], None),
        (vec!["run-once", "--shard", "4"], None),
        (vec!["run-once", "--shard", "4"], Some("7")),
    ] {
        let mut cmd = binary();
        cmd.args(&args)
            .current_dir(dir.path())
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("AWS_BATCH_JOB_ARRAY_INDEX");
        if let Some(i) = env {
            cmd.env("JOB_COMPLETION_INDEX", i);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?} {env:?}: {err}");
        assert!(err.contains("--shard"), "{err}");
    }
}
