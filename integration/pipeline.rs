//! The pipeline's five properties, end to end through the binary against the real
//! S3-compatible test server: nothing missed, nothing converted twice, failures retried,
//! a crash loses nothing, one run at a time.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use ics::storage::{ObjectInfo, Storage};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_image-converting-server");

/// A bucket on the test server and a working directory whose config points at it.
struct Env {
    bucket: String,
    storage: Storage,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new(name: &str, extra_yaml: &str) -> Self {
        let bucket = new_bucket(name);
        let s3 = s3_env();
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "storage: {{backend: r2}}\nr2: {{endpoint: '{}', bucket: '{}', region: '{}', access_key: '{}', secret_key: '{}'}}\n\
             log: {{level: 'info'}}\n{extra_yaml}",
            s3.endpoint, bucket, s3.region, s3.access_key, s3.secret_key,
        );
        std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
        let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Self { bucket, storage, dir, rt }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = binary();
        cmd.current_dir(self.dir.path()).arg("--config").arg(self.dir.path().join("config.yaml")).args(args);
        cmd.env("ICS__STATE__DIR", self.dir.path().join("state"));
        cmd
    }

    /// `run-once --json`: the exit code and the summary object.
    fn run_once(&self) -> (i32, Value) {
        let out = self.command(&["run-once", "--json"]).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("no JSON summary (exit {code}): {}", text(&out)));
        (code, v)
    }

    fn put(&self, key: &str, data: Vec<u8>) {
        self.rt.block_on(self.storage.put(key, Bytes::from(data), "application/octet-stream")).unwrap();
    }

    fn put_many(&self, items: Vec<(String, Vec<u8>)>) {
        let s = self.storage.clone();
        self.rt.block_on(async move {
            let results: Vec<_> = futures::stream::iter(items)
                .map(|(k, d)| {
                    let s = s.clone();
                    async move { s.put(&k, Bytes::from(d), "application/octet-stream").await }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            assert!(results.iter().all(Result::is_ok));
        });
    }

    fn list(&self) -> Vec<ObjectInfo> {
        self.rt.block_on(self.storage.list(None).map(|r| r.unwrap()).collect())
    }

    fn webps(&self) -> std::collections::BTreeMap<String, ObjectInfo> {
        self.list().into_iter().filter(|o| o.key.ends_with(".webp")).map(|o| (o.key.clone(), o)).collect()
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state_path()).unwrap()).unwrap()
    }

    fn state_path(&self) -> PathBuf {
        self.dir.path().join("state/state.json")
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Small real images, cycled, for buckets of many sources.
fn small_images() -> Vec<(&'static str, Vec<u8>)> {
    ["jpeg_orient1.jpg", "png_rgb.png", "gif_static.gif", "bmp_rgb24.bmp", "tiff_rgb.tif", "jpeg_gray.jpg"]
        .iter()
        .map(|f| (*f, fixture(f)))
        .collect()
}

fn image_set(prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    let imgs = small_images();
    (0..count)
        .map(|i| {
            let (name, data) = &imgs[i % imgs.len()];
            let ext = Path::new(name).extension().unwrap().to_str().unwrap();
            (format!("{prefix}/img{i:04}.{ext}"), data.clone())
        })
        .collect()
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn nothing_is_missed_even_when_uploaded_during_a_run() {
    need_s3!();
    let env = Env::new("missed", "pipeline: {workers: 1, max_in_flight: 2}\n");
    // Enough work that the run is still going while we upload.
    env.put_many(image_set("m", 60));
    let child = env.command(&["run-once", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    // Uploaded during the run: before the listing's position ("a/") and after it ("z/").
    std::thread::sleep(Duration::from_millis(300));
    env.put("a/early.jpg", fixture("jpeg_baseline.jpg"));
    env.put("z/late.png", fixture("png_rgb.png"));
    let first: Value = serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    let converted_first = n(&first, "converted");
    // Uploaded after the run.
    env.put("m/after.gif", fixture("gif_anim_loop3.gif"));
    let (code, second) = env.run_once();
    assert_eq!(code, 0, "{second}");
    let webps = env.webps();
    for key in ["a/early.webp", "z/late.webp", "m/after.webp"] {
        assert!(webps.contains_key(key), "{key} missing after the next run");
    }
    assert_eq!(webps.len(), 63);
    assert_eq!(converted_first + n(&second, "converted"), 63, "first {first}\nsecond {second}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn nothing_is_converted_twice() {
    need_s3!();
    let env = Env::new("twice", "");
    env.put_many(image_set("t", 12));
    // --dry-run lists what would be converted and converts nothing.
    let dry = env.command(&["run-once", "--dry-run"]).output().unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    let lines = String::from_utf8_lossy(&dry.stdout).lines().count();
    assert_eq!(lines, 12, "{}", text(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("t/img0000.jpg -> t/img0000.webp"));
    assert!(env.webps().is_empty());
    let (code, first) = env.run_once();
    assert_eq!((code, n(&first, "converted")), (0, 12), "{first}");
    let before = env.webps();
    let (code, second) = env.run_once();
    assert_eq!(code, 0);
    assert_eq!(n(&second, "converted"), 0, "{second}");
    assert_eq!(n(&second, "queued"), 0, "up-to-date sources are not even downloaded: {second}");
    assert_eq!(n(&second, "skipped"), 12);
    assert_eq!(env.webps(), before, "no WebP was rewritten");
    // A source updated after its WebP is converted again, and only it.
    std::thread::sleep(Duration::from_millis(1100)); // LastModified has 1 s resolution on the test server
    env.put("t/img0003.bmp", fixture("bmp_rgba32.bmp"));
    let (_, third) = env.run_once();
    assert_eq!(n(&third, "converted"), 1, "{third}");
    let after = env.webps();
    assert_ne!(after["t/img0003.webp"], before["t/img0003.webp"]);
    assert_eq!(after["t/img0004.webp"], before["t/img0004.webp"]);
    // Moving last_processed_time back by hand re-processes everything modified since.
    let mut state = env.state();
    state["last_processed_time"] = "2000-01-01T00:00:00Z".into();
    std::fs::write(env.state_path(), serde_json::to_vec(&state).unwrap()).unwrap();
    let (_, fourth) = env.run_once();
    assert_eq!(n(&fourth, "converted"), 12, "{fourth}");
    let (_, fifth) = env.run_once();
    assert_eq!(n(&fifth, "converted"), 0, "only once: {fifth}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn failures_are_recorded_retried_and_given_up_until_the_source_changes() {
    need_s3!();
    let env = Env::new("failures", "state: {max_attempts: 2, retry_base_minutes: 0}\n");
    env.put("f/good.jpg", fixture("jpeg_baseline.jpg"));
    env.put("f/text.jpg", fixture("bad/text.jpg"));
    env.put("f/bomb.png", fixture("bad/bomb.png"));
    env.put("f/cut.jpg", fixture("bad/truncated.jpg"));
    let (code, first) = env.run_once();
    assert_eq!(code, 2, "some failed: {first}");
    assert_eq!((n(&first, "converted"), n(&first, "failed")), (1, 3), "{first}");
    let reasons: Vec<String> = first["failures"].as_array().unwrap().iter().map(|f| f["code"].to_string()).collect();
    assert!(
        reasons.contains(&"\"not_an_image\"".into()) && reasons.contains(&"\"too_many_pixels\"".into()),
        "{reasons:?}"
    );
    let state = env.state();
    assert_eq!(state["failed_count"], 3);
    assert_eq!(state["ledger"]["f/text.jpg"]["kind"], "given_up");
    assert_eq!(state["ledger"]["f/bomb.png"]["code"], "too_many_pixels");
    // Bad input is not retried while the source is unchanged…
    let (code, second) = env.run_once();
    assert_eq!((code, n(&second, "failed"), n(&second, "queued")), (0, 0, 0), "{second}");
    // …and converted once a good image replaces it.
    env.put("f/text.jpg", fixture("jpeg_progressive.jpg"));
    let (_, third) = env.run_once();
    assert_eq!(n(&third, "converted"), 1, "{third}");
    assert!(env.state()["ledger"].get("f/text.jpg").is_none());
}

#[test]
fn transient_failures_back_off_and_succeed_later() {
    // A local bucket where the WebP's path is blocked by a directory: uploads fail
    // (a storage error, retried) until the obstacle is gone.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    std::fs::create_dir_all(root.join("p/x.webp")).unwrap();
    std::fs::write(root.join("p/x.jpg"), fixture("jpeg_baseline.jpg")).unwrap();
    let yaml = format!(
        "storage: {{backend: local, local_root: '{}'}}\nstate: {{dir: '{}', max_attempts: 3, retry_base_minutes: 0}}\n",
        root.display(),
        dir.path().join("state").display()
    );
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let run = || {
        let out = Command::new(BIN)
            .args(["--config", dir.path().join("c.yaml").to_str().unwrap(), "run-once", "--json"])
            .output()
            .unwrap();
        (out.status.code().unwrap(), serde_json::from_slice::<Value>(&out.stdout).unwrap())
    };
    let (code, first) = run();
    assert_eq!((code, n(&first, "failed")), (2, 1), "{first}");
    let state: Value = serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).unwrap()).unwrap();
    let entry = &state["ledger"]["p/x.jpg"];
    assert_eq!(
        (entry["kind"].as_str(), entry["code"].as_str(), entry["attempts"].as_u64()),
        (Some("failed"), Some("upload_failed"), Some(1))
    );
    assert!(entry["next_retry_at"].is_string());
    let (_, second) = run();
    assert_eq!(n(&second, "failed"), 1, "retried: {second}");
    std::fs::remove_dir(root.join("p/x.webp")).unwrap();
    let (code, third) = run();
    assert_eq!((code, n(&third, "converted")), (0, 1), "{third}");
    assert!(ics::convert::decode_webp(&std::fs::read(root.join("p/x.webp")).unwrap()).is_some());
}

fn kill9(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_crash_loses_nothing_and_redoes_little() {
    need_s3!();
    let env = Env::new("crash", "pipeline: {workers: 1, max_in_flight: 3}\nstate: {checkpoint_every: 5}\n");
    let total = 80;
    env.put_many(image_set("c", total));
    let mut child = env.command(&["run-once", "--json"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill it mid-run, once a few checkpoints have been written.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = env.webps().len();
        if done >= 12 {
            break;
        }
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill9(&mut child);
    // The state file is valid JSON after the kill, and records the unfinished run.
    let state = env.state();
    assert!(state["run"]["cursor"].is_string(), "{state}");
    // A PUT whose body was sent before the kill may still land at the server: wait until
    // the bucket's WebPs are the same twice, 300 ms apart.
    let mut survived = env.webps();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let again = env.webps();
        if again == survived {
            break;
        }
        survived = again;
    }
    assert!(survived.len() < total, "killed too late to test anything");
    // The lock is free at once; the next run resumes and finishes the bucket.
    let (code, second) = env.run_once();
    assert_eq!(code, 0, "{second}");
    let after = env.webps();
    assert_eq!(after.len(), total);
    // Object by object: a WebP that existed at the kill was not converted again.
    for (key, info) in &survived {
        assert_eq!(&after[key], info, "{key} was re-converted");
    }
    // The resumed run carries on the interrupted run's counts (it is the same run).
    let carried = state["run"]["converted"].as_u64().unwrap() as usize;
    assert_eq!(second["run_id"], state["run"]["id"], "the same run resumed");
    let redone = n(&second, "converted") as usize - carried - (total - survived.len());
    assert!(redone <= 3, "re-converted {redone} images (in flight at the kill)");
    assert!(env.state().get("run").is_none());
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn one_run_at_a_time() {
    need_s3!();
    let env = Env::new("onerun", "pipeline: {workers: 1, max_in_flight: 1}\n");
    env.put_many(image_set("o", 40));
    let first = env.command(&["run-once", "--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    // Wait until it holds the lock.
    let lock = env.dir.path().join("state/.lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock).map(|s| s.is_empty()).unwrap_or(true) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = env.command(&["run-once"]).output().unwrap();
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    assert!(text(&second).contains("Error: cron job is already running"), "{}", text(&second));
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [&lock, &env.state_path()] {
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
        }
    }
    // After it ends, the lock is free again.
    let (code, _) = env.run_once();
    assert_eq!(code, 0);
    let _ = env.bucket.len();
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn sigterm_stops_serve_gracefully_and_the_next_run_resumes() {
    need_s3!();
    let env = Env::new("sigterm", "pipeline: {workers: 1, max_in_flight: 2}\ncron: {run_on_start: true}\n");
    env.put_many(image_set("s", 60));
    let mut child = env.command(&["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.webps().len() < 5 {
        assert!(Instant::now() < deadline, "serve converted nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("Cron job interrupted; the next run resumes"), "{log}");
    // The state was checkpointed with the run's position, and the lock released.
    let state = env.state();
    assert!(state["run"]["cursor"].is_string(), "{state}");
    assert_eq!(std::fs::read_to_string(env.dir.path().join("state/.lock")).unwrap(), "");
    // Every WebP written so far is whole, and the next run finishes the bucket.
    for key in env.webps().keys() {
        let (_, body) = env.rt.block_on(env.storage.get(key, 1 << 30)).unwrap();
        assert!(ics::convert::decode_webp(&body).is_some(), "{key} is not a valid WebP");
    }
    let (code, summary) = env.run_once();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(env.webps().len(), 60);
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn schedule_prints_the_next_fire_times() {
    need_s3!();
    let env = Env::new("schedule", "cron: {schedule: '0 9-17 * * 1-5', timezone: UTC}\n");
    let out = env.command(&["schedule", "--count", "3", "--after", "2024-01-19T16:30:00Z"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2024-01-19T17:00:00Z\n2024-01-22T09:00:00Z\n2024-01-22T10:00:00Z\n"
    );
    let bad = env.command(&["schedule", "--after", "yesterday"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn state_initial_now_ignores_what_is_already_there() {
    need_s3!();
    let env = Env::new("initial", "state: {initial: now}\n");
    env.put_many(image_set("i", 3));
    std::thread::sleep(Duration::from_millis(1100)); // LastModified has 1 s resolution
    let (code, first) = env.run_once();
    assert_eq!((code, n(&first, "converted"), n(&first, "skipped")), (0, 0, 3), "{first}");
    std::thread::sleep(Duration::from_millis(1100));
    env.put("i/new.png", fixture("png_rgb.png"));
    let (_, second) = env.run_once();
    assert_eq!(n(&second, "converted"), 1, "{second}");
    assert_eq!(env.webps().keys().collect::<Vec<_>>(), ["i/new.webp"]);
}
