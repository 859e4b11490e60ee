//! Hostile images in one run: each fails (or converts) with its specific reason, the run
//! goes on, nothing panics, and the run's peak memory stays bounded.

use crate::common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use ics::storage::Storage;

/// Peak RSS bound for a run over the hostile corpus.
const PEAK_RSS_BOUND_MB: f64 = 150.0;

/// A little-endian TIFF claiming 1 x 10,000,000 pixels in 10,000,000 one-row strips,
/// whose strip tables point past the end of a 200-byte file.
fn tiff_with_huge_strip_count() -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    let entries: [(u16, u16, u32, u32); 8] = [
        (256, 4, 1, 1),           // ImageWidth
        (257, 4, 1, 10_000_000),  // ImageLength
        (258, 3, 1, 8),           // BitsPerSample
        (259, 3, 1, 1),           // Compression: none
        (262, 3, 1, 1),           // Photometric: black is zero
        (273, 4, 10_000_000, 64), // StripOffsets: 10M entries at offset 64
        (278, 4, 1, 1),           // RowsPerStrip
        (279, 4, 10_000_000, 96), // StripByteCounts: 10M entries at offset 96
    ];
    t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, count, value) in entries {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&typ.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&value.to_le_bytes());
    }
    t.extend_from_slice(&0u32.to_le_bytes());
    t.resize(200, 0);
    t
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_hostile_corpus_fails_specifically_and_memory_stays_bounded() {
    need_s3!();
    let bucket = new_bucket("hostile");
    let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let max_bytes = 2 * 1024 * 1024;
    let mut just_over = fixture("jpeg_progressive.jpg");
    just_over.resize(max_bytes + 1, 0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("h/empty.jpg", fixture("bad/empty.jpg"), "empty_file"),
        ("h/text.jpg", fixture("bad/text.jpg"), "not_an_image"),
        ("h/random.bmp", fixture("bad/not_image.bmp"), "not_an_image"),
        ("h/truncated_j.jpg", fixture("bad/truncated.jpg"), "decode_failed"),
        ("h/truncated_p.png", fixture("bad/truncated.png"), "decode_failed"),
        ("h/truncated_g.gif", fixture("bad/truncated.gif"), "decode_failed"),
        ("h/corrupt.png", fixture("bad/corrupt.png"), "decode_failed"),
        ("h/bomb.png", fixture("bad/bomb.png"), "too_many_pixels"),
        ("h/frames.gif", fixture("bad/bomb_gif_frames.gif"), "too_many_frames"),
        ("h/wide.png", fixture("bad/wide.png"), "too_wide"),
        ("h/strips.tif", tiff_with_huge_strip_count(), "limit_exceeded"),
        ("h/just_over.jpg", just_over, "too_large"),
        // These convert.
        ("h/cmyk.jpg", fixture("jpeg_cmyk.jpg"), "converted"),
        ("h/rgb16.png", fixture("png_rgb16.png"), "converted"),
        ("h/bad_orientation.jpg", fixture("jpeg_exif_bad_orientation.jpg"), "converted"),
        ("h/garbage_exif.jpg", fixture("jpeg_exif_garbage.jpg"), "converted"),
        ("h/big_photo.jpg", fixture("jpeg_progressive.jpg"), "converted"),
    ];
    for (key, data, _) in &cases {
        rt.block_on(storage.put(key, Bytes::from(data.clone()), "application/octet-stream")).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let mut cmd = binary_on_s3(&bucket, state.path());
    cmd.args(["run-once", "--json"])
        .env("ICS__CONVERSION__MAX_SIZE_MB", "2")
        .env("ICS__CONVERSION__SKIP_IF_LARGER", "false")
        .env("ICS__LOG__LEVEL", "error");
    let m = run_with_peak_rss(cmd);
    assert!(!m.stderr.contains("panicked"), "{}", m.stderr);
    let summary: serde_json::Value =
        serde_json::from_str(&m.stdout).unwrap_or_else(|_| panic!("no summary: {}{}", m.stdout, m.stderr));
    assert_eq!(m.exit_code, 2, "some failed: {summary}");
    let failures: BTreeMap<String, String> = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_owned(), f["code"].as_str().unwrap().to_owned()))
        .collect();
    for (key, _, expected) in &cases {
        match *expected {
            "converted" => assert!(!failures.contains_key(*key), "{key} failed: {:?}", failures.get(*key)),
            code => assert_eq!(failures.get(*key).map(String::as_str), Some(code), "{key}"),
        }
    }
    assert_eq!(summary["converted"], 5, "{summary}");
    let peak_mb = m.peak_rss_mb;
    eprintln!("hostile corpus: peak RSS {peak_mb:.1} MB");
    assert!(peak_mb < PEAK_RSS_BOUND_MB, "peak RSS {peak_mb:.1} MB");
}
