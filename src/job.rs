//! Converting one object of the bucket: fetch, convert, upload — the unit of work that
//! the CLI's `convert`, the API and the pipeline's stages all perform.
//!
//! The steps are separate functions ([`check_source`], [`fetch`], [`convert_bytes`],
//! [`write_webp`]) so the pipeline and the API can run them on different actors;
//! [`convert_object`] chains them for one image. The checks and the write rule
//! ([`WriteRule`]: plain with one writer, conditional when several may race) are the
//! same on every path. Errors say which object and what went wrong; their
//! [`crate::reason::Reason`] is the one classification of the ledger, the metrics and
//! the API.

use std::time::Instant;

use bytes::Bytes;

use crate::config::Config;
use crate::convert::{self, ConvertError, ConvertOptions, Converted, ResizeSpec};
use crate::naming::{self, SourceError};
use crate::reason::Reason;
use crate::storage::{ObjectInfo, Storage, StorageError, WEBP_CONTENT_TYPE};

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

/// Runs the CPU-bound conversion on a blocking thread (never on the async threads).
pub async fn convert_bytes(
    key: &str,
    data: Bytes,
    opts: ConvertOptions,
    resize: Option<ResizeSpec>,
) -> Result<Converted, JobError> {
    let owned = key.to_owned();
    tokio::task::spawn_blocking(move || convert::convert(&data, &opts, resize))
        .await
        .map_err(|e| JobError::Worker { key: owned.clone(), message: e.to_string() })?
        .map_err(|error| JobError::Convert { key: owned, error })
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

/// Writes a WebP with `Content-Type: image/webp` by `rule`.
pub async fn write_webp(storage: &Storage, key: &str, webp: Bytes, rule: WriteRule) -> Result<Written, StorageError> {
    let replaces = match rule {
        WriteRule::Plain => {
            storage.put(key, webp, WEBP_CONTENT_TYPE).await?;
            return Ok(Written::Stored);
        }
        WriteRule::Conditional { replaces: Some(listed) } => listed,
        WriteRule::Conditional { replaces: None } => match storage.head(key).await {
            Ok(info) => info.etag,
            Err(StorageError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
    };
    let put = match &replaces {
        None => storage.put_new(key, webp, WEBP_CONTENT_TYPE).await,
        Some(etag) => storage.put_if_match(key, webp, WEBP_CONTENT_TYPE, etag).await,
    };
    match put {
        Ok(_) => Ok(Written::Stored),
        Err(StorageError::AlreadyExists { .. } | StorageError::Changed { .. }) => Ok(Written::Superseded),
        Err(e) => Err(e),
    }
}

/// The checks every path makes before converting one key of the bucket on request
/// (the CLI's `convert`, the API; runs make the same ones in the planner, over the
/// listing): a safe key, an extension in `conversion.formats`, and no other source in
/// its folder claiming the same WebP. The source's bucket was matched when its address
/// was parsed ([`naming::parse_source`]). Answers the WebP's key.
pub async fn check_source(storage: &Storage, formats: &[String], key: &str) -> Result<String, JobError> {
    crate::storage::check_key(key)?;
    if !naming::is_candidate(key, formats) {
        let ext = naming::extension(key).unwrap_or("").to_owned();
        return Err(JobError::NotCandidate { key: key.to_owned(), ext });
    }
    let output = naming::webp_key(key);
    let sources = colliding_sources(storage, key, formats).await?;
    if sources.len() > 1 {
        return Err(JobError::Collision { output, sources });
    }
    Ok(output)
}

/// Sources in the same folder that would write the same WebP as `key`.
pub async fn colliding_sources(storage: &Storage, key: &str, formats: &[String]) -> Result<Vec<String>, JobError> {
    let dir = key.rsplit_once('/').map(|(d, _)| d);
    let output = naming::webp_key(key);
    let siblings = storage.list_dir(dir).await?;
    Ok(siblings
        .into_iter()
        .map(|o| o.key)
        .filter(|k| naming::is_candidate(k, formats) && naming::webp_key(k) == output)
        .collect())
}

/// Converts one object of the configured bucket and uploads its WebP: the CLI's
/// `convert` ([`check_source`], then fetch, convert and [`write_webp`]).
pub async fn convert_object(
    storage: &Storage,
    config: &Config,
    key: &str,
    resize: Option<ResizeSpec>,
) -> Result<Outcome, JobError> {
    let started = Instant::now();
    let output = check_source(storage, &config.formats, key).await?;
    let (info, data) = fetch(storage, key, &config.convert).await?;
    let converted = convert_bytes(key, data, config.convert.clone(), resize).await?;
    let report = Report {
        source: naming::address(storage.bucket(), key),
        destination: naming::address(storage.bucket(), &output),
        original_size: info.size,
        converted_size: converted.webp.len() as u64,
        width: converted.width,
        height: converted.height,
        frames: converted.frames,
        lossless: converted.lossless,
        source_megapixels: converted.source_megapixels,
        duration_ms: 0,
    };
    if config.skip_if_larger && resize.is_none() && report.converted_size >= report.original_size {
        return Ok(Outcome::KeptSource(Report { duration_ms: elapsed_ms(started), ..report }));
    }
    let rule = WriteRule::current(config.state.cluster.is_some());
    let written = write_webp(storage, &output, Bytes::from(converted.webp), rule).await?;
    let report = Report { duration_ms: elapsed_ms(started), ..report };
    Ok(match written {
        Written::Stored => Outcome::Converted(report),
        Written::Superseded => Outcome::Superseded(report),
    })
}

fn elapsed_ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}
