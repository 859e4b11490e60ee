//! AVIF encoders against this project's WebP, on real photos: bytes at equal SSIMULACRA2
//! and CPU seconds per megapixel (issue 24, item 3). `scripts/bench-avif.sh` runs it.
//!
//! ```text
//! cargo run --release --features avif-bench --example avif_compare -- \
//!     [--ravif SPEEDS:QUALITIES] [--aom SPEEDS:QUANTIZERS] [--svt SPEEDS:QUANTIZERS] \
//!     [--threads N] [--detail FILE] JPEG...
//! ```
//!
//! A grid of `none` leaves that encoder out (`--ravif none`: the default setting too).
//!
//! Each photo is decoded with the `image` crate, turned upright by its EXIF orientation
//! and cut to even sides (SVT-AV1 1.4 refuses odd ones): that is the reference, and the
//! picture every AVIF encoder is handed and the WebP is scored on.
//! The WebP is this project's, `ics::convert::convert` with the default options (its
//! bytes and score); its CPU time is the encode alone (`webp::encode_still` with the same
//! settings), as for the AVIF encoders. Candidates:
//! - `ravif`: `ics::convert::avif::encode_still` (ravif/rav1e as built: with the
//!   `avif-asm` feature, rav1e's assembly), one thread, at each speed and quality;
//! - `aom`, `svt`: Debian's `avifenc` (libavif with libaom / SVT-AV1), `-j 1`, 4:2:0,
//!   8-bit, `--min Q --max Q` at each speed and quantizer (0-63), fed a PNG of the
//!   reference; its CPU time is the child's (PNG read included). Skipped without
//!   `avifenc` on the PATH.
//!
//! Every AVIF is decoded back with `avifdec` (dav1d) and scored against the reference
//! with SSIMULACRA2 (the `ssimulacra2` crate); without `avifdec` the run stops.
//! Then `AvifConfig::default()` is encoded once more with `--threads N` (default 2) for
//! its CPU and wall seconds per megapixel with threads.
//!
//! Prints Markdown tables: every setting (total bytes against the WebP's, mean score,
//! CPU s/MP), each encoder and speed interpolated to the WebP's mean score (the bytes
//! it would take to score as the WebP does, from the two qualities that bracket it), and
//! the default setting against the goal (at least 25% fewer bytes than the default WebP,
//! mean score at most 1 point below). `--detail FILE` writes one TSV line per output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use std::{env, fs, process};

use ics::convert::avif::{self, AvifConfig};
use ics::convert::webp::{self, EncodeConfig, Pixels};
use ics::convert::{ConvertOptions, convert, decode_webp};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use ssimulacra2::{ColorPrimaries, Rgb, TransferCharacteristic, compute_frame_ssimulacra2};

/// One encoder setting: (encoder, speed, quality or quantizer).
type Setting = (String, u8, u32);

/// What one setting did over the photos.
#[derive(Default)]
struct Totals {
    bytes: u64,
    score: f64,
    cpu: f64,
    files: usize,
}

/// CPU seconds of this process (every thread) or of its waited-for children.
fn cpu_seconds(who: libc::c_int) -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is handed.
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn reference(path: &Path) -> Result<RgbImage, String> {
    let mut decoder = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| e.to_string())?
        .into_decoder()
        .map_err(|e| e.to_string())?;
    let orientation = decoder.orientation().map_err(|e| e.to_string())?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    img.apply_orientation(orientation);
    // Even sides: SVT-AV1 1.4 refuses an odd height or width in 4:2:0 (a column or row
    // less for every encoder, so that all compare the same picture).
    let (w, h) = (img.width() & !1, img.height() & !1);
    Ok(img.crop_imm(0, 0, w.max(2), h.max(2)).to_rgb8())
}

fn linear(img: &RgbImage) -> Rgb {
    let data = img.pixels().map(|p| p.0.map(|c| f32::from(c) / 255.0)).collect();
    Rgb::new(data, img.width() as usize, img.height() as usize, TransferCharacteristic::SRGB, ColorPrimaries::BT709)
        .expect("an RGB frame")
}

fn score(reference: &Rgb, distorted: &RgbImage) -> f64 {
    compute_frame_ssimulacra2(reference.clone(), linear(distorted)).expect("SSIMULACRA2")
}

fn avifdec(avif: &[u8], dir: &Path) -> RgbImage {
    let (a, p) = (dir.join("out.avif"), dir.join("out.png"));
    fs::write(&a, avif).unwrap();
    let ok = Command::new("avifdec").arg(&a).arg(&p).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "avifdec could not decode an AVIF (kept at {})", a.display());
    image::open(&p).expect("avifdec's PNG").to_rgb8()
}

/// The AVIF and its CPU seconds, or avifenc's last error line.
fn avifenc(codec: &str, speed: u8, q: u32, png: &Path, dir: &Path) -> Result<(Vec<u8>, f64), String> {
    let out = dir.join("enc.avif");
    let before = cpu_seconds(libc::RUSAGE_CHILDREN);
    let status = Command::new("avifenc")
        .args(["-j", "1", "-c", codec, "-s", &speed.to_string(), "-y", "420", "-d", "8"])
        .args(["--min", &q.to_string(), "--max", &q.to_string()])
        .arg(png)
        .arg(&out)
        .output()
        .expect("avifenc");
    if !status.status.success() {
        let stderr = String::from_utf8_lossy(&status.stderr).into_owned();
        let error = stderr.lines().find(|l| l.contains("rror")).unwrap_or("no message").to_owned();
        return Err(error);
    }
    Ok((fs::read(&out).unwrap(), cpu_seconds(libc::RUSAGE_CHILDREN) - before))
}

/// `6:75,80,85;8,10:75,85` as speeds × qualities, each `;`-separated part a cross product;
/// `none` for none.
fn grid(spec: &str) -> Vec<(u8, u32)> {
    if spec == "none" {
        return Vec::new();
    }
    let list = |l: &str| l.split(',').filter(|x| !x.is_empty()).map(|x| x.parse::<u32>().unwrap()).collect::<Vec<_>>();
    let mut out = Vec::new();
    for part in spec.split(';') {
        let (s, q) = part.split_once(':').unwrap_or_else(|| panic!("{spec}: expected SPEEDS:QUALITIES[;...]"));
        out.extend(list(s).into_iter().flat_map(|s| list(q).into_iter().map(move |q| (s as u8, q))));
    }
    out
}

fn on_path(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

fn main() {
    let (mut ravif, mut aom, mut svt) =
        ("6:75,80,85;8,10:75,85".to_owned(), "6,8:16,20,24".to_owned(), "8:30,38,46".to_owned());
    let (mut threads, mut detail, mut files) = (2usize, None::<PathBuf>, Vec::<PathBuf>::new());
    let mut args = env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--ravif" => ravif = value(),
            "--aom" => aom = value(),
            "--svt" => svt = value(),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--detail" => detail = Some(value().into()),
            _ if a.starts_with("--") => {
                eprintln!("unknown flag {a}");
                process::exit(64);
            }
            _ => files.push(a.into()),
        }
    }
    if files.is_empty() {
        eprintln!("usage: avif_compare [--ravif S:Q] [--aom S:Q] [--svt S:Q] [--threads N] [--detail FILE] JPEG...");
        process::exit(64);
    }
    if !on_path("avifdec") {
        eprintln!("avifdec is needed to score AVIFs (Debian: apt-get install libavif-bin)");
        process::exit(69);
    }
    let libavif = on_path("avifenc");
    let work = tempfile::tempdir().unwrap();
    let mut detail = detail.map(|p| fs::File::create(p).expect("--detail file"));
    let default = AvifConfig::default();
    let mut settings: Vec<Setting> = grid(&ravif).into_iter().map(|(s, q)| ("ravif".to_owned(), s, q)).collect();
    let default_setting = ("ravif".to_owned(), default.speed, default.quality as u32);
    let with_ravif = ravif != "none";
    if with_ravif && !settings.contains(&default_setting) {
        settings.push(default_setting.clone());
    }
    if libavif {
        settings.extend(grid(&aom).into_iter().map(|(s, q)| ("aom".to_owned(), s, q)));
        settings.extend(grid(&svt).into_iter().map(|(s, q)| ("svt".to_owned(), s, q)));
    }
    let mut totals: BTreeMap<Setting, Totals> = BTreeMap::new();
    let (mut webp_t, mut threaded_cpu, mut threaded_wall, mut megapixels) = (Totals::default(), 0.0, 0.0, 0.0);
    let no = AtomicBool::new(false);
    let opts = ConvertOptions::default();
    let webp_cfg = EncodeConfig {
        quality: opts.quality,
        method: opts.method,
        lossless: false,
        near_lossless: 100,
        alpha_quality: opts.alpha_quality,
        exact: opts.exact,
        sharp_yuv: opts.sharp_yuv,
        multithread: opts.multithread,
        low_memory: false,
    };
    let mut line = |file: &Path, enc: &str, speed: u8, q: u32, bytes: usize, score: f64, cpu: f64| {
        if let Some(d) = detail.as_mut() {
            let name = file.file_name().unwrap().to_string_lossy();
            writeln!(d, "{name}\t{enc}\t{speed}\t{q}\t{bytes}\t{score:.3}\t{cpu:.3}").unwrap();
        }
    };
    for file in &files {
        let reference = match reference(file) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: skipped: {e}", file.display());
                continue;
            }
        };
        let (w, h) = reference.dimensions();
        let mp = f64::from(w) * f64::from(h) / 1e6;
        megapixels += mp;
        let ref_lin = linear(&reference);
        let px = Pixels { data: reference.as_raw(), width: w, height: h, has_alpha: false };

        let converted = convert(&fs::read(file).unwrap(), &opts, None).expect("convert");
        let before = cpu_seconds(libc::RUSAGE_SELF);
        webp::encode_still(&px, &webp_cfg, &no).expect("WebP encode");
        let cpu = cpu_seconds(libc::RUSAGE_SELF) - before;
        // Scored on the reference's even-sided part (the WebP is of the whole photo).
        let decoded = decode_webp(&converted.webp).expect("our WebP decodes").crop_imm(0, 0, w, h).to_rgb8();
        let s = score(&ref_lin, &decoded);
        webp_t.add(converted.webp.len(), s, cpu);
        line(file, "webp", opts.method, opts.quality as u32, converted.webp.len(), s, cpu);
        eprintln!("{}: {w}x{h}, WebP {} bytes, score {s:.2}", file.display(), converted.webp.len());

        let png = work.path().join("ref.png");
        if libavif {
            reference.save(&png).unwrap();
        }
        let mut refused: Vec<String> = Vec::new();
        for setting in &settings {
            let (enc, speed, q) = setting;
            if refused.contains(enc) {
                continue;
            }
            let (avif, cpu) = if enc == "ravif" {
                let config = AvifConfig { quality: *q as f32, speed: *speed, ..default };
                let before = cpu_seconds(libc::RUSAGE_SELF);
                let avif = avif::encode_still(&px, &config, &no).expect("AVIF encode");
                (avif, cpu_seconds(libc::RUSAGE_SELF) - before)
            } else {
                match avifenc(enc, *speed, *q, &png, work.path()) {
                    Ok(done) => done,
                    Err(e) => {
                        // An encoder that cannot take every photo is out of the comparison.
                        eprintln!("  {enc}: refused {}: {e}; left out of the comparison", file.display());
                        println!("{enc} left out: refused {}x{} ({}): {e}", w, h, file.display());
                        refused.push(enc.clone());
                        continue;
                    }
                }
            };
            let s = score(&ref_lin, &avifdec(&avif, work.path()));
            totals.entry(setting.clone()).or_default().add(avif.len(), s, cpu);
            line(file, enc, *speed, *q, avif.len(), s, cpu);
            eprintln!("  {enc} s{speed} q{q}: {} bytes, score {s:.2}, {:.2} CPU s/MP", avif.len(), cpu / mp);
        }
        settings.retain(|(enc, _, _)| !refused.contains(enc));
        totals.retain(|(enc, _, _), _| !refused.contains(enc));
        if !with_ravif {
            continue;
        }
        let config = AvifConfig { threads, ..default };
        let (before, start) = (cpu_seconds(libc::RUSAGE_SELF), Instant::now());
        avif::encode_still(&px, &config, &no).expect("AVIF encode");
        threaded_cpu += cpu_seconds(libc::RUSAGE_SELF) - before;
        threaded_wall += start.elapsed().as_secs_f64();
    }
    report(&webp_t, &totals, &default_setting, megapixels, threads, threaded_cpu, threaded_wall);
}

impl Totals {
    fn add(&mut self, bytes: usize, score: f64, cpu: f64) {
        self.bytes += bytes as u64;
        self.score += score;
        self.cpu += cpu;
        self.files += 1;
    }

    fn mean(&self) -> f64 {
        self.score / self.files as f64
    }
}

fn report(
    webp: &Totals,
    totals: &BTreeMap<Setting, Totals>,
    default: &Setting,
    mp: f64,
    threads: usize,
    threaded_cpu: f64,
    threaded_wall: f64,
) {
    let (wb, ws) = (webp.bytes as f64, webp.mean());
    println!(
        "{} photos, {mp:.1} MP. WebP (quality 85, method 4): {} bytes, mean SSIMULACRA2 {ws:.2}, {:.3} CPU s/MP\n",
        webp.files,
        webp.bytes,
        webp.cpu / mp
    );
    println!("| encoder | speed | quality | bytes | × WebP | mean score | Δ score | CPU s/MP (1 thread) |");
    println!("|---|---|---|---|---|---|---|---|");
    for ((enc, speed, q), t) in totals {
        let q = if enc == "ravif" { format!("{q}") } else { format!("Q{q}") };
        println!(
            "| {enc} | {speed} | {q} | {} | {:.3} | {:.2} | {:+.2} | {:.3} |",
            t.bytes,
            t.bytes as f64 / wb,
            t.mean(),
            t.mean() - ws,
            t.cpu / mp
        );
    }
    println!("\nAt the WebP's mean score ({ws:.2}), interpolated between the two settings that bracket it:\n");
    println!("| encoder | speed | quality there | × WebP bytes | CPU s/MP |");
    println!("|---|---|---|---|---|");
    let mut groups: BTreeMap<(String, u8), Vec<(u32, &Totals)>> = BTreeMap::new();
    for ((enc, speed, q), t) in totals {
        groups.entry((enc.clone(), *speed)).or_default().push((*q, t));
    }
    for ((enc, speed), mut points) in groups {
        // Ordered by score, low to high; find the pair that brackets the WebP's.
        points.sort_by(|a, b| a.1.mean().total_cmp(&b.1.mean()));
        let bracket = points.windows(2).find(|p| p[0].1.mean() <= ws && ws <= p[1].1.mean());
        match bracket {
            Some([(qa, a), (qb, b)]) => {
                let f = if b.mean() > a.mean() { (ws - a.mean()) / (b.mean() - a.mean()) } else { 0.0 };
                let lerp = |x: f64, y: f64| x + f * (y - x);
                // Bytes interpolated on a log scale (they grow geometrically with quality).
                let bytes = (lerp((a.bytes as f64).ln(), (b.bytes as f64).ln())).exp();
                let cpu = lerp(a.cpu, b.cpu) / mp;
                println!(
                    "| {enc} | {speed} | {:.1} | {:.3} | {cpu:.3} |",
                    lerp(f64::from(*qa), f64::from(*qb)),
                    bytes / wb
                );
            }
            _ => println!("| {enc} | {speed} | not bracketed by the settings run | | |"),
        }
    }
    if let Some(t) = totals.get(default) {
        let (ratio, delta) = (t.bytes as f64 / wb, t.mean() - ws);
        let pass = ratio <= 0.75 && delta >= -1.0;
        println!(
            "\nDefault AvifConfig (ravif speed {} quality {}): {:.3} × the WebP's bytes ({} against {}), mean score {:.2} against {ws:.2} ({delta:+.2}); CPU {:.3} s/MP on 1 thread; with {threads} threads {:.3} CPU s/MP, {:.3} wall s/MP. Goal (≤ 0.75 × bytes, ≥ −1 point): {}",
            default.1,
            default.2,
            ratio,
            t.bytes,
            webp.bytes,
            t.mean(),
            t.cpu / mp,
            threaded_cpu / mp,
            threaded_wall / mp,
            if pass { "met" } else { "NOT met" }
        );
    }
}
