//! Shared helpers of the integration tests: fixtures, the S3-compatible test server
//! that `scripts/test.sh` starts, and a config pointing at it.
#![allow(dead_code)]

pub mod cf_queue;
pub mod http;
pub mod server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use ics::config::{Config, S3Config, StorageConfig};
use ics::secret::Secret;
use image::DynamicImage;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/images").join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `rgb` as a JPEG of `quality` (image's encoder).
pub fn jpeg_of(rgb: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(rgb.as_raw(), rgb.width(), rgb.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// (file, width, height, frames) of every good fixture, from FIXTURES.tsv.
pub fn good_fixtures() -> Vec<(String, u32, u32, u32)> {
    let manifest = String::from_utf8(fixture("FIXTURES.tsv")).unwrap();
    manifest
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[1] == "good")
        .map(|f| (f[0].to_owned(), f[3].parse().unwrap(), f[4].parse().unwrap(), f[5].parse().unwrap()))
        .collect()
}

/// The first statement of every test that needs the S3 test server. Such a test is also
/// marked `#[ignore = "needs the S3 test server: bash scripts/test.sh"]`, so a plain
/// `cargo test` reports it ignored, never passed; `scripts/test.sh` starts the server and
/// runs them with `--include-ignored`. Run without the server (`ICS_TEST_S3_ENDPOINT`
/// unset), it fails, saying how to run it.
macro_rules! need_s3 {
    () => {
        $crate::common::require_s3();
    };
}

/// Panics unless the S3 test server is configured; see `need_s3!`.
pub fn require_s3() {
    if std::env::var_os("ICS_TEST_S3_ENDPOINT").is_none() {
        panic!(
            "ICS_TEST_S3_ENDPOINT is not set: this test needs the S3 test server; \
             `bash scripts/test.sh` starts it (moto, on 127.0.0.1) and runs every test"
        );
    }
}

/// The S3 server's settings from `ICS_TEST_S3_*` (set by scripts/test.sh).
pub struct S3Env {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

pub fn s3_env() -> S3Env {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: run the integration tests through scripts/test.sh, which starts the S3 server \
                 (a test that needs it is #[ignore]d and starts with need_s3!())"
            )
        })
    };
    S3Env {
        endpoint: var("ICS_TEST_S3_ENDPOINT"),
        region: std::env::var("ICS_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        access_key: std::env::var("ICS_TEST_S3_ACCESS_KEY").unwrap_or_else(|_| "testing".into()),
        secret_key: std::env::var("ICS_TEST_S3_SECRET_KEY").unwrap_or_else(|_| "testing".into()),
    }
}

/// Sends one raw HTTP/1.1 request to the test server and returns the status code.
pub fn raw_request(endpoint: &str, method: &str, path: &str) -> u16 {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).expect("connect to the S3 test server");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Sends a request with a body to the test server; returns the status and the body.
fn hook_request(method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let endpoint = s3_env().endpoint;
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).expect("connect to the S3 test server");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// Stores `objects` (key, index into `bodies`) in `bucket` straight into the test
/// server's backend (scripts/s3_server.py's /_ics/fill): 100,000 objects in seconds.
pub fn fill_direct(bucket: &str, objects: &[(String, usize)], bodies: &[&[u8]]) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for chunk in objects.chunks(20_000) {
        let body = serde_json::json!({
            "bucket": bucket,
            "bodies": bodies.iter().map(|b| hex(b)).collect::<Vec<_>>(),
            "objects": chunk.iter().map(|(k, i)| serde_json::json!([k, i])).collect::<Vec<_>>(),
        });
        let (status, answer) = hook_request("POST", "/_ics/fill", body.to_string().as_bytes());
        assert_eq!(status, 200, "fill: {answer}");
    }
}

/// The S3 requests the test server served for `bucket` since the last reset, by kind
/// (`LIST`, `GET`, `HEAD`, `PUT`, …); `reset` zeroes them afterwards.
pub fn request_counts(bucket: &str, reset: bool) -> std::collections::BTreeMap<String, u64> {
    let path = if reset { "/_ics/stats/reset" } else { "/_ics/stats" };
    let (status, answer) = hook_request("GET", &format!("{path}?bucket={bucket}"), b"");
    assert_eq!(status, 200, "stats: {answer}");
    serde_json::from_str(&answer).unwrap()
}

/// Creates a fresh bucket with a unique name and returns it.
pub fn new_bucket(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let status = raw_request(&s3_env().endpoint, "PUT", &format!("/{name}"));
    assert!(status == 200, "creating bucket {name}: HTTP {status}");
    name
}

/// The default config with storage pointed at `bucket` on the test server.
pub fn s3_config(bucket: &str) -> Config {
    let env = s3_env();
    let mut c = Config::validate(Default::default()).unwrap();
    c.storage = StorageConfig::S3(S3Config {
        endpoint: env.endpoint,
        bucket: bucket.to_owned(),
        buckets: vec![bucket.to_owned()],
        region: env.region,
        access_key: Secret::new(env.access_key),
        secret_key: Secret::new(env.secret_key),
        virtual_hosted_style: false,
        retry: Default::default(),
    });
    c
}

/// The CLI's `convert` of `key` in `storage`'s bucket: the one path of conversions on
/// request, in a converter pool and under a memory budget of its own. Needs an actix
/// system (`#[actix_web::test]`).
pub async fn convert_object(
    storage: &ics::storage::Storage,
    config: &Config,
    key: &str,
    resize: Option<ics::convert::ResizeSpec>,
) -> Result<ics::job::Outcome, ics::job::JobError> {
    ics::daemon::convert(
        config.clone(),
        storage.clone(),
        storage.bucket(),
        key,
        (ics::outputs::Format::Webp, resize, false),
    )
    .await
    .expect("the bucket opens")
}

/// PSNR of `b` against `a` (same size required).
pub fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
    ics::convert::psnr(a, b).expect("images of the same size")
}

/// How the source is meant to look (oriented fixtures: the upright ground truth).
pub fn displayed(name: &str) -> DynamicImage {
    let file =
        if name.starts_with("jpeg_orient") || name.starts_with("jpeg_exif") { "orient_upright.png" } else { name };
    image::load_from_memory(&fixture(file)).unwrap()
}

/// The binary, without the `ICS__*` and `R2_*` variables the test run may have inherited.
pub fn binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_image-converting-server"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ICS__") || k.starts_with("R2_")) {
        cmd.env_remove(k);
    }
    cmd
}

/// The binary, set to use `bucket` on the test server and `state` as its state directory.
pub fn binary_on_s3(bucket: &str, state: &std::path::Path) -> std::process::Command {
    let s3 = s3_env();
    let mut cmd = binary();
    cmd.env("ICS__STORAGE__BACKEND", "r2")
        .env("R2_ENDPOINT", &s3.endpoint)
        .env("R2_BUCKET", bucket)
        .env("R2_ACCESS_KEY", &s3.access_key)
        .env("R2_SECRET_KEY", &s3.secret_key)
        .env("ICS__R2__REGION", &s3.region)
        .env("ICS__STATE__DIR", state);
    cmd
}

/// Uploads `count` sources `prefix/NNN.ext`, cycling through the fixtures `names`.
pub fn fill_cycled(
    rt: &tokio::runtime::Runtime,
    storage: &ics::storage::Storage,
    prefix: &str,
    count: usize,
    names: &[&str],
) {
    use futures::StreamExt;
    let items: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| {
            let name = names[i % names.len()];
            let ext = name.rsplit('.').next().unwrap();
            (format!("{prefix}/{i:03}.{ext}"), fixture(name))
        })
        .collect();
    let results: Vec<_> = rt.block_on(
        futures::stream::iter(items)
            .map(|(k, d)| {
                let s = storage.clone();
                async move { s.put(&k, bytes::Bytes::from(d), "application/octet-stream").await }
            })
            .buffer_unordered(8)
            .collect(),
    );
    assert!(results.iter().all(Result::is_ok), "upload failed");
}

/// What a measured run of the binary left.
pub struct Measured {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub peak_rss_mb: f64,
}

/// Runs `cmd` to its end and measures its peak RSS: the largest VmHWM read from
/// `/proc/PID/status` while it runs, sampled every millisecond.
///
/// Not wait4's `ru_maxrss`: Linux carries the pre-exec image's high-water mark over
/// `exec`, so a child of this (large, many-test) process would report at least the
/// test process's own RSS. VmHWM belongs to the child's own address space.
// The child is reaped by wait4, which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_with_peak_rss(mut cmd: std::process::Command) -> Measured {
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let sampler = std::thread::spawn(move || {
        let path = format!("/proc/{pid}/status");
        let mut peak_kib = 0u64;
        // Until the child has exited (a zombie's status has no VmHWM line) or is reaped.
        while let Some(kib) = std::fs::read_to_string(&path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak_kib = peak_kib.max(kib);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        peak_kib
    });
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    // Wait for the exit without reaping (WNOWAIT), so that the pid cannot be reused
    // while the sampler still reads /proc/PID; then let the sampler finish, then reap.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) }, 0);
    let peak_kib = sampler.join().unwrap();
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    Measured {
        stdout,
        stderr: stderr.join().unwrap(),
        exit_code: libc::WEXITSTATUS(status),
        peak_rss_mb: peak_kib as f64 / 1024.0,
    }
}

/// The object PUTs the test server stored (2xx) for `bucket`, by key
/// (scripts/s3_server.py's /_ics/puts): a key stored twice shows a count of 2.
pub fn successful_puts(bucket: &str) -> std::collections::BTreeMap<String, u64> {
    let (status, answer) = hook_request("GET", &format!("/_ics/puts?bucket={bucket}"), b"");
    assert_eq!(status, 200, "puts: {answer}");
    serde_json::from_str(&answer).unwrap()
}

/// Delays every S3 request on `bucket` by `ms` from now on (scripts/s3_server.py's
/// /_ics/latency), as a remote endpoint's round trip would.
pub fn set_latency(bucket: &str, ms: u64) {
    let (status, answer) = hook_request("GET", &format!("/_ics/latency?bucket={bucket}&ms={ms}"), b"");
    assert_eq!(status, 200, "latency: {answer}");
}

/// Sleeps `ms` inside every later object write on `bucket`, between the test server's
/// precondition check and its store (scripts/s3_server.py's /_ics/race): the window in
/// which unserialised conditional writes could both win.
pub fn set_race_window(bucket: &str, ms: u64) {
    let (status, answer) = hook_request("GET", &format!("/_ics/race?bucket={bucket}&ms={ms}"), b"");
    assert_eq!(status, 200, "race: {answer}");
}

/// Creates SQS queue `queue` on the test server and has `bucket` notify it of every
/// created and removed object (scripts/s3_server.py's /_ics/notify); returns its URL.
pub fn notify_queue(bucket: &str, queue: &str, visibility_seconds: u64) -> String {
    let body = serde_json::json!({"bucket": bucket, "queue": queue, "visibility": visibility_seconds});
    let (status, answer) = hook_request("POST", "/_ics/notify", body.to_string().as_bytes());
    assert_eq!(status, 200, "notify: {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    v["queue_url"].as_str().unwrap().to_owned()
}

/// [`notify_queue`] with a dead-letter queue `dead_letter`: `queue`'s RedrivePolicy moves
/// what was received more than `max_receive_count` times there.
pub fn notify_queue_dead_letter(
    bucket: &str,
    queue: &str,
    visibility_seconds: u64,
    dead_letter: &str,
    max_receive_count: u32,
) -> String {
    let body = serde_json::json!({"bucket": bucket, "queue": queue, "visibility": visibility_seconds,
        "dead_letter": dead_letter, "max_receive_count": max_receive_count});
    let (status, answer) = hook_request("POST", "/_ics/notify", body.to_string().as_bytes());
    assert_eq!(status, 200, "notify: {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    v["queue_url"].as_str().unwrap().to_owned()
}

/// The messages queue `queue` holds: (visible, in flight).
pub fn queue_depth(queue: &str) -> (u64, u64) {
    let (status, answer) = hook_request("GET", &format!("/_ics/queue?name={queue}"), b"");
    assert_eq!(status, 200, "queue: {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    (v["visible"].as_u64().unwrap(), v["in_flight"].as_u64().unwrap())
}

/// Puts `body` in SQS queue `queue` as one message (scripts/s3_server.py's /_ics/send).
pub fn queue_send(queue: &str, body: &str) {
    let (status, answer) = hook_request("POST", &format!("/_ics/send?name={queue}"), body.as_bytes());
    assert_eq!(status, 200, "send: {answer}");
}

/// Polls `f` every 200 ms until it answers, failing the test after `timeout`.
pub fn wait_for<T>(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
