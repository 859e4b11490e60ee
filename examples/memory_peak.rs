//! The cost model against what a conversion really holds: for each file, the estimate
//! that `pipeline.memory_budget_mb` reserves ([`ics::convert::cost::estimate`]) and the
//! peak RSS that converting it adds to the process.
//!
//! ```text
//! cargo run --example memory_peak -- [--budget MB] [--synthetic DIR] FILE|DIR...
//! ```
//!
//! `--synthetic DIR` first writes the worst cases the corpus lacks into DIR and measures
//! them too: JPEGs of seeded RGB noise (quality 90, 4:4:4) of 6, 16 and 24 MP and of
//! 6 MP at quality 50 and 100 (noise is the encoder's worst case at any quality), the
//! repository's photo (testdata/images/reference_chelsea.png) upscaled to 24 and 31 MP,
//! and that photo at 4 MP as a truecolour PNG with seeded grain of ±0, 4, 16 and 64 a
//! channel, and RGB and RGBA noise (a PNG's detail, from smooth to none compressible);
//! and graphics of at most 256 colours, encoded lossless (`gfx-*`: noise, stripes, a
//! dithered gradient, flat blocks; 1, 4 and 16 MP, transparent, and the shapes of
//! libwebp's most and fewest histogram tiles). `--graphic KIND WIDTH HEIGHT FILE` writes
//! one such graphic of any size (KIND as in `synthetic_graphic`, `-rgba` for
//! transparency) to measure a shape the set lacks.
//!
//! Each file is converted in a fresh process (this one run again with `--one FILE`) with
//! the default settings, as `convert` and the daemon do (glibc's large frees returned at
//! once, as the daemon sets it). There the file is read, the kernel's peak-RSS mark
//! reset (`/proc/self/clear_refs` `5`) and the RSS noted; the conversion's peak is the
//! mark afterwards less that RSS. What is reserved is the estimate in whole MiB (the
//! budget's unit), at least one.
//! `--time-header FILE...` prints what reading each header (and a PNG's rows) takes,
//! the least of five reads (build with `--release` for the daemon's figure).
//! `--lossless-always` converts under `lossless: always` (the lossless encoder for every
//! picture, the estimate then its flat one).
//! `--budget MB` converts under that `pipeline.memory_budget_mb` (the estimate then
//! includes libwebp's `low_memory` where the budget calls for it).
//!
//! Prints one line per file, `file  megapixels  file MB  reserved MB  peak MB  ratio
//! encoder` (`lossless` or `lossy`, with `low_memory` where the plan uses it), then the lowest and highest
//! reserved/peak ratio over the files of at least 1 MP (below
//! that both are a few MB and the ratio measures the allocator, not the model). Exit
//! status 1 when a reservation is under its peak. `scripts/bench-memory.sh` runs it.

use std::path::{Path, PathBuf};
use std::{env, fs, process};

use ics::convert::{ConvertOptions, Limits, convert, cost};

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

fn files(args: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for a in args {
        let p = PathBuf::from(a);
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect();
            entries.retain(|e| {
                let ext = e.extension().and_then(|x| x.to_str()).unwrap_or("").to_ascii_lowercase();
                ["jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff"].contains(&ext.as_str())
            });
            entries.sort();
            out.extend(entries);
        } else {
            out.push(p);
        }
    }
    out
}

/// A JPEG of `width`×`height` at `quality`: seeded RGB noise, or the repository's photo
/// upscaled.
fn synthetic_jpeg(width: u32, height: u32, noise: bool, quality: u8) -> Vec<u8> {
    let rgb = if noise {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(width);
        let data = (0..width as usize * height as usize * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        image::RgbImage::from_raw(width, height, data).unwrap()
    } else {
        let photo = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/images/reference_chelsea.png");
        let base = image::open(photo).expect("the repository's photo");
        base.resize_exact(width, height, image::imageops::FilterType::Triangle).into_rgb8()
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(&rgb).unwrap();
    out
}

/// A truecolour PNG of `width`×`height`: the repository's photo upscaled, each channel
/// moved by seeded noise of ±`grain` (`None`: noise alone), with alpha when `alpha`.
fn synthetic_png(width: u32, height: u32, grain: Option<i32>, alpha: bool) -> Vec<u8> {
    let photo = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/images/reference_chelsea.png");
    let base = image::open(photo).expect("the repository's photo");
    let mut rgba = base.resize_exact(width, height, image::imageops::FilterType::Triangle).into_rgba8();
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ u64::from(width);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    for px in rgba.pixels_mut() {
        for c in 0..if alpha { 4 } else { 3 } {
            px[c] = match grain {
                None => next(),
                Some(g) => (i32::from(px[c]) + i32::from(next()) % (2 * g + 1) - g).clamp(0, 255) as u8,
            };
        }
    }
    let image = if alpha {
        image::DynamicImage::ImageRgba8(rgba)
    } else {
        image::DynamicImage::ImageRgba8(rgba).to_rgb8().into()
    };
    let mut out = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// The graphics a lossless encode is made of, worst to best (`lossless: auto` encodes
/// each by libwebp's palette: at most 256 colours), as RGB PNGs of `width`×`height`:
/// seeded noise of 256 and of 16 colours, of 4 colours a 64-pixel block (what libwebp's
/// colour cache could help), half the rows noise of 256 and half flat blocks, busy
/// diagonal stripes, a gradient quantised to 256 colours with ordered dithering, and
/// flat 64-pixel blocks; from files as large as their pixels to a few bytes.
/// `KIND-rgba`: the same as an indexed PNG whose palette has transparent colours (a
/// byte a pixel: 16 MP of it is within the default 50 MB a file).
fn synthetic_graphic(width: u32, height: u32, kind: &str) -> Vec<u8> {
    let (kind, alpha) = kind.strip_suffix("-rgba").map_or((kind, false), |k| (k, true));
    let palette: Vec<[u8; 4]> = (0..256u32)
        .map(|i| {
            let v = i.wrapping_mul(0x9e37_79b9).rotate_left(7);
            [v as u8, (v >> 8) as u8, (v >> 16) as u8, if alpha { (v >> 24) as u8 | 1 } else { 255 }]
        })
        .collect();
    let mut state = 0x5851_f42d_4c95_7f2du64 ^ u64::from(width);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u32
    };
    const BAYER: [u32; 16] = [0, 8, 2, 10, 12, 4, 14, 6, 3, 11, 1, 9, 15, 7, 13, 5];
    let mut index = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        for x in 0..width {
            let block = (x / 64).wrapping_mul(31) ^ (y / 64).wrapping_mul(17);
            index.push(match kind {
                "noise256" => next() % 256,
                "noise16" => next() % 16,
                "localnoise" => (block * 4 + next() % 4) % 256,
                "halfnoise" if y < height / 2 => next() % 256,
                "halfnoise" | "blocks" => block % 256,
                "stripes" => ((x * 7 + y * 3) / 5 + (x / 97) * (y / 89)) % 256,
                "gradient" => {
                    let level = (x * 255 / width + y * 255 / height) * 8 + BAYER[(x % 4 + 4 * (y % 4)) as usize];
                    (level / 16).min(255)
                }
                _ => panic!("no graphic {kind}"),
            } as u8);
        }
    }
    let mut out = Vec::new();
    if alpha {
        let mut png = png::Encoder::new(&mut out, width, height);
        png.set_color(png::ColorType::Indexed);
        png.set_palette(palette.iter().flat_map(|c| [c[0], c[1], c[2]]).collect::<Vec<u8>>());
        png.set_trns(palette.iter().map(|c| c[3]).collect::<Vec<u8>>());
        png.write_header().unwrap().write_image_data(&index).unwrap();
    } else {
        let rgb = index
            .iter()
            .flat_map(|&i| [palette[usize::from(i)][0], palette[usize::from(i)][1], palette[usize::from(i)][2]]);
        let img = image::RgbImage::from_raw(width, height, rgb.collect()).unwrap();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    }
    out
}

fn write_synthetic(dir: &str) {
    fs::create_dir_all(dir).unwrap();
    let cases = [
        ("noise-6mp.jpg", 3000, 2000, true, 90),
        ("noise-6mp-q50.jpg", 3000, 2000, true, 50),
        ("noise-6mp-q100.jpg", 3000, 2000, true, 100),
        ("noise-16mp.jpg", 4900, 3265, true, 90),
        ("noise-24mp.jpg", 6000, 4000, true, 90),
        ("photo-24mp.jpg", 6000, 4000, false, 90),
        ("photo-31mp.jpg", 6800, 4560, false, 90),
    ];
    for (name, w, h, noise, quality) in cases {
        let path = PathBuf::from(dir).join(name);
        if !path.exists() {
            fs::write(&path, synthetic_jpeg(w, h, noise, quality)).unwrap();
        }
    }
    // Photos as truecolour PNGs (encoded lossy under `auto`), from smooth to noise.
    let pngs = [
        ("png-photo-4mp.png", Some(0), false),
        ("png-grain4-4mp.png", Some(4), false),
        ("png-grain16-4mp.png", Some(16), false),
        ("png-grain64-4mp.png", Some(64), false),
        ("png-noise-4mp.png", None, false),
        ("png-noise-rgba-4mp.png", None, true),
    ];
    for (name, grain, alpha) in pngs {
        let path = PathBuf::from(dir).join(name);
        if !path.exists() {
            fs::write(&path, synthetic_png(2448, 1632, grain, alpha)).unwrap();
        }
    }
    // Graphics encoded lossless, at 1, 4 and 16 MP; with transparency; and at 2.66 MP in
    // the shapes of libwebp's most and fewest histogram tiles (2600 and 676).
    let mut graphics = Vec::new();
    for kind in ["noise256", "noise16", "localnoise", "halfnoise", "stripes", "gradient", "blocks"] {
        for (size, w, h) in [("1mp", 1224, 817), ("4mp", 2448, 1634), ("16mp", 4896, 3268)] {
            graphics.push((kind, size, w, h));
        }
    }
    graphics.extend([
        ("noise256-rgba", "4mp", 2448, 1634),
        ("stripes-rgba", "16mp", 4896, 3268),
        ("localnoise-rgba", "16mp", 4896, 3268),
        ("noise256", "2600tiles", 1600, 1664),
        ("noise256", "676tiles", 1632, 1632),
        ("blocks", "2600tiles", 1600, 1664),
        ("blocks", "676tiles", 1632, 1632),
    ]);
    for (kind, size, w, h) in graphics {
        let path = PathBuf::from(dir).join(format!("gfx-{kind}-{size}.png"));
        if !path.exists() {
            fs::write(&path, synthetic_graphic(w, h, kind)).unwrap();
        }
    }
}

/// Measures one file in this process: `(file, megapixels, file MB, reserved MB, peak
/// MB, encoder)`, or why it could not.
fn measure(path: &Path, opts: &ConvertOptions) -> Result<String, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let plan = cost::plan_for(&bytes, None, opts).ok_or(format!("{}: no estimate", path.display()))?;
    fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS mark (Linux >= 4.0)");
    let before = status_mb("VmRSS:");
    let result = convert(&bytes, opts, None);
    let peak = (status_mb("VmHWM:") - before).max(0.01);
    let converted = result.map_err(|e| format!("{}: {e}", path.display()))?;
    // What the budget really takes: whole MiB, at least one.
    let reserved = plan.bytes.div_ceil(1 << 20).max(1) as f64;
    let name = path.file_name().unwrap().to_string_lossy();
    Ok(format!(
        "{name}\t{:.2}\t{:.2}\t{reserved:.0}\t{peak:.1}\t{}",
        converted.source_megapixels,
        bytes.len() as f64 / MB,
        match (converted.lossless, plan.low_memory) {
            (true, _) => "lossless",
            (false, true) => "lossy low_memory",
            (false, false) => "lossy",
        }
    ))
}

fn main() {
    let mut args: Vec<String> = env::args().skip(1).collect();
    let mut opts = ConvertOptions::default();
    // The options each file's process is run with too.
    let mut settings = Vec::new();
    if let Some(i) = args.iter().position(|a| a == "--budget") {
        let mb = args.get(i + 1).and_then(|v| v.parse().ok()).expect("--budget MB");
        opts.limits = Limits { memory_budget_mb: mb, ..Limits::default() };
        settings = args.drain(i..i + 2).collect();
    }
    if let Some(i) = args.iter().position(|a| a == "--lossless-always") {
        // `lossless: always`: every file through libwebp's lossless encoder.
        opts.lossless = ics::convert::LosslessPolicy::Always;
        settings.push(args.remove(i));
    }
    if let Some(i) = args.iter().position(|a| a == "--synthetic") {
        let dir = args.get(i + 1).cloned().expect("--synthetic DIR");
        write_synthetic(&dir);
        args[i] = dir;
        args.remove(i + 1);
    }
    ics::memory::return_large_frees_to_the_os();
    if args.first().is_some_and(|a| a == "--graphic") {
        // One synthetic graphic of any size: `--graphic KIND WIDTH HEIGHT FILE`.
        let side = |i: usize| args[i].parse().expect("--graphic KIND WIDTH HEIGHT FILE");
        fs::write(&args[4], synthetic_graphic(side(2), side(3), &args[1])).unwrap();
        return;
    }
    if args.first().is_some_and(|a| a == "--time-header") {
        // What admission spends reading each file's header (and a PNG's rows), in ms:
        // the least of 5 reads. `--time-header FILE...`
        for f in &args[1..] {
            let bytes = fs::read(f).unwrap();
            let least = (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    let _ = std::hint::black_box(cost::read_header(&bytes));
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min);
            println!("{f}\t{least:.1} ms");
        }
        return;
    }
    if args.first().is_some_and(|a| a == "--one") {
        // One file in this fresh process (what the run below asks of each).
        match measure(Path::new(&args[1]), &opts) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("{e}"),
        }
        return;
    }
    let me = env::current_exe().unwrap();
    let (mut low, mut high, mut under) = (f64::INFINITY, 0.0f64, 0);
    println!("file\tmegapixels\tfile_mb\treserved_mb\tpeak_mb\tratio\tencoder");
    for path in files(&args) {
        // A fresh process for each file: what earlier images left in the allocator
        // would otherwise lower the next one's peak.
        let out = process::Command::new(&me).args(&settings).arg("--one").arg(&path).output().unwrap();
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 6 {
            continue;
        }
        let (mp, reserved, peak): (f64, f64, f64) =
            (f[1].parse().unwrap(), f[3].parse().unwrap(), f[4].parse().unwrap());
        let ratio = reserved / peak;
        println!("{}\t{}\t{}\t{}\t{}\t{ratio:.2}\t{}", f[0], f[1], f[2], f[3], f[4], f[5]);
        if ratio < 1.0 {
            under += 1;
        }
        if mp >= 1.0 {
            (low, high) = (low.min(ratio), high.max(ratio));
        }
    }
    println!(
        "SUMMARY\treserved/peak over files >= 1 MP: lowest {low:.2}, highest {high:.2}; under their peak: {under}"
    );
    if under > 0 {
        process::exit(1);
    }
}
