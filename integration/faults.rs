//! Storage faults: a fault-injecting HTTP proxy between the daemon and the real
//! S3-compatible server answers a seeded 20% of requests with `503 SlowDown`,
//! `500 InternalError`, a connection reset, or a truncated body. Runs go on; every image
//! ends converted or ledgered for retry, and once the faults stop the bucket completes
//! with every WebP whole — a short read never becomes a short WebP.
//!
//! A throttling store (the proxy answering a share of requests `503 SlowDown`, nothing
//! else) makes the daemon halve its request window (AIMD, `storage/limit.rs`), says so
//! in its log and in `/metrics`, and the run still converts every image.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::server::Server;
use common::*;
use futures::StreamExt;
use ics::storage::Storage;
use serde_json::Value;

/// Counts of what the proxy did.
#[derive(Default)]
struct Tally {
    forwarded: AtomicU64,
    faults: AtomicU64,
}

/// A proxy on 127.0.0.1:0 to `upstream`; while `on`, a seeded share of requests fails.
struct FaultProxy {
    addr: String,
    on: Arc<AtomicBool>,
    tally: Arc<Tally>,
}

/// Which faults the proxy injects.
#[derive(Clone, Copy, PartialEq)]
enum Faults {
    /// 503 SlowDown, 500, connection resets and truncated bodies, in turn.
    Mixed,
    /// Only 503 SlowDown: a store throttling its clients.
    SlowDown,
}

/// xorshift: a deterministic, seedable sequence.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<String>, Vec<u8>)> {
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).ok()?;
        if l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
        headers.push(l);
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((first, headers, body))
}

impl FaultProxy {
    fn start(upstream: String, rate_percent: u64, seed: u64, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let on = Arc::new(AtomicBool::new(true));
        let tally = Arc::new(Tally::default());
        let (on2, tally2) = (on.clone(), tally.clone());
        let rng = Arc::new(std::sync::Mutex::new(seed | 1));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let (upstream, on, tally, rng) = (upstream.clone(), on2.clone(), tally2.clone(), rng.clone());
                std::thread::spawn(move || serve(client, &upstream, &on, &tally, &rng, rate_percent, faults));
            }
        });
        Self { addr, on, tally }
    }
}

/// Serves one client connection, request by request.
fn serve(
    client: TcpStream,
    upstream: &str,
    on: &AtomicBool,
    tally: &Tally,
    rng: &std::sync::Mutex<u64>,
    rate: u64,
    faults: Faults,
) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    while let Some((first, headers, body)) = read_request(&mut reader) {
        let roll = next(&mut rng.lock().unwrap()) % 100;
        let fault = on.load(Ordering::SeqCst) && roll < rate;
        if fault {
            tally.faults.fetch_add(1, Ordering::SeqCst);
            let msg = |code: u16, name: &str| {
                let body =
                    format!("<?xml version=\"1.0\"?><Error><Code>{name}</Code><Message>injected</Message></Error>");
                format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            match if faults == Faults::SlowDown { 0 } else { roll % 4 } {
                0 => {
                    let _ = client.write_all(msg(503, "SlowDown").as_bytes());
                    continue;
                }
                1 => {
                    let _ = client.write_all(msg(500, "InternalError").as_bytes());
                    continue;
                }
                2 => {
                    // Connection reset: drop without an answer.
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    return;
                }
                _ => {} // truncated body: forwarded below, then cut
            }
        } else {
            tally.forwarded.fetch_add(1, Ordering::SeqCst);
        }
        let Ok(mut up) = TcpStream::connect(upstream) else { return };
        let mut req = first.clone();
        for h in &headers {
            if !h.to_ascii_lowercase().starts_with("connection:") {
                req.push_str(h);
            }
        }
        req.push_str("Connection: close\r\n\r\n");
        if up.write_all(req.as_bytes()).and_then(|_| up.write_all(&body)).is_err() {
            return;
        }
        let mut resp = Vec::new();
        if up.read_to_end(&mut resp).is_err() {
            return;
        }
        if fault {
            // Send the headers (with the full Content-Length) and half the body, then close.
            let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |p| p + 4);
            let cut = split + (resp.len() - split) / 2;
            let _ = client.write_all(&resp[..cut]);
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
        // The upstream closed after one response: tell the client so as well.
        let text = String::from_utf8_lossy(&resp[..resp.len().min(4096)]).to_ascii_lowercase();
        let closes = !text.contains("connection: keep-alive");
        if client.write_all(&resp).is_err() || closes {
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

fn run_once(proxy: &str, bucket: &str, state: &std::path::Path) -> (i32, Value) {
    let out = binary_on_s3(bucket, state)
        .args(["run-once", "--json"])
        .env("R2_ENDPOINT", format!("http://{proxy}"))
        .env("ICS__STATE__RETRY_BASE_MINUTES", "0")
        .env("ICS__STORAGE__MAX_RETRIES", "3")
        .env("ICS__STORAGE__INITIAL_BACKOFF_MS", "20")
        .env("ICS__STORAGE__REQUEST_TIMEOUT_SECONDS", "10")
        .env("ICS__LOG__LEVEL", "warn")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!("no summary: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), v)
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_run_under_twenty_percent_injected_errors_converts_or_accounts_for_everything() {
    need_s3!();
    let s3 = s3_env();
    let bucket = new_bucket("faults");
    let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let images = [
        "jpeg_baseline.jpg",
        "png_rgb.png",
        "gif_anim_loop3.gif",
        "bmp_rgb24.bmp",
        "tiff_lzw.tif",
        "jpeg_progressive.jpg",
    ];
    let total = 30;
    fill_cycled(&rt, &storage, "f", total, &images);
    let upstream = s3.endpoint.trim_start_matches("http://").to_owned();
    let proxy = FaultProxy::start(upstream, 20, 0x5eed, Faults::Mixed);
    let state = tempfile::tempdir().unwrap();
    let (code, first) = run_once(&proxy.addr, &bucket, state.path());
    let faults = proxy.tally.faults.load(Ordering::SeqCst);
    let forwarded = proxy.tally.forwarded.load(Ordering::SeqCst);
    eprintln!("under faults: exit {code}, {faults} faults / {} requests: {first}", faults + forwarded);
    assert!(faults >= 5, "the proxy injected too few faults ({faults}) to test anything");
    // Every image is converted, or failed and ledgered for retry.
    let accounted =
        first["converted"].as_u64().unwrap() + first["failed"].as_u64().unwrap() + first["kept"].as_u64().unwrap();
    if first["complete"] == true {
        assert_eq!(accounted, total as u64, "{first}");
    }
    // Faults stop: the following runs complete the bucket.
    proxy.on.store(false, Ordering::SeqCst);
    let mut last = first;
    for _ in 0..3 {
        if last["complete"] == true && last["failed"] == 0 && last["converted"] == 0 {
            break;
        }
        last = run_once(&proxy.addr, &bucket, state.path()).1;
    }
    assert_eq!((last["failed"].as_u64(), last["complete"].as_bool()), (Some(0), Some(true)), "{last}");
    // Every source has a WebP, and every WebP is whole.
    let objects: Vec<_> = rt.block_on(storage.list(Some("f")).map(|r| r.unwrap()).collect());
    let webps: Vec<_> = objects.iter().filter(|o| o.key.ends_with(".webp")).collect();
    assert_eq!(webps.len(), total, "every source has its WebP");
    for w in webps {
        let (_, body) = rt.block_on(storage.get(&w.key, 1 << 30)).unwrap();
        let info = ics::convert::webp::inspect(&body).unwrap_or_else(|| panic!("{} is not a whole WebP", w.key));
        assert!(info.width > 0);
        if !info.animated {
            assert!(ics::convert::decode_webp(&body).is_some(), "{} does not decode", w.key);
        }
    }
}

/// A new bucket holding `total` sources under `prefix`, behind a proxy that answers a
/// quarter of the requests `503 SlowDown` (seeded by `seed`).
fn throttled_bucket(prefix: &str, total: usize, seed: u64) -> (String, Storage, tokio::runtime::Runtime, FaultProxy) {
    let bucket = new_bucket(&format!("throttle{prefix}"));
    let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    fill_cycled(&rt, &storage, prefix, total, &["jpeg_baseline.jpg", "png_rgb.png", "jpeg_progressive.jpg"]);
    let upstream = s3_env().endpoint.trim_start_matches("http://").to_owned();
    let proxy = FaultProxy::start(upstream, 25, seed, Faults::SlowDown);
    (bucket, storage, rt, proxy)
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_throttling_store_lowers_the_request_window_and_every_image_is_still_converted() {
    need_s3!();
    let total = 40;
    // A quarter of the requests throttled: object_store retries each (up to 10 times), so
    // every request goes through in the end — but the window must narrow meanwhile.
    let (bucket, storage, rt, proxy) = throttled_bucket("t", total, 0x7407);
    let state = tempfile::tempdir().unwrap();
    let out = binary_on_s3(&bucket, state.path())
        .args(["run-once", "--json"])
        .env("R2_ENDPOINT", format!("http://{}", proxy.addr))
        .env("ICS__STORAGE__MAX_RETRIES", "10")
        .env("ICS__STORAGE__INITIAL_BACKOFF_MS", "10")
        .env("ICS__STORAGE__REQUEST_TIMEOUT_SECONDS", "10")
        .env("ICS__PIPELINE__MAX_REQUESTS", "16")
        .env("ICS__LOG__LEVEL", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no summary: {}{stderr}", String::from_utf8_lossy(&out.stdout)));
    let throttled = proxy.tally.faults.load(Ordering::SeqCst);
    assert!(throttled >= 5, "the proxy throttled too few requests ({throttled}) to test anything");
    // The window was halved from its ceiling, and said so.
    let lowered: Vec<(u64, u64)> = stderr
        .lines()
        .filter(|l| l.contains("Storage throttled: request concurrency lowered"))
        .map(|l| {
            let field = |name: &str| -> u64 {
                let at = l.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {l}"));
                l[at + name.len() + 1..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
            };
            (field("from"), field("to"))
        })
        .collect();
    assert!(!lowered.is_empty(), "no throttle logged after {throttled} SlowDowns:\n{stderr}");
    assert_eq!(lowered[0], (16, 8), "the first throttle halves the ceiling");
    assert!(lowered.iter().all(|(from, to)| to < from && *to >= 1), "{lowered:?}");
    // And the run finished every image.
    assert_eq!(out.status.code(), Some(0), "{summary}\n{stderr}");
    assert_eq!(
        (summary["converted"].as_u64(), summary["failed"].as_u64(), summary["complete"].as_bool()),
        (Some(total as u64), Some(0), Some(true)),
        "{summary}"
    );
    let objects: Vec<_> = rt.block_on(storage.list(Some("t")).map(|r| r.unwrap()).collect());
    assert_eq!(objects.iter().filter(|o| o.key.ends_with(".webp")).count(), total, "every source has its WebP");
}

/// One sample's value in a Prometheus text body (`name` with no labels).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_throttled_window_is_in_metrics_as_serve_runs() {
    need_s3!();
    let total = 30;
    let (bucket, _storage, _rt, proxy) = throttled_bucket("m", total, 0x3e7);
    let env = [
        ("R2_ENDPOINT", format!("http://{}", proxy.addr)),
        ("ICS__STORAGE__MAX_RETRIES", "10".to_owned()),
        ("ICS__STORAGE__INITIAL_BACKOFF_MS", "10".to_owned()),
        ("ICS__PIPELINE__MAX_REQUESTS", "16".to_owned()),
    ];
    // The store throttles only once the run is asked for.
    proxy.on.store(false, Ordering::SeqCst);
    let server = Server::start_env(Some(&bucket), "", &env);
    // Before any run: the full window, nothing throttled.
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    assert_eq!(sample(&metrics, "ics_storage_concurrency_max"), 16.0);
    assert_eq!(sample(&metrics, "ics_storage_concurrency_limit"), 16.0, "{metrics}");
    assert_eq!(sample(&metrics, "ics_storage_concurrency_decreases_total"), 0.0);
    let before = sample(&metrics, "ics_storage_throttled_total");
    proxy.on.store(true, Ordering::SeqCst);
    assert_eq!(server.post("/api/runs", serde_json::json!({})).status, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        let s = server.get("/api/status").json();
        if s["last_run"]["complete"].is_boolean() && !s["running"].as_bool().unwrap_or(true) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not finish: {s}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        (status["last_run"]["converted"].as_u64(), status["last_run"]["failed"].as_u64()),
        (Some(total as u64), Some(0)),
        "{status}"
    );
    let throttled = proxy.tally.faults.load(Ordering::SeqCst);
    assert!(throttled >= 5, "the proxy throttled too few requests ({throttled}) to test anything");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    // The SlowDowns were counted (each at most once).
    let seen = sample(&metrics, "ics_storage_throttled_total") - before;
    assert!(seen >= 1.0 && seen <= throttled as f64, "{seen} of {throttled} throttles counted");
    assert!(sample(&metrics, "ics_storage_concurrency_decreases_total") >= 1.0, "{metrics}");
    let limit = sample(&metrics, "ics_storage_concurrency_limit");
    assert!((1.0..=16.0).contains(&limit), "{limit}");
    assert_eq!(sample(&metrics, "ics_storage_requests_open"), 0.0, "nothing left open after the run");
}
