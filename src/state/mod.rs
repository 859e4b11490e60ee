//! The state file: the Go server's `state.json`, extended with what resuming and retrying
//! need, and the store that reads and writes it atomically.
//!
//! The bucket itself is the source of truth for "needs converting" (a source with no
//! WebP, or a WebP older than it). The state only remembers what the bucket cannot say:
//! a ledger of failed, given-up and deliberately skipped sources (keyed by key + ETag,
//! so a changed source gets a fresh chance), the position of an interrupted run, and the
//! watermark fields users read and may edit by hand.

pub mod go_state;
mod lock;
mod prune;
mod store;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub use lock::{LockError, RunLock};
pub use prune::LedgerSeen;
pub use store::{FileStateStore, StateError, StateStore, UpdateError, Updated, unsaved_run_error};

/// The whole state file. The first four fields are the Go server's, unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Every source last modified before this time had been handled when the last
    /// complete run started (its start, less the clock-skew margin).
    pub last_processed_time: Option<DateTime<Utc>>,
    /// When the last run finished.
    pub last_run_time: Option<DateTime<Utc>>,
    /// Images converted by the last run.
    pub processed_count: u64,
    /// Images that failed in the last run.
    pub failed_count: u64,
    /// `last_processed_time` as this program last wrote it; a different value in the file
    /// means a person edited it, which re-processes sources modified since then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_processed_time_written: Option<DateTime<Utc>>,
    /// Sources last modified before this are ignored (`state.initial: now` or a date).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_before: Option<DateTime<Utc>>,
    /// Re-convert sources modified at or after this, even when their WebP is up to date
    /// (set by a hand edit of `last_processed_time`; cleared when a run completes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reprocess_from: Option<DateTime<Utc>>,
    /// When the last complete run started (with `state.backend: bucket`, a shard whose
    /// last complete run started before the latest trigger is owed a run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_complete_run_started_at: Option<DateTime<Utc>>,
    /// Bucket mode: the run request (`trigger.json`'s `at`) the shard's last complete run
    /// answered; a later request makes the shard owed a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered_trigger_at: Option<DateTime<Utc>>,
    /// Bucket mode: the shard's last complete run — who ran it, the request it answered,
    /// what it did in this shard — so any instance can report a whole run of the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<PartRun>,
    /// The run in progress, if the last one did not finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunProgress>,
    /// Sources that failed, were given up, or were deliberately left without a WebP.
    pub ledger: BTreeMap<String, LedgerEntry>,
    /// Totals over all runs.
    pub totals: Totals,
}

/// What one run did in one part of the bucket (a shard, in bucket mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartRun {
    /// The run request it answered (`trigger.json`'s `at`).
    pub trigger_at: Option<DateTime<Utc>>,
    /// The instance that ran it.
    pub by: String,
    pub run_id: String,
    pub converted: u64,
    pub kept: u64,
    pub failed: u64,
    /// Left to another instance (lease lost, or its WebP was written first).
    pub superseded: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Where an unfinished run had got to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunProgress {
    pub id: String,
    pub started_at: Option<DateTime<Utc>>,
    /// Every candidate at or before this key is done or ledgered; a resumed run lists
    /// from after it.
    pub cursor: Option<String>,
    pub converted: u64,
    pub failed: u64,
}

/// Counters over the daemon's life.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub runs: u64,
    pub converted: u64,
    pub failed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Why a source is in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// Failed; retried after `next_retry_at`.
    Failed,
    /// Failed `max_attempts` times, or for a reason retrying cannot fix; left alone until
    /// the source changes.
    GivenUp,
    /// Converted, but the WebP was not smaller (`conversion.skip_if_larger`): no WebP on purpose.
    Kept,
}

/// One source the bucket alone cannot explain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub kind: LedgerKind,
    /// The source's ETag when this was recorded; another ETag means a new source.
    pub etag: Option<String>,
    /// Stable reason code (`decode_failed`, `storage_error`, `webp_larger`, …).
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
    pub attempts: u32,
    pub last_attempt_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// Retry policy for failed sources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, base_delay: Duration::minutes(5), max_delay: Duration::days(1) }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`: base × 2^(attempts − 1), capped.
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 1i64 << attempts.saturating_sub(1).min(30);
        (self.base_delay * factor as i32).min(self.max_delay)
    }
}

/// A failed attempt, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    /// Stable reason code.
    pub code: &'a str,
    /// Human-readable reason.
    pub reason: &'a str,
    /// Retrying cannot help (bad input, limits): give up at once.
    pub permanent: bool,
}

/// What the ledger says about a source the listing shows as needing a WebP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerDecision {
    /// Not in the ledger, or its source changed: convert it.
    Convert,
    /// Failed before; its retry time has come.
    Retry,
    /// Failed; not yet time to retry.
    Wait,
    /// Given up or deliberately kept: leave it until the source changes.
    Leave,
}

impl State {
    /// The state of a bucket (or shard) never seen before: `state.initial` is `all`,
    /// `now`, or an RFC 3339 time below which sources are ignored.
    pub fn initial(initial: &crate::config::Initial, now: DateTime<Utc>) -> Self {
        use crate::config::Initial;
        let ignore_before = match *initial {
            Initial::All => None,
            Initial::Now => Some(now),
            Initial::Since(t) => Some(t),
        };
        Self { ignore_before, ..Self::default() }
    }

    /// Decides what to do with `key` (with `etag`) at `now`.
    pub fn decide(&self, key: &str, etag: Option<&str>, now: DateTime<Utc>) -> LedgerDecision {
        let Some(entry) = self.ledger.get(key) else { return LedgerDecision::Convert };
        // A collision is not the source's own failing: it lasts only while another source
        // claims the same output, which every decision looks at afresh (a run in its
        // listing, one object in the LIST of its stem). When the other goes, this one is
        // converted, its version unchanged.
        if entry.etag.as_deref() != etag || entry.code == crate::reason::Reason::OutputCollision.code() {
            return LedgerDecision::Convert;
        }
        match entry.kind {
            LedgerKind::GivenUp | LedgerKind::Kept => LedgerDecision::Leave,
            LedgerKind::Failed if entry.next_retry_at.is_none_or(|t| t <= now) => LedgerDecision::Retry,
            LedgerKind::Failed => LedgerDecision::Wait,
        }
    }

    /// Whether this version of `key` is in the ledger as given up for `code` already (a
    /// run gives up each version once, and counts it skipped after).
    pub fn gave_up(&self, key: &str, etag: Option<&str>, code: &str) -> bool {
        self.ledger
            .get(key)
            .is_some_and(|e| e.kind == LedgerKind::GivenUp && e.etag.as_deref() == etag && e.code == code)
    }

    /// Records a failure: retried later with backoff, or given up after the last attempt
    /// (or at once when it is permanent).
    pub fn record_failure(
        &mut self,
        key: &str,
        etag: Option<String>,
        failure: Failure<'_>,
        policy: &RetryPolicy,
        now: DateTime<Utc>,
    ) -> LedgerKind {
        let attempts = match self.ledger.get(key) {
            Some(e) if e.etag == etag => e.attempts + 1,
            _ => 1,
        };
        let give_up = failure.permanent || attempts >= policy.max_attempts;
        let kind = if give_up { LedgerKind::GivenUp } else { LedgerKind::Failed };
        let entry = LedgerEntry {
            kind,
            etag,
            code: failure.code.to_owned(),
            reason: failure.reason.to_owned(),
            attempts,
            last_attempt_at: now,
            next_retry_at: (!give_up).then(|| now + policy.delay(attempts)),
        };
        self.ledger.insert(key.to_owned(), entry);
        kind
    }

    /// Records a source left without a WebP on purpose.
    pub fn record_kept(&mut self, key: &str, etag: Option<String>, code: &str, reason: &str, now: DateTime<Utc>) {
        let entry = LedgerEntry {
            kind: LedgerKind::Kept,
            etag,
            code: code.to_owned(),
            reason: reason.to_owned(),
            attempts: 1,
            last_attempt_at: now,
            next_retry_at: None,
        };
        self.ledger.insert(key.to_owned(), entry);
    }

    /// Forgets a source that converted.
    pub fn record_success(&mut self, key: &str) {
        self.ledger.remove(key);
    }

    /// Applies a hand edit of `last_processed_time`: moved back, sources modified since
    /// then are re-converted once ([`State::reprocess_from`]); moved forward, sources
    /// modified before it are ignored from now on ([`State::ignore_before`]). A state
    /// file from the Go server counts as edited. Returns the edited time, if any.
    pub fn notice_hand_edit(&mut self) -> Option<DateTime<Utc>> {
        let edited = self.last_processed_time?;
        if Some(edited) == self.last_processed_time_written {
            return None;
        }
        match self.last_processed_time_written {
            Some(written) if edited > written => {
                self.ignore_before = Some(self.ignore_before.map_or(edited, |t| t.max(edited)));
            }
            _ => self.reprocess_from = Some(edited),
        }
        self.last_processed_time_written = Some(edited);
        Some(edited)
    }

    /// Sets `last_processed_time` as this program (not a person) writes it.
    pub fn set_last_processed_time(&mut self, t: DateTime<Utc>) {
        self.last_processed_time = Some(t);
        self.last_processed_time_written = Some(t);
    }
}

#[cfg(test)]
mod tests;
