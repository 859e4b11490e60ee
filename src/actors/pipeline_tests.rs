//! The pipeline in-process, on an in-memory bucket: one instance, and several instances
//! sharing one bucket through test probes (`storage::probe`) that count each key's
//! successful PUTs and can pause an instance's every storage call — long enough for its
//! leases to run out and be taken by the others.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::memory::InMemory;

use super::*;
use crate::config::ClusterConfig;
use crate::model::RunSummary;
use crate::storage::probe::{Probe, PutCounts};

/// Real images of several formats, and one that is no image.
const IMAGES: &[(&str, &[u8])] = &[
    ("a/baseline.jpg", include_bytes!("../../testdata/images/jpeg_baseline.jpg")),
    ("a/gray.jpg", include_bytes!("../../testdata/images/jpeg_gray.jpg")),
    ("b/rgb.png", include_bytes!("../../testdata/images/png_rgb.png")),
    ("b/alpha.png", include_bytes!("../../testdata/images/png_alpha.png")),
    ("c/static.gif", include_bytes!("../../testdata/images/gif_static.gif")),
    ("c/palette.png", include_bytes!("../../testdata/images/png_palette.png")),
    ("d/progressive.jpg", include_bytes!("../../testdata/images/jpeg_progressive.jpg")),
    ("d/rgb.bmp", include_bytes!("../../testdata/images/bmp_rgb24.bmp")),
];

fn webp_of(key: &str) -> String {
    crate::naming::webp_key(key)
}

fn config(state_dir: &std::path::Path) -> Config {
    let mut config = Config::validate(Default::default()).unwrap();
    config.state.dir = state_dir.to_owned();
    config.cron.enabled = false;
    config.cron.run_on_start = false;
    config.pipeline.workers = 1;
    config
}

async fn fill(storage: &Storage) {
    for (key, bytes) in IMAGES {
        storage.put(key, Bytes::from_static(bytes), "application/octet-stream").await.unwrap();
    }
    storage.put("a/broken.jpg", Bytes::from_static(b"not a jpeg at all"), "image/jpeg").await.unwrap();
}

async fn missing_webps(storage: &Storage) -> Vec<String> {
    let mut missing = Vec::new();
    for (key, _) in IMAGES {
        if storage.head(&webp_of(key)).await.is_err() {
            missing.push(webp_of(key));
        }
    }
    missing
}

async fn run_now(pipeline: &Pipeline, force: bool) -> RunSummary {
    let handle = pipeline.scheduler.send(RunNow { force }).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(60), handle.done).await.expect("the run ends").unwrap()
}

#[test]
fn one_instance_converts_the_bucket_once_and_the_next_run_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(config(dir.path()));
    let storage = Storage::in_memory("mem");
    actix::System::new().block_on(async move {
        fill(&storage).await;
        let backend = StateBackend::file(&config.state.dir).unwrap();
        let pipeline = Pipeline::start_manual(config.clone(), storage.clone(), backend);
        let first = run_now(&pipeline, false).await;
        assert!(first.complete, "{first:?}");
        assert_eq!(first.counts.converted + first.counts.kept, IMAGES.len() as u64, "{first:?}");
        assert_eq!(first.counts.failed, 1, "the broken JPEG: {first:?}");
        assert_eq!(first.failures[0].key, "a/broken.jpg");
        let kept = first.counts.kept as usize;
        assert_eq!(IMAGES.len() - missing_webps(&storage).await.len(), IMAGES.len() - kept);

        let second = run_now(&pipeline, false).await;
        assert_eq!((second.counts.converted, second.counts.queued), (0, 0), "nothing left to do: {second:?}");
        // Another run while one is going on is refused, not queued behind it.
        let third = pipeline.scheduler.send(RunNow { force: true }).await.unwrap().unwrap();
        assert!(matches!(
            pipeline.scheduler.send(RunNow { force: false }).await.unwrap(),
            Err(BeginError::AlreadyRunning)
        ));
        third.done.await.unwrap();
    });
}

/// One instance of a cluster, its bucket reached through a probe of its own.
struct Instance {
    pipeline: Pipeline,
    probe: Probe,
    cluster: Arc<crate::cluster::Cluster>,
}

fn cluster_config(id: &str) -> ClusterConfig {
    ClusterConfig {
        prefix: ".image-converting-server/".into(),
        shards: 8,
        lease: Duration::from_secs(3),
        max_clock_skew: Duration::from_millis(300),
        instance_id: id.into(),
    }
}

fn start_instance(config: &Config, id: &str, bucket: &Arc<dyn ObjectStore>, puts: &PutCounts) -> Instance {
    let probe = Probe::new(bucket.clone(), puts.clone());
    let storage = Storage::from_store(Arc::new(probe.clone()), "mem");
    let mut config = config.clone();
    config.state.cluster = Some(cluster_config(id));
    let cluster = crate::cluster::Cluster::new(cluster_config(id));
    let pipeline = Pipeline::start_manual(Arc::new(config), storage, StateBackend::from(cluster.clone()));
    Instance { pipeline, probe, cluster }
}

/// Waits until every image has its WebP (or was kept) and no instance runs.
async fn settle(storage: &Storage, instances: &[Instance], expected: usize) {
    for _ in 0..600 {
        let mut idle = true;
        for i in instances {
            idle &= !i.pipeline.state_keeper.send(GetProgress).await.unwrap().running;
        }
        if idle && IMAGES.len() - missing_webps(storage).await.len() >= expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster did not convert the bucket: missing {:?}", missing_webps(storage).await);
}

/// The WebPs PUT more than once (should be none).
fn twice(puts: &PutCounts) -> BTreeMap<String, u32> {
    puts.lock().unwrap().iter().filter(|(k, n)| k.ends_with(".webp") && **n > 1).map(|(k, n)| (k.clone(), *n)).collect()
}

/// Instances `ids` sharing one filled in-memory bucket: how many WebPs a solo run of it
/// stores, a view of the bucket to check the outcome, its PUTs counted per key, and the
/// instances.
async fn start_cluster(
    dir: &std::path::Path,
    config: &Config,
    ids: &[&str],
) -> (usize, Storage, PutCounts, Vec<Instance>) {
    let expected = expected_webps(dir).await;
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let puts: PutCounts = Arc::new(Mutex::new(BTreeMap::new()));
    let storage = Storage::from_store(bucket.clone(), "mem");
    fill(&storage).await;
    let instances = ids.iter().map(|id| start_instance(config, id, &bucket, &puts)).collect();
    (expected, storage, puts, instances)
}

/// How many images a solo run keeps (their WebP would be larger), for the cluster tests.
async fn expected_webps(dir: &std::path::Path) -> usize {
    let config = Arc::new(config(&dir.join("solo")));
    let storage = Storage::in_memory("mem");
    fill(&storage).await;
    let backend = StateBackend::file(&config.state.dir).unwrap();
    let p = Pipeline::start_manual(config, storage.clone(), backend);
    let s = run_now(&p, false).await;
    IMAGES.len() - s.counts.kept as usize
}

#[test]
fn three_instances_sharing_one_bucket_convert_each_image_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    actix::System::new().block_on(async move {
        let (expected, storage, puts, instances) = start_cluster(dir.path(), &config, &["i0", "i1", "i2"]).await;
        // Once each holds its share (two surveys, a third of a lease apart), one asks
        // for a run of the whole cluster; each runs its own shards.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let asked = instances[1].pipeline.scheduler.send(RunNow { force: false }).await.unwrap();
        assert!(matches!(asked, Err(BeginError::Queued)), "a cluster run is queued for the shards' holders");
        settle(&storage, &instances, expected).await;
        assert_eq!(twice(&puts), BTreeMap::new(), "no WebP stored twice");
        let held: usize = instances.iter().map(|i| i.cluster.held_ids().len()).sum();
        assert_eq!(held, 8, "every shard held by one instance");
    });
}

#[test]
fn an_instance_paused_past_its_lease_loses_its_shards_and_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    actix::System::new().block_on(async move {
        let (expected, storage, puts, instances) = start_cluster(dir.path(), &config, &["p0", "p1"]).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let paused = instances[0].cluster.clone();
        assert!(!paused.held_ids().is_empty(), "p0 holds its share before the pause");
        // p0 stops reaching the bucket (a frozen VM, a partition) past its lease; the
        // run requested meanwhile is p1's to do, p0's shards included once they expire.
        instances[0].probe.close();
        let asked = instances[1].pipeline.scheduler.send(RunNow { force: false }).await.unwrap();
        assert!(matches!(asked, Err(BeginError::Queued)));
        settle(&storage, &instances[1..], expected).await;
        let taker = instances[1].cluster.clone();
        assert_eq!(taker.held_ids().len(), 8, "p1 took p0's expired shards");
        // p0 wakes up: its next shard write is refused and it drops the shard.
        instances[0].probe.open();
        for _ in 0..100 {
            if paused.view().leases_lost > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(paused.view().leases_lost > 0, "p0 saw its lease lost: {:?}", paused.view());
        settle(&storage, &instances, expected).await;
        assert_eq!(twice(&puts), BTreeMap::new(), "no WebP stored twice");
    });
}
