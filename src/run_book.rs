//! A run's bookkeeping as a plain state machine, with no I/O in it (STYLE.md item 15):
//! the queue of listed sources in key order, the cursor below which every source is
//! done, the counts, when a checkpoint is due, and the summary. The StateKeeper actor
//! holds one per run and only feeds it what the stages report; the ledger, the saves,
//! the metrics and the logs stay with the actor.
//!
//! The cursor is what makes a crash lose nothing: sources are queued in listing (key)
//! order and leave the queue's front only once done, so every key at or before the
//! cursor is done or ledgered, and the next run resumes after it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::model::{FailureReport, ItemOutcome, RunCounts, RunSummary};
use crate::state::PartRun;

/// Converted images a finished run lists in its `batch.completed` webhook, at most.
pub const MAX_LISTED_IMAGES: usize = 10_000;

/// One run's books.
#[derive(Debug)]
pub struct RunBook {
    pub id: Arc<str>,
    pub started_at: DateTime<Utc>,
    pub clock: Instant,
    pub counts: RunCounts,
    /// Queued keys in listing order, with whether each is finished.
    queue: VecDeque<(String, bool)>,
    last_popped: Option<String>,
    listed_position: Option<String>,
    pub listing_done: bool,
    /// Why the run failed as a whole (its listing failed).
    pub error: Option<String>,
    /// When the listing covered the whole key space: the ledger keys it did not find.
    pub unseen: Option<Vec<String>>,
    since_checkpoint: u32,
    pub failures: Vec<FailureReport>,
    /// (source key, WebP key) of converted images, at most [`MAX_LISTED_IMAGES`].
    pub images: Vec<(String, String)>,
    /// What the run did in each part of the bucket (bucket mode: per shard).
    pub parts: BTreeMap<u32, PartRun>,
}

impl RunBook {
    /// A run `id` begun (or resumed) at `started_at`, after `cursor`, with the counts it
    /// had when it was interrupted.
    pub fn new(id: Arc<str>, started_at: DateTime<Utc>, cursor: Option<String>, counts: RunCounts) -> Self {
        Self {
            id,
            started_at,
            clock: Instant::now(),
            counts,
            queue: VecDeque::new(),
            last_popped: cursor.clone(),
            listed_position: cursor,
            listing_done: false,
            error: None,
            unseen: None,
            since_checkpoint: 0,
            failures: Vec::new(),
            images: Vec::new(),
            parts: BTreeMap::new(),
        }
    }

    /// A source queued for conversion (in listing order).
    pub fn queued(&mut self, key: String) {
        self.counts.queued += 1;
        self.queue.push_back((key, false));
    }

    /// A page of the listing: `listed` objects seen, `skipped` of them needing nothing,
    /// every key up to `position` decided.
    pub fn listed(&mut self, listed: u64, skipped: u64, position: Option<String>) {
        self.counts.listed += listed;
        self.counts.skipped += skipped;
        if position.is_some() {
            self.listed_position = position;
        }
    }

    /// What became of a queued output (`unit`: the key it was queued under, its ledger
    /// key) of source `key` (`part`: its shard, in bucket mode). Answers whether a
    /// checkpoint is due (every `checkpoint_every` outcomes).
    #[allow(clippy::too_many_arguments)]
    pub fn done(
        &mut self,
        unit: &str,
        key: &str,
        output: &str,
        part: Option<u32>,
        outcome: &ItemOutcome,
        checkpoint_every: u32,
    ) -> bool {
        if let Some(entry) = self.queue.iter_mut().find(|(k, done)| !*done && k == unit) {
            entry.1 = true;
        }
        while self.queue.front().is_some_and(|(_, done)| *done) {
            self.last_popped = self.queue.pop_front().map(|(k, _)| k);
        }
        if let Some(part) = part {
            count_part(self.parts.entry(part).or_default(), outcome);
        }
        match outcome {
            ItemOutcome::Converted { bytes_in, bytes_out, .. } => {
                self.counts.converted += 1;
                *self.counts.by_format.entry(crate::naming::output_format(output)).or_default() += 1;
                self.counts.bytes_in += bytes_in;
                self.counts.bytes_out += bytes_out;
                if self.images.len() < MAX_LISTED_IMAGES {
                    self.images.push((key.to_owned(), output.to_owned()));
                }
            }
            ItemOutcome::Superseded { .. } => self.counts.superseded += 1,
            ItemOutcome::NotMade { .. } => self.counts.skipped += 1,
            ItemOutcome::Kept { .. } => self.counts.kept += 1,
            ItemOutcome::Failed { code, reason, .. } => {
                self.counts.failed += 1;
                self.failures.push(FailureReport {
                    key: key.to_owned(),
                    code: code.code().into(),
                    reason: reason.clone(),
                });
            }
        }
        self.since_checkpoint += 1;
        if self.since_checkpoint >= checkpoint_every {
            self.since_checkpoint = 0;
            return true;
        }
        false
    }

    /// The listing is over (`error`: it failed); `unseen`: see [`RunBook::unseen`].
    pub fn listing_finished(&mut self, error: Option<String>, unseen: Option<Vec<String>>) {
        self.listing_done = true;
        if error.is_some() {
            self.error = error;
        }
        self.unseen = unseen;
    }

    /// Sources queued and not yet done.
    pub fn in_flight(&self) -> usize {
        self.queue.iter().filter(|(_, done)| !done).count()
    }

    /// The listing is over and every queued source is done.
    pub fn finished(&self) -> bool {
        self.listing_done && self.queue.is_empty()
    }

    /// Every source at or before this key is done or ledgered. Sources are queued in key
    /// order, so finished ones leave the queue's front in key order too.
    pub fn cursor(&self) -> Option<String> {
        if self.queue.is_empty() {
            self.listed_position.clone().max(self.last_popped.clone())
        } else {
            self.last_popped.clone()
        }
    }

    /// The run's summary as it ends at `now` (its failures taken).
    pub fn summary(&mut self, now: DateTime<Utc>, complete: bool, error: Option<String>) -> RunSummary {
        RunSummary {
            run_id: self.id.to_string(),
            started_at: self.started_at,
            finished_at: now,
            counts: self.counts.clone(),
            duration_ms: self.clock.elapsed().as_millis() as u64,
            complete,
            error,
            failures: std::mem::take(&mut self.failures),
            shards: Vec::new(),
        }
    }
}

/// Adds one outcome to a part's counts.
fn count_part(part: &mut PartRun, outcome: &ItemOutcome) {
    match outcome {
        ItemOutcome::Converted { bytes_in, bytes_out, .. } => {
            part.converted += 1;
            part.bytes_in += bytes_in;
            part.bytes_out += bytes_out;
        }
        ItemOutcome::Kept { .. } => part.kept += 1,
        ItemOutcome::Superseded { .. } => part.superseded += 1,
        ItemOutcome::NotMade { .. } => part.kept += 1,
        ItemOutcome::Failed { .. } => part.failed += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;

    fn converted() -> ItemOutcome {
        ItemOutcome::Converted { bytes_in: 10, bytes_out: 4, megapixels: 0.0, convert_ms: 1 }
    }

    fn book() -> RunBook {
        RunBook::new("r".into(), Utc::now(), None, RunCounts::default())
    }

    #[test]
    fn the_cursor_moves_only_past_keys_done_in_listing_order() {
        let mut b = book();
        for k in ["a", "b", "c"] {
            b.queued(k.into());
        }
        b.listed(3, 0, Some("c".into()));
        assert_eq!(b.cursor(), None);
        // "b" done before "a": the cursor waits for "a".
        b.done("b", "b", "b.webp", None, &converted(), 100);
        assert_eq!(b.cursor(), None);
        b.done("a", "a", "a.webp", None, &converted(), 100);
        assert_eq!(b.cursor().as_deref(), Some("b"));
        assert_eq!(b.in_flight(), 1);
        b.done("c", "c", "c.webp", None, &converted(), 100);
        assert_eq!(b.cursor().as_deref(), Some("c"));
        assert!(!b.finished(), "the listing is not over");
        b.listing_finished(None, None);
        assert!(b.finished());
    }

    #[test]
    fn past_the_last_queued_key_the_cursor_is_the_listings_position() {
        let mut b = RunBook::new("r".into(), Utc::now(), Some("k".into()), RunCounts::default());
        assert_eq!(b.cursor().as_deref(), Some("k"), "a resumed run starts at its cursor");
        b.listed(50, 50, Some("x".into()));
        assert_eq!(b.cursor().as_deref(), Some("x"), "skipped keys are decided");
    }

    #[test]
    fn outcomes_are_counted_and_a_checkpoint_falls_due_every_n() {
        let mut b = book();
        let outcomes = [
            converted(),
            ItemOutcome::Kept { bytes_in: 1, bytes_out: 2 },
            ItemOutcome::Superseded { reason: "x".into() },
            ItemOutcome::Failed { code: Reason::NotAnImage, reason: "text".into(), permanent: true },
        ];
        let mut due = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            let key = format!("k{i}");
            b.queued(key.clone());
            due.push(b.done(&key, &key, "out", Some(i as u32 % 2), o, 2));
        }
        assert_eq!(due, [false, true, false, true]);
        let c = &b.counts;
        assert_eq!((c.queued, c.converted, c.kept, c.superseded, c.failed), (4, 1, 1, 1, 1));
        assert_eq!((c.bytes_in, c.bytes_out), (10, 4));
        assert_eq!(b.images, [("k0".to_owned(), "out".to_owned())]);
        assert_eq!(b.parts[&0].converted + b.parts[&0].superseded, 2);
        assert_eq!(b.parts[&1].kept + b.parts[&1].failed, 2);
        let s = b.summary(Utc::now(), true, None);
        assert_eq!(s.failures.len(), 1);
        assert_eq!(s.failures[0].code, "not_an_image");
    }

    #[test]
    fn a_failed_listing_keeps_its_error() {
        let mut b = book();
        b.listing_finished(Some("list failed".into()), None);
        b.listing_finished(None, Some(vec!["gone".into()]));
        assert_eq!(b.error.as_deref(), Some("list failed"));
        assert_eq!(b.unseen.as_deref(), Some(&["gone".to_owned()][..]));
    }
}
