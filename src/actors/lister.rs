//! Lister: streams the bucket listing in key order, asks the [`Planner`] which sources
//! need a WebP, and feeds them to the Converter pool — one bounded slot per image.
//!
//! The listing is never held whole: it is read one page ahead of the planner (the next
//! page's request overlaps the current page's work) and consumed as slots free up, so a
//! slow converter or uploader slows the listing down (backpressure). Each source is
//! downloaded here (async I/O, at most `pipeline.max_requests` at once) and handed to the
//! pool with its bytes once the pool's queue (`pipeline.max_queued`) has room: the
//! converters always find their next image ready, and a slow download never holds up
//! the others.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::Semaphore;

use super::converter::{ConvertImage, Converter, Route};
use super::state_keeper::{ListingFinished, RecordDone, RecordListed, RecordQueued, RunStart, StateKeeper};
use crate::config::Config;
use crate::convert::Target;
use crate::memory::MemoryBudget;
use crate::model::{Candidate, Due, ItemOutcome, Slot};
use crate::naming;
use crate::outputs::Format;
use crate::planner::{Decision, PlanRules, Planner, SkipReason};
use crate::reason::Reason;
use crate::scope::{RunScope, admit};
use crate::state::LedgerSeen;
use crate::storage::{ObjectInfo, Storage, StorageError};

/// Lists the bucket for a run that [`StateKeeper`] has begun.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListBucket {
    pub start: RunStart,
}

/// The actor: what each run's listing needs, handed to a task per run.
pub struct Lister {
    job: ListingJob,
}

impl Lister {
    /// `route` names this pipeline's Uploader and StateKeeper (the pool is shared).
    pub fn new(
        config: Arc<Config>,
        storage: Storage,
        route: Route,
        converter: Addr<Converter>,
        memory: MemoryBudget,
        scope: Arc<dyn RunScope>,
    ) -> Self {
        let p = &config.pipeline;
        let slots = Arc::new(Semaphore::new(p.max_in_flight));
        let downloads = Arc::new(Semaphore::new(p.max_requests));
        let queued = Arc::new(Semaphore::new(p.max_queued));
        let state_keeper = route.state_keeper.clone();
        let job =
            ListingJob { config, storage, state_keeper, route, converter, slots, downloads, queued, memory, scope };
        Self { job }
    }
}

impl Actor for Lister {
    type Context = Context<Self>;
}

impl Handler<ListBucket> for Lister {
    type Result = ();

    fn handle(&mut self, msg: ListBucket, _: &mut Context<Self>) {
        actix::spawn(self.job.clone().run(msg.start));
    }
}

/// One run's listing, run as a task on the Lister's arbiter (the slots are shared by runs).
#[derive(Clone)]
struct ListingJob {
    config: Arc<Config>,
    storage: Storage,
    state_keeper: Addr<StateKeeper>,
    route: Route,
    converter: Addr<Converter>,
    slots: Arc<Semaphore>,
    /// Downloads at once (`pipeline.max_requests`; on S3 the storage's window bounds
    /// them too, with every other request).
    downloads: Arc<Semaphore>,
    /// Downloaded images waiting for a converter (`pipeline.max_queued`).
    queued: Arc<Semaphore>,
    memory: MemoryBudget,
    scope: Arc<dyn RunScope>,
}

/// Listing entries read ahead of the planner: one page of S3's (1,000 keys).
const LIST_AHEAD: usize = 1000;

/// `listing` read up to `ahead` entries ahead in a task of its own, so the next page is
/// requested while this one is planned and dispatched. Dropping the stream ends the task.
fn read_ahead<T: Send + 'static>(mut listing: BoxStream<'static, T>, ahead: usize) -> BoxStream<'static, T> {
    let (tx, rx) = tokio::sync::mpsc::channel(ahead);
    tokio::spawn(async move {
        while let Some(item) = listing.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    receiver_stream(rx)
}

/// An mpsc receiver as a stream.
fn receiver_stream<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
}

/// How one pass over the listing plans and counts.
#[derive(Debug, Clone, Copy)]
struct Pass {
    /// Outputs of this format are left to a later pass.
    defer: Option<Format>,
    /// Only outputs of this format are made.
    only: Option<Format>,
    /// Whether its objects and skips are counted (a run's second pass lists the same
    /// objects again).
    counted: bool,
}

impl Pass {
    /// Whether this pass makes outputs of `format`.
    fn covers(&self, format: Format) -> bool {
        self.defer != Some(format) && self.only.is_none_or(|f| f == format)
    }
}

/// How often (in listed objects) progress is reported.
const REPORT_EVERY: u64 = 500;

impl ListingJob {
    async fn run(self, start: RunStart) {
        // With AVIF beside WebP outputs, the first pass makes every WebP and leaves the
        // AVIFs (several times the CPU each) to a second pass over the bucket: it
        // becomes WebP-complete about as fast as without AVIF, and AVIF follows.
        let outputs = &self.config.outputs;
        let avif_later = outputs.has(Format::Avif) && outputs.specs().iter().any(|s| s.format != Format::Avif);
        let first = Pass { defer: avif_later.then_some(Format::Avif), only: None, counted: true };
        // A resumed run lists after its cursor, then wraps around to list up to it again:
        // sources that arrived before the cursor while the daemon was down are not left
        // for the next run. (The repeat is cheap: up-to-date sources are skipped.)
        let mut seen = LedgerSeen::default();
        let mut error = self.pass(&start, start.cursor.as_deref(), None, &mut seen, first).await;
        if let (None, Some(cursor)) = (&error, &start.cursor)
            && !start.stopping.load(Ordering::SeqCst)
        {
            error = self.pass(&start, None, Some(cursor.clone()), &mut seen, first).await;
        }
        // Only a listing of the whole key space may say which ledgered sources are gone.
        let whole = error.is_none() && !start.stopping.load(Ordering::SeqCst);
        let unseen = whole.then(|| seen.unseen(&start.state));
        if avif_later && whole {
            // Every WebP of the first pass made and recorded (each frees its slot) before
            // any AVIF is dispatched: otherwise a small AVIF readied while a large WebP
            // is still downloading takes a converter before it.
            let all = u32::try_from(self.config.pipeline.max_in_flight).unwrap_or(u32::MAX);
            drop(self.slots.acquire_many(all).await);
            // The whole bucket again, every output due now (the WebPs are up to date):
            // its objects and skips were counted by the first pass.
            let second = Pass { defer: None, only: Some(Format::Avif), counted: false };
            error = self.pass(&start, None, None, &mut LedgerSeen::default(), second).await;
        }
        self.state_keeper.do_send(ListingFinished { error, unseen });
    }

    /// Lists after `offset` (up to `upto`), planning and dispatching; the error, if the
    /// listing failed.
    async fn pass(
        &self,
        start: &RunStart,
        offset: Option<&str>,
        upto: Option<String>,
        seen: &mut LedgerSeen,
        how: Pass,
    ) -> Option<String> {
        let rules = PlanRules {
            formats: self.config.formats.clone(),
            outputs: self.config.outputs.clone(),
            ignore_before: start.state.ignore_before,
            reprocess_from: start.state.reprocess_from,
            force: start.force,
            now: chrono::Utc::now(),
            upto: upto.clone(),
            defer: how.defer,
            only: how.only,
        };
        let mut planner = Planner::new(rules, start.state.clone());
        let mut listing = read_ahead(self.storage.list_ordered(offset), LIST_AHEAD);
        let (mut listed, mut skipped) = (0u64, 0u64);
        let mut decisions = Vec::new();
        let mut error = None;
        while let Some(item) = listing.next().await {
            if start.stopping.load(Ordering::SeqCst) {
                break;
            }
            let obj = match item {
                Ok(o) => o,
                // A name that cannot be a key: counted, and ledgered when it looks like an
                // image, so that it is reported instead of silently never converted.
                Err(StorageError::Unlistable { .. }) if !how.counted => continue,
                Err(StorageError::Unlistable { key, reason }) => {
                    listed += 1;
                    seen.saw(&start.state, &key);
                    if naming::is_candidate(&key, &self.config.formats) && self.mine(start, &key) {
                        let reason = format!("{key}: cannot be used as an object key: {reason}");
                        skipped += self.give_up(start, &key, 0, None, Reason::InvalidKey, reason).await;
                    }
                    continue;
                }
                Err(e) => {
                    error = Some(format!("listing failed: {e}"));
                    break;
                }
            };
            listed += 1;
            seen.saw(&start.state, &obj.key);
            let key = obj.key.clone();
            planner.push(obj, &mut decisions);
            skipped += self.act(start, decisions.drain(..), how).await;
            if upto.as_deref().is_some_and(|u| key.as_str() > u) && planner.first_pending().is_none() {
                break;
            }
            if how.counted && listed % REPORT_EVERY == 0 {
                // Keys below the first source still waiting for its WebP are all decided.
                let position = planner.first_pending().is_none().then_some(key);
                self.state_keeper.do_send(RecordListed { position, listed, skipped });
                (listed, skipped) = (0, 0);
            }
        }
        if error.is_none() && !start.stopping.load(Ordering::SeqCst) {
            planner.finish(&mut decisions);
            skipped += self.act(start, decisions.drain(..), how).await;
        }
        if how.counted {
            self.state_keeper.do_send(RecordListed { position: None, listed, skipped });
        }
        error
    }

    /// Carries out decisions; returns how many were skips.
    async fn act(&self, start: &RunStart, decisions: impl Iterator<Item = Decision>, how: Pass) -> u64 {
        let mut skipped = 0;
        for d in decisions {
            match d {
                // Made in the second pass, and counted there.
                Decision::Skip { reason: SkipReason::OtherPass, .. } => {}
                Decision::Skip { .. } => skipped += 1,
                Decision::Convert { source, due } => {
                    if self.mine(start, &source.key) {
                        self.dispatch(start, source, due).await
                    }
                }
                Decision::Conflict { mut claimants, output } => {
                    // Another pass's output: given up there.
                    let format = claimants.first().map(|(_, spec)| self.config.outputs.specs()[*spec].format);
                    if format.is_some_and(|f| !how.covers(f)) {
                        continue;
                    }
                    claimants.retain(|(s, _)| self.mine(start, &s.key));
                    let names: Vec<String> = claimants.iter().map(|(s, _)| s.key.clone()).collect();
                    // The one wording of a collision, as events, the API and the CLI give it.
                    let reason = crate::job::JobError::Collision { output: output.clone(), sources: names }.to_string();
                    for (source, spec) in claimants {
                        let (code, reason) = (Reason::OutputCollision, reason.clone());
                        skipped += self.give_up(start, &source.key, spec, source.etag, code, reason).await;
                    }
                }
            }
        }
        skipped
    }

    /// Records output `spec` of `key` as given up for good (unless the ledger already
    /// leaves it alone); answers 1 when it only counts as skipped.
    async fn give_up(
        &self,
        start: &RunStart,
        key: &str,
        spec: usize,
        etag: Option<String>,
        code: Reason,
        reason: String,
    ) -> u64 {
        let now = chrono::Utc::now();
        let ledger = self.config.outputs.ledger_key(key, spec);
        if start.state.decide(&ledger, etag.as_deref(), now) == crate::state::LedgerDecision::Leave
            || start.state.gave_up(&ledger, etag.as_deref(), code.code())
        {
            return 1;
        }
        let outcome = ItemOutcome::Failed { code, reason, permanent: true };
        let slot = self.slot().await;
        let output = self.config.outputs.specs()[spec].key(key);
        self.state_keeper.do_send(RecordQueued { key: ledger });
        self.state_keeper.do_send(RecordDone { key: key.to_owned(), spec, output, etag, outcome, slot });
        0
    }

    /// Whether this run converts `key`: whether its scope admits it now (solo: always;
    /// bucket mode: a shard of the run, still held and trusted).
    fn mine(&self, _start: &RunStart, key: &str) -> bool {
        admit(self.scope.as_ref(), key, chrono::Utc::now())
    }

    async fn slot(&self) -> Slot {
        Slot::new(self.slots.clone().acquire_owned().await.expect("the semaphore is never closed"))
    }

    /// Waits for a free slot, then (in a task) for room in the memory budget for the
    /// file, downloads it, waits for room to decode it and encode its due outputs, and
    /// hands it to the pool.
    async fn dispatch(&self, start: &RunStart, source: ObjectInfo, due: Vec<Due>) {
        let slot = self.slot().await;
        // A stop may have come while we waited: start nothing new.
        if start.stopping.load(Ordering::SeqCst) {
            return;
        }
        for d in &due {
            self.state_keeper.do_send(RecordQueued { key: self.config.outputs.ledger_key(&source.key, d.spec) });
        }
        let targets: Vec<Target> = due.iter().map(|d| Target::from(&self.config.outputs.specs()[d.spec])).collect();
        let candidate = Candidate { run_id: start.id.clone(), source, due };
        let storage = self.storage.clone();
        let converter = self.converter.clone();
        let state_keeper = self.state_keeper.clone();
        let route = self.route.clone();
        let opts = self.config.convert.clone();
        let budget = self.memory.clone();
        let (downloads, queue) = (self.downloads.clone(), self.queued.clone());
        actix::spawn(async move {
            let file = budget.reserve_file(candidate.source.size).await;
            let fetched = {
                let _request = downloads.acquire_owned().await.expect("never closed");
                storage.get(&candidate.source.key, opts.limits.max_input_bytes).await
            };
            let mut candidate = candidate;
            let mut targets = targets;
            if let Ok((_, bytes)) = &fetched {
                // Outputs that cannot fit beside the others (an AVIF of a huge photo in a
                // small budget) are given up alone; the rest go on.
                let (kept, refused) = budget.fit(bytes, &targets, &opts).await;
                for (i, e) in &refused {
                    let d = &candidate.due[*i];
                    state_keeper.do_send(RecordDone {
                        key: candidate.source.key.clone(),
                        spec: d.spec,
                        output: d.output.clone(),
                        etag: candidate.source.etag.clone(),
                        outcome: ItemOutcome::Failed { code: e.reason(), reason: e.to_string(), permanent: true },
                        slot: slot.clone(),
                    });
                }
                if !refused.is_empty() {
                    candidate.due = kept.iter().map(|&i| candidate.due[i].clone()).collect();
                    targets = kept.iter().map(|&i| targets[i]).collect();
                }
            }
            let failed = match fetched {
                Ok((_, bytes)) => match budget.reserve_targets(Some(file), &bytes, &targets, &opts).await {
                    Ok(memory) => {
                        let queued = queue.acquire_owned().await.expect("never closed");
                        converter.do_send(ConvertImage { candidate, targets, bytes, slot, memory, route, queued });
                        return;
                    }
                    // A limit its header breaks (pixels, frames, the memory budget).
                    Err(e) => ItemOutcome::Failed { code: e.reason(), reason: e.to_string(), permanent: true },
                },
                Err(e) => {
                    let permanent = !e.is_transient();
                    let code = match e.reason() {
                        Reason::StorageError => Reason::DownloadFailed,
                        reason => reason,
                    };
                    ItemOutcome::Failed { code, reason: e.to_string(), permanent }
                }
            };
            for d in candidate.due {
                state_keeper.do_send(RecordDone {
                    key: candidate.source.key.clone(),
                    spec: d.spec,
                    output: d.output,
                    etag: candidate.source.etag.clone(),
                    outcome: failed.clone(),
                    slot: slot.clone(),
                });
            }
        });
    }
}
