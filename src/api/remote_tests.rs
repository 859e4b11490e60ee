//! The SSRF guard against a real HTTP listener on 127.0.0.2 (each test asserts what the
//! listener received, so a refusal is known to happen before any connection).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A listener answering `/img` with a body and `/to/<url>` with a 302 to `<url>`;
/// records the paths it was asked for. Its thread ends after 30 s.
struct Origin {
    port: u16,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.2:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let mut first = String::new();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let _ = reader.read_line(&mut first);
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).map_or(true, |n| n == 0) || l.trim().is_empty() {
                        break;
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_owned();
                seen.lock().unwrap().push(path.clone());
                let answer = match path.strip_prefix("/to/") {
                    Some(to) => format!(
                        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    None => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nimage".to_owned(),
                };
                let _ = s.write_all(answer.as_bytes());
            }
        });
        Self { port, paths }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

fn policy(hosts: &[&str], trusted: &[String]) -> RemotePolicy {
    RemotePolicy::new(
        hosts.iter().map(|h| h.to_string()).collect(),
        trusted.iter().map(|t| t.parse().unwrap()).collect(),
        Duration::from_secs(5),
        1 << 20,
    )
}

fn assert_refused(r: Result<Bytes, ApiError>, what: &str) -> String {
    let e = r.expect_err(what);
    assert_eq!((e.status.as_u16(), e.code), (400, "url_not_allowed"), "{what}: {e}");
    e.message
}

#[test]
fn hosts_match_exactly_or_by_wildcard() {
    let p = policy(&["images.example.com", "*.cdn.example"], &[]);
    assert!(p.rules.host_allowed("images.example.com"));
    assert!(p.rules.host_allowed("a.cdn.example"));
    assert!(!p.rules.host_allowed("cdn.example"));
    assert!(!p.rules.host_allowed("evil.com"));
}

#[tokio::test]
async fn ipv6_literals_embedding_loopback_are_refused_before_connecting() {
    let forms =
        ["[::127.0.0.2]", "[::ffff:0:7f00:2]", "[64:ff9b::7f00:2]", "[2002:7f00:2::1]", "[fec0::1]", "[100::1]"];
    let p = policy(&forms, &[]);
    for host in forms {
        let msg = assert_refused(p.fetch(&format!("http://{host}:8080/img")).await, host);
        assert!(msg.contains("non-public"), "{host}: {msg}");
    }
}

#[tokio::test]
async fn a_redirect_to_an_ipv6_form_of_loopback_is_refused() {
    let origin = Origin::start();
    let trusted = [format!("127.0.0.2:{}", origin.port)];
    let p = policy(&["127.0.0.2", "[::ffff:0:7f00:2]", "[::127.0.0.2]"], &trusted);
    assert_eq!(&p.fetch(&format!("http://127.0.0.2:{}/img", origin.port)).await.unwrap()[..], b"image");
    for target in ["http://[::ffff:0:7f00:2]", "http://[::127.0.0.2]"] {
        let url = format!("http://127.0.0.2:{}/to/{target}:{}/img", origin.port, origin.port);
        assert_refused(p.fetch(&url).await, target);
    }
    // The image once, then only the two redirects: nothing reached through them.
    assert_eq!(origin.paths().iter().filter(|p| *p == "/img").count(), 1, "{:?}", origin.paths());
}

#[tokio::test]
async fn a_bare_trusted_address_trusts_only_ports_80_and_443() {
    let origin = Origin::start();
    let url = format!("http://127.0.0.2:{}/img", origin.port);
    let bare = policy(&["127.0.0.2"], &["127.0.0.2:80".into(), "127.0.0.2:443".into()]);
    let msg = assert_refused(bare.fetch(&url).await, "a port the bare entry does not cover");
    assert!(msg.contains("IP:PORT"), "{msg}");
    assert!(origin.paths().is_empty());
    let with_port = policy(&["127.0.0.2"], &[format!("127.0.0.2:{}", origin.port)]);
    assert_eq!(&with_port.fetch(&url).await.unwrap()[..], b"image");
}

#[tokio::test]
async fn the_daemon_never_fetches_its_own_listening_address() {
    // The origin stands for the daemon's own API; trusting its address does not help.
    let origin = Origin::start();
    let own: SocketAddr = format!("127.0.0.2:{}", origin.port).parse().unwrap();
    let p = policy(&["127.0.0.2"], &[own.to_string()]);
    p.set_own_addresses(vec![own]);
    let msg = assert_refused(p.fetch(&format!("http://127.0.0.2:{}/api/runs", origin.port)).await, "own address");
    assert!(msg.contains("own API address"), "{msg}");
    // Listening on every address: a name resolving to this host is refused by the resolver.
    let p = policy(&["localhost"], &[format!("127.0.0.1:{}", origin.port), format!("[::1]:{}", origin.port)]);
    p.set_own_addresses(vec![SocketAddr::new(IpAddr::from([0, 0, 0, 0]), origin.port)]);
    let msg = assert_refused(p.fetch(&format!("http://localhost:{}/api/runs", origin.port)).await, "own, by name");
    assert!(msg.contains("own API address"), "{msg}");
    assert!(origin.paths().is_empty(), "{:?}", origin.paths());
}

#[tokio::test]
async fn names_resolving_to_internal_addresses_are_refused_by_the_resolver() {
    let origin = Origin::start();
    let trusted = [format!("127.0.0.2:{}", origin.port)];
    let p = policy(&["localhost", "127.0.0.2"], &trusted);
    let msg = assert_refused(p.fetch(&format!("http://localhost:{}/img", origin.port)).await, "localhost");
    assert!(msg.contains("non-public"), "{msg}");
    // The same name reached through a redirect from a trusted origin.
    let url = format!("http://127.0.0.2:{}/to/http://localhost:{}/img", origin.port, origin.port);
    assert_refused(p.fetch(&url).await, "redirect to localhost");
    assert_eq!(origin.paths().len(), 1, "only the redirect was served: {:?}", origin.paths());
}
