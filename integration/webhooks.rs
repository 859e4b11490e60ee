//! Webhooks, black-box: the Go server's own webhook tests (`webhook/store_test.go`,
//! `webhook/notify_test.go`) ported and named after them, its pending-file format read
//! and written, redirects refused, retries counted as Go counts them, one pending
//! directory shared by two processes, and `run-once` announcing its run and leaving an
//! undelivered one to the next process.

// Ported Go tests keep their Go names.
#![allow(non_snake_case)]

use crate::common;

use std::collections::HashMap;
use std::path::Path;

use common::http::TestHttp;
use common::*;
use ics::config::{Config, WebhookConfig};
use ics::webhook::{DeliveryError, Pending, RetryReport, Webhook};
use serde_json::{Value, json};

/// The `webhook:` section as a file would give it.
fn webhook_config(url: Option<&str>, pending: &Path, max_retries: u32) -> WebhookConfig {
    let dir = tempfile::tempdir().unwrap();
    let url = url.map(|u| format!("url: '{u}', ")).unwrap_or_default();
    let yaml = format!(
        "webhook: {{{url}secret: hook-secret, max_retries: {max_retries}, pending_dir: '{}'}}\n",
        pending.display()
    );
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    Config::load_with_env(Some(&dir.path().join("c.yaml")), &[]).unwrap().webhook
}

fn webhook(url: &str, pending: &Path, max_retries: u32) -> Webhook {
    Webhook::from_config(&webhook_config(Some(url), pending, max_retries)).unwrap().expect("a webhook")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The `*.json` files directly in `dir`, by name.
fn json_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| n.ends_with(".json"));
    names.sort();
    names
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Go's name: `20060102-150405-` and eight hex digits, `.json`.
fn is_go_name(name: &str) -> bool {
    let b = name.as_bytes();
    name.len() == 29
        && name.ends_with(".json")
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'-'
        && b[16..24].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn go_payload() -> Value {
    json!({
        "event": "batch.completed",
        "processed_count": 2,
        "failed_count": 0,
        "images": [{"source": "a.jpg", "destination": "a.webp"}, {"source": "b.png", "destination": "b.webp"}],
    })
}

#[test]
fn go_TestStorePending() {
    let dir = tempfile::tempdir().unwrap();
    let url = "https://example.com/webhook";
    Pending::new(url, go_payload()).write(dir.path()).unwrap();
    let names = json_files(dir.path());
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(is_go_name(&names[0]), "{}", names[0]);
    // Read as Go's PendingRecord reads it.
    let rec = read_json(&dir.path().join(&names[0]));
    assert_eq!(rec["url"], url);
    assert_eq!(rec["retry_count"], 0);
    assert_eq!(rec["payload"]["processed_count"], 2);
    assert_eq!(rec["payload"]["images"].as_array().unwrap().len(), 2);
    let created = rec["created_at"].as_str().expect("created_at is a time string");
    let created = chrono::DateTime::parse_from_rfc3339(created).expect("RFC 3339, as Go's time.Time reads it");
    assert!(created.timestamp() > 0, "created_at is not zero");
    // Nothing else beside it: no temporary file left.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn go_TestRunRetryWorker_SuccessDeletesFile() {
    let hook = TestHttp::start("127.0.0.1:0", vec![200], HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    // A record exactly as the Go server writes it (json.MarshalIndent, time.Time).
    let go_record = r#"{
  "url": "http://old-receiver.example/hook",
  "payload": {
    "event": "batch.completed",
    "processed_count": 1,
    "failed_count": 0,
    "images": []
  },
  "retry_count": 0,
  "created_at": "2006-01-02T12:00:00.123456789+09:00"
}"#;
    let path = dir.path().join("20060102-120000-abc12345.json");
    std::fs::write(&path, go_record).unwrap();
    let report = rt().block_on(webhook(&format!("http://{}/hook", hook.addr), dir.path(), 3).retry_pending());
    assert_eq!(report, RetryReport { delivered: 1, ..Default::default() });
    assert!(!path.exists(), "expected pending file to be deleted after success");
    let requests = hook.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (_, headers, body) = &requests[0];
    let sent: Value = serde_json::from_slice(body).unwrap();
    let go: Value = serde_json::from_str(go_record).unwrap();
    assert_eq!(sent, go["payload"], "Go's payload is sent as it is");
    assert_eq!(headers["x-webhook-event"], "batch.completed");
    assert_eq!(headers["x-webhook-delivery"], "20060102-120000-abc12345");
}

#[test]
fn a_go_record_of_an_empty_batch_is_delivered_as_go_wrote_it() {
    // Go marshals a run that converted nothing with `"images": null`.
    let hook = TestHttp::start("127.0.0.1:0", vec![200], HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    let payload = json!({"event": "batch.completed", "processed_count": 0, "failed_count": 3, "images": null});
    let record = json!({"url": "", "payload": payload, "retry_count": 4, "created_at": "0001-01-01T00:00:00Z"});
    std::fs::write(dir.path().join("20250101-000000-ffffffff.json"), record.to_string()).unwrap();
    let report = rt().block_on(webhook(&format!("http://{}/hook", hook.addr), dir.path(), 5).retry_pending());
    assert_eq!(report.delivered, 1, "{report:?}");
    let requests = hook.requests.lock().unwrap().clone();
    assert_eq!(serde_json::from_slice::<Value>(&requests[0].2).unwrap(), payload);
}

#[test]
fn records_of_our_earlier_pending_format_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("20261120T101010.123456Z-0badcafe.json");
    let old = json!({"id": "20261120T101010.123456Z-0badcafe", "attempts": 2, "payload": go_payload()});
    std::fs::write(&path, old.to_string()).unwrap();
    let p = Pending::read(&path).unwrap();
    assert_eq!((p.id.as_str(), p.record.retry_count), ("20261120T101010.123456Z-0badcafe", 2));
    assert_eq!(p.record.payload, go_payload());
}

#[test]
fn go_TestSendBulk_EmptyURL_NoRequest() {
    let dir = tempfile::tempdir().unwrap();
    let pending = dir.path().join("pending");
    assert!(Webhook::from_config(&webhook_config(None, &pending, 3)).unwrap().is_none());
    assert!(!pending.exists(), "nothing sent, nothing queued");
}

#[test]
fn webhook_redirect_is_a_failed_delivery_and_is_not_followed() {
    // The attack: the receiver redirects the signed body to an internal admin endpoint.
    let admin = TestHttp::start("127.0.0.1:0", vec![200], HashMap::new());
    let mut routes = HashMap::new();
    let to = format!("http://{}/internal-admin?token=abc", admin.addr);
    routes.insert("/hook".to_owned(), (307, vec![("Location".to_owned(), to)], Vec::new()));
    let hook = TestHttp::start("127.0.0.1:0", vec![200], routes);
    let dir = tempfile::tempdir().unwrap();
    let w = webhook(&format!("http://{}/hook", hook.addr), dir.path(), 3);
    let err = rt().block_on(w.deliver(go_payload())).unwrap_err();
    assert!(matches!(&err, DeliveryError::Redirect { status: 307, .. }), "{err:?}");
    let reason = err.to_string();
    assert!(reason.contains("redirect") && !reason.contains("token=abc"), "{reason}");
    assert_eq!(hook.requests.lock().unwrap().len(), 1);
    assert!(admin.requests.lock().unwrap().is_empty(), "the redirect was followed");
    // Queued for retry, with its reason.
    let names = json_files(dir.path());
    assert_eq!(names.len(), 1);
    let rec = read_json(&dir.path().join(&names[0]));
    assert_eq!(rec["retry_count"], 0);
    assert!(rec["last_error"].as_str().unwrap().contains("redirect"), "{rec}");
}

#[test]
fn pending_retries_count_up_as_go_counts_and_give_up_at_max_retries() {
    let hook = TestHttp::start("127.0.0.1:0", vec![503], HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    let w = webhook(&format!("http://{}/hook", hook.addr), dir.path(), 2);
    let rt = rt();
    assert!(matches!(rt.block_on(w.deliver(go_payload())), Err(DeliveryError::Status(503))));
    let name = json_files(dir.path()).pop().expect("queued");
    assert_eq!(rt.block_on(w.retry_pending()), RetryReport { failed: 1, ..Default::default() });
    assert_eq!(read_json(&dir.path().join(&name))["retry_count"], 1);
    assert_eq!(rt.block_on(w.retry_pending()), RetryReport { given_up: 1, ..Default::default() });
    assert!(json_files(dir.path()).is_empty());
    let dead = read_json(&dir.path().join("dead").join(&name));
    assert_eq!(dead["retry_count"], 2);
    assert_eq!(dead["payload"], go_payload());
    // 1 attempt + max_retries retries, all with one delivery id.
    let requests = hook.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    let ids: Vec<&String> = requests.iter().map(|(_, h, _)| &h["x-webhook-delivery"]).collect();
    assert!(ids.iter().all(|id| **id == name.trim_end_matches(".json")), "{ids:?}");
    assert_eq!(rt.block_on(w.retry_pending()), RetryReport::default(), "dead letters are not retried");
}

#[test]
fn temporary_and_unreadable_pending_files_are_left_in_place() {
    let hook = TestHttp::start("127.0.0.1:0", vec![200], HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("20240101-000000-00000000.json.tmp"), b"{half").unwrap();
    std::fs::write(dir.path().join("20240101-000000-11111111.json"), b"not json").unwrap();
    std::fs::write(dir.path().join("20240101-000000-22222222.json"), br#"{"url": "", "payload": 7}"#).unwrap();
    let w = webhook(&format!("http://{}/hook", hook.addr), dir.path(), 3);
    assert_eq!(rt().block_on(w.retry_pending()), RetryReport { unreadable: 2, ..Default::default() });
    assert!(hook.requests.lock().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn two_processes_sharing_the_pending_dir_deliver_a_record_once() {
    let hook = TestHttp::start("127.0.0.1:0", vec![200], HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    Pending::new("http://x/hook", go_payload()).write(dir.path()).unwrap();
    let url = format!("http://{}/hook", hook.addr);
    let (a, b) = (webhook(&url, dir.path(), 3), webhook(&url, dir.path(), 3));
    let (ra, rb) = rt().block_on(async { tokio::join!(a.retry_pending(), b.retry_pending()) });
    assert_eq!(ra.delivered + rb.delivered, 1, "{ra:?} {rb:?}");
    assert_eq!(hook.requests.lock().unwrap().len(), 1);
    assert!(json_files(dir.path()).is_empty());
}

/// `run-once` in `dir` (a local bucket, the webhook at `hook`); its exit code.
fn run_once(dir: &Path, hook: &str) -> i32 {
    let yaml = format!(
        "storage: {{backend: local, local_root: '{0}/bucket'}}\nstate: {{dir: '{0}/state'}}\ncron: {{enabled: false}}\nwebhook: {{url: 'http://{hook}/hook', pending_dir: '{0}/pending'}}\n",
        dir.display()
    );
    std::fs::write(dir.join("c.yaml"), yaml).unwrap();
    let out = binary()
        .current_dir(dir)
        .args(["--config", dir.join("c.yaml").to_str().unwrap(), "run-once"])
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "{out:?}");
    out.status.code().unwrap()
}

#[test]
fn run_once_sends_batch_completed_and_the_next_process_delivers_what_it_left_pending() {
    // The receiver is down for the first process, up for the second.
    let hook = TestHttp::start("127.0.0.1:0", vec![500, 200], HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bucket/photos")).unwrap();
    std::fs::write(dir.path().join("bucket/photos/a.png"), fixture("png_rgba16.png")).unwrap();
    assert_eq!(run_once(dir.path(), &hook.addr), 0);
    let first = hook.requests.lock().unwrap().clone();
    assert_eq!(first.len(), 1, "run-once announced its run");
    let sent: Value = serde_json::from_slice(&first[0].2).unwrap();
    assert_eq!(sent["event"], "batch.completed");
    assert_eq!(sent["processed_count"], 1);
    assert_eq!(sent["images"][0]["source"], "photos/a.png");
    assert_eq!(sent["images"][0]["destination"], "photos/a.webp");
    let pending = dir.path().join("pending");
    let left = json_files(&pending);
    assert_eq!(left.len(), 1, "the failed delivery is left pending");
    assert!(is_go_name(&left[0]));
    assert_eq!(read_json(&pending.join(&left[0]))["payload"], sent);

    std::fs::write(dir.path().join("bucket/photos/b.png"), fixture("png_rgba16.png")).unwrap();
    assert_eq!(run_once(dir.path(), &hook.addr), 0);
    let all = hook.requests.lock().unwrap().clone();
    assert_eq!(all.len(), 3, "the left delivery, then this run's");
    assert_eq!(all[1].2, first[0].2, "the pending delivery is sent as it was");
    assert_eq!(all[1].1["x-webhook-delivery"], first[0].1["x-webhook-delivery"]);
    let second: Value = serde_json::from_slice(&all[2].2).unwrap();
    assert_eq!(second["images"][0]["source"], "photos/b.png");
    assert!(json_files(&pending).is_empty(), "{:?}", json_files(&pending));
}
