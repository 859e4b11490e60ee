//! The stand-in Cloudflare Queue (scripts/cf_queue_server.py) on 127.0.0.1: started
//! per test, killed on drop.

use super::server::http;

pub struct CfQueue {
    child: std::process::Child,
    pub base: String,
}

impl Drop for CfQueue {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CfQueue {
    pub fn start(token: &str) -> Self {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cf_queue_server.py");
        let mut child = std::process::Command::new("python3")
            .args([script, token])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the stand-in queue");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Self { child, base: format!("http://127.0.0.1:{}", line.trim()) }
    }

    /// Enqueues `body` as JSON text, or that text base64-encoded.
    pub fn send(&self, queue: &str, body: serde_json::Value, base64: bool) {
        let encoding = if base64 { "&encoding=base64" } else { "" };
        let r = http(
            "POST",
            &format!("{}/_test/send?queue={queue}{encoding}", self.base),
            Some(serde_json::json!({ "body": body }).to_string().as_bytes()),
            &[],
        );
        assert_eq!(r.status, 200);
    }

    pub fn stats(&self, queue: &str) -> serde_json::Value {
        http("GET", &format!("{}/_test/stats?queue={queue}", self.base), None, &[]).json()
    }
}
