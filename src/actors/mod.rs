//! The pipeline's actors, one module each. Open this folder to find the flow:
//!
//! ```text
//!  Scheduler ──RunNow/cron tick──▶ StateKeeper: BeginRun (lock, state)
//!      │
//!      └──ListBucket──▶ Lister ──ConvertImage──▶ Converter pool ──UploadWebp──▶ Uploader
//!                         │  (download)            (SyncArbiter)                  │
//!                         │                              │                         │
//!                         └──RecordQueued/Listed──▶ StateKeeper ◀──RecordDone──────┘
//! ```
//!
//! - [`scheduler`]: cron ticks and manual "run now".
//! - [`runs`]: the one place a run begins (for the mode: [`crate::mode`]).
//! - [`lister`]: streams the listing in key order, plans, downloads, feeds the pool.
//! - [`converter`]: CPU-bound decode + encode, one worker per core.
//! - [`uploader`]: puts WebPs with bounded concurrency.
//! - [`state_keeper`]: the state file, the lock, checkpoints, the run's end.
//!
//! How runs begin and end — alone, or shared with other instances — is the pipeline's
//! [`crate::mode::Mode`], chosen once at start-up; no actor here asks which it is.
//!
//! Every image holds a [`crate::model::Slot`] from the moment the Lister queues it until
//! the StateKeeper records it, so the images in flight are bounded however large the
//! bucket is; their bytes are bounded by the memory budget ([`crate::memory`]): a source
//! reserves its size before it is downloaded (until its WebP is uploaded) and its working
//! set before it is decoded. Between the stages, downloads and uploads each run up to
//! `pipeline.max_requests` at once (on S3 inside one AIMD request window that the
//! store's throttling narrows, `crate::storage`), and at most `pipeline.max_queued`
//! downloaded images wait for a converter.

pub mod converter;
pub mod lister;
pub mod runs;
pub mod scheduler;
pub mod state_keeper;
pub mod uploader;
pub mod webhook;

use crate::memory::MemoryBudget;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use actix::prelude::*;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::mode::{Mode, Parts};
use crate::schedule::Schedule;
use crate::scope::RunScope;
use crate::storage::Storage;

pub use crate::mode::StateBackend;
pub use converter::Converter;
pub use lister::Lister;
pub use runs::RunHandle;
pub use scheduler::{NextRun, RunNow, Scheduler};
pub use state_keeper::{BeginError, GetProgress, Progress, RunFinished, StateKeeper, StopRun};
pub use uploader::Uploader;

/// The running actors.
#[derive(Clone)]
pub struct Pipeline {
    pub scheduler: Addr<Scheduler>,
    pub state_keeper: Addr<StateKeeper>,
    pub lister: Addr<Lister>,
    pub converter: Addr<Converter>,
    pub uploader: Addr<Uploader>,
    /// Memory reserved by images being converted, runs' and the API's alike.
    pub memory: MemoryBudget,
    /// How runs begin and end: alone, or shared with other instances.
    pub mode: Arc<dyn Mode>,
}

impl Pipeline {
    /// The first of the pipeline's actors that is no longer running (`/ready`), if any.
    pub fn stopped_actor(&self) -> Option<&'static str> {
        [
            ("Scheduler", self.scheduler.connected()),
            ("StateKeeper", self.state_keeper.connected()),
            ("Lister", self.lister.connected()),
            ("Converter", self.converter.connected()),
            ("Uploader", self.uploader.connected()),
        ]
        .into_iter()
        .find_map(|(name, running)| (!running).then_some(name))
        .or_else(|| self.mode.stopped_part())
    }
}

/// What every bucket's pipeline shares: the Converter pool (its workers are the
/// process's CPU) and the memory budget (the process's memory).
#[derive(Clone)]
pub struct Pool {
    pub converter: Addr<Converter>,
    pub memory: MemoryBudget,
}

impl Pool {
    /// Starts `pipeline.workers` converter threads and the budget of `pipeline.memory_budget_mb`.
    pub fn start(config: &Config) -> Self {
        let (opts, skip) = (config.convert.clone(), config.skip_if_larger);
        let pool = (Arc::new(AtomicUsize::new(0)), config.pipeline.workers);
        let converter =
            SyncArbiter::start(config.pipeline.workers, move || Converter::new(opts.clone(), pool.clone(), skip));
        Self { converter, memory: MemoryBudget::new(config.pipeline.memory_budget_mb) }
    }
}

impl Pipeline {
    /// Starts every actor on the current actix system, with a pool of its own. With
    /// `schedule`, runs also fire on the cron schedule; without, only on [`RunNow`] (and
    /// at once with `run_on_start`).
    pub fn start(
        config: Arc<Config>,
        storage: Storage,
        backend: StateBackend,
        schedule: Option<Schedule>,
        run_on_start: bool,
        metrics: Arc<Metrics>,
        listeners: Vec<Recipient<RunFinished>>,
    ) -> Self {
        let pool = Pool::start(&config);
        Self::start_in(&pool, config, storage, backend, schedule, run_on_start, metrics, listeners)
    }

    /// [`Pipeline::start`] with runs only on [`RunNow`]: no schedule, metrics of its own,
    /// nobody told of finished runs (tests, embedders driving runs themselves).
    pub fn start_manual(config: Arc<Config>, storage: Storage, backend: StateBackend) -> Self {
        Self::start(config, storage, backend, None, false, Default::default(), Vec::new())
    }

    /// Starts one bucket's actors, converting in `pool` (shared with the other buckets'
    /// pipelines and the API). `config` is that bucket's ([`Config::for_bucket`]).
    #[allow(clippy::too_many_arguments)]
    pub fn start_in(
        pool: &Pool,
        config: Arc<Config>,
        storage: Storage,
        backend: StateBackend,
        schedule: Option<Schedule>,
        run_on_start: bool,
        metrics: Arc<Metrics>,
        listeners: Vec<Recipient<RunFinished>>,
    ) -> Self {
        let mut backend = backend.0;
        let store = backend.take_store();
        let state_keeper = StateKeeper::new(config.clone(), store, metrics.clone(), listeners).start();
        let concurrency = config.pipeline.upload_concurrency;
        // The run scope, chosen once here and handed to the stages that act per key.
        let scope: Arc<dyn RunScope> = match backend.scope() {
            scope if config.events.any() => Arc::new(crate::scope::BesideEvents(scope)),
            scope => scope,
        };
        let uploader = Uploader::new(storage.clone(), state_keeper.clone(), concurrency, scope.clone()).start();
        let (converter, memory) = (pool.converter.clone(), pool.memory.clone());
        let route = converter::Route { uploader: uploader.clone(), state_keeper: state_keeper.clone() };
        let lister =
            Lister::new(config.clone(), storage.clone(), route, converter.clone(), memory.clone(), scope).start();
        let parts = Parts { config, storage, state_keeper: state_keeper.clone(), lister: lister.clone(), metrics };
        let mode = backend.start(parts);
        let scheduler = Scheduler::new(schedule, run_on_start, mode.clone()).start();
        Self { scheduler, state_keeper, lister, converter, uploader, memory, mode }
    }
}

#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod properties_tests;
