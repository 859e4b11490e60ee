//! A one-thread HTTP listener for the tests: records every request and answers with
//! canned statuses, files and redirects (a webhook receiver, an image origin).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A recorded request: path, lower-case headers, body.
pub type Recorded = (String, HashMap<String, String>, Vec<u8>);
/// A canned answer: status, extra headers, body.
pub type Route = (u16, Vec<(String, String)>, Vec<u8>);

/// A one-thread HTTP listener that records requests and answers with `statuses` in turn
/// (the last one repeats), or serves files and redirects by path.
pub struct TestHttp {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestHttp {
    pub fn start(bind: &str, statuses: Vec<u16>, routes: HashMap<String, Route>) -> Self {
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let mut headers = HashMap::new();
                loop {
                    let mut l = String::new();
                    reader.read_line(&mut l).unwrap();
                    if l.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                log.lock().unwrap().push((path.clone(), headers, body));
                let (status, extra, content) = match routes.get(&path) {
                    Some(r) => r.clone(),
                    None => (statuses[n.min(statuses.len() - 1)], vec![], b"{}".to_vec()),
                };
                n += 1;
                let mut head =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", content.len());
                for (k, v) in extra {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&content);
            }
        });
        Self { addr, requests }
    }
}
