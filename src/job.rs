//! Converting one object of the bucket: fetch, convert, upload — the unit of work that
//! the CLI's `convert`, the API and the pipeline's stages all perform.
//!
//! The steps are separate functions ([`check_source`], [`fetch`], [`write_webp`]) so
//! the pipeline's stages and [`crate::request`] (the API's and the CLI's one path) run
//! them on their actors, converting in the one converter pool. The checks and the write rule
//! ([`WriteRule`]: plain with one writer, conditional when several may race) are the
//! same on every path. Errors say which object and what went wrong; their
//! [`crate::reason::Reason`] is the one classification of the ledger, the metrics and
//! the API.

use bytes::Bytes;
use futures::StreamExt;

use crate::convert::{ConvertError, ConvertOptions};
use crate::naming::{self, SourceError};
use crate::outputs::{Format, Outputs};
use crate::reason::Reason;
use crate::storage::{ObjectInfo, OutputWrite, Storage, StorageError};

/// Why one object was not converted.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{key}: not a candidate: extension {ext:?} is not in conversion.formats")]
    NotCandidate { key: String, ext: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{key}: {error}")]
    Convert { key: String, error: ConvertError },
    #[error("{output}: claimed by several sources ({}); convert none until only one remains", sources.join(", "))]
    Collision { output: String, sources: Vec<String> },
    #[error("{key}: conversion worker failed: {message}")]
    Worker { key: String, message: String },
    #[error("{key}: upload failed: {error}")]
    Upload { key: String, error: StorageError },
    /// The ledger leaves this version alone: given up (or kept) earlier, until it changes.
    #[error(
        "{key}: this version was given up earlier ({message}); it is left alone until it changes (force converts it again)"
    )]
    Ledgered { key: String, reason: Reason, message: String },
}

impl JobError {
    /// Why, as the ledger, the metrics and the API classify it.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Source(SourceError::Empty) => Reason::MissingSource,
            Self::Source(SourceError::UnknownBucket { .. }) => Reason::UnknownBucket,
            Self::Source(_) => Reason::InvalidSource,
            Self::NotCandidate { .. } => Reason::NotCandidate,
            Self::Storage(e) => e.reason(),
            Self::Convert { error, .. } => error.reason(),
            Self::Collision { .. } => Reason::OutputCollision,
            Self::Worker { .. } => Reason::WorkerFailed,
            Self::Upload { .. } => Reason::UploadFailed,
            Self::Ledgered { reason, .. } => *reason,
        }
    }

    /// [`JobError::reason`]'s stable snake_case code.
    pub fn code(&self) -> &'static str {
        self.reason().code()
    }
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// The WebP was written.
    Converted(Report),
    /// The WebP came out larger than the source and `conversion.skip_if_larger` kept the source.
    KeptSource(Report),
    /// Bucket mode: another writer stored this WebP between our look and our write;
    /// theirs was kept, ours not stored.
    Superseded(Report),
    /// The WebP is at least as new as its source: nothing converted (force converts).
    /// Only the sizes and names of the report are known.
    UpToDate(Report),
}

/// Figures of one conversion.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub source: String,
    pub destination: String,
    pub original_size: u64,
    pub converted_size: u64,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub lossless: bool,
    pub source_megapixels: f64,
    pub duration_ms: u64,
}

/// Reads a candidate's bytes, refusing (before download) one over `conversion.max_size_mb`.
pub async fn fetch(storage: &Storage, key: &str, opts: &ConvertOptions) -> Result<(ObjectInfo, Bytes), JobError> {
    Ok(storage.get(key, opts.limits.max_input_bytes).await?)
}

/// How a WebP is written: the one rule of runs, the API and the CLI's `convert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRule {
    /// One writer owns the bucket (the state file): a plain PUT.
    Plain,
    /// Several writers may race (`state.backend: bucket`): `If-None-Match: *` when there
    /// is no WebP yet, `If-Match` on the ETag of the one it replaces, so that each
    /// version is stored once and none is overwritten unseen. `replaces`: the WebP's
    /// ETag as the run listed it (`Some(None)`: none listed), or `None` to look now.
    Conditional { replaces: Option<Option<String>> },
}

impl WriteRule {
    /// The rule for a write not fenced by a listing (the API, `convert`): conditional,
    /// on the WebP as it is now, when several writers may race.
    pub fn current(conditional: bool) -> Self {
        if conditional { Self::Conditional { replaces: None } } else { Self::Plain }
    }
}

/// What a WebP write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Stored,
    /// Another writer stored it first (a conditional write refused); ours was not stored.
    Superseded,
}

/// Writes the output `key` made from `source` (`Content-Type: image/webp`, the source
/// named in its metadata: [`Storage::put_output`]) by `rule`.
pub async fn write_webp(
    storage: &Storage,
    key: &str,
    source: &str,
    webp: Bytes,
    rule: WriteRule,
) -> Result<Written, StorageError> {
    let replaces = match rule {
        WriteRule::Plain => {
            storage.put_output(key, webp, source, OutputWrite::Overwrite).await?;
            return Ok(Written::Stored);
        }
        WriteRule::Conditional { replaces: Some(listed) } => listed,
        WriteRule::Conditional { replaces: None } => match storage.head(key).await {
            Ok(info) => info.etag,
            Err(StorageError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
    };
    let write = match replaces {
        None => OutputWrite::Create,
        Some(etag) => OutputWrite::Update(etag),
    };
    match storage.put_output(key, webp, source, write).await {
        Ok(_) => Ok(Written::Stored),
        Err(StorageError::AlreadyExists { .. } | StorageError::Changed { .. }) => Ok(Written::Superseded),
        Err(e) => Err(e),
    }
}

/// What the one LIST of a key's stem showed: the source itself, its output of the
/// asked format (its WebP by default), and every source claiming that output.
#[derive(Debug, Clone, Default)]
pub struct Stem {
    pub source: Option<ObjectInfo>,
    pub output: Option<ObjectInfo>,
    pub claimants: Vec<String>,
}

impl Stem {
    /// Whether `key`'s output is at least as new as `key` (as a run decides up to date).
    pub fn up_to_date(&self) -> bool {
        matches!((&self.source, &self.output), (Some(s), Some(w)) if w.last_modified >= s.last_modified)
    }
}

/// The checks every path makes before converting one key of the bucket on request
/// (the CLI's `convert`, the API, a bucket event; runs make the same ones in the
/// planner, over the listing): a safe key, an extension in `conversion.formats`, and no
/// other source claiming the same WebP. The source's bucket was matched when its address
/// was parsed ([`naming::parse_source`]). Answers what the LIST of its stem showed.
pub async fn check_source(storage: &Storage, formats: &[String], key: &str, format: Format) -> Result<Stem, JobError> {
    storage.check(key)?;
    if !naming::is_candidate(key, formats) {
        let ext = naming::extension(key).unwrap_or("").to_owned();
        return Err(JobError::NotCandidate { key: key.to_owned(), ext });
    }
    let stem = list_stem(storage, key, formats, format).await?;
    if stem.claimants.len() > 1 {
        return Err(JobError::Collision {
            output: naming::output_key(key, format.ext(), None),
            sources: stem.claimants,
        });
    }
    Ok(stem)
}

/// One listing from the key's stem ([`naming::stem_prefix`]), stopped at the first key
/// past it: one LIST request however large the folder.
pub async fn list_stem(storage: &Storage, key: &str, formats: &[String], format: Format) -> Result<Stem, JobError> {
    let prefix = naming::stem_prefix(key);
    let output = naming::output_key(key, format.ext(), None);
    let mut listing = storage.list_ordered(Some(&prefix));
    let mut stem = Stem::default();
    while let Some(item) = listing.next().await {
        let o = match item {
            Ok(o) => o,
            // A name the local backend cannot hold as a key is no claimant.
            Err(StorageError::Unlistable { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if !o.key.starts_with(&prefix) {
            break;
        }
        if naming::claims_same_output(key, &o.key, formats) {
            stem.claimants.push(o.key.clone());
        }
        if o.key == key {
            stem.source = Some(o);
        } else if o.key == output {
            stem.output = Some(o);
        }
    }
    Ok(stem)
}

/// Everything in the bucket that decides the outputs of source `key`
/// (`conversion.outputs`), in key order: the LIST of its stem (`p/cat.`: the sources
/// claiming its outputs, and outputs named `stem.…`) and, for an output named otherwise
/// (`p/cat_w640.webp`), a LIST from that output's key and one of every other stem the
/// output could belong to (`p/cat_w640.`: `p/cat_w640.jpg` claims it too). With the Go
/// server's one WebP this is the one LIST of [`list_stem`].
pub async fn neighbourhood(storage: &Storage, key: &str, outputs: &Outputs) -> Result<Vec<ObjectInfo>, JobError> {
    let own = naming::stem_prefix(key);
    let mut prefixes = vec![own.clone()];
    for spec in outputs.specs() {
        let output = spec.key(key);
        if output.starts_with(&own) {
            continue;
        }
        prefixes.push(output.clone());
        for (_, stem) in outputs.inversions(&output) {
            prefixes.push(format!("{stem}."));
        }
    }
    prefixes.sort();
    prefixes.dedup();
    // A prefix another one covers adds nothing.
    let covered = |p: &String| prefixes.iter().any(|q| q != p && p.starts_with(q.as_str()));
    let lists: Vec<String> = prefixes.iter().filter(|p| !covered(p)).cloned().collect();
    let mut found = std::collections::BTreeMap::new();
    for prefix in lists {
        // A stem's prefix (`p/cat.`) is no key that matters: listed after it, as
        // list_stem does. An output's key is listed from just before it, so that it is
        // listed too.
        let mut after = prefix.clone();
        if !prefix.ends_with('.') {
            after.pop();
        }
        let mut listing = storage.list_ordered((!after.is_empty()).then_some(after.as_str()));
        while let Some(item) = listing.next().await {
            let o = match item {
                Ok(o) => o,
                Err(StorageError::Unlistable { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if o.key.as_str() < prefix.as_str() {
                continue;
            }
            if !o.key.starts_with(&prefix) {
                break;
            }
            found.insert(o.key.clone(), o);
        }
    }
    Ok(found.into_values().collect())
}

/// The sources among `listed` (by `formats`) whose output (any of `outputs`) is `output`.
pub fn claimants_of(output: &str, listed: &[ObjectInfo], outputs: &Outputs, formats: &[String]) -> Vec<String> {
    listed
        .iter()
        .filter(|o| naming::is_candidate(&o.key, formats))
        .filter(|o| outputs.specs().iter().any(|s| s.key(&o.key) == output))
        .map(|o| o.key.clone())
        .collect()
}
