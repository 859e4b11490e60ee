//! Payloads shared by several actors: a candidate image, what became of it, a run's
//! identity, its live progress and its summary.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::storage::ObjectInfo;

/// A source the Lister decided to convert, with the outputs of it that are due.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub run_id: Arc<str>,
    pub source: ObjectInfo,
    /// In `conversion.outputs` order; never empty.
    pub due: Vec<Due>,
}

/// One output of a source that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// Its place in `conversion.outputs`.
    pub spec: usize,
    /// Its key.
    pub output: String,
    /// The ETag of the output this one replaces (a stale or forced one); `None` when
    /// there is none. With `state.backend: bucket` the put is conditional on it.
    pub replaces: Option<String>,
}

/// A slot of the bounded pipeline. It travels with its image from the Lister through
/// the Converter pool and the Uploader to the StateKeeper, and frees the slot when the
/// StateKeeper has recorded the image — so the images between listing and record are
/// bounded (`PipelineConfig::max_in_flight`, derived from the request and queue limits),
/// and a slow stage holds the Lister back. A source with several outputs shares one
/// slot among them (clones): it is freed when the last is recorded.
#[derive(Debug, Clone)]
pub struct Slot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl Slot {
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(permit))
    }
}

/// What became of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    Converted {
        bytes_in: u64,
        bytes_out: u64,
        megapixels: f64,
        convert_ms: u64,
    },
    /// The WebP was not smaller; the source stays alone on purpose.
    Kept {
        bytes_in: u64,
        bytes_out: u64,
    },
    /// The output does not apply to this source (a width it is not wider than): none is
    /// made, and the ledger leaves this version alone.
    NotMade {
        code: crate::reason::Reason,
        reason: String,
    },
    /// Bucket mode: another instance now holds the shard, or wrote this WebP first;
    /// nothing is recorded, the shard's holder sees to it.
    Superseded {
        reason: String,
    },
    /// Failed; `permanent` failures (bad input, limits) are not retried.
    Failed {
        code: crate::reason::Reason,
        reason: String,
        permanent: bool,
    },
}

/// Counters of a run, live or finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunCounts {
    /// Objects seen in the listing.
    pub listed: u64,
    /// Sources handed to the converters.
    pub queued: u64,
    pub converted: u64,
    /// Sources whose WebP is up to date, or that the ledger says to leave or wait for.
    pub skipped: u64,
    /// WebP larger than the source: source kept.
    pub kept: u64,
    pub failed: u64,
    /// Bucket mode: left to another instance (lease lost, or its WebP was written first).
    pub superseded: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `converted` split by the format of each output (`webp`, `avif`). `converted`
    /// counts outputs: with `conversion.outputs` a source may have several.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub by_format: std::collections::BTreeMap<String, u64>,
}

/// A run's summary, as `run-once --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(flatten)]
    pub counts: RunCounts,
    pub duration_ms: u64,
    /// False when the run was interrupted (shutdown) and will resume.
    pub complete: bool,
    /// A fatal error that ended the run (e.g. the listing failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Keys that failed in this run, with their reasons.
    pub failures: Vec<FailureReport>,
    /// `run-once` in a cluster: the whole run of the bucket, shard by shard — who ran
    /// each and what it did there (the counts above are their sums).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardReport>,
}

/// What one run did in one shard, and which instance ran it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardReport {
    pub shard: u32,
    #[serde(flatten)]
    pub run: crate::state::PartRun,
}

/// One failed key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureReport {
    pub key: String,
    pub code: String,
    pub reason: String,
}
