//! Configuration: read in layers, validated once into typed settings.
//!
//! Layers, lowest first: built-in defaults (the Go server's where it has one), the YAML
//! file (`config/config.yaml` or `--config`), the Go server's environment variables
//! (`R2_*`, `CONVERSION_*`, `RESIZE_PRESETS`, `CRON_*`, `SERVER_*`, `WEBHOOK_*`), then
//! `ICS__SECTION__KEY` variables; a `.env` file in the working directory (or
//! `--env-file`) supplies variables the environment does not set, as in the Go server.
//! [`Config::validate`] checks every value and names the key, the value and what is
//! allowed when one is wrong. Secrets are [`Secret`]s throughout.

pub mod dotenv;
mod events;
pub mod explain;
pub mod go_env;
mod keys;
mod load;
mod mask;
mod raw;
mod storage;
mod validate;

use std::path::{Path, PathBuf};

pub use events::{CloudflareQueueConfig, EventsConfig, SqsConfig};
pub use load::{Origin, Origins};
pub use raw::RawConfig;

use crate::convert::{ConvertOptions, ResizeSpec};
use crate::secret::Secret;

/// The file read when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/config.yaml";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("config: {0}")]
    Parse(String),
    #[error("{key} must be {allowed}, got {value}")]
    Invalid { key: String, value: String, allowed: String },
    #[error("config file {path}: unknown key `{key}`: {hint}")]
    UnknownKey { path: PathBuf, key: String, hint: String },
    #[error("environment variable {var}: unknown key `{key}`: {hint}")]
    UnknownVariable { var: String, key: String, hint: String },
    #[error(transparent)]
    Dotenv(#[from] dotenv::DotenvError),
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, value: impl std::fmt::Display, allowed: &str) -> Self {
        // A value may be a URL with a password or a signed query: never shown.
        let value = mask::mask_url(&value.to_string()).into_owned();
        Self::Invalid { key: key.to_owned(), value, allowed: allowed.to_owned() }
    }
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub storage: StorageConfig,
    /// Lower-case extensions of the objects to convert (`conversion.formats`).
    pub formats: Vec<String>,
    pub convert: ConvertOptions,
    /// What each source gets (`conversion.outputs`; by default one WebP, as in Go).
    pub outputs: crate::outputs::Outputs,
    /// A bucket's own outputs (`conversion.per_bucket.<bucket>.outputs`), in place of
    /// `outputs` in [`Config::for_bucket`].
    pub bucket_outputs: std::collections::BTreeMap<String, crate::outputs::Outputs>,
    /// Named resize presets (`resize.presets`).
    pub presets: std::collections::BTreeMap<String, ResizeSpec>,
    /// Keep the source, and do not upload, when the WebP is larger (`conversion.skip_if_larger`).
    pub skip_if_larger: bool,
    pub cron: CronConfig,
    pub server: ServerConfig,
    pub webhook: WebhookConfig,
    pub state: StateConfig,
    pub pipeline: PipelineConfig,
    pub api: ApiConfig,
    pub log: LogConfig,
    pub events: EventsConfig,
    /// `r2:`'s location as read, whichever backend is in use (for `check-config`).
    pub r2: R2AsRead,
    /// Where each value came from (for `check-config`).
    pub origins: Origins,
    /// Things loading noticed that the operator should hear about (logged at WARN once
    /// logging is up): a Go zero value read as Go's default, for example.
    pub warnings: Vec<String>,
}

/// `api:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// When set, every endpoint but `/`, `/health` and `/metrics` needs `Authorization: Bearer <token>`.
    pub token: Secret,
    /// Hosts `http(s)://` sources may name (`images.example.com`, `*.cdn.example`); empty = URL sources off.
    pub allowed_url_hosts: Vec<String>,
    /// Non-public `IP:PORT`s URL sources may still reach (e.g. an internal image server);
    /// a bare IP in the file stands for its ports 80 and 443.
    pub trusted_url_addresses: Vec<std::net::SocketAddr>,
    pub url_timeout: std::time::Duration,
    /// On-demand conversions waiting or running at once; past it the API answers 503 `busy`.
    pub max_queued_conversions: usize,
    /// Allow listening on a non-loopback address without `api.token`.
    pub allow_unauthenticated: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
}

/// Where the images live.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageConfig {
    /// A directory is the bucket; the bucket's name is the directory's last component.
    Local { root: PathBuf },
    /// An S3-compatible bucket: Cloudflare R2, AWS S3, MinIO.
    S3(S3Config),
    /// In-process memory (tests and experiments).
    Memory { bucket: String },
}

/// Settings of an S3-compatible backend.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub endpoint: String,
    /// The primary bucket: `r2.bucket`, or the first of `r2.buckets`.
    pub bucket: String,
    /// Every configured bucket, the primary first (`r2.buckets` / `R2_BUCKETS`).
    pub buckets: Vec<String>,
    pub region: String,
    pub access_key: Secret,
    pub secret_key: Secret,
    pub virtual_hosted_style: bool,
    pub retry: RetrySettings,
}

/// `r2.endpoint`, `r2.region` and `r2.virtual_hosted_style` as read, defaults applied.
/// With a backend other than `r2` they are unused, but `check-config` shows them as
/// configured rather than as empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct R2AsRead {
    pub endpoint: String,
    pub region: String,
    pub virtual_hosted_style: bool,
}

/// How S3 requests are retried: transient errors (5xx, `SlowDown`, connection resets,
/// timeouts) with exponential backoff and jitter, bounded by count and by time.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    pub max_retries: usize,
    pub retry_timeout: std::time::Duration,
    pub initial_backoff: std::time::Duration,
    pub request_timeout: std::time::Duration,
    /// Requests open at once, at most (`pipeline.max_requests`); the store's throttling
    /// lowers the window below it for a while.
    pub max_requests: usize,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 10,
            retry_timeout: std::time::Duration::from_secs(180),
            initial_backoff: std::time::Duration::from_millis(100),
            request_timeout: std::time::Duration::from_secs(60),
            max_requests: DEFAULT_MAX_REQUESTS,
        }
    }
}

/// `cron:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CronConfig {
    /// The schedule, parsed once; its zone is a `CRON_TZ=`/`TZ=` prefix's, else `timezone`.
    pub schedule: crate::schedule::Schedule,
    pub enabled: bool,
    /// `cron.timezone`; unset, the host's zone as the Go server uses it (`TZ`, else
    /// `/etc/localtime`), UTC when neither names one.
    pub timezone: chrono_tz::Tz,
    /// `serve` starts a run at once (finishing an interrupted run, converting what is missing).
    pub run_on_start: bool,
}

/// `server:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub timeout_seconds: u64,
}

/// `webhook:` validated; `url` empty means off.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: Option<String>,
    pub secret: Secret,
    pub retry_enabled: bool,
    pub retry_interval: std::time::Duration,
    pub max_retries: u32,
    pub pending_dir: PathBuf,
}

/// `state:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub dir: PathBuf,
    /// The state file's name in `dir`: `state.json`; with several buckets each has its
    /// own, `state-<bucket>.json` (the multi-bucket Go server's names; [`Config::for_bucket`]).
    pub file: String,
    /// The run lock's name in `dir`: `.lock`; with several buckets `.lock-<bucket>`, so
    /// that a run of one bucket never blocks another's.
    pub lock: String,
    /// Where a bucket never seen before starts (`state.initial`).
    pub initial: Initial,
    pub checkpoint_every: u32,
    /// Allowance for the storage's clock against ours, in `last_processed_time`.
    pub clock_skew: std::time::Duration,
    /// Attempts before a failing source is given up.
    pub max_attempts: u32,
    /// First retry delay; doubled on each further failure (capped at a day).
    pub retry_base: std::time::Duration,
    /// A lock file with no live holder and no OS lock support counts as held this long.
    pub lock_stale_after: std::time::Duration,
    /// `state.backend: bucket`: the state and the leases live in the bucket, shared by
    /// every instance; `None` for the local state file.
    pub cluster: Option<ClusterConfig>,
    /// `run-once --shard I/N` (the command line only): this process runs shard `I` of
    /// `N`, with a state file of its own.
    pub static_shard: Option<(u32, u32)>,
}

/// `state.initial`: which sources a bucket (or shard) with no state yet considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// Every source (`all`).
    All,
    /// Only sources modified from start-up on (`now`).
    Now,
    /// Sources modified at or after this time (an RFC 3339 time).
    Since(chrono::DateTime<chrono::Utc>),
}

impl std::fmt::Display for Initial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Initial::All => f.write_str("all"),
            Initial::Now => f.write_str("now"),
            Initial::Since(t) => f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        }
    }
}

/// `state.backend: bucket` validated: how instances share one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Where the coordination objects live, ending in `/` (`.image-converting-server/`).
    pub prefix: String,
    /// How many shards the key space is split into.
    pub shards: u32,
    /// How long a lease lasts unless renewed (renewed every third of it).
    pub lease: std::time::Duration,
    /// The largest difference between instances' clocks that stays safe.
    pub max_clock_skew: std::time::Duration,
    /// This instance's name in the bucket (default: host name, pid and a random suffix).
    pub instance_id: String,
}

/// `pipeline.max_requests` unless set: enough round trips in flight to keep two cores
/// encoding thumbnails against a store 80 ms away.
pub const DEFAULT_MAX_REQUESTS: usize = 64;

/// `pipeline:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Converter threads (default: one per core).
    pub workers: usize,
    /// Images between listing and the state record at once. Derived from the limits
    /// below unless `pipeline.max_in_flight` (deprecated) sets it; memory is bounded by
    /// `memory_budget_mb` either way.
    pub max_in_flight: usize,
    /// Storage requests open at once (downloads, uploads, listing, state), at most.
    pub max_requests: usize,
    /// Downloaded images waiting for a converter, at most (so the next image is ready).
    pub max_queued: usize,
    /// Concurrent uploads.
    pub upload_concurrency: usize,
    /// How long SIGTERM waits for in-flight images.
    pub shutdown_timeout: std::time::Duration,
    /// Memory that images being decoded and encoded may reserve at once (MiB). Unset,
    /// three quarters of the cgroup's limit or physical memory less 64 MiB.
    pub memory_budget_mb: u32,
    /// Where `memory_budget_mb` came from (the start-up log says it).
    pub memory_budget_from: crate::memory_limit::BudgetFrom,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `log:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Config {
    /// Reads `path` (or [`DEFAULT_PATH`] when `None`), `./.env` and the process environment.
    ///
    /// A path given explicitly must exist; the default file may be absent (defaults apply).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_files(path, None)
    }

    /// [`Config::load`] with the `.env` file named (`--env-file`; it must exist) or
    /// `None` for `.env` in the working directory (which may be absent).
    pub fn load_files(path: Option<&Path>, env_file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env_file(
            path,
            env_file.unwrap_or(Path::new(dotenv::DEFAULT_ENV_FILE)),
            env_file.is_some(),
            &vars,
        )
    }

    /// Loads with `env` as the process environment and `env_file` as the `.env` file
    /// (`required`: a missing file is an error).
    pub fn load_with_env_file(
        path: Option<&Path>,
        env_file: &Path,
        required: bool,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut vars = env.to_vec();
        let file = dotenv::read(env_file, required)?;
        let added: std::collections::BTreeSet<String> = dotenv::apply(&mut vars, file.vars).into_iter().collect();
        let mut config = Self::from_layers(path, &vars, &added)?;
        // A warning about a variable the environment sets would be about a value not used.
        config.warnings.splice(0..0, file.warnings.into_iter().filter(|(v, _)| added.contains(v)).map(|(_, w)| w));
        Ok(config)
    }

    /// Loads with an explicit environment and no `.env` file, for tests.
    pub fn load_with_env(path: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        Self::from_layers(path, env, &Default::default())
    }

    fn from_layers(
        path: Option<&Path>,
        env: &[(String, String)],
        from_dotenv: &std::collections::BTreeSet<String>,
    ) -> Result<Self, ConfigError> {
        let layered = load::layers(path, env, from_dotenv)?;
        let mut config = Self::validate_with(layered.raw, &layered.origins)?;
        config.warnings.splice(0..0, layered.warnings);
        config.origins = layered.origins;
        Ok(config)
    }

    /// Every bucket this daemon keeps WebP-complete, the primary first (`r2.buckets`;
    /// one for the local and memory backends).
    pub fn buckets(&self) -> Vec<String> {
        match &self.storage {
            StorageConfig::S3(s3) if !s3.buckets.is_empty() => s3.buckets.clone(),
            _ => vec![self.bucket_name()],
        }
    }

    /// The configuration of `bucket`'s pipeline: its storage names that bucket and, when
    /// the daemon keeps several, its state file and run lock are its own
    /// (`state-<bucket>.json`, `.lock-<bucket>` in `state.dir`). One bucket keeps
    /// `state.json` and `.lock`, as before.
    pub fn for_bucket(&self, bucket: &str) -> Config {
        let mut c = self.clone();
        if let StorageConfig::S3(s3) = &mut c.storage {
            s3.bucket = bucket.to_owned();
        }
        if let Some(own) = self.bucket_outputs.get(bucket) {
            c.outputs = own.clone();
        }
        if self.buckets().len() > 1 {
            let safe = bucket_file_name(bucket);
            c.state.file = format!("state-{safe}.json");
            c.state.lock = format!(".lock-{safe}");
        }
        c
    }

    /// The bucket's name: the S3 bucket, or the local root's last component.
    pub fn bucket_name(&self) -> String {
        match &self.storage {
            StorageConfig::S3(s3) => s3.bucket.clone(),
            StorageConfig::Memory { bucket } => bucket.clone(),
            StorageConfig::Local { root } => {
                root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bucket".into())
            }
        }
    }
}

/// A bucket's name as it appears in file names: `\\`, `/` and `:` become `_` (as the
/// multi-bucket Go server names its `state-<bucket>.json`).
pub fn bucket_file_name(bucket: &str) -> String {
    bucket.chars().map(|c| if matches!(c, '\\' | '/' | ':') { '_' } else { c }).collect()
}

/// `v` as an `f32` when within `lo..=hi`, else an error naming `key`.
pub(super) fn float_in(key: &str, v: f64, lo: f64, hi: f64) -> Result<f32, ConfigError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v as f32)
    } else {
        Err(ConfigError::invalid(key, v, &format!("between {lo} and {hi}")))
    }
}

/// `v` as a `T` when within `lo..=hi`, else an error naming `key`.
pub(super) fn int_in<T: TryFrom<i64>>(key: &str, v: i64, lo: i64, hi: i64) -> Result<T, ConfigError> {
    if (lo..=hi).contains(&v) {
        T::try_from(v).map_err(|_| ConfigError::invalid(key, v, &format!("between {lo} and {hi}")))
    } else {
        Err(ConfigError::invalid(key, v, &format!("between {lo} and {hi}")))
    }
}

/// `v`, or `default` when `v` is empty.
pub(super) fn non_empty_or(v: &str, default: &str) -> String {
    if v.is_empty() { default.into() } else { v.into() }
}

pub(super) fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
}

#[cfg(test)]
mod go_tests;
#[cfg(test)]
mod tests;
