//! The Go server's own API tests (`api/handlers_test.go` of Zepelown/image-converting-server),
//! ported as black-box tests of ours: the real `serve` process, the S3-compatible test
//! server behind it, each test named after the Go test it comes from. Their fixtures
//! are the Go tests' own (a 1×1 PNG, a config with `formats: [png, jpeg]`, quality 80,
//! `max_size_mb: 1` and a preset `thumb` of 100×100), and so are their requests: the POSTs
//! carry no `Content-Type`, as Go's `httptest.NewRequest` sends them.
//!
//! Then the API answers that the Go handler gives and no Go test pins (issue 12): an
//! unsupported scheme or an address with no key is 400 `invalid_source_format`; an
//! explicit `width`/`height` wins over a preset (which must still exist); `0` keeps a side.

// Named after the Go tests, in their CamelCase.
#![allow(non_snake_case)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;

use bytes::Bytes;
use common::server::*;
use common::*;
use ics::storage::Storage;
use serde_json::{Value, json};

/// The Go tests' configuration.
const GO_TEST_CONFIG: &str = "conversion: {formats: [png, jpeg], quality: 80, max_size_mb: 1}\nresize: {presets: {thumb: {width: 100, height: 100}}}\n";

/// The Go tests' image: one red pixel, as PNG.
fn one_pixel_png(rgba: [u8; 4]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbaImage::from_pixel(1, 1, image::Rgba(rgba)).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A bucket holding `objects`, and a server on it with the Go tests' configuration.
fn go_server(prefix: &str, objects: &[(&str, Vec<u8>)], extra_yaml: &str) -> (String, Storage, Server) {
    let bucket = new_bucket(prefix);
    let storage = Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (key, data) in objects {
        rt.block_on(storage.put(key, Bytes::from(data.clone()), "application/octet-stream")).unwrap();
    }
    let server = Server::start(Some(&bucket), &format!("{GO_TEST_CONFIG}{extra_yaml}"));
    (bucket, storage, server)
}

/// POST with a JSON body and no `Content-Type`, as the Go tests send it.
fn post_untyped(server: &Server, path: &str, body: Value) -> Resp {
    http("POST", &format!("{}{path}", server.base), Some(body.to_string().as_bytes()), &[])
}

fn error_code(r: &Resp) -> (u16, String) {
    (r.status, r.json()["error"].as_str().unwrap_or_default().to_owned())
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn go_TestHandleHealth() {
    need_s3!();
    let (_, _, server) = go_server("go-health", &[], "");
    let r = server.get("/health");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn go_TestHandleIndex() {
    need_s3!();
    let (_, _, server) = go_server("go-index", &[], "");
    let r = server.get("/");
    assert_eq!((r.status, r.json()["message"].as_str()), (200, Some("Image Converting Server")));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn go_TestHandleConvert_R2() {
    need_s3!();
    let (bucket, storage, server) = go_server("go-r2", &[("test.png", one_pixel_png([255, 0, 0, 255]))], "");
    let r = post_untyped(&server, "/api/convert", json!({"source": format!("r2://{bucket}/test.png")}));
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["destination"], format!("r2://{bucket}/test.webp"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(storage.content_type("test.webp")).unwrap().as_deref(), Some("image/webp"));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn go_TestHandleConvert_InvalidSource() {
    need_s3!();
    let (_, _, server) = go_server("go-invalid", &[], "");
    let r = post_untyped(&server, "/api/convert", json!({"source": "invalid-source"}));
    assert_eq!(error_code(&r), (400, "invalid_source_format".into()));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn go_TestHandleConvert_GET() {
    need_s3!();
    let (bucket, _, server) = go_server("go-get", &[("test.png", one_pixel_png([255, 0, 0, 255]))], "");
    // A 1x1 image asked 50 wide: upscaled, as the Go server does.
    let r = server.get(&format!("/api/convert?source=r2://{bucket}/test.png&width=50"));
    let v = r.json();
    assert_eq!((r.status, v["width"].as_u64()), (200, Some(50)), "{v}");
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn go_TestHandleConvert_URL() {
    need_s3!();
    // A mock image server (on 127.0.0.2, trusted in the config as an operator would
    // trust an internal image host: loopback sources are refused otherwise).
    let png = one_pixel_png([0, 255, 0, 255]);
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let origin = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Some(Ok(mut s)) = listener.incoming().next() {
            let mut head = [0u8; 4096];
            let _ = s.read(&mut head);
            let h = format!("HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n", png.len());
            let _ = s.write_all(h.as_bytes()).and_then(|_| s.write_all(&png));
        }
    });
    let yaml = format!("api: {{allowed_url_hosts: ['127.0.0.2'], trusted_url_addresses: ['{origin}']}}\n");
    let (bucket, _, server) = go_server("go-url", &[], &yaml);
    let r = post_untyped(&server, "/api/convert", json!({"source": format!("http://{origin}/image.png")}));
    let v = r.json();
    assert_eq!(r.status, 200, "{v}");
    // Go writes `image.webp`; ours keeps URL sources apart under `remote/<host>/`
    // (MIGRATING.md), so a fetched file never overwrites a bucket object.
    assert_eq!(v["destination"], format!("r2://{bucket}/remote/127.0.0.2/image.webp"));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn unsupported_schemes_and_addresses_without_a_key_are_invalid_source_format() {
    need_s3!();
    let (bucket, _, server) = go_server("go-sources", &[], "");
    for source in
        ["ftp://host/x.png".to_owned(), format!("r2://{bucket}"), format!("r2://{bucket}/"), "s3://other".into()]
    {
        let r = post_untyped(&server, "/api/convert", json!({ "source": source }));
        assert_eq!(error_code(&r), (400, "invalid_source_format".into()), "{source}");
    }
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn an_explicit_size_wins_over_a_preset_and_zero_keeps_a_side() {
    need_s3!();
    let (_, _, server) = go_server("go-sizes", &[("cat.jpeg", fixture("jpeg_baseline.jpg"))], ""); // 640x427
    let size = |query: &str| {
        let r = server.get(&format!("/api/convert?source=cat.jpeg{query}"));
        let v = r.json();
        assert_eq!(r.status, 200, "{query}: {v}");
        (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
    };
    assert_eq!(size("&preset=thumb"), (100, 100));
    assert_eq!(size("&preset=thumb&width=320"), (320, 214));
    assert_eq!(size("&width=320&height=0"), (320, 214));
    assert_eq!(size("&width=0&height=0"), (640, 427));
    assert_eq!(size("&width=0&preset=thumb"), (100, 100));
    // The preset is still checked, as in Go.
    let r = server.get("/api/convert?source=cat.jpeg&preset=nope&width=50");
    assert_eq!(error_code(&r), (400, "invalid_preset".into()));
    for bad in ["-1", "abc", "16384"] {
        let r = server.get(&format!("/api/convert?source=cat.jpeg&width={bad}"));
        assert_eq!(error_code(&r), (400, "invalid_resize_params".into()), "{bad}");
    }
    // A JSON body is read without Content-Type, but another declared type is refused.
    let typed = http(
        "POST",
        &format!("{}/api/convert", server.base),
        Some(json!({"source": "cat.jpeg"}).to_string().as_bytes()),
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(error_code(&typed), (400, "invalid_request".into()));
}
