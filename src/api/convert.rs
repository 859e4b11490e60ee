//! `POST|GET /api/convert` and `POST /api/webhook/send`.
//!
//! An on-demand conversion takes the CLI's `convert`'s one path ([`crate::request`]):
//! the same checks, the same Converter pool, memory budget and Uploader (and so the same
//! write rule) as the runs, and a resized output under a name of its own: `r2://<bucket>/<key>` (or `s3://`) through that
//! bucket's Uploader when the bucket is configured (400 `unknown_bucket` otherwise), a
//! bare key or a URL through the primary bucket's. At most `api.max_queued_conversions` are admitted at once (past that: 503
//! `busy`), and they queue in the pool's mailbox with the runs' images, so neither side
//! can starve the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::actors::webhook::SendNow;
use crate::convert::ResizeSpec;
use crate::job::{JobError, Outcome};
use crate::naming;
use crate::request;
use crate::webhook;

/// `POST /api/convert` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ConvertBody {
    /// A key, `r2://bucket/key`, `s3://bucket/key` or an allowed `http(s)://` URL.
    #[serde(default)]
    source: Option<String>,
}

/// Converts one image now; `source` in the body.
#[utoipa::path(post, path = "/api/convert", tag = "convert", security(("bearer" = [])),
    request_body = ConvertBody, params(super::schemas::Resize), responses(super::schemas::ConvertAnswers))]
pub async fn convert_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
    body: web::Json<ConvertBody>,
) -> Result<HttpResponse, ApiError> {
    super::json_content_type(&req)?;
    let source = body.into_inner().source.unwrap_or_default();
    convert(state, source, &query).await
}

/// Converts one image now; `source` in the query.
#[utoipa::path(get, path = "/api/convert", tag = "convert", security(("bearer" = [])),
    params(("source" = String, Query, description = "As `source` of the POST body"), super::schemas::Resize),
    responses(super::schemas::ConvertAnswers))]
pub async fn convert_get(
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let source = query.get("source").cloned().unwrap_or_default();
    convert(state, source, &query).await
}

/// `width`, `height` and `preset` query parameters, as the Go server reads them: `0`
/// (or nothing) keeps that side — from the other side's scale, or as it is when neither
/// is given; an explicit size wins over a preset, which must still exist.
fn resize_from(query: &HashMap<String, String>, state: &AppState) -> Result<Option<ResizeSpec>, ApiError> {
    let side = |name: &str| -> Result<Option<u32>, ApiError> {
        match query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => match v.parse::<u32>() {
                Ok(0) => Ok(None),
                Ok(n) if n <= crate::convert::WEBP_MAX_SIDE => Ok(Some(n)),
                _ => Err(ApiError::bad_request(
                    "invalid_resize_params",
                    format!("{name} must be a whole number from 0 (keep) to 16383, got {v:?}"),
                )),
            },
        }
    };
    let (width, height) = (side("width")?, side("height")?);
    let preset = match query.get("preset").map(|p| p.trim()).filter(|p| !p.is_empty()) {
        None => None,
        Some(name) => Some(state.config.presets.get(name).copied().ok_or_else(|| {
            let known: Vec<&str> = state.config.presets.keys().map(String::as_str).collect();
            ApiError::bad_request("invalid_preset", format!("unknown preset {name:?} (known: {})", known.join(", ")))
        })?),
    };
    if width.is_some() || height.is_some() {
        return Ok(Some(ResizeSpec { width, height }));
    }
    Ok(preset)
}

/// The key a URL source is stored under: `remote/<host>/<path>`.
fn remote_key(url: &str) -> Result<String, ApiError> {
    let u = url::Url::parse(url).map_err(|e| ApiError::bad_request("invalid_request", format!("{url}: {e}")))?;
    let path = u.path().trim_matches('/');
    let path = if path.is_empty() { "index" } else { path };
    let key = format!("remote/{}/{}", u.host_str().unwrap_or("host"), path);
    crate::storage::check_key(&key).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    Ok(key)
}

async fn convert(
    state: web::Data<AppState>,
    source: String,
    query: &HashMap<String, String>,
) -> Result<HttpResponse, ApiError> {
    if source.trim().is_empty() {
        return Err(ApiError::bad_request("missing_source", "source is required"));
    }
    let resize = resize_from(query, &state)?;
    let format = match query.get("format").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => crate::outputs::Format::Webp,
        Some(v) => crate::outputs::Format::parse(v).ok_or_else(|| {
            ApiError::bad_request("invalid_request", format!("format must be webp or avif, got {v:?}"))
        })?,
    };
    let force = match query.get("force").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" || v.is_empty() => false,
        Some(v) => {
            return Err(ApiError::bad_request("invalid_request", format!("force must be true or false, got {v:?}")));
        }
    };
    let Ok(admitted) = state.api_slots.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many conversions in progress; retry shortly",
        ));
    };
    let timeout = std::time::Duration::from_secs(state.config.server.timeout_seconds);
    // The admission is shared with the conversion: a request that times out leaves it
    // held until the converter has really finished (or skipped) its work.
    let admitted = Arc::new(admitted);
    let cancel = Arc::new(crate::convert::webp::Cancel::new(false));
    let ask = request::Ask { format, resize, admitted, cancel: cancel.clone(), force, replaces: None, file: None };
    match tokio::time::timeout(timeout, convert_inner(&state, source.trim(), ask)).await {
        Ok(r) => r,
        Err(_) => Err({
            // A conversion under way stops early; its memory is released when it has.
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("no result within server.timeout_seconds ({}s)", timeout.as_secs()),
            )
        }),
    }
}

async fn convert_inner(state: &AppState, source: &str, ask: request::Ask) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let is_url = source.starts_with("http://") || source.starts_with("https://");
    // `r2://<bucket>/<key>` goes to that bucket's lane; a bare key or a URL to the primary.
    let outcome = if is_url {
        if state.remote.is_off() {
            return Err(ApiError::bad_request(
                "url_not_allowed",
                "URL sources are off (api.allowed_url_hosts is empty)",
            ));
        }
        let key = remote_key(source)?;
        let bytes = state.remote.fetch(source).await?;
        request::convert_bytes(&state.lanes[0].target(), &key, source.to_owned(), bytes, ask, started).await
    } else {
        let names: Vec<String> = state.lanes.iter().map(|l| l.bucket.clone()).collect();
        let (i, key) = naming::route_source(source, &names)?;
        // The one path of the CLI's `convert` too: the same decisions as the runs' planner.
        request::convert_key(&state.lanes[i].target(), &key, ask).await
    };
    let outcome = outcome.map_err(|e| match e {
        // The source as the caller named it.
        JobError::Convert { error, .. } => JobError::Convert { key: source.to_owned(), error },
        e => e,
    })?;
    let up_to_date = matches!(outcome, Outcome::UpToDate(_));
    let (report, superseded, kept, message) = match &outcome {
        Outcome::Converted(r) => (r, false, false, "Image converted successfully"),
        Outcome::UpToDate(r) => (
            r,
            false,
            false,
            "Image is up to date: its WebP is as new as the source; nothing converted (force=true converts)",
        ),
        // Bucket mode: another writer stored this WebP between our look and our write.
        Outcome::Superseded(r) => {
            (r, true, false, "Image converted; another writer stored this WebP first, and it was kept")
        }
        // conversion.skip_if_larger, as a run keeps the source: nothing was written.
        Outcome::KeptSource(r) => (
            r,
            false,
            true,
            "Image kept: its WebP would not be smaller than the source (conversion.skip_if_larger); nothing written",
        ),
    };
    if !kept && !up_to_date {
        state.metrics.api_converted();
    }
    tracing::info!(
        duration_ms = started.elapsed().as_millis() as u64,
        kept,
        "Converted image: {source} -> {}",
        report.destination
    );
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "message": message,
        "superseded": superseded,
        "kept": kept,
        "up_to_date": up_to_date,
        "source": report.source,
        "destination": report.destination,
        "original_size": report.original_size,
        "converted_size": report.converted_size,
        "width": report.width,
        "height": report.height,
    })))
}

/// `POST /api/webhook/send` body: the Go server's (`images`), and the event to send
/// (ours; `manual.triggered` when absent, never a `batch.*` event).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WebhookBody {
    #[serde(default)]
    images: Vec<webhook::ImageEntry>,
    /// Any plain event name but `batch.*`; `manual.triggered` when absent.
    #[serde(default)]
    event: Option<String>,
}

/// Sends a notification to `webhook.url` now.
#[utoipa::path(post, path = "/api/webhook/send", tag = "webhooks", security(("bearer" = [])),
    request_body = WebhookBody, responses(super::schemas::WebhookAnswers))]
pub async fn webhook_send(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<WebhookBody>,
) -> Result<HttpResponse, ApiError> {
    super::json_content_type(&req)?;
    let Some(sender) = &state.webhook else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "webhook_not_configured", "webhook.url is not set"));
    };
    let body = body.into_inner();
    if body.images.is_empty() {
        return Err(ApiError::bad_request("empty_images", "images must not be empty"));
    }
    let event = webhook::payload::manual_event(body.event.as_deref())
        .map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
    let payload = webhook::payload::manual(&event, &body.images);
    match sender.send(SendNow { payload }).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({"success": true, "message": "Webhook sent"}))),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "webhook_delivery_failed",
            if state.config.webhook.retry_enabled { format!("{e}; queued for retry") } else { e.to_string() },
        )),
        Err(_) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the webhook sender is stopping")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_outputs_carry_their_size() {
        assert_eq!(remote_key("https://img.example.com/a/b.png?x=1").unwrap(), "remote/img.example.com/a/b.png");
    }
}
