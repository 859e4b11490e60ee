//! The pipeline's properties, in-process on the in-memory bucket, over seeds: whatever
//! the bucket holds and whenever sources arrive, nothing is missed and no WebP is stored
//! twice; a run stopped mid-way resumes and converts nothing twice; bucket events beside a
//! run store each WebP once. Every PUT is counted at a probe between the daemon and the
//! bucket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;

use super::*;
use crate::events::handle::{Handled, Handler};
use crate::events::record::{EventKind, ObjectEvent};
use crate::model::RunSummary;
use crate::state::StateStore;
use crate::storage::probe::{Probe, PutCounts};

/// Small real images (and one that is no image), cycled over the random keys.
const BODIES: &[&[u8]] = &[
    include_bytes!("../../testdata/images/png_rgb.png"),
    include_bytes!("../../testdata/images/png_palette.png"),
    include_bytes!("../../testdata/images/gif_static.gif"),
    include_bytes!("../../testdata/images/jpeg_gray.jpg"),
    b"not an image at all",
];

const SEEDS: u64 = 4;

/// splitmix64: a seeded generator, enough to vary the cases.
struct StdRng(u64);

impl StdRng {
    fn seed_from_u64(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn random_range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }
}

fn config(state_dir: &std::path::Path) -> Config {
    let mut config = Config::validate(Default::default()).unwrap();
    config.state.dir = state_dir.to_owned();
    // Bucket events may come beside the runs (the third property sends some).
    config.events.webhook_enabled = true;
    config.cron.enabled = false;
    config.cron.run_on_start = false;
    config.pipeline.workers = 1;
    // Keep every WebP, even one larger than its tiny source: each source then has one.
    config.skip_if_larger = false;
    config
}

/// A bucket behind a probe that counts each key's successful PUTs.
fn bucket() -> (Storage, PutCounts) {
    let (storage, _, puts) = probed(Arc::new(InMemory::new()), PutCounts::default());
    (storage, puts)
}

/// `bucket` seen through a probe of its own, counting into `puts`.
fn probed(bucket: Arc<InMemory>, puts: PutCounts) -> (Storage, Probe, PutCounts) {
    let probe = Probe::new(bucket, puts.clone());
    (Storage::from_store(Arc::new(probe.clone()), "mem"), probe, puts)
}

/// `n` random source keys in a few folders, some in upper case, with a body index each.
fn random_sources(rng: &mut StdRng, n: usize) -> BTreeMap<String, usize> {
    let exts = ["jpg", "png", "gif", "JPEG", "PNG"];
    let mut out = BTreeMap::new();
    while out.len() < n {
        let dir = ["", "a/", "a/b/", "z/"][rng.random_range(0..4) as usize];
        let key = format!(
            "{dir}img{:03}.{}",
            rng.random_range(0..1000),
            exts[rng.random_range(0..exts.len() as u64) as usize]
        );
        // One source per output: two claimants of one WebP are given up, not converted.
        if !out.keys().any(|k: &String| crate::naming::webp_key(k) == crate::naming::webp_key(&key)) {
            out.insert(key, rng.random_range(0..BODIES.len() as u64) as usize);
        }
    }
    out
}

async fn run_now(pipeline: &Pipeline) -> RunSummary {
    let handle = pipeline.scheduler.send(RunNow { force: false }).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(60), handle.done).await.expect("the run ends").unwrap()
}

/// Sources that are images and have no WebP.
async fn missed(storage: &Storage, sources: &BTreeMap<String, usize>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, body) in sources {
        let is_image = *body != BODIES.len() - 1;
        if is_image && storage.head(&crate::naming::webp_key(key)).await.is_err() {
            out.push(key.clone());
        }
    }
    out
}

fn stored_twice(puts: &PutCounts) -> BTreeMap<String, u32> {
    let puts = puts.lock().unwrap();
    puts.iter().filter(|(k, n)| k.ends_with(".webp") && **n > 1).map(|(k, n)| (k.clone(), *n)).collect()
}

/// Whatever the bucket holds, and sources uploaded while a run goes on: after that run
/// and the next, every image has its WebP, the broken ones are given up with their
/// reason, and no WebP was stored twice; a third run does nothing.
#[test]
fn nothing_is_missed_and_nothing_stored_twice_whenever_sources_arrive() {
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(config(dir.path()));
        let (storage, puts) = bucket();
        let before = random_sources(&mut rng, 24);
        let during = random_sources(&mut rng, 12);
        let during: BTreeMap<String, usize> = during
            .into_iter()
            .filter(|(k, _)| !before.keys().any(|b| crate::naming::webp_key(b) == crate::naming::webp_key(k)))
            .collect();
        actix::System::new().block_on(async move {
            for (key, body) in &before {
                storage.put(key, Bytes::from_static(BODIES[*body]), "application/octet-stream").await.unwrap();
            }
            let backend = StateBackend::file(&config.state.dir).unwrap();
            let pipeline = Pipeline::start_manual(config.clone(), storage.clone(), backend);
            let handle = pipeline.scheduler.send(RunNow { force: false }).await.unwrap().unwrap();
            for (key, body) in &during {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
                storage.put(key, Bytes::from_static(BODIES[*body]), "application/octet-stream").await.unwrap();
            }
            let first = handle.done.await.unwrap();
            let second = run_now(&pipeline).await;
            let mut all = before.clone();
            all.extend(during.clone());
            assert_eq!(missed(&storage, &all).await, Vec::<String>::new(), "seed {seed}: {first:?} {second:?}");
            assert_eq!(stored_twice(&puts), BTreeMap::new(), "seed {seed}");
            let broken = all.values().filter(|b| **b == BODIES.len() - 1).count() as u64;
            assert_eq!(
                first.counts.failed + second.counts.failed,
                broken,
                "seed {seed}: each broken one given up once"
            );
            for f in first.failures.iter().chain(&second.failures) {
                assert_eq!(f.code, "not_an_image", "seed {seed}: {f:?}");
            }
            let third = run_now(&pipeline).await;
            assert_eq!((third.counts.converted, third.counts.failed), (0, 0), "seed {seed}: {third:?}");
        });
    }
}

/// A process that dies at a random point of its run (from then on none of its calls
/// reaches the bucket, and its run is abandoned) is resumed by the next process on the
/// same bucket and state: every image converted, none stored twice.
#[test]
fn a_run_cut_off_midway_is_resumed_and_converts_nothing_twice() {
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(100 + seed);
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(config(dir.path()));
        let shared = Arc::new(InMemory::new());
        let (dying, probe, puts) = probed(shared.clone(), PutCounts::default());
        let (storage, _, _) = probed(shared, puts.clone());
        let sources = random_sources(&mut rng, 30);
        let stop_after = Duration::from_millis(rng.random_range(5..120));
        actix::System::new().block_on(async {
            for (key, body) in &sources {
                storage.put(key, Bytes::from_static(BODIES[*body]), "application/octet-stream").await.unwrap();
            }
            let backend = StateBackend::file(&config.state.dir).unwrap();
            let first = Pipeline::start_manual(config.clone(), dying.clone(), backend);
            let handle = first.scheduler.send(RunNow { force: false }).await.unwrap().unwrap();
            tokio::time::sleep(stop_after).await;
            // The process dies: nothing of it reaches the bucket any more.
            probe.close();
            first.state_keeper.send(StopRun { now: true }).await.unwrap();
            let stopped = handle.done.await.unwrap();
            // The next process: a pipeline of its own over the same bucket and state.
            let backend = StateBackend::file(&config.state.dir).unwrap();
            let next = Pipeline::start_manual(config.clone(), storage.clone(), backend);
            let resumed = run_now(&next).await;
            assert!(resumed.complete, "seed {seed}: {resumed:?}");
            assert_eq!(missed(&storage, &sources).await, Vec::<String>::new(), "seed {seed}: {stopped:?}");
            assert_eq!(stored_twice(&puts), BTreeMap::new(), "seed {seed}");
        });
    }
}

/// Bucket events for every source arrive while a run converts the same bucket: every
/// image has its WebP, and none is stored twice.
#[test]
fn events_beside_a_run_store_each_webp_once() {
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(200 + seed);
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(config(dir.path()));
        let (storage, puts) = bucket();
        let sources = random_sources(&mut rng, 20);
        actix::System::new().block_on(async {
            for (key, body) in &sources {
                storage.put(key, Bytes::from_static(BODIES[*body]), "application/octet-stream").await.unwrap();
            }
            let backend = StateBackend::file(&config.state.dir).unwrap();
            let pipeline = Pipeline::start_manual(config.clone(), storage.clone(), backend);
            let handler = Handler::new(config.clone(), storage.clone(), &pipeline, Default::default());
            let handle = pipeline.scheduler.send(RunNow { force: false }).await.unwrap().unwrap();
            let events = sources.keys().map(|key| {
                let handler = handler.clone();
                let event = ObjectEvent {
                    kind: EventKind::Created,
                    bucket: "mem".into(),
                    key: key.clone(),
                    etag: None,
                    time: None,
                };
                async move { handler.handle(&event).await }
            });
            let handled = futures::future::join_all(events).await;
            let summary = handle.done.await.unwrap();
            assert!(handled.iter().all(|h| matches!(h, Handled::Done(_))), "seed {seed}: {handled:?}");
            assert_eq!(missed(&storage, &sources).await, Vec::<String>::new(), "seed {seed}: {summary:?}");
            assert_eq!(stored_twice(&puts), BTreeMap::new(), "seed {seed}: {summary:?}");
        });
    }
}

/// Sources whose reads keep failing (a transient error to the daemon) are retried by the
/// next runs, then given up after `state.max_attempts` with their reason, and left alone
/// after that; the others are converted once.
#[test]
fn retries_are_given_up_with_their_reason_after_the_last_attempt() {
    for seed in 0..SEEDS {
        let mut rng = StdRng::seed_from_u64(300 + seed);
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.state.max_attempts = 3;
        config.state.retry_base = Duration::ZERO;
        let config = Arc::new(config);
        let (storage, probe, puts) = probed(Arc::new(InMemory::new()), PutCounts::default());
        let mut sources = random_sources(&mut rng, 16);
        sources.retain(|_, b| *b != BODIES.len() - 1);
        let flaky: Vec<String> = sources.keys().filter(|_| rng.random_range(0..3) == 0).cloned().collect();
        actix::System::new().block_on(async {
            for (key, body) in &sources {
                let key = if flaky.contains(key) { key.replacen("img", "flaky", 1) } else { key.clone() };
                storage.put(&key, Bytes::from_static(BODIES[*body]), "application/octet-stream").await.unwrap();
            }
            probe.fail_reads_of("flaky");
            let backend = StateBackend::file(&config.state.dir).unwrap();
            let pipeline = Pipeline::start_manual(config.clone(), storage.clone(), backend);
            let mut failed = Vec::new();
            for _ in 0..5 {
                let s = run_now(&pipeline).await;
                assert!(s.failures.iter().all(|f| f.key.contains("flaky")), "seed {seed}: {s:?}");
                assert!(s.failures.iter().all(|f| f.code == "download_failed"), "seed {seed}: {s:?}");
                assert!(s.failures.iter().all(|f| f.reason.contains("the probe fails this read")), "seed {seed}");
                failed.push(s.counts.failed);
            }
            let n = flaky.len() as u64;
            assert_eq!(failed, [n, n, n, 0, 0], "seed {seed}: tried max_attempts times, then left alone");
            let state = crate::state::FileStateStore::new(&config.state.dir).unwrap().load().unwrap().unwrap();
            for key in &flaky {
                let e = &state.ledger[&key.replacen("img", "flaky", 1)];
                assert_eq!(
                    (e.kind, e.code.as_str(), e.attempts),
                    (crate::state::LedgerKind::GivenUp, "download_failed", 3)
                );
            }
            assert_eq!(stored_twice(&puts), BTreeMap::new(), "seed {seed}");
            let converted = puts.lock().unwrap().keys().filter(|k| k.ends_with(".webp")).count();
            assert_eq!(converted, sources.len() - flaky.len(), "seed {seed}");
        });
    }
}
