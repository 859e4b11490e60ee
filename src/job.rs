//! Converting one object of the bucket: fetch, convert, upload — the unit of work that
//! the CLI's `convert`, the API and the pipeline's stages all perform.
//!
//! The steps are separate functions ([`fetch`], [`convert_bytes`], [`upload`]) so the
//! pipeline can run them on different actors; [`convert_object`] chains them for one
//! image. Errors say which object and what went wrong.

use std::time::Instant;

use bytes::Bytes;

use crate::config::Config;
use crate::convert::{self, ConvertError, ConvertOptions, Converted, ResizeSpec};
use crate::naming::{self, SourceError};
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
    /// A stable snake_case reason for ledgers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Source(_) => "invalid_source",
            Self::NotCandidate { .. } => "not_candidate",
            Self::Storage(StorageError::NotFound { .. }) => "not_found",
            Self::Storage(StorageError::TooLarge { .. }) => "too_large",
            Self::Storage(StorageError::UnsafeKey { .. }) => "unsafe_key",
            Self::Storage(_) => "storage_error",
            Self::Convert { error, .. } => error.code(),
            Self::Collision { .. } => "output_collision",
            Self::Worker { .. } => "worker_failed",
        }
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

/// Writes the WebP beside its source with `Content-Type: image/webp`.
pub async fn upload(storage: &Storage, output: &str, webp: Vec<u8>) -> Result<(), JobError> {
    storage.put(output, Bytes::from(webp), WEBP_CONTENT_TYPE).await?;
    Ok(())
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

/// Converts one object of the configured bucket and uploads its WebP.
pub async fn convert_object(
    storage: &Storage,
    config: &Config,
    key: &str,
    resize: Option<ResizeSpec>,
) -> Result<Outcome, JobError> {
    let started = Instant::now();
    crate::storage::check_key(key)?;
    if !naming::is_candidate(key, &config.formats) {
        let ext = naming::extension(key).unwrap_or("").to_owned();
        return Err(JobError::NotCandidate { key: key.to_owned(), ext });
    }
    let output = naming::webp_key(key);
    let sources = colliding_sources(storage, key, &config.formats).await?;
    if sources.len() > 1 {
        return Err(JobError::Collision { output, sources });
    }
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
    upload(storage, &output, converted.webp).await?;
    Ok(Outcome::Converted(Report { duration_ms: elapsed_ms(started), ..report }))
}

fn elapsed_ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}
