//! No self-harm (issue 23, item 4): settings and requests by which the daemon could be
//! turned against itself or its bucket, one test per attack, each named after it.
//!
//! - a webhook aimed at the daemon's own API (its `/api/runs` started a run at the end of
//!   every run: 18,058 runs in 30 s) is refused at start-up, by `serve` and `check-config`;
//! - `/api/events` answers a wrong token at once, without waiting for the body;
//! - `/ready` is not ready when the bucket does not exist (a 404 is not "reachable"), and
//!   a run that failed as a whole shows in `/api/status` and `/metrics`.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::{Server, http as request};
use common::*;
use serde_json::json;

/// A port nothing listens on now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the binary with the config `yaml` and `args`; its exit code and stderr.
fn run_with(yaml: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let mut cmd = binary();
    cmd.arg("--config").arg(dir.path().join("c.yaml")).args(args).current_dir(dir.path());
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // A serve that is not refused would run until killed: give it 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_webhook_aimed_at_the_daemons_own_api_is_refused_by_serve_and_check_config() {
    let port = free_port();
    // Every spelling of this host at the API's port; the path is a secret (never shown).
    for host in ["127.0.0.1", "localhost", "0.0.0.0", "[::ffff:127.0.0.1]"] {
        let yaml = format!(
            "server: {{host: 127.0.0.1, port: {port}}}\ncron: {{enabled: false}}\n\
             webhook: {{url: \"http://{host}:{port}/api/runs?token=hook-secret\"}}\n"
        );
        for args in [&["serve"][..], &["check-config"][..]] {
            let (code, said) = run_with(&yaml, args);
            assert_eq!(code, Some(1), "{host} {args:?}: {said}");
            assert!(said.contains("webhook.url") && said.contains("this daemon's own API"), "{host} {args:?}: {said}");
            assert!(!said.contains("hook-secret") && !said.contains("/api/runs"), "{host} {args:?}: {said}");
        }
    }
    // The API on every address: any address of this host reaches it.
    let yaml = format!(
        "server: {{host: 0.0.0.0, port: {port}}}\napi: {{token: t0ken}}\ncron: {{enabled: false}}\n\
         webhook: {{url: \"http://127.0.0.1:{port}/api/runs\"}}\n"
    );
    let (code, said) = run_with(&yaml, &["check-config"]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("webhook.url"), "{said}");
    // Another port of this host is another server: accepted.
    let yaml = format!(
        "server: {{host: 127.0.0.1, port: {port}}}\ncron: {{enabled: false}}\n\
         webhook: {{url: \"http://127.0.0.1:{}/hook\"}}\n",
        free_port()
    );
    let (code, said) = run_with(&yaml, &["check-config"]);
    assert_eq!(code, Some(0), "{said}");
}

/// Sends the head of a POST to `/api/events` announcing a body it never sends; the
/// status line of the answer, or why there was none within `wait`.
fn events_head_only(base: &str, headers: &str, wait: Duration) -> Result<String, String> {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    write!(s, "POST /api/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}\r\n").unwrap();
    s.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e) => return Err(format!("no answer within {wait:?}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().map(str::to_owned).ok_or_else(|| "the connection closed without an answer".into())
}

#[test]
fn api_events_answers_a_wrong_token_401_before_reading_the_body() {
    let yaml = "events: {webhook_enabled: true, webhook_token: minio-secret}\napi: {token: api-secret}\n\
                server: {timeout_seconds: 2}\n";
    let server = Server::start(None, yaml);
    let wait = Duration::from_secs(5);
    // A body announced and never sent, by length and chunked; no token, a wrong one.
    for headers in [
        "Content-Length: 60000\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Authorization: Bearer wrong\r\nContent-Length: 60000\r\n",
        "Authorization: Bearer wrong\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let status = events_head_only(&server.base, headers, wait).unwrap_or_else(|e| panic!("{headers:?}: {e}"));
        assert!(status.starts_with("HTTP/1.1 401"), "{headers:?}: {status}");
    }
    // The right token still posts events (the body is read then).
    let body = json!({"Records": []}).to_string();
    let url = format!("{}/api/events", server.base);
    let r = request("POST", &url, Some(body.as_bytes()), &[("Authorization", "Bearer minio-secret")]);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    // With the token, a body is bounded in size (api.max_body_kb: 64, refused from its
    // Content-Length) and in time (server.timeout_seconds).
    let over = "Authorization: Bearer minio-secret\r\nContent-Length: 70000\r\n";
    let status = events_head_only(&server.base, over, wait).unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let withheld = "Authorization: Bearer minio-secret\r\nContent-Length: 60000\r\n";
    let status = events_head_only(&server.base, withheld, Duration::from_secs(15)).unwrap();
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
}

/// Polls `/api/status` until the last run has ended; its `last_run`.
fn last_run(server: &Server) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = server.get("/api/status").json();
        if !s["running"].as_bool().unwrap_or(true) && !s["last_run"].is_null() {
            return s["last_run"].clone();
        }
        assert!(Instant::now() < deadline, "the run did not end: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/api/status` and `/metrics` of a run that failed as a whole in `bucket`.
fn assert_failed_run_shows(server: &Server, bucket: &str) {
    let r = server.post("/api/runs", json!({}));
    assert_eq!(r.status, 202, "{}", r.json());
    let run = last_run(server);
    assert_eq!(run["complete"], false, "{run}");
    assert!(run["error"].as_str().is_some_and(|e| e.contains("the bucket does not exist")), "{run}");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    assert!(metrics.contains(&format!("ics_runs_failed_total{{bucket=\"{bucket}\"}} 1\n")), "{metrics}");
    assert!(metrics.contains(&format!("ics_last_run_failed{{bucket=\"{bucket}\"}} 1\n")), "{metrics}");
    assert!(metrics.contains(&format!("ics_runs_completed_total{{bucket=\"{bucket}\"}} 0\n")), "{metrics}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn ready_answers_503_for_a_bucket_that_does_not_exist_and_its_failed_run_shows() {
    need_s3!();
    let bucket = format!("no-such-bucket-{}", std::process::id());
    let server = Server::start(Some(&bucket), "");
    assert_eq!(server.get("/health").status, 200, "alive all the same");
    let r = server.get("/ready");
    assert_eq!(r.status, 503, "{}", r.json());
    assert_eq!(r.json()["status"], "not_ready");
    assert_eq!(r.json()["reason"], format!("bucket {bucket} does not exist"), "{}", r.json());
    assert_failed_run_shows(&server, &bucket);
    // A bucket that exists is ready (the probe's prefix holds nothing).
    let server = Server::start(Some(&new_bucket("ready-ok")), "");
    assert_eq!(server.get("/ready").status, 200);
}

#[test]
fn ready_answers_503_when_the_local_buckets_directory_is_gone_and_its_failed_run_shows() {
    let root = tempfile::tempdir().unwrap();
    let bucket_dir = root.path().join("photos");
    std::fs::create_dir(&bucket_dir).unwrap();
    std::fs::write(bucket_dir.join("a.png"), fixture("png_rgb.png")).unwrap();
    let server = Server::start(None, &format!("storage: {{backend: local, local_root: '{}'}}\n", bucket_dir.display()));
    assert_eq!(server.get("/ready").status, 200);
    // Unmounted, removed: gone. Not an empty bucket whose ledger a run could prune.
    std::fs::remove_dir_all(&bucket_dir).unwrap();
    // The cached answer is at most 10 s fresh.
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = server.get("/ready");
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(r.status, 503, "{}", r.json());
    assert_eq!(r.json()["reason"], "bucket photos does not exist", "{}", r.json());
    assert!(!r.json().to_string().contains(&root.path().display().to_string()), "no path: {}", r.json());
    assert_failed_run_shows(&server, "photos");
}
