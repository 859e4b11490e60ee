//! `storage` and `r2` validated: which backend holds the images, and the bucket list
//! (`r2.buckets`, the primary first; the daemon keeps every one, `crate::lanes`).
//!
//! A bucket selects the `r2` backend; R2 credentials without any bucket, or an explicit
//! `local` backend beside a bucket, are refused rather than read one way or the other.

use std::path::PathBuf;

use super::raw::{RawR2, RawStorage};
use super::{ConfigError, Origins, RetrySettings, S3Config, StorageConfig, int_in, non_empty_or, secs};

/// `r2.bucket` and `r2.buckets` as one list, the primary first (Go's `setDefaults`).
fn buckets(r2: &RawR2, origins: &Origins) -> Result<Vec<String>, ConfigError> {
    let mut list: Vec<String> = Vec::new();
    for b in r2.buckets.iter().flatten().map(|b| b.trim()).filter(|b| !b.is_empty()) {
        if !list.iter().any(|x| x == b) {
            list.push(b.to_owned());
        }
    }
    let primary = r2.bucket.trim();
    if !primary.is_empty() {
        if list.is_empty() {
            list.push(primary.to_owned());
        } else if list[0] != primary {
            return Err(ConfigError::invalid(
                "r2.bucket",
                format!(
                    "{primary:?} ({}) with r2.buckets {list:?} ({})",
                    origins.of("r2.bucket"),
                    origins.of("r2.buckets")
                ),
                "the first of r2.buckets (the primary bucket), or unset",
            ));
        }
    }
    Ok(list)
}

/// A Go file may hold `${R2_ACCESS_KEY}`-style placeholders (its docs show them); neither
/// server expands them, so one left in place is refused rather than sent as a credential.
fn placeholder(key: &str, v: &str, var: &str) -> Result<(), ConfigError> {
    let t = v.trim();
    if t.starts_with("${") && t.ends_with('}') {
        return Err(ConfigError::invalid(
            key,
            format!("the placeholder {t}, which is not expanded"),
            &format!("a value; set the environment variable {var} (or put it in .env) instead"),
        ));
    }
    Ok(())
}

/// `r2.region`, `auto` (R2's) when unset or empty.
pub(super) fn region(r2: &RawR2) -> String {
    r2.region.clone().filter(|r| !r.trim().is_empty()).unwrap_or_else(|| "auto".into())
}

pub(super) fn storage(s: &RawStorage, r2: &RawR2, origins: &Origins) -> Result<StorageConfig, ConfigError> {
    placeholder("r2.access_key", r2.access_key.expose(), "R2_ACCESS_KEY")?;
    placeholder("r2.secret_key", r2.secret_key.expose(), "R2_SECRET_KEY")?;
    placeholder("r2.endpoint", &r2.endpoint, "R2_ENDPOINT")?;
    placeholder("r2.bucket", &r2.bucket, "R2_BUCKET")?;
    let buckets = buckets(r2, origins)?;
    let credentials = !(r2.access_key.is_empty() && r2.secret_key.is_empty() && r2.endpoint.trim().is_empty());
    let backend = match &s.backend {
        Some(b) => b.to_ascii_lowercase(),
        None if !buckets.is_empty() => "r2".into(),
        None if credentials => {
            let set: Vec<String> = [
                ("r2.access_key", !r2.access_key.is_empty()),
                ("r2.secret_key", !r2.secret_key.is_empty()),
                ("r2.endpoint", !r2.endpoint.trim().is_empty()),
            ]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| format!("{k} ({})", origins.of(k)))
            .collect();
            return Err(ConfigError::invalid(
                "r2.bucket",
                format!("empty while {} set", set.join(", ")),
                "set with R2 credentials (R2_BUCKET or R2_BUCKETS); without a bucket nothing would be converted in R2. \
                 To use the local directory instead, remove the R2 settings or set storage.backend: local",
            ));
        }
        None => "local".into(),
    };
    if backend == "local" && !buckets.is_empty() {
        return Err(ConfigError::invalid(
            "storage.backend",
            format!(
                "local ({}) while r2.bucket is {:?} ({})",
                origins.of("storage.backend"),
                buckets[0],
                origins.of("r2.bucket")
            ),
            "r2 when a bucket is set (or leave storage.backend unset); remove the bucket to use the local directory",
        ));
    }
    match backend.as_str() {
        "local" => {
            let root = s.local_root.clone().unwrap_or_else(|| "./bucket".into());
            if root.trim().is_empty() {
                return Err(ConfigError::invalid("storage.local_root", "\"\"", "a directory path"));
            }
            Ok(StorageConfig::Local { root: PathBuf::from(root) })
        }
        "memory" => Ok(StorageConfig::Memory { bucket: non_empty_or(&r2.bucket, "memory") }),
        "r2" | "s3" | "minio" => {
            if buckets.is_empty() {
                return Err(ConfigError::invalid("r2.bucket", "\"\"", "the bucket's name (or R2_BUCKET)"));
            }
            match url::Url::parse(&r2.endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "r2.endpoint",
                        format!("{:?}", r2.endpoint),
                        "an http(s) URL such as https://<account>.r2.cloudflarestorage.com (or R2_ENDPOINT)",
                    ));
                }
            }
            if r2.access_key.is_empty() || r2.secret_key.is_empty() {
                return Err(ConfigError::invalid(
                    "r2.access_key/r2.secret_key",
                    "empty",
                    "both set (or R2_ACCESS_KEY and R2_SECRET_KEY)",
                ));
            }
            Ok(StorageConfig::S3(S3Config {
                endpoint: r2.endpoint.trim_end_matches('/').to_owned(),
                bucket: buckets[0].clone(),
                buckets: buckets.clone(),
                region: region(r2),
                access_key: r2.access_key.clone(),
                secret_key: r2.secret_key.clone(),
                virtual_hosted_style: r2.virtual_hosted_style.unwrap_or(false),
                retry: RetrySettings {
                    max_retries: int_in("storage.max_retries", s.max_retries.unwrap_or(10), 0, 100)?,
                    retry_timeout: secs(int_in(
                        "storage.retry_timeout_seconds",
                        s.retry_timeout_seconds.unwrap_or(180),
                        1,
                        3600,
                    )?),
                    initial_backoff: std::time::Duration::from_millis(int_in(
                        "storage.initial_backoff_ms",
                        s.initial_backoff_ms.unwrap_or(100),
                        1,
                        60_000,
                    )?),
                    request_timeout: secs(int_in(
                        "storage.request_timeout_seconds",
                        s.request_timeout_seconds.unwrap_or(60),
                        1,
                        3600,
                    )?),
                    // `pipeline.max_requests`, set once the pipeline is validated.
                    max_requests: crate::config::DEFAULT_MAX_REQUESTS,
                },
            }))
        }
        other => Err(ConfigError::invalid("storage.backend", other, "local, r2 (or s3) or memory")),
    }
}
