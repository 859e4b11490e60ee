//! Turns a [`RawConfig`] into a [`Config`], checking every value once, at start-up.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::raw::RawConversion;
use super::*;
use crate::api::address::OwnAddresses;
use crate::convert::{FormatOverride, Limits, LosslessPolicy, Oversize, SourceFormat};

const DEFAULT_FORMATS: [&str; 6] = ["jpeg", "jpg", "png", "gif", "bmp", "tiff"];
/// The Go server's webhook pending directory (its `defaultPendingDir` and `setDefaults`).
pub const DEFAULT_PENDING_DIR: &str = "data/webhook_pending";
const KNOWN_EXTENSIONS: &str = "a list of jpg, jpeg, jpe, png, gif, bmp, tif, tiff";

impl Config {
    /// Checks every value of `raw`; the first invalid one is the error.
    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        Self::validate_with(raw, &Origins::default())
    }

    /// [`Config::validate`], with the values' origins for the messages.
    pub fn validate_with(raw: RawConfig, origins: &Origins) -> Result<Self, ConfigError> {
        let mut storage = super::storage::storage(&raw.storage, &raw.r2, origins)?;
        let mut warnings = Vec::new();
        let (formats, mut convert, skip_if_larger) = conversion(&raw.conversion)?;
        let outputs = outputs(raw.conversion.outputs.as_deref())?;
        let mut bucket_outputs = BTreeMap::new();
        for (bucket, c) in &raw.conversion.per_bucket {
            let key = format!("conversion.per_bucket.{bucket}.outputs");
            let Some(list) = c.outputs.as_deref() else {
                return Err(ConfigError::Parse(format!("{key} is missing: a bucket's entry lists its outputs")));
            };
            let own = self::outputs(Some(list))
                .map_err(|e| ConfigError::Parse(e.to_string().replace("conversion.outputs", &key)))?;
            bucket_outputs.insert(bucket.clone(), own);
        }
        let mut presets = BTreeMap::new();
        let raw_presets = raw.resize.presets.unwrap_or_else(default_presets);
        for (name, p) in raw_presets {
            let side = |v: Option<i64>, which: &str| -> Result<Option<u32>, ConfigError> {
                v.map(|v| int_in(&format!("resize.presets.{name}.{which}"), v, 1, 16383)).transpose()
            };
            let spec = ResizeSpec { width: side(p.width, "width")?, height: side(p.height, "height")? };
            if spec.width.is_none() && spec.height.is_none() {
                return Err(ConfigError::invalid(
                    &format!("resize.presets.{name}"),
                    "neither width nor height",
                    "a preset with a width, a height or both",
                ));
            }
            presets.insert(name, spec);
        }
        let tz_name = raw.cron.timezone.unwrap_or_else(|| "UTC".into());
        let timezone: chrono_tz::Tz = tz_name.parse().map_err(|_| {
            ConfigError::invalid(
                "cron.timezone",
                format!("{tz_name:?} ({})", origins.of("cron.timezone")),
                "an IANA time zone such as UTC or Europe/Berlin",
            )
        })?;
        let expr = raw.cron.schedule.unwrap_or_else(|| "0 2 * * *".into());
        let schedule = crate::schedule::Schedule::parse(&expr, timezone).map_err(|e| match e {
            crate::schedule::ScheduleError::TimeZone(tz) => ConfigError::invalid(
                "cron.schedule",
                format!("{expr:?} (its zone {tz:?} is not known)"),
                "a CRON_TZ=/TZ= prefix naming an IANA time zone",
            ),
            crate::schedule::ScheduleError::Expression { message, .. } => ConfigError::invalid(
                "cron.schedule",
                format!("{expr:?} ({message})"),
                "a 5-field cron expression (minute hour day-of-month month day-of-week), \
                 @hourly/@daily/@weekly/@monthly/@yearly or @every <duration>, optionally after CRON_TZ=<zone>",
            ),
        })?;
        let cron = CronConfig {
            schedule,
            enabled: raw.cron.enabled.unwrap_or(true),
            timezone,
            run_on_start: raw.cron.run_on_start.unwrap_or(true),
        };
        let server = ServerConfig {
            host: raw.server.host.unwrap_or_else(|| "127.0.0.1".into()),
            port: int_in::<u16>("server.port", raw.server.port.unwrap_or(4000), 0, 65535)?,
            timeout_seconds: int_in::<u64>(
                "server.timeout_seconds",
                raw.server.timeout_seconds.unwrap_or(30),
                1,
                3600,
            )?,
        };
        let w = raw.webhook;
        let url = w.url.filter(|u| !u.trim().is_empty());
        if let Some(u) = &url {
            match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => {
                    return Err(ConfigError::invalid("webhook.url", u, "an http:// or https:// URL"));
                }
            }
        }
        let webhook = WebhookConfig {
            url,
            secret: w.secret,
            retry_enabled: w.retry_enabled.unwrap_or(true),
            retry_interval: {
                let m = w.retry_interval_minutes.unwrap_or(5.0);
                if !(m.is_finite() && (0.001..=10_080.0).contains(&m)) {
                    return Err(ConfigError::invalid("webhook.retry_interval_minutes", m, "between 0.001 and 10080"));
                }
                std::time::Duration::from_secs_f64(m * 60.0)
            },
            max_retries: int_in("webhook.max_retries", w.max_retries.unwrap_or(5), 0, 1000)?,
            // Go's webhook store and setDefaults: an empty directory means the default,
            // not the working directory.
            pending_dir: PathBuf::from(
                w.pending_dir.filter(|d| !d.is_empty()).unwrap_or_else(|| DEFAULT_PENDING_DIR.into()),
            ),
        };
        let cluster = cluster(&raw.state)?;
        let initial = match raw.state.initial.as_deref().unwrap_or("all") {
            "all" => Initial::All,
            "now" => Initial::Now,
            other => Initial::Since(
                chrono::DateTime::parse_from_rfc3339(other)
                    .map_err(|_| ConfigError::invalid("state.initial", other, "all, now or an RFC 3339 time"))?
                    .with_timezone(&chrono::Utc),
            ),
        };
        let state = StateConfig {
            dir: PathBuf::from(raw.state.dir.unwrap_or_else(|| "state".into())),
            file: "state.json".into(),
            lock: ".lock".into(),
            initial,
            checkpoint_every: int_in(
                "state.checkpoint_every",
                raw.state.checkpoint_every.unwrap_or(100),
                1,
                1_000_000,
            )?,
            clock_skew: secs(int_in(
                "state.clock_skew_seconds",
                raw.state.clock_skew_seconds.unwrap_or(300),
                0,
                86_400,
            )?),
            max_attempts: int_in("state.max_attempts", raw.state.max_attempts.unwrap_or(5), 1, 1000)?,
            retry_base: secs(
                60 * int_in::<u64>("state.retry_base_minutes", raw.state.retry_base_minutes.unwrap_or(5), 0, 10_080)?,
            ),
            lock_stale_after: secs(
                60 * int_in::<u64>("state.lock_stale_minutes", raw.state.lock_stale_minutes.unwrap_or(60), 1, 10_080)?,
            ),
            cluster,
            static_shard: None,
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let p = raw.pipeline;
        let workers: usize = int_in("pipeline.workers", p.workers.unwrap_or(cores as i64), 1, 256)?;
        let max_requests: usize =
            int_in("pipeline.max_requests", p.max_requests.unwrap_or(super::DEFAULT_MAX_REQUESTS as i64), 1, 1024)?;
        let upload_concurrency: usize =
            int_in("pipeline.upload_concurrency", p.upload_concurrency.unwrap_or(max_requests as i64), 1, 1024)?;
        // Enough converted images waiting that a converter never idles between two.
        let max_queued = 4 * workers;
        // Images in flight: downloading, queued, converting, uploading. The memory
        // budget, not this count, bounds their bytes.
        let derived = max_requests + max_queued + workers + upload_concurrency;
        let max_in_flight = match p.max_in_flight {
            None => derived,
            Some(n) => {
                let n = int_in("pipeline.max_in_flight", n, 1, 10_000)?;
                warnings.push(format!(
                    "pipeline.max_in_flight is deprecated: it caps images in flight at {n}, which limits \
                     throughput against a remote store (each image waits a GET and a PUT round trip); \
                     leave it unset: memory (pipeline.memory_budget_mb) and pipeline.max_requests bound \
                     the pipeline now ({derived} images in flight with these settings)"
                ));
                n
            }
        };
        if let super::StorageConfig::S3(s3) = &mut storage {
            s3.retry.max_requests = max_requests;
        }
        let (memory_budget_mb, memory_budget_from) = crate::memory_limit::BudgetFrom::choose(p.memory_budget_mb);
        if let (Some(mb), Some(limit)) = (p.memory_budget_mb, crate::memory_limit::detect()) {
            warnings.extend(u32::try_from(mb).ok().and_then(|mb| limit.warn_over(mb)));
        }
        let pipeline = PipelineConfig {
            workers,
            max_in_flight,
            max_requests,
            max_queued,
            upload_concurrency,
            shutdown_timeout: secs(int_in(
                "pipeline.shutdown_timeout_seconds",
                p.shutdown_timeout_seconds.unwrap_or(30),
                0,
                3600,
            )?),
            memory_budget_mb: int_in("pipeline.memory_budget_mb", memory_budget_mb, 16, 1 << 20)?,
            memory_budget_from,
        };
        // Every conversion (runs, API, the `convert` command) refuses work over the budget.
        convert.limits.memory_budget_mb = pipeline.memory_budget_mb;
        let a = raw.api;
        let mut trusted = Vec::new();
        for t in a.trusted_url_addresses.unwrap_or_default() {
            trusted.extend(trusted_address(&t)?);
        }
        let api = ApiConfig {
            token: token(a.token, a.token_file)?,
            allowed_url_hosts: a.allowed_url_hosts.unwrap_or_default(),
            trusted_url_addresses: trusted,
            url_timeout: secs(int_in("api.url_timeout_seconds", a.url_timeout_seconds.unwrap_or(15), 1, 600)?),
            max_queued_conversions: int_in(
                "api.max_queued_conversions",
                a.max_queued_conversions.unwrap_or(2 * pipeline.workers as i64 + 4),
                1,
                10_000,
            )?,
            allow_unauthenticated: a.allow_unauthenticated.unwrap_or(false),
            max_body_bytes: 1024 * int_in::<usize>("api.max_body_kb", a.max_body_kb.unwrap_or(64), 1, 1_048_576)?,
        };
        let format = match raw.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(ConfigError::invalid("log.format", other, "text or json")),
        };
        let log = LogConfig { level: log_level(raw.log.level.unwrap_or_else(|| "info".into()))?, format };
        let events = super::events::events(raw.events, &storage)?;
        let r2 = R2AsRead {
            endpoint: raw.r2.endpoint.clone(),
            region: super::storage::region(&raw.r2),
            virtual_hosted_style: raw.r2.virtual_hosted_style.unwrap_or(false),
        };
        let config = Config {
            events,
            r2,
            storage,
            formats,
            convert,
            outputs,
            bucket_outputs,
            presets,
            skip_if_larger,
            cron,
            server,
            webhook,
            state,
            pipeline,
            api,
            log,
            origins: Origins::default(),
            warnings,
        };
        let buckets = config.buckets();
        if let Some(stray) = config.bucket_outputs.keys().find(|b| !buckets.contains(b)) {
            return Err(ConfigError::Parse(format!(
                "conversion.per_bucket.{stray}: {stray:?} is not a bucket this daemon keeps ({})",
                buckets.join(", ")
            )));
        }
        Ok(config)
    }

    /// The checks `serve` adds to [`Config::validate`]: an API on a public address needs a
    /// token (or `api.allow_unauthenticated`), and `webhook.url` must not reach the API
    /// on `server.host:server.port`. `check-config` runs them too.
    pub fn check_serve(&self) -> Result<(), ConfigError> {
        let host = &self.server.host;
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        self.check_open_api(host, loopback)?;
        self.check_webhook_target(&OwnAddresses::configured(host, self.server.port))
    }

    /// [`Config::check_serve`]'s rules for the address the API is actually served on
    /// (`serve` is handed a bound listener).
    pub fn check_listener(&self, addr: std::net::SocketAddr) -> Result<(), ConfigError> {
        self.check_open_api(&addr.ip().to_string(), addr.ip().is_loopback())?;
        self.check_webhook_target(&OwnAddresses::new(vec![addr]))
    }

    /// A webhook to the daemon's own API loops: each run's end posts it, and its
    /// `/api/runs` starts the next run (issue 23 measured 18,058 runs in 30 s). Refused as
    /// URL sources refuse the API's addresses ([`OwnAddresses`]), in any spelling of them:
    /// `localhost`, `127.0.0.1`, `[::1]`, `0.0.0.0`, or any address of this host when the
    /// API listens on all. The message shows the URL's origin only (its path may be a secret).
    fn check_webhook_target(&self, own: &OwnAddresses) -> Result<(), ConfigError> {
        let Some(url) = self.webhook.url.as_deref().and_then(|u| url::Url::parse(u).ok()) else { return Ok(()) };
        match own.reached_by(&url) {
            None => Ok(()),
            Some(addr) => Err(ConfigError::invalid(
                "webhook.url",
                format!("{} (it reaches {addr}, this daemon's own API)", url.origin().ascii_serialization()),
                "the URL of another server: a webhook posted to the daemon's own API would start a run \
                 at the end of every run, in a loop",
            )),
        }
    }

    fn check_open_api(&self, host: &str, loopback: bool) -> Result<(), ConfigError> {
        if !loopback && self.api.token.is_empty() && !self.api.allow_unauthenticated {
            return Err(ConfigError::invalid(
                "server.host",
                format!("{host} (not a loopback address) while api.token is empty"),
                "a loopback address unless api.token is set (or api.allow_unauthenticated: true accepts an open API)",
            ));
        }
        Ok(())
    }
}

/// `log.level`: a level, or a filter whose every directive names a valid level (a bare
/// word such as `inf` would otherwise select a log target of that name and silence the rest).
fn log_level(level: String) -> Result<String, ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let allowed = "error, warn, info, debug, trace, off, or a filter such as info,ics=debug";
    let ok = !level.trim().is_empty()
        && level.split(',').map(str::trim).filter(|d| !d.is_empty()).all(|d| {
            let lvl = d.rsplit_once('=').map_or(d, |(_, l)| l);
            LEVELS.contains(&lvl.to_ascii_lowercase().as_str())
        })
        && tracing_subscriber::EnvFilter::builder().parse(&level).is_ok();
    if ok { Ok(level) } else { Err(ConfigError::invalid("log.level", format!("{level:?}"), allowed)) }
}

/// `conversion.outputs`: absent is the Go server's one WebP.
fn outputs(raw: Option<&[super::raw::RawOutputEntry]>) -> Result<crate::outputs::Outputs, ConfigError> {
    let entries: Option<Vec<crate::outputs::RawOutput>> = raw.map(|list| {
        list.iter()
            .map(|e| crate::outputs::RawOutput {
                format: e.format.clone(),
                width: e.width,
                quality: e.quality,
                name: e.name.clone(),
            })
            .collect()
    });
    crate::outputs::Outputs::parse(entries.as_deref()).map_err(|e| ConfigError::Parse(e.to_string()))
}

fn conversion(c: &RawConversion) -> Result<(Vec<String>, ConvertOptions, bool), ConfigError> {
    let mut formats: Vec<String> = match &c.formats {
        Some(list) => list.iter().map(|f| f.trim().trim_start_matches('.').to_ascii_lowercase()).collect(),
        None => DEFAULT_FORMATS.iter().map(|s| s.to_string()).collect(),
    };
    if formats.is_empty() {
        return Err(ConfigError::invalid("conversion.formats", "[]", KNOWN_EXTENSIONS));
    }
    // `tiff` covers its short spelling too (the Go server's list names only `tiff`).
    if formats.iter().any(|f| f == "tiff") && !formats.iter().any(|f| f == "tif") {
        formats.push("tif".into());
    }
    for f in &formats {
        if SourceFormat::from_extension(f).is_none() {
            return Err(ConfigError::invalid("conversion.formats", format!("{f:?}"), KNOWN_EXTENSIONS));
        }
    }
    let quality = float_in("conversion.quality", c.quality.unwrap_or(85.0), 0.0, 100.0)?;
    let max_mb = c.max_size_mb.unwrap_or(50.0);
    if !(max_mb > 0.0 && max_mb <= 4096.0) {
        return Err(ConfigError::invalid("conversion.max_size_mb", max_mb, "greater than 0 and at most 4096"));
    }
    let max_mp = c.max_megapixels.unwrap_or(100.0);
    if !(max_mp > 0.0 && max_mp <= 1000.0) {
        return Err(ConfigError::invalid("conversion.max_megapixels", max_mp, "greater than 0 and at most 1000"));
    }
    let mut per_format = BTreeMap::new();
    for (name, o) in &c.per_format {
        let key = format!("conversion.per_format.{name}");
        let format = SourceFormat::from_extension(name)
            .ok_or_else(|| ConfigError::invalid(&key, name, "one of jpeg, png, gif, bmp, tiff"))?;
        let ov = FormatOverride {
            quality: o.quality.map(|q| float_in(&format!("{key}.quality"), q, 0.0, 100.0)).transpose()?,
            lossless: o.lossless.as_deref().map(|l| lossless(&format!("{key}.lossless"), l)).transpose()?,
            near_lossless: o.near_lossless.map(|n| int_in(&format!("{key}.near_lossless"), n, 0, 100)).transpose()?,
        };
        per_format.insert(format, ov);
    }
    let oversize = match c.oversize.as_deref().unwrap_or("fail") {
        "fail" => Oversize::Fail,
        "downscale" => Oversize::Downscale,
        other => {
            return Err(ConfigError::invalid("conversion.oversize", other, "fail or downscale"));
        }
    };
    let options = ConvertOptions {
        quality,
        method: int_in("conversion.method", c.method.unwrap_or(4), 0, 6)?,
        lossless: lossless("conversion.lossless", c.lossless.as_deref().unwrap_or("auto"))?,
        near_lossless: int_in("conversion.near_lossless", c.near_lossless.unwrap_or(100), 0, 100)?,
        alpha_quality: int_in("conversion.alpha_quality", c.alpha_quality.unwrap_or(100), 0, 100)?,
        exact: c.exact.unwrap_or(false),
        sharp_yuv: c.sharp_yuv.unwrap_or(false),
        per_format,
        limits: Limits {
            max_input_bytes: (max_mb * 1024.0 * 1024.0) as u64,
            max_pixels: (max_mp * 1_000_000.0) as u64,
            max_frames: int_in("conversion.max_frames", c.max_frames.unwrap_or(1000), 1, 100_000)?,
            oversize,
            // Set from pipeline.memory_budget_mb once that is read.
            memory_budget_mb: crate::convert::cost::DEFAULT_BUDGET_MB,
        },
        keep_icc: c.keep_icc.unwrap_or(true),
        keep_exif: c.keep_exif.unwrap_or(false),
        keep_xmp: c.keep_xmp.unwrap_or(false),
        multithread: false,
    };
    Ok((formats, options, c.skip_if_larger.unwrap_or(true)))
}

fn lossless(key: &str, v: &str) -> Result<LosslessPolicy, ConfigError> {
    LosslessPolicy::parse(v).ok_or_else(|| ConfigError::invalid(key, v, "never, always or auto"))
}

fn default_presets() -> BTreeMap<String, super::raw::RawPreset> {
    use super::raw::RawPreset;
    // The Go server's documented presets (its docs and shipped config.yaml).
    [("thumbnail", 150, 150), ("medium", 800, 800), ("large", 1920, 1920)]
        .into_iter()
        .map(|(n, w, h)| (n.to_string(), RawPreset { width: Some(w), height: Some(h) }))
        .collect()
}

/// `state.backend` and, for `bucket`, the cluster settings.
fn cluster(raw: &super::raw::RawState) -> Result<Option<ClusterConfig>, ConfigError> {
    match raw.backend.as_deref().map(str::trim).unwrap_or("local") {
        "local" => return Ok(None),
        "bucket" => {}
        other => return Err(ConfigError::invalid("state.backend", other, "local or bucket")),
    }
    let prefix = raw.prefix.clone().unwrap_or_else(|| ".image-converting-server/".into());
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() || crate::storage::check_key(trimmed).is_err() {
        return Err(ConfigError::invalid(
            "state.prefix",
            &prefix,
            "a relative key prefix such as .image-converting-server/",
        ));
    }
    let lease_seconds: u64 = int_in("state.lease_seconds", raw.lease_seconds.unwrap_or(30), 2, 3600)?;
    let skew_ms: u64 = int_in("state.max_clock_skew_ms", raw.max_clock_skew_ms.unwrap_or(2000), 0, 600_000)?;
    // A holder renews every third of the lease and stops trusting it at expiry - skew:
    // the skew must leave most of the lease usable.
    if skew_ms * 4 > lease_seconds * 1000 {
        return Err(ConfigError::invalid(
            "state.max_clock_skew_ms",
            skew_ms,
            &format!("at most a quarter of state.lease_seconds ({} ms)", lease_seconds * 250),
        ));
    }
    // A configured name gets this process's suffix too: two processes given the same
    // name (a shared config file), or a restarted one while its predecessor still runs,
    // must never both take a lease as "theirs".
    let instance_id = match raw.instance_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) if id.len() > 80 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            return Err(ConfigError::invalid("state.instance_id", id, "at most 80 of A-Z a-z 0-9 - _ ."));
        }
        Some(id) => format!("{id}-{}", process_suffix()),
        None => default_instance_id(),
    };
    Ok(Some(ClusterConfig {
        prefix: format!("{trimmed}/"),
        shards: int_in("state.shards", raw.shards.unwrap_or(16), 1, 1024)?,
        lease: std::time::Duration::from_secs(lease_seconds),
        max_clock_skew: std::time::Duration::from_millis(skew_ms),
        instance_id,
    }))
}

/// `<host>-<pid>-<4 hex>`.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "host".into());
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(60).collect();
    format!("{host}-{}", process_suffix())
}

/// `<pid>-<16 hex>`: unique per process, even for pods that all run as pid 1 with the
/// same configured name (64 random bits from the standard library's per-process
/// hasher seed).
fn process_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{}-{:016x}", std::process::id(), h.finish())
}

/// One `api.trusted_url_addresses` entry: `IP:PORT`, `[IPv6]:PORT`, or a bare IP, which
/// trusts only its ports 80 and 443 (a trusted host must not open the daemon's other
/// ports, its own API among them).
fn trusted_address(entry: &str) -> Result<Vec<std::net::SocketAddr>, ConfigError> {
    let invalid = || {
        ConfigError::invalid("api.trusted_url_addresses", entry, "IP:PORT, [IPv6]:PORT or a bare IP (ports 80 and 443)")
    };
    if let Ok(a) = entry.parse::<std::net::SocketAddr>() {
        return if a.port() == 0 { Err(invalid()) } else { Ok(vec![a]) };
    }
    let ip: std::net::IpAddr = entry.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| invalid())?;
    Ok(vec![std::net::SocketAddr::new(ip, 80), std::net::SocketAddr::new(ip, 443)])
}

/// `api.token`, or the first line of the file `api.token_file` names (a container secret).
fn token(token: Secret, file: Option<std::path::PathBuf>) -> Result<Secret, ConfigError> {
    let Some(path) = file.filter(|p| !p.as_os_str().is_empty()) else { return Ok(token) };
    if !token.is_empty() {
        return Err(ConfigError::invalid(
            "api.token_file",
            path.display(),
            "unset when api.token is set (both name the token: keep one)",
        ));
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| ConfigError::Read { path: path.clone(), message: e.to_string() })?;
    let first = text.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return Err(ConfigError::invalid("api.token_file", path.display(), "a file whose first line is the token"));
    }
    Ok(Secret::new(first.to_owned()))
}
