//! A run over a bucket of 100,000 objects with nothing new (50,000 sources, each with its
//! up-to-date WebP) on the real S3-compatible server costs what a bare paginated listing
//! costs: the same LIST requests and not one other (no HEAD, GET or PUT per object),
//! counted at the server. The time of both is printed (medians of ICS_LISTING_ROUNDS
//! alternate rounds, default 1: a round is 200 LIST pages of a 100,000-key bucket, which
//! the whole suite's S3 server is busy with), never asserted.

use crate::common;

use std::time::Instant;

use common::*;
use futures::StreamExt;
use ics::storage::Storage;

const SOURCES: usize = 50_000;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_run_over_100000_objects_with_nothing_new_costs_a_bare_listing() {
    need_s3!();
    let bucket = new_bucket("listing");
    let t = Instant::now();
    let sources: Vec<(String, usize)> = (0..SOURCES).map(|i| (format!("d{:02}/img{i:06}.jpg", i % 50), 0)).collect();
    let webps: Vec<(String, usize)> = sources.iter().map(|(k, _)| (k.replace(".jpg", ".webp"), 1)).collect();
    // The WebPs are stored after their sources, so they are not older.
    fill_direct(&bucket, &sources, &[b"jpeg", b"webp"]);
    fill_direct(&bucket, &webps, &[b"jpeg", b"webp"]);
    eprintln!("filled {} objects in {:.1}s", 2 * SOURCES, t.elapsed().as_secs_f64());
    request_counts(&bucket, true);

    let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut bare, mut runs) = (Vec::new(), Vec::new());
    let rounds: usize = std::env::var("ICS_LISTING_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1).max(1);
    for round in 0..rounds {
        let t = Instant::now();
        let listed = rt.block_on(storage.list_ordered(None).filter(|o| std::future::ready(o.is_ok())).count());
        bare.push(t.elapsed().as_secs_f64());
        assert_eq!(listed, 2 * SOURCES);
        let bare_requests = request_counts(&bucket, true);
        assert_eq!(bare_requests.keys().collect::<Vec<_>>(), ["LIST"], "{bare_requests:?}");

        let state = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let out = binary_on_s3(&bucket, state.path())
            .args(["run-once", "--json"])
            .env("ICS__LOG__LEVEL", "warn")
            .output()
            .unwrap();
        runs.push(t.elapsed().as_secs_f64());
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("no summary: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(summary["listed"], 2 * SOURCES as u64, "{summary}");
        assert_eq!(summary["skipped"], SOURCES as u64, "{summary}");
        assert_eq!((summary["converted"].as_u64(), summary["failed"].as_u64()), (Some(0), Some(0)), "{summary}");
        // The run's requests are exactly the bare listing's pages.
        let run_requests = request_counts(&bucket, true);
        assert_eq!(run_requests, bare_requests, "round {round}");
        eprintln!(
            "round {round}: bare listing {:.2}s, run-once {:.2}s, {} LIST requests each",
            bare[round], runs[round], run_requests["LIST"]
        );
    }
    let (b, r) = (median(&mut bare), median(&mut runs));
    eprintln!(
        "100,000 objects, nothing new: bare listing {b:.2}s, run-once {r:.2}s (whole process), ratio {:.3}",
        r / b
    );
}
