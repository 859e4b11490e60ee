//! `check-config`'s output: the effective configuration with secrets masked and, for each
//! value, where it came from (default, file, `.env`, environment).
//!
//! [`to_json`] gives one object whose sections mirror the Go server's file (`r2`,
//! `conversion`, `resize`, `cron`, `server`, `webhook`) followed by this program's own
//! (`storage`, `state`, `pipeline`, `api`, `log`), plus `sources` (key → origin);
//! [`to_yaml`] prints the same sections as YAML with each origin as a comment. Secrets
//! show as `***`, in URLs too (a password, a `?token=` or `?X-Amz-Signature=` value).

use serde_json::{Map, Value, json};

use super::{Config, LogFormat, StorageConfig};
use crate::convert::{LosslessPolicy, Oversize};
use crate::secret::Secret;

/// `check-config`: the checks `serve` adds to validation, then the configuration as JSON
/// or YAML.
pub fn check_config(c: &Config, json: bool) -> Result<String, super::ConfigError> {
    c.check_serve()?;
    Ok(if json { serde_json::to_string_pretty(&to_json(c)).expect("JSON serialises") + "\n" } else { to_yaml(c) })
}

/// The effective configuration as JSON (secrets as `***`), `sources` included.
pub fn to_json(c: &Config) -> Value {
    let mut v = sections(c);
    let mut sources = Map::new();
    walk(&v, "", &mut |path, _| {
        sources.insert(path.to_owned(), json!(origin_of(c, path)));
    });
    v.as_object_mut().expect("an object").insert("sources".into(), Value::Object(sources));
    v
}

/// The effective configuration as YAML, each value followed by `# <origin>`.
pub fn to_yaml(c: &Config) -> String {
    let mut out = String::from("# The configuration in effect; secrets shown as \"***\".\n");
    if let Value::Object(top) = sections(c) {
        // The Go server's sections first, in its file's order, then ours.
        for name in SECTIONS {
            if let Some(section) = top.get(name) {
                let one: Map<String, Value> = [(name.to_string(), section.clone())].into_iter().collect();
                yaml(&one, "", 0, c, &mut out);
            }
        }
    }
    out
}

/// Top-level sections: the Go server's file's, then this program's.
const SECTIONS: [&str; 12] =
    ["r2", "conversion", "resize", "cron", "server", "webhook", "storage", "state", "pipeline", "api", "events", "log"];

fn yaml(map: &Map<String, Value>, prefix: &str, depth: usize, c: &Config, out: &mut String) {
    let indent = "  ".repeat(depth);
    for (k, v) in map {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Object(m) if !m.is_empty() => {
                if depth == 0 && !out.ends_with(":\n") {
                    out.push('\n');
                }
                out.push_str(&format!("{indent}{k}:\n"));
                yaml(m, &path, depth + 1, c, out);
            }
            // JSON scalars and flow lists are valid YAML.
            leaf => out.push_str(&format!("{indent}{k}: {leaf}  # {}\n", origin_of(c, &path))),
        }
    }
}

/// Calls `f` with every leaf's dotted path.
fn walk(v: &Value, prefix: &str, f: &mut dyn FnMut(&str, &Value)) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                walk(child, &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, f);
            }
        }
        leaf => f(prefix, leaf),
    }
}

/// The origin of an output path; `storage.*` repeats `r2.*` values under our names.
fn origin_of(c: &Config, path: &str) -> String {
    let key = match path {
        "storage.endpoint" => "r2.endpoint",
        "storage.bucket" => "r2.bucket",
        "storage.region" => "r2.region",
        "storage.backend" if c.origins.of(path) == super::Origin::Default => {
            return match c.storage {
                StorageConfig::S3(_) => format!("default (a bucket is set: {})", c.origins.of("r2.bucket")),
                _ => "default".into(),
            };
        }
        "pipeline.memory_budget_mb" if c.origins.of(path) == super::Origin::Default => {
            return format!("default: {}", c.pipeline.memory_budget_from);
        }
        "cron.timezone" if c.cron.schedule.timezone() != c.cron.timezone => {
            return format!("{} (the schedule's prefix)", c.origins.of("cron.schedule"));
        }
        other => other,
    };
    c.origins.of(key).to_string()
}

/// `events:`, each source shown only when configured (secrets as `***`).
fn events(e: &super::events::EventsConfig) -> Value {
    let sqs = e.sqs.as_ref().map(|q| {
        json!({
            "queue_url": q.queue_url,
            "endpoint": q.endpoint,
            "region": q.region,
            "access_key": secret(&q.access_key),
            "secret_key": secret(&q.secret_key),
            "wait_seconds": q.wait.as_secs(),
            "visibility_timeout_seconds": q.visibility_timeout.as_secs(),
        })
    });
    let cloudflare_queue = e.cloudflare_queue.as_ref().map(|q| {
        json!({
            "account_id": q.account_id,
            "queue_id": q.queue_id,
            "api_token": secret(&q.api_token),
            "api": q.api,
            "batch_size": q.batch_size,
            "visibility_timeout_seconds": q.visibility_timeout.as_secs(),
            "poll_interval_ms": q.poll_interval.as_millis() as u64,
        })
    });
    json!({
        "sqs": sqs,
        "cloudflare_queue": cloudflare_queue,
        "webhook_enabled": e.webhook_enabled,
        "webhook_token": secret(&e.webhook_token),
        "webhook_every_seconds": e.webhook_every.as_secs(),
        "max_receives": e.max_receives,
        "concurrency": e.concurrency,
        "delete_webp_on_remove": e.delete_webp_on_remove,
    })
}

fn secret(s: &Secret) -> Value {
    json!(if s.is_empty() { "" } else { "***" })
}

/// A float without a needless `.0` (`85`, not `85.0`).
fn num(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 { json!(x as i64) } else { json!(x) }
}

fn lossless(l: LosslessPolicy) -> &'static str {
    match l {
        LosslessPolicy::Never => "never",
        LosslessPolicy::Always => "always",
        LosslessPolicy::Auto => "auto",
    }
}

fn sections(c: &Config) -> Value {
    let (backend, local_root, s3) = match &c.storage {
        StorageConfig::Local { root } => ("local", json!(root.display().to_string()), None),
        StorageConfig::S3(s3) => ("r2", Value::Null, Some(s3)),
        StorageConfig::Memory { .. } => ("memory", Value::Null, None),
    };
    let o = &c.convert;
    let per_format: Map<String, Value> = o
        .per_format
        .iter()
        .map(|(f, ov)| {
            let mut m = Map::new();
            if let Some(q) = ov.quality {
                m.insert("quality".into(), num(q as f64));
            }
            if let Some(l) = ov.lossless {
                m.insert("lossless".into(), json!(lossless(l)));
            }
            if let Some(n) = ov.near_lossless {
                m.insert("near_lossless".into(), json!(n));
            }
            (f.name().to_owned(), Value::Object(m))
        })
        .collect();
    let presets: Map<String, Value> =
        c.presets.iter().map(|(n, p)| (n.clone(), json!({"width": p.width, "height": p.height}))).collect();
    let cluster = c.state.cluster.as_ref();
    let mut v = json!({
        "r2": {
            // With another backend, r2's values as read (unused), not "".
            "endpoint": s3.map_or(c.r2.endpoint.as_str(), |s| s.endpoint.as_str()),
            "bucket": s3.map_or("", |s| s.bucket.as_str()),
            "buckets": s3.map_or(Vec::new(), |s| s.buckets.clone()),
            "access_key": s3.map_or(json!(""), |s| secret(&s.access_key)),
            "secret_key": s3.map_or(json!(""), |s| secret(&s.secret_key)),
            "region": s3.map_or(c.r2.region.as_str(), |s| s.region.as_str()),
            "virtual_hosted_style": s3.map_or(c.r2.virtual_hosted_style, |s| s.virtual_hosted_style),
        },
        "conversion": {
            "formats": c.formats,
            "quality": num(o.quality as f64),
            "max_size_mb": num(o.limits.max_input_bytes as f64 / (1024.0 * 1024.0)),
            "method": o.method,
            "lossless": lossless(o.lossless),
            "near_lossless": o.near_lossless,
            "alpha_quality": o.alpha_quality,
            "exact": o.exact,
            "sharp_yuv": o.sharp_yuv,
            "per_format": per_format,
            "max_megapixels": num(o.limits.max_pixels as f64 / 1e6),
            "max_frames": o.limits.max_frames,
            "oversize": if o.limits.oversize == Oversize::Fail { "fail" } else { "downscale" },
            "skip_if_larger": c.skip_if_larger,
            "keep_icc": o.keep_icc,
            "keep_exif": o.keep_exif,
            "keep_xmp": o.keep_xmp,
            "outputs": outputs(&c.outputs),
            "per_bucket": c.bucket_outputs.iter()
                .map(|(b, o)| (b.clone(), json!({ "outputs": outputs(o) })))
                .collect::<serde_json::Map<_, _>>(),
        },
        "resize": { "presets": presets },
        "cron": {
            "schedule": c.cron.schedule,
            "enabled": c.cron.enabled,
            // The zone fire times use: a CRON_TZ=/TZ= prefix's, else cron.timezone.
            "timezone": c.cron.schedule.timezone().name(),
            "run_on_start": c.cron.run_on_start,
        },
        "server": {
            "host": c.server.host,
            "port": c.server.port,
            "timeout_seconds": c.server.timeout_seconds,
        },
        "webhook": {
            "url": c.webhook.url.as_deref().unwrap_or(""),
            "secret": secret(&c.webhook.secret),
            "retry_enabled": c.webhook.retry_enabled,
            "retry_interval_minutes": num(c.webhook.retry_interval.as_secs_f64() / 60.0),
            "max_retries": c.webhook.max_retries,
            "pending_dir": c.webhook.pending_dir.display().to_string(),
        },
        "storage": {
            "backend": backend,
            "local_root": local_root,
            "endpoint": s3.map(|s| s.endpoint.clone()),
            "bucket": c.bucket_name(),
            "region": s3.map(|s| s.region.clone()),
            "max_retries": s3.map(|s| s.retry.max_retries),
            "retry_timeout_seconds": s3.map(|s| s.retry.retry_timeout.as_secs()),
            "initial_backoff_ms": s3.map(|s| s.retry.initial_backoff.as_millis() as u64),
            "request_timeout_seconds": s3.map(|s| s.retry.request_timeout.as_secs()),
        },
        "state": {
            "backend": if cluster.is_some() { "bucket" } else { "local" },
            "dir": c.state.dir.display().to_string(),
            "initial": c.state.initial.to_string(),
            "checkpoint_every": c.state.checkpoint_every,
            "clock_skew_seconds": c.state.clock_skew.as_secs(),
            "max_attempts": c.state.max_attempts,
            "retry_base_minutes": c.state.retry_base.as_secs() / 60,
            "lock_stale_minutes": c.state.lock_stale_after.as_secs() / 60,
            "prefix": cluster.map(|k| k.prefix.clone()),
            "shards": cluster.map(|k| k.shards),
            "lease_seconds": cluster.map(|k| k.lease.as_secs()),
            "max_clock_skew_ms": cluster.map(|k| k.max_clock_skew.as_millis() as u64),
            "instance_id": cluster.map(|k| k.instance_id.clone()),
        },
        "pipeline": {
            "workers": c.pipeline.workers,
            "max_in_flight": c.pipeline.max_in_flight,
            "max_requests": c.pipeline.max_requests,
            "upload_concurrency": c.pipeline.upload_concurrency,
            "shutdown_timeout_seconds": c.pipeline.shutdown_timeout.as_secs(),
            "memory_budget_mb": c.pipeline.memory_budget_mb,
        },
        "api": {
            "token": secret(&c.api.token),
            "allow_unauthenticated": c.api.allow_unauthenticated,
            "allowed_url_hosts": c.api.allowed_url_hosts,
            "trusted_url_addresses": c.api.trusted_url_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "url_timeout_seconds": c.api.url_timeout.as_secs(),
            "max_queued_conversions": c.api.max_queued_conversions,
            "max_body_kb": c.api.max_body_bytes / 1024,
        },
        "events": events(&c.events),
        "log": {
            "level": c.log.level,
            "format": if c.log.format == LogFormat::Json { "json" } else { "text" },
        },
    });
    // A URL's password and its secret-named query values (a webhook URL's `?token=`).
    super::mask::mask_urls(&mut v);
    v
}

/// `conversion.outputs` (or a bucket's) as check-config shows it.
fn outputs(o: &crate::outputs::Outputs) -> Vec<Value> {
    o.specs()
        .iter()
        .map(|s| {
            json!({
                "format": s.format.ext(),
                "width": s.width,
                "quality": s.quality.map(|q| num(f64::from(q))),
                "name": format!("{{stem}}{}", s.suffix),
            })
        })
        .collect()
}
