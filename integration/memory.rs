//! Admission by memory: a bucket of large photos converted with a memory budget that
//! fits one of them at a time peaks below the stated bound (100 MB + the budget), and
//! well below the same run with a budget that lets both workers decode at once — which
//! itself stays within 100 MB + what its images reserved.
//!
//! And the attacks on that bound: an upscaling request (`width=16383&height=16383` of a
//! small image), a GIF whose logical screen is 10000×10000 with 1×1 frames, and
//! property tests over random resize requests and random GIF screens and frames, all
//! under a 64 MB budget: refused with their reasons (`too_many_pixels`,
//! `over_memory_budget`) or converted, the process's peak RSS within 100 MB + 64 MB.
//! `ICS_PROPTEST_CASES` (default 6) and `ICS_PROPTEST_SEED` choose more or other cases.

use crate::common;

use std::collections::BTreeMap;

use common::server::*;
use common::*;
use ics::convert::ConvertOptions;
use ics::convert::cost::estimate;

/// The stated bound: a process needs at most this much besides the images' reservations.
const BASE_MB: f64 = 100.0;
const PHOTOS: usize = 4;

/// A 9 MP JPEG made from the chelsea photo (upscaled, so every photo differs a little).
fn large_photo(i: usize) -> Vec<u8> {
    let base = image::load_from_memory(&fixture("reference_chelsea.png")).unwrap();
    let big = base.resize_exact(3600 + i as u32 * 8, 2500, image::imageops::FilterType::Triangle).into_rgb8();
    jpeg_of(&big, 90)
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
    let costs: Vec<f64> = photos
        .iter()
        .map(|p| estimate(p, None, &ConvertOptions::default()).unwrap() as f64 / (1 << 20) as f64)
        .collect();
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
    // And the budget is what kept the first run to one photo at a time. (The cost is a
    // worst case — noise — so a photo uses well under it, and two photos' peaks only
    // partly coincide: the margin is small, but a budget that admitted both would
    // show none.)
    assert!(loose_peak > tight_peak + 5.0, "budget made no difference: {tight_peak:.1} vs {loose_peak:.1} MB");
}

/// The small budget the attacks run under.
const SMALL_BUDGET_MB: u32 = 64;

/// A process's own peak RSS so far (VmHWM), in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb / 1024.0
}

/// The small budget on two workers, as YAML.
const SMALL_PIPELINE: &str = "pipeline: {workers: 2, memory_budget_mb: 64}\n";

/// `serve` over a local bucket holding `files`, configured by `yaml`.
fn serve_local(files: &[(&str, Vec<u8>)], yaml: &str) -> (Server, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    for (key, data) in files {
        std::fs::write(root.path().join(key), data).unwrap();
    }
    let yaml = format!("storage: {{backend: local, local_root: '{}'}}\n{yaml}", root.path().display());
    (Server::start(None, &yaml), root)
}

/// Runs `run-once` over a local bucket holding `files` under the small budget; returns
/// the summary's failure codes by key, the number converted and the peak RSS.
fn run_once_local(files: &[(String, Vec<u8>)]) -> (BTreeMap<String, String>, u64, f64) {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    for (key, data) in files {
        std::fs::write(root.path().join(key), data).unwrap();
    }
    let mut cmd = binary();
    cmd.args(["run-once", "--json"])
        .env("ICS__STORAGE__BACKEND", "local")
        .env("ICS__STORAGE__LOCAL_ROOT", root.path())
        .env("ICS__STATE__DIR", state.path())
        .env("ICS__PIPELINE__WORKERS", "2")
        .env("ICS__PIPELINE__MEMORY_BUDGET_MB", SMALL_BUDGET_MB.to_string())
        .env("ICS__CONVERSION__SKIP_IF_LARGER", "false")
        .env("ICS__LOG__LEVEL", "error");
    let m = run_with_peak_rss(cmd);
    assert!(!m.stderr.contains("panicked"), "{}", m.stderr);
    let summary: serde_json::Value =
        serde_json::from_str(&m.stdout).unwrap_or_else(|_| panic!("no summary: {}{}", m.stdout, m.stderr));
    let failures = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_owned(), format!("{}: {}", f["code"], f["reason"])))
        .collect();
    (failures, summary["converted"].as_u64().unwrap(), m.peak_rss_mb)
}

/// A GIF with a `screen` logical screen and `frames` frames of `frame` pixels at the
/// top-left corner, all of colour 0. Its LZW data sends a clear code before every pixel,
/// so the codes stay 3 bits wide and no table is needed to write it.
fn gif(screen: (u16, u16), frame: (u16, u16), frames: usize) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend(screen.0.to_le_bytes());
    g.extend(screen.1.to_le_bytes());
    g.extend([0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // a global table of 2 colours
    for _ in 0..frames {
        g.extend([0x21, 0xF9, 4, 0, 10, 0, 0, 0]); // shown for 100 ms
        g.push(0x2C);
        g.extend([0, 0, 0, 0]);
        g.extend(frame.0.to_le_bytes());
        g.extend(frame.1.to_le_bytes());
        g.push(0);
        g.push(2); // LZW minimum code size
        let (mut data, mut acc, mut bits) = (Vec::new(), 0u32, 0);
        let codes = std::iter::repeat_n([4u32, 0], usize::from(frame.0) * usize::from(frame.1)).flatten();
        for code in codes.chain([5]) {
            acc |= code << bits;
            bits += 3;
            while bits >= 8 {
                data.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        if bits > 0 {
            data.push(acc as u8);
        }
        for block in data.chunks(255) {
            g.push(block.len() as u8);
            g.extend(block);
        }
        g.push(0);
    }
    g.push(0x3B);
    g
}

#[test]
fn resize_upscaling_bomb_is_refused_and_the_daemon_stays_within_its_budget() {
    let (server, _root) = serve_local(
        &[("small.jpg", fixture("jpeg_baseline.jpg"))],
        &format!("{SMALL_PIPELINE}conversion: {{max_megapixels: 250}}\n"),
    );
    // 16383 x 16383 = 268 MP: over the pixel cap, which applies to the output too (the
    // API answers the pixel limits as payload_too_large, as before).
    let r = server.get("/api/convert?source=small.jpg&width=16383&height=16383");
    let v = r.json();
    assert_eq!((r.status, v["error"].as_str()), (413, Some("payload_too_large")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("output would be 16383x16383"), "{v}");
    // 8000 x 8000 = 64 MP passes the cap but needs ~770 MB: refused, naming the budget.
    let r = server.get("/api/convert?source=small.jpg&width=8000&height=8000");
    let v = r.json();
    assert_eq!((r.status, v["error"].as_str()), (413, Some("over_memory_budget")), "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("pipeline.memory_budget_mb (64)") && message.contains("at least"), "{v}");
    // Upscaling within the limits is allowed, as in the Go server.
    let r = server.get("/api/convert?source=small.jpg&width=1200");
    let v = r.json();
    assert_eq!((r.status, v["width"].as_u64(), v["height"].as_u64()), (200, Some(1200), Some(801)), "{v}");
    assert_eq!(server.get("/health").status, 200);
    let peak = peak_rss_mb(server.child.id());
    eprintln!("upscaling bomb: daemon peak RSS {peak:.1} MB (bound {})", 100 + SMALL_BUDGET_MB);
    assert!(peak <= BASE_MB + f64::from(SMALL_BUDGET_MB), "peak {peak:.1} MB");
}

#[test]
fn gif_canvas_bomb_is_refused_before_decoding_and_rss_stays_within_the_budget() {
    let bomb = gif((10000, 10000), (1, 1), 3);
    assert!(bomb.len() < 120, "{} bytes", bomb.len());
    let files = vec![
        ("bomb.gif".to_owned(), bomb),
        ("bomb12.gif".to_owned(), gif((10000, 10000), (1, 1), 12)),
        // 9 MP: within the animation canvas cap (100 MP / 3), but its canvases need ~380 MB.
        ("screen.gif".to_owned(), gif((3000, 3000), (1, 1), 3)),
        ("fits.gif".to_owned(), gif((400, 300), (8, 8), 3)),
    ];
    let (failures, converted, peak) = run_once_local(&files);
    let code = |key: &str| failures.get(key).map(|f| f.split(':').next().unwrap().trim_matches('"').to_owned());
    assert_eq!(code("bomb.gif").as_deref(), Some("too_many_pixels"), "{failures:?}");
    assert_eq!(code("bomb12.gif").as_deref(), Some("too_many_pixels"), "{failures:?}");
    assert_eq!(code("screen.gif").as_deref(), Some("over_memory_budget"), "{failures:?}");
    assert!(failures["screen.gif"].contains("pipeline.memory_budget_mb (64)"), "{failures:?}");
    assert_eq!((converted, failures.len()), (1, 3), "{failures:?}");
    eprintln!("GIF canvas bomb: run peak RSS {peak:.1} MB (bound {})", 100 + SMALL_BUDGET_MB);
    assert!(peak <= BASE_MB + f64::from(SMALL_BUDGET_MB), "peak {peak:.1} MB");
}

/// A seeded xorshift generator for the property tests, and how many cases to run.
struct Cases {
    state: u64,
    count: usize,
}

impl Cases {
    fn from_env(default_seed: u64) -> Self {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
        let (state, count) = (env("ICS_PROPTEST_SEED").unwrap_or(default_seed).max(1), env("ICS_PROPTEST_CASES"));
        eprintln!("seed {state} (ICS_PROPTEST_SEED)");
        Self { state, count: count.unwrap_or(6) as usize }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// A size from 1 to `max`, spread evenly over its orders of magnitude.
    fn side(&mut self, max: u32) -> u32 {
        let f = (self.next() % 10_000) as f64 / 10_000.0;
        (f64::from(max).powf(f).round() as u32).clamp(1, max)
    }
}

#[test]
fn random_resize_requests_keep_the_daemon_within_the_memory_bound() {
    let sources = ["photo.jpg", "alpha.png", "deep.png", "anim.gif"];
    let files = [
        (sources[0], fixture("jpeg_baseline.jpg")),
        (sources[1], fixture("png_alpha.png")),
        (sources[2], fixture("png_rgba16.png")),
        (sources[3], fixture("gif_animated.gif")),
    ];
    let (server, _root) = serve_local(&files, SMALL_PIPELINE);
    let mut cases = Cases::from_env(0x5eed_0001);
    for _ in 0..cases.count {
        let source = sources[(cases.next() % 4) as usize];
        let mut query = format!("source={source}");
        for name in ["width", "height"] {
            match cases.next() % 4 {
                0 => {}
                1 => query.push_str(&format!("&{name}=0")),
                _ => query.push_str(&format!("&{name}={}", cases.side(16383))),
            }
        }
        let r = server.get(&format!("/api/convert?{query}"));
        let v = r.json();
        match r.status {
            200 => assert!(v["width"].as_u64().unwrap() <= 16383 && v["height"].as_u64().unwrap() <= 16383),
            413 => assert!(matches!(v["error"].as_str(), Some("payload_too_large" | "over_memory_budget")), "{v}"),
            _ => panic!("{query}: {v}"),
        }
        eprintln!("{query}: {} {}", r.status, v["error"].as_str().unwrap_or(""));
    }
    let peak = peak_rss_mb(server.child.id());
    eprintln!("random resizes: daemon peak RSS {peak:.1} MB (bound {})", 100 + SMALL_BUDGET_MB);
    assert!(peak <= BASE_MB + f64::from(SMALL_BUDGET_MB), "peak {peak:.1} MB");
}

#[test]
fn random_gif_screens_and_frames_keep_a_run_within_the_memory_bound() {
    let mut cases = Cases::from_env(0x5eed_0002);
    let files: Vec<(String, Vec<u8>)> = (0..cases.count)
        .map(|i| {
            let screen = (cases.side(12_000) as u16, cases.side(12_000) as u16);
            let frame =
                (cases.side(u32::from(screen.0).min(48)) as u16, cases.side(u32::from(screen.1).min(48)) as u16);
            let frames = 1 + (cases.next() % 6) as usize;
            eprintln!("g{i}.gif: screen {screen:?}, {frames} frames of {frame:?}");
            (format!("g{i}.gif"), gif(screen, frame, frames))
        })
        .collect();
    let (failures, converted, peak) = run_once_local(&files);
    for (key, failure) in &failures {
        let refused =
            ["too_many_pixels", "over_memory_budget"].iter().any(|c| failure.starts_with(&format!("\"{c}\"")));
        assert!(refused, "{key}: {failure}");
    }
    assert_eq!(converted as usize + failures.len(), files.len(), "{failures:?}");
    eprintln!("random GIFs: {converted} converted, {failures:?}; peak RSS {peak:.1} MB");
    assert!(peak <= BASE_MB + f64::from(SMALL_BUDGET_MB), "peak {peak:.1} MB");
}

/// A gauge's value in a `/metrics` text.
fn gauge(server: &Server, line_start: &str) -> f64 {
    let m = server.get("/metrics");
    let text = String::from_utf8_lossy(&m.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} missing:\n{text}"))
}

#[test]
fn a_timed_out_conversion_is_cancelled_and_holds_its_slot_and_memory_until_it_stops() {
    let (server, _root) = serve_local(
        &[("big.jpg", large_photo(0))],
        "pipeline: {workers: 1, memory_budget_mb: 1536}\nserver: {timeout_seconds: 1}\n\
         api: {max_queued_conversions: 1}\nconversion: {method: 6}\n",
    );
    let admitted = |s: &Server| gauge(s, "ics_api_conversions_admitted ");
    let reserved = |s: &Server| gauge(s, "ics_memory_reserved_bytes{pool=\"work\"} ");
    // A conversion that takes longer than the 1 s timeout (an upscale of a 9 MP photo
    // at libwebp's slowest method); larger each time it happens to finish in time
    // (6000 px wide: 25 MP, 575 MB reserved, within the 1152 MB work pool).
    let mut timed_out = false;
    for width in [4000, 5000, 6000] {
        let r = server.get(&format!("/api/convert?source=big.jpg&width={width}"));
        if r.status == 504 {
            assert_eq!(r.json()["error"], "timeout");
            timed_out = true;
            break;
        }
        assert_eq!(r.status, 200, "{:?}", r.json());
    }
    assert!(timed_out, "no conversion outlasted the 1 s timeout");
    // The worker stops early (libwebp's progress hook, or before the next frame), and
    // only then are the admission and the memory given back: the converter drops them
    // with the pixels. (A still-queued one is skipped, and dropped the same way.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while admitted(&server) > 0.0 {
        assert!(std::time::Instant::now() < deadline, "the conversion never ended");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(reserved(&server), 0.0);
    // The collecting thread can lag a little behind the line.
    wait_for("the log line 'Cancelled an API conversion'", std::time::Duration::from_secs(5), || {
        server.log.lock().unwrap().iter().any(|l| l.contains("Cancelled an API conversion")).then_some(())
    });
    assert_eq!(server.get("/health").status, 200);
}

/// Every output on (WebP and AVIF, full size and 640 px): a run's peak stays within
/// 100 MB + the budget, as with the one WebP, and every output is made.
#[test]
fn every_output_on_keeps_a_run_within_100_mb_and_its_budget() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let base = image::load_from_memory(&fixture("reference_chelsea.png")).unwrap();
    for i in 0..3u32 {
        let photo = base.resize_exact(1800 + i * 8, 1250, image::imageops::FilterType::Triangle).into_rgb8();
        std::fs::write(root.path().join(format!("p{i}.jpg")), jpeg_of(&photo, 90)).unwrap();
    }
    let budget: u32 = 1024;
    let config = state.path().join("outputs.yaml");
    let yaml = "conversion:\n  outputs: [{format: webp}, {format: avif}, {format: webp, width: 640}, {format: avif, width: 640}]\n";
    std::fs::write(&config, yaml).unwrap();
    let mut cmd = binary();
    cmd.arg("--config")
        .arg(&config)
        .args(["run-once", "--json"])
        .env("ICS__STORAGE__BACKEND", "local")
        .env("ICS__STORAGE__LOCAL_ROOT", root.path())
        .env("ICS__STATE__DIR", state.path())
        .env("ICS__PIPELINE__WORKERS", "2")
        .env("ICS__PIPELINE__MEMORY_BUDGET_MB", budget.to_string())
        .env("ICS__LOG__LEVEL", "warn");
    let m = run_with_peak_rss(cmd);
    let summary: serde_json::Value =
        serde_json::from_str(&m.stdout).unwrap_or_else(|_| panic!("no summary: {}{}", m.stdout, m.stderr));
    assert_eq!(summary["converted"], 12, "{summary}");
    assert_eq!(summary["by_format"], serde_json::json!({"avif": 6, "webp": 6}), "{summary}");
    eprintln!("memory: every output of 3 photos of 2.25 MP, budget {budget} MB: peak RSS {:.1} MB", m.peak_rss_mb);
    assert!(m.peak_rss_mb <= BASE_MB + f64::from(budget), "peak {:.1} MB over 100 MB + {budget} MB", m.peak_rss_mb);
}
