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
//!
//! This is where each bucket's mode is chosen ([`crate::mode`]): alone with its state
//! file, or shared with other instances (`state.backend: bucket`, [`crate::cluster`]).
//! It is the one file outside the cluster's home that names it.

use std::path::Path;
use std::sync::Arc;

use actix::Recipient;

use crate::actors::{Pipeline, Pool, RunFinished, StateBackend, StateKeeper, Uploader};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::request::Target;
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

impl Lane {
    /// What a conversion on request needs of this bucket ([`crate::request`]).
    pub fn target(&self) -> Target {
        Target {
            config: self.config.clone(),
            storage: self.storage.clone(),
            converter: self.pipeline.converter.clone(),
            memory: self.pipeline.memory.clone(),
            uploader: self.pipeline.uploader.clone(),
            state_keeper: self.pipeline.state_keeper.clone(),
        }
    }
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
    buckets
        .iter()
        .map(|bucket| {
            let err = |message: String| LaneError::Open { bucket: bucket.clone(), message };
            let one = config.for_bucket(bucket);
            let storage = storage_of(config, &one.storage, primary, bucket)?;
            let mut config = one;
            let backend = match config.state.cluster.clone() {
                // Static shards are coordinated by nothing; a shared bucket by its leases.
                Some(_) if config.state.static_shard.is_some() => {
                    return Err(err("--shard cannot be used with state.backend: bucket (the shards of a \
                                    shared bucket are leased, not static)"
                        .into()));
                }
                Some(c) => {
                    go_lower_bound(&mut config, bucket, several).map_err(err)?;
                    StateBackend::from(crate::cluster::Cluster::new(c))
                }
                None => {
                    // A static shard keeps a state file of its own: the shards never
                    // share one, and a re-run of one finds its own.
                    if let Some((i, n)) = config.state.static_shard {
                        let stem = config.state.file.trim_end_matches(".json").to_owned();
                        config.state.file = format!("{stem}-shard-{i}-of-{n}.json");
                        config.state.lock = format!("{}-shard-{i}-of-{n}", config.state.lock);
                    }
                    let store = FileStateStore::named(&config.state.dir, &config.state.file, &config.state.lock)
                        .map_err(|e| err(e.to_string()))?;
                    go_state::adopt(&store, Path::new(GO_DATA_DIR), bucket, several).map_err(|e| err(e.to_string()))?;
                    match config.state.static_shard {
                        Some((i, n)) => StateBackend::one_shard(Box::new(store), i, n),
                        None => StateBackend::own(Box::new(store)),
                    }
                }
            };
            Ok(Opened { config, storage, backend })
        })
        .collect()
}

/// `bucket`'s storage: `primary` for the first configured bucket, another opened on the
/// primary's store (with `storage`, the bucket's settings) — on S3, one request window
/// for every bucket.
fn storage_of(
    config: &Config,
    storage: &crate::config::StorageConfig,
    primary: &Storage,
    bucket: &str,
) -> Result<Storage, LaneError> {
    if config.buckets().first().map(String::as_str) == Some(bucket) {
        return Ok(primary.clone());
    }
    primary
        .open_beside(storage, bucket)
        .map_err(|e| LaneError::Open { bucket: bucket.to_owned(), message: e.to_string() })
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

/// `check-config`: what `serve` would do with a Go server's state for each configured
/// bucket (adopt it; in bucket mode, take its lower bound), one note each, as `serve`
/// reads it; an error when one cannot be parsed.
pub fn go_state_notes(config: &Config) -> Result<Vec<String>, String> {
    let several = config.buckets().len() > 1;
    let go_dir = Path::new(GO_DATA_DIR);
    let mut notes = Vec::new();
    for bucket in config.buckets() {
        if config.state.cluster.is_none() {
            let one = config.for_bucket(&bucket);
            let ours = one.state.dir.join(&one.state.file);
            if let Some((path, go)) = go_state::pending(&ours, go_dir, &bucket, several).map_err(|e| e.to_string())? {
                notes.push(format!(
                    "{} (the Go server's state) will be adopted at start for bucket {bucket}; lower bound: {}",
                    path.display(),
                    go.last_processed_time.map_or("none (every source)".into(), |t| t.to_rfc3339())
                ));
            }
        } else if config.origins.of("state.initial") == crate::config::Origin::Default
            && let Some((path, go)) = go_state::find(go_dir, &bucket, several).map_err(|e| e.to_string())?
            && let Some(t) = go.last_processed_time
        {
            notes.push(format!(
                "{} (the Go server's state) gives bucket {bucket}'s shards with no state yet their lower bound {} \
                 (as state.initial; the file is not migrated in state.backend: bucket)",
                path.display(),
                t.to_rfc3339()
            ));
        }
    }
    Ok(notes)
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

/// The CLI's `convert`: what a conversion on request needs of `bucket`, and no more —
/// its storage (the primary's store, as [`open`] opens it), the converter pool and the
/// memory budget, an Uploader writing by the bucket's mode's rule (conditional when
/// other instances share the bucket) and the bucket's ledger, read. No Go state is
/// adopted, no run can begin and nothing joins other instances. Must be called on an
/// actix system.
pub fn start_requests(config: &Config, primary: &Storage, bucket: &str) -> Result<Target, LaneError> {
    let bucket_config = config.for_bucket(bucket);
    let storage = storage_of(config, &bucket_config.storage, primary, bucket)?;
    // The bucket's ledger, read (in bucket mode: what a member that holds no shard sees),
    // and its write rule.
    let mut backend = match bucket_config.state.cluster.clone() {
        Some(c) => StateBackend::from(crate::cluster::Cluster::new(c)).0,
        None => {
            let state = &bucket_config.state;
            let store = FileStateStore::named(&state.dir, &state.file, &state.lock)
                .map_err(|e| LaneError::Open { bucket: bucket.to_owned(), message: e.to_string() })?;
            StateBackend::own(Box::new(store)).0
        }
    };
    let pool = Pool::start(config);
    let concurrency = bucket_config.pipeline.upload_concurrency;
    let uploader = Uploader::for_requests(storage.clone(), concurrency, backend.scope());
    let bucket_config = Arc::new(bucket_config);
    let keeper = StateKeeper::new(bucket_config.clone(), backend.take_store(), Default::default(), Vec::new());
    Ok(Target {
        config: bucket_config,
        storage,
        converter: pool.converter,
        memory: pool.memory,
        uploader: actix::Actor::start(uploader),
        state_keeper: actix::Actor::start(keeper),
    })
}
