//! The OpenAPI document against the real router and the real answers: the document
//! lists exactly [`ROUTES`], the router serves no path outside it (walked from actix's
//! resource map), and every route called with good and bad input answers a status its
//! operation documents, with a JSON body valid against the documented schema.
//!
//! In-process (`init_service` on [`configure`], the real actors, an in-memory bucket):
//! it takes a second.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::{App, test};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::actors::{Pipeline, StateBackend};
use crate::api::{AppState, ROUTES, configure};
use crate::config::{Config, StorageConfig};
use crate::secret::Secret;
use crate::storage::Storage;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

fn doc() -> Value {
    serde_json::from_str(super::document()).expect("the document is JSON")
}

/// (method, path) of every operation the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// The daemon's state on an in-memory bucket, with the real pipeline behind it.
fn state(dir: &std::path::Path, token: &str) -> AppState {
    let mut config = Config::validate(Default::default()).unwrap();
    config.storage = StorageConfig::Memory { bucket: "bucket".into() };
    config.state.dir = dir.join("state");
    config.api.token = Secret::new(token);
    config.api.max_body_bytes = 4096;
    let config = Arc::new(config);
    let storage = Storage::open(&config.storage, "bucket").unwrap();
    let backend = StateBackend::file(&config.state.dir).unwrap();
    let pipeline = Pipeline::start_manual(config.clone(), storage.clone(), backend);
    AppState::new(config, storage, pipeline, Default::default(), None)
}

/// Validates `value` against `schema`, whose `$ref`s point into the document's components.
fn validate(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{what}: bad schema: {e}"));
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: {value} does not match the document: {errors:?}");
}

/// Checks one answer: its status is documented for the operation, and a JSON body
/// matches the documented schema.
fn check(doc: &Value, method: &str, path: &str, status: u16, content_type: &str, body: &[u8]) {
    let what = format!("{method} {path} -> {status}");
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{what}: the operation is not documented");
    let documented = &op["responses"][status.to_string()];
    assert!(documented.is_object(), "{what}: status not documented; body {}", String::from_utf8_lossy(body));
    let content = documented["content"].as_object().unwrap_or_else(|| panic!("{what}: no content documented"));
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let entry = content.get(media).unwrap_or_else(|| panic!("{what}: {media} not documented ({content:?})"));
    if media == "application/json" {
        let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        validate(doc, &entry["schema"], &value, &what);
    }
}

/// An error body: the documented `ErrorBody` with this code.
fn check_error(doc: &Value, body: &[u8], code: &str, what: &str) {
    let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    validate(doc, &json!({"$ref": "#/components/schemas/ErrorBody"}), &value, what);
    assert_eq!(value["error"], code, "{what}: {value}");
}

/// The full paths of actix's resource map, from its `{:#?}` (the map has no other way to
/// list itself): each `ResourceMap` node's first pattern, prefixed by its ancestors'.
fn registered_paths(debug: &str) -> BTreeSet<String> {
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut paths = BTreeSet::new();
    let mut lines = debug.lines();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.ends_with("ResourceMap {") {
            stack.retain(|(i, _)| *i < indent);
            stack.push((indent, None));
        } else if text.starts_with("patterns: Single(") {
            let quoted = if text.ends_with('(') { lines.next().unwrap_or_default().trim() } else { text };
            let pattern = quoted.split('"').nth(1).unwrap_or_default().to_owned();
            if let Some((_, p @ None)) = stack.last_mut() {
                *p = Some(pattern);
            }
        } else if text == "nodes: None," {
            paths.insert(stack.iter().filter_map(|(_, p)| p.as_deref()).collect::<String>());
        }
    }
    paths
}

/// One call: method, path, query, body (content type, bytes), status, error code.
type Case = (&'static str, &'static str, &'static str, Option<(&'static str, Vec<u8>)>, u16, &'static str);

/// Calls the service; gives status, content type, `Allow` and body.
macro_rules! call {
    ($app:expr, $req:expr) => {{
        let resp = test::call_service(&$app, $req.to_request()).await;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let (status, ct, allow) = (resp.status().as_u16(), header("content-type"), header("allow"));
        (status, ct, allow, test::read_body(resp).await)
    }};
}

fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(4, 3, image::Rgb([200, 10, 10])).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[actix_web::test]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_registered_routes() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let listed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(operations(&doc), listed, "the document and api::ROUTES differ");
}

#[actix_web::test]
async fn every_route_answers_as_the_document_says() {
    let doc = doc();
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), "");
    state.storage.put("photos/cat.png", Bytes::from(png()), "image/png").await.unwrap();
    state.storage.put("photos/broken.jpg", Bytes::from_static(b"not a jpeg"), "image/jpeg").await.unwrap();
    let rmap = Rc::new(RefCell::new(String::new()));
    let seen = rmap.clone();
    let app = test::init_service(
        App::new()
            .wrap_fn(move |req, srv| {
                *seen.borrow_mut() = format!("{:#?}", req.request().resource_map());
                srv.call(req)
            })
            .configure(|cfg| configure(cfg, state.clone())),
    )
    .await;

    // Good and bad input of each operation: (method, path, query, body, status, error code).
    let json_body = |v: Value| Some(("application/json", v.to_string().into_bytes()));
    let cases: Vec<Case> = vec![
        ("GET", "/", "", None, 200, ""),
        ("GET", "/health", "", None, 200, ""),
        ("GET", "/ready", "", None, 200, ""),
        ("GET", "/metrics", "", None, 200, ""),
        ("GET", "/api/openapi.json", "", None, 200, ""),
        ("GET", "/api/status", "", None, 200, ""),
        ("POST", "/api/convert", "", json_body(json!({"source": "photos/cat.png"})), 200, ""),
        ("POST", "/api/convert", "", json_body(json!({"source": "r2://bucket/photos/cat.png"})), 200, ""),
        ("GET", "/api/convert", "?source=photos/cat.png&width=2", None, 200, ""),
        ("GET", "/api/convert", "", None, 400, "missing_source"),
        ("POST", "/api/convert", "", json_body(json!({})), 400, "missing_source"),
        ("GET", "/api/convert", "?source=photos/cat.png&width=abc", None, 400, "invalid_resize_params"),
        ("GET", "/api/convert", "?source=photos/cat.png&preset=nope", None, 400, "invalid_preset"),
        ("GET", "/api/convert", "?source=photos/notes.txt", None, 400, "invalid_source_format"),
        ("GET", "/api/convert", "?source=r2://other/photos/cat.png", None, 400, "unknown_bucket"),
        ("GET", "/api/convert", "?source=https://example.com/a.png", None, 400, "url_not_allowed"),
        ("POST", "/api/convert", "", Some(("application/json", b"{".to_vec())), 400, "invalid_request"),
        ("POST", "/api/convert", "", Some(("text/plain", b"{}".to_vec())), 400, "invalid_request"),
        ("GET", "/api/convert", "?source=photos/missing.png", None, 404, "image_not_found"),
        ("POST", "/api/convert", "", json_body(json!({"source": "x".repeat(5000)})), 413, "payload_too_large"),
        ("GET", "/api/convert", "?source=photos/broken.jpg", None, 422, "unsupported_image"),
        ("POST", "/api/runs", "", None, 202, ""),
        ("POST", "/api/webhook/send", "", json_body(json!({"images": []})), 503, "webhook_not_configured"),
        ("POST", "/api/webhook/send", "", Some(("application/json", b"[".to_vec())), 400, "invalid_request"),
        ("POST", "/api/events", "", json_body(json!({"Records": []})), 503, "events_off"),
    ];
    let mut called = BTreeSet::new();
    for (method, path, query, body, status, code) in cases {
        let mut req = test::TestRequest::default().method(method.parse().unwrap()).uri(&format!("{path}{query}"));
        if let Some((ct, bytes)) = body {
            req = req.insert_header(("content-type", ct)).set_payload(bytes);
        }
        let (got, ct, _, bytes) = call!(app, req);
        let what = format!("{method} {path}{query}");
        assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&bytes));
        check(&doc, method, path, got, &ct, &bytes);
        if !code.is_empty() {
            check_error(&doc, &bytes, code, &what);
        }
        if path == "/api/openapi.json" {
            assert_eq!(bytes, super::document().as_bytes());
        }
        called.insert((method.to_owned(), path.to_owned()));
    }
    let all: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(called, all, "every route is called");

    // Any other method on a documented path is not served: 405 with `Allow` naming the
    // documented ones (the `/api/*` resources), or 404 `not_found` (routes added with
    // `cfg.route`, whose method guard sits on the resource).
    for path in doc["paths"].as_object().unwrap().keys() {
        let documented: BTreeSet<String> =
            doc["paths"][path].as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        for method in METHODS.iter().filter(|m| !documented.contains(**m)) {
            let req = test::TestRequest::default().method(method.parse().unwrap()).uri(path);
            let (got, _, allow, bytes) = call!(app, req);
            let what = format!("{method} {path}");
            if got == 404 {
                check_error(&doc, &bytes, "not_found", &what);
                continue;
            }
            assert_eq!(got, 405, "{what}: an undocumented method is served");
            let allowed: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
            assert_eq!(allowed, documented, "{what}: Allow");
            if !bytes.is_empty() {
                check_error(&doc, &bytes, "method_not_allowed", &what);
            }
        }
    }
    let (got, _, _, bytes) = call!(app, test::TestRequest::get().uri("/nope"));
    assert_eq!(got, 404);
    check_error(&doc, &bytes, "not_found", "GET /nope");

    // The router serves no path the document leaves out.
    let registered = registered_paths(&rmap.borrow());
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(registered, documented, "routes registered in api::configure vs documented");
}

#[actix_web::test]
async fn a_token_guards_api_routes_but_not_the_document_and_busy_is_documented() {
    let doc = doc();
    let dir = tempfile::tempdir().unwrap();
    let mut state = state(dir.path(), "sesame");
    state.api_slots = Arc::new(Semaphore::new(0));
    let app = test::init_service(App::new().configure(|cfg| configure(cfg, state.clone()))).await;
    for (method, path) in ROUTES {
        let req = test::TestRequest::default().method(method.parse().unwrap()).uri(path);
        let (got, ct, _, bytes) = call!(app, req);
        if path.starts_with("/api/") && *path != "/api/openapi.json" {
            assert_eq!(got, 401, "{method} {path}");
            check_error(&doc, &bytes, "unauthorized", &format!("{method} {path}"));
            let op = &doc["paths"][path][method.to_lowercase()];
            assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path} documents its token");
        } else {
            check(&doc, method, path, got, &ct, &bytes);
        }
    }
    let req = test::TestRequest::get()
        .uri("/api/convert?source=photos/cat.png")
        .insert_header(("authorization", "Bearer sesame"));
    let (got, ct, _, bytes) = call!(app, req);
    assert_eq!(got, 503);
    check(&doc, "GET", "/api/convert", got, &ct, &bytes);
    check_error(&doc, &bytes, "busy", "GET /api/convert with no slot");
}

#[actix_web::test]
async fn posted_events_are_journaled_before_the_202_and_take_either_token() {
    let doc = doc();
    let dir = tempfile::tempdir().unwrap();
    let mut state = state(dir.path(), "sesame");
    let mut config = (*state.config).clone();
    config.events.webhook_token = Secret::new("minio-token");
    state.config = Arc::new(config);
    let journal = Arc::new(crate::events::journal::Journal::open(&dir.path().join("journal")).unwrap());
    state.events = Some(crate::events::EventsApi { status: Default::default(), journal: Some(journal.clone()) });
    let app = test::init_service(App::new().configure(|cfg| configure(cfg, state.clone()))).await;
    let record = json!({"EventName": "s3:ObjectCreated:Put", "Key": "bucket/a b.jpg", "Records": [
        {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "bucket"}, "object": {"key": "a+b.jpg", "eTag": "e1"}}}]});
    let post = |token: &str, body: Vec<u8>| {
        test::TestRequest::post()
            .uri("/api/events")
            .insert_header(("authorization", token.to_owned()))
            .set_payload(body)
    };
    let files = || std::fs::read_dir(journal.dir()).unwrap().count();
    for token in ["Bearer sesame", "Bearer minio-token", "minio-token"] {
        let (got, ct, _, bytes) = call!(app, post(token, record.to_string().into_bytes()));
        assert_eq!(got, 202, "{token}: {}", String::from_utf8_lossy(&bytes));
        check(&doc, "POST", "/api/events", got, &ct, &bytes);
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap()["events"], 1);
    }
    assert_eq!(files(), 3, "each accepted body is in the journal");
    let (got, _, _, bytes) = call!(app, post("Bearer wrong", record.to_string().into_bytes()));
    assert_eq!(got, 401);
    check_error(&doc, &bytes, "unauthorized", "wrong token");
    let (got, ct, _, bytes) = call!(app, post("Bearer sesame", b"{\"nope\": 1}".to_vec()));
    assert_eq!(got, 400);
    check(&doc, "POST", "/api/events", got, &ct, &bytes);
    check_error(&doc, &bytes, "invalid_events", "not records");
    assert_eq!(files(), 3, "a refused body is not journaled");
}
