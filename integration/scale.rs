//! Memory stays flat however large the bucket: a run over 20,000 objects (a few of them
//! images) peaks at about the same RSS as one over 1,000, within a stated bound.

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use ics::storage::Storage;

/// The bound stated in ARCHITECTURE.md for a run's peak RSS, whatever the object count.
const PEAK_RSS_BOUND_MB: f64 = 150.0;

/// Runs `run-once --json` and returns (summary, peak RSS in MB).
fn run_measured(bucket: &str, state: &std::path::Path) -> (serde_json::Value, f64) {
    let mut cmd = binary_on_s3(bucket, state);
    cmd.args(["run-once", "--json"]).env("ICS__LOG__LEVEL", "warn");
    let m = run_with_peak_rss(cmd);
    let summary: serde_json::Value =
        serde_json::from_str(&m.stdout).unwrap_or_else(|_| panic!("no summary: {}{}", m.stdout, m.stderr));
    (summary, m.peak_rss_mb)
}

async fn fill(storage: &Storage, count: usize, images: usize) {
    let jpeg = Bytes::from(fixture("jpeg_baseline.jpg"));
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let s = storage.clone();
            let body = if i % (count / images) == 0 { jpeg.clone() } else { Bytes::from(format!("object {i}")) };
            let key = if i % (count / images) == 0 {
                format!("d{:02}/img{i:06}.jpg", i % 50)
            } else {
                format!("d{:02}/obj{i:06}.txt", i % 50)
            };
            async move { s.put(&key, body, "application/octet-stream").await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok));
}

#[test]
fn peak_memory_does_not_grow_with_the_object_count() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut peaks = Vec::new();
    for count in [1_000usize, 20_000] {
        let bucket = new_bucket(&format!("scale{count}"));
        let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
        let t = Instant::now();
        rt.block_on(fill(&storage, count, 10));
        eprintln!("filled {count} objects in {:.1}s", t.elapsed().as_secs_f64());
        let state = tempfile::tempdir().unwrap();
        let (summary, peak_mb) = run_measured(&bucket, state.path());
        eprintln!("{count} objects: peak RSS {peak_mb:.1} MB, {summary}");
        assert_eq!(summary["listed"], count as u64);
        assert_eq!(summary["converted"], 10);
        assert!(peak_mb < PEAK_RSS_BOUND_MB, "{count} objects: peak RSS {peak_mb:.1} MB over {PEAK_RSS_BOUND_MB} MB");
        peaks.push(peak_mb);
    }
    // Ten times the objects may not cost more than a few MB more.
    assert!(peaks[1] < peaks[0] + 8.0, "peak RSS grew from {:.1} MB to {:.1} MB", peaks[0], peaks[1]);
}
