//! The shared mode (`state.backend: bucket`) behind the seam of [`crate::mode`]: the
//! state lives in the shards' lease objects ([`ClusterStore`]), a run covers the shards
//! this instance holds ([`Cluster`] as the [`RunScope`]), the [`Coordinator`] requests
//! and runs them, and `run-once` waits until every shard has answered its request,
//! whichever instance ran it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use futures::future::LocalBoxFuture;

use super::coordinator::{Coordinator, FinishRun, Leave, Quiesce, RequestRun, Trigger, WholeRun};
use super::{Cluster, ClusterStore};
use crate::actors::runs::RunHandle;
use crate::actors::state_keeper::BeginError;
use crate::mode::{Backend, Mode, NoRun, Parts, Shutdown, StateBackend, stop_run};
use crate::model::{RunCounts, RunSummary};
use crate::scope::RunScope;
use crate::state::{State, StateStore};
use crate::storage::Storage;

/// The shared mode before the actors run.
pub struct Shared {
    cluster: Arc<Cluster>,
}

impl Shared {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }
}

impl From<Arc<Cluster>> for StateBackend {
    fn from(cluster: Arc<Cluster>) -> Self {
        StateBackend::new(Shared::new(cluster))
    }
}

impl Backend for Shared {
    fn take_store(&mut self) -> Box<dyn StateStore> {
        Box::new(ClusterStore(self.cluster.clone()))
    }

    fn scope(&self) -> Arc<dyn RunScope> {
        self.cluster.clone()
    }

    fn read_state<'a>(&'a self, storage: &'a Storage) -> LocalBoxFuture<'a, Result<State, String>> {
        async move { super::read_all_states(storage, &self.cluster.config).await.map_err(|e| e.to_string()) }
            .boxed_local()
    }

    fn start(self: Box<Self>, parts: Parts) -> Arc<dyn Mode> {
        let Parts { config, storage, state_keeper, lister, metrics } = parts;
        let timeout = config.pipeline.shutdown_timeout;
        let coordinator =
            Coordinator::new(self.cluster.clone(), storage, config, state_keeper.clone(), lister, metrics).start();
        Arc::new(SharedRunning { cluster: self.cluster, coordinator, state_keeper, timeout })
    }
}

struct SharedRunning {
    cluster: Arc<Cluster>,
    coordinator: Addr<Coordinator>,
    state_keeper: Addr<crate::actors::StateKeeper>,
    timeout: Duration,
}

impl Mode for SharedRunning {
    fn request_run(
        &self,
        force: bool,
        tick: Option<chrono::DateTime<chrono::Utc>>,
    ) -> LocalBoxFuture<'static, Result<RunHandle, BeginError>> {
        let sent = self.coordinator.send(Trigger { force, at: tick });
        async move { sent.await.unwrap_or(Err(BeginError::AlreadyRunning)) }.boxed_local()
    }

    fn whole_run(&self, force: bool, shutdown: Shutdown) -> LocalBoxFuture<'static, Result<RunSummary, NoRun>> {
        let (cluster, coordinator) = (self.cluster.clone(), self.coordinator.clone());
        let (state_keeper, timeout) = (self.state_keeper.clone(), self.timeout);
        async move {
            let began = std::time::Instant::now();
            join(&cluster).await;
            let at = match coordinator.send(RequestRun { force }).await {
                Ok(Ok(at)) => at,
                Ok(Err(e)) => {
                    let _ = coordinator.send(Quiesce).await;
                    let _ = coordinator.send(Leave).await;
                    return Err(NoRun::Fatal(e.to_string()));
                }
                Err(e) => return Err(NoRun::Fatal(e.to_string())),
            };
            tracing::info!(at = %at.to_rfc3339(), "Waiting until every shard has answered the run request");
            let period = (cluster.config.lease / 6).clamp(Duration::from_millis(200), Duration::from_secs(1));
            let mut shutdown = shutdown;
            let mut interrupted = false;
            let whole = loop {
                let whole = match coordinator.send(FinishRun { at }).await {
                    Ok(Some(w)) => w,
                    Ok(None) => return Err(NoRun::Fatal("the cluster coordinator has stopped".into())),
                    Err(e) => return Err(NoRun::Fatal(e.to_string())),
                };
                if whole.pending.is_empty() || interrupted {
                    break whole;
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = &mut shutdown => interrupted = true,
                }
            };
            // A run of a later request may be going on here: it stops as resumable, and
            // the shards go back to the cluster with their state.
            let _ = coordinator.send(Quiesce).await;
            stop_run(&state_keeper, timeout).await;
            let _ = coordinator.send(Leave).await;
            Ok(whole_summary(at, &whole, began.elapsed()))
        }
        .boxed_local()
    }

    fn stop(&self) -> LocalBoxFuture<'static, ()> {
        let (coordinator, state_keeper, timeout) = (self.coordinator.clone(), self.state_keeper.clone(), self.timeout);
        async move {
            let _ = coordinator.send(Quiesce).await;
            stop_run(&state_keeper, timeout).await;
            let _ = coordinator.send(Leave).await;
        }
        .boxed_local()
    }

    fn leave(&self) -> LocalBoxFuture<'static, ()> {
        let coordinator = self.coordinator.clone();
        async move {
            let _ = coordinator.send(Quiesce).await;
            let _ = coordinator.send(Leave).await;
        }
        .boxed_local()
    }

    fn view(&self) -> Option<serde_json::Value> {
        Some(serde_json::to_value(self.cluster.view()).expect("view serialises"))
    }

    fn stopped_part(&self) -> Option<&'static str> {
        (!self.coordinator.connected()).then_some("Coordinator")
    }
}

/// `run-once`: waits until this instance holds shards (they come after its second
/// survey, a third of a lease each, or once others release some), at most a lease and a
/// little more.
async fn join(cluster: &Cluster) {
    let deadline = tokio::time::Instant::now() + cluster.config.lease + Duration::from_secs(5);
    while cluster.held_ids().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole run's summary: the shards' counts summed, this instance's listing counts
/// and failures, and an error naming the shards that could not be run.
fn whole_summary(at: chrono::DateTime<chrono::Utc>, whole: &WholeRun, took: Duration) -> RunSummary {
    let mut counts = RunCounts::default();
    for s in &whole.done {
        counts.converted += s.run.converted;
        counts.kept += s.run.kept;
        counts.failed += s.run.failed;
        counts.superseded += s.run.superseded;
        counts.bytes_in += s.run.bytes_in;
        counts.bytes_out += s.run.bytes_out;
    }
    for own in &whole.own {
        counts.listed += own.counts.listed;
        counts.skipped += own.counts.skipped;
        counts.queued += own.counts.queued;
    }
    RunSummary {
        run_id: format!("cluster-{}", at.format("%Y%m%dT%H%M%S%.3fZ")),
        started_at: at,
        finished_at: chrono::Utc::now(),
        counts,
        duration_ms: took.as_millis() as u64,
        complete: whole.pending.is_empty() && whole.unreadable.is_empty(),
        error: (!whole.unreadable.is_empty()).then(|| {
            format!("shards {:?} cannot be run: their objects do not parse (repair or delete them)", whole.unreadable)
        }),
        failures: whole.own.iter().flat_map(|s| s.failures.clone()).collect(),
        shards: whole.done.clone(),
    }
}
