//! StateKeeper: owns `state/state.json` and the run lock, records what became of every
//! image, checkpoints every `state.checkpoint_every` images, and closes the run.
//!
//! A run begins here ([`BeginRun`] takes the lock and loads the state), every stage
//! reports here ([`RecordQueued`], [`RecordListed`], [`RecordDone`], [`ListingFinished`]),
//! and the run ends here when the listing is over and nothing is in flight: the state
//! is saved, the lock released and the summary sent to whoever waits for it.
//!
//! Conversions on request and bucket events ask the ledger here before converting
//! ([`AskLedger`]); bucket events record what
//! became of their image here too ([`RecordEvent`]), answered once it is stored: inside a
//! run, with the run's state; outside one, through the store under the run lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{ItemOutcome, RunCounts, RunSummary, Slot};
use crate::run_book::RunBook;
use crate::state::{
    Failure, LedgerDecision, LockError, RetryPolicy, RunLock, RunProgress, State, StateError, StateStore, Updated,
};

/// Starts a run: takes the lock, loads the state. Answers what the Lister needs.
#[derive(Message)]
#[rtype(result = "Result<RunStart, BeginError>")]
pub struct BeginRun {
    /// Re-convert sources even when their WebP is up to date.
    pub force: bool,
}

/// An output of a source was handed to the converters; `key` is its ledger key
/// ([`crate::outputs::Outputs::ledger_key`]: the source's key for the Go server's WebP).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordQueued {
    pub key: String,
}

/// Listing progress: `position` is a key at or before which every source is decided.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordListed {
    pub position: Option<String>,
    pub listed: u64,
    pub skipped: u64,
}

/// One queued output of source `key` is finished, one way or the other. Dropping `slot`
/// frees its place (the source's last output's does).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordDone {
    pub key: String,
    /// The output's place in `conversion.outputs`.
    pub spec: usize,
    pub output: String,
    pub etag: Option<String>,
    pub outcome: ItemOutcome,
    pub slot: Slot,
}

/// The Lister is done (to the end, interrupted, or failed with `error`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListingFinished {
    pub error: Option<String>,
    /// When the listing covered the whole key space: the ledger keys (of the state the
    /// run began with) it did not find. Their sources are gone; a complete run drops them.
    pub unseen: Option<Vec<String>>,
}

/// Stop: no new images; the run closes (as resumable) once in-flight images are recorded,
/// or at once with `now`. Answers when the state is saved and the lock released.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRun {
    pub now: bool,
}

/// A conversion on request or a bucket event (the one path's *decide*, asked before
/// downloading) asks whether the ledger leaves this version of a source alone; answers
/// the entry that does (given up or kept).
#[derive(Message)]
#[rtype(result = "Option<crate::state::LedgerEntry>")]
pub struct AskLedger {
    pub key: String,
    pub etag: Option<String>,
}

/// What became of a source a bucket event announced, recorded as a run records it
/// (converted: its ledger entry dropped; kept; failed for good: given up). Answered once
/// stored, so the event's message may go; an error leaves the message to come back.
/// Superseded and transient failures record nothing.
#[derive(Message)]
#[rtype(result = "Result<EventRecorded, String>")]
pub struct RecordEvent {
    pub key: String,
    pub etag: Option<String>,
    pub outcome: ItemOutcome,
}

/// Where [`RecordEvent`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRecorded {
    /// In the ledger (or nothing to record there).
    Stored,
    /// Bucket mode: the key's shard is another instance's; its runs decide the key.
    NotHeld,
}

/// A snapshot for progress displays and the status endpoint.
#[derive(Message)]
#[rtype(result = "Progress")]
pub struct GetProgress;

/// What [`BeginRun`] hands to the Lister.
#[derive(Debug)]
pub struct RunStart {
    pub id: Arc<str>,
    pub started_at: DateTime<Utc>,
    /// Resume the listing after this key (an interrupted run).
    pub cursor: Option<String>,
    pub state: Arc<State>,
    pub force: bool,
    pub stopping: Arc<AtomicBool>,
    /// Resolves with the summary when the run ends.
    pub done: Option<oneshot::Receiver<RunSummary>>,
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    #[error("cron job is already running")]
    AlreadyRunning,
    #[error(transparent)]
    Lock(LockError),
    /// Bucket mode: the request is recorded for the cluster, but no run could start here
    /// now (one is going on, or this instance holds no shard owed a run).
    #[error("run requested for the cluster; this instance runs its shards when it can")]
    Queued,
    #[error("cannot request a run of the cluster: {0}")]
    Request(String),
    #[error(transparent)]
    State(#[from] StateError),
}

impl BeginError {
    /// The failure without the state directory's path, for API answers (the log has it).
    pub fn reason(&self) -> String {
        match self {
            Self::Lock(e) => e.reason(),
            Self::State(e) => e.reason(),
            e => e.to_string(),
        }
    }
}

/// Live view of the daemon's runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    pub running: bool,
    pub run_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub counts: RunCounts,
    pub in_flight: usize,
    /// The listing is over; only in-flight images remain.
    pub listing_done: bool,
    /// Converted images per second since the run started.
    pub images_per_second: f64,
    /// Seconds left, once the listing is over and the remaining work is known.
    pub eta_seconds: Option<f64>,
    pub last_run: Option<RunSummary>,
    pub last_processed_time: Option<DateTime<Utc>>,
    pub last_run_time: Option<DateTime<Utc>>,
    /// Sources being retried or given up, with reasons (at most 100).
    pub failures: Vec<LedgerView>,
    /// How many sources the ledger holds in all.
    pub ledger_size: usize,
    /// Why the state could not be saved the last time it was written (`null` once a save
    /// succeeds again). A run whose final save fails is not complete.
    pub state_save_error: Option<String>,
}

/// One ledger entry as the status shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerView {
    pub key: String,
    #[serde(flatten)]
    pub entry: crate::state::LedgerEntry,
}

pub use crate::run_book::MAX_LISTED_IMAGES;

/// A finished run, as announced to listeners (the webhook sender).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RunFinished {
    /// The bucket the run kept (each bucket's runs are announced on their own).
    pub bucket: String,
    pub summary: RunSummary,
    /// (source key, WebP key) of converted images, at most [`MAX_LISTED_IMAGES`].
    pub images: Vec<(String, String)>,
}

/// The actor.
pub struct StateKeeper {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    listeners: Vec<Recipient<RunFinished>>,
    store: Box<dyn StateStore>,
    state: State,
    policy: RetryPolicy,
    run: Option<ActiveRun>,
    last_summary: Option<RunSummary>,
    /// The last save's failure, if it failed.
    save_error: Option<String>,
}

/// The run in progress: its books, and what ties it to the world.
struct ActiveRun {
    book: RunBook,
    /// The run lock (`None` in bucket mode, where the shards' leases take its place).
    _lock: Option<RunLock>,
    stopping: Arc<AtomicBool>,
    done: Option<oneshot::Sender<RunSummary>>,
    stop_waiters: Vec<oneshot::Sender<()>>,
}

impl StateKeeper {
    /// `listeners` hear of every finished run.
    pub fn new(
        config: Arc<Config>,
        store: Box<dyn StateStore>,
        metrics: Arc<Metrics>,
        listeners: Vec<Recipient<RunFinished>>,
    ) -> Self {
        let state = store.load().ok().flatten().unwrap_or_default();
        let policy = RetryPolicy {
            max_attempts: config.state.max_attempts,
            base_delay: chrono::Duration::from_std(config.state.retry_base).unwrap_or(chrono::Duration::minutes(5)),
            max_delay: chrono::Duration::days(1),
        };
        Self { config, metrics, listeners, store, state, policy, run: None, last_summary: None, save_error: None }
    }

    fn save(&mut self) -> Result<(), StateError> {
        if let Some(run) = &self.run {
            let progress = self.state.run.get_or_insert_with(RunProgress::default);
            progress.cursor = run.book.cursor();
            progress.converted = run.book.counts.converted;
            progress.failed = run.book.counts.failed;
        }
        self.save_state()
    }

    /// Writes the state, remembering (and logging) a failure for the status.
    fn save_state(&mut self) -> Result<(), StateError> {
        let saved = self.store.save(&self.state);
        self.save_error = saved.as_ref().err().map(StateError::reason);
        if let Err(e) = &saved {
            tracing::error!(error = %e, "Failed to save state");
        }
        saved
    }

    /// Ends the run if the listing is over and nothing is in flight (or `force`).
    fn maybe_finish(&mut self, force: bool) {
        let Some(run) = &self.run else { return };
        if !(force || run.book.finished()) {
            return;
        }
        let mut run = self.run.take().expect("checked above");
        let now = Utc::now();
        let interrupted = run.stopping.load(Ordering::SeqCst) || force;
        let complete = !interrupted && run.book.error.is_none();
        let counts = run.book.counts.clone();
        if complete {
            let skew = chrono::Duration::from_std(self.config.state.clock_skew).unwrap_or_default();
            self.state.set_last_processed_time(run.book.started_at - skew);
            self.state.last_run_time = Some(now);
            self.state.last_complete_run_started_at = Some(run.book.started_at);
            self.state.processed_count = counts.converted;
            self.state.failed_count = counts.failed;
            self.state.reprocess_from = None;
            self.state.run = None;
            self.state.totals.runs += 1;
            let pruned = run.book.unseen.take().map_or(0, |keys| self.state.forget(&keys));
            if pruned > 0 {
                tracing::info!(pruned, "Ledger entries of sources no longer in the bucket dropped");
            }
            self.store.record_parts(&run.book.id, &run.book.parts);
        } else {
            let progress = self.state.run.get_or_insert_with(RunProgress::default);
            progress.cursor = run.book.cursor();
            progress.converted = counts.converted;
            progress.failed = counts.failed;
        }
        // A run whose state is not saved is not complete: the next run resumes from the
        // last checkpoint that was saved.
        let (complete, error) = match self.save_state() {
            Ok(()) => (complete, run.book.error.clone()),
            Err(e) => (false, Some(crate::state::unsaved_run_error(&e))),
        };
        let summary = run.book.summary(now, complete, error.clone());
        let id = run.book.id.clone();
        tracing::info!("Processed {} images successfully, {} failed", counts.converted, counts.failed);
        if complete {
            tracing::info!(run_id = %id, duration_ms = summary.duration_ms, skipped = counts.skipped, "Cron job completed");
        } else if let Some(e) = &error {
            tracing::error!(run_id = %id, error = %e, "Cron job failed");
        } else {
            tracing::warn!(run_id = %id, cursor = ?self.state.run.as_ref().and_then(|r| r.cursor.clone()), "Cron job interrupted; the next run resumes");
        }
        self.last_summary = Some(summary.clone());
        self.metrics.run_finished(complete, counts.failed > 0, error.is_some());
        self.metrics.set_in_flight(0);
        for l in &self.listeners {
            l.do_send(RunFinished {
                bucket: self.config.bucket_name(),
                summary: summary.clone(),
                images: std::mem::take(&mut run.book.images),
            });
        }
        if let Some(tx) = run.done.take() {
            let _ = tx.send(summary);
        }
        for w in run.stop_waiters.drain(..) {
            let _ = w.send(());
        }
        // The lock is released when `run` drops here.
    }
}

/// Why a source keeps no WebP (`conversion.skip_if_larger`).
fn kept_reason(bytes_in: u64, bytes_out: u64) -> String {
    format!("WebP would be {bytes_out} bytes, not smaller than the source's {bytes_in}")
}

/// Applies a bucket event's outcome to `state`'s ledger; whether anything changed.
fn ledger_event(state: &mut State, msg: &RecordEvent, policy: &RetryPolicy, now: DateTime<Utc>) -> bool {
    match &msg.outcome {
        ItemOutcome::Converted { .. } => state.ledger.remove(&msg.key).is_some(),
        ItemOutcome::Kept { bytes_in, bytes_out } => {
            let known = state.ledger.get(&msg.key);
            if known.is_some_and(|e| e.kind == crate::state::LedgerKind::Kept && e.etag == msg.etag) {
                return false;
            }
            state.record_kept(&msg.key, msg.etag.clone(), "webp_larger", &kept_reason(*bytes_in, *bytes_out), now);
            true
        }
        ItemOutcome::Failed { code, reason, permanent } => {
            let failure = Failure { code: code.code(), reason, permanent: *permanent };
            state.record_failure(&msg.key, msg.etag.clone(), failure, policy, now);
            true
        }
        ItemOutcome::NotMade { code, reason } => {
            let known = state.ledger.get(&msg.key);
            if known.is_some_and(|e| e.kind == crate::state::LedgerKind::Kept && e.etag == msg.etag) {
                return false;
            }
            state.record_kept(&msg.key, msg.etag.clone(), code.code(), reason, now);
            true
        }
        ItemOutcome::Superseded { .. } => false,
    }
}

impl Actor for StateKeeper {
    type Context = Context<Self>;
}

impl Handler<BeginRun> for StateKeeper {
    type Result = Result<RunStart, BeginError>;

    fn handle(&mut self, msg: BeginRun, _: &mut Context<Self>) -> Self::Result {
        if self.run.is_some() {
            return Err(BeginError::AlreadyRunning);
        }
        let lock = self.store.lock_run(self.config.state.lock_stale_after).map_err(|e| match e {
            LockError::Held { .. } => BeginError::AlreadyRunning,
            e => BeginError::Lock(e),
        })?;
        let now = Utc::now();
        self.store.clean_up();
        // Another process may have written the state since we last looked.
        self.state = self.store.load()?.unwrap_or_else(|| State::initial(&self.config.state.initial, now));
        if let Some(t) = self.state.notice_hand_edit() {
            tracing::info!(from = %t.to_rfc3339(), "last_processed_time was edited: re-processing sources modified since then");
        }
        let (id, started_at, cursor, counts) = match &self.state.run {
            Some(r) => {
                tracing::info!(run_id = %r.id, cursor = ?r.cursor, "Resuming an interrupted run");
                let counts = RunCounts { converted: r.converted, failed: r.failed, ..RunCounts::default() };
                (r.id.clone(), r.started_at.unwrap_or(now), r.cursor.clone(), counts)
            }
            None => (now.format("%Y%m%dT%H%M%S%.3fZ").to_string(), now, None, RunCounts::default()),
        };
        tracing::info!(run_id = %id, "Cron job started");
        match self.state.last_processed_time {
            Some(t) => tracing::info!("Last processed time: {}", t.to_rfc3339()),
            None => tracing::info!("Last processed time: never"),
        }
        self.state.run = Some(RunProgress {
            id: id.clone(),
            started_at: Some(started_at),
            cursor: cursor.clone(),
            converted: counts.converted,
            failed: counts.failed,
        });
        let (tx, rx) = oneshot::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let id: Arc<str> = id.into();
        self.run = Some(ActiveRun {
            book: RunBook::new(id.clone(), started_at, cursor.clone(), counts),
            _lock: lock,
            stopping: stopping.clone(),
            done: Some(tx),
            stop_waiters: Vec::new(),
        });
        self.metrics.run_started();
        let _ = self.save();
        Ok(RunStart {
            id,
            started_at,
            cursor,
            state: Arc::new(self.state.clone()),
            force: msg.force,
            stopping,
            done: Some(rx),
        })
    }
}

impl Handler<RecordQueued> for StateKeeper {
    type Result = ();

    fn handle(&mut self, msg: RecordQueued, _: &mut Context<Self>) {
        if let Some(run) = &mut self.run {
            run.book.queued(msg.key);
            self.metrics.set_in_flight(run.book.in_flight());
        }
    }
}

impl Handler<RecordListed> for StateKeeper {
    type Result = ();

    fn handle(&mut self, msg: RecordListed, _: &mut Context<Self>) {
        if let Some(run) = &mut self.run {
            run.book.listed(msg.listed, msg.skipped, msg.position);
            self.metrics.skipped(msg.skipped);
        }
    }
}

impl Handler<RecordDone> for StateKeeper {
    type Result = ();

    fn handle(&mut self, msg: RecordDone, _: &mut Context<Self>) {
        let now = Utc::now();
        let Some(run) = &mut self.run else { return };
        let part = self.store.part_of(&msg.key);
        let ledger = self.config.outputs.ledger_key(&msg.key, msg.spec);
        let every = self.config.state.checkpoint_every;
        let checkpoint = run.book.done(&ledger, &msg.key, &msg.output, part, &msg.outcome, every);
        // The ledger, the metrics and the log: what the books do not keep.
        match &msg.outcome {
            ItemOutcome::Converted { bytes_in, bytes_out, convert_ms, .. } => {
                self.metrics.converted(&msg.output, *bytes_in, *bytes_out, *convert_ms as f64 / 1000.0);
                self.state.totals.converted += 1;
                self.state.totals.bytes_in += bytes_in;
                self.state.totals.bytes_out += bytes_out;
                self.state.record_success(&ledger);
                tracing::info!("Converted image: {} -> {}", msg.key, msg.output);
            }
            ItemOutcome::Superseded { reason } => {
                self.metrics.superseded();
                tracing::info!(key = %msg.key, output = %msg.output, "Left to another instance: {reason}");
            }
            ItemOutcome::Kept { bytes_in, bytes_out } => {
                self.metrics.kept();
                let reason = kept_reason(*bytes_in, *bytes_out);
                self.state.record_kept(&ledger, msg.etag.clone(), "webp_larger", &reason, now);
                tracing::info!(key = %msg.key, output = %msg.output, "Kept source: {reason}");
            }
            ItemOutcome::NotMade { code, reason } => {
                self.metrics.skipped(1);
                self.state.record_kept(&ledger, msg.etag.clone(), code.code(), reason, now);
                tracing::info!(key = %msg.key, output = %msg.output, "Not made: {reason}");
            }
            ItemOutcome::Failed { code, reason, permanent } => {
                self.metrics.failed(*code);
                self.state.totals.failed += 1;
                let kind = self.state.record_failure(
                    &ledger,
                    msg.etag.clone(),
                    Failure { code: code.code(), reason, permanent: *permanent },
                    &self.policy,
                    now,
                );
                tracing::error!(code = %code, ledger = ?kind, output = %msg.output, "Failed to convert image: {} - {}", msg.key, reason);
            }
        }
        drop(msg.slot);
        self.metrics.set_in_flight(run.book.in_flight());
        if checkpoint {
            let _ = self.save();
        }
        self.maybe_finish(false);
    }
}

impl Handler<ListingFinished> for StateKeeper {
    type Result = ();

    fn handle(&mut self, msg: ListingFinished, _: &mut Context<Self>) {
        if let Some(run) = &mut self.run {
            run.book.listing_finished(msg.error, msg.unseen);
            tracing::info!("Found {} new images to process", run.book.counts.queued);
        }
        self.maybe_finish(false);
    }
}

impl Handler<StopRun> for StateKeeper {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopRun, _: &mut Context<Self>) -> Self::Result {
        let Some(run) = &mut self.run else { return Box::pin(async {}) };
        run.stopping.store(true, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        run.stop_waiters.push(tx);
        self.maybe_finish(msg.now);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<AskLedger> for StateKeeper {
    type Result = MessageResult<AskLedger>;

    fn handle(&mut self, msg: AskLedger, _: &mut Context<Self>) -> Self::Result {
        let now = Utc::now();
        let etag = msg.etag.as_deref();
        // Bucket mode: the held shard's ledger may know more than the last run's state.
        if self.store.decide_stored(&msg.key, etag, now) == Some(LedgerDecision::Leave) {
            return MessageResult(self.store.entry_stored(&msg.key));
        }
        let entry = match self.state.decide(&msg.key, etag, now) {
            LedgerDecision::Leave => self.state.ledger.get(&msg.key).cloned(),
            _ => None,
        };
        MessageResult(entry)
    }
}

impl Handler<RecordEvent> for StateKeeper {
    type Result = Result<EventRecorded, String>;

    fn handle(&mut self, msg: RecordEvent, _: &mut Context<Self>) -> Self::Result {
        let now = Utc::now();
        let policy = self.policy;
        // A conversion only drops an entry: with none known here, the state file is not
        // read and written again for it (a held shard's state, in memory, is still seen).
        if matches!(msg.outcome, ItemOutcome::Converted { .. })
            && !self.state.ledger.contains_key(&msg.key)
            && self.store.decide_stored(&msg.key, None, now).is_none()
        {
            return Ok(EventRecorded::Stored);
        }
        // In a run that writes the key's part, the run's state is the one to change: its
        // saves would overwrite a change made beside it.
        if self.run.is_some() && self.store.in_run_scope(&msg.key) {
            if ledger_event(&mut self.state, &msg, &policy, now) {
                self.save().map_err(|e| e.reason())?;
            }
            return Ok(EventRecorded::Stored);
        }
        let initial = State::initial(&self.config.state.initial, now);
        let stale_after = self.config.state.lock_stale_after;
        let updated = self
            .store
            .update(&msg.key, stale_after, initial, &mut |state| ledger_event(state, &msg, &policy, now))
            .map_err(|e| e.reason())?;
        match updated {
            Updated::Whole(state) => {
                if self.run.is_none() {
                    self.state = state;
                }
                Ok(EventRecorded::Stored)
            }
            Updated::Part => {
                // The keeper's copy too, for the status's failures.
                ledger_event(&mut self.state, &msg, &policy, now);
                Ok(EventRecorded::Stored)
            }
            Updated::NotHeld => Ok(EventRecorded::NotHeld),
        }
    }
}

impl Handler<GetProgress> for StateKeeper {
    type Result = MessageResult<GetProgress>;

    fn handle(&mut self, _: GetProgress, _: &mut Context<Self>) -> Self::Result {
        let run = self.run.as_ref().map(|r| &r.book);
        let in_flight = run.map(RunBook::in_flight).unwrap_or(0);
        let elapsed = run.map(|r| r.clock.elapsed().as_secs_f64()).unwrap_or(0.0);
        let converted = run.map(|r| r.counts.converted).unwrap_or(0);
        let rate = if elapsed > 0.0 { converted as f64 / elapsed } else { 0.0 };
        let listing_done = run.is_some_and(|r| r.listing_done);
        let failures = self
            .state
            .ledger
            .iter()
            .filter(|(_, e)| e.kind != crate::state::LedgerKind::Kept)
            .take(100)
            .map(|(k, e)| LedgerView { key: k.clone(), entry: e.clone() })
            .collect();
        MessageResult(Progress {
            running: run.is_some(),
            run_id: run.map(|r| r.id.to_string()),
            started_at: run.map(|r| r.started_at),
            counts: run.map(|r| r.counts.clone()).unwrap_or_default(),
            in_flight,
            listing_done,
            images_per_second: rate,
            eta_seconds: (listing_done && rate > 0.0).then(|| in_flight as f64 / rate),
            last_run: self.last_summary.clone(),
            last_processed_time: self.state.last_processed_time,
            last_run_time: self.state.last_run_time,
            failures,
            ledger_size: self.state.ledger.len(),
            state_save_error: self.save_error.clone(),
        })
    }
}

#[cfg(test)]
#[path = "state_keeper_tests.rs"]
mod tests;
