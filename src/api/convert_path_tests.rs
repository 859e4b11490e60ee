//! One conversion path: the API (in-process, `actix_web::test` on the real actors and an
//! in-memory bucket) and the CLI's `convert` (`job::convert_object`) make the same
//! checks, classify failures by the same [`Reason`] (answered with the Go server's wire
//! codes by the API), and write by the same rule — conditionally in bucket mode.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::{App, test};
use bytes::Bytes;
use object_store::memory::InMemory;
use serde_json::{Value, json};

use crate::actors::{Pipeline, StateBackend};
use crate::api::{AppState, configure};
use crate::config::{ClusterConfig, Config};
use crate::job::{self, JobError, WriteRule, Written};
use crate::reason::Reason;
use crate::storage::Storage;
use crate::storage::probe::Probe;

const PNG: &[u8] = include_bytes!("../../testdata/images/png_rgb.png");
const JPEG: &[u8] = include_bytes!("../../testdata/images/jpeg_baseline.jpg");

/// The API's state on an in-memory bucket seen through a probe; `cluster`: bucket mode.
fn state(dir: &std::path::Path, cluster: bool) -> (AppState, Probe) {
    let mut config = Config::validate(Default::default()).unwrap();
    config.state.dir = dir.join("state");
    config.cron.enabled = false;
    config.cron.run_on_start = false;
    let probe = Probe::new(Arc::new(InMemory::new()), Arc::new(Mutex::new(BTreeMap::new())));
    let storage = Storage::from_store(Arc::new(probe.clone()), "bucket");
    let backend = if cluster {
        let c = ClusterConfig {
            prefix: ".image-converting-server/".into(),
            shards: 4,
            lease: std::time::Duration::from_secs(30),
            max_clock_skew: std::time::Duration::from_secs(2),
            instance_id: "api-test".into(),
        };
        config.state.cluster = Some(c.clone());
        StateBackend::from(crate::cluster::Cluster::new(c))
    } else {
        StateBackend::file(&config.state.dir).unwrap()
    };
    let config = Arc::new(config);
    let pipeline = Pipeline::start_manual(config.clone(), storage.clone(), backend);
    (AppState::new(config, storage, pipeline, Default::default(), None), probe)
}

async fn post_convert(state: &AppState, source: &str) -> (u16, Value) {
    post(state, "/api/convert", source).await
}

async fn post(state: &AppState, uri: &str, source: &str) -> (u16, Value) {
    let app = test::init_service(App::new().configure(|cfg| configure(cfg, state.clone()))).await;
    let req = test::TestRequest::post().uri(uri).set_json(json!({ "source": source })).to_request();
    let res = test::call_service(&app, req).await;
    let status = res.status().as_u16();
    (status, test::read_body_json(res).await)
}

/// What the CLI's `convert` says for `source` (its address parsed as the CLI does).
async fn cli_convert(state: &AppState, source: &str) -> Result<job::Outcome, JobError> {
    let key = crate::naming::parse_source(source, state.storage.bucket())?;
    crate::daemon::convert(
        (*state.config).clone(),
        state.storage.clone(),
        state.storage.bucket(),
        &key,
        (crate::outputs::Format::Webp, None, false),
    )
    .await
    .expect("the bucket opens")
}

/// For each failing source: the API's status and wire code, and the CLI's reason.
#[actix_web::test]
async fn the_api_and_convert_refuse_the_same_sources_for_the_same_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = state(dir.path(), false);
    // Two sources claiming one WebP.
    state.storage.put("p/cat.jpg", Bytes::from_static(JPEG), "image/jpeg").await.unwrap();
    state.storage.put("p/cat.png", Bytes::from_static(PNG), "image/png").await.unwrap();
    state.storage.put("p/broken.png", Bytes::from_static(b"not a png"), "image/png").await.unwrap();
    let cases = [
        ("p/cat.jpg", Reason::OutputCollision, 409, "output_collision"),
        ("p/missing.jpg", Reason::NotFound, 404, "image_not_found"),
        ("r2://other-bucket/p/dog.jpg", Reason::UnknownBucket, 400, "unknown_bucket"),
        ("p/notes.txt", Reason::NotCandidate, 400, "invalid_source_format"),
        ("p/broken.png", Reason::NotAnImage, 422, "unsupported_image"),
    ];
    for (source, reason, status, code) in cases {
        let (got_status, body) = post_convert(&state, source).await;
        assert_eq!((got_status, body["error"].as_str().unwrap()), (status, code), "API, {source}: {body}");
        let cli = cli_convert(&state, source).await.expect_err(source);
        assert_eq!(cli.reason(), reason, "convert, {source}: {cli}");
        assert_eq!(reason.answer(), (status, code), "{source}");
    }
    // The ledger and the metrics name the not-found case by the same enum, in their words.
    assert_eq!(Reason::NotFound.code(), "not_found");
    assert!(state.storage.head("p/cat.webp").await.is_err(), "a claimed WebP is written by neither");
}

#[actix_web::test]
async fn the_api_writes_by_the_same_rule_as_the_runs_plainly_alone_conditionally_in_bucket_mode() {
    for cluster in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (state, probe) = state(dir.path(), cluster);
        state.storage.put("p/cat.png", Bytes::from_static(PNG), "image/png").await.unwrap();
        let (status, body) = post_convert(&state, "p/cat.png").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["superseded"], json!(false));
        // Again: the WebP is up to date now, and nothing is written...
        let (status, body) = post_convert(&state, "p/cat.png").await;
        assert_eq!((status, &body["up_to_date"]), (200, &json!(true)), "{body}");
        // ...unless forced: then it is replaced (in bucket mode, on its version).
        let (status, body) = post(&state, "/api/convert?force=true", "p/cat.png").await;
        assert_eq!((status, &body["up_to_date"]), (200, &json!(false)), "{body}");
        let webp_modes: Vec<String> =
            probe.modes.lock().unwrap().iter().filter(|(k, _)| k == "p/cat.webp").map(|(_, m)| m.clone()).collect();
        let expected = if cluster { ["Create", "Update"] } else { ["Overwrite", "Overwrite"] };
        assert_eq!(webp_modes, expected, "cluster: {cluster}");
    }
}

#[actix_web::test]
async fn a_conditional_write_never_overwrites_a_webp_it_did_not_see() {
    let storage = Storage::in_memory("bucket");
    let first = Bytes::from_static(b"first");
    let rule_new = WriteRule::Conditional { replaces: Some(None) };
    assert_eq!(
        job::write_webp(&storage, "a.webp", "a.jpg", first.clone(), rule_new.clone()).await.unwrap(),
        Written::Stored
    );
    // Another writer stored one meanwhile: a write that listed none is refused...
    let second = Bytes::from_static(b"second");
    assert_eq!(
        job::write_webp(&storage, "a.webp", "a.jpg", second.clone(), rule_new).await.unwrap(),
        Written::Superseded
    );
    // ...and so is one that saw an older version.
    let stale = WriteRule::Conditional { replaces: Some(Some("\"not-its-etag\"".into())) };
    assert_eq!(job::write_webp(&storage, "a.webp", "a.jpg", second.clone(), stale).await.unwrap(), Written::Superseded);
    assert_eq!(storage.get("a.webp", 1 << 20).await.unwrap().1, first, "the first WebP stands");
    // Looking now, it replaces the version it saw.
    let now = WriteRule::Conditional { replaces: None };
    assert_eq!(job::write_webp(&storage, "a.webp", "a.jpg", second.clone(), now).await.unwrap(), Written::Stored);
    assert_eq!(storage.get("a.webp", 1 << 20).await.unwrap().1, second);
}
