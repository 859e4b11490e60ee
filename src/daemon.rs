//! The long-running modes, embeddable: [`serve`] (the scheduler, the pipeline and the
//! HTTP API on a listener it is handed, until a shutdown future resolves), [`run_once`]
//! (one run now) and [`dry_run`] (the plan only). None of them binds a port, installs a
//! signal handler or chooses an exit code: `cli` binds `server.host:server.port`, turns
//! SIGTERM/SIGINT into the shutdown future and maps [`Exit`] and [`ServeError`] to exit
//! codes. Tests run them in-process on an actix system with an in-memory bucket and a
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

use futures::StreamExt;

use crate::actors::webhook::{RunListener, WebhookSender};
use crate::actors::{
    BeginError, FinishRun, GetProgress, Leave, Pipeline, Quiesce, RequestRun, RunFinished, RunNow, StateBackend,
    StopRun, WholeRun,
};
use crate::api::AppState;
use crate::config::{Config, ConfigError};
use crate::lanes::{self, Lane};
use crate::model::RunSummary;
use crate::planner::{Decision, PlanRules, Planner};
use crate::storage::Storage;
use crate::webhook::{DeliveryError, Webhook};

/// How a mode ended; `cli` turns it into the process's exit code (the only place the
/// numbers are chosen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done: every image converted or skipped.
    Ok,
    /// A fatal error (configuration, storage).
    Fatal,
    /// Some images failed.
    Failed,
    /// Another run holds the lock.
    Locked,
}

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
#[derive(Debug, Clone, Default)]
pub struct RunOnceOptions {
    pub json: bool,
    pub force: bool,
    pub progress: bool,
    /// Only this configured bucket (`--bucket`); every bucket when `None`.
    pub bucket: Option<String>,
}

/// Opens the buckets `only` selects (all when `None`; `storage` is the primary's): each
/// its storage and state store, a Go deployment's state adopted when we have none of our
/// own yet ([`lanes::open`]), and in bucket mode the cluster, the one place the run
/// scope is chosen.
fn open(config: &Config, storage: &Storage, only: Option<&str>) -> Result<Vec<lanes::Opened>, String> {
    let buckets = lanes::select(config, only).map_err(|e| e.to_string())?;
    lanes::open(config, storage, &buckets).map_err(|e| e.to_string())
}

/// Stops the current run gracefully, then forcibly after the timeout.
async fn stop(pipeline: &Pipeline, timeout: Duration) {
    tracing::info!(timeout_s = timeout.as_secs(), "Shutting down: finishing images in flight");
    let graceful = pipeline.state_keeper.send(StopRun { now: false });
    if tokio::time::timeout(timeout, graceful).await.is_err() {
        tracing::warn!("Shutdown timeout: abandoning images in flight (they are redone next run)");
        let _ = pipeline.state_keeper.send(StopRun { now: true }).await;
    }
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
    config.check_listener(local.ip())?;
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
            for lane in &lanes {
                leave_cluster(&lane.pipeline).await;
            }
            return Err(ServeError::Events(e));
        }
    };
    let mut state = AppState::with_lanes(config.clone(), lanes.clone(), metrics, webhook);
    state.events = Some(events.api.clone());
    let server = match http_server(&config, state, listener) {
        Ok(server) => server,
        Err(source) => {
            for lane in &lanes {
                leave_cluster(&lane.pipeline).await;
            }
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
    stop_lanes(&lanes, timeout).await;
    tracing::info!("Daemon stopped");
    Ok(())
}

/// Stops every bucket's runs at once (gracefully, then forcibly after `timeout`), each
/// cluster's shards released.
async fn stop_lanes(lanes: &[Lane], timeout: Duration) {
    futures::future::join_all(lanes.iter().map(|lane| async move {
        let pipeline = &lane.pipeline;
        if let Some(c) = &pipeline.coordinator {
            let _ = c.send(Quiesce).await;
        }
        stop(pipeline, timeout).await;
        if let Some(c) = &pipeline.coordinator {
            let _ = c.send(Leave).await;
        }
    }))
    .await;
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
/// buckets' runs side by side — in bucket mode, one whole run of each bucket shared with
/// other instances, in turn; `shutdown` resolving stops them gracefully (the next run
/// resumes). [`Exit::Ok`] when every image converted or was skipped, [`Exit::Failed`]
/// when some failed, [`Exit::Locked`] when another run holds the lock, [`Exit::Fatal`]
/// on a fatal error (printed); over several buckets the worst (fatal, failed, locked).
/// Must be called on an actix system.
pub async fn run_once(
    config: Config,
    storage: Storage,
    opts: RunOnceOptions,
    shutdown: impl Future<Output = ()>,
) -> Exit {
    let opened = match open(&config, &storage, opts.bucket.as_deref()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("Error: {e}");
            return Exit::Fatal;
        }
    };
    let timeout = config.pipeline.shutdown_timeout;
    let (listener, mut finished) = RunListener::channel();
    let lanes = lanes::start(&config, opened, None, false, &Default::default(), vec![listener]);
    let config = Arc::new(config);
    let mut shutdown = std::pin::pin!(shutdown);
    let several = lanes.len() > 1;
    let say = |bucket: &str, e: &dyn std::fmt::Display| {
        if several { eprintln!("Error: bucket {bucket}: {e}") } else { eprintln!("Error: {e}") }
    };
    // Each bucket's end: its run's summary, or why it had none.
    let mut ends: Vec<(String, Result<RunSummary, Exit>)> = Vec::new();
    let mut begun = Vec::new();
    for lane in &lanes {
        let pipeline = &lane.pipeline;
        if let (Some(cluster), Some(coordinator)) = (pipeline.cluster.clone(), pipeline.coordinator.clone()) {
            let end = whole_run(pipeline, &cluster, &coordinator, &opts, timeout, shutdown.as_mut()).await;
            ends.push((lane.bucket.clone(), end));
            continue;
        }
        match pipeline.scheduler.send(RunNow { force: opts.force }).await {
            Ok(Ok(h)) => begun.push((lane, h.done)),
            Ok(Err(BeginError::AlreadyRunning)) | Err(_) => {
                say(&lane.bucket, &"cron job is already running");
                ends.push((lane.bucket.clone(), Err(Exit::Locked)));
            }
            Ok(Err(e)) => {
                say(&lane.bucket, &e);
                ends.push((lane.bucket.clone(), Err(Exit::Fatal)));
            }
        }
    }
    let ran = begun.len();
    let pipelines: Vec<Pipeline> = begun.iter().map(|(l, _)| l.pipeline.clone()).collect();
    let bar = (opts.progress && ran > 0).then(|| progress_bar(pipelines));
    let (running, dones): (Vec<&Lane>, Vec<_>) = begun.into_iter().unzip();
    let mut all = futures::future::join_all(dones);
    let summaries = tokio::select! {
        s = &mut all => s,
        _ = shutdown => {
            futures::future::join_all(running.iter().map(|l| stop(&l.pipeline, timeout))).await;
            all.await
        }
    };
    if let Some(bar) = bar {
        bar.abort();
    }
    for (lane, summary) in running.iter().zip(summaries) {
        let end = summary.map_err(|_| {
            say(&lane.bucket, &"the run ended without a summary");
            Exit::Fatal
        });
        ends.push((lane.bucket.clone(), end));
    }
    // Each finished run is announced (those of cluster runs are in the channel already).
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
    ends.sort_by_key(|(b, _)| lanes.iter().position(|l| &l.bucket == b));
    report_all(&ends, opts.json);
    ends.iter().map(|(_, end)| end.as_ref().map_or_else(|e| *e, exit_code)).fold(Exit::Ok, worst)
}

/// The worse of two buckets' ends: fatal, then failed, then locked, then ok.
fn worst(a: Exit, b: Exit) -> Exit {
    let rank = |e: Exit| match e {
        Exit::Fatal => 3,
        Exit::Failed => 2,
        Exit::Locked => 1,
        Exit::Ok => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// Prints each bucket's summary: one bucket as a one-bucket daemon prints it; several
/// each under its name (text) or as one JSON object `{"buckets": [{"bucket", …}]}`.
fn report_all(ends: &[(String, Result<RunSummary, Exit>)], json: bool) {
    if let [(_, Ok(summary))] = ends {
        return report(summary, json);
    }
    if json {
        let buckets: Vec<serde_json::Value> = ends
            .iter()
            .map(|(bucket, end)| {
                let mut v = match end {
                    Ok(s) => serde_json::to_value(s).expect("summary serialises"),
                    Err(e) => serde_json::json!({"complete": false, "error": format!("{e:?}").to_lowercase()}),
                };
                v["bucket"] = serde_json::json!(bucket);
                v
            })
            .collect();
        println!("{}", serde_json::json!({ "buckets": buckets }));
        return;
    }
    for (bucket, end) in ends {
        println!("Bucket {bucket}:");
        match end {
            Ok(s) => report(s, false),
            Err(e) => println!("  no run ({})", format!("{e:?}").to_lowercase()),
        }
    }
}

/// `run-once`'s exit code for a run's summary.
fn exit_code(summary: &RunSummary) -> Exit {
    match (&summary.error, summary.counts.failed) {
        (Some(_), _) => Exit::Fatal,
        (None, 0) => Exit::Ok,
        _ => Exit::Failed,
    }
}

/// `run-once` in a cluster (`state.backend: bucket`): one whole run of the bucket.
/// Joins, requests a run of the whole cluster, runs the shards it holds (and any owed
/// shard that no live instance holds, taken for it), and returns only when every shard
/// has answered the request — run by this instance or another live one. Its summary
/// covers the whole run, shard by shard.
async fn whole_run(
    pipeline: &Pipeline,
    cluster: &crate::cluster::Cluster,
    coordinator: &actix::Addr<crate::actors::Coordinator>,
    opts: &RunOnceOptions,
    timeout: Duration,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<RunSummary, Exit> {
    let began = std::time::Instant::now();
    join_cluster(cluster).await;
    let at = match coordinator.send(RequestRun { force: opts.force }).await {
        Ok(Ok(at)) => at,
        Ok(Err(e)) => {
            eprintln!("Error: {e}");
            leave_cluster(pipeline).await;
            return Err(Exit::Fatal);
        }
        Err(e) => {
            eprintln!("Error: {e}");
            return Err(Exit::Fatal);
        }
    };
    tracing::info!(at = %at.to_rfc3339(), "Waiting until every shard has answered the run request");
    let bar = opts.progress.then(|| progress_bar(vec![pipeline.clone()]));
    let period = (cluster.config.lease / 6).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let mut interrupted = false;
    let whole = loop {
        let whole = match coordinator.send(FinishRun { at }).await {
            Ok(Some(w)) => w,
            Ok(None) => {
                eprintln!("Error: the cluster coordinator has stopped");
                return Err(Exit::Fatal);
            }
            Err(e) => {
                eprintln!("Error: {e}");
                return Err(Exit::Fatal);
            }
        };
        if whole.pending.is_empty() || interrupted {
            break whole;
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut shutdown => interrupted = true,
        }
    };
    if let Some(bar) = bar {
        bar.abort();
    }
    // A run of a later request may be going on here: it stops as resumable, and the
    // shards go back to the cluster with their state.
    let _ = coordinator.send(Quiesce).await;
    stop(pipeline, timeout).await;
    let _ = coordinator.send(Leave).await;
    Ok(whole_summary(at, &whole, began.elapsed()))
}

/// The whole run's summary: the shards' counts summed, this instance's listing counts
/// and failures, and an error naming the shards that could not be run.
fn whole_summary(at: chrono::DateTime<chrono::Utc>, whole: &WholeRun, took: Duration) -> RunSummary {
    let mut counts = crate::model::RunCounts::default();
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

/// `run-once` in a cluster: waits until this instance holds shards (they come after its
/// second survey, a third of a lease each, or once others release some), at most a
/// lease and a little more.
async fn join_cluster(cluster: &crate::cluster::Cluster) {
    let deadline = tokio::time::Instant::now() + cluster.config.lease + Duration::from_secs(5);
    while cluster.held_ids().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Releases this instance's shards and heartbeat, if it is in a cluster.
async fn leave_cluster(pipeline: &Pipeline) {
    if let Some(c) = &pipeline.coordinator {
        let _ = c.send(Quiesce).await;
        let _ = c.send(Leave).await;
    }
}

fn report(s: &RunSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).expect("summary serialises"));
        return;
    }
    let c = &s.counts;
    println!(
        "Run {}: listed {}, converted {}, skipped {}, kept {}, failed {} ({} -> {} bytes) in {} ms{}",
        s.run_id,
        c.listed,
        c.converted,
        c.skipped,
        c.kept,
        c.failed,
        c.bytes_in,
        c.bytes_out,
        s.duration_ms,
        if s.complete { "" } else { " (interrupted: the next run resumes)" }
    );
    for r in &s.shards {
        let p = &r.run;
        println!(
            "  shard {}: run by {}, converted {}, kept {}, failed {}, superseded {}",
            r.shard, p.by, p.converted, p.kept, p.failed, p.superseded
        );
    }
    for f in &s.failures {
        println!("  failed: {} - {} ({})", f.key, f.reason, f.code);
    }
    if let Some(e) = &s.error {
        println!("Error: {e}");
    }
}

/// A spinner with live counts on stderr (summed over the buckets), while runs go on.
fn progress_bar(pipelines: Vec<Pipeline>) -> ProgressTask {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
    let task = actix::spawn(async move {
        let _clear = scopeguard(bar.clone());
        loop {
            let (mut listed, mut converted, mut skipped, mut failed, mut in_flight) = (0, 0, 0, 0, 0);
            for pipeline in &pipelines {
                if let Ok(p) = pipeline.state_keeper.send(GetProgress).await {
                    let c = p.counts;
                    (listed, converted, skipped, failed) =
                        (listed + c.listed, converted + c.converted, skipped + c.skipped, failed + c.failed);
                    in_flight += p.in_flight;
                }
            }
            bar.set_message(format!(
                "listed {listed} · converted {converted} · skipped {skipped} · failed {failed} · in flight {in_flight}"
            ));
            bar.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    ProgressTask(task)
}

/// `run-once --dry-run`: prints the sources a run would convert, one a line (with
/// several buckets as `r2://<bucket>/<key>` addresses); `only` selects one bucket.
pub async fn dry_run(config: Config, storage: Storage, force: bool, only: Option<&str>) -> Exit {
    let opened = match open(&config, &storage, only) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("Error: {e}");
            return Exit::Fatal;
        }
    };
    let several = opened.len() > 1;
    let (mut convert, mut skip) = (0u64, 0u64);
    for lanes::Opened { config, storage, backend } in opened {
        let name = |key: &str| if several { crate::naming::address(storage.bucket(), key) } else { key.to_owned() };
        let loaded = match (&config.state.cluster, backend) {
            (Some(c), _) => crate::cluster::read_all_states(&storage, c).await.map_err(|e| e.to_string()),
            (None, StateBackend::Own(store)) => store.load().map(Option::unwrap_or_default).map_err(|e| e.to_string()),
            (None, StateBackend::Bucket(_)) => Ok(Default::default()),
        };
        let state = match loaded {
            Ok(s) => s,
            Err(e) => {
                eprintln!("Error: {e}");
                return Exit::Fatal;
            }
        };
        let rules = PlanRules {
            formats: config.formats.clone(),
            ignore_before: state.ignore_before,
            reprocess_from: state.reprocess_from,
            force,
            now: chrono::Utc::now(),
            upto: None,
        };
        let mut planner = Planner::new(rules, Arc::new(state));
        let mut listing = storage.list_ordered(None);
        let mut decisions = Vec::new();
        let mut print = |d: &Decision| match d {
            Decision::Convert { source, output, .. } => {
                convert += 1;
                println!("{} -> {}", name(&source.key), name(output));
            }
            Decision::Conflict { sources, output } => {
                let keys: Vec<String> = sources.iter().map(|s| name(&s.key)).collect();
                println!("conflict: {} claimed by {}", name(output), keys.join(", "));
            }
            Decision::Skip { .. } => skip += 1,
        };
        while let Some(item) = listing.next().await {
            match item {
                Ok(o) => planner.push(o, &mut decisions),
                Err(e) => {
                    eprintln!("Error: {e}");
                    return Exit::Fatal;
                }
            }
            decisions.drain(..).for_each(|d| print(&d));
        }
        planner.finish(&mut decisions);
        decisions.drain(..).for_each(|d| print(&d));
    }
    eprintln!("{convert} would be converted, {skip} skipped");
    Exit::Ok
}

/// The progress display's task.
struct ProgressTask(tokio::task::JoinHandle<()>);

impl ProgressTask {
    fn abort(self) {
        self.0.abort();
    }
}

/// Clears the spinner line when the progress task ends.
fn scopeguard(bar: indicatif::ProgressBar) -> impl Drop {
    struct Clear(indicatif::ProgressBar);
    impl Drop for Clear {
        fn drop(&mut self) {
            self.0.finish_and_clear();
        }
    }
    Clear(bar)
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
