//! The AVIF encoder's working memory against its estimate
//! ([`ics::convert::cost::avif_work_bytes`]): the peak RSS that `avif::encode_still` adds
//! beyond the pixels handed to it.
//!
//! ```text
//! cargo run --release --example avif_memory -- [--threads N] [--speed S] [MP...]
//! ```
//!
//! For each size (megapixels, default 1 4 9 16 25; 3:2 pictures) and each content —
//! seeded RGB noise (the worst case: nothing predicts) and a smooth gradient with detail
//! (a photo's kind of picture) — opaque RGB and RGBA with a transparent half, the encode
//! runs in a fresh process (this one run again with `--one`): there the pixels are made,
//! glibc's large frees returned at once (as the daemon sets it), the kernel's peak-RSS
//! mark reset (`/proc/self/clear_refs` `5`) and the RSS noted; the encoder's peak is the
//! mark afterwards less that RSS. `AvifConfig::default()` with `--threads` (default 1)
//! and `--speed` (default the default's).
//!
//! Prints `MP  content  alpha  threads  peak MB  estimate MB  estimate/peak`, then the
//! lowest ratio; exit status 1 when an estimate is under its peak.

use std::sync::atomic::AtomicBool;
use std::{env, fs, process};

use ics::convert::avif::{AvifConfig, encode_still};
use ics::convert::cost::avif_work_bytes;
use ics::convert::webp::Pixels;

const MB: f64 = (1 << 20) as f64;

/// A `/proc/self/status` field in MB.
fn status_mb(field: &str) -> f64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    kb / 1024.0
}

/// `width`×`height` pixels: seeded noise, or a gradient with a fine pattern over it.
fn pixels(width: u32, height: u32, noise: bool, alpha: bool) -> Vec<u8> {
    let channels = if alpha { 4 } else { 3 };
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(width);
    let mut out = Vec::with_capacity(width as usize * height as usize * channels);
    for y in 0..height {
        for x in 0..width {
            for c in 0..3u32 {
                let v = if noise {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                } else {
                    let g = (x * 255 / width + y * 255 / height + c * 40) / 2;
                    (g + ((x / 3 + y / 5 + c) % 7) * 3) as u8
                };
                out.push(v);
            }
            if alpha {
                out.push(if x < width / 2 { 0 } else { (y % 256) as u8 });
            }
        }
    }
    out
}

fn config(threads: usize, speed: Option<u8>) -> AvifConfig {
    let d = AvifConfig::default();
    AvifConfig { threads, speed: speed.unwrap_or(d.speed), ..d }
}

/// In a fresh process: the encoder's peak RSS over what was there before, in MB.
fn one(width: u32, height: u32, noise: bool, alpha: bool, config: &AvifConfig) -> f64 {
    // SAFETY: mallopt only changes glibc's thresholds; as the daemon's main does.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    let data = pixels(width, height, noise, alpha);
    fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS (/proc/self/clear_refs)");
    let before = status_mb("VmRSS:");
    let px = Pixels { data: &data, width, height, has_alpha: alpha };
    let avif = encode_still(&px, config, &AtomicBool::new(false)).expect("AVIF encode");
    let peak = status_mb("VmHWM:") - before;
    assert!(!avif.is_empty());
    peak
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let (mut threads, mut speed, mut sizes) = (1usize, None, Vec::<f64>::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--one" => {
                let v: Vec<&String> = it.by_ref().take(6).collect();
                let num = |i: usize| v[i].parse::<u32>().expect("--one W H NOISE ALPHA THREADS SPEED");
                let c = config(num(4) as usize, Some(num(5) as u8));
                println!("{}", one(num(0), num(1), num(2) == 1, num(3) == 1, &c));
                return;
            }
            "--threads" => threads = it.next().and_then(|v| v.parse().ok()).expect("--threads N"),
            "--speed" => speed = it.next().and_then(|v| v.parse().ok()),
            mp => sizes.push(mp.parse().unwrap_or_else(|_| panic!("{mp}: megapixels expected"))),
        }
    }
    if sizes.is_empty() {
        sizes = vec![1.0, 4.0, 9.0, 16.0, 25.0];
    }
    let c = config(threads, speed);
    let exe = env::current_exe().expect("this example's path");
    println!("MP\tcontent\talpha\tthreads\tpeak MB\testimate MB\testimate/peak");
    let mut lowest = f64::INFINITY;
    for &mp in &sizes {
        let height = ((mp * 1e6 / 1.5).sqrt()).round() as u32;
        let width = (mp * 1e6 / f64::from(height)).round() as u32;
        for noise in [true, false] {
            for alpha in [false, true] {
                let out = process::Command::new(&exe)
                    .args(["--one", &width.to_string(), &height.to_string()])
                    .args([u8::from(noise), u8::from(alpha)].map(|b| b.to_string()))
                    .args([c.threads.to_string(), c.speed.to_string()])
                    .output()
                    .expect("running --one");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let peak: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("a peak");
                let estimate = avif_work_bytes(width, height, alpha, &c) as f64 / MB;
                let ratio = estimate / peak.max(1.0);
                lowest = lowest.min(ratio);
                let content = if noise { "noise" } else { "gradient" };
                println!("{mp}\t{content}\t{alpha}\t{}\t{peak:.1}\t{estimate:.1}\t{ratio:.2}", c.threads);
            }
        }
    }
    println!("lowest estimate/peak: {lowest:.2}");
    if lowest < 1.0 {
        process::exit(1);
    }
}
