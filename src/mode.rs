//! How this instance shares its bucket — alone, or with other instances — as one seam.
//!
//! The choice is made once, at start-up, by [`crate::lanes::open`] (the one place that
//! names a mode): it hands the pipeline a [`StateBackend`]. Before the actors run, the
//! backend gives the StateKeeper its [`StateStore`] and the stages their [`RunScope`];
//! once they run, [`Backend::start`] turns it into the running [`Mode`], which owns
//! everything else that differs between the modes:
//!
//! - beginning a run ([`Mode::request_run`]: the Scheduler's cron ticks and "run now");
//! - `run-once`'s whole run ([`Mode::whole_run`]: alone, this instance's run; shared,
//!   every shard's answer to one request, whoever runs it);
//! - stopping and leaving ([`Mode::stop`], [`Mode::leave`]);
//! - the status view and the readiness of its own parts ([`Mode::view`],
//!   [`Mode::stopped_part`]).
//!
//! [`Alone`] is the state file with its OS lock; the shared mode lives with the rest of
//! the cluster in `src/cluster/`. Nothing outside this seam asks which mode it is in.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::{LocalBoxFuture, Shared};

use crate::actors::lister::Lister;
use crate::actors::runs::{RunHandle, begin};
use crate::actors::state_keeper::{BeginError, StateKeeper, StopRun};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::RunSummary;
use crate::scope::{OneShard, RunScope, Solo};
use crate::state::{State, StateError, StateStore};
use crate::storage::Storage;

/// The shutdown signal as every bucket's whole run awaits it.
pub type Shutdown = Shared<LocalBoxFuture<'static, ()>>;

/// The running actors a mode drives.
#[derive(Clone)]
pub struct Parts {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub state_keeper: Addr<StateKeeper>,
    pub lister: Addr<Lister>,
    pub metrics: Arc<Metrics>,
}

/// Why `run-once` had no run of a bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRun {
    /// Another run holds the lock (the Go server's message).
    #[error("cron job is already running")]
    Locked,
    /// The run could not begin, or ended without a summary.
    #[error("{0}")]
    Fatal(String),
}

/// A mode before the actors run: where the state lives and what a run covers.
pub trait Backend: Send {
    /// The StateKeeper's store. Called once, before [`Backend::start`].
    fn take_store(&mut self) -> Box<dyn StateStore>;
    /// What the stages (Lister, Uploader) may act on.
    fn scope(&self) -> Arc<dyn RunScope>;
    /// The state a run would start from, read without taking anything
    /// (`run-once --dry-run`).
    fn read_state<'a>(&'a self, storage: &'a Storage) -> LocalBoxFuture<'a, Result<State, String>>;
    /// Starts the mode's own parts, driving `parts`.
    fn start(self: Box<Self>, parts: Parts) -> Arc<dyn Mode>;
}

/// A running mode: how runs begin and end, and how this instance leaves.
pub trait Mode: Send + Sync {
    /// Begins a run now (`tick`: the cron fire time, if a tick asked).
    fn request_run(
        &self,
        force: bool,
        tick: Option<DateTime<Utc>>,
    ) -> LocalBoxFuture<'static, Result<RunHandle, BeginError>>;
    /// `run-once`: one whole run, its summary when it is over; `shutdown` resolving stops
    /// it gracefully (the next run resumes).
    fn whole_run(&self, force: bool, shutdown: Shutdown) -> LocalBoxFuture<'static, Result<RunSummary, NoRun>>;
    /// Stops for good: no new run, the current one finished (for up to
    /// `pipeline.shutdown_timeout_seconds`, then abandoned as resumable), then leaves.
    fn stop(&self) -> LocalBoxFuture<'static, ()>;
    /// Leaves without a run to stop (start-up failed after the mode started).
    fn leave(&self) -> LocalBoxFuture<'static, ()>;
    /// What `/api/status` shows of the mode, if anything.
    fn view(&self) -> Option<serde_json::Value>;
    /// The first of the mode's own parts that no longer runs (`/ready`), if any.
    fn stopped_part(&self) -> Option<&'static str>;
}

/// The backend handed to a pipeline.
pub struct StateBackend(pub(crate) Box<dyn Backend>);

impl StateBackend {
    /// A backend of any mode.
    pub fn new(backend: impl Backend + 'static) -> Self {
        Self(Box::new(backend))
    }

    /// One instance owning the bucket through `store`.
    pub fn own(store: Box<dyn StateStore>) -> Self {
        Self::new(Alone { store: Some(store), scope: Arc::new(Solo) })
    }

    /// A static shard (`run-once --shard I/N`): this process owns the keys of shard
    /// `index` of `count`, with `store` (that shard's own state) and nothing shared —
    /// no lease, heartbeat or run trigger: the shards never touch one another's keys.
    pub fn one_shard(store: Box<dyn StateStore>, index: u32, count: u32) -> Self {
        Self::new(Alone { store: Some(store), scope: Arc::new(OneShard { index, count }) })
    }

    /// The state file `state.json` in `dir` (created if missing), locked by `.lock`.
    pub fn file(dir: &std::path::Path) -> Result<Self, StateError> {
        Ok(Self::own(Box::new(crate::state::FileStateStore::new(dir)?)))
    }
}

/// One instance owns the bucket (or a static shard of it): the state file and its OS
/// lock.
pub struct Alone {
    store: Option<Box<dyn StateStore>>,
    scope: Arc<dyn RunScope>,
}

impl Backend for Alone {
    fn take_store(&mut self) -> Box<dyn StateStore> {
        self.store.take().expect("the store is taken once")
    }

    fn scope(&self) -> Arc<dyn RunScope> {
        self.scope.clone()
    }

    fn read_state<'a>(&'a self, _: &'a Storage) -> LocalBoxFuture<'a, Result<State, String>> {
        let loaded = match &self.store {
            Some(store) => store.load().map(Option::unwrap_or_default).map_err(|e| e.to_string()),
            None => Err("the state store is in use".to_owned()),
        };
        futures::future::ready(loaded).boxed_local()
    }

    fn start(self: Box<Self>, parts: Parts) -> Arc<dyn Mode> {
        Arc::new(AloneRunning { parts })
    }
}

struct AloneRunning {
    parts: Parts,
}

impl Mode for AloneRunning {
    fn request_run(
        &self,
        force: bool,
        _: Option<DateTime<Utc>>,
    ) -> LocalBoxFuture<'static, Result<RunHandle, BeginError>> {
        begin(self.parts.state_keeper.clone(), self.parts.lister.clone(), force).boxed_local()
    }

    fn whole_run(&self, force: bool, shutdown: Shutdown) -> LocalBoxFuture<'static, Result<RunSummary, NoRun>> {
        let begun = self.request_run(force, None);
        let (state_keeper, timeout) = (self.parts.state_keeper.clone(), self.parts.config.pipeline.shutdown_timeout);
        async move {
            let mut handle = match begun.await {
                Ok(h) => h,
                Err(BeginError::AlreadyRunning) => return Err(NoRun::Locked),
                Err(e) => return Err(NoRun::Fatal(e.to_string())),
            };
            let summary = tokio::select! {
                s = &mut handle.done => s,
                _ = shutdown => {
                    stop_run(&state_keeper, timeout).await;
                    handle.done.await
                }
            };
            summary.map_err(|_| NoRun::Fatal("the run ended without a summary".into()))
        }
        .boxed_local()
    }

    fn stop(&self) -> LocalBoxFuture<'static, ()> {
        let (state_keeper, timeout) = (self.parts.state_keeper.clone(), self.parts.config.pipeline.shutdown_timeout);
        async move { stop_run(&state_keeper, timeout).await }.boxed_local()
    }

    fn leave(&self) -> LocalBoxFuture<'static, ()> {
        futures::future::ready(()).boxed_local()
    }

    fn view(&self) -> Option<serde_json::Value> {
        None
    }

    fn stopped_part(&self) -> Option<&'static str> {
        None
    }
}

/// Stops the current run gracefully, then forcibly after `timeout` (its images in
/// flight are redone by the next run).
pub async fn stop_run(state_keeper: &Addr<StateKeeper>, timeout: Duration) {
    tracing::info!(timeout_s = timeout.as_secs(), "Shutting down: finishing images in flight");
    let graceful = state_keeper.send(StopRun { now: false });
    if tokio::time::timeout(timeout, graceful).await.is_err() {
        tracing::warn!("Shutdown timeout: abandoning images in flight (they are redone next run)");
        let _ = state_keeper.send(StopRun { now: true }).await;
    }
}
