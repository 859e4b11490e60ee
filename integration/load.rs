//! The API under load and slow clients, through the real `serve` process on 127.0.0.1:
//! `/api/status` polled at ≥ 500 requests/s (520 aimed at) while a batch runs (its throughput compared
//! with the same batch unpolled), and clients that trickle their headers or stall their
//! body, which are cut off by `server.timeout_seconds` while others are served.
//!
//! `ICS_LOAD_ROUNDS=N` repeats the polled/unpolled pair N times, alternating the order,
//! and prints medians (scripts/bench-status-load.sh); `ICS_LOAD_BATCH` sets the batch size.
//! Timings are printed, never asserted.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use serde_json::{Value, json};

/// Images per batch (`ICS_LOAD_BATCH`, default 160): two small photos, cycled (about
/// 3 s of work on 2 cores).
fn batch_size() -> usize {
    std::env::var("ICS_LOAD_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(160)
}
/// The poll rate aimed at, over `POLLERS` keep-alive connections.
const TARGET_RATE: f64 = 520.0;
const POLLERS: usize = 4;

/// A local bucket of `batch_size()` photos, served with cron off.
fn batch_server() -> (Server, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    for i in 0..batch_size() {
        let name = ["jpeg_baseline.jpg", "jpeg_progressive.jpg"][i % 2];
        std::fs::write(root.path().join(format!("p{i:03}.jpg")), fixture(name)).unwrap();
    }
    let yaml = format!("storage: {{backend: local, local_root: '{}'}}\n", root.path().display());
    (Server::start(None, &yaml), root)
}

/// What the pollers saw.
#[derive(Default)]
struct Polls {
    ok: usize,
    bad: Vec<String>,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

/// Polls `/api/status` on one keep-alive connection at `rate` per second until `stop`.
fn poll(addr: &str, rate: f64, stop: &AtomicBool) -> Polls {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let request = format!("GET /api/status HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (start, mut next) = (Instant::now(), Instant::now());
    let mut polls = Polls::default();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        stream.write_all(request.as_bytes()).unwrap();
        let (status, body) = read_response(&mut reader);
        polls.latencies_us.push(sent.elapsed().as_micros() as u64);
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if status == 200 && v["counts"].is_object() => polls.ok += 1,
            _ => polls.bad.push(format!("{status}: {}", String::from_utf8_lossy(&body))),
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    polls.elapsed = start.elapsed();
    polls
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, Vec<u8>) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, body)
}

/// CPU seconds used so far by process `pid` (user + system, from /proc).
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// One batch's figures.
struct Batch {
    duration_ms: u64,
    polls: Option<Polls>,
    /// CPU seconds of the server and of this test process (the pollers) during the batch.
    server_cpu: f64,
    client_cpu: f64,
}

/// Runs one batch, polled or not.
fn run_batch(polled: bool) -> Batch {
    let (server, _root) = batch_server();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..if polled { POLLERS } else { 0 })
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || poll(&addr, TARGET_RATE / POLLERS as f64, &stop))
        })
        .collect();
    let (server0, client0) = (process_cpu(server.child.id()), process_cpu(std::process::id()));
    let r = server.post("/api/runs", json!({}));
    assert_eq!(r.status, 202, "{:?}", r.json());
    let deadline = Instant::now() + Duration::from_secs(300);
    let last = loop {
        let s = server.get("/api/status").json();
        if !s["running"].as_bool().unwrap() && s["last_run"].is_object() {
            break s["last_run"].clone();
        }
        assert!(Instant::now() < deadline, "the batch did not end: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (server_cpu, client_cpu) =
        (process_cpu(server.child.id()) - server0, process_cpu(std::process::id()) - client0);
    stop.store(true, Ordering::Relaxed);
    let polls = pollers.into_iter().map(|p| p.join().unwrap()).reduce(|mut a, b| {
        a.ok += b.ok;
        a.bad.extend(b.bad);
        a.latencies_us.extend(b.latencies_us);
        a.elapsed = a.elapsed.max(b.elapsed);
        a
    });
    assert_eq!(last["converted"], batch_size(), "{last}");
    Batch { duration_ms: last["duration_ms"].as_u64().unwrap(), polls, server_cpu, client_cpu }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn status_polled_at_500_per_second_while_a_batch_runs() {
    let rounds: usize = std::env::var("ICS_LOAD_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let (mut quiet, mut loaded, mut rates, mut p99s, mut pairs) = (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for polled in order {
            let b = run_batch(polled);
            let images_per_s = batch_size() as f64 * 1000.0 / b.duration_ms as f64;
            let cpu = format!("CPU: server {:.2}s, pollers {:.2}s", b.server_cpu, b.client_cpu);
            let Some(mut p) = b.polls else {
                println!("round {round}: unpolled batch {images_per_s:.1} images/s, {cpu}");
                quiet.push(images_per_s);
                continue;
            };
            assert!(p.bad.is_empty(), "{} bad answers, e.g. {}", p.bad.len(), p.bad[0]);
            let rate = p.ok as f64 / p.elapsed.as_secs_f64();
            p.latencies_us.sort_unstable();
            let p99 = p.latencies_us[p.latencies_us.len() * 99 / 100] as f64 / 1000.0;
            println!(
                "round {round}: polled batch {images_per_s:.1} images/s, {rate:.0} polls/s, p99 {p99:.1} ms, {cpu}"
            );
            // The load is what the test is about: it must really reach 500 requests/s.
            assert!(rate >= 500.0, "only {rate:.0} polls/s");
            loaded.push(images_per_s);
            rates.push(rate);
            p99s.push(p99);
        }
        pairs.push(loaded.last().unwrap() / quiet.last().unwrap());
    }
    let (q, l) = (median(&mut quiet), median(&mut loaded));
    println!(
        "status load: {} images; unpolled {q:.1} images/s, polled {l:.1} images/s (ratio of medians {:.3}; \
         median of per-round ratios {:.3}, change {:+.1}%); {:.0} polls/s, p99 latency {:.1} ms; {rounds} round(s)",
        batch_size(),
        l / q,
        median(&mut pairs),
        (median(&mut pairs) - 1.0) * 100.0,
        median(&mut rates),
        median(&mut p99s),
    );
}

/// Sends `at_once`, then `trickled` a byte every 200 ms, and waits for the server to
/// answer or close; returns what it answered, or None if it was still open at `give_up`.
fn trickle(addr: &str, at_once: &[u8], trickled: &[u8], give_up: Instant) -> Option<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s.write_all(at_once).unwrap();
    let mut trickled = trickled.iter();
    let mut answer = Vec::new();
    while Instant::now() < give_up {
        if let Some(b) = trickled.next()
            && s.write_all(&[*b]).is_err()
        {
            return Some(String::from_utf8_lossy(&answer).into_owned());
        }
        let mut buf = [0; 4096];
        match s.read(&mut buf) {
            Ok(0) | Err(_) if !answer.is_empty() => return Some(String::from_utf8_lossy(&answer).into_owned()),
            Ok(0) => return Some(String::new()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(String::new()),
        }
    }
    None
}

#[test]
fn slow_clients_are_cut_off_and_others_are_served_meanwhile() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cat.jpg"), fixture("jpeg_baseline.jpg")).unwrap();
    let server = Server::start(
        None,
        &format!(
            "storage: {{backend: local, local_root: '{}'}}\nserver: {{timeout_seconds: 2}}\n",
            root.path().display()
        ),
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let give_up = Instant::now() + Duration::from_secs(60);
    // 40 clients trickle a request head that never ends; 40 send a whole head and
    // 10 of the 1000 body bytes it announces, then stall.
    let endless_head: (&[u8], &[u8]) = (b"GET /api/status HTTP/1.1\r\nHost: x\r\n", &[b'X'; 300]);
    let stalled_body: (&[u8], &[u8]) = (
        b"POST /api/convert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"source\":",
        b"",
    );
    let slow: Vec<_> = (0..80)
        .map(|i| {
            let addr = addr.clone();
            let (at_once, trickled) = if i % 2 == 0 { endless_head } else { stalled_body };
            std::thread::spawn(move || (i % 2 == 0, trickle(&addr, at_once, trickled, give_up)))
        })
        .collect();
    // Meanwhile the server answers everyone else.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.get("/health").status, 200);
    let r = server.post("/api/convert", json!({"source": "cat.jpg"}));
    assert_eq!(r.status, 200, "{:?}", r.json());
    for t in slow {
        let (head_only, answer) = t.join().unwrap();
        let answer = answer.expect("a slow client was never cut off");
        if head_only {
            // actix answers an unfinished head with 408 (or just closes).
            assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
        } else {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
        }
    }
    assert_eq!(server.get("/health").status, 200);
}
