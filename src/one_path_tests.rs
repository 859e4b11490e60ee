//! One path for every image (issue 22): each scenario goes through all four entry
//! points — a run, a bucket event, `POST /api/convert` and the CLI's `convert` — each on
//! a bucket of its own set up the same way, in-process on the real actors and an
//! in-memory bucket, and every entry point must come to the same decision for the same
//! reason.

use std::sync::Arc;

use actix_web::{App, test};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::actors::{Pipeline, RunNow, StateBackend};
use crate::api::{AppState, configure};
use crate::config::Config;
use crate::events::handle::{Done, Handled, Handler};
use crate::events::record::{EventKind, ObjectEvent};
use crate::job::Outcome;
use crate::reason::Reason;
use crate::state::{LedgerEntry, LedgerKind, State, StateStore};
use crate::storage::Storage;

const PNG: &[u8] = include_bytes!("../testdata/images/png_rgb.png");
const JPEG: &[u8] = include_bytes!("../testdata/images/jpeg_baseline.jpg");

/// What an entry point did with a source.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    Converted,
    UpToDate,
    /// The WebP would not be smaller: the source stays alone.
    Kept,
    GivenUp(Reason),
}

/// The entry points.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Entry {
    Run,
    Event,
    Api,
    Cli,
}

const ENTRIES: [Entry; 4] = [Entry::Run, Entry::Event, Entry::Api, Entry::Cli];

/// One bucket, its state directory and its daemon's parts.
struct World {
    _dir: tempfile::TempDir,
    config: Arc<Config>,
    storage: Storage,
    pipeline: Pipeline,
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::validate(Default::default()).unwrap();
    config.state.dir = dir.join("state");
    config.cron.enabled = false;
    config.cron.run_on_start = false;
    config
}

/// A tiny JPEG (quality 5): any WebP of it at the default quality is larger.
fn tiny_jpeg() -> Vec<u8> {
    let src = image::load_from_memory(PNG).unwrap().to_rgb8();
    let mut low = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut low, 5).encode_image(&src).unwrap();
    low
}

/// Objects put in the order given (a later put is newer), a ledger written before the
/// daemon starts, and a change to the configuration.
struct Setup {
    objects: Vec<(&'static str, Vec<u8>)>,
    given_up: Option<(&'static str, Reason)>,
    budget_mb: Option<u32>,
}

async fn world(setup: &Setup) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    if let Some(mb) = setup.budget_mb {
        config.pipeline.memory_budget_mb = mb;
    }
    let storage = Storage::in_memory("bucket");
    for (key, bytes) in &setup.objects {
        storage.put(key, Bytes::from(bytes.clone()), "application/octet-stream").await.unwrap();
        // Distinct modification times, in the order of the puts.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let store = crate::state::FileStateStore::new(&config.state.dir).unwrap();
    if let Some((key, reason)) = setup.given_up {
        let etag = storage.head(key).await.unwrap().etag;
        let mut state = State::default();
        let entry = LedgerEntry {
            kind: LedgerKind::GivenUp,
            etag,
            code: reason.code().into(),
            reason: format!("{key}: given up by an earlier run"),
            attempts: 5,
            last_attempt_at: chrono::Utc::now(),
            next_retry_at: None,
        };
        state.ledger.insert(key.to_owned(), entry);
        store.save(&state).unwrap();
    }
    let config = Arc::new(config);
    let pipeline = Pipeline::start_manual(config.clone(), storage.clone(), StateBackend::own(Box::new(store)));
    World { _dir: dir, config, storage, pipeline }
}

fn ledger(world: &World, key: &str) -> Option<LedgerEntry> {
    let store = crate::state::FileStateStore::new(&world.config.state.dir).unwrap();
    store.load().unwrap().and_then(|s| s.ledger.get(key).cloned())
}

fn reason_of(code: &str) -> Reason {
    Reason::from_code(code).unwrap_or_else(|| panic!("no reason has the code {code:?}"))
}

/// What `entry` decides for `key` in a world set up by `setup`. (The API answers with
/// the Go server's wire codes, one of which may stand for several reasons: the
/// `expected` one is taken when the answer is its.)
async fn decide(entry: Entry, setup: &Setup, key: &str, expected: &Decision) -> Decision {
    let w = world(setup).await;
    let webp_before = w.storage.head(&crate::naming::webp_key(key)).await.ok().and_then(|o| o.etag);
    match entry {
        Entry::Run => {
            let handle = w.pipeline.scheduler.send(RunNow { force: false }).await.unwrap().unwrap();
            let summary = handle.done.await.unwrap();
            if let Some(f) = summary.failures.iter().find(|f| f.key == key) {
                return Decision::GivenUp(reason_of(&f.code));
            }
            match ledger(&w, key) {
                Some(e) if e.kind == LedgerKind::Kept => Decision::Kept,
                Some(e) if e.kind == LedgerKind::GivenUp => Decision::GivenUp(reason_of(&e.code)),
                _ => {
                    let webp_after = w.storage.head(&crate::naming::webp_key(key)).await.ok().and_then(|o| o.etag);
                    if webp_after.is_some() && webp_after != webp_before {
                        Decision::Converted
                    } else {
                        Decision::UpToDate
                    }
                }
            }
        }
        Entry::Event => {
            let handler = Handler::new(w.config.clone(), w.storage.clone(), &w.pipeline, Default::default());
            let head = w.storage.head(key).await.unwrap();
            let event = ObjectEvent {
                kind: EventKind::Created,
                bucket: "bucket".into(),
                key: key.into(),
                etag: head.etag.clone(),
                time: Some(head.last_modified),
            };
            match handler.handle(&event).await {
                Handled::Done(Done::Converted) => Decision::Converted,
                Handled::Done(Done::UpToDate) => Decision::UpToDate,
                Handled::Done(Done::Kept) => Decision::Kept,
                Handled::Done(Done::GivenUp { code, .. }) => Decision::GivenUp(reason_of(&code)),
                Handled::Done(Done::Ledgered) => {
                    let e = ledger(&w, key).expect("a ledgered event has its entry");
                    if e.kind == LedgerKind::Kept { Decision::Kept } else { Decision::GivenUp(reason_of(&e.code)) }
                }
                other => panic!("event for {key}: {other:?}"),
            }
        }
        Entry::Api => {
            let state =
                AppState::new(w.config.clone(), w.storage.clone(), w.pipeline.clone(), Default::default(), None);
            let (status, body) = post_convert(&state, key).await;
            if status == 200 {
                return if body["kept"] == json!(true) {
                    Decision::Kept
                } else if body["up_to_date"] == json!(true) {
                    Decision::UpToDate
                } else {
                    Decision::Converted
                };
            }
            let code = body["error"].as_str().unwrap_or_default().to_owned();
            let reasons: Vec<Reason> = Reason::ALL.iter().copied().filter(|r| r.answer() == (status, &code)).collect();
            match expected {
                Decision::GivenUp(r) if reasons.contains(r) => Decision::GivenUp(*r),
                _ => Decision::GivenUp(*reasons.first().unwrap_or_else(|| panic!("API for {key}: {status} {body}"))),
            }
        }
        Entry::Cli => {
            let config = (*w.config).clone();
            match crate::daemon::convert(
                config,
                w.storage.clone(),
                "bucket",
                key,
                (crate::outputs::Format::Webp, None, false),
            )
            .await
            .unwrap()
            {
                Ok(Outcome::Converted(_)) => Decision::Converted,
                Ok(Outcome::UpToDate(_)) => Decision::UpToDate,
                Ok(Outcome::KeptSource(_)) => Decision::Kept,
                Ok(o @ Outcome::Superseded(_)) => panic!("alone, nothing supersedes: {o:?}"),
                Err(e) => Decision::GivenUp(e.reason()),
            }
        }
    }
}

async fn post_convert(state: &AppState, source: &str) -> (u16, Value) {
    let app = test::init_service(App::new().configure(|cfg| configure(cfg, state.clone()))).await;
    let req = test::TestRequest::post().uri("/api/convert").set_json(json!({ "source": source })).to_request();
    let res = test::call_service(&app, req).await;
    let status = res.status().as_u16();
    (status, test::read_body_json(res).await)
}

#[actix_web::test]
async fn every_entry_point_decides_each_image_alike_for_the_same_reason() {
    let scenarios: Vec<(&str, Setup, &str, Decision)> = vec![
        (
            "up to date",
            Setup {
                objects: vec![("p/a.png", PNG.to_vec()), ("p/a.webp", PNG.to_vec())],
                given_up: None,
                budget_mb: None,
            },
            "p/a.png",
            Decision::UpToDate,
        ),
        (
            "new",
            Setup { objects: vec![("p/b.png", PNG.to_vec())], given_up: None, budget_mb: None },
            "p/b.png",
            Decision::Converted,
        ),
        (
            "output larger than the source",
            Setup { objects: vec![("p/tiny.jpg", tiny_jpeg())], given_up: None, budget_mb: None },
            "p/tiny.jpg",
            Decision::Kept,
        ),
        (
            "corrupt bytes",
            Setup { objects: vec![("p/broken.png", b"not a png at all".to_vec())], given_up: None, budget_mb: None },
            "p/broken.png",
            Decision::GivenUp(Reason::NotAnImage),
        ),
        (
            "two sources claiming one output",
            Setup {
                objects: vec![("p/cat.jpg", JPEG.to_vec()), ("p/cat.png", PNG.to_vec())],
                given_up: None,
                budget_mb: None,
            },
            "p/cat.png",
            Decision::GivenUp(Reason::OutputCollision),
        ),
        (
            "a version the ledger gave up",
            Setup {
                objects: vec![("p/left.png", PNG.to_vec())],
                given_up: Some(("p/left.png", Reason::DecodeFailed)),
                budget_mb: None,
            },
            "p/left.png",
            Decision::GivenUp(Reason::DecodeFailed),
        ),
        (
            "over the memory budget",
            Setup { objects: vec![("p/big.jpg", JPEG.to_vec())], given_up: None, budget_mb: Some(1) },
            "p/big.jpg",
            Decision::GivenUp(Reason::OverMemoryBudget),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, setup, key, expected) in &scenarios {
        for entry in ENTRIES {
            let got = decide(entry, setup, key, expected).await;
            if got != *expected {
                wrong.push(format!("{name}: {entry:?} decided {got:?}, expected {expected:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "entry points disagree:\n{}", wrong.join("\n"));
}

/// A resized conversion (API, CLI) never takes the full-size name: the full-size WebP is
/// left as it was, and a run still sees the source's full-size WebP as missing.
#[actix_web::test]
async fn a_resize_never_replaces_the_full_size_output() {
    let setup = Setup { objects: vec![("photos/x.jpg", JPEG.to_vec())], given_up: None, budget_mb: None };
    // The CLI.
    let w = world(&setup).await;
    let resize = Some(crate::convert::ResizeSpec { width: Some(100), height: None });
    let out = crate::daemon::convert(
        (*w.config).clone(),
        w.storage.clone(),
        "bucket",
        "photos/x.jpg",
        (crate::outputs::Format::Webp, resize, false),
    )
    .await
    .unwrap()
    .unwrap();
    let Outcome::Converted(report) = out else { panic!("{out:?}") };
    assert_eq!(report.destination, "r2://bucket/photos/x_100x67.webp");
    assert!(w.storage.head("photos/x.webp").await.is_err(), "the full-size name is not taken");
    let handle = w.pipeline.scheduler.send(RunNow { force: false }).await.unwrap().unwrap();
    let summary = handle.done.await.unwrap();
    assert_eq!(summary.counts.converted, 1, "the run still converts the full size: {summary:?}");
    // The API.
    let w = world(&setup).await;
    let state = AppState::new(w.config.clone(), w.storage.clone(), w.pipeline.clone(), Default::default(), None);
    let app = test::init_service(App::new().configure(|cfg| configure(cfg, state.clone()))).await;
    let req = test::TestRequest::post()
        .uri("/api/convert?width=100")
        .set_json(json!({ "source": "photos/x.jpg" }))
        .to_request();
    let body: Value = test::call_and_read_body_json(&app, req).await;
    assert_eq!(body["destination"], "r2://bucket/photos/x_100x67.webp", "{body}");
    assert!(w.storage.head("photos/x.webp").await.is_err(), "the full-size name is not taken");
}

/// A removal deletes a WebP only when no source claims it any more and this daemon
/// made it of the removed source; when one claimant of a shared name is left, it is
/// converted.
#[actix_web::test]
async fn a_removal_deletes_only_a_webp_this_daemon_made_of_that_source() {
    let setup = Setup {
        objects: vec![
            // The user's own WebP, with no source ever.
            ("native/logo.webp", PNG.to_vec()),
            ("d/y.jpg", JPEG.to_vec()),
            ("d2/photo.jpg", JPEG.to_vec()),
        ],
        given_up: None,
        budget_mb: None,
    };
    let w = world(&setup).await;
    let mut config = (*w.config).clone();
    config.events.delete_webp_on_remove = true;
    let handler = Handler::new(Arc::new(config), w.storage.clone(), &w.pipeline, Default::default());
    let event =
        |kind, key: &str| ObjectEvent { kind, bucket: "bucket".into(), key: key.into(), etag: None, time: None };
    for key in ["d/y.jpg", "d2/photo.jpg"] {
        assert_eq!(handler.handle(&event(EventKind::Created, key)).await, Handled::Done(Done::Converted), "{key}");
    }
    // A removal of a source that never existed leaves the user's WebP.
    let removed = handler.handle(&event(EventKind::Removed, "native/logo.jpg")).await;
    assert_eq!(removed, Handled::Done(Done::Removed { webp_deleted: false }));
    assert!(w.storage.head("native/logo.webp").await.is_ok(), "the user's own WebP stays");
    // Our WebP of a removed source goes.
    w.storage.delete("d/y.jpg").await.unwrap();
    let removed = handler.handle(&event(EventKind::Removed, "d/y.jpg")).await;
    assert_eq!(removed, Handled::Done(Done::Removed { webp_deleted: true }));
    assert!(w.storage.head("d/y.webp").await.is_err());
    // A second claimant arrives (a collision: given up, the WebP left as it was), then
    // the first goes: the one left is converted into the shared name.
    w.storage.put("d2/photo.png", Bytes::from_static(PNG), "image/png").await.unwrap();
    let created = handler.handle(&event(EventKind::Created, "d2/photo.png")).await;
    assert!(matches!(&created, Handled::Done(Done::GivenUp { code, .. }) if code == "output_collision"), "{created:?}");
    assert_eq!(w.storage.output_source("d2/photo.webp").await.unwrap().as_deref(), Some("d2/photo.jpg"));
    w.storage.delete("d2/photo.jpg").await.unwrap();
    let removed = handler.handle(&event(EventKind::Removed, "d2/photo.jpg")).await;
    assert_eq!(removed, Handled::Done(Done::Removed { webp_deleted: false }));
    assert_eq!(w.storage.output_source("d2/photo.webp").await.unwrap().as_deref(), Some("d2/photo.png"));
    let (_, webp) = w.storage.get("d2/photo.webp", 1 << 30).await.unwrap();
    let meta = crate::convert::webp::inspect(&webp).unwrap();
    assert_eq!((meta.width, meta.height), (125, 85), "the PNG's WebP now");
}
