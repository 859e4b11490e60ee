//! The shapes of the API's answers and parameters, as schema-only types for the OpenAPI
//! document ([`super::openapi`]): most answers are built with `json!` (as the Go
//! server's are), so their shapes are written down here, beside no handler, where both
//! the handlers' annotations and the document can name them. Never built; the tests in
//! `openapi_tests.rs` check that the real answers match them.

use serde::Serialize;
use utoipa::{IntoParams, IntoResponses, ToSchema};

/// Every error answer (the Go server's shape).
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Always `false`.
    success: bool,
    /// A stable code: `missing_source`, `busy`, `unauthorized`, … (see USAGE.md).
    error: String,
    message: String,
}

/// `GET /`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Greeting {
    /// `Image Converting Server`.
    message: String,
}

/// `GET /health`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok`.
    status: String,
}

/// `GET /ready`: `ready`, or `not_ready` with the reason.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: String,
    /// Why not ready (503 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A conversion's result.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Converted {
    success: bool,
    message: String,
    /// `r2://bucket/key`, or the URL converted.
    source: String,
    /// `r2://bucket/key.webp` (`key_<W>x<H>.webp` when resized).
    destination: String,
    /// `state.backend: bucket`: another writer stored this WebP between this request's
    /// look and its write (a conditional write refused); theirs was kept. Always false
    /// with one writer.
    superseded: bool,
    /// The WebP would not be smaller than the source (`conversion.skip_if_larger`, a
    /// full-size conversion only): nothing was written, as a run keeps the source;
    /// `destination` is where it would have gone.
    kept: bool,
    /// The WebP is at least as new as its source: nothing converted (`force=true`
    /// converts again); `width` and `height` are then 0.
    up_to_date: bool,
    original_size: u64,
    converted_size: u64,
    width: u32,
    height: u32,
}

/// `POST /api/runs` accepted.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStarted {
    success: bool,
    /// `null` in bucket mode: recorded for the cluster, whose shards' holders run it.
    run_id: Option<String>,
    /// Bucket mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// Several buckets (and no `bucket` asked): each bucket's answer, `{bucket, success,
    /// run_id}` or `{bucket, success: false, error, message}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    runs: Option<Vec<serde_json::Value>>,
}

/// `POST /api/webhook/send` delivered.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSent {
    success: bool,
    message: String,
}

/// Run counts.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct Counts {
    listed: u64,
    queued: u64,
    converted: u64,
    skipped: u64,
    kept: u64,
    failed: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// `converted` split by output format (`webp`, `avif`); absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    by_format: Option<std::collections::BTreeMap<String, u64>>,
}

/// `GET /api/status`: the run going on, the last one, the next one and the ledger.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// The primary bucket; the fields that follow are its run's (as a one-bucket daemon answers).
    bucket: String,
    running: bool,
    run_id: Option<String>,
    started_at: Option<String>,
    counts: Counts,
    in_flight: u64,
    /// The listing is over; only in-flight images remain.
    listing_done: bool,
    images_per_second: f64,
    /// Seconds left, once the listing is over.
    eta_seconds: Option<f64>,
    /// The last run's summary (counts, duration, failures).
    #[schema(value_type = Option<Object>)]
    last_run: Option<serde_json::Value>,
    last_processed_time: Option<String>,
    last_run_time: Option<String>,
    /// Sources being retried or given up, with reasons (at most 100).
    #[schema(value_type = Vec<Object>)]
    failures: Vec<serde_json::Value>,
    ledger_size: u64,
    /// Why the last state save failed (`null` once one succeeds).
    state_save_error: Option<String>,
    /// The next scheduled run.
    next_run: Option<String>,
    /// The cron schedule, when cron is on.
    schedule: Option<String>,
    /// Bucket mode: this instance's view of the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    cluster: Option<serde_json::Value>,
    /// Each bucket event source (`sqs`, …): connected, messages received, acked and
    /// failed, images converted, messages in hand and the oldest one's age, last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    events: Option<serde_json::Value>,
    /// One line per configured bucket, the primary first: `bucket` and the fields above
    /// (but `schedule`) for that bucket's runs.
    #[schema(value_type = Vec<Object>)]
    buckets: Vec<serde_json::Value>,
}

/// The resize parameters of `/api/convert` (as the Go server reads them).
#[allow(dead_code)]
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Resize {
    /// 1 to 16383; with `height` alone, keeps the aspect ratio.
    width: Option<u32>,
    /// 1 to 16383.
    height: Option<u32>,
    /// A name from `presets` (not with `width`/`height`).
    preset: Option<String>,
    /// `true` (or `1`): convert even when the WebP is up to date or the ledger leaves
    /// this version of the source alone (given up or kept earlier).
    force: Option<bool>,
}

/// The answers of both `/api/convert` operations.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum ConvertAnswers {
    #[response(status = 200, description = "Converted and uploaded")]
    Converted(Converted),
    #[response(
        status = 400,
        description = "`invalid_request`, `missing_source`, `invalid_resize_params`, `invalid_preset`, \
                       `invalid_source_format`, `unknown_bucket`, `url_not_allowed`"
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "`unauthorized` (with `api.token` set)")]
    Unauthorized(ErrorBody),
    #[response(status = 404, description = "`image_not_found`, `url_not_accessible`")]
    NotFound(ErrorBody),
    #[response(status = 408, description = "`request_timeout`: the body did not arrive in time")]
    Timeout(ErrorBody),
    #[response(status = 409, description = "`output_collision`")]
    Conflict(ErrorBody),
    #[response(
        status = 413,
        description = "`payload_too_large`: the image, its pixels or the request body; `over_memory_budget`"
    )]
    TooLarge(ErrorBody),
    #[response(status = 422, description = "`unsupported_image`")]
    Unsupported(ErrorBody),
    #[response(status = 500, description = "`conversion_failed`, `upload_failed`")]
    Failed(ErrorBody),
    #[response(status = 502, description = "`storage_error`")]
    Storage(ErrorBody),
    #[response(status = 503, description = "`busy` (over `api.max_queued_conversions`), `unavailable`")]
    Busy(ErrorBody),
    #[response(status = 504, description = "`timeout`: no result within `server.timeout_seconds`")]
    GatewayTimeout(ErrorBody),
}

/// The answers of `POST /api/webhook/send`.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum WebhookAnswers {
    #[response(status = 200, description = "Delivered")]
    Sent(WebhookSent),
    #[response(status = 400, description = "`invalid_request`, `empty_images`, `invalid_event`")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "`unauthorized` (with `api.token` set)")]
    Unauthorized(ErrorBody),
    #[response(status = 408, description = "`request_timeout`")]
    Timeout(ErrorBody),
    #[response(status = 413, description = "`payload_too_large`: the request body")]
    TooLarge(ErrorBody),
    #[response(status = 502, description = "`webhook_delivery_failed` (queued for retry when retries are on)")]
    Failed(ErrorBody),
    #[response(status = 503, description = "`webhook_not_configured`, `unavailable`")]
    Unavailable(ErrorBody),
}

/// `POST /api/events`'s 202.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsAccepted {
    success: bool,
    /// Object events the body held (0 for a test event).
    events: u64,
}

/// `POST /api/events`'s answers.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum EventsAnswers {
    #[response(status = 202, description = "Journaled durably; converted from there")]
    Accepted(EventsAccepted),
    #[response(
        status = 400,
        description = "`invalid_events`: not S3 event records; `invalid_request`: the body could not be read"
    )]
    BadRequest(ErrorBody),
    #[response(
        status = 401,
        description = "`unauthorized` (with `api.token` or `events.webhook_token` set), answered before the body is read"
    )]
    Unauthorized(ErrorBody),
    #[response(
        status = 408,
        description = "`request_timeout`: the body did not arrive within `server.timeout_seconds`"
    )]
    Timeout(ErrorBody),
    #[response(status = 413, description = "`payload_too_large`: the request body")]
    TooLarge(ErrorBody),
    #[response(status = 500, description = "`journal_failed`: not stored; post again")]
    Failed(ErrorBody),
    #[response(status = 503, description = "`events_off` (`events.webhook_enabled` is false), `unavailable`")]
    Unavailable(ErrorBody),
}
