//! Bucket event notifications end to end, against the S3 test server's S3 and SQS (moto,
//! on 127.0.0.1): the bucket notifies a queue of each upload, `serve` consumes it.
//!
//! - 200 uploads over 20 s, the daemon killed with SIGKILL half-way and started again:
//!   every image gets its WebP, none is stored twice (successful PUTs counted at the
//!   server), the daemon's own WebP uploads and the set-up's s3:TestEvent are consumed,
//!   and the queue ends empty.
//! - Two `serve` instances on one queue split the events (each converts some, none
//!   twice), and a cron run afterwards finds nothing to do.
//! - Two configured buckets (and one that is not) notifying one queue: each upload is
//!   converted in its own bucket, once; the unconfigured bucket's events are deleted
//!   without work and counted.
//! - The handler's decisions, through the pipeline's own actors: an up-to-date source is
//!   not even downloaded, an event older than the object is left to the newer one's, a
//!   duplicate costs nothing, and removals delete the WebP only when configured to.
//! - What became of an event's image is in the ledger before its message goes: a kept
//!   source (its WebP would be larger) and a given-up one are recorded, a duplicate of
//!   either is not downloaded again, and a run afterwards leaves both alone.
//! - Messages that can never succeed are given up once: a poison record beside a good one
//!   (the good one converted), a message that is no event, a message failing at every
//!   delivery past `events.max_receives` on a queue without a dead-letter policy (left to
//!   the policy where there is one), a journal file failing past as many passes, and a
//!   journal file half done at SIGTERM resumed where it stopped.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cf_queue::CfQueue;
use common::server::*;
use common::*;
use ics::events::handle::{Done, Handled, Handler};
use ics::events::record::{EventKind, ObjectEvent};

/// Small images of several formats, cycled.
const NAMES: [&str; 4] = ["png_rgb.png", "jpeg_icc.jpg", "gif_static.gif", "png_palette.png"];

/// One test at a time: each starts daemons that compete for the two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn events_yaml(queue_url: &str) -> String {
    format!(
        "events: {{sqs: {{queue_url: \"{queue_url}\", wait_seconds: 2, visibility_timeout_seconds: 6}}}}\n\
         pipeline: {{workers: 2}}\n"
    )
}

fn key_of(i: usize) -> String {
    let name = NAMES[i % NAMES.len()];
    let ext = name.rsplit('.').next().unwrap();
    // Spaces and '+' travel URL-encoded (quote_plus) in the records.
    if i.is_multiple_of(10) { format!("up/a b+c {i:03}.{ext}") } else { format!("up/{i:03}.{ext}") }
}

fn webp_of(key: &str) -> String {
    format!("{}.webp", key.rsplit_once('.').unwrap().0)
}

/// The WebPs in the bucket.
fn webps(rt: &tokio::runtime::Runtime, storage: &ics::storage::Storage) -> BTreeSet<String> {
    use futures::StreamExt;
    rt.block_on(storage.list(None).filter_map(|o| async move { o.ok() }).collect::<Vec<_>>())
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".webp"))
        .collect()
}

fn upload(rt: &tokio::runtime::Runtime, storage: &ics::storage::Storage, i: usize) {
    let data = bytes::Bytes::from(fixture(NAMES[i % NAMES.len()]));
    rt.block_on(storage.put(&key_of(i), data, "application/octet-stream")).unwrap();
}

/// A new bucket of the S3 test server that notifies its own SQS queue of every object
/// event (the queue's visibility timeout `visibility` s).
struct Notified {
    rt: tokio::runtime::Runtime,
    bucket: String,
    storage: ics::storage::Storage,
    queue: String,
    url: String,
}

fn notified(prefix: &str, visibility: u64) -> Notified {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = new_bucket(prefix);
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let queue = format!("q-{bucket}");
    let url = notify_queue(&bucket, &queue, visibility);
    Notified { rt, bucket, storage, queue, url }
}

fn queue_empty(queue: &str, timeout: Duration) {
    wait_for("the queue to drain", timeout, || (queue_depth(queue) == (0, 0)).then_some(()));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn uploads_are_converted_from_sqs_events_through_a_sigkill_none_twice() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Notified { rt, bucket, storage, queue, url } = notified("events", 6);
    let mut server = Server::start(Some(&bucket), &events_yaml(&url));
    let total = 200;
    for i in 0..total {
        if i == total / 2 {
            // SIGKILL mid-way: messages in hand come back after their visibility timeout.
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            server = Server::start(Some(&bucket), &events_yaml(&url));
        }
        upload(&rt, &storage, i);
        std::thread::sleep(Duration::from_millis(100));
    }
    let expected: BTreeSet<String> = (0..total).map(|i| webp_of(&key_of(i))).collect();
    wait_for("every WebP", Duration::from_secs(120), || {
        let have = webps(&rt, &storage);
        expected.is_subset(&have).then_some(())
    });
    queue_empty(&queue, Duration::from_secs(60));
    let puts = successful_puts(&bucket);
    let twice: Vec<_> = puts.iter().filter(|(k, n)| k.ends_with(".webp") && **n != 1).collect();
    assert!(twice.is_empty(), "WebPs stored more than once: {twice:?}");
    assert_eq!(puts.keys().filter(|k| k.ends_with(".webp")).count(), total);
    let status = server.get("/api/status").json();
    let sqs = &status["events"]["sqs"];
    assert_eq!(sqs["connected"], true, "{status}");
    assert!(sqs["converted"].as_u64().unwrap() > 0, "{status}");
    assert!(sqs["acked"].as_u64().unwrap() >= sqs["converted"].as_u64().unwrap(), "{status}");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(metrics.contains("ics_events_received_total{source=\"sqs\"}"), "{metrics}");
    assert!(metrics.contains("ics_event_lag_seconds_count"), "{metrics}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn the_environment_alone_turns_sqs_events_on_with_cron_off() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Notified { rt, bucket, storage, queue, url } = notified("evenv", 6);
    // No configuration file: the Go server's variables for the bucket, two for the queue
    // (the region is the default us-east-1: moto's URLs name none), and events as the
    // only trigger.
    let s3 = s3_env();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary();
    cmd.arg("serve")
        .current_dir(dir.path())
        .env("R2_ENDPOINT", &s3.endpoint)
        .env("R2_BUCKET", &bucket)
        .env("R2_ACCESS_KEY", &s3.access_key)
        .env("R2_SECRET_KEY", &s3.secret_key)
        .env("ICS__R2__REGION", &s3.region)
        .env("ICS__EVENTS__SQS__QUEUE_URL", &url)
        .env("ICS__EVENTS__SQS__ENDPOINT", &s3.endpoint)
        .env("ICS__CRON__ENABLED", "false")
        .env("ICS__CRON__RUN_ON_START", "false")
        .env("ICS__SERVER__PORT", "0")
        .env("ICS__LOG__LEVEL", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let (mut child, base, _log) = spawn_serve(cmd);
    let total = 8;
    for i in 0..total {
        upload(&rt, &storage, i);
    }
    let expected: BTreeSet<String> = (0..total).map(|i| webp_of(&key_of(i))).collect();
    wait_for("every WebP", Duration::from_secs(60), || expected.is_subset(&webps(&rt, &storage)).then_some(()));
    queue_empty(&queue, Duration::from_secs(30));
    let status = http("GET", &format!("{base}/api/status"), None, &[]).json();
    assert_eq!(status["events"]["sqs"]["converted"], total as u64, "{status}");
    assert!(status["last_run"].is_null(), "no run: events were the only trigger: {status}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn two_instances_split_one_queue_and_cron_finds_nothing_left() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Notified { rt, bucket, storage, queue, url } = notified("events2", 6);
    let a = Server::start(Some(&bucket), &events_yaml(&url));
    let b = Server::start(Some(&bucket), &events_yaml(&url));
    let total = 80;
    for i in 0..total {
        upload(&rt, &storage, i);
        std::thread::sleep(Duration::from_millis(25));
    }
    let expected: BTreeSet<String> = (0..total).map(|i| webp_of(&key_of(i))).collect();
    wait_for("every WebP", Duration::from_secs(120), || expected.is_subset(&webps(&rt, &storage)).then_some(()));
    queue_empty(&queue, Duration::from_secs(30));
    let converted = |s: &Server| s.get("/api/status").json()["events"]["sqs"]["converted"].as_u64().unwrap();
    let (ca, cb) = (converted(&a), converted(&b));
    assert!(ca > 0 && cb > 0, "both instances convert: {ca} and {cb}");
    assert_eq!(ca + cb, total as u64, "each image converted once: {ca} + {cb}");
    let puts = successful_puts(&bucket);
    assert!(puts.iter().filter(|(k, _)| k.ends_with(".webp")).all(|(_, n)| *n == 1), "{puts:?}");
    drop((a, b));
    // The safety net: a run of the whole bucket finds every WebP up to date.
    let state = tempfile::tempdir().unwrap();
    let out = binary_on_s3(&bucket, state.path()).args(["run-once", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["converted"], 0, "{summary}");
    assert_eq!(summary["skipped"], total as u64, "{summary}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn two_buckets_notifying_one_queue_are_each_converted_in_their_own_bucket() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b, stranger) = (new_bucket("evba"), new_bucket("evbb"), new_bucket("evbx"));
    let open = |bucket: &str| ics::storage::Storage::open(&s3_config(bucket).storage, bucket).unwrap();
    let (sa, sb, sx) = (open(&a), open(&b), open(&stranger));
    // One queue carries all three buckets' notifications; the daemon keeps a and b.
    let queue = format!("q-{a}");
    let url = notify_queue(&a, &queue, 6);
    assert_eq!(notify_queue(&b, &queue, 6), url);
    assert_eq!(notify_queue(&stranger, &queue, 6), url);
    let server = Server::start_env(Some(&a), &events_yaml(&url), &[("R2_BUCKETS", format!("{a},{b}"))]);
    // Keys 0..12 into a, 6..18 into b: 6..12 in both, each bucket's own WebP.
    let (in_a, in_b) = (0..12, 6..18);
    for i in 0..18 {
        if in_a.contains(&i) {
            upload(&rt, &sa, i);
        }
        if in_b.contains(&i) {
            upload(&rt, &sb, i);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    for i in 0..2 {
        upload(&rt, &sx, i);
    }
    let expect = |r: std::ops::Range<usize>| r.map(|i| webp_of(&key_of(i))).collect::<BTreeSet<String>>();
    let (want_a, want_b) = (expect(in_a.clone()), expect(in_b.clone()));
    wait_for("every WebP of both buckets", Duration::from_secs(90), || {
        (want_a.is_subset(&webps(&rt, &sa)) && want_b.is_subset(&webps(&rt, &sb))).then_some(())
    });
    // Drained: the unconfigured bucket's events were deleted too, not left to come back.
    queue_empty(&queue, Duration::from_secs(30));
    assert_eq!(webps(&rt, &sa), want_a, "only a's own uploads have WebPs in a");
    assert_eq!(webps(&rt, &sb), want_b, "only b's own uploads have WebPs in b");
    assert!(webps(&rt, &sx).is_empty(), "nothing written to a bucket that is not configured");
    for (bucket, want) in [(&a, &want_a), (&b, &want_b)] {
        let puts = successful_puts(bucket);
        let stored: BTreeSet<String> = puts.keys().filter(|k| k.ends_with(".webp")).cloned().collect();
        assert_eq!(&stored, want, "{bucket}");
        assert!(puts.iter().filter(|(k, _)| k.ends_with(".webp")).all(|(_, n)| *n == 1), "{bucket}: {puts:?}");
    }
    assert_eq!(successful_puts(&stranger).len(), 2, "the stranger's two sources, nothing else");
    let status = server.get("/api/status").json();
    let sqs = &status["events"]["sqs"];
    assert_eq!(sqs["converted"], 24, "{status}");
    assert_eq!(sqs["unconfigured_bucket"], 2, "{status}");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    for (bucket, n) in [(&a, 12), (&b, 12)] {
        let line = format!("ics_images_converted_total{{bucket=\"{bucket}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    assert!(
        server.log.lock().unwrap().iter().any(|l| l.contains("not configured") && l.contains(&stranger)),
        "the unconfigured bucket is named at INFO"
    );
}

/// The handler on the pipeline's own actors, against the S3 test server.
struct Bench {
    rt: actix::SystemRunner,
    handler: Handler,
    storage: ics::storage::Storage,
    bucket: String,
    /// The state directory (its ledger).
    state: tempfile::TempDir,
}

fn bench(delete_webp_on_remove: bool) -> Bench {
    let bucket = new_bucket("evhandle");
    let state = tempfile::tempdir().unwrap();
    let mut config = s3_config(&bucket);
    config.events.delete_webp_on_remove = delete_webp_on_remove;
    config.state.dir = state.path().to_owned();
    let config = Arc::new(config);
    let storage = ics::storage::Storage::open(&config.storage, &bucket).unwrap();
    let rt = actix::System::new();
    let handler = rt.block_on(async {
        let backend = ics::actors::StateBackend::file(state.path()).unwrap();
        let pipeline = ics::actors::Pipeline::start_manual(config.clone(), storage.clone(), backend);
        Handler::new(config, storage.clone(), &pipeline, Default::default())
    });
    Bench { rt, handler, storage, bucket, state }
}

impl Bench {
    fn put(&self, key: &str, name: &str) -> ics::storage::ObjectInfo {
        self.rt.block_on(self.storage.put(key, fixture(name).into(), "image/png")).unwrap();
        self.rt.block_on(self.storage.head(key)).unwrap()
    }

    fn handle(
        &self,
        kind: EventKind,
        key: &str,
        etag: Option<&str>,
        time: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Handled {
        let event = ObjectEvent {
            kind,
            bucket: self.bucket.clone(),
            key: key.into(),
            etag: etag.map(|e| e.trim_matches('"').to_owned()),
            time,
        };
        self.rt.block_on(self.handler.handle(&event))
    }
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn events_are_idempotent_and_never_go_back_in_time() {
    need_s3!();
    let b = bench(false);
    let v1 = b.put("p/x.png", "png_rgb.png");
    let created = |etag: Option<&str>, at| b.handle(EventKind::Created, "p/x.png", etag, at);
    assert_eq!(created(v1.etag.as_deref(), Some(v1.last_modified)), Handled::Done(Done::Converted));
    request_counts(&b.bucket, true);
    // A duplicate delivery: two HEADs, no download, no write.
    assert_eq!(created(v1.etag.as_deref(), Some(v1.last_modified)), Handled::Done(Done::UpToDate));
    let counts = request_counts(&b.bucket, true);
    assert_eq!((counts.get("GET"), counts.get("PUT")), (None, None), "{counts:?}");
    // A newer version, then the old event arrives late: nothing happens.
    std::thread::sleep(Duration::from_millis(2100));
    let v2 = b.put("p/x.png", "png_palette.png");
    assert_ne!(v1.etag, v2.etag);
    request_counts(&b.bucket, true);
    assert_eq!(created(v1.etag.as_deref(), Some(v1.last_modified)), Handled::Done(Done::Stale));
    assert_eq!(request_counts(&b.bucket, true).get("PUT"), None);
    // The newer one's event converts it.
    assert_eq!(created(v2.etag.as_deref(), Some(v2.last_modified)), Handled::Done(Done::Converted));
    let webp = b.rt.block_on(b.storage.head("p/x.webp")).unwrap();
    assert!(webp.last_modified >= v2.last_modified);
    // The daemon's own WebP and other keys are no work; another bucket's neither.
    assert_eq!(b.handle(EventKind::Created, "p/x.webp", None, None), Handled::Done(Done::NotASource));
    assert_eq!(b.handle(EventKind::Created, "p/readme.txt", None, None), Handled::Done(Done::NotASource));
    let other = ObjectEvent {
        bucket: "elsewhere".into(),
        ..ObjectEvent { kind: EventKind::Created, bucket: String::new(), key: "p/x.png".into(), etag: None, time: None }
    };
    assert_eq!(b.rt.block_on(b.handler.handle(&other)), Handled::Done(Done::OtherBucket));
    // Gone before we came.
    assert_eq!(b.handle(EventKind::Created, "p/never.png", Some("e"), None), Handled::Done(Done::Gone));
    // A bad image is given up (the message may go), not retried forever.
    b.rt.block_on(b.storage.put("p/bad.png", bytes::Bytes::from_static(b"not a png"), "image/png")).unwrap();
    assert!(matches!(b.handle(EventKind::Created, "p/bad.png", None, None), Handled::Done(Done::GivenUp { .. })));
    // Removal: the WebP stays unless configured otherwise.
    b.rt.block_on(b.storage.delete("p/x.png")).unwrap();
    assert_eq!(
        b.handle(EventKind::Removed, "p/x.png", None, None),
        Handled::Done(Done::Removed { webp_deleted: false })
    );
    assert!(b.rt.block_on(b.storage.head("p/x.webp")).is_ok());
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn concurrent_duplicates_convert_once_and_removals_delete_when_asked() {
    need_s3!();
    let b = bench(true);
    let v = b.put("d/y.jpg", "jpeg_icc.jpg");
    let event = ObjectEvent {
        kind: EventKind::Created,
        bucket: b.bucket.clone(),
        key: "d/y.jpg".into(),
        etag: v.etag.clone(),
        time: Some(v.last_modified),
    };
    let outcomes = b.rt.block_on(futures::future::join_all((0..4).map(|_| b.handler.handle(&event))));
    let converted = outcomes.iter().filter(|o| **o == Handled::Done(Done::Converted)).count();
    assert_eq!(converted, 1, "{outcomes:?}");
    assert_eq!(successful_puts(&b.bucket).get("d/y.webp"), Some(&1));
    // Re-uploaded since the removal: the WebP belongs to the new version and stays.
    let removed = |b: &Bench| b.handle(EventKind::Removed, "d/y.jpg", None, None);
    assert_eq!(removed(&b), Handled::Done(Done::Removed { webp_deleted: false }));
    b.rt.block_on(b.storage.delete("d/y.jpg")).unwrap();
    assert_eq!(removed(&b), Handled::Done(Done::Removed { webp_deleted: true }));
    assert!(matches!(b.rt.block_on(b.storage.head("d/y.webp")), Err(ics::storage::StorageError::NotFound { .. })));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn r2_notifications_from_a_cloudflare_queue_are_converted_and_acked() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = new_bucket("evcf");
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let cf = CfQueue::start("cf-token");
    let yaml = format!(
        "events: {{cloudflare_queue: {{account_id: acc123, queue_id: q456, api_token: cf-token, \
         api: \"{}/client/v4\", visibility_timeout_seconds: 30, poll_interval_ms: 50}}}}\n",
        cf.base
    );
    let server = Server::start(Some(&bucket), &yaml);
    let total = 30;
    for i in 0..total {
        upload(&rt, &storage, i);
        let info = rt.block_on(storage.head(&key_of(i))).unwrap();
        // R2's message: the key as it is (not URL-encoded).
        let action = if i % 3 == 0 { "CompleteMultipartUpload" } else { "PutObject" };
        cf.send(
            "q456",
            serde_json::json!({"account": "acc123", "action": action, "bucket": bucket,
            "object": {"key": key_of(i), "size": info.size, "eTag": info.etag.unwrap().trim_matches('"')},
            "eventTime": info.last_modified.to_rfc3339()}),
            // Bodies as JSON text and base64-encoded, as the pull API may hand either.
            i % 2 == 1,
        );
    }
    // A deletion (the WebP stays by default) and a message that is not R2's.
    cf.send(
        "q456",
        serde_json::json!({"action": "DeleteObject", "bucket": bucket, "object": {"key": "up/gone.png"}}),
        false,
    );
    let expected: BTreeSet<String> = (0..total).map(|i| webp_of(&key_of(i))).collect();
    wait_for("every WebP", Duration::from_secs(60), || expected.is_subset(&webps(&rt, &storage)).then_some(()));
    let stats = wait_for("every message acked", Duration::from_secs(30), || {
        let s = cf.stats("q456");
        (s["visible"] == 0 && s["leased"] == 0).then_some(s)
    });
    assert_eq!(stats["acked"], total as u64 + 1, "{stats}");
    assert_eq!(stats["retried"], 0, "{stats}");
    let puts = successful_puts(&bucket);
    assert!(puts.iter().filter(|(k, _)| k.ends_with(".webp")).all(|(_, n)| *n == 1), "{puts:?}");
    let status = server.get("/api/status").json();
    let source = &status["events"]["cloudflare_queue"];
    assert_eq!((source["connected"].clone(), source["converted"].clone()), (true.into(), total.into()), "{status}");
    // A wrong token is an error the status shows, not a crash.
    let bad = Server::start(Some(&bucket), &yaml.replace("api_token: cf-token", "api_token: wrong"));
    let status = wait_for("the error to show", Duration::from_secs(20), || {
        let s = bad.get("/api/status").json();
        s["events"]["cloudflare_queue"]["last_error"].is_string().then_some(s)
    });
    let source = &status["events"]["cloudflare_queue"];
    assert_eq!(source["connected"], false, "{status}");
    assert!(source["last_error"].as_str().unwrap().contains("401"), "{status}");
    assert!(!status.to_string().contains("wrong"), "the token is not shown: {status}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn posted_minio_records_survive_a_sigkill_after_the_202() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = new_bucket("evhook");
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let state = tempfile::tempdir().unwrap();
    let env = [("ICS__STATE__DIR", state.path().to_string_lossy().into_owned())];
    let yaml = "events: {webhook_enabled: true, webhook_token: minio-secret}\napi: {token: api-secret}\n";
    let mut server = Server::start_env(Some(&bucket), yaml, &env);
    let total = 24;
    for i in 0..total {
        upload(&rt, &storage, i);
    }
    // MinIO's webhook target: one record a POST, keys URL-encoded, its auth_token as a bearer.
    let record = |i: usize| {
        let key: String = key_of(i).replace('+', "%2B").replace(' ', "+").replace('/', "%2F");
        serde_json::json!({"EventName": "s3:ObjectCreated:Put", "Key": format!("{bucket}/{}", key_of(i)),
            "Records": [{"eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
                "eventTime": chrono::Utc::now().to_rfc3339(),
                "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})
    };
    for i in 0..total {
        let r = http(
            "POST",
            &format!("{}/api/events", server.base),
            Some(record(i).to_string().as_bytes()),
            &[("Authorization", "Bearer minio-secret"), ("Content-Type", "application/json")],
        );
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    }
    // SIGKILL right after the last 202: what was accepted is in the journal.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    server = Server::start_env(Some(&bucket), yaml, &env);
    let expected: BTreeSet<String> = (0..total).map(|i| webp_of(&key_of(i))).collect();
    wait_for("every WebP", Duration::from_secs(60), || expected.is_subset(&webps(&rt, &storage)).then_some(()));
    let journal = state.path().join("events");
    wait_for("the journal to empty", Duration::from_secs(20), || {
        (std::fs::read_dir(&journal)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count()
            == 0)
            .then_some(())
    });
    let puts = successful_puts(&bucket);
    assert!(puts.iter().filter(|(k, _)| k.ends_with(".webp")).all(|(_, n)| *n == 1), "{puts:?}");
    // Without a token: refused, and nothing journaled.
    let r = http("POST", &format!("{}/api/events", server.base), Some(record(0).to_string().as_bytes()), &[]);
    assert_eq!(r.status, 401);
    drop(server);
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn event_conversions_are_announced_in_summaries_not_per_event() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Notified { rt, bucket, storage, url, .. } = notified("evsum", 6);
    let hook = common::http::TestHttp::start("127.0.0.1:0", vec![200], std::collections::HashMap::new());
    let yaml = format!(
        "events: {{webhook_every_seconds: 1, sqs: {{queue_url: \"{url}\", wait_seconds: 2}}}}\n\
         webhook: {{url: \"http://{}/hook\"}}\n",
        hook.addr
    );
    let server = Server::start(Some(&bucket), &yaml);
    let total = 12;
    for i in 0..total {
        upload(&rt, &storage, i);
    }
    let expected: BTreeSet<String> = (0..total).map(|i| webp_of(&key_of(i))).collect();
    wait_for("every WebP", Duration::from_secs(60), || expected.is_subset(&webps(&rt, &storage)).then_some(()));
    let announced = wait_for("the summaries", Duration::from_secs(10), || {
        let bodies: Vec<serde_json::Value> =
            hook.requests.lock().unwrap().iter().map(|(_, _, b)| serde_json::from_slice(b).unwrap()).collect();
        let images: usize = bodies.iter().map(|b| b["images"].as_array().unwrap().len()).sum();
        (images == total).then_some(bodies)
    });
    assert!(announced.iter().all(|b| b["event"] == "events.completed"), "{announced:?}");
    assert!(announced.len() < total, "summaries, not one webhook per event: {}", announced.len());
    let sources: BTreeSet<&str> =
        announced.iter().flat_map(|b| b["images"].as_array().unwrap()).map(|i| i["source"].as_str().unwrap()).collect();
    assert_eq!(sources.len(), total);
    let webps: u64 = announced.iter().map(|b| b["by_format"]["webp"].as_u64().unwrap_or(0)).sum();
    assert_eq!(webps, total as u64, "by_format counts every output: {announced:?}");
    assert!(announced.iter().flat_map(|b| b["images"].as_array().unwrap()).all(|i| i["format"] == "webp"));
    drop(server);
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_long_conversion_keeps_its_message_invisible() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Notified { rt, bucket, storage, queue, url } = notified("evslow", 5);
    let yaml = format!("events: {{sqs: {{queue_url: \"{url}\", wait_seconds: 1, visibility_timeout_seconds: 5}}}}\n");
    let server = Server::start(Some(&bucket), &yaml);
    upload(&rt, &storage, 1);
    // Every bucket request now takes 2.5 s: HEAD, HEAD, GET, PUT, HEAD take 12.5 s, more
    // than twice the visibility timeout. Extended every 2.5 s, the message never reappears.
    set_latency(&bucket, 2500);
    wait_for("the WebP", Duration::from_secs(60), || webps(&rt, &storage).contains(&webp_of(&key_of(1))).then_some(()));
    set_latency(&bucket, 0);
    queue_empty(&queue, Duration::from_secs(20));
    let status = server.get("/api/status").json();
    let sqs = &status["events"]["sqs"];
    // The set-up's s3:TestEvent, the upload's event, the WebP's own event: each received once.
    assert_eq!(sqs["received"], 3, "{status}");
    assert_eq!(sqs["acked"], 3, "{status}");
    assert_eq!(sqs["converted"], 1, "{status}");
    assert_eq!(successful_puts(&bucket).get(&webp_of(&key_of(1))), Some(&1));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_message_that_is_no_event_is_given_up_once_not_received_again() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bucket = new_bucket("evbad");
    let queue = format!("q-{bucket}");
    let url = notify_queue(&bucket, &queue, 5);
    let yaml = format!(
        "events: {{max_receives: 2, sqs: {{queue_url: \"{url}\", wait_seconds: 1, visibility_timeout_seconds: 5}}}}\n"
    );
    let server = Server::start(Some(&bucket), &yaml);
    queue_send(&queue, "this is not an S3 event notification");
    // It can never succeed: given up at its first receive and deleted. Before, it came
    // back every visibility timeout until a dead-letter policy took it, or forever.
    queue_empty(&queue, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(7));
    let status = server.get("/api/status").json();
    let sqs = &status["events"]["sqs"];
    assert_eq!((sqs["received"].as_u64(), sqs["acked"].as_u64()), (Some(2), Some(2)), "{status}");
    assert_eq!(sqs["given_up"], 1, "{status}");
    assert!(sqs["last_error"].as_str().unwrap().contains("not an S3 event notification"), "{status}");
    let said = server.log.lock().unwrap().iter().filter(|l| l.contains("not an S3 event notification")).count();
    assert_eq!(said, 1, "said once");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    let line = "ics_events_given_up_total{reason=\"unreadable_record\",source=\"sqs\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
}

/// An S3 `ObjectCreated:Put` record of `bucket`'s `key` (as it travels: URL-encoded).
fn created_record(bucket: &str, encoded_key: &str) -> serde_json::Value {
    serde_json::json!({"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "eventTime": chrono::Utc::now().to_rfc3339(),
        "s3": {"bucket": {"name": bucket}, "object": {"key": encoded_key}}})
}

/// A bucket with one source (`key_of(1)`, no event of its own) and a queue that only
/// the messages a test sends reach (an idle bucket notifies it: its s3:TestEvent).
fn quiet_queue(prefix: &str, visibility: u64, dead_letter: Option<(&str, u32)>) -> (String, String, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = new_bucket(prefix);
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    upload(&rt, &storage, 1);
    let queue = format!("q-{bucket}");
    let idle = new_bucket(&format!("{prefix}i"));
    let url = match dead_letter {
        Some((dlq, n)) => notify_queue_dead_letter(&idle, &queue, visibility, dlq, n),
        None => notify_queue(&idle, &queue, visibility),
    };
    (bucket, queue, url)
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_poison_record_beside_a_good_one_in_one_sqs_body_is_given_up_once_and_the_good_one_converted() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (bucket, queue, url) = quiet_queue("evpoison", 5, None);
    let state = tempfile::tempdir().unwrap();
    let env = [("ICS__STATE__DIR", state.path().to_string_lossy().into_owned())];
    let yaml = format!("events: {{sqs: {{queue_url: \"{url}\", wait_seconds: 1, visibility_timeout_seconds: 5}}}}\n");
    let server = Server::start_env(Some(&bucket), &yaml, &env);
    let good = key_of(1);
    // First a key the storage refuses (longer than S3's 1,024 bytes: S3 itself takes
    // any other, a NUL byte included), then a record that cannot be read, then the good
    // one twice. Before, the first was retried every visibility timeout without end and
    // the good one never converted.
    let unreadable = serde_json::json!({"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "bad%2"}}});
    let evil = format!("up/evil{}.png", "x".repeat(1100));
    let records = [created_record(&bucket, &evil), unreadable, created_record(&bucket, &good)];
    let body = serde_json::json!({ "Records": [records[0], records[1], records[2], records[2]] });
    queue_send(&queue, &body.to_string());
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_for("the good one's WebP", Duration::from_secs(30), || {
        webps(&rt, &storage).contains(&webp_of(&good)).then_some(())
    });
    queue_empty(&queue, Duration::from_secs(20));
    // A visibility timeout later, nothing came back.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(successful_puts(&bucket).get(&webp_of(&good)), Some(&1), "the duplicate cost nothing");
    let status = server.get("/api/status").json();
    let sqs = &status["events"]["sqs"];
    assert_eq!((sqs["received"].as_u64(), sqs["acked"].as_u64()), (Some(2), Some(2)), "{status}");
    assert_eq!((sqs["converted"].as_u64(), sqs["given_up"].as_u64()), (Some(1), Some(2)), "{status}");
    let log = server.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.contains("evil") && l.contains("given up")).count(), 1, "said once: {log:?}");
    assert_eq!(log.iter().filter(|l| l.contains("bad %-escape")).count(), 1, "said once: {log:?}");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    for reason in ["unsafe_key", "unreadable_record"] {
        let line = format!("ics_events_given_up_total{{reason=\"{reason}\",source=\"sqs\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    drop(server);
    use ics::state::StateStore;
    let ledger = ics::state::FileStateStore::new(state.path()).unwrap().load().unwrap().unwrap().ledger;
    let evil = &ledger[&evil];
    assert_eq!((evil.kind, evil.code.as_str()), (ics::state::LedgerKind::GivenUp, "unsafe_key"), "{ledger:?}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn an_sqs_message_that_always_fails_is_given_up_after_max_receives_without_a_dead_letter_queue() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Two queues, the second with a dead-letter queue taking what was received 3 times.
    let (bucket, queue, url) = quiet_queue("evmax", 5, None);
    let dlq = format!("dlq-{bucket}");
    let (bucket2, queue2, url2) = quiet_queue("evdlq", 5, Some((&dlq, 3)));
    let state = tempfile::tempdir().unwrap();
    let env = [("ICS__STATE__DIR", state.path().to_string_lossy().into_owned())];
    // Every HEAD times out (1 s, no retry, the bucket answering in 3 s): each delivery
    // fails transiently, two are tried.
    let yaml = |url: &str| {
        format!(
            "storage: {{max_retries: 0, request_timeout_seconds: 1}}\n\
             events: {{max_receives: 2, sqs: {{queue_url: \"{url}\", wait_seconds: 1, visibility_timeout_seconds: 5}}}}\n"
        )
    };
    let server = Server::start_env(Some(&bucket), &yaml(&url), &env);
    let server2 = Server::start(Some(&bucket2), &yaml(&url2));
    set_latency(&bucket, 3000);
    set_latency(&bucket2, 3000);
    let good = key_of(1);
    queue_send(&queue, &serde_json::json!({"Records": [created_record(&bucket, &good)]}).to_string());
    queue_send(&queue2, &serde_json::json!({"Records": [created_record(&bucket2, &good)]}).to_string());
    // No dead-letter queue: the third delivery is given up and deleted. Before, it was
    // left alone and came back every visibility timeout, forever.
    queue_empty(&queue, Duration::from_secs(40));
    // With one: left to it, as before; the queue moves it there.
    wait_for("the dead-letter queue to take it", Duration::from_secs(40), || (queue_depth(&dlq).0 == 1).then_some(()));
    queue_empty(&queue2, Duration::from_secs(10));
    set_latency(&bucket, 0);
    set_latency(&bucket2, 0);
    let status = server.get("/api/status").json();
    let sqs = &status["events"]["sqs"];
    assert_eq!(sqs["given_up"], 1, "{status}");
    assert_eq!(sqs["converted"], 0, "{status}");
    assert!(sqs["last_error"].as_str().unwrap().contains("events.max_receives 2"), "{status}");
    let said = server.log.lock().unwrap().iter().filter(|l| l.contains("Bucket event message given up")).count();
    assert_eq!(said, 1, "said once");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    let line = "ics_events_given_up_total{reason=\"max_receives\",source=\"sqs\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    let status2 = server2.get("/api/status").json();
    assert_eq!(status2["events"]["sqs"]["given_up"], 0, "{status2}");
    assert!(status2["events"]["sqs"]["last_error"].as_str().unwrap().contains("dead-letter policy"), "{status2}");
    drop((server, server2));
    // In the ledger as a failure the runs retry on their backoff (not given up for good).
    use ics::state::StateStore;
    let ledger = ics::state::FileStateStore::new(state.path()).unwrap().load().unwrap().unwrap().ledger;
    assert_eq!(ledger[&good].kind, ics::state::LedgerKind::Failed, "{ledger:?}");
    assert!(ledger[&good].reason.contains("events.max_receives"), "{ledger:?}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn kept_and_given_up_events_are_in_the_ledger_and_neither_is_converted_again() {
    need_s3!();
    let b = bench(false);
    // A 126-byte PNG: its WebP is larger, so conversion.skip_if_larger keeps the source.
    let tiny = b.put("l/tiny.png", "png_graya.png");
    b.rt.block_on(b.storage.put("l/bad.png", bytes::Bytes::from_static(b"not a png"), "image/png")).unwrap();
    let bad = b.rt.block_on(b.storage.head("l/bad.png")).unwrap();
    let created = |key: &str, o: &ics::storage::ObjectInfo| {
        b.handle(EventKind::Created, key, o.etag.as_deref(), Some(o.last_modified))
    };
    assert_eq!(created("l/tiny.png", &tiny), Handled::Done(Done::Kept));
    assert!(matches!(created("l/bad.png", &bad), Handled::Done(Done::GivenUp { .. })));
    // In the state file before the answer.
    let state = ics::state::FileStateStore::new(b.state.path()).unwrap();
    use ics::state::StateStore;
    let ledger = state.load().unwrap().unwrap().ledger;
    assert_eq!(ledger["l/tiny.png"].kind, ics::state::LedgerKind::Kept, "{ledger:?}");
    assert_eq!(ledger["l/tiny.png"].etag, tiny.etag);
    assert_eq!(ledger["l/bad.png"].kind, ics::state::LedgerKind::GivenUp, "{ledger:?}");
    assert_eq!(ledger["l/bad.png"].code, "not_an_image");
    // Duplicate deliveries: decided by the ledger, nothing downloaded.
    request_counts(&b.bucket, true);
    assert_eq!(created("l/tiny.png", &tiny), Handled::Done(Done::Ledgered));
    assert_eq!(created("l/bad.png", &bad), Handled::Done(Done::Ledgered));
    let counts = request_counts(&b.bucket, true);
    assert_eq!((counts.get("GET"), counts.get("PUT")), (None, None), "{counts:?}");
    // A run afterwards, on the same state, leaves both alone.
    let out = binary_on_s3(&b.bucket, b.state.path()).args(["run-once", "--json"]).output().unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        (summary["converted"].as_u64(), summary["kept"].as_u64(), summary["failed"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{summary}"
    );
    assert_eq!(summary["skipped"].as_u64(), Some(2), "{summary}");
    assert_eq!(request_counts(&b.bucket, true).get("GET"), None, "nothing downloaded");
    // A new version of the kept source is converted again.
    std::thread::sleep(Duration::from_millis(1100));
    let v2 = b.put("l/tiny.png", "png_rgb.png");
    assert_eq!(created("l/tiny.png", &v2), Handled::Done(Done::Converted));
    let ledger = state.load().unwrap().unwrap().ledger;
    assert!(!ledger.contains_key("l/tiny.png"), "{ledger:?}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_journal_file_half_done_at_sigterm_resumes_where_it_stopped_and_its_backlog_is_shown() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = (new_bucket("evja"), new_bucket("evjb"));
    let open = |bucket: &str| ics::storage::Storage::open(&s3_config(bucket).storage, bucket).unwrap();
    let (sa, sb) = (open(&a), open(&b));
    let (ka, kb) = (key_of(1), key_of(2));
    rt.block_on(sa.put(&ka, fixture(NAMES[1]).into(), "image/jpeg")).unwrap();
    rt.block_on(sb.put(&kb, fixture(NAMES[2]).into(), "image/gif")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let env = [("ICS__STATE__DIR", state.path().to_string_lossy().into_owned()), ("R2_BUCKETS", format!("{a},{b}"))];
    // b answers in 3 s and a HEAD gives up after 1 s: b's record keeps failing.
    let yaml = "storage: {max_retries: 0, request_timeout_seconds: 1}\n\
                events: {webhook_enabled: true, webhook_token: minio-secret, max_receives: 100}\n";
    set_latency(&b, 3000);
    let mut server = Server::start_env(Some(&a), yaml, &env);
    let body = serde_json::json!({"Records": [created_record(&a, &ka), created_record(&b, &kb)]});
    let r = http(
        "POST",
        &format!("{}/api/events", server.base),
        Some(body.to_string().as_bytes()),
        &[("Authorization", "Bearer minio-secret"), ("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    wait_for("a's WebP", Duration::from_secs(30), || webps(&rt, &sa).contains(&webp_of(&ka)).then_some(()));
    // Two passes at least (one every 5 s): the file holds b's record alone, received once.
    std::thread::sleep(Duration::from_secs(11));
    let journal = state.path().join("events");
    let files: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let left = std::fs::read_to_string(&files[0]).unwrap();
    assert!(left.contains(&b) && !left.contains(&a), "only what is left: {left}");
    let status = server.get("/api/status").json();
    let webhook = &status["events"]["webhook"];
    assert_eq!(webhook["received"], 1, "each delivery counted once: {status}");
    assert_eq!((webhook["backlog"]["files"].as_u64(), webhook["backlog"]["records"].as_u64()), (Some(1), Some(1)));
    assert!(webhook["backlog"]["oldest_age_seconds"].as_f64().unwrap() >= 10.0, "{status}");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    for line in [
        "ics_events_journal_files 1",
        "ics_events_journal_records 1",
        "ics_events_received_total{source=\"webhook\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    // SIGTERM while b's record is in hand: a clean exit within the grace period.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let stopped = Instant::now();
    let code = wait_for("the exit", Duration::from_secs(30), || server.child.try_wait().unwrap());
    assert!(code.success(), "{code:?}");
    assert!(stopped.elapsed() < Duration::from_secs(30));
    // The next process resumes the file: b's record converted, a's not even looked at.
    set_latency(&b, 0);
    request_counts(&a, true);
    server = Server::start_env(Some(&a), yaml, &env);
    wait_for("b's WebP", Duration::from_secs(30), || webps(&rt, &sb).contains(&webp_of(&kb)).then_some(()));
    wait_for("the journal to empty", Duration::from_secs(15), || {
        let n = std::fs::read_dir(&journal)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count();
        (n == 0).then_some(())
    });
    assert_eq!(request_counts(&a, true).get("HEAD"), None, "a's record was done: not redone");
    assert_eq!(successful_puts(&a).get(&webp_of(&ka)), Some(&1));
    let status = server.get("/api/status").json();
    assert_eq!(status["events"]["webhook"]["backlog"]["files"], 0, "{status}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_journal_file_failing_every_pass_is_given_up_after_max_receives_passes() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = new_bucket("evjmax");
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let key = key_of(1);
    rt.block_on(storage.put(&key, fixture(NAMES[1]).into(), "image/jpeg")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let env = [("ICS__STATE__DIR", state.path().to_string_lossy().into_owned())];
    // Every HEAD times out: each pass (one every 5 s) fails transiently.
    let yaml = "storage: {max_retries: 0, request_timeout_seconds: 1}\n\
                events: {webhook_enabled: true, webhook_token: minio-secret, max_receives: 2}\n";
    let server = Server::start_env(Some(&bucket), yaml, &env);
    set_latency(&bucket, 3000);
    let body = serde_json::json!({"Records": [created_record(&bucket, &key)]});
    let r = http(
        "POST",
        &format!("{}/api/events", server.base),
        Some(body.to_string().as_bytes()),
        &[("Authorization", "Bearer minio-secret"), ("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let journal = state.path().join("events");
    // Two failing passes, then given up: before, it was handled every 5 s forever.
    let status = wait_for("the file to be given up", Duration::from_secs(30), || {
        let s = server.get("/api/status").json();
        (s["events"]["webhook"]["given_up"] == 1).then_some(s)
    });
    set_latency(&bucket, 0);
    let files = std::fs::read_dir(&journal).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count();
    assert_eq!(files, 0, "the file is gone");
    let webhook = &status["events"]["webhook"];
    assert_eq!((webhook["received"].as_u64(), webhook["converted"].as_u64()), (Some(1), Some(0)), "{status}");
    assert_eq!(webhook["backlog"]["files"], 0, "{status}");
    std::thread::sleep(Duration::from_secs(6));
    let said = server.log.lock().unwrap().iter().filter(|l| l.contains("Journal file given up")).count();
    assert_eq!(said, 1, "said once");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    let line = "ics_events_given_up_total{reason=\"max_receives\",source=\"webhook\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    drop(server);
    use ics::state::StateStore;
    let ledger = ics::state::FileStateStore::new(state.path()).unwrap().load().unwrap().unwrap().ledger;
    assert_eq!(ledger[&key].kind, ics::state::LedgerKind::Failed, "{ledger:?}");
    assert!(ledger[&key].reason.contains("max_receives"), "{ledger:?}");
}
