//! `backfill --to-queue` (issue 25, item 1): one listing puts a message per due source in
//! the queue, and any number of `serve` consumers convert them through the queue's own
//! visibility and retry rules — each WebP stored once, through a consumer's SIGKILL —
//! after which a second backfill finds nothing due. Through moto's SQS and the stand-in
//! Cloudflare Queue (scripts/cf_queue_server.py).

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::cf_queue::CfQueue;
use common::server::*;
use common::*;
use serde_json::Value;

/// Small images that each convert to a smaller WebP, cycled.
const NAMES: [&str; 4] = ["png_rgb.png", "jpeg_icc.jpg", "gif_static.gif", "png_palette.png"];

/// One test at a time: each starts daemons that compete for the two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `count` sources `bf/NNNN.ext` stored straight into the test server (no event, no
/// counted PUT); their keys.
fn fill(bucket: &str, count: usize) -> Vec<String> {
    let bodies: Vec<Vec<u8>> = NAMES.iter().map(|n| fixture(n)).collect();
    let objects: Vec<(String, usize)> = (0..count)
        .map(|i| {
            let ext = NAMES[i % NAMES.len()].rsplit('.').next().unwrap();
            // Spaces and '+' travel URL-encoded in an S3 record.
            let key = if i % 10 == 0 { format!("bf/a b+{i:04}.{ext}") } else { format!("bf/{i:04}.{ext}") };
            (key, i % NAMES.len())
        })
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    fill_direct(bucket, &objects, &refs);
    objects.into_iter().map(|(k, _)| k).collect()
}

/// A queue that no bucket's uploads reach: an idle bucket notifies it (its s3:TestEvent).
fn quiet_queue(bucket: &str, visibility: u64) -> (String, String) {
    let queue = format!("q-{bucket}");
    let idle = new_bucket("bfidle");
    let url = notify_queue(&idle, &queue, visibility);
    (queue, url)
}

fn backfill(bucket: &str, state: &std::path::Path, url: &str, args: &[&str]) -> (Output, Value) {
    let mut cmd = binary_on_s3(bucket, state);
    cmd.env("ICS__EVENTS__SQS__QUEUE_URL", url)
        .args(["backfill", "--to-queue", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    parse(cmd)
}

fn parse(mut cmd: Command) -> (Output, Value) {
    let out = cmd.output().unwrap();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "backfill printed no JSON (exit {:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, summary)
}

/// The WebPs the test server stored for `bucket`, with how often each was stored.
fn webp_puts(bucket: &str) -> BTreeMap<String, u64> {
    successful_puts(bucket).into_iter().filter(|(k, _)| k.ends_with(".webp")).collect()
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_backfill_of_1000_sources_through_sqs_is_converted_once_by_three_consumers_one_sigkilled() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bucket = new_bucket("backfill");
    let keys = fill(&bucket, 1000);
    let expected: Vec<String> = keys.iter().map(|k| ics::naming::webp_key(k)).collect();
    // Visibility 5 s (the consumers' least): a dead consumer's messages come back soon.
    let (queue, url) = quiet_queue(&bucket, 5);
    let yaml = format!(
        "events: {{sqs: {{queue_url: \"{url}\", wait_seconds: 1, visibility_timeout_seconds: 5}}}}\n\
         pipeline: {{workers: 1}}\n"
    );
    let mut consumers: Vec<Server> = (0..3).map(|_| Server::start(Some(&bucket), &yaml)).collect();
    let state = tempfile::tempdir().unwrap();

    let (out, s) = backfill(&bucket, state.path(), &url, &["--rate", "0"]);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_eq!((s["listed"].as_u64(), s["due"].as_u64(), s["sent"].as_u64()), (Some(1000), Some(1000), Some(1000)));
    assert_eq!((s["failed"].as_u64(), s["complete"].as_bool()), (Some(0), Some(true)), "{s}");
    assert!(s["cursor"].is_null() && !state.path().join(format!("backfill-{bucket}.cursor")).exists(), "{s}");

    // One consumer dies mid-way: the messages it held come back after their visibility
    // timeout and the others take them.
    let at_kill = wait_for("the consumers to start converting", Duration::from_secs(120), || {
        let n = webp_puts(&bucket).len();
        (n >= 100).then_some(n)
    });
    let killed = consumers.remove(0);
    unsafe { libc::kill(killed.child.id() as i32, libc::SIGKILL) };
    drop(killed);
    assert!(at_kill < 1000, "the SIGKILL came after the work was done ({at_kill} WebPs)");

    wait_for("every WebP", Duration::from_secs(300), || (webp_puts(&bucket).len() == expected.len()).then_some(()));
    wait_for("the queue to drain", Duration::from_secs(60), || (queue_depth(&queue) == (0, 0)).then_some(()));
    // Each stored exactly once: a message whose consumer died after its PUT comes back
    // to one that finds the WebP up to date (and events write conditionally), so nothing
    // is stored twice.
    let puts = webp_puts(&bucket);
    let keys_stored: Vec<&String> = puts.keys().collect();
    let mut want: Vec<&String> = expected.iter().collect();
    want.sort();
    assert_eq!(keys_stored, want);
    let twice: Vec<_> = puts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "WebPs stored more than once: {twice:?}");
    assert_eq!(successful_puts(&bucket).len(), expected.len(), "nothing but the WebPs was written");
    // The survivors shared the work.
    for c in &consumers {
        let status = c.get("/api/status").json();
        assert!(status["events"]["sqs"]["converted"].as_u64().unwrap() > 0, "{status}");
    }

    // A second backfill finds nothing due: the consumers made every WebP.
    let (out, s) = backfill(&bucket, state.path(), &url, &[]);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_eq!((s["due"].as_u64(), s["sent"].as_u64()), (Some(0), Some(0)), "{s}");
    assert_eq!(s["skipped"]["up_to_date"].as_u64(), Some(1000), "{s}");
    assert_eq!(queue_depth(&queue), (0, 0));
}

/// Events from the stand-in queue `cf`, as the consumers' YAML.
fn cf_yaml(cf: &CfQueue, token: &str) -> String {
    format!(
        "events: {{cloudflare_queue: {{account_id: acc1, queue_id: q2, api_token: {token}, \
         api: \"{}/client/v4\", visibility_timeout_seconds: 30, poll_interval_ms: 50}}}}\n",
        cf.base
    )
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_backfill_through_a_cloudflare_queue_is_converted_by_its_consumer_and_a_wrong_token_stops_it() {
    need_s3!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bucket = new_bucket("bfcf");
    let keys = fill(&bucket, 40);
    let cf = CfQueue::start("cf-token");
    let dir = tempfile::tempdir().unwrap();
    let run = |yaml: &str, args: &[&str]| {
        std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
        let mut cmd = binary_on_s3(&bucket, &dir.path().join("state"));
        cmd.args(["--config", dir.path().join("c.yaml").to_str().unwrap(), "backfill", "--to-queue", "--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        parse(cmd)
    };

    // A wrong token: the queue takes no call, so the backfill stops (exit 1) with every
    // message of its batch reported; the token is shown nowhere.
    let (out, s) = run(&cf_yaml(&cf, "wrong-token"), &["--rate", "0"]);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert_eq!((s["due"].as_u64(), s["sent"].as_u64(), s["failed"].as_u64()), (Some(40), Some(0), Some(40)));
    assert!(s["failures"][0]["error"].as_str().unwrap().contains("401"), "{s}");
    assert!(s["error"].as_str().unwrap().contains("stopped"), "{s}");
    let said = format!("{s}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains("wrong-token"), "the token is not shown: {said}");
    assert_eq!(cf.stats("q2")["sent"], 0);

    // Sent at 100 messages a second: one batch of 40; the consumer converts them all.
    let (out, s) = run(&cf_yaml(&cf, "cf-token"), &[]);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert_eq!((s["queue"].as_str(), s["queue_name"].as_str()), (Some("cloudflare_queue"), Some("acc1/q2")));
    assert_eq!((s["sent"].as_u64(), s["complete"].as_bool()), (Some(40), Some(true)), "{s}");
    assert_eq!(cf.stats("q2")["visible"], 40);
    let consumer = Server::start(Some(&bucket), &cf_yaml(&cf, "cf-token"));
    wait_for("every WebP", Duration::from_secs(120), || (webp_puts(&bucket).len() == keys.len()).then_some(()));
    let stats = wait_for("every message acked", Duration::from_secs(30), || {
        let s = cf.stats("q2");
        (s["visible"] == 0 && s["leased"] == 0).then_some(s)
    });
    assert_eq!((stats["acked"].as_u64(), stats["retried"].as_u64()), (Some(40), Some(0)), "{stats}");
    assert!(webp_puts(&bucket).values().all(|n| *n == 1));
    let status = consumer.get("/api/status").json();
    assert_eq!(status["events"]["cloudflare_queue"]["converted"], 40, "{status}");
    // Nothing is due any more.
    let (_, s) = run(&cf_yaml(&cf, "cf-token"), &["--dry-run"]);
    assert_eq!((s["due"].as_u64(), s["skipped"]["up_to_date"].as_u64()), (Some(0), Some(40)), "{s}");
}

#[test]
fn a_backfill_with_no_queue_an_unknown_bucket_or_no_to_queue_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("photos")).unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = binary();
        cmd.args(args).current_dir(dir.path()).env("ICS__STORAGE__LOCAL_ROOT", dir.path().join("photos"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["backfill"], &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--to-queue"), "{err}");
    let (code, err) = run(&["backfill", "--to-queue"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no queue to backfill into") && err.contains("events.sqs.queue_url"), "{err}");
    let (code, err) = run(&["backfill", "--to-queue", "--rate=-1"], &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--rate"), "{err}");
    let queue = [
        ("ICS__EVENTS__SQS__QUEUE_URL", "http://127.0.0.1:9/123456789012/q"),
        ("ICS__EVENTS__SQS__ACCESS_KEY", "AK"),
        ("ICS__EVENTS__SQS__SECRET_KEY", "SK"),
    ];
    let (code, err) = run(&["backfill", "--to-queue", "--bucket", "nope"], &queue);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("\"nope\" is not configured"), "{err}");
    let (code, err) = run(&["backfill", "--to-queue", "--queue", "cloudflare"], &queue);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("events.cloudflare_queue is not configured"), "{err}");
}
