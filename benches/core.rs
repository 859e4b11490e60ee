//! Benchmark of the conversion core against libwebp's own `cwebp`.
//!
//! Over one set of JPEG and PNG files it times, in interleaved rounds whose order rotates
//! (so noise from other work on the machine hits every tool alike): decoding alone
//! (`image::load_from_memory`, the core's decoder), the full single-thread
//! `ics::convert::convert` (lossy, cwebp's quality and method, no metadata), and one
//! `cwebp -q Q -m M -quiet -v IN -o OUT` process per file, timed around each spawn. It
//! prints medians over rounds of megapixels/s (decoded source megapixels / seconds),
//! images/s and output bytes, our encode rate (convert − decode), ours/cwebp ratios
//! (medians of the per-round ratios), a per-file table, and the mean PSNR of both outputs
//! against the decoded source, so a faster result is seen not to be a worse one.
//!
//! Run: `bash scripts/bench-core.sh [FILE|DIR...]` (installs cwebp if missing), or
//! `cargo bench --bench core [-- FILE|DIR...]`. Default set: the top level of
//! `testdata/images` plus `../shared/corpus` when it exists, duplicates removed, sorted
//! by pixel count and thinned to evenly spaced files. Environment: `ICS_BENCH_DIR`
//! (directories, `:`-separated, replacing the default set), `ICS_BENCH_LIMIT` (24; 0 =
//! all), `ICS_BENCH_ROUNDS` (3), `ICS_BENCH_QUALITY` (85), `ICS_BENCH_METHOD` (4),
//! `ICS_BENCH_CWEBP` (the cwebp binary; default `cwebp` on PATH). Without `--bench`, as
//! when `cargo test --all-targets` runs it, it is a quick smoke run over three fixtures.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};
use std::str::FromStr;
use std::time::Instant;
use std::{env, fs};

use ics::convert::{ConvertOptions, LosslessPolicy, SourceFormat, convert, decode_webp, sniff};
use image::RgbaImage;
use image::metadata::Orientation;

/// What to run, from the environment.
struct Settings {
    quality: f32,
    method: u8,
    rounds: usize,
    limit: usize,
}

/// One input file, held in memory.
struct Sample {
    path: PathBuf,
    name: String,
    bytes: Vec<u8>,
    width: u32,
    height: u32,
}

impl Sample {
    fn megapixels(&self) -> f64 {
        f64::from(self.width) * f64::from(self.height) / 1e6
    }
}

/// The peer: a cwebp binary and a scratch directory for its outputs.
struct Cwebp {
    bin: PathBuf,
    version: String,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

/// One tool's pass over the whole set.
#[derive(Debug, Default, Clone, Copy)]
struct Pass {
    secs: f64,
    bytes: u64,
    /// cwebp only, from its `-v` timings: reading + decoding + RGB→YUV import, and encoding.
    read_secs: f64,
    encode_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tool {
    Decode,
    Ours,
    Cwebp,
}

/// Every round's passes, and the outputs of the last round.
#[derive(Default)]
struct Runs {
    decode: Vec<Pass>,
    ours: Vec<Pass>,
    cwebp: Vec<Pass>,
    /// Our WebP and the EXIF orientation `convert` applied, per sample.
    ours_out: Vec<(Vec<u8>, u8)>,
    cwebp_out: Vec<Vec<u8>>,
}

fn main() {
    // `cargo bench` passes `--bench`. Without it, `cargo test --all-targets` is running the
    // bench targets: a smoke run then (one round over three fixtures, no corpus).
    let full = env::args().any(|a| a == "--bench");
    let settings = Settings::from_env(full);
    let args: Vec<String> = env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let opts = ConvertOptions {
        quality: settings.quality,
        method: settings.method,
        lossless: LosslessPolicy::Never,
        keep_icc: false,
        ..ConvertOptions::default()
    };
    let cwebp = Cwebp::find(&settings);
    if !full {
        println!("smoke run (no --bench: cargo test); `cargo bench --bench core` measures");
    }
    let all = load_all(&sources(&args, full));
    let found = all.len();
    let samples = select(all, settings.limit);
    println!("selected {} of {found} distinct JPEG/PNG files, evenly spaced by pixel count", samples.len());
    let samples = preflight(samples, &opts, cwebp.as_ref());
    if samples.is_empty() {
        println!("no JPEG or PNG files to benchmark");
        return;
    }
    print_header(&samples, &settings, cwebp.as_ref());
    let runs = run_rounds(&samples, &opts, cwebp.as_ref(), settings.rounds);
    print_summary(&samples, &runs, cwebp.is_some());
    print_quality(&samples, &runs);
    print_thread_level(&samples, &opts, settings.rounds);
}

/// One image at a time on an otherwise idle machine (an API request on an idle daemon):
/// libwebp's `thread_level` off and on, alternately, over the largest files.
fn print_thread_level(samples: &[Sample], opts: &ConvertOptions, rounds: usize) {
    let mut largest: Vec<&Sample> = samples.iter().collect();
    largest.sort_by_key(|s| std::cmp::Reverse(u64::from(s.width) * u64::from(s.height)));
    largest.truncate(3);
    let threaded = ConvertOptions { multithread: true, ..opts.clone() };
    let (mut single, mut multi) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for mt in order {
            let o = if mt { &threaded } else { opts };
            let t = Instant::now();
            for s in &largest {
                convert(&s.bytes, o, None).expect("preflighted");
            }
            (if mt { &mut multi } else { &mut single }).push(t.elapsed().as_secs_f64());
        }
    }
    let mp: f64 = largest.iter().map(|s| s.megapixels()).sum();
    let (a, b) = (median(single), median(multi));
    println!(
        "\nthread_level, one image at a time ({} largest files, {mp:.1} MP): off {:.2} MP/s, on {:.2} MP/s (x{:.3})",
        largest.len(),
        mp / a,
        mp / b,
        a / b
    );
}

impl Settings {
    /// The environment's settings; `full` = a real benchmark, else smoke-run defaults.
    fn from_env(full: bool) -> Self {
        Self {
            quality: env_or("ICS_BENCH_QUALITY", 85.0),
            method: env_or("ICS_BENCH_METHOD", 4),
            rounds: env_or("ICS_BENCH_ROUNDS", if full { 3 } else { 1 }).max(1),
            limit: env_or("ICS_BENCH_LIMIT", if full { 24 } else { 3 }),
        }
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    let Ok(value) = env::var(name) else { return default };
    value.trim().parse().unwrap_or_else(|_| {
        eprintln!("{name}={value:?} is not a valid value");
        exit(2)
    })
}

/// Files and directories to read: the arguments, else `ICS_BENCH_DIR`, else the default set
/// (the shared corpus only in a `full` run).
fn sources(args: &[String], full: bool) -> Vec<PathBuf> {
    if !args.is_empty() {
        return args.iter().map(PathBuf::from).collect();
    }
    if let Some(dirs) = env::var_os("ICS_BENCH_DIR") {
        return env::split_paths(&dirs).collect();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("testdata/images")];
    let corpus = root.join("../shared/corpus");
    if full && corpus.is_dir() {
        dirs.push(corpus);
    }
    dirs
}

/// The JPEG and PNG files (by content) at the top level of each source, duplicates dropped.
fn load_all(sources: &[PathBuf]) -> Vec<Sample> {
    let mut paths = Vec::new();
    for source in sources {
        match fs::read_dir(source) {
            Ok(dir) => {
                let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
                files.sort();
                paths.extend(files);
            }
            Err(_) if source.is_file() => paths.push(source.clone()),
            Err(e) => eprintln!("skipping {}: {e}", source.display()),
        }
    }
    let mut seen = HashSet::new();
    paths.into_iter().filter_map(load).filter(|s| seen.insert(content_hash(&s.bytes))).collect()
}

fn load(path: PathBuf) -> Option<Sample> {
    let bytes = fs::read(&path).ok()?;
    if !matches!(sniff(&bytes), Ok(SourceFormat::Jpeg | SourceFormat::Png)) {
        return None;
    }
    let reader = image::ImageReader::new(Cursor::new(&bytes)).with_guessed_format().ok()?;
    let (width, height) = reader.into_dimensions().ok()?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    Some(Sample { path, name, bytes, width, height })
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Sorts by pixel count and keeps `limit` evenly spaced files (smallest and largest included).
fn select(mut samples: Vec<Sample>, limit: usize) -> Vec<Sample> {
    samples.sort_by(|a, b| {
        let key = |s: &Sample| (u64::from(s.width) * u64::from(s.height), s.bytes.len());
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    let n = samples.len();
    if limit == 0 || n <= limit {
        return samples;
    }
    let keep: HashSet<usize> =
        if limit == 1 { HashSet::from([n / 2]) } else { (0..limit).map(|i| i * (n - 1) / (limit - 1)).collect() };
    samples.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, s)| s).collect()
}

/// Converts every file once with each tool (a warm-up) and drops those either one fails on,
/// so that every tool is timed over the same set.
fn preflight(samples: Vec<Sample>, opts: &ConvertOptions, cwebp: Option<&Cwebp>) -> Vec<Sample> {
    samples
        .into_iter()
        .filter(|s| {
            let ours = convert(&s.bytes, opts, None).map(|_| ()).map_err(|e| format!("ours: {e}"));
            let peer = cwebp.map_or(Ok(()), |c| c.run(s, 0).map(|_| ()).map_err(|e| format!("cwebp: {e}")));
            match ours.and(peer) {
                Ok(()) => true,
                Err(e) => {
                    println!("excluded {} from every tool ({e})", s.name);
                    false
                }
            }
        })
        .collect()
}

impl Cwebp {
    /// `ICS_BENCH_CWEBP`, else `cwebp` on PATH; `None` (with a note) when there is none.
    fn find(settings: &Settings) -> Option<Self> {
        let bin = env::var_os("ICS_BENCH_CWEBP").map(PathBuf::from).or_else(|| {
            let path = env::var_os("PATH")?;
            env::split_paths(&path).map(|d| d.join("cwebp")).find(|p| p.is_file())
        });
        let Some(bin) = bin else {
            println!("cwebp not found on PATH (install Debian's `webp`): the cwebp column is skipped");
            return None;
        };
        let version = Command::new(&bin).arg("-version").output().ok().filter(|o| o.status.success());
        let Some(version) = version else {
            println!("{} -version failed: the cwebp column is skipped", bin.display());
            return None;
        };
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let (q, m) = (settings.quality.to_string(), settings.method.to_string());
        let args = ["-q", &q, "-m", &m, "-quiet", "-v"].map(String::from).to_vec();
        let dir = tempfile::tempdir().expect("a temporary directory for cwebp's outputs");
        Some(Self { bin, version, args, dir })
    }

    /// One cwebp process on one file: its WebP, wall time and `-v` read/encode times.
    fn run(&self, sample: &Sample, index: usize) -> Result<(Vec<u8>, Pass), String> {
        let out = self.dir.path().join(format!("{index}.webp"));
        let start = Instant::now();
        let result = Command::new(&self.bin).args(&self.args).arg(&sample.path).arg("-o").arg(&out).output();
        let secs = start.elapsed().as_secs_f64();
        let output = result.map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(stderr.lines().next().unwrap_or("failed").to_owned());
        }
        let webp = fs::read(&out).map_err(|e| e.to_string())?;
        let timing = |label: &str| {
            let line = stderr.lines().find_map(|l| l.strip_prefix(label))?;
            line.trim().trim_end_matches('s').parse::<f64>().ok()
        };
        let read_secs = timing("Time to read input:").unwrap_or(f64::NAN);
        let encode_secs = timing("Time to encode picture:").unwrap_or(f64::NAN);
        let bytes = webp.len() as u64;
        Ok((webp, Pass { secs, bytes, read_secs, encode_secs }))
    }
}

fn print_header(samples: &[Sample], settings: &Settings, cwebp: Option<&Cwebp>) {
    let mp: f64 = samples.iter().map(Sample::megapixels).sum();
    let jpegs = samples.iter().filter(|s| matches!(sniff(&s.bytes), Ok(SourceFormat::Jpeg))).count();
    println!(
        "\nics conversion core benchmark: {} files ({jpegs} JPEG, {} PNG), {mp:.2} MP decoded, {:.1} MB in",
        samples.len(),
        samples.len() - jpegs,
        samples.iter().map(|s| s.bytes.len()).sum::<usize>() as f64 / 1e6
    );
    println!(
        "settings: lossy q{} m{}, no metadata, single thread; {} rounds, order rotating; medians",
        settings.quality, settings.method, settings.rounds
    );
    let ours = format!("ours libwebp {} (libwebp-sys, vendored)", ics::convert::webp::version());
    match cwebp {
        Some(c) => println!("{ours}; cwebp {} ({})", c.version, c.bin.display()),
        None => println!("{ours}; cwebp: none, peer column skipped"),
    }
}

/// `rounds` rounds of decode / ours / cwebp, the order rotating each round.
fn run_rounds(samples: &[Sample], opts: &ConvertOptions, cwebp: Option<&Cwebp>, rounds: usize) -> Runs {
    let mut runs = Runs::default();
    for round in 0..rounds {
        let mut order = [Tool::Decode, Tool::Ours, Tool::Cwebp];
        order.rotate_left(round % 3);
        let mut line = format!("round {}/{rounds}:", round + 1);
        for tool in order {
            let pass = match tool {
                Tool::Decode => decode_pass(samples),
                Tool::Ours => convert_pass(samples, opts, &mut runs.ours_out),
                Tool::Cwebp => match cwebp {
                    Some(c) => cwebp_pass(samples, c, &mut runs.cwebp_out),
                    None => continue,
                },
            };
            line += &format!(" {tool:?} {:.2}s", pass.secs);
            match tool {
                Tool::Decode => runs.decode.push(pass),
                Tool::Ours => runs.ours.push(pass),
                Tool::Cwebp => runs.cwebp.push(pass),
            }
        }
        eprintln!("{line}");
    }
    runs
}

fn decode_pass(samples: &[Sample]) -> Pass {
    let start = Instant::now();
    for s in samples {
        let image = image::load_from_memory(&s.bytes).expect("decoded in preflight");
        std::hint::black_box(image);
    }
    Pass { secs: start.elapsed().as_secs_f64(), ..Pass::default() }
}

fn convert_pass(samples: &[Sample], opts: &ConvertOptions, outputs: &mut Vec<(Vec<u8>, u8)>) -> Pass {
    outputs.clear();
    let start = Instant::now();
    for s in samples {
        let converted = convert(&s.bytes, opts, None).expect("converted in preflight");
        outputs.push((converted.webp, converted.orientation));
    }
    let secs = start.elapsed().as_secs_f64();
    Pass { secs, bytes: outputs.iter().map(|(w, _)| w.len() as u64).sum(), ..Pass::default() }
}

fn cwebp_pass(samples: &[Sample], cwebp: &Cwebp, outputs: &mut Vec<Vec<u8>>) -> Pass {
    outputs.clear();
    let mut total = Pass::default();
    for (i, s) in samples.iter().enumerate() {
        let (webp, pass) = cwebp.run(s, i).unwrap_or_else(|e| panic!("cwebp on {}: {e}", s.name));
        total.secs += pass.secs;
        total.bytes += pass.bytes;
        total.read_secs += pass.read_secs;
        total.encode_secs += pass.encode_secs;
        outputs.push(webp);
    }
    total
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// One table row from per-round seconds: MP/s, images/s, median seconds, spread, bytes.
fn row(label: &str, samples: &[Sample], secs: Vec<f64>, bytes: Option<u64>) {
    let mp: f64 = samples.iter().map(Sample::megapixels).sum();
    let (lo, hi) = secs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let m = median(secs);
    let spread = (hi - lo) / m * 100.0;
    let bytes = bytes.map_or("-".to_owned(), |b| b.to_string());
    let n = samples.len() as f64;
    println!("{label:<34} {:>8.2} {:>9.2} {m:>9.3} {spread:>6.1}% {bytes:>13}", mp / m, n / m);
}

fn print_summary(samples: &[Sample], runs: &Runs, with_cwebp: bool) {
    let secs = |passes: &[Pass], f: fn(&Pass) -> f64| passes.iter().map(f).collect::<Vec<_>>();
    let ours_encode: Vec<f64> = runs.ours.iter().zip(&runs.decode).map(|(o, d)| o.secs - d.secs).collect();
    println!("\n{:<34} {:>8} {:>9} {:>9} {:>7} {:>13}", "", "MP/s", "images/s", "median s", "spread", "output bytes");
    row("ours   decode (image::load)", samples, secs(&runs.decode, |p| p.secs), None);
    row("ours   encode (convert − decode)", samples, ours_encode.clone(), None);
    row("ours   convert (full path)", samples, secs(&runs.ours, |p| p.secs), runs.ours.first().map(|p| p.bytes));
    if !with_cwebp {
        println!("cwebp: not available, peer rows and ratios skipped");
        return;
    }
    row("cwebp  read+import (-v)", samples, secs(&runs.cwebp, |p| p.read_secs), None);
    row("cwebp  encode (-v)", samples, secs(&runs.cwebp, |p| p.encode_secs), None);
    row("cwebp  process (full path)", samples, secs(&runs.cwebp, |p| p.secs), runs.cwebp.first().map(|p| p.bytes));
    println!("\nratios ours/cwebp (median of per-round ratios; speed > 1 = ours faster)");
    let ratio = |label: &str, ours: Vec<f64>, peer: Vec<f64>| {
        let per_round: Vec<f64> = ours.iter().zip(&peer).map(|(o, p)| p / o).collect();
        let shown: Vec<String> = per_round.iter().map(|r| format!("{r:.3}")).collect();
        println!("  {label:<40} {:>6.3}x   rounds: {}", median(per_round), shown.join(" "));
    };
    ratio("speed, full path (MP/s and images/s)", secs(&runs.ours, |p| p.secs), secs(&runs.cwebp, |p| p.secs));
    ratio("speed, encode (convert−decode vs -v)", ours_encode, secs(&runs.cwebp, |p| p.encode_secs));
    ratio("speed, decode (load vs -v read+import)", secs(&runs.decode, |p| p.secs), secs(&runs.cwebp, |p| p.read_secs));
    let (ours_bytes, peer_bytes) = (runs.ours[0].bytes as f64, runs.cwebp[0].bytes as f64);
    println!("  {:<40} {:>6.3}x", "output bytes (< 1 = ours smaller)", ours_bytes / peer_bytes);
}

/// Peak signal-to-noise ratio in dB over RGB of the visible (alpha > 0) pixels: transparent
/// pixels' colours are the encoder's to change. `None` when the sizes differ.
fn psnr(reference: &RgbaImage, output: &RgbaImage) -> Option<f64> {
    if reference.dimensions() != output.dimensions() {
        return None;
    }
    let (mut sse, mut n) = (0.0f64, 0u64);
    for (a, b) in reference.pixels().zip(output.pixels()).filter(|(a, _)| a[3] > 0) {
        for c in 0..3 {
            let d = f64::from(a[c]) - f64::from(b[c]);
            sse += d * d;
        }
        n += 3;
    }
    if n == 0 {
        return None;
    }
    let mse = sse / n as f64;
    Some(if mse == 0.0 { 99.0 } else { 10.0 * (255.0 * 255.0 / mse).log10() })
}

/// PSNR of our output and cwebp's for one file. Ours is compared with the source as
/// `convert` oriented it (EXIF), cwebp's with the source as stored (cwebp ignores EXIF
/// orientation); a pair whose sizes still differ gives `None`.
fn file_psnr(sample: &Sample, ours: &(Vec<u8>, u8), peer: Option<&Vec<u8>>) -> (Option<f64>, Option<f64>) {
    let stored = image::load_from_memory(&sample.bytes).expect("decoded in preflight");
    let mut oriented = stored.clone();
    oriented.apply_orientation(Orientation::from_exif(ours.1).unwrap_or(Orientation::NoTransforms));
    let of = |reference: &image::DynamicImage, webp: &[u8]| {
        let out = decode_webp(webp)?.to_rgba8();
        psnr(&reference.to_rgba8(), &out)
    };
    (of(&oriented, &ours.0), peer.and_then(|p| of(&stored, p)))
}

/// The display gamma of a PNG's gAMA chunk when it is not sRGB's ~1/2.2. cwebp's PNG
/// reader converts such pixels to gamma 2.2; `image` (and so our core) keeps them as stored,
/// so the two encoders start from different pixels and their PSNRs do not compare.
fn png_odd_gamma(bytes: &[u8]) -> Option<f64> {
    let mut at = 8;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
        match &header[4..] {
            b"gAMA" => {
                let g = f64::from(u32::from_be_bytes(bytes.get(at + 8..at + 12)?.try_into().ok()?)) / 1e5;
                return ((g * 2.2 - 1.0).abs() > 0.05).then_some(g);
            }
            b"IDAT" => return None,
            _ => at += 12 + len,
        }
    }
    None
}

/// What the quality section adds up over the files.
#[derive(Default)]
struct Tally {
    /// (ours, cwebp) PSNR of the files both are compared on.
    pairs: Vec<(f64, f64)>,
    ours_only: Vec<f64>,
    skipped: Vec<String>,
    gamma: Vec<String>,
    identical: usize,
    smaller: usize,
}

/// The per-file table (last round's outputs) and mean PSNR of both tools over the same files.
fn print_quality(samples: &[Sample], runs: &Runs) {
    let with_peer = runs.cwebp_out.len() == samples.len();
    println!("\nper file (PSNR in dB vs decoded source, RGB of visible pixels):");
    let head = ["file", "stored WxH", "ours B", "cwebp B", "B ratio", "ours", "cwebp"];
    println!(
        "{:<42} {:>11} {:>10} {:>10} {:>7} {:>7} {:>7}  note",
        head[0], head[1], head[2], head[3], head[4], head[5], head[6]
    );
    let mut tally = Tally::default();
    for (i, s) in samples.iter().enumerate() {
        let ours = &runs.ours_out[i];
        let peer = with_peer.then(|| &runs.cwebp_out[i]);
        let psnr = file_psnr(s, ours, peer);
        let note = tally.add(s, ours, peer, psnr);
        print_file_row(s, ours, peer, psnr, &note);
    }
    print_quality_summary(&tally, with_peer.then_some(samples.len()));
}

impl Tally {
    /// Counts one file in; returns its note for the table.
    fn add(
        &mut self,
        s: &Sample,
        ours: &(Vec<u8>, u8),
        peer: Option<&Vec<u8>>,
        psnr: (Option<f64>, Option<f64>),
    ) -> String {
        let mut note = Vec::new();
        if ours.1 > 1 {
            note.push(format!("EXIF orientation {}", ours.1));
        }
        let gamma = png_odd_gamma(&s.bytes);
        if let Some(g) = gamma {
            note.push(format!("PNG gAMA {g}: cwebp applies it, we do not"));
        }
        if let Some(p) = peer {
            self.identical += usize::from(p == &ours.0);
            self.smaller += usize::from(ours.0.len() < p.len());
            if p == &ours.0 {
                note.push("byte-identical".to_owned());
            }
        }
        match psnr {
            _ if gamma.is_some() && peer.is_some() => self.gamma.push(s.name.clone()),
            (Some(a), Some(b)) => self.pairs.push((a, b)),
            (Some(a), None) if peer.is_none() => self.ours_only.push(a),
            _ => self.skipped.push(s.name.clone()),
        }
        note.join("; ")
    }
}

fn print_file_row(
    s: &Sample,
    ours: &(Vec<u8>, u8),
    peer: Option<&Vec<u8>>,
    psnr: (Option<f64>, Option<f64>),
    note: &str,
) {
    let db = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let (peer_len, ratio) = match peer {
        Some(p) => (p.len().to_string(), format!("{:.3}", ours.0.len() as f64 / p.len() as f64)),
        None => ("-".to_owned(), "-".to_owned()),
    };
    let name: String = s.name.chars().take(42).collect();
    let dims = format!("{}x{}", s.width, s.height);
    println!(
        "{name:<42} {dims:>11} {:>10} {peer_len:>10} {ratio:>7} {:>7} {:>7}  {note}",
        ours.0.len(),
        db(psnr.0),
        db(psnr.1)
    );
}

fn print_quality_summary(t: &Tally, files_with_peer: Option<usize>) {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!();
    let Some(n) = files_with_peer else {
        println!(
            "quality: mean PSNR of ours over {} files: {:.2} dB (no cwebp)",
            t.ours_only.len(),
            mean(&t.ours_only)
        );
        return;
    };
    let ours: Vec<f64> = t.pairs.iter().map(|p| p.0).collect();
    let theirs: Vec<f64> = t.pairs.iter().map(|p| p.1).collect();
    let better = t.pairs.iter().filter(|p| p.0 >= p.1).count();
    let (o, c) = (mean(&ours), mean(&theirs));
    println!("quality: mean PSNR over the same {} files: ours {o:.2} dB, cwebp {c:.2} dB", t.pairs.len());
    println!("         ours − cwebp {:+.2} dB; ours >= cwebp on {better} of {}", o - c, t.pairs.len());
    println!("output:  ours smaller on {} of {n} files, byte-identical on {}", t.smaller, t.identical);
    if !t.gamma.is_empty() {
        println!(
            "PSNR mean leaves out {} PNGs with a non-sRGB gAMA (decoders differ): {}",
            t.gamma.len(),
            t.gamma.join(", ")
        );
    }
    if !t.skipped.is_empty() {
        println!(
            "PSNR skipped for {} files whose output and source sizes differ: {}",
            t.skipped.len(),
            t.skipped.join(", ")
        );
    }
    println!(
        "EXIF-oriented JPEGs: our output is rotated, cwebp's is not; each is compared with the source as it encoded it"
    );
}
