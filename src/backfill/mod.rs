//! `backfill --to-queue`: one listing of a bucket puts a message per due source in the
//! queue that `serve` consumes (`events.sqs` or `events.cloudflare_queue`), so that any
//! number of consumers share a large backlog through the queue's own visibility and
//! retry rules, each image converted once.
//!
//! Which sources are due is the runs' own rule: the listing, in key order, through the
//! [`Planner`] with the bucket's ledger (read from wherever the bucket's mode keeps its
//! state, taking nothing): [`Decision::Convert`] is due; up-to-date sources, sources the
//! ledger leaves alone or retries later, and outputs several sources claim are not sent
//! (counted by reason). The messages are uploads to the consumers ([`message`]); the
//! batches go out within the queue's limits, what the queue did not take is sent again
//! and then reported ([`queue`]), at `--rate` messages a second; a queue that takes no
//! call at all stops the backfill (there is no point listing on). After each batch the
//! queue confirmed whole, the [`cursor`] records its last key, so a backfill stopped
//! anywhere resumes after it; one that sent everything removes it. Nothing here
//! converts or writes to the bucket: a second backfill once the consumers are done finds
//! nothing due.
//!
//! Nothing is printed here: [`Summary`] goes to the command line, which prints it and
//! picks the exit code.

pub mod cursor;
pub mod message;
pub mod queue;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use self::cursor::{Cursor, CursorError};
use self::message::{Batcher, Entry, MAX_BATCH_BYTES, QueueKind};
use self::queue::{Queue, RateLimit, Retry, send_batch};
use crate::config::{Config, bucket_file_name};
use crate::lanes::{self, LaneError};
use crate::planner::{Decision, PlanRules, Planner, SkipReason};
use crate::state::State;
use crate::storage::{Storage, StorageError};

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The bucket (one of the configured; default: the primary).
    pub bucket: Option<String>,
    /// Which queue, when both kinds are configured.
    pub queue: Option<QueueKind>,
    /// The cursor file (default: `backfill-<bucket>.cursor` in `state.dir`).
    pub cursor: Option<PathBuf>,
    /// Ignore the cursor: list from the first key.
    pub from_start: bool,
    /// Messages a second at most; `None`: as fast as the queue takes them.
    pub rate: Option<f64>,
    /// List and count only: nothing sent, the cursor untouched.
    pub dry_run: bool,
}

/// Why a backfill did not start.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Bucket(#[from] LaneError),
    #[error(
        "bucket {bucket}: no queue to backfill into: neither events.sqs.queue_url nor events.cloudflare_queue is \
         configured (backfill --to-queue sends to the queue that serve consumes)"
    )]
    NoQueue { bucket: String },
    #[error("--queue {0}: events.{0} is not configured")]
    NotConfigured(&'static str),
    #[error(
        "both events.sqs and events.cloudflare_queue are configured: say which with --queue sqs or --queue cloudflare"
    )]
    TwoQueues,
    #[error("bucket {bucket}: cannot read its state (the ledger decides what is due): {message}")]
    State { bucket: String, message: String },
    #[error("cannot make the queue's client: {0}")]
    Client(String),
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

impl BackfillError {
    /// Whether the command line was wrong (an unknown bucket, a queue not configured).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Bucket(LaneError::Unknown { .. }) | Self::NotConfigured(_) | Self::TwoQueues)
    }
}

/// Sources listed but not sent, by why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub up_to_date: u64,
    pub retry_later: u64,
    pub ledgered: u64,
    pub too_old: u64,
    /// Sources claiming one WebP with another (`p/x.jpg`, `p/x.png`).
    pub conflict: u64,
    /// Names that cannot be keys (the local directory's).
    pub invalid_key: u64,
}

/// A source whose message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub key: String,
    pub error: String,
}

/// How a backfill ended.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub bucket: String,
    /// `sqs` or `cloudflare_queue`.
    pub queue: String,
    /// The queue's URL (SQS) or `<account>/<queue id>` (Cloudflare).
    pub queue_name: String,
    pub dry_run: bool,
    /// Objects listed (after the cursor, when resumed).
    pub listed: u64,
    /// Sources due a conversion (sent, failed, or with `--dry-run` that would be sent).
    pub due: u64,
    pub sent: u64,
    pub failed: u64,
    pub skipped: Skipped,
    /// The key this backfill listed after (a cursor it resumed from).
    pub resumed_after: Option<String>,
    /// Where the next backfill resumes: `None` when this one finished (the file removed).
    pub cursor: Option<String>,
    pub cursor_file: String,
    /// Every due source sent.
    pub complete: bool,
    /// Why it stopped before the listing's end, if it did.
    pub error: Option<String>,
    /// The sources not sent, with the queue's reason (the first 100).
    pub failures: Vec<Failure>,
    pub duration_ms: u64,
}

/// Failures kept in the summary (all are counted and logged).
const FAILURES_KEPT: usize = 100;

/// Runs a backfill of one bucket into its configured queue.
pub async fn backfill(config: &Config, primary: &Storage, opts: Options) -> Result<Summary, BackfillError> {
    let bucket = match &opts.bucket {
        Some(b) => lanes::select(config, Some(b))?.remove(0),
        None => config.buckets().remove(0),
    };
    let events = &config.events;
    let kind = match (opts.queue, events.sqs.is_some(), events.cloudflare_queue.is_some()) {
        (None, false, false) => return Err(BackfillError::NoQueue { bucket }),
        (None, true, true) => return Err(BackfillError::TwoQueues),
        (None, true, false) | (Some(QueueKind::Sqs), true, _) => QueueKind::Sqs,
        (None, false, true) | (Some(QueueKind::Cloudflare), _, true) => QueueKind::Cloudflare,
        (Some(k), _, _) => return Err(BackfillError::NotConfigured(k.word())),
    };
    let opened = lanes::open(config, primary, std::slice::from_ref(&bucket))?.remove(0);
    let state = opened
        .backend
        .0
        .read_state(&opened.storage)
        .await
        .map_err(|message| BackfillError::State { bucket: bucket.clone(), message })?;
    let cursor_file = opts
        .cursor
        .clone()
        .unwrap_or_else(|| config.state.dir.join(format!("backfill-{}.cursor", bucket_file_name(&bucket))));
    let job = Job { config: &opened.config, storage: &opened.storage, bucket: &bucket, opts: &opts, state };
    match kind {
        QueueKind::Sqs => {
            let sqs = events.sqs.clone().expect("chosen because configured");
            let client = crate::events::sqs::SqsClient::new(sqs).map_err(BackfillError::Client)?;
            job.run(&client, "", cursor_file, Retry::default()).await
        }
        QueueKind::Cloudflare => {
            let cf = events.cloudflare_queue.clone().expect("chosen because configured");
            let account = cf.account_id.clone();
            let client = crate::events::cloudflare::QueueClient::new(cf).map_err(BackfillError::Client)?;
            job.run(&client, &account, cursor_file, Retry::default()).await
        }
    }
}

/// One backfill's inputs.
struct Job<'a> {
    config: &'a Config,
    storage: &'a Storage,
    bucket: &'a str,
    opts: &'a Options,
    state: State,
}

impl Job<'_> {
    async fn run(
        self,
        queue: &impl Queue,
        account: &str,
        cursor_file: PathBuf,
        retry: Retry,
    ) -> Result<Summary, BackfillError> {
        let started = Instant::now();
        let cursor = Cursor::new(cursor_file, self.bucket, &queue.name());
        let resumed_after = if self.opts.from_start { None } else { cursor.load()? };
        let mut s = Summary {
            bucket: self.bucket.to_owned(),
            queue: queue.kind().word().to_owned(),
            queue_name: queue.name(),
            dry_run: self.opts.dry_run,
            listed: 0,
            due: 0,
            sent: 0,
            failed: 0,
            skipped: Skipped::default(),
            resumed_after: resumed_after.clone(),
            cursor: resumed_after.clone(),
            cursor_file: cursor.path().display().to_string(),
            complete: false,
            error: None,
            failures: Vec::new(),
            duration_ms: 0,
        };
        let rules = PlanRules {
            formats: self.config.formats.clone(),
            outputs: self.config.outputs.clone(),
            ignore_before: self.state.ignore_before,
            reprocess_from: self.state.reprocess_from,
            force: false,
            now: chrono::Utc::now(),
            upto: None,
            defer: None,
            only: None,
        };
        let mut planner = Planner::new(rules, Arc::new(self.state));
        let mut sender = Sender {
            queue,
            cursor: &cursor,
            retry,
            rate: self.opts.rate.filter(|r| *r > 0.0).map(|r| RateLimit::new(r, queue.kind().max_entries())),
            started,
            dry_run: self.opts.dry_run,
            frozen: false,
        };
        let mut batcher = Batcher::new(queue.kind().max_entries(), MAX_BATCH_BYTES);
        let mut listing = self.storage.list_ordered(resumed_after.as_deref());
        let mut decisions = Vec::new();
        let mut ended = false;
        while !ended {
            match listing.next().await {
                Some(Ok(obj)) => {
                    s.listed += 1;
                    planner.push(obj, &mut decisions);
                }
                Some(Err(StorageError::Unlistable { key, .. })) => {
                    s.listed += 1;
                    if crate::naming::is_candidate(&key, &self.config.formats) {
                        s.skipped.invalid_key += 1;
                    }
                }
                Some(Err(e)) => {
                    s.error = Some(format!("listing failed: {e}"));
                    break;
                }
                None => {
                    planner.finish(&mut decisions);
                    ended = true;
                }
            }
            for d in decisions.drain(..) {
                let source = match d {
                    Decision::Convert { source, .. } => source,
                    Decision::Skip { reason, .. } => {
                        *match reason {
                            SkipReason::UpToDate => &mut s.skipped.up_to_date,
                            SkipReason::RetryLater => &mut s.skipped.retry_later,
                            SkipReason::Ledgered => &mut s.skipped.ledgered,
                            SkipReason::TooOld => &mut s.skipped.too_old,
                            // Never planned so: a backfill's plan defers no format.
                            SkipReason::OtherPass => &mut s.skipped.up_to_date,
                        } += 1;
                        continue;
                    }
                    // One per output several sources claim (a source's other outputs may
                    // still be due: then it is sent for them).
                    Decision::Conflict { claimants, .. } => {
                        s.skipped.conflict += claimants.len() as u64;
                        continue;
                    }
                };
                s.due += 1;
                let body = message::body(queue.kind(), self.bucket, account, &source);
                if let Some(batch) = batcher.push(Entry { key: source.key, body }) {
                    sender.send(batch, &mut s).await;
                    if s.error.is_some() {
                        break;
                    }
                }
            }
            if s.error.is_some() {
                break;
            }
        }
        if let Some(batch) = batcher.take()
            && s.error.is_none()
        {
            sender.send(batch, &mut s).await;
        }
        s.complete = s.error.is_none() && s.failed == 0 && !s.dry_run;
        if s.complete {
            cursor.remove()?;
            s.cursor = None;
        }
        s.duration_ms = started.elapsed().as_millis() as u64;
        Ok(s)
    }
}

/// Sends batches, keeping the cursor.
struct Sender<'a, Q> {
    queue: &'a Q,
    cursor: &'a Cursor,
    retry: Retry,
    rate: Option<RateLimit>,
    started: Instant,
    dry_run: bool,
    /// A message was not sent: the cursor stays before it from now on.
    frozen: bool,
}

/// How often (in messages sent) progress is logged.
const LOG_EVERY: u64 = 10_000;

impl<Q: Queue> Sender<'_, Q> {
    async fn send(&mut self, batch: Vec<Entry>, s: &mut Summary) {
        if self.dry_run {
            return;
        }
        if let Some(rate) = &mut self.rate {
            tokio::time::sleep(rate.take(batch.len(), self.started.elapsed())).await;
        }
        let sent = send_batch(self.queue, &batch, self.retry).await;
        let before = s.sent;
        s.sent += sent.sent as u64;
        s.failed += sent.failed.len() as u64;
        if before / LOG_EVERY != s.sent / LOG_EVERY {
            tracing::info!(sent = s.sent, due = s.due, failed = s.failed, "Backfill under way");
        }
        for (key, error) in sent.failed {
            tracing::warn!(key = %key, error = %error, "A backfill message could not be sent");
            if s.failures.len() < FAILURES_KEPT {
                s.failures.push(Failure { key, error });
            }
            self.frozen = true;
        }
        if let Some(e) = sent.down {
            s.error = Some(format!(
                "the queue took no message of a batch after {} attempts, stopped: {e}",
                self.retry.attempts
            ));
        }
        if self.frozen {
            return;
        }
        let last = &batch.last().expect("batches are never empty").key;
        match self.cursor.save(last) {
            Ok(()) => s.cursor = Some(last.clone()),
            Err(e) => s.error = Some(format!("{e} (stopped: a resume would not know where)")),
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
