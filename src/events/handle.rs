//! What one object event does: the same decision a run makes for the object, taken from
//! its HEAD instead of a listing, then download → Converter pool → Uploader.
//!
//! - A key that is not a source (the daemon's own `.webp` uploads come back as events)
//!   is done at once, without a request.
//! - An event older than the object (its ETag differs from the HEAD's and the object
//!   changed after it) is done: the newer upload has an event of its own.
//! - Two sources claiming one WebP (`p/x.jpg`, `p/x.png`): neither is converted, given up
//!   as `output_collision` as a run gives them up (one LIST, of the key's own stem).
//! - A source whose WebP is as new as it is done after two HEADs, without a download;
//!   so is one the ledger leaves alone (this version given up, or kept as smaller than
//!   its WebP would be).
//! - The WebP is written conditionally over the one seen before converting, and the
//!   source is checked again after the write: when it changed meanwhile, it is converted
//!   again, so an older version's WebP never stays over a newer source.
//! - A removal deletes the WebP only when no source claims it any more and this daemon
//!   made it of the removed source (the output's metadata names its source); when one
//!   claimant of a shared name is left, it is converted.
//! - A key the storage refuses (a NUL or other control character, `..`: a record that
//!   can never succeed) is given up at once and ledgered, never left to come back.
//! - Events for one key are handled one at a time (a key lock), so duplicates that arrive
//!   together cost one conversion.
//!
//! - What became of the image is recorded in the bucket's ledger as a run records it
//!   (kept, given up; a converted source's old entry dropped) before the answer is
//!   [`Handled::Done`], so the next run does not do it again.
//!
//! The answer is [`Handled::Done`] (the message may go) or [`Handled::Retry`] (a
//! transient failure, or an outcome the ledger could not store: leave the message to
//! come back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::Addr;
use chrono::Utc;
use tokio::sync::Semaphore;

use super::record::{EventKind, ObjectEvent};
use crate::actors::Pipeline;
use crate::actors::converter::Converter;
use crate::actors::state_keeper::{EventRecorded, RecordEvent, StateKeeper};
use crate::actors::uploader::Uploader;
use crate::config::Config;
use crate::job::{self, JobError, Outcome};
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::model::ItemOutcome;
use crate::naming;
use crate::reason::Reason;
use crate::request::{self, Target};
use crate::storage::{ObjectInfo, Storage, StorageError};

/// How one event ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    Done(Done),
    /// Transient: the event should come back later.
    Retry(String),
}

/// Why an event needs nothing more.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    Converted,
    /// The WebP is as new as its source.
    UpToDate,
    /// Not a source: another extension, or our own WebP.
    NotASource,
    /// An event of a bucket that is not this handler's (routed: one not configured).
    OtherBucket,
    /// A newer version of the object exists; its own event handles it.
    Stale,
    /// The object is gone (created, then deleted before we came).
    Gone,
    /// The WebP would be larger: the source stays alone.
    Kept,
    /// The ledger leaves this version of the source alone (given up, or kept before).
    Ledgered,
    /// Another writer stored the WebP first.
    Superseded,
    /// Removed: the WebP was deleted (`events.delete_webp_on_remove`), or left.
    Removed {
        webp_deleted: bool,
    },
    /// Bad input or a limit: converting again cannot help.
    GivenUp {
        code: String,
        reason: String,
    },
}

/// What handling events needs; cheap to clone.
#[derive(Clone)]
pub struct Handler {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub converter: Addr<Converter>,
    pub uploader: Addr<Uploader>,
    /// The bucket's ledger: asked before converting, told what became of the image.
    pub state_keeper: Addr<StateKeeper>,
    pub memory: MemoryBudget,
    pub metrics: Arc<Metrics>,
    /// Admission of event conversions at the converter pool (one for every bucket's
    /// handler: [`super::route::Router::new`]).
    pub(super) admitted: Arc<Semaphore>,
    /// What the next `events.completed` webhook reports.
    pub summary: Arc<super::summary::Summary>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Conversions of one source in a row, when it keeps changing under us.
const MAX_ROUNDS: usize = 3;

fn same_etag(a: Option<&str>, b: Option<&str>) -> bool {
    let norm = |e: &str| e.trim_matches('"').to_owned();
    matches!((a, b), (Some(a), Some(b)) if norm(a) == norm(b))
}

impl Handler {
    /// The handler of `storage`'s bucket, converting through `pipeline` (that bucket's).
    pub fn new(config: Arc<Config>, storage: Storage, pipeline: &Pipeline, metrics: Arc<Metrics>) -> Self {
        let admitted = Arc::new(Semaphore::new(config.events.concurrency));
        Self {
            config,
            storage,
            converter: pipeline.converter.clone(),
            uploader: pipeline.uploader.clone(),
            state_keeper: pipeline.state_keeper.clone(),
            memory: pipeline.memory.clone(),
            metrics,
            admitted,
            summary: Default::default(),
            locks: Default::default(),
        }
    }

    /// Handles one event.
    pub async fn handle(&self, event: &ObjectEvent) -> Handled {
        if !event.bucket.is_empty() && event.bucket != self.storage.bucket() {
            return Handled::Done(Done::OtherBucket);
        }
        if !naming::is_candidate(&event.key, &self.config.formats) {
            return Handled::Done(Done::NotASource);
        }
        let lock = self.lock(&event.key);
        let guard = lock.lock().await;
        let handled = match event.kind {
            EventKind::Created => self.created(event).await,
            EventKind::Removed => self.removed(event).await,
        };
        drop(guard);
        self.unlock(&event.key, lock);
        if let Handled::Done(Done::GivenUp { .. }) = &handled {
            self.summary.failed();
        }
        handled
    }

    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().expect("not poisoned").entry(key.to_owned()).or_default().clone()
    }

    fn unlock(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().expect("not poisoned");
        // Ours and the map's: nobody else waits for it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(key);
        }
    }

    /// The HEAD of `key`, for the event of `source` (as of `etag`); `Err` is the event's
    /// answer: a key the storage refuses (it can never succeed) given up and ledgered,
    /// any other failure left to come back.
    async fn head(&self, source: &str, etag: Option<&str>, key: &str) -> Result<Option<ObjectInfo>, Handled> {
        match self.storage.head(key).await {
            Ok(o) => Ok(Some(o)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e @ (StorageError::UnsafeKey { .. } | StorageError::Unlistable { .. })) => {
                Err(self.give_up_key(source, etag.map(str::to_owned), e.reason(), e.to_string(), true).await)
            }
            Err(e) => Err(Handled::Retry(e.to_string())),
        }
    }

    /// A source removed (`events.delete_webp_on_remove`): its WebP goes only when no
    /// source claims it any more and this daemon made it of that source (its metadata
    /// says so: [`Storage::output_source`]); a WebP the user uploaded, or one another
    /// source made, stays. When one claimant of a shared name is left and the WebP is not
    /// its own, that one is converted now.
    async fn removed(&self, event: &ObjectEvent) -> Handled {
        if !self.config.events.delete_webp_on_remove {
            return Handled::Done(Done::Removed { webp_deleted: false });
        }
        // Uploaded again since: the WebP belongs to the new version.
        match self.head(&event.key, event.etag.as_deref(), &event.key).await {
            Ok(Some(_)) => return Handled::Done(Done::Removed { webp_deleted: false }),
            Ok(None) => {}
            Err(h) => return h,
        }
        let listed = match job::neighbourhood(&self.storage, &event.key, &self.config.outputs).await {
            Ok(listed) => listed,
            Err(e) => return Handled::Retry(e.to_string()),
        };
        let mut deleted = false;
        let mut left_over = Vec::new();
        for spec in self.config.outputs.specs() {
            let output = spec.key(&event.key);
            let owner = match self.storage.output_source(&output).await {
                Ok(owner) => owner,
                Err(StorageError::NotFound { .. }) => continue,
                Err(e) => return Handled::Retry(e.to_string()),
            };
            let claimants = job::claimants_of(&output, &listed, &self.config.outputs, &self.config.formats);
            match claimants.as_slice() {
                [] if owner.as_deref() == Some(event.key.as_str()) => match self.storage.delete(&output).await {
                    Ok(()) => deleted = true,
                    Err(e) => return Handled::Retry(e.to_string()),
                },
                [left] if owner.as_deref() != Some(left.as_str()) && !left_over.contains(left) => {
                    left_over.push(left.clone())
                }
                _ => {}
            }
        }
        for left in left_over {
            let lock = self.lock(&left);
            let guard = lock.lock().await;
            let handled = self.create(&left, None, None, true).await;
            drop(guard);
            self.unlock(&left, lock);
            match handled {
                Handled::Done(_) => {}
                other => return other,
            }
        }
        Handled::Done(Done::Removed { webp_deleted: deleted })
    }

    async fn created(&self, event: &ObjectEvent) -> Handled {
        self.create(&event.key, event.etag.as_deref(), event.time, false).await
    }

    /// The source `key` created (as of `etag` at `time`, when the event says; `force`:
    /// convert even when its WebP looks as new as it is).
    async fn create(&self, key: &str, etag: Option<&str>, time: Option<chrono::DateTime<Utc>>, force: bool) -> Handled {
        let target = self.target();
        let mut force = force;
        for _ in 0..MAX_ROUNDS {
            let source = match self.head(key, etag, key).await {
                Ok(Some(s)) => s,
                Ok(None) => return Handled::Done(Done::Gone),
                Err(h) => return h,
            };
            if !force
                && etag.is_some()
                && !same_etag(etag, source.etag.as_deref())
                && time.is_none_or(|t| t < source.last_modified)
            {
                return Handled::Done(Done::Stale);
            }
            // The one path's decision for every output (a second claimant, up to date,
            // the ledger), from the LIST of the key's stem (and, for outputs named
            // otherwise, of their own neighbourhoods).
            let plan = match request::decide_outputs(&target, key, force).await {
                Ok(plan) => plan,
                Err(JobError::Storage(e)) if e.is_transient() => return Handled::Retry(e.to_string()),
                Err(e) => return self.give_up(&source, e.reason(), e.to_string()).await,
            };
            let mut collided = None;
            for (spec, output, sources) in &plan.conflicts {
                let reason = JobError::Collision { output: output.clone(), sources: sources.clone() }.to_string();
                let ledger = self.config.outputs.ledger_key(key, *spec);
                match self.give_up_key(&ledger, source.etag.clone(), Reason::OutputCollision, reason, true).await {
                    Handled::Retry(e) => return Handled::Retry(e),
                    given_up => collided = collided.or(Some(given_up)),
                }
            }
            if plan.due.is_empty() {
                return match collided {
                    Some(given_up) if plan.up_to_date == 0 && plan.ledgered.is_empty() => given_up,
                    _ if plan.up_to_date == 0 && !plan.ledgered.is_empty() => Handled::Done(Done::Ledgered),
                    _ => Handled::Done(Done::UpToDate),
                };
            }
            let converted_etag = source.etag.clone();
            match self.convert(&target, source, plan.due).await {
                Handled::Done(Done::Converted) => {}
                other => return other,
            }
            // The source may have changed while we converted: then our WebP is of an
            // older version, and its timestamp would hide the newer one from everyone.
            match self.head(key, etag, key).await {
                Ok(Some(now)) if !same_etag(now.etag.as_deref(), converted_etag.as_deref()) => force = true,
                _ => return Handled::Done(Done::Converted),
            }
        }
        Handled::Retry(format!("{key} kept changing while it was converted"))
    }

    /// What the one path of conversions on request needs of this bucket.
    fn target(&self) -> Target {
        Target {
            config: self.config.clone(),
            storage: self.storage.clone(),
            converter: self.converter.clone(),
            memory: self.memory.clone(),
            uploader: self.uploader.clone(),
            state_keeper: self.state_keeper.clone(),
        }
    }

    /// Downloads one source, then converts it into each of its due outputs and stores
    /// them by the one path's convert, finish and write steps
    /// ([`request::convert_outputs`]), each conditionally over the output seen before
    /// (`Due::replaces`). Each output is recorded in the ledger on its own; the answer is
    /// `Retry` when any output should be tried again, else `Converted` when any was.
    async fn convert(&self, target: &Target, source: ObjectInfo, due: Vec<crate::model::Due>) -> Handled {
        let started = std::time::Instant::now();
        let opts = &self.config.convert;
        let file = self.memory.reserve_file(source.size).await;
        let bytes = match self.storage.get(&source.key, opts.limits.max_input_bytes).await {
            Ok((info, bytes)) if same_etag(info.etag.as_deref(), source.etag.as_deref()) || info.etag.is_none() => {
                bytes
            }
            // Replaced between the HEAD and the GET: decide again.
            Ok(_) => return Handled::Retry(format!("{} changed while it was downloaded", source.key)),
            Err(StorageError::NotFound { .. }) => return Handled::Done(Done::Gone),
            Err(e @ StorageError::TooLarge { .. }) => {
                return self.give_up(&source, e.reason(), e.to_string()).await;
            }
            Err(e) if e.is_transient() => return Handled::Retry(e.to_string()),
            Err(e) => return self.give_up(&source, Reason::DownloadFailed, e.to_string()).await,
        };
        let bytes_in = bytes.len() as u64;
        let admitted = Arc::new(self.admitted.clone().acquire_owned().await.expect("never closed"));
        let answers =
            match request::convert_outputs(target, &source.key, bytes, &due, admitted, Some(file), started).await {
                Ok(answers) => answers,
                Err(e @ (JobError::Worker { .. } | JobError::Upload { .. })) => return Handled::Retry(e.to_string()),
                Err(JobError::Convert { error: e @ crate::convert::ConvertError::Encode(_), .. }) => {
                    return Handled::Retry(e.to_string());
                }
                Err(e) => return self.give_up(&source, e.reason(), e.to_string()).await,
            };
        let mut answer: Option<Handled> = None;
        // The answer of the event: a retry over anything, a conversion over the rest.
        let mut settle = |h: Handled| {
            let rank = |h: &Handled| match h {
                Handled::Retry(_) => 5,
                Handled::Done(Done::Converted) => 4,
                Handled::Done(Done::GivenUp { .. }) => 3,
                Handled::Done(Done::Kept) => 2,
                Handled::Done(Done::Superseded) => 1,
                Handled::Done(_) => 0,
            };
            if answer.as_ref().is_none_or(|a| rank(&h) > rank(a)) {
                answer = Some(h);
            }
        };
        for (d, result) in due.iter().zip(answers) {
            let ledger = self.config.outputs.ledger_key(&source.key, d.spec);
            let etag = source.etag.clone();
            settle(match result {
                Ok(Outcome::Converted(report)) => {
                    let seconds = started.elapsed().as_secs_f64();
                    self.metrics.converted(&d.output, bytes_in, report.converted_size, seconds);
                    self.summary.converted(&source.key, &d.output);
                    // Drops a ledger entry of an earlier failure. The output is stored, so
                    // a failure here only leaves the entry for the next complete run to see.
                    let outcome = ItemOutcome::Converted {
                        bytes_in,
                        bytes_out: report.converted_size,
                        megapixels: report.source_megapixels,
                        convert_ms: (seconds * 1000.0) as u64,
                    };
                    if let Handled::Retry(e) = self.record_key(&ledger, etag, outcome, Done::Converted).await {
                        tracing::warn!(key = %source.key, output = %d.output, "A converted output's ledger entry was not dropped: {e}");
                    }
                    Handled::Done(Done::Converted)
                }
                Ok(Outcome::KeptSource(report)) => {
                    let kept = ItemOutcome::Kept { bytes_in, bytes_out: report.converted_size };
                    let handled = self.record_key(&ledger, etag, kept, Done::Kept).await;
                    if handled == Handled::Done(Done::Kept) {
                        self.metrics.kept();
                    }
                    handled
                }
                Ok(Outcome::Superseded(_)) => {
                    self.metrics.superseded();
                    Handled::Done(Done::Superseded)
                }
                Ok(Outcome::UpToDate(_)) => Handled::Done(Done::UpToDate),
                Err(JobError::Convert { error: e @ crate::convert::ConvertError::Encode(_), .. }) => {
                    Handled::Retry(e.to_string())
                }
                Err(JobError::Convert { error, .. }) if error.reason() == Reason::NotApplicable => {
                    let outcome = ItemOutcome::NotMade { code: Reason::NotApplicable, reason: error.to_string() };
                    self.record_key(&ledger, etag, outcome, Done::Ledgered).await
                }
                Err(e @ (JobError::Worker { .. } | JobError::Upload { .. })) => Handled::Retry(e.to_string()),
                Err(e) => self.give_up_key(&ledger, etag, e.reason(), e.to_string(), true).await,
            });
        }
        answer.unwrap_or(Handled::Done(Done::UpToDate))
    }

    /// Records `outcome` of the ledger key `key` and answers `done`; when it cannot be
    /// stored, the event is left to come back.
    async fn record_key(&self, key: &str, etag: Option<String>, outcome: ItemOutcome, done: Done) -> Handled {
        let msg = RecordEvent { key: key.to_owned(), etag, outcome };
        match self.state_keeper.send(msg).await {
            Ok(Ok(EventRecorded::Stored)) => Handled::Done(done),
            Ok(Ok(EventRecorded::NotHeld)) => {
                tracing::debug!(key = %key, "Not recorded here: the key's shard is another instance's");
                Handled::Done(done)
            }
            Ok(Err(e)) => Handled::Retry(format!("{key} could not be recorded in the ledger: {e}")),
            Err(e) => Handled::Retry(format!("the state keeper is stopping: {e}")),
        }
    }

    /// Gives `source` up for this version: bad input or a limit, which converting again
    /// cannot help. Recorded in the ledger as a run's permanent failure is.
    async fn give_up(&self, source: &ObjectInfo, code: Reason, reason: String) -> Handled {
        self.give_up_key(&source.key, source.etag.clone(), code, reason, true).await
    }

    /// Gives the event of `key` up: recorded in the ledger as a failure, `permanent`
    /// (given up until the source changes) or not (the runs retry it on their backoff).
    pub(super) async fn give_up_key(
        &self,
        key: &str,
        etag: Option<String>,
        code: Reason,
        reason: String,
        permanent: bool,
    ) -> Handled {
        let outcome = ItemOutcome::Failed { code, reason: reason.clone(), permanent };
        let handled = self.record_key(key, etag, outcome, Done::GivenUp { code: code.code().to_owned(), reason }).await;
        if matches!(handled, Handled::Done(_)) {
            self.metrics.failed(code);
        }
        handled
    }
}

/// Seconds from the upload (the event's time, else the source's) to now.
pub fn lag_seconds(event: &ObjectEvent) -> Option<f64> {
    event.time.map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
}
