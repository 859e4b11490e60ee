//! The configuration as written: every key optional, layered from defaults, the YAML
//! file, the Go server's environment variables and `ICS__SECTION__KEY` variables.
//!
//! Nothing here is checked beyond its type; [`super::Config::validate`] turns a
//! [`RawConfig`] into the typed, validated [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::secret::Secret;

/// The whole file. Sections the Go image-converting-server knew (`r2`, `conversion`,
/// `resize`, `cron`, `server`, `webhook`) keep its key names; the rest are additive.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub r2: RawR2,
    pub storage: RawStorage,
    pub conversion: RawConversion,
    pub resize: RawResize,
    pub cron: RawCron,
    pub server: RawServer,
    pub webhook: RawWebhook,
    pub state: RawState,
    pub pipeline: RawPipeline,
    pub api: RawApi,
    pub log: RawLog,
    pub events: RawEvents,
}

/// `api:` — the HTTP API's security and limits.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawApi {
    pub token: Secret,
    pub token_file: Option<std::path::PathBuf>,
    #[serde(deserialize_with = "list_or_csv")]
    pub allowed_url_hosts: Option<Vec<String>>,
    #[serde(deserialize_with = "list_or_csv")]
    pub trusted_url_addresses: Option<Vec<String>>,
    pub url_timeout_seconds: Option<i64>,
    pub max_queued_conversions: Option<i64>,
    pub allow_unauthenticated: Option<bool>,
    pub max_body_kb: Option<i64>,
}

/// `r2:` — credentials and location of the S3-compatible bucket (R2, AWS S3, MinIO).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawR2 {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub endpoint: String,
    pub bucket: String,
    /// The newer Go server's list of buckets (`R2_BUCKETS`); the first is the primary.
    #[serde(deserialize_with = "list_or_csv")]
    pub buckets: Option<Vec<String>>,
    /// Additive: the signing region; `auto` suits R2.
    pub region: Option<String>,
    /// Additive: virtual-hosted-style addressing instead of path-style.
    pub virtual_hosted_style: Option<bool>,
}

/// `storage:` — which backend holds the images.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawStorage {
    /// `local`, `r2` (also `s3`, for AWS S3 and MinIO) or `memory`. Unset: `r2` when
    /// `r2.bucket` is set (a Go server's file), otherwise `local`.
    pub backend: Option<String>,
    pub local_root: Option<String>,
    pub max_retries: Option<i64>,
    pub retry_timeout_seconds: Option<i64>,
    pub initial_backoff_ms: Option<i64>,
    pub request_timeout_seconds: Option<i64>,
}

/// `conversion:` — which images are converted and how.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConversion {
    #[serde(deserialize_with = "list_or_csv")]
    pub formats: Option<Vec<String>>,
    pub quality: Option<f64>,
    pub max_size_mb: Option<f64>,
    pub method: Option<i64>,
    pub lossless: Option<String>,
    pub near_lossless: Option<i64>,
    pub alpha_quality: Option<i64>,
    pub exact: Option<bool>,
    pub sharp_yuv: Option<bool>,
    /// Per source format overrides, e.g. `png: {lossless: always}`.
    pub per_format: BTreeMap<String, RawFormatOverride>,
    pub max_megapixels: Option<f64>,
    pub max_frames: Option<i64>,
    /// `fail` or `downscale` for images wider or taller than WebP's 16383 px.
    pub oversize: Option<String>,
    /// Keep the source and skip the upload when the WebP comes out larger.
    pub skip_if_larger: Option<bool>,
    pub keep_icc: Option<bool>,
    pub keep_exif: Option<bool>,
    pub keep_xmp: Option<bool>,
    /// What each source gets (`[{format: webp}, {format: avif, width: 640}]`); absent:
    /// one WebP, as the Go server writes.
    pub outputs: Option<Vec<RawOutputEntry>>,
    /// Per bucket of `r2.buckets` where buckets differ: `media: {outputs: [...]}`.
    pub per_bucket: BTreeMap<String, RawBucketConversion>,
}

/// One entry of `conversion.per_bucket`: what that bucket's sources get in place of
/// `conversion.outputs`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawBucketConversion {
    pub outputs: Option<Vec<RawOutputEntry>>,
}

/// One entry of `conversion.outputs`. Unknown fields are refused here (the key check
/// does not walk into lists).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOutputEntry {
    pub format: Option<String>,
    pub width: Option<i64>,
    pub quality: Option<f64>,
    pub name: Option<String>,
}

/// One entry of `conversion.per_format`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawFormatOverride {
    pub quality: Option<f64>,
    pub lossless: Option<String>,
    pub near_lossless: Option<i64>,
}

/// `resize:` — named presets for on-demand resizing.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawResize {
    pub presets: Option<BTreeMap<String, RawPreset>>,
}

/// One resize preset; a missing side keeps the aspect ratio.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPreset {
    pub width: Option<i64>,
    pub height: Option<i64>,
}

/// `cron:` — when runs fire.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCron {
    pub schedule: Option<String>,
    pub enabled: Option<bool>,
    pub timezone: Option<String>,
    pub run_on_start: Option<bool>,
}

/// `server:` — the HTTP API.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub host: Option<String>,
    pub port: Option<i64>,
    pub timeout_seconds: Option<i64>,
}

/// `webhook:` — where a finished run is announced.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawWebhook {
    pub url: Option<String>,
    pub secret: Secret,
    pub retry_enabled: Option<bool>,
    pub retry_interval_minutes: Option<f64>,
    pub max_retries: Option<i64>,
    pub pending_dir: Option<String>,
}

/// `state:` — the state file and the lock.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawState {
    pub dir: Option<String>,
    pub initial: Option<String>,
    pub checkpoint_every: Option<i64>,
    pub clock_skew_seconds: Option<i64>,
    pub max_attempts: Option<i64>,
    pub retry_base_minutes: Option<i64>,
    pub lock_stale_minutes: Option<i64>,
    /// `local` (a file) or `bucket` (objects under `prefix`, shared by several instances).
    pub backend: Option<String>,
    pub prefix: Option<String>,
    pub shards: Option<i64>,
    pub lease_seconds: Option<i64>,
    pub max_clock_skew_ms: Option<i64>,
    pub instance_id: Option<String>,
}

/// `pipeline:` — concurrency of a run.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPipeline {
    pub workers: Option<i64>,
    pub max_in_flight: Option<i64>,
    pub max_requests: Option<i64>,
    pub upload_concurrency: Option<i64>,
    pub shutdown_timeout_seconds: Option<i64>,
    pub memory_budget_mb: Option<i64>,
}

/// `log:` — logging.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

/// `events:` — conversion within seconds of an upload, from the bucket's event notifications.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawEvents {
    pub sqs: RawSqs,
    pub cloudflare_queue: RawCloudflareQueue,
    pub webhook_enabled: Option<bool>,
    pub webhook_token: Secret,
    pub max_receives: Option<i64>,
    pub concurrency: Option<i64>,
    pub delete_webp_on_remove: Option<bool>,
    pub webhook_every_seconds: Option<i64>,
}

/// `events.sqs:` — an SQS queue that the bucket notifies (AWS S3, moto).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSqs {
    pub queue_url: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Secret,
    pub secret_key: Secret,
    pub wait_seconds: Option<i64>,
    pub visibility_timeout_seconds: Option<i64>,
}

/// `events.cloudflare_queue:` — a Cloudflare Queue that an R2 bucket notifies (HTTP pull).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCloudflareQueue {
    pub account_id: Option<String>,
    pub queue_id: Option<String>,
    pub api_token: Secret,
    pub api: Option<String>,
    pub batch_size: Option<i64>,
    pub visibility_timeout_seconds: Option<i64>,
    pub poll_interval_ms: Option<i64>,
}

/// A list, or (from the environment) one comma-separated string.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Csv(String),
    }
    Ok(Option::<Either>::deserialize(d)?.map(|e| match e {
        Either::List(v) => v,
        Either::Csv(s) => s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
    }))
}
