//! `serve` embedded in a test process: an in-memory bucket, a listener on port 0 and a
//! shutdown future the test resolves; no subprocess, no signal.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::config::StorageConfig;

const JPEG: &[u8] = include_bytes!("../testdata/images/jpeg_baseline.jpg");

/// A configuration for an in-memory bucket whose runs start only on demand.
fn config(state_dir: &std::path::Path) -> Config {
    let mut config = Config::validate(Default::default()).unwrap();
    config.storage = StorageConfig::Memory { bucket: "mem".into() };
    config.state.dir = state_dir.to_owned();
    config.cron.enabled = false;
    config.cron.run_on_start = false;
    config.pipeline.workers = 1;
    config.pipeline.shutdown_timeout = Duration::from_secs(5);
    config
}

async fn wait_for_webp(storage: &Storage, key: &str) -> bool {
    for _ in 0..200 {
        if storage.head(key).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[test]
fn serve_runs_in_process_on_a_handed_listener_until_its_shutdown_future_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let storage = Storage::open(&config.storage, &config.bucket_name()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    actix::System::new().block_on(async move {
        storage.put("photos/a.jpg", Bytes::from_static(JPEG), "image/jpeg").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = actix::spawn(serve(config, storage.clone(), listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let base = format!("http://{addr}");
        let health = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        // cron is off and nothing ran at start: no WebP until a run is asked for.
        assert!(storage.head("photos/a.webp").await.is_err());
        let started = client.post(format!("{base}/api/runs")).send().await.unwrap();
        assert_eq!(started.status(), 202, "{:?}", started.text().await);
        assert!(wait_for_webp(&storage, "photos/a.webp").await, "the run converted the bucket's image");

        stop.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(30), server).await.expect("serve returns after shutdown");
        ended.unwrap().unwrap();
        assert!(
            client.get(format!("{base}/health")).send().await.is_err(),
            "the listener is closed after serve returns"
        );
    });
    assert!(dir.path().join("state.json").exists(), "the state was saved at shutdown");
}

#[test]
fn serve_refuses_an_open_api_on_a_public_listener_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("state"));
    let storage = Storage::open(&config.storage, &config.bucket_name()).unwrap();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let ended = actix::System::new().block_on(serve(config, storage, listener, std::future::pending()));
    match ended {
        Err(ServeError::Config(e)) => assert!(e.to_string().contains("api.token"), "{e}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert!(!dir.path().join("state").exists(), "nothing was started or created");
}

/// Item 3 of issue 13: the Coordinator takes commands on a channel and holds no lock
/// across a storage call, so `POST /api/runs` is answered while every storage call of
/// this instance is held at the probe's gate (a bucket as slow as you like), and the
/// run request reaches the bucket once the calls go through.
#[test]
fn in_a_cluster_post_api_runs_is_answered_before_any_storage_call_completes() {
    use crate::storage::probe::Probe;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.state.cluster = Some(crate::config::ClusterConfig {
        prefix: ".image-converting-server/".into(),
        shards: 4,
        lease: Duration::from_secs(3),
        max_clock_skew: Duration::from_millis(300),
        instance_id: "slow-bucket".into(),
    });
    let bucket: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(object_store::memory::InMemory::new());
    let probe = Probe::new(bucket.clone(), Default::default());
    let storage = Storage::from_store(std::sync::Arc::new(probe.clone()), "mem");
    let raw = Storage::from_store(bucket, "mem");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    actix::System::new().block_on(async move {
        probe.close();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = actix::spawn(serve(config, storage, listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        // The Coordinator's first turn is at the gate by now (its heartbeat PUT).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answer = client.post(format!("http://{addr}/api/runs")).send().await.unwrap();
        assert_eq!(answer.status(), 202);
        let body: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
        assert_eq!(body["run_id"], serde_json::Value::Null, "queued for the cluster: {body}");
        assert_eq!(probe.finished(), 0, "answered before any storage call completed");
        let trigger = ".image-converting-server/trigger.json";
        assert!(raw.head(trigger).await.is_err(), "the request is not in the bucket yet");
        // The status is answered too, from what the loop last published.
        let status = client.get(format!("http://{addr}/api/status")).send().await.unwrap();
        assert_eq!(status.status(), 200);

        probe.open();
        let mut written = false;
        for _ in 0..100 {
            if raw.head(trigger).await.is_ok() {
                written = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(written, "the loop wrote the run request once the bucket answered");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), server).await.unwrap().unwrap().unwrap();
    });
}
