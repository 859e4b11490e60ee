//! Several buckets (`r2.buckets` / `R2_BUCKETS`): one pipeline — a *lane* — per bucket.
//!
//! Each lane has its own Scheduler, Lister, Uploader and StateKeeper, so its own runs,
//! its own state file and run lock (`state-<bucket>.json` and `.lock-<bucket>` in
//! `state.dir` when there are several buckets: the multi-bucket Go server's file names),
//! its own `bucket` label in `/metrics` and its own `batch.completed` webhook; with
//! `state.backend: bucket` its own Coordinator, whose shards live in that bucket. A run
//! of one bucket never blocks or resets another's. All lanes share one Converter pool and
//! one memory budget ([`Pool`]), so the process's CPU and memory bounds hold whatever
//! the number of buckets. One bucket is one lane, exactly the single-bucket daemon.
//!
//! Data flows one way: the daemon opens the lanes here and hands them to the API, which
//! routes `r2://<bucket>/<key>` to the lane of that bucket.

use std::path::Path;
use std::sync::Arc;

use actix::Recipient;

use crate::actors::{Pipeline, Pool, RunFinished, StateBackend};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::state::FileStateStore;
use crate::state::go_state::{self, GO_DATA_DIR};
use crate::storage::Storage;

/// One bucket's running pipeline.
#[derive(Clone)]
pub struct Lane {
    /// The bucket's name (as in `r2://<bucket>/…`).
    pub bucket: String,
    /// That bucket's configuration ([`Config::for_bucket`]).
    pub config: Arc<Config>,
    pub storage: Storage,
    pub pipeline: Pipeline,
}

/// A bucket opened but not started: its storage and where its state lives.
pub struct Opened {
    pub config: Config,
    pub storage: Storage,
    pub backend: StateBackend,
}

/// Why a lane could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    #[error("bucket {bucket:?} is not configured (r2.buckets: {})", configured.join(", "))]
    Unknown { bucket: String, configured: Vec<String> },
    #[error("bucket {bucket}: {message}")]
    Open { bucket: String, message: String },
}

/// The buckets `only` selects (every configured bucket when `None`), the primary first.
pub fn select(config: &Config, only: Option<&str>) -> Result<Vec<String>, LaneError> {
    let all = config.buckets();
    match only {
        None => Ok(all),
        Some(b) if all.iter().any(|x| x == b) => Ok(vec![b.to_owned()]),
        Some(b) => Err(LaneError::Unknown { bucket: b.to_owned(), configured: all }),
    }
}

/// Opens each of `buckets`: its storage (`primary` is the first configured bucket's,
/// handed in so tests and embedders can pass their own), its state store and — when
/// this program has no state of its own for it yet — the Go server's state for it,
/// adopted (`data/state.json`, or with several buckets `data/state-<bucket>.json`).
pub fn open(config: &Config, primary: &Storage, buckets: &[String]) -> Result<Vec<Opened>, LaneError> {
    let several = config.buckets().len() > 1;
    let primary_name = config.buckets().into_iter().next().unwrap_or_default();
    buckets
        .iter()
        .map(|bucket| {
            let err = |message: String| LaneError::Open { bucket: bucket.clone(), message };
            let mut config = config.for_bucket(bucket);
            let storage = if *bucket == primary_name {
                primary.clone()
            } else {
                // The primary's store: on S3, one request window for every bucket.
                primary.open_beside(&config.storage, bucket).map_err(|e| err(e.to_string()))?
            };
            let backend = match config.state.cluster.clone() {
                Some(c) => {
                    go_lower_bound(&mut config, bucket, several).map_err(err)?;
                    StateBackend::Bucket(crate::cluster::Cluster::new(c))
                }
                None => {
                    let store = FileStateStore::named(&config.state.dir, &config.state.file, &config.state.lock)
                        .map_err(|e| err(e.to_string()))?;
                    go_state::adopt(&store, Path::new(GO_DATA_DIR), bucket, several).map_err(|e| err(e.to_string()))?;
                    StateBackend::Own(Box::new(store))
                }
            };
            Ok(Opened { config, storage, backend })
        })
        .collect()
}

/// `state.backend: bucket`: the shards' state lives in the bucket, so a Go state file is
/// not migrated; instead, unless `state.initial` is set, the Go server's
/// `last_processed_time` for this bucket becomes its `state.initial` — the lower bound of
/// every shard with no state yet (shards with state keep theirs), as an adopted file is
/// for the state file. Said at INFO on each start that uses it.
fn go_lower_bound(config: &mut Config, bucket: &str, several: bool) -> Result<(), String> {
    if config.origins.of("state.initial") != crate::config::Origin::Default {
        return Ok(());
    }
    let found = go_state::find(Path::new(GO_DATA_DIR), bucket, several).map_err(|e| e.to_string())?;
    if let Some((path, go)) = found
        && let Some(t) = go.last_processed_time
    {
        config.state.initial = crate::config::Initial::Since(t);
        tracing::info!(
            from = %path.display(),
            bucket,
            "The Go server's state gives shards with no state yet their lower bound: its last_processed_time {} \
             (as state.initial; the Go file is not migrated in state.backend: bucket)",
            t.to_rfc3339()
        );
    }
    Ok(())
}

/// Starts a pipeline for each opened bucket on the current actix system, all converting
/// in one new [`Pool`]; `metrics` is the registry (each lane records under its bucket's
/// label); each finished run goes to `listeners`.
pub fn start(
    config: &Config,
    opened: Vec<Opened>,
    schedule: Option<Schedule>,
    run_on_start: bool,
    metrics: &Metrics,
    listeners: Vec<Recipient<RunFinished>>,
) -> Vec<Lane> {
    let pool = Pool::start(config);
    opened
        .into_iter()
        .map(|Opened { config, storage, backend }| {
            let bucket = storage.bucket().to_owned();
            let config = Arc::new(config);
            let metrics = Arc::new(metrics.for_bucket(&bucket));
            let pipeline = Pipeline::start_in(
                &pool,
                config.clone(),
                storage.clone(),
                backend,
                schedule.clone(),
                run_on_start,
                metrics,
                listeners.clone(),
            );
            Lane { bucket, config, storage, pipeline }
        })
        .collect()
}
