//! The `serve` process on 127.0.0.1:0 as the API tests and load tests drive it, and a
//! minimal HTTP/1.1 client for it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::s3_env;

pub const BIN: &str = env!("CARGO_BIN_EXE_image-converting-server");

/// A running `serve` process and what it logged.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
    /// The thread collecting `log`; it ends at the child's end of stderr.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `serve` on port 0 against `bucket` (or a local root), with extra YAML (cron
    /// off unless it has a `cron:` of its own).
    pub fn start(bucket: Option<&str>, extra_yaml: &str) -> Self {
        Self::start_env(bucket, extra_yaml, &[])
    }

    /// [`Server::start`] with extra environment variables (set last: they win).
    pub fn start_env(bucket: Option<&str>, extra_yaml: &str, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c.yaml"),
            // Cron off unless the test sets its own `cron:`.
            if extra_yaml.contains("cron:") {
                extra_yaml.to_owned()
            } else {
                format!("cron: {{enabled: false, run_on_start: false}}\n{extra_yaml}")
            },
        )
        .unwrap();
        let mut cmd = super::binary();
        cmd.args(["--config", dir.path().join("c.yaml").to_str().unwrap(), "serve"])
            .current_dir(dir.path())
            .env("ICS__SERVER__PORT", "0")
            .env("ICS__STATE__DIR", dir.path().join("state"))
            .env("ICS__LOG__LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(bucket) = bucket {
            let s3 = s3_env();
            cmd.env("ICS__STORAGE__BACKEND", "r2")
                .env("R2_ENDPOINT", &s3.endpoint)
                .env("R2_BUCKET", bucket)
                .env("R2_ACCESS_KEY", &s3.access_key)
                .env("R2_SECRET_KEY", &s3.secret_key)
                .env("ICS__R2__REGION", &s3.region);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, base, log, reader) = spawn_collecting(cmd);
        Self { child, base, log, dir, reader: Some(reader) }
    }

    /// Waits for the process to exit and for its last log line to be collected (the
    /// collecting thread can lag behind the exit).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    pub fn get(&self, path: &str) -> Resp {
        http("GET", &format!("{}{path}", self.base), None, &[])
    }

    pub fn post(&self, path: &str, body: Value) -> Resp {
        http(
            "POST",
            &format!("{}{path}", self.base),
            Some(body.to_string().as_bytes()),
            &[("Content-Type", "application/json")],
        )
    }
}

/// Spawns `cmd` (a `serve`, with stderr piped), collects its log lines and waits (30 s at
/// most) for its "Listening on" line: the child, its base URL and its log.
pub fn spawn_serve(cmd: std::process::Command) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let (child, base, log, _) = spawn_collecting(cmd);
    (child, base, log)
}

/// [`spawn_serve`], with the thread collecting the log.
fn spawn_collecting(
    mut cmd: std::process::Command,
) -> (Child, String, Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let mut child = cmd.spawn().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("Listening on http://").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("serve did not start: {:#?}", log.lock().unwrap()));
    (child, format!("http://{addr}"), log, reader)
}

/// A response: status, lower-case headers, body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A minimal HTTP/1.1 client (Connection: close), enough for these tests.
pub fn http(method: &str, url: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Resp {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or(b"");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Resp { status, headers, body: raw[split + 4..].to_vec() }
}
