//! Memory stays flat however large the bucket: a run over 100,000 objects (a few of them
//! images) peaks at about the same RSS as one over 1,000, within a stated bound.

use crate::common;

use std::time::Instant;

use common::*;

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

/// `count` objects under 50 prefixes, `images` of them photos, the rest small text.
fn fill(bucket: &str, count: usize, images: usize) {
    let objects: Vec<(String, usize)> = (0..count)
        .map(|i| match i % (count / images) {
            0 => (format!("d{:02}/img{i:06}.jpg", i % 50), 0),
            _ => (format!("d{:02}/obj{i:06}.txt", i % 50), 1),
        })
        .collect();
    fill_direct(bucket, &objects, &[&fixture("jpeg_baseline.jpg"), b"some object"]);
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn peak_memory_does_not_grow_with_the_object_count() {
    need_s3!();
    let mut peaks = Vec::new();
    for count in [1_000usize, 100_000] {
        let bucket = new_bucket(&format!("scale{count}"));
        let t = Instant::now();
        fill(&bucket, count, 10);
        eprintln!("filled {count} objects in {:.1}s", t.elapsed().as_secs_f64());
        let state = tempfile::tempdir().unwrap();
        let (summary, peak_mb) = run_measured(&bucket, state.path());
        eprintln!("{count} objects: peak RSS {peak_mb:.1} MB, {summary}");
        assert_eq!(summary["listed"], count as u64);
        assert_eq!(summary["converted"], 10);
        assert!(peak_mb < PEAK_RSS_BOUND_MB, "{count} objects: peak RSS {peak_mb:.1} MB over {PEAK_RSS_BOUND_MB} MB");
        peaks.push(peak_mb);
    }
    // A hundred times the objects may not cost more than a few MB more.
    assert!(peaks[1] < peaks[0] + 8.0, "peak RSS grew from {:.1} MB to {:.1} MB", peaks[0], peaks[1]);
}
