//! Several buckets in one daemon (`R2_BUCKETS`, issue 12 item 3): the real binary started
//! with a `.env` only over two buckets of the S3 test server. Each bucket is converted,
//! has its own state file and lock, its own line in `/api/status`, its own `bucket`
//! label in `/metrics` and its own `batch.completed` webhook; `r2://<bucket>/<key>` is
//! routed to that bucket, an unknown one is 400 `unknown_bucket`; `run-once` and
//! `convert` take `--bucket`. Also the multi-bucket Go server's tests, ported.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::TestHttp;
use common::server::{Resp, http, spawn_serve};
use common::*;
use ics::storage::Storage;
use serde_json::{Value, json};

/// A Go deployment's `.env` over `buckets` (R2_BUCKETS, the first the primary).
fn dotenv(buckets: &[&str], extra: &str) -> String {
    let s3 = s3_env();
    format!(
        "R2_ACCESS_KEY={}\nR2_SECRET_KEY={}\nR2_ENDPOINT={}\nR2_BUCKETS={}\n{extra}",
        s3.access_key,
        s3.secret_key,
        s3.endpoint,
        buckets.join(", ")
    )
}

/// The binary in `dir` with only the harness's variables (a free port, moto's region).
fn command(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = binary();
    for var in ["R2_BUCKET", "R2_BUCKETS", "WEBHOOK_URL", "CRON_ENABLED", "TZ"] {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir).args(args).env("ICS__SERVER__PORT", "0").env("ICS__R2__REGION", s3_env().region);
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("run the binary")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn open(bucket: &str) -> Storage {
    Storage::open(&s3_config(bucket).storage, bucket).unwrap()
}

fn put(rt: &tokio::runtime::Runtime, storage: &Storage, key: &str, fixture_name: &str) {
    rt.block_on(storage.put(key, fixture(fixture_name).into(), "application/octet-stream")).unwrap();
}

fn exists(rt: &tokio::runtime::Runtime, storage: &Storage, key: &str) -> bool {
    rt.block_on(storage.head(key)).is_ok()
}

/// `serve` started bare in `dir` (as the Go binary was), its base URL and its log.
struct Serve {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(dir: &Path) -> Self {
        let mut cmd = command(dir, &[]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let (child, base, log) = spawn_serve(cmd);
        Self { child, base, log }
    }

    fn get(&self, path: &str) -> Resp {
        http("GET", &format!("{}{path}", self.base), None, &[])
    }

    fn post(&self, path: &str, body: Value) -> Resp {
        http("POST", &format!("{}{path}", self.base), Some(body.to_string().as_bytes()), &[])
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (60 s at most) until `done` holds.
    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 60 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `batch.completed` bodies the receiver got, by bucket.
fn batches(hook: &TestHttp) -> HashMap<String, Vec<Value>> {
    let mut by_bucket: HashMap<String, Vec<Value>> = HashMap::new();
    for (_, _, body) in hook.requests.lock().unwrap().iter() {
        let v: Value = serde_json::from_slice(body).unwrap();
        if v["event"] == "batch.completed" {
            by_bucket.entry(v["bucket"].as_str().unwrap().to_owned()).or_default().push(v);
        }
    }
    by_bucket
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn serve_keeps_every_bucket_of_a_dotenv_webp_complete_each_on_its_own() {
    need_s3!();
    let (a, b) = (new_bucket("multi-a"), new_bucket("multi-b"));
    let (sa, sb) = (open(&a), open(&b));
    let rt = tokio::runtime::Runtime::new().unwrap();
    put(&rt, &sa, "photos/one.jpg", "jpeg_baseline.jpg");
    put(&rt, &sa, "photos/two.png", "png_rgb.png");
    put(&rt, &sb, "photos/three.jpg", "jpeg_progressive.jpg");
    let hook = TestHttp::start("127.0.0.1:0", vec![200], HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    let webhook = format!("WEBHOOK_URL=http://{}/hook\nCRON_ENABLED=true\n", hook.addr);
    std::fs::write(dir.path().join(".env"), dotenv(&[&a, &b], &webhook)).unwrap();
    let serve = Serve::start(dir.path());

    // cron.run_on_start: both buckets are made WebP-complete at once, each by its own run.
    serve.wait("both buckets converted", || {
        exists(&rt, &sa, "photos/one.webp")
            && exists(&rt, &sa, "photos/two.webp")
            && exists(&rt, &sb, "photos/three.webp")
    });
    assert!(!exists(&rt, &sb, "photos/one.webp") && !exists(&rt, &sa, "photos/three.webp"), "no WebP crossed buckets");

    // Its own batch.completed webhook for each bucket, naming it in every image.
    serve.wait("a webhook per bucket", || batches(&hook).len() == 2);
    let sent = batches(&hook);
    let (ha, hb) = (&sent[&a][0], &sent[&b][0]);
    assert_eq!((&ha["processed_count"], &hb["processed_count"]), (&json!(2), &json!(1)), "{ha}\n{hb}");
    assert_eq!(
        hb["images"],
        json!([{"bucket": b, "source": "photos/three.jpg", "destination": "photos/three.webp",
        "source_address": format!("r2://{b}/photos/three.jpg"), "destination_address": format!("r2://{b}/photos/three.webp"), "format": "webp"}])
    );
    assert!(ha["images"].as_array().unwrap().iter().all(|i| i["bucket"] == json!(a)), "{ha}");

    // Its own state file and lock, with the multi-bucket Go server's names.
    for bucket in [&a, &b] {
        let state: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("state/state-{bucket}.json"))).unwrap())
                .unwrap();
        assert!(state["last_run_time"].is_string(), "{bucket}: {state}");
        assert!(dir.path().join(format!("state/.lock-{bucket}")).is_file());
    }
    assert!(!dir.path().join("state/state.json").exists());

    // Its own line in /api/status; the primary's fields stay at the top level.
    let status = serve.get("/api/status").json();
    assert_eq!(status["bucket"], json!(a), "{status}");
    let lines = status["buckets"].as_array().unwrap();
    assert_eq!(lines.iter().map(|l| l["bucket"].clone()).collect::<Vec<_>>(), vec![json!(a), json!(b)]);
    assert_eq!(lines[0]["last_run"]["converted"], 2, "{status}");
    assert_eq!(lines[1]["last_run"]["converted"], 1, "{status}");
    assert_eq!(status["last_run"], lines[0]["last_run"]);

    // Its own bucket label in /metrics.
    let metrics = String::from_utf8(serve.get("/metrics").body).unwrap();
    assert!(metrics.contains(&format!("ics_images_converted_total{{bucket=\"{a}\"}} 2\n")), "{metrics}");
    assert!(metrics.contains(&format!("ics_images_converted_total{{bucket=\"{b}\"}} 1\n")), "{metrics}");
    assert!(metrics.contains(&format!("ics_runs_completed_total{{bucket=\"{b}\"}} 1\n")), "{metrics}");

    // r2:// and s3:// addresses go to the bucket they name; bare keys to the primary.
    put(&rt, &sb, "api/b.png", "png_rgb.png");
    put(&rt, &sa, "api/a.jpg", "jpeg_baseline.jpg");
    let r = serve.post("/api/convert", json!({"source": format!("r2://{b}/api/b.png")}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["destination"], json!(format!("r2://{b}/api/b.webp")));
    assert!(exists(&rt, &sb, "api/b.webp") && !exists(&rt, &sa, "api/b.webp"));
    let r = serve.get(&format!("/api/convert?source=s3://{a}/api/a.jpg&width=10"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["destination"].as_str().unwrap().starts_with(&format!("r2://{a}/api/a_10x")));
    let r = serve.post("/api/convert", json!({"source": "api/a.jpg"}));
    assert_eq!((r.status, r.json()["destination"].clone()), (200, json!(format!("r2://{a}/api/a.webp"))));
    let r = serve.post("/api/convert", json!({"source": "r2://not-configured/api/a.jpg"}));
    assert_eq!((r.status, r.json()["error"].clone()), (400, json!("unknown_bucket")));
    assert!(r.json()["message"].as_str().unwrap().contains(&b), "{}", r.json());

    // POST /api/runs starts every bucket's run, or the one it names.
    let r = serve.post(&format!("/api/runs?bucket={b}"), json!({}));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["run_id"].is_string() && r.json()["runs"].is_null(), "{}", r.json());
    serve.wait("b's second run", || batches(&hook).get(&b).is_some_and(|v| v.len() == 2));
    let r = serve.post("/api/runs?bucket=nope", json!({}));
    assert_eq!((r.status, r.json()["error"].clone()), (400, json!("unknown_bucket")));
    let r = serve.post("/api/runs", json!({}));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let runs = r.json()["runs"].clone();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    assert!(runs.as_array().unwrap().iter().all(|r| r["success"] == json!(true)), "{runs}");
    serve.wait("a's second run", || batches(&hook).get(&a).is_some_and(|v| v.len() == 2));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn run_once_runs_every_bucket_or_the_one_named_and_convert_takes_a_bucket() {
    need_s3!();
    let (a, b) = (new_bucket("once-a"), new_bucket("once-b"));
    let (sa, sb) = (open(&a), open(&b));
    let rt = tokio::runtime::Runtime::new().unwrap();
    put(&rt, &sa, "p/a.jpg", "jpeg_baseline.jpg");
    put(&rt, &sb, "p/b.png", "png_rgb.png");
    put(&rt, &sb, "p/broken.jpg", "bad/truncated.jpg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), dotenv(&[&a, &b], "")).unwrap();

    // check-config shows both buckets.
    let o = run(dir.path(), &["check-config", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let config: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(config["r2"]["buckets"], json!([a, b]));

    // --dry-run names each bucket's sources by address, converts nothing.
    let o = run(dir.path(), &["run-once", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(plan.contains(&format!("r2://{a}/p/a.jpg -> r2://{a}/p/a.webp")), "{plan}");
    assert!(plan.contains(&format!("r2://{b}/p/b.png -> r2://{b}/p/b.webp")), "{plan}");
    assert!(!exists(&rt, &sa, "p/a.webp"));

    // --bucket: that bucket alone, reported as a one-bucket run.
    let o = run(dir.path(), &["run-once", "--json", "--bucket", &a]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["converted"], 1, "{summary}");
    assert!(exists(&rt, &sa, "p/a.webp") && !exists(&rt, &sb, "p/b.webp"));
    assert!(dir.path().join(format!("state/state-{a}.json")).is_file());
    assert!(!dir.path().join(format!("state/state-{b}.json")).exists());

    let o = run(dir.path(), &["run-once", "--bucket", "nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("\"nope\" is not configured") && text(&o).contains(&b), "{}", text(&o));

    // Every bucket: both summaries; b has a broken source, so the exit code is 2.
    let o = run(dir.path(), &["run-once", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let all: Value = serde_json::from_slice(&o.stdout).unwrap();
    let lines = all["buckets"].as_array().unwrap();
    assert_eq!((&lines[0]["bucket"], &lines[1]["bucket"]), (&json!(a), &json!(b)), "{all}");
    assert_eq!((&lines[0]["converted"], &lines[1]["converted"]), (&json!(0), &json!(1)), "{all}");
    assert_eq!(lines[1]["failed"], 1, "{all}");
    assert!(exists(&rt, &sb, "p/b.webp"));
    let o = run(dir.path(), &["run-once"]);
    assert!(text(&o).contains(&format!("Bucket {a}:")) && text(&o).contains(&format!("Bucket {b}:")), "{}", text(&o));

    // A run of one bucket never blocks another's: b's lock held, a still runs.
    let held =
        ics::state::RunLock::acquire_named(&dir.path().join("state"), &format!(".lock-{b}"), Duration::from_secs(3600))
            .unwrap();
    put(&rt, &sa, "p/later.png", "png_rgb.png");
    let o = run(dir.path(), &["run-once", "--bucket", &a, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(exists(&rt, &sa, "p/later.webp"));
    let o = run(dir.path(), &["run-once", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(&format!("Error: bucket {b}: cron job is already running")), "{}", text(&o));
    let all: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&all["buckets"][0]["complete"], &all["buckets"][1]["error"]),
        (&json!(true), &json!("locked")),
        "{all}"
    );
    drop(held);

    // convert: r2:// of any configured bucket; a bare key of --bucket's (default the primary).
    put(&rt, &sb, "c/x.jpg", "jpeg_baseline.jpg");
    put(&rt, &sa, "c/y.jpg", "jpeg_baseline.jpg");
    let o = run(dir.path(), &["convert", &format!("r2://{b}/c/x.jpg"), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(exists(&rt, &sb, "c/x.webp") && !exists(&rt, &sa, "c/x.webp"));
    put(&rt, &sb, "c/z.png", "png_rgb.png");
    let o = run(dir.path(), &["convert", "c/z.png", "--bucket", &b]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(exists(&rt, &sb, "c/z.webp"));
    let o = run(dir.path(), &["convert", "c/y.jpg"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(exists(&rt, &sa, "c/y.webp"));
    let o = run(dir.path(), &["convert", &format!("r2://{a}/c/y.jpg"), "--bucket", &b]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let o = run(dir.path(), &["convert", "r2://elsewhere/c/y.jpg"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("not configured"), "{}", text(&o));
}

/// The multi-bucket Go server's `cron/job_test.go` `TestProcessImages_MultipleBuckets`,
/// ported: one run over two buckets uploads each bucket's WebP into that bucket and
/// leaves a `state-<bucket>.json` for each; and the state files such a Go deployment left
/// (`data/state-<bucket>.json`) are adopted, each as its bucket's lower bound.
#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
#[allow(non_snake_case)]
fn go_TestProcessImages_MultipleBuckets() {
    need_s3!();
    let (a, b) = (new_bucket("images-a"), new_bucket("images-b"));
    let (sa, sb) = (open(&a), open(&b));
    let rt = tokio::runtime::Runtime::new().unwrap();
    put(&rt, &sa, &format!("{a}.png"), "png_rgb.png");
    put(&rt, &sb, &format!("{b}.png"), "png_rgb.png");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), dotenv(&[&a, &b], "CONVERSION_FORMATS=png\n")).unwrap();
    let o = run(dir.path(), &["run-once"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(exists(&rt, &sa, &format!("{a}.webp")), "expected images-a bucket upload");
    assert!(exists(&rt, &sb, &format!("{b}.webp")), "expected images-b bucket upload");
    assert!(!exists(&rt, &sa, &format!("{b}.webp")) && !exists(&rt, &sb, &format!("{a}.webp")));
    for bucket in [&a, &b] {
        assert!(dir.path().join(format!("state/state-{bucket}.json")).is_file(), "expected state file for {bucket}");
    }

    // A Go multi-bucket deployment copied here: its per-bucket state files are adopted.
    let (c, d) = (new_bucket("go-multi-c"), new_bucket("go-multi-d"));
    let (sc, sd) = (open(&c), open(&d));
    put(&rt, &sc, "old.png", "png_rgb.png");
    put(&rt, &sd, "old.png", "png_rgb.png");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), dotenv(&[&c, &d], "")).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    // c's Go state says its last run started after old.png was stored: the Go server
    // would not list it again. d has no state of its own: a full scan, as in Go.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    std::fs::write(
        dir.path().join(format!("data/state-{c}.json")),
        format!("{{\"last_processed_time\":\"{later}\",\"processed_count\":3}}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("data/state.json"), format!("{{\"last_processed_time\":\"{later}\"}}")).unwrap();
    let o = run(dir.path(), &["run-once"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!exists(&rt, &sc, "old.webp"), "below c's Go lower bound: {}", text(&o));
    assert!(exists(&rt, &sd, "old.webp"), "d: a full scan, the single-bucket state.json is no bucket's");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let migrated: Vec<&str> = stderr.lines().filter(|l| l.contains("Migrated the Go server's state")).collect();
    assert_eq!(migrated.len(), 1, "{stderr}");
    assert!(migrated[0].contains(&format!("data/state-{c}.json")), "{stderr}");
}

/// The multi-bucket Go server's `api/handlers_test.go` `TestHandleConvert_R2RoutesByBucket`,
/// ported: `r2://images-b/test.png` is downloaded from and uploaded to images-b; the
/// primary bucket receives no request at all.
#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
#[allow(non_snake_case)]
fn go_TestHandleConvert_R2RoutesByBucket() {
    need_s3!();
    let (a, b) = (new_bucket("route-a"), new_bucket("route-b"));
    let sb = open(&b);
    let rt = tokio::runtime::Runtime::new().unwrap();
    put(&rt, &sb, "test.png", "png_rgb.png");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), dotenv(&[&a, &b], "CRON_ENABLED=false\nICS__CRON__RUN_ON_START=false\n"))
        .unwrap();
    let serve = Serve::start(dir.path());
    request_counts(&a, true);
    let r = serve.post("/api/convert", json!({"source": format!("r2://{b}/test.png")}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(exists(&rt, &sb, "test.webp"), "expected target bucket upload");
    let primary = request_counts(&a, false);
    assert!(primary.values().all(|n| *n == 0), "the primary bucket was asked: {primary:?}");
}

/// `state.backend: bucket` over two buckets: each bucket holds its own shards (its own
/// cluster), one `run-once` completes both, and a Go deployment's per-bucket state gives
/// its bucket's new shards their lower bound.
#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn in_bucket_mode_each_bucket_holds_its_own_shards() {
    need_s3!();
    let (a, b) = (new_bucket("shards-a"), new_bucket("shards-b"));
    let (sa, sb) = (open(&a), open(&b));
    let rt = tokio::runtime::Runtime::new().unwrap();
    put(&rt, &sa, "x/1.jpg", "jpeg_baseline.jpg");
    put(&rt, &sb, "y/2.png", "png_rgb.png");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), dotenv(&[&a, &b], "")).unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "state: {backend: bucket, shards: 4, lease_seconds: 3, max_clock_skew_ms: 500}\n",
    )
    .unwrap();
    // The Go server's run of a started after x/1.jpg was stored: it would not list it again.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    std::fs::write(dir.path().join(format!("data/state-{a}.json")), format!("{{\"last_processed_time\":\"{later}\"}}"))
        .unwrap();
    // check-config says so beforehand, for a only.
    let o = run(dir.path(), &["--config", "c.yaml", "check-config"]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains(&format!("gives bucket {a}'s shards with no state yet their lower bound {}", &later[..19])),
        "{said}"
    );
    assert!(!said.contains(&format!("bucket {b}'s")), "{said}");
    let o = run(dir.path(), &["--config", "c.yaml", "run-once", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(exists(&rt, &sb, "y/2.webp"), "{}", text(&o));
    assert!(!exists(&rt, &sa, "x/1.webp"), "below a's Go lower bound: {}", text(&o));
    assert!(
        text(&o).contains("The Go server's state gives shards with no state yet their lower bound"),
        "{}",
        text(&o)
    );
    for storage in [&sa, &sb] {
        let keys: Vec<String> = rt.block_on(async {
            use futures::StreamExt;
            storage.list_ordered(None).filter_map(|o| async move { o.ok().map(|o| o.key) }).collect().await
        });
        let shards = keys.iter().filter(|k| k.starts_with(".image-converting-server/shards/")).count();
        assert_eq!(shards, 4, "{}: {keys:?}", storage.bucket());
    }
    assert!(!dir.path().join("state").join(format!("state-{a}.json")).exists(), "no local state in bucket mode");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn ready_probes_every_buckets_storage_and_names_the_one_that_does_not_answer() {
    need_s3!();
    let (a, b) = (new_bucket("ready-a"), new_bucket("ready-b"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), dotenv(&[&a, &b], "CRON_ENABLED=false\n")).unwrap();
    let serve = Serve::start(dir.path());
    let r = serve.get("/ready");
    assert_eq!(r.status, 200, "{}", r.json());
    // The second bucket's requests now take longer than the probe may wait (3 s); the
    // cached answers are 10 s fresh, so a new daemon probes at once.
    set_latency(&b, 4000);
    drop(serve);
    let serve = Serve::start(dir.path());
    let r = serve.get("/ready");
    set_latency(&b, 0);
    assert_eq!(r.status, 503, "{}", r.json());
    let reason = r.json()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("did not answer") && reason.contains(&format!("bucket {b}")), "{reason}");
    assert!(!reason.contains(&format!("bucket {a}")), "{reason}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_bucket_with_outputs_of_its_own_gets_them_and_the_other_keeps_the_go_webp() {
    need_s3!();
    let (a, b) = (new_bucket("own-a"), new_bucket("own-b"));
    let (sa, sb) = (open(&a), open(&b));
    let rt = tokio::runtime::Runtime::new().unwrap();
    put(&rt, &sa, "p/x.jpg", "jpeg_baseline.jpg");
    put(&rt, &sb, "p/x.jpg", "jpeg_baseline.jpg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), dotenv(&[&a, &b], "")).unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    let yaml = format!(
        "conversion:\n  per_bucket:\n    {b}:\n      outputs: [{{format: webp}}, {{format: avif, width: 320}}]\n"
    );
    std::fs::write(dir.path().join("config/config.yaml"), yaml).unwrap();

    let o = run(dir.path(), &["check-config", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let config: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(config["conversion"]["per_bucket"][&b]["outputs"][1]["width"], 320, "{config}");

    let o = run(dir.path(), &["run-once", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(all["buckets"][0]["by_format"], json!({"webp": 1}), "{all}");
    assert_eq!(all["buckets"][1]["by_format"], json!({"avif": 1, "webp": 1}), "{all}");
    assert!(exists(&rt, &sa, "p/x.webp") && !exists(&rt, &sa, "p/x_w320.avif"));
    assert!(exists(&rt, &sb, "p/x.webp") && exists(&rt, &sb, "p/x_w320.avif"));

    let o = run(dir.path(), &["run-once", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let again: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&again["buckets"][0]["converted"], &again["buckets"][1]["converted"]),
        (&json!(0), &json!(0)),
        "{again}"
    );

    // A name that is not one of the buckets is refused before anything runs.
    std::fs::write(
        dir.path().join("config/config.yaml"),
        "conversion: {per_bucket: {nope: {outputs: [{format: avif}]}}}\n",
    )
    .unwrap();
    let o = run(dir.path(), &["run-once"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("conversion.per_bucket.nope"), "{}", text(&o));
}
