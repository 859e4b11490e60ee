//! `events:` validated: which event sources `serve` consumes, and how.
//!
//! A queue URL implies its endpoint and signing region (`https://sqs.eu-west-1.amazonaws.com/…`
//! is `eu-west-1`; a URL that names none, as a local test server's, signs for `us-east-1`),
//! and the queue's credentials default to the bucket's.

use super::raw::{RawCloudflareQueue, RawEvents, RawSqs};
use super::{ConfigError, StorageConfig, int_in, secs};
use crate::secret::Secret;

/// `events:` validated; no source configured means events are off.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsConfig {
    pub sqs: Option<SqsConfig>,
    pub cloudflare_queue: Option<CloudflareQueueConfig>,
    /// `POST /api/events` accepts S3 event records (MinIO's webhook target).
    pub webhook_enabled: bool,
    /// A message received more often than this is left alone for the queue's dead-letter
    /// policy, or given up when the queue has none (a journal file: after this many passes).
    pub max_receives: u32,
    /// Events handled at once.
    pub concurrency: usize,
    /// `ObjectRemoved:*` deletes the source's WebP too.
    pub delete_webp_on_remove: bool,
    /// A bearer token that `POST /api/events` accepts besides `api.token`.
    pub webhook_token: Secret,
    /// At most one `events.completed` webhook this often (with `webhook.url`).
    pub webhook_every: std::time::Duration,
}

impl EventsConfig {
    /// Whether any event source is configured: bucket events may then write WebPs
    /// beside the runs.
    pub fn any(&self) -> bool {
        self.sqs.is_some() || self.cloudflare_queue.is_some() || self.webhook_enabled
    }
}

/// `events.cloudflare_queue:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudflareQueueConfig {
    pub account_id: String,
    pub queue_id: String,
    pub api_token: Secret,
    /// The API's base URL (`https://api.cloudflare.com/client/v4`).
    pub api: String,
    /// Messages a pull leases at most.
    pub batch_size: usize,
    /// How long a pulled message stays leased.
    pub visibility_timeout: std::time::Duration,
    /// Wait before pulling again after an empty pull.
    pub poll_interval: std::time::Duration,
}

/// `events.sqs:` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsConfig {
    pub queue_url: String,
    /// Where requests go: the queue URL's scheme, host and port unless set.
    pub endpoint: String,
    pub region: String,
    pub access_key: Secret,
    pub secret_key: Secret,
    /// Long-poll wait of one receive (0–20 s).
    pub wait: std::time::Duration,
    /// How long a received message stays invisible; extended while its image converts.
    pub visibility_timeout: std::time::Duration,
}

pub(super) fn events(raw: RawEvents, storage: &StorageConfig) -> Result<EventsConfig, ConfigError> {
    let concurrency = int_in("events.concurrency", raw.concurrency.unwrap_or(10), 1, 1000)?;
    Ok(EventsConfig {
        sqs: sqs(raw.sqs, storage)?,
        cloudflare_queue: cloudflare_queue(raw.cloudflare_queue)?,
        webhook_enabled: raw.webhook_enabled.unwrap_or(false),
        max_receives: int_in("events.max_receives", raw.max_receives.unwrap_or(5), 1, 1000)?,
        concurrency,
        delete_webp_on_remove: raw.delete_webp_on_remove.unwrap_or(false),
        webhook_token: raw.webhook_token,
        webhook_every: secs(int_in(
            "events.webhook_every_seconds",
            raw.webhook_every_seconds.unwrap_or(300),
            1,
            86_400,
        )?),
    })
}

fn sqs(raw: RawSqs, storage: &StorageConfig) -> Result<Option<SqsConfig>, ConfigError> {
    let Some(queue_url) = raw.queue_url.filter(|u| !u.trim().is_empty()) else {
        if raw.endpoint.is_some() || raw.region.is_some() || !raw.access_key.is_empty() {
            return Err(ConfigError::invalid(
                "events.sqs.queue_url",
                "unset while other events.sqs keys are set",
                "the queue's URL, e.g. https://sqs.us-east-1.amazonaws.com/123456789012/uploads",
            ));
        }
        return Ok(None);
    };
    let url = url::Url::parse(&queue_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.path().len() > 1)
        .ok_or_else(|| {
            ConfigError::invalid(
                "events.sqs.queue_url",
                &queue_url,
                "an http(s) queue URL, e.g. https://sqs.us-east-1.amazonaws.com/123456789012/uploads",
            )
        })?;
    let endpoint = match raw.endpoint.filter(|e| !e.trim().is_empty()) {
        Some(e) => {
            url::Url::parse(&e).ok().filter(|u| matches!(u.scheme(), "http" | "https")).ok_or_else(|| {
                ConfigError::invalid("events.sqs.endpoint", &e, "an http(s) URL such as http://127.0.0.1:9000")
            })?;
            e.trim_end_matches('/').to_owned()
        }
        None => url.origin().ascii_serialization(),
    };
    let region = match raw.region.filter(|r| !r.trim().is_empty()) {
        Some(r) if r == "auto" => {
            return Err(ConfigError::invalid(
                "events.sqs.region",
                "auto",
                "an AWS region such as us-east-1 (SQS picks the queue by the signing region; `auto` is R2's)",
            ));
        }
        Some(r) => r,
        None => region_of(url.host_str().unwrap_or_default()).unwrap_or("us-east-1").to_owned(),
    };
    let (access_key, secret_key) = match (&raw.access_key, &raw.secret_key, storage) {
        (a, s, _) if !a.is_empty() && !s.is_empty() => (raw.access_key.clone(), raw.secret_key.clone()),
        (a, s, StorageConfig::S3(s3)) if a.is_empty() && s.is_empty() => (s3.access_key.clone(), s3.secret_key.clone()),
        _ => {
            return Err(ConfigError::invalid(
                "events.sqs.access_key/events.sqs.secret_key",
                "unset (or only one of them set)",
                "both set, or both unset to use the bucket's credentials (storage.backend r2/s3)",
            ));
        }
    };
    Ok(Some(SqsConfig {
        queue_url,
        endpoint,
        region,
        access_key,
        secret_key,
        wait: secs(int_in("events.sqs.wait_seconds", raw.wait_seconds.unwrap_or(20), 0, 20)?),
        visibility_timeout: secs(int_in(
            "events.sqs.visibility_timeout_seconds",
            raw.visibility_timeout_seconds.unwrap_or(60),
            5,
            43_200,
        )?),
    }))
}

fn cloudflare_queue(raw: RawCloudflareQueue) -> Result<Option<CloudflareQueueConfig>, ConfigError> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
    if !set(&raw.account_id) && !set(&raw.queue_id) && raw.api_token.is_empty() {
        return Ok(None);
    }
    let need = |key: &str, v: Option<String>| {
        v.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            ConfigError::invalid(
                key,
                "unset while other events.cloudflare_queue keys are set",
                "account_id, queue_id and api_token all set (the token needs Queues read and write)",
            )
        })
    };
    let account_id = need("events.cloudflare_queue.account_id", raw.account_id)?;
    let queue_id = need("events.cloudflare_queue.queue_id", raw.queue_id)?;
    if raw.api_token.is_empty() {
        return Err(ConfigError::invalid(
            "events.cloudflare_queue.api_token",
            "unset",
            "an API token with Queues read and write permissions",
        ));
    }
    for (key, v) in
        [("events.cloudflare_queue.account_id", &account_id), ("events.cloudflare_queue.queue_id", &queue_id)]
    {
        if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(ConfigError::invalid(key, v, "an id of letters, digits, '-' and '_'"));
        }
    }
    let api = raw.api.filter(|a| !a.trim().is_empty()).unwrap_or_else(|| "https://api.cloudflare.com/client/v4".into());
    url::Url::parse(&api).ok().filter(|u| matches!(u.scheme(), "http" | "https")).ok_or_else(|| {
        ConfigError::invalid(
            "events.cloudflare_queue.api",
            &api,
            "an http(s) URL (default https://api.cloudflare.com/client/v4)",
        )
    })?;
    Ok(Some(CloudflareQueueConfig {
        account_id,
        queue_id,
        api_token: raw.api_token,
        api,
        batch_size: int_in("events.cloudflare_queue.batch_size", raw.batch_size.unwrap_or(10), 1, 100)?,
        visibility_timeout: secs(int_in(
            "events.cloudflare_queue.visibility_timeout_seconds",
            raw.visibility_timeout_seconds.unwrap_or(300),
            1,
            43_200,
        )?),
        poll_interval: std::time::Duration::from_millis(int_in(
            "events.cloudflare_queue.poll_interval_ms",
            raw.poll_interval_ms.unwrap_or(500),
            10,
            60_000,
        )?),
    }))
}

/// The region an AWS queue host names: `sqs.<region>.amazonaws.com` or the legacy
/// `<region>.queue.amazonaws.com`.
fn region_of(host: &str) -> Option<&str> {
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        ["sqs", region, "amazonaws", ..] => Some(region),
        [region, "queue", "amazonaws", ..] => Some(region),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> StorageConfig {
        StorageConfig::S3(crate::config::S3Config {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "b".into(),
            buckets: vec!["b".into()],
            region: "auto".into(),
            access_key: Secret::new("AK"),
            secret_key: Secret::new("SK"),
            virtual_hosted_style: false,
            retry: Default::default(),
        })
    }

    fn with_url(url: &str) -> RawSqs {
        RawSqs { queue_url: Some(url.into()), ..Default::default() }
    }

    #[test]
    fn the_queue_url_implies_endpoint_and_region() {
        let c = sqs(with_url("https://sqs.eu-west-1.amazonaws.com/123456789012/up"), &s3()).unwrap().unwrap();
        assert_eq!((c.endpoint.as_str(), c.region.as_str()), ("https://sqs.eu-west-1.amazonaws.com", "eu-west-1"));
        let c = sqs(with_url("http://127.0.0.1:4566/123456789012/up"), &s3()).unwrap().unwrap();
        assert_eq!((c.endpoint.as_str(), c.region.as_str()), ("http://127.0.0.1:4566", "us-east-1"));
        assert_eq!(c.access_key.expose(), "AK", "the bucket's credentials by default");
        let c = sqs(with_url("https://ap-south-1.queue.amazonaws.com/1/up"), &s3()).unwrap().unwrap();
        assert_eq!(c.region, "ap-south-1");
    }

    #[test]
    fn misreadable_settings_are_refused() {
        let auto = RawSqs { region: Some("auto".into()), ..with_url("http://127.0.0.1:1/1/q") };
        assert!(sqs(auto, &s3()).unwrap_err().to_string().contains("events.sqs.region"));
        let local = StorageConfig::Local { root: "/tmp".into() };
        assert!(sqs(with_url("http://127.0.0.1:1/1/q"), &local).unwrap_err().to_string().contains("access_key"));
        assert!(sqs(with_url("not a url"), &s3()).unwrap_err().to_string().contains("events.sqs.queue_url"));
        let orphan = RawSqs { region: Some("us-east-1".into()), ..Default::default() };
        assert!(sqs(orphan, &s3()).is_err());
        assert!(sqs(RawSqs::default(), &s3()).unwrap().is_none());
    }
}
