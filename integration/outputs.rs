//! `conversion.outputs` through runs: every due output made once, a second run doing
//! nothing, a changed source redoing all of its outputs, a width the source is not
//! wider than never made (and not retried), on the local bucket and through the S3
//! test server with requests counted at the server.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

const OUTPUTS: &str = "conversion:\n  outputs:\n    - format: webp\n    - {format: webp, width: 200}\n    - {format: webp, width: 100, quality: 50}\n";

fn run(dir: &Path, args: &[&str]) -> Output {
    binary().current_dir(dir).args(args).output().expect("run the binary")
}

fn summary(o: &Output) -> Value {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn width_of(path: &Path) -> u32 {
    let webp = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ics::convert::decode_webp(&webp).map(|i| image::GenericImageView::width(&i)).unwrap_or(0)
}

#[test]
fn every_output_is_made_once_and_a_changed_source_redoes_them_all() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/config.yaml"), format!("storage: {{local_root: ./bucket}}\n{OUTPUTS}"))
        .unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(bucket.join("p")).unwrap();
    std::fs::write(bucket.join("p/wide.jpg"), fixture("jpeg_baseline.jpg")).unwrap(); // 640 px
    std::fs::write(bucket.join("p/mid.png"), fixture("orient_upright.png")).unwrap(); // 300 px
    std::fs::write(bucket.join("p/narrow.png"), fixture("png_rgb.png")).unwrap(); // 125 px

    let first = summary(&run(dir.path(), &["run-once", "--json"]));
    // wide: 3 outputs; mid: 3; narrow: the full size and 100 px, not 200 px.
    assert_eq!(first["converted"], 8, "{first}");
    assert_eq!(first["by_format"], serde_json::json!({"webp": 8}), "{first}");
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(width_of(&bucket.join("p/wide.webp")), 640);
    assert_eq!(width_of(&bucket.join("p/wide_w200.webp")), 200);
    assert_eq!(width_of(&bucket.join("p/wide_w100.webp")), 100);
    assert_eq!(width_of(&bucket.join("p/mid_w200.webp")), 200);
    assert_eq!(width_of(&bucket.join("p/narrow_w100.webp")), 100);
    assert!(!bucket.join("p/narrow_w200.webp").exists(), "a source is never upscaled");
    let state: Value = serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).unwrap()).unwrap();
    assert_eq!(state["ledger"]["p/narrow.png#webp_w200"]["code"], "not_applicable", "{state}");

    // Nothing is due: nothing is converted, no output rewritten.
    let stamp = |p: &str| std::fs::metadata(bucket.join(p)).unwrap().modified().unwrap();
    let before: Vec<_> = ["p/wide.webp", "p/wide_w200.webp", "p/narrow_w100.webp"].map(stamp).into();
    let second = summary(&run(dir.path(), &["run-once", "--json"]));
    assert_eq!((second["converted"].as_u64(), second["queued"].as_u64()), (Some(0), Some(0)), "{second}");
    assert_eq!(before, Vec::from(["p/wide.webp", "p/wide_w200.webp", "p/narrow_w100.webp"].map(stamp)));

    // A changed source redoes every one of its outputs (and only its own).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(bucket.join("p/wide.jpg"), fixture("jpeg_progressive.jpg")).unwrap(); // 512 px
    let third = summary(&run(dir.path(), &["run-once", "--json"]));
    assert_eq!(third["converted"], 3, "{third}");
    assert_eq!(width_of(&bucket.join("p/wide.webp")), 512);
    assert_eq!(width_of(&bucket.join("p/wide_w200.webp")), 200);
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_second_run_over_every_output_sends_no_get_and_no_put() {
    need_s3!();
    let bucket = new_bucket("outputs");
    let objects: Vec<(String, usize)> = (0..6).map(|i| (format!("o/{i}.jpg"), 0)).collect();
    fill_direct(&bucket, &objects, &[&fixture("jpeg_baseline.jpg")]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outputs.yaml");
    std::fs::write(&config, format!("{OUTPUTS}    - format: avif\n")).unwrap();
    let run_s3 = || {
        let mut cmd = binary_on_s3(&bucket, &dir.path().join("state.json"));
        cmd.arg("--config").arg(&config).args(["run-once", "--json"]);
        summary(&cmd.output().unwrap())
    };
    request_counts(&bucket, true);
    let first = run_s3();
    assert_eq!(first["converted"], 24, "{first}");
    assert_eq!(first["by_format"], serde_json::json!({"avif": 6, "webp": 18}), "{first}");
    let puts = successful_puts(&bucket);
    assert_eq!(puts.len(), 24, "{puts:?}");
    assert!(puts.values().all(|n| *n == 1), "each output stored once: {puts:?}");
    request_counts(&bucket, true);
    let second = run_s3();
    assert_eq!(second["converted"], 0, "{second}");
    let counts = request_counts(&bucket, false);
    assert_eq!((counts.get("GET").copied(), counts.get("PUT").copied()), (None, None), "{counts:?}");
}

/// A bucket event's handler over a fresh bucket with WebP, a 200 px WebP and AVIF,
/// `delete_webp_on_remove` on.
fn event_bench() -> (actix::SystemRunner, ics::events::handle::Handler, ics::storage::Storage, String, tempfile::TempDir)
{
    let bucket = new_bucket("evoutputs");
    let state = tempfile::tempdir().unwrap();
    let mut config = s3_config(&bucket);
    config.events.delete_webp_on_remove = true;
    config.state.dir = state.path().to_owned();
    let raw = |width| ics::outputs::RawOutput { format: Some("webp".into()), width, ..Default::default() };
    let avif = ics::outputs::RawOutput { format: Some("avif".into()), ..Default::default() };
    config.outputs = ics::outputs::Outputs::parse(Some(&[raw(None), raw(Some(200)), avif])).unwrap();
    let config = std::sync::Arc::new(config);
    let storage = ics::storage::Storage::open(&config.storage, &bucket).unwrap();
    let rt = actix::System::new();
    let handler = rt.block_on(async {
        let backend = ics::actors::StateBackend::file(state.path()).unwrap();
        let pipeline = ics::actors::Pipeline::start_manual(config.clone(), storage.clone(), backend);
        ics::events::handle::Handler::new(config, storage.clone(), &pipeline, Default::default())
    });
    (rt, handler, storage, bucket, state)
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn an_event_makes_every_output_and_a_removal_deletes_them_all() {
    use ics::events::handle::{Done, Handled};
    use ics::events::record::{EventKind, ObjectEvent};
    need_s3!();
    let (rt, handler, storage, bucket, state) = event_bench();
    let put = |key: &str, name: &str| {
        rt.block_on(storage.put(key, fixture(name).into(), "image/jpeg")).unwrap();
    };
    let event = |kind, key: &str| {
        let e = ObjectEvent { kind, bucket: bucket.clone(), key: key.into(), etag: None, time: None };
        rt.block_on(handler.handle(&e))
    };
    let exists = |key: &str| rt.block_on(storage.head(key)).is_ok();

    put("p/x.jpg", "jpeg_baseline.jpg"); // 640 px
    assert_eq!(event(EventKind::Created, "p/x.jpg"), Handled::Done(Done::Converted));
    assert!(exists("p/x.webp") && exists("p/x_w200.webp") && exists("p/x.avif"));
    let (_, small) = rt.block_on(storage.get("p/x_w200.webp", u64::MAX)).unwrap();
    assert_eq!(ics::convert::decode_webp(&small).map(|i| image::GenericImageView::width(&i)), Some(200));
    // A duplicate: every output up to date, no download and no write.
    request_counts(&bucket, true);
    assert_eq!(event(EventKind::Created, "p/x.jpg"), Handled::Done(Done::UpToDate));
    let counts = request_counts(&bucket, true);
    assert_eq!((counts.get("GET"), counts.get("PUT")), (None, None), "{counts:?}");

    // A source narrower than the width: its full-size WebP only, the other ledgered.
    put("p/n.png", "png_rgb.png"); // 125 px
    assert_eq!(event(EventKind::Created, "p/n.png"), Handled::Done(Done::Converted));
    assert!(exists("p/n.webp") && !exists("p/n_w200.webp"));
    // p/y_w200.webp is both p/y.jpg's 200 px output and p/y_w200.jpg's WebP: neither
    // writes it; their other outputs are made.
    put("p/y.jpg", "jpeg_baseline.jpg");
    put("p/y_w200.jpg", "jpeg_progressive.jpg");
    assert_eq!(event(EventKind::Created, "p/y.jpg"), Handled::Done(Done::Converted));
    assert!(exists("p/y.webp") && !exists("p/y_w200.webp"));
    let ledger: Value = serde_json::from_slice::<Value>(&std::fs::read(state.path().join("state.json")).unwrap())
        .unwrap()["ledger"]
        .clone();
    assert_eq!(ledger["p/n.png#webp_w200"]["code"], "not_applicable", "{ledger}");
    assert_eq!(ledger["p/y.jpg#webp_w200"]["code"], "output_collision", "{ledger}");

    // Removed: every output it made goes.
    rt.block_on(storage.delete("p/x.jpg")).unwrap();
    assert_eq!(event(EventKind::Removed, "p/x.jpg"), Handled::Done(Done::Removed { webp_deleted: true }));
    assert!(!exists("p/x.webp") && !exists("p/x_w200.webp") && !exists("p/x.avif"));
}

fn is_avif(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.len() > 12 && &bytes[4..12] == b"ftypavif"
}

#[test]
fn webp_and_avif_at_two_widths_are_made_once_and_an_animation_gets_no_avif() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let outputs = "conversion:\n  outputs:\n    - format: webp\n    - format: avif\n    - {format: webp, width: 200}\n    - {format: avif, width: 200}\n";
    std::fs::write(dir.path().join("config/config.yaml"), format!("storage: {{local_root: ./bucket}}\n{outputs}"))
        .unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(bucket.join("p")).unwrap();
    std::fs::write(bucket.join("p/wide.jpg"), fixture("jpeg_baseline.jpg")).unwrap(); // 640 px
    std::fs::write(bucket.join("p/anim.gif"), fixture("gif_anim_loop3.gif")).unwrap();

    let first = summary(&run(dir.path(), &["run-once", "--json"]));
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(width_of(&bucket.join("p/wide_w200.webp")), 200);
    assert!(bucket.join("p/wide.webp").exists() && bucket.join("p/anim.webp").exists());
    assert!(is_avif(&bucket.join("p/wide.avif")) && is_avif(&bucket.join("p/wide_w200.avif")));
    assert!(!bucket.join("p/anim.avif").exists(), "an animation gets no AVIF");
    assert_eq!(first["by_format"]["avif"], 2, "{first}");
    let state: Value = serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).unwrap()).unwrap();
    assert_eq!(state["ledger"]["p/anim.gif#avif"]["code"], "not_applicable", "{state}");

    let second = summary(&run(dir.path(), &["run-once", "--json"]));
    assert_eq!((second["converted"].as_u64(), second["queued"].as_u64()), (Some(0), Some(0)), "{second}");
}

#[test]
fn an_avif_that_cannot_fit_the_budget_is_given_up_alone_and_the_webp_made() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    // The smallest budget: a 640 px JPEG's WebP fits its 12 MiB work pool, its AVIF not.
    let yaml = "storage: {local_root: ./bucket}\npipeline: {memory_budget_mb: 16}\nconversion:\n  outputs: [{format: webp}, {format: avif}]\n";
    std::fs::write(dir.path().join("config/config.yaml"), yaml).unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::write(bucket.join("x.jpg"), fixture("jpeg_baseline.jpg")).unwrap();
    let o = run(dir.path(), &["run-once", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((s["converted"].as_u64(), s["failed"].as_u64()), (Some(1), Some(1)), "{s}");
    assert!(bucket.join("x.webp").exists() && !bucket.join("x.avif").exists());
    let failure = &s["failures"][0];
    assert_eq!(failure["code"], "over_memory_budget", "{s}");
    assert!(failure["reason"].as_str().unwrap().contains("raise pipeline.memory_budget_mb"), "{s}");
    // Given up for this version: the next run leaves it alone.
    let again = summary(&run(dir.path(), &["run-once", "--json"]));
    assert_eq!(again["queued"], 0, "{again}");
}

#[test]
fn convert_makes_the_avif_it_is_asked_for_and_then_finds_it_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/config.yaml"), "storage: {local_root: ./bucket}\n").unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::write(bucket.join("x.jpg"), fixture("jpeg_baseline.jpg")).unwrap();
    let o = run(dir.path(), &["convert", "x.jpg", "--format", "avif", "--json"]);
    let v = summary(&o);
    assert_eq!(
        (v["outcome"].as_str(), v["destination"].as_str()),
        (Some("converted"), Some("r2://bucket/x.avif")),
        "{v}"
    );
    assert!(is_avif(&bucket.join("x.avif")) && !bucket.join("x.webp").exists());
    let v = summary(&run(dir.path(), &["convert", "x.jpg", "--format", "avif", "--json"]));
    assert_eq!(v["outcome"], "up_to_date", "{v}");
    let v = summary(&run(dir.path(), &["convert", "x.jpg", "--format", "avif", "--width", "100", "--json"]));
    assert_eq!(v["destination"], "r2://bucket/x_100x67.avif", "{v}");
    let o = run(dir.path(), &["convert", "x.jpg", "--format", "gif"]);
    assert_eq!(o.status.code(), Some(64), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format must be webp or avif"));
}

#[test]
#[ignore = "needs the S3 test server: bash scripts/test.sh"]
fn a_runs_webhook_status_and_metrics_count_and_list_each_output_by_format() {
    need_s3!();
    use common::http::TestHttp;
    use common::server::Server;
    let hook = TestHttp::start("127.0.0.1:0", vec![200], std::collections::HashMap::new());
    let bucket = new_bucket("outputs-hook");
    let storage = ics::storage::Storage::open(&s3_config(&bucket).storage, &bucket).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(storage.put("h/a.jpg", fixture("jpeg_baseline.jpg").into(), "image/jpeg")).unwrap();
    let pending = tempfile::tempdir().unwrap();
    let yaml = format!(
        "conversion:\n  outputs: [{{format: webp}}, {{format: avif, width: 320}}]\nwebhook: {{url: 'http://{}/hook', pending_dir: '{}'}}\n",
        hook.addr,
        pending.path().display()
    );
    let server = Server::start(Some(&bucket), &yaml);
    assert_eq!(server.post("/api/runs", serde_json::json!({})).status, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while hook.requests.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no webhook: {:?}", server.log.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let body: Value = serde_json::from_slice(&hook.requests.lock().unwrap()[0].2).unwrap();
    assert_eq!(body["event"], "batch.completed", "{body}");
    assert_eq!(body["processed_count"], 2, "{body}");
    assert_eq!(body["by_format"], serde_json::json!({"avif": 1, "webp": 1}), "{body}");
    let images = body["images"].as_array().unwrap();
    let listed: Vec<(&str, &str)> =
        images.iter().map(|i| (i["destination"].as_str().unwrap(), i["format"].as_str().unwrap())).collect();
    assert!(listed.contains(&("h/a.webp", "webp")) && listed.contains(&("h/a_w320.avif", "avif")), "{body}");

    let status: Value = serde_json::from_slice(&server.get("/api/status").body).unwrap();
    assert_eq!(status["last_run"]["by_format"], serde_json::json!({"avif": 1, "webp": 1}), "{status}");
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    for format in ["webp", "avif"] {
        let line = format!("ics_outputs_converted_total{{bucket=\"{bucket}\",format=\"{format}\"}} 1");
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
}
