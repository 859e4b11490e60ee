//! SSIM of WebP outputs against their sources, per tool: the check that a faster converter
//! is not a worse one.
//!
//! ```text
//! cargo run --release --example quality -- [--detail FILE] < pairs.tsv
//! ```
//!
//! Each stdin line is `tool<TAB>oriented<TAB>source<TAB>webp`: `oriented` is 1 when the tool
//! applies the source's EXIF orientation (ours does, cwebp and vips do not), else 0. The
//! source is decoded with the `image` crate, the WebP with `ics::convert::decode_webp`;
//! the reference is the source as stored, or as oriented for `oriented` tools (and, if the
//! sizes still disagree but are swapped, the other of the two). Both are composited over
//! white (alpha ignored after that) and reduced to BT.601 luma (0.299 R + 0.587 G +
//! 0.114 B); SSIM is the standard one (Wang et al. 2004): 11×11 Gaussian window, σ = 1.5,
//! C1 = (0.01·255)², C2 = (0.03·255)², mean over the valid window positions (images under
//! 11 px a side: one window over the whole image).
//!
//! Prints, per tool: files compared, mean SSIM over files, mean weighted by source
//! pixels, the lowest SSIM and its file, total WebP bytes, and files skipped (undecodable or
//! sizes that do not match). `--detail FILE` writes one TSV line per pair.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, Cursor, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{env, fs, process, thread};

use ics::convert::decode_webp;
use image::{DynamicImage, ImageDecoder, ImageReader, metadata::Orientation};

/// One output to compare: tool name, whether the tool applies EXIF orientation, WebP path.
struct Output {
    tool: String,
    oriented: bool,
    webp: PathBuf,
}

/// One pair's result.
struct Scored {
    tool: String,
    source: String,
    webp_bytes: u64,
    megapixels: f64,
    ssim: Result<f64, String>,
}

/// Luma plane, 0–255, over white.
struct Luma {
    width: usize,
    height: usize,
    y: Vec<f32>,
}

fn main() {
    let mut detail: Option<PathBuf> = None;
    let mut it = env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--detail" => detail = Some(PathBuf::from(it.next().unwrap_or_else(|| die("--detail needs a file")))),
            "--bench" => {}
            _ => die(&format!("unknown argument {arg:?} (pairs are read from stdin)")),
        }
    }
    let mut by_source: BTreeMap<PathBuf, Vec<Output>> = BTreeMap::new();
    let mut tools: Vec<String> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|e| die(&format!("reading stdin: {e}")));
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let [tool, oriented, source, webp] = f[..] else { die(&format!("expected 4 tab-separated fields: {line:?}")) };
        if !tools.iter().any(|t| t == tool) {
            tools.push(tool.to_owned());
        }
        by_source.entry(PathBuf::from(source)).or_default().push(Output {
            tool: tool.to_owned(),
            oriented: oriented == "1",
            webp: PathBuf::from(webp),
        });
    }
    let jobs: Vec<(PathBuf, Vec<Output>)> = by_source.into_iter().collect();
    let scored = score_all(&jobs);
    if let Some(path) = detail {
        write_detail(&path, &scored);
    }
    print_summary(&tools, &scored);
}

/// Scores every source's outputs, one source at a time per thread.
fn score_all(jobs: &[(PathBuf, Vec<Output>)]) -> Vec<Scored> {
    let next = AtomicUsize::new(0);
    let all = Mutex::new(Vec::new());
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((source, outputs)) = jobs.get(i) else { break };
                    let scored = score_source(source, outputs);
                    all.lock().expect("no thread panicked").extend(scored);
                }
            });
        }
    });
    let mut all = all.into_inner().expect("no thread panicked");
    all.sort_by(|a, b| (&a.tool, &a.source).cmp(&(&b.tool, &b.source)));
    all
}

fn score_source(source: &PathBuf, outputs: &[Output]) -> Vec<Scored> {
    let name = source.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let scored = |out: &Output, megapixels: f64, ssim: Result<f64, String>| Scored {
        tool: out.tool.clone(),
        source: name.clone(),
        webp_bytes: fs::metadata(&out.webp).map_or(0, |m| m.len()),
        megapixels,
        ssim,
    };
    let (img, orientation) = match load_source(source) {
        Ok(x) => x,
        Err(e) => return outputs.iter().map(|out| scored(out, 0.0, Err(format!("source: {e}")))).collect(),
    };
    let stored = luma(&img);
    let oriented = (orientation != Orientation::NoTransforms).then(|| {
        let mut o = img.clone();
        o.apply_orientation(orientation);
        luma(&o)
    });
    drop(img);
    let megapixels = (stored.width * stored.height) as f64 / 1e6;
    // Tools that share the conversion core write identical files: score each content once.
    let mut seen: HashMap<(u64, bool), Result<f64, String>> = HashMap::new();
    outputs
        .iter()
        .map(|out| {
            let ssim = match fs::read(&out.webp) {
                Ok(bytes) => {
                    let mut h = DefaultHasher::new();
                    bytes.hash(&mut h);
                    let key = (h.finish(), out.oriented);
                    seen.entry(key).or_insert_with(|| score_output(&bytes, out, &stored, oriented.as_ref())).clone()
                }
                Err(e) => Err(format!("reading {}: {e}", out.webp.display())),
            };
            scored(out, megapixels, ssim)
        })
        .collect()
}

/// SSIM of one output against the right reference: the source as the tool saw it (oriented
/// or as stored), else the other one when only it has the output's size.
fn score_output(bytes: &[u8], out: &Output, stored: &Luma, oriented: Option<&Luma>) -> Result<f64, String> {
    let img = decode_webp(bytes).ok_or_else(|| format!("{}: not a decodable still WebP", out.webp.display()))?;
    let got = luma(&img);
    let same = |l: &Luma| l.width == got.width && l.height == got.height;
    let oriented = oriented.unwrap_or(stored);
    let (preferred, other) = if out.oriented { (oriented, stored) } else { (stored, oriented) };
    let reference = [preferred, other].into_iter().find(|l| same(l)).ok_or_else(|| {
        format!("size {}x{} differs from the source's {}x{}", got.width, got.height, preferred.width, preferred.height)
    })?;
    Ok(ssim(reference, &got))
}

/// The source's pixels as stored, and its EXIF orientation.
fn load_source(path: &PathBuf) -> Result<(DynamicImage, Orientation), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| e.to_string())?;
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    Ok((img, orientation))
}

/// BT.601 luma of the image composited over white.
fn luma(img: &DynamicImage) -> Luma {
    let rgba = img.to_rgba8();
    let y = rgba
        .pixels()
        .map(|p| {
            let a = f32::from(p[3]) / 255.0;
            let c = |v: u8| 255.0 - (255.0 - f32::from(v)) * a;
            0.299 * c(p[0]) + 0.587 * c(p[1]) + 0.114 * c(p[2])
        })
        .collect();
    Luma { width: rgba.width() as usize, height: rgba.height() as usize, y }
}

const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
const WIN: usize = 11;
const SIGMA: f64 = 1.5;

fn ssim_terms(mx: f64, my: f64, vx: f64, vy: f64, cxy: f64) -> f64 {
    ((2.0 * mx * my + C1) * (2.0 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
}

/// Mean SSIM of `b` against `a` (same size). Sums run on values shifted by −128, which leaves
/// variances exact in f32 for 0–255 data; the means are shifted back for the luminance term.
fn ssim(a: &Luma, b: &Luma) -> f64 {
    let (w, h) = (a.width, a.height);
    if w == 0 || h == 0 {
        return 1.0;
    }
    if w < WIN || h < WIN {
        return global_ssim(&a.y, &b.y);
    }
    let kernel: Vec<f32> = {
        let r = (WIN / 2) as f64;
        let k: Vec<f64> = (0..WIN).map(|i| (-((i as f64 - r).powi(2)) / (2.0 * SIGMA * SIGMA)).exp()).collect();
        let sum: f64 = k.iter().sum();
        k.iter().map(|v| (v / sum) as f32).collect()
    };
    let ow = w - WIN + 1;
    let mut vert = vec![vec![0f32; w]; 5];
    let mut horiz = vec![vec![0f32; ow]; 5];
    let mut total = 0f64;
    for oy in 0..=h - WIN {
        for v in vert.iter_mut() {
            v.fill(0.0);
        }
        for (t, &k) in kernel.iter().enumerate() {
            let row = (oy + t) * w;
            let (ra, rb) = (&a.y[row..row + w], &b.y[row..row + w]);
            let [v0, v1, v2, v3, v4] = &mut vert[..] else { unreachable!() };
            for j in 0..w {
                let (x, y) = (ra[j] - 128.0, rb[j] - 128.0);
                v0[j] += k * x;
                v1[j] += k * y;
                v2[j] += k * x * x;
                v3[j] += k * y * y;
                v4[j] += k * x * y;
            }
        }
        for (v, hz) in vert.iter().zip(horiz.iter_mut()) {
            hz.fill(0.0);
            for (t, &k) in kernel.iter().enumerate() {
                for (o, &x) in hz.iter_mut().zip(&v[t..t + ow]) {
                    *o += k * x;
                }
            }
        }
        let [mx, my, xx, yy, xy] = &horiz[..] else { unreachable!() };
        let mut row_sum = 0f64;
        for ((((&mx, &my), &xx), &yy), &xy) in mx.iter().zip(my).zip(xx).zip(yy).zip(xy) {
            let (sx, sy) = (f64::from(mx), f64::from(my));
            let (vx, vy, cxy) = (f64::from(xx) - sx * sx, f64::from(yy) - sy * sy, f64::from(xy) - sx * sy);
            row_sum += ssim_terms(sx + 128.0, sy + 128.0, vx, vy, cxy);
        }
        total += row_sum;
    }
    total / (ow * (h - WIN + 1)) as f64
}

/// SSIM with one uniform window over the whole image (for images under 11 px a side).
fn global_ssim(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let mx = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let my = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut vx, mut vy, mut cxy) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - mx, f64::from(y) - my);
        vx += dx * dx;
        vy += dy * dy;
        cxy += dx * dy;
    }
    ssim_terms(mx, my, vx / n, vy / n, cxy / n)
}

fn write_detail(path: &PathBuf, scored: &[Scored]) {
    let mut out = String::from("tool\tsource\tmegapixels\twebp_bytes\tssim\tnote\n");
    for s in scored {
        let (v, note) = match &s.ssim {
            Ok(v) => (format!("{v:.6}"), String::new()),
            Err(e) => ("-".to_owned(), e.replace(['\t', '\n'], " ")),
        };
        out += &format!("{}\t{}\t{:.6}\t{}\t{v}\t{note}\n", s.tool, s.source, s.megapixels, s.webp_bytes);
    }
    fs::File::create(path)
        .and_then(|mut f| f.write_all(out.as_bytes()))
        .unwrap_or_else(|e| die(&format!("writing {}: {e}", path.display())));
}

fn print_summary(tools: &[String], scored: &[Scored]) {
    println!(
        "{:<14} {:>6} {:>10} {:>10} {:>9} {:>13} {:>8}  lowest-SSIM file",
        "tool", "files", "mean SSIM", "MP-wt SSIM", "min SSIM", "webp bytes", "skipped"
    );
    for tool in tools {
        let rows: Vec<&Scored> = scored.iter().filter(|s| &s.tool == tool).collect();
        let ok: Vec<(&Scored, f64)> = rows.iter().filter_map(|s| s.ssim.as_ref().ok().map(|v| (*s, *v))).collect();
        let bytes: u64 = rows.iter().map(|s| s.webp_bytes).sum();
        let n = ok.len();
        let mean = ok.iter().map(|(_, v)| v).sum::<f64>() / n.max(1) as f64;
        let mp: f64 = ok.iter().map(|(s, _)| s.megapixels).sum();
        let weighted = ok.iter().map(|(s, v)| v * s.megapixels).sum::<f64>() / mp.max(f64::MIN_POSITIVE);
        let lowest = ok.iter().min_by(|a, b| a.1.total_cmp(&b.1));
        let (min, min_file) = lowest.map_or((f64::NAN, "-"), |(s, v)| (*v, s.source.as_str()));
        println!(
            "{tool:<14} {n:>6} {mean:>10.5} {weighted:>10.5} {min:>9.5} {bytes:>13} {:>8}  {min_file}",
            rows.len() - n
        );
        for s in rows.iter().filter(|s| s.ssim.is_err()) {
            eprintln!("quality: {tool}: {} skipped: {}", s.source, s.ssim.as_ref().err().map_or("", |e| e));
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("quality: {msg}");
    process::exit(2)
}
