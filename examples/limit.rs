//! The conversion core's limit: how fast `ics::convert::convert` turns a set of files into
//! WebP in-process, memory to memory, one thread per core — no storage, no daemon.
//!
//! ```text
//! cargo run --release --example limit -- [--threads N] [--quality Q] [--method M]
//!     [--out DIR] [--check] [--list FILE] [FILE...]
//! ```
//!
//! Reads every file into memory first (not timed), then starts N threads (default: one per
//! core) that each take the next file from a shared atomic index and convert it with the
//! settings of `cwebp -q Q -m M` (lossy always, no metadata kept; as benches/core.rs).
//! The wall time runs from the threads' start to the last one's end. Prints images/s,
//! megapixels/s (decoded source pixels) and output bytes, then one machine-readable line:
//! `RESULT\t<images>\t<megapixels>\t<wall seconds>\t<output bytes>\t<threads>`.
//!
//! `--out DIR` writes each WebP (after the timing) as `DIR/<file stem>.webp`.
//! `--check` converts each file once and prints `ok|fail\t<megapixels>\t<orientation>\t
//! <path>\t<reason>` per file instead of timing (a preflight/warm-up); exit status 0.
//! `--list FILE` adds the paths in FILE, one a line; `--version` prints the libwebp version.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use std::{env, fs, process, thread};

use ics::convert::{ConvertOptions, LosslessPolicy, convert};

struct Args {
    threads: usize,
    quality: f32,
    method: u8,
    out: Option<PathBuf>,
    check: bool,
    files: Vec<PathBuf>,
}

/// One converted file: index into the inputs, source megapixels, the WebP (or the error).
type Outcome = (usize, Result<(f64, u8, Vec<u8>), String>);

fn main() {
    let args = parse_args();
    let opts = ConvertOptions {
        quality: args.quality,
        method: args.method,
        lossless: LosslessPolicy::Never,
        keep_icc: false,
        keep_exif: false,
        keep_xmp: false,
        ..ConvertOptions::default()
    };
    let inputs: Vec<Vec<u8>> = args
        .files
        .iter()
        .map(|p| fs::read(p).unwrap_or_else(|e| die(&format!("reading {}: {e}", p.display()))))
        .collect();
    if inputs.is_empty() {
        die("no input files");
    }

    let start = Instant::now();
    let outcomes = convert_all(&inputs, &opts, args.threads);
    let wall = start.elapsed().as_secs_f64();

    if args.check {
        for (i, result) in &outcomes {
            let path = args.files[*i].display();
            match result {
                Ok((mp, orientation, _)) => println!("ok\t{mp:.6}\t{orientation}\t{path}\t"),
                Err(e) => println!("fail\t0\t1\t{path}\t{}", e.replace(['\t', '\n'], " ")),
            }
        }
        return;
    }

    let mut megapixels = 0.0;
    let mut bytes = 0u64;
    for (i, result) in &outcomes {
        match result {
            Ok((mp, _, webp)) => {
                megapixels += mp;
                bytes += webp.len() as u64;
            }
            Err(e) => die(&format!("{}: {e}", args.files[*i].display())),
        }
    }
    if let Some(dir) = &args.out {
        write_outputs(dir, &args.files, &outcomes);
    }
    let n = inputs.len();
    println!(
        "limit: {n} images, {megapixels:.2} MP in {wall:.3} s on {} threads: {:.2} images/s, {:.2} MP/s, {bytes} bytes out \
         (lossy q{} m{}, libwebp {})",
        args.threads,
        n as f64 / wall,
        megapixels / wall,
        args.quality,
        args.method,
        ics::convert::webp::version()
    );
    println!("RESULT\t{n}\t{megapixels:.6}\t{wall:.6}\t{bytes}\t{}", args.threads);
}

/// Converts every input on `threads` threads pulling from one atomic index.
fn convert_all(inputs: &[Vec<u8>], opts: &ConvertOptions, threads: usize) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(inputs.len()));
    thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut local: Vec<Outcome> = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(bytes) = inputs.get(i) else { break };
                    let result = convert(bytes, opts, None)
                        .map(|c| (c.source_megapixels, c.orientation, c.webp))
                        .map_err(|e| e.to_string());
                    local.push((i, result));
                }
                results.lock().expect("no thread panicked").extend(local);
            });
        }
    });
    let mut results = results.into_inner().expect("no thread panicked");
    results.sort_by_key(|(i, _)| *i);
    results
}

fn write_outputs(dir: &Path, files: &[PathBuf], outcomes: &[Outcome]) {
    fs::create_dir_all(dir).unwrap_or_else(|e| die(&format!("creating {}: {e}", dir.display())));
    for (i, result) in outcomes {
        if let Ok((_, _, webp)) = result {
            let stem = files[*i].file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let path = dir.join(format!("{stem}.webp"));
            fs::write(&path, webp).unwrap_or_else(|e| die(&format!("writing {}: {e}", path.display())));
        }
    }
}

fn parse_args() -> Args {
    let mut args = Args {
        threads: thread::available_parallelism().map_or(1, |n| n.get()),
        quality: 80.0,
        method: 4,
        out: None,
        check: false,
        files: Vec::new(),
    };
    let mut it = env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| die(&format!("{name} needs a value")));
        match arg.as_str() {
            "--threads" => args.threads = parse(&value("--threads")),
            "--quality" => args.quality = parse(&value("--quality")),
            "--method" => args.method = parse(&value("--method")),
            "--out" => args.out = Some(PathBuf::from(value("--out"))),
            "--list" => {
                let list = value("--list");
                let text = fs::read_to_string(&list).unwrap_or_else(|e| die(&format!("reading {list}: {e}")));
                args.files.extend(text.lines().filter(|l| !l.trim().is_empty()).map(PathBuf::from));
            }
            "--check" => args.check = true,
            "--version" => {
                println!("{}", ics::convert::webp::version());
                process::exit(0);
            }
            "--bench" => {} // passed by `cargo bench`-style runners; nothing to do
            "-h" | "--help" => {
                println!(
                    "usage: limit [--threads N] [--quality Q] [--method M] [--out DIR] [--check] [--list FILE] [FILE...]"
                );
                process::exit(0);
            }
            s if s.starts_with('-') => die(&format!("unknown option {s}")),
            _ => args.files.push(PathBuf::from(arg)),
        }
    }
    args
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| die(&format!("invalid value {s:?}")))
}

fn die(msg: &str) -> ! {
    eprintln!("limit: {msg}");
    process::exit(2)
}
