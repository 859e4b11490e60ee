//! Admission by memory: a bucket of large photos converted with a memory budget that
//! fits one of them at a time peaks below the stated bound (100 MB + the budget), and
//! well below the same run with a budget that lets both workers decode at once — which
//! itself stays within 100 MB + what its images reserved.

mod common;

use common::*;
use ics::memory::estimate;

/// The stated bound: a process needs at most this much besides the images' reservations.
const BASE_MB: f64 = 100.0;
const PHOTOS: usize = 4;

/// A 9 MP JPEG made from the chelsea photo (upscaled, so every photo differs a little).
fn large_photo(i: usize) -> Vec<u8> {
    let base = image::load_from_memory(&fixture("reference_chelsea.png")).unwrap();
    let big = base.resize_exact(3600 + i as u32 * 8, 2500, image::imageops::FilterType::Triangle).into_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&big).unwrap();
    out
}

/// Converts the photos in a fresh local bucket with `budget_mb`; returns the peak RSS.
fn run(photos: &[Vec<u8>], budget_mb: u32) -> f64 {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    for (i, p) in photos.iter().enumerate() {
        std::fs::write(root.path().join(format!("big{i}.jpg")), p).unwrap();
    }
    let mut cmd = binary();
    cmd.args(["run-once", "--json"])
        .env("ICS__STORAGE__BACKEND", "local")
        .env("ICS__STORAGE__LOCAL_ROOT", root.path())
        .env("ICS__STATE__DIR", state.path())
        .env("ICS__PIPELINE__WORKERS", "2")
        .env("ICS__PIPELINE__MAX_IN_FLIGHT", "6")
        .env("ICS__PIPELINE__MEMORY_BUDGET_MB", budget_mb.to_string())
        .env("ICS__LOG__LEVEL", "warn");
    let m = run_with_peak_rss(cmd);
    let summary: serde_json::Value =
        serde_json::from_str(&m.stdout).unwrap_or_else(|_| panic!("no summary: {}{}", m.stdout, m.stderr));
    assert_eq!(summary["converted"], PHOTOS as u64, "{summary}");
    m.peak_rss_mb
}

#[test]
fn peak_memory_stays_within_the_budget_and_admission_by_pixels_bites() {
    let photos: Vec<Vec<u8>> = (0..PHOTOS).map(large_photo).collect();
    let costs: Vec<f64> = photos.iter().map(|p| estimate(p) as f64 / (1 << 20) as f64).collect();
    let one = costs.iter().cloned().fold(0.0, f64::max);
    // Room for exactly one photo at a time: the work pool (3/4 of the budget) is 1.5 photos.
    let tight = (one * 2.0) as u32;
    let tight_peak = run(&photos, tight);
    // Room for all: both workers decode and encode at once.
    let loose_peak = run(&photos, 4096);
    let two = one * 2.0;
    eprintln!(
        "memory: {PHOTOS} photos of 9 MP, {one:.0} MB reserved each; budget {tight} MB: peak RSS {tight_peak:.1} MB \
         (bound {:.0}); budget 4096 MB: peak RSS {loose_peak:.1} MB (bound {:.0})",
        BASE_MB + f64::from(tight),
        BASE_MB + two
    );
    assert!(tight_peak <= BASE_MB + f64::from(tight), "peak {tight_peak:.1} MB over 100 MB + {tight} MB");
    // The per-image cost is an upper bound: two in flight stay within their reservations.
    assert!(loose_peak <= BASE_MB + two, "peak {loose_peak:.1} MB over 100 MB + 2 x {one:.0} MB");
    // And the budget is what kept the first run to one photo at a time.
    assert!(loose_peak > tight_peak + one / 3.0, "budget made no difference: {tight_peak:.1} vs {loose_peak:.1} MB");
}
