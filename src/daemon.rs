//! The long-running modes, embeddable: [`serve`] (the scheduler, the pipeline and the
//! HTTP API on a listener it is handed, until a shutdown future resolves), [`run_once`]
//! (one run now) and [`dry_run`] (the plan only). None of them binds a port, installs a
//! signal handler, prints or chooses an exit code: they return typed reports
//! ([`BucketEnd`], [`Planned`], [`ServeError`]), and `cli` binds `server.host:server.port`,
//! turns SIGTERM/SIGINT into the shutdown future, prints the reports and maps them to
//! exit codes. Tests run them in-process on an actix system with an in-memory bucket and a
//! listener on port 0.
//!
//! Each keeps every configured bucket (`r2.buckets`: one pipeline per bucket,
//! [`crate::lanes`]), or the one `--bucket` names; `storage` is the primary bucket's.
//!
//! Shutdown is graceful: once the shutdown future resolves no new image starts, images
//! in flight finish for up to `pipeline.shutdown_timeout_seconds`, the state is
//! checkpointed with the run's position (so the next start resumes it) and the lock is
//! released.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::actors::webhook::{RunListener, WebhookSender};
use crate::actors::{GetProgress, Pipeline, RunFinished};
use crate::api::AppState;
use crate::config::{Config, ConfigError};
use crate::lanes::{self, Lane};
use crate::mode::NoRun;
use crate::model::RunSummary;
use crate::planner::{Decision, PlanRules, Planner};
use crate::storage::Storage;
use crate::webhook::{DeliveryError, Webhook};

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot be served as given (an open API on a public address).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bucket other than the primary, the state directory, or a Go state to adopt
    /// into it, cannot be used.
    #[error("{0}")]
    State(String),
    /// `webhook.url` is set but its HTTP client cannot be made.
    #[error(transparent)]
    Webhook(#[from] DeliveryError),
    /// An event source cannot start (`events:`).
    #[error("{0}")]
    Events(String),
    /// The HTTP server cannot serve on the listener it was handed.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// Flags of `run-once`.
#[derive(Debug, Default)]
pub struct RunOnceOptions {
    pub force: bool,
    /// Only this configured bucket (`--bucket`); every bucket when `None`.
    pub bucket: Option<String>,
    /// Live counts, summed over the buckets, sent here while the runs go on.
    pub progress: Option<watch::Sender<Tally>>,
}

/// Live counts of `run-once`'s runs, summed over the buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub listed: u64,
    pub converted: u64,
    pub skipped: u64,
    pub failed: u64,
    pub in_flight: usize,
}

/// How `run-once` ended for one bucket: its run's summary, or why it had none.
#[derive(Debug)]
pub struct BucketEnd {
    pub bucket: String,
    pub end: Result<RunSummary, NoRun>,
}

/// One line of `run-once --dry-run`: a source a run would convert, or an output several
/// sources claim. Keys are `r2://<bucket>/<key>` addresses when there are several buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Convert { source: String, output: String },
    Conflict { output: String, sources: Vec<String> },
}

/// What `run-once --dry-run` found in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCounts {
    pub convert: u64,
    pub skip: u64,
}

/// Opens the buckets `only` selects (all when `None`; `storage` is the primary's): each
/// its storage and state store, a Go deployment's state adopted when we have none of our
/// own yet ([`lanes::open`]), and in bucket mode the cluster, the one place the run
/// scope is chosen.
fn open(config: &Config, storage: &Storage, only: Option<&str>) -> Result<Vec<lanes::Opened>, String> {
    let buckets = lanes::select(config, only).map_err(|e| e.to_string())?;
    lanes::open(config, storage, &buckets).map_err(|e| e.to_string())
}

/// `serve`: the scheduler, the pipeline and the HTTP API on `listener`, until `shutdown`
/// resolves; then a graceful stop (see the module doc). Must be called on an actix
/// system (`actix::System::new().block_on`, `#[actix_web::test]`).
///
/// Refused before anything starts: an open API (no `api.token`) on a listener that is
/// not a loopback address, unless `api.allow_unauthenticated`.
pub async fn serve(
    config: Config,
    storage: Storage,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let local = listener.local_addr().map_err(|source| ServeError::Listen { addr: "?".into(), source })?;
    config.check_listener(local)?;
    let opened = open(&config, &storage, None).map_err(ServeError::State)?;
    let schedule = if config.cron.enabled {
        Some(config.cron.schedule.clone())
    } else {
        tracing::info!("cron.enabled is false: runs start only on demand");
        None
    };
    let timeout = config.pipeline.shutdown_timeout;
    let run_on_start = config.cron.run_on_start;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let webhook = WebhookSender::new(&config.webhook)?.map(actix::Actor::start);
    let listeners = webhook.iter().map(|w| w.clone().recipient()).collect();
    let lanes = lanes::start(&config, opened, schedule, run_on_start, &metrics, listeners);
    let config = Arc::new(config);
    // Bucket events: one source of each configured kind, each event handled in the
    // bucket it names (its lane), those of buckets not configured ignored.
    let events = match crate::events::Events::start(&lanes, &metrics, webhook.clone()) {
        Ok(e) => e,
        Err(e) => {
            leave_all(&lanes).await;
            return Err(ServeError::Events(e));
        }
    };
    let mut state = AppState::with_lanes(config.clone(), lanes.clone(), metrics, webhook);
    state.events = Some(events.api.clone());
    let server = match http_server(&config, state, listener) {
        Ok(server) => server,
        Err(source) => {
            leave_all(&lanes).await;
            return Err(ServeError::Listen { addr: local.to_string(), source });
        }
    };
    let handle = server.handle();
    actix::spawn(server);
    tracing::info!(buckets = ?config.buckets(), memory_budget_mb = config.pipeline.memory_budget_mb, memory_budget_from = %config.pipeline.memory_budget_from, "Daemon started");
    shutdown.await;
    handle.stop(true).await;
    // Event sources first: the messages in hand finish on the running pipeline.
    events.stop(timeout).await;
    stop_lanes(&lanes).await;
    tracing::info!("Daemon stopped");
    Ok(())
}

/// Stops every bucket's runs at once (gracefully, then forcibly after
/// `pipeline.shutdown_timeout_seconds`), each mode left as it should be.
async fn stop_lanes(lanes: &[Lane]) {
    futures::future::join_all(lanes.iter().map(|lane| lane.pipeline.mode.stop())).await;
}

/// Leaves every bucket's mode when start-up fails after the lanes started.
async fn leave_all(lanes: &[Lane]) {
    futures::future::join_all(lanes.iter().map(|lane| lane.pipeline.mode.leave())).await;
}

/// The API on `listener`; logs the address it listens on.
fn http_server(
    config: &Config,
    state: AppState,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let timeout = std::time::Duration::from_secs(config.server.timeout_seconds);
    let remote = state.remote.clone();
    let server = actix_web::HttpServer::new(move || {
        let state = state.clone();
        actix_web::App::new()
            .wrap(tracing_actix_web::TracingLogger::<crate::api::RequestSpans>::new())
            .wrap(actix_web::middleware::from_fn(crate::api::record_request))
            .configure(move |cfg| crate::api::configure(cfg, state))
    })
    .client_request_timeout(timeout)
    .client_disconnect_timeout(std::time::Duration::from_secs(5))
    .shutdown_timeout(timeout.as_secs())
    .disable_signals()
    .listen(listener)?;
    for addr in server.addrs() {
        tracing::info!("Listening on http://{addr}");
    }
    // URL sources never reach the API itself, whatever is trusted.
    remote.set_own_addresses(server.addrs());
    Ok(server.run())
}

/// `run-once`: one run now of every configured bucket (or of `opts.bucket`'s), the
/// buckets' whole runs side by side (alone: this instance's run; shared with other
/// instances: every shard's answer to one request, [`crate::mode::Mode::whole_run`]);
/// `shutdown` resolving stops them gracefully (the next run resumes). Answers each
/// bucket's end in the configured order, or why no bucket could be opened; each finished
/// run is announced to `webhook.url` first. Must be called on an actix system.
pub async fn run_once(
    config: Config,
    storage: Storage,
    opts: RunOnceOptions,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<Vec<BucketEnd>, NoRun> {
    let opened = open(&config, &storage, opts.bucket.as_deref()).map_err(NoRun::Fatal)?;
    let (listener, mut finished) = RunListener::channel();
    let lanes = lanes::start(&config, opened, None, false, &Default::default(), vec![listener]);
    let shutdown: crate::mode::Shutdown = shutdown.boxed_local().shared();
    let progress = opts.progress.map(|tx| actix::spawn(tally(lanes.iter().map(|l| l.pipeline.clone()).collect(), tx)));
    let ends =
        futures::future::join_all(lanes.iter().map(|l| l.pipeline.mode.whole_run(opts.force, shutdown.clone()))).await;
    if let Some(task) = progress {
        task.abort();
    }
    // Each finished run is announced (those of shared runs are in the channel already).
    let ran = ends.iter().filter(|e| e.is_ok()).count();
    let mut runs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while runs.len() < ran {
        match tokio::time::timeout_at(deadline, finished.recv()).await {
            Ok(Some(f)) => runs.push(f),
            _ => break,
        }
    }
    while let Ok(f) = finished.try_recv() {
        runs.push(f);
    }
    announce(&config, runs).await;
    Ok(lanes.iter().zip(ends).map(|(lane, end)| BucketEnd { bucket: lane.bucket.clone(), end }).collect())
}

/// Sends the runs' live counts, summed over `pipelines`, to `tx` five times a second.
async fn tally(pipelines: Vec<Pipeline>, tx: watch::Sender<Tally>) {
    loop {
        let mut t = Tally::default();
        for pipeline in &pipelines {
            if let Ok(p) = pipeline.state_keeper.send(GetProgress).await {
                let c = p.counts;
                t.listed += c.listed;
                t.converted += c.converted;
                t.skipped += c.skipped;
                t.failed += c.failed;
                t.in_flight += p.in_flight;
            }
        }
        if tx.send(t).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `run-once` with `webhook.url`: tries the deliveries earlier processes left pending,
/// then announces each bucket's finished run as `serve` would; a delivery that fails
/// stays pending for the next process (`serve` or `run-once`).
async fn announce(config: &Config, finished: Vec<RunFinished>) {
    let webhook = match Webhook::from_config(&config.webhook) {
        Ok(Some(w)) => w,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "Webhook not sent: cannot make its HTTP client");
            return;
        }
    };
    if config.webhook.retry_enabled {
        webhook.retry_pending().await;
    }
    for f in finished {
        let _ = webhook.deliver(crate::webhook::payload::batch_completed(&f.bucket, &f.summary, &f.images)).await;
    }
}

/// The CLI's `convert`: one object of `bucket` converted now, through the one path of
/// conversions on request ([`crate::request`]): in the converter pool, under the memory
/// budget, written by the bucket's write rule; no state is opened. The outer error: the
/// bucket could not be opened. Must be called on an actix system.
pub async fn convert(
    config: Config,
    storage: Storage,
    bucket: &str,
    key: &str,
    (format, resize, force): (crate::outputs::Format, Option<crate::convert::ResizeSpec>, bool),
) -> Result<Result<crate::job::Outcome, crate::job::JobError>, String> {
    lanes::select(&config, Some(bucket)).map_err(|e| e.to_string())?;
    let target = lanes::start_requests(&config, &storage, bucket).map_err(|e| e.to_string())?;
    let admitted = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
    let ask = crate::request::Ask {
        format,
        resize,
        admitted: Arc::new(admitted.acquire_owned().await.expect("never closed")),
        cancel: Arc::new(crate::convert::webp::Cancel::new(false)),
        force,
        replaces: None,
        file: None,
    };
    Ok(crate::request::convert_key(&target, key, ask).await)
}

/// `run-once --dry-run`: hands `emit` each source a run would convert and each output
/// several sources claim, as the listing streams by (with several buckets as
/// `r2://<bucket>/<key>` addresses); `only` selects one bucket. Reads the state each
/// bucket's mode keeps, takes nothing and writes nothing.
pub async fn dry_run(
    config: Config,
    storage: Storage,
    force: bool,
    only: Option<&str>,
    mut emit: impl FnMut(Planned),
) -> Result<PlanCounts, String> {
    let opened = open(&config, &storage, only)?;
    let several = opened.len() > 1;
    let mut counts = PlanCounts::default();
    for lanes::Opened { config, storage, backend } in opened {
        let name = |key: &str| if several { crate::naming::address(storage.bucket(), key) } else { key.to_owned() };
        let state = backend.0.read_state(&storage).await?;
        let rules = PlanRules {
            formats: config.formats.clone(),
            outputs: config.outputs.clone(),
            ignore_before: state.ignore_before,
            reprocess_from: state.reprocess_from,
            force,
            now: chrono::Utc::now(),
            upto: None,
            defer: None,
            only: None,
        };
        let mut planner = Planner::new(rules, Arc::new(state));
        let mut listing = storage.list_ordered(None);
        let mut decisions = Vec::new();
        let mut plan = |d: &Decision| match d {
            Decision::Convert { source, due } => {
                for d in due {
                    counts.convert += 1;
                    emit(Planned::Convert { source: name(&source.key), output: name(&d.output) });
                }
            }
            Decision::Conflict { claimants, output } => emit(Planned::Conflict {
                output: name(output),
                sources: claimants.iter().map(|(s, _)| name(&s.key)).collect(),
            }),
            Decision::Skip { .. } => counts.skip += 1,
        };
        while let Some(item) = listing.next().await {
            planner.push(item.map_err(|e| e.to_string())?, &mut decisions);
            decisions.drain(..).for_each(|d| plan(&d));
        }
        planner.finish(&mut decisions);
        decisions.drain(..).for_each(|d| plan(&d));
    }
    Ok(counts)
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
