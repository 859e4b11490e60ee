//! The HTTP API (actix-web, on the same actix system as the pipeline's actors).
//!
//! Compatible with the Go image-converting-server — `GET /`, `GET /health`,
//! `POST|GET /api/convert`, `POST /api/webhook/send`, with its bodies, codes and
//! statuses — plus `GET /ready`, `GET /api/status`, `POST /api/runs`, `GET /metrics` and
//! `GET /api/openapi.json` (the OpenAPI document, `openapi.rs`). All routes are in
//! [`configure`] and listed in [`ROUTES`]; tests drive them with `actix_web::test::init_service`.

pub mod address;
mod auth;
mod convert;
#[cfg(test)]
mod convert_path_tests;
mod deadline;
pub mod error;
mod events;
mod openapi;
mod polling;
mod ready;
mod remote;
mod schemas;

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::actors::{BeginError, GetProgress, NextRun, Pipeline, RunNow};
use crate::config::Config;
use crate::lanes::Lane;
use crate::metrics::Metrics;
use crate::storage::Storage;

pub use address::is_public;
pub use error::ApiError;
pub use openapi::ApiDoc;
pub use polling::RequestSpans;
pub use remote::RemotePolicy;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The primary bucket's storage and pipeline (the first of [`AppState::lanes`]).
    pub storage: Storage,
    pub pipeline: Pipeline,
    /// Every bucket's pipeline, the primary first (`r2.buckets`); one without it.
    pub lanes: Arc<Vec<Lane>>,
    pub metrics: Arc<Metrics>,
    /// On-demand conversions admitted at once (waiting or running).
    pub api_slots: Arc<Semaphore>,
    pub remote: RemotePolicy,
    pub status: Arc<polling::StatusSnapshot>,
    pub webhook: Option<actix::Addr<crate::actors::webhook::WebhookSender>>,
    /// `/ready`'s last storage probe.
    pub readiness: Arc<ready::Readiness>,
    /// The bucket event sources' status (`serve` with `events:`).
    pub events: Option<crate::events::EventsApi>,
}

impl AppState {
    /// The state of a daemon keeping one bucket.
    pub fn new(
        config: Arc<Config>,
        storage: Storage,
        pipeline: Pipeline,
        metrics: Arc<Metrics>,
        webhook: Option<actix::Addr<crate::actors::webhook::WebhookSender>>,
    ) -> Self {
        let lane = Lane { bucket: storage.bucket().to_owned(), config: config.clone(), storage, pipeline };
        Self::with_lanes(config, vec![lane], metrics, webhook)
    }

    /// The state of a daemon keeping every bucket of `lanes` (the primary first; at least one).
    pub fn with_lanes(
        config: Arc<Config>,
        lanes: Vec<Lane>,
        metrics: Arc<Metrics>,
        webhook: Option<actix::Addr<crate::actors::webhook::WebhookSender>>,
    ) -> Self {
        let primary = lanes.first().expect("at least one bucket").clone();
        let (storage, pipeline) = (primary.storage, primary.pipeline);
        let remote = RemotePolicy::new(
            config.api.allowed_url_hosts.clone(),
            config.api.trusted_url_addresses.clone(),
            config.api.url_timeout,
            config.convert.limits.max_input_bytes,
        );
        let api_slots = Arc::new(Semaphore::new(config.api.max_queued_conversions));
        Self {
            config,
            storage,
            pipeline,
            lanes: Arc::new(lanes),
            metrics,
            api_slots,
            remote,
            webhook,
            status: Default::default(),
            readiness: Default::default(),
            events: None,
        }
    }
}

/// Every route [`configure`] registers, as (method, path). The tests check that the
/// OpenAPI document describes exactly these and that the router serves no other path.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/convert"),
    ("POST", "/api/convert"),
    ("GET", "/api/status"),
    ("POST", "/api/runs"),
    ("POST", "/api/webhook/send"),
    ("POST", "/api/events"),
];

/// Registers every route (each listed in [`ROUTES`]).
pub fn configure(cfg: &mut web::ServiceConfig, state: AppState) {
    let body_limit = state.config.api.max_body_bytes;
    let token = state.config.api.token.clone();
    let body_time = std::time::Duration::from_secs(state.config.server.timeout_seconds);
    cfg.app_data(web::Data::new(state))
        // A body without Content-Type is JSON, as the Go server reads it; another type is
        // refused by `json_content_type` (so no browser form can post here unnoticed).
        .app_data(
            web::JsonConfig::default()
                .limit(body_limit)
                .content_type_required(false)
                .error_handler(|e, _| json_error(e).into()),
        )
        .app_data(web::PayloadConfig::default().limit(body_limit))
        .route("/", web::get().to(index))
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready::ready))
        .route("/metrics", web::get().to(metrics))
        // Before the `/api` scope: it takes `events.webhook_token` as well as `api.token`.
        .service(
            web::resource("/api/events")
                .wrap(actix_web::middleware::from_fn(move |req, next| deadline::limit_body_time(body_time, req, next)))
                .route(web::post().to(events::post_events))
                .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::method_not_allowed("POST")) })),
        )
        // Before the `/api` scope, so that it needs no token.
        .service(
            web::resource("/api/openapi.json")
                .route(web::get().to(openapi::openapi_json))
                .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::method_not_allowed("GET")) })),
        )
        .service(
            web::scope("/api")
                .wrap(auth::RequireToken::new(token))
                .wrap(actix_web::middleware::from_fn(move |req, next| deadline::limit_body_time(body_time, req, next)))
                .service(
                    web::resource("/convert")
                        .route(web::get().to(convert::convert_get))
                        .route(web::post().to(convert::convert_post))
                        .default_service(web::to(|| async {
                            Err::<HttpResponse, _>(ApiError::method_not_allowed("GET, POST"))
                        })),
                )
                .service(
                    web::resource("/status").route(web::get().to(status)).default_service(web::to(|| async {
                        Err::<HttpResponse, _>(ApiError::method_not_allowed("GET"))
                    })),
                )
                .service(web::resource("/runs").route(web::post().to(start_run)).default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::method_not_allowed("POST"))
                })))
                .service(web::resource("/webhook/send").route(web::post().to(convert::webhook_send)).default_service(
                    web::to(|| async { Err::<HttpResponse, _>(ApiError::method_not_allowed("POST")) }),
                )),
        )
        .default_service(web::to(not_found));
}

/// Accepts a request body with no `Content-Type` (as the Go server does) or a JSON one.
fn json_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    use actix_web::HttpMessage;
    match req.mime_type() {
        Ok(None) => Ok(()),
        Ok(Some(m)) if m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json") => Ok(()),
        _ => Err(ApiError::bad_request("invalid_request", "Content-Type must be application/json (or absent)")),
    }
}

fn json_error(e: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as J;
    match e {
        J::Overflow { .. } | J::OverflowKnownLength { .. } => {
            ApiError::new(actix_web::http::StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string())
        }
        J::Payload(p) if deadline::is_timeout(&p) => {
            ApiError::new(actix_web::http::StatusCode::REQUEST_TIMEOUT, "request_timeout", p.to_string())
        }
        J::ContentType => ApiError::bad_request("invalid_request", "Content-Type must be application/json"),
        e => ApiError::bad_request("invalid_request", format!("invalid JSON body: {e}")),
    }
}

/// Middleware: counts and times every request by its route pattern and status
/// (`ics_http_requests_total`, `ics_http_request_duration_seconds`); a path that matches
/// no route counts as `unmatched`, so clients cannot grow the series.
pub async fn record_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let start = std::time::Instant::now();
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.metrics.clone());
    let method = req.method().as_str().to_owned();
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
        metrics.http_request(&route, &method, res.status().as_u16(), start.elapsed().as_secs_f64());
    }
    Ok(res)
}

/// The Go server's greeting.
#[utoipa::path(get, path = "/", tag = "meta", responses((status = 200, body = schemas::Greeting)))]
async fn index() -> HttpResponse {
    HttpResponse::Ok().json(json!({"message": "Image Converting Server"}))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "meta", responses((status = 200, body = schemas::Health)))]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    use std::fmt::Write;
    if let Some(events) = &state.events {
        // The webhook journal's backlog, its oldest file's age as of now.
        events.status.export(&state.metrics);
    }
    let mut body = state.metrics.render();
    // Live gauges owned by the pipeline and the API, not by the counters.
    let (files, work) = state.pipeline.memory.reserved_bytes();
    let admitted = state.config.api.max_queued_conversions - state.api_slots.available_permits();
    let _ = write!(
        body,
        "# HELP ics_memory_reserved_bytes Memory reserved from pipeline.memory_budget_mb, by pool.\n\
         # TYPE ics_memory_reserved_bytes gauge\n\
         ics_memory_reserved_bytes{{pool=\"files\"}} {files}\n\
         ics_memory_reserved_bytes{{pool=\"work\"}} {work}\n\
         # HELP ics_api_conversions_admitted API conversions admitted and not yet finished (a timed-out one counts until its converter stops).\n\
         # TYPE ics_api_conversions_admitted gauge\n\
         ics_api_conversions_admitted {admitted}\n"
    );
    // The storage's request window (S3; a local bucket has none: all 0).
    let w = state.storage.request_limit().unwrap_or_default();
    let _ = write!(
        body,
        "# HELP ics_storage_concurrency_limit Storage requests allowed open at once now (AIMD: halved when the store throttles, grown back by one per window of requests).\n\
         # TYPE ics_storage_concurrency_limit gauge\n\
         ics_storage_concurrency_limit {}\n\
         # HELP ics_storage_concurrency_max The ceiling of the request window (pipeline.max_requests).\n\
         # TYPE ics_storage_concurrency_max gauge\n\
         ics_storage_concurrency_max {}\n\
         # HELP ics_storage_requests_open Storage requests open now (a GET until its body is read).\n\
         # TYPE ics_storage_requests_open gauge\n\
         ics_storage_requests_open {}\n\
         # HELP ics_storage_throttled_total Answers in which the store asked to slow down (503 SlowDown, 429).\n\
         # TYPE ics_storage_throttled_total counter\n\
         ics_storage_throttled_total {}\n\
         # HELP ics_storage_concurrency_decreases_total Times the request window was halved.\n\
         # TYPE ics_storage_concurrency_decreases_total counter\n\
         ics_storage_concurrency_decreases_total {}\n",
        w.limit, w.max, w.open, w.throttled, w.decreases
    );
    HttpResponse::Ok().content_type(crate::metrics::CONTENT_TYPE).body(body)
}

/// The run going on, the last run, the next one and the sources held back.
#[utoipa::path(get, path = "/api/status", tag = "runs", security(("bearer" = [])), responses(
    (status = 200, body = schemas::Status),
    (status = 401, description = "`unauthorized`", body = schemas::ErrorBody),
    (status = 503, description = "`unavailable`: the pipeline is stopping", body = schemas::ErrorBody),
))]
async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(body) = state.status.fresh() {
        return Ok(HttpResponse::Ok().content_type("application/json").body(body));
    }
    let unavailable =
        |_| ApiError::new(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the pipeline is stopping");
    // One line per bucket; the primary's also at the top level, as a one-bucket daemon
    // answers (and the Go-era clients read).
    let mut lines = Vec::with_capacity(state.lanes.len());
    for lane in state.lanes.iter() {
        let progress = lane.pipeline.state_keeper.send(GetProgress).await.map_err(unavailable)?;
        let next_run = lane.pipeline.scheduler.send(NextRun).await.map_err(unavailable)?;
        let mut line = serde_json::to_value(&progress).expect("progress serialises");
        line["bucket"] = json!(lane.bucket);
        line["next_run"] = json!(next_run);
        // Bucket mode: this instance's view of the instances sharing the bucket.
        if let Some(view) = lane.pipeline.mode.view() {
            line["cluster"] = view;
        }
        lines.push(line);
    }
    let mut body = lines[0].clone();
    body["schedule"] = json!(state.config.cron.enabled.then_some(&state.config.cron.schedule));
    body["buckets"] = json!(lines);
    if let Some(events) = state.events.as_ref().map(|e| e.status.view()).filter(|v| !v.is_empty()) {
        body["events"] = serde_json::to_value(events).expect("events serialise");
    }
    let body = Bytes::from(body.to_string());
    state.status.store(body.clone());
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// Starts a run now: of every configured bucket, or of the one `bucket` names.
#[utoipa::path(post, path = "/api/runs", tag = "runs", security(("bearer" = [])),
    params(("bucket" = Option<String>, Query, description = "Run only this configured bucket (default: every bucket)")),
    responses(
    (status = 202, description = "Started (in bucket mode: queued for the cluster)", body = schemas::RunStarted),
    (status = 400, description = "`unknown_bucket`", body = schemas::ErrorBody),
    (status = 401, description = "`unauthorized`", body = schemas::ErrorBody),
    (status = 409, description = "`already_running`", body = schemas::ErrorBody),
    (status = 500, description = "`run_failed`", body = schemas::ErrorBody),
    (status = 503, description = "`unavailable`: the pipeline is stopping", body = schemas::ErrorBody),
))]
async fn start_run(
    state: web::Data<AppState>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let lanes: Vec<&Lane> = match query.get("bucket") {
        None => state.lanes.iter().collect(),
        Some(b) => match state.lanes.iter().find(|l| &l.bucket == b) {
            Some(lane) => vec![lane],
            None => {
                let names: Vec<&str> = state.lanes.iter().map(|l| l.bucket.as_str()).collect();
                return Err(ApiError::bad_request(
                    "unknown_bucket",
                    format!("bucket {b:?} is not configured (configured: {})", names.join(", ")),
                ));
            }
        },
    };
    let mut answers = Vec::with_capacity(lanes.len());
    for lane in &lanes {
        answers.push((lane.bucket.clone(), lane.pipeline.scheduler.send(RunNow { force: false }).await));
    }
    // The next poll must see the runs (a snapshot taken meanwhile would not).
    state.status.invalidate();
    if let [(_, started)] = answers.as_slice() {
        // One bucket: the answer of a one-bucket daemon.
        return run_answer(started).map(|body| HttpResponse::Accepted().json(body));
    }
    // Several: each bucket's answer; accepted when any run began or was queued.
    let mut runs = Vec::new();
    let mut first_error = None;
    for (bucket, started) in &answers {
        match run_answer(started) {
            Ok(mut body) => {
                body["bucket"] = json!(bucket);
                runs.push(body);
            }
            Err(e) => {
                runs.push(json!({"bucket": bucket, "success": false, "error": e.code, "message": e.message}));
                first_error.get_or_insert(e);
            }
        }
    }
    let begun: Vec<&serde_json::Value> = runs.iter().filter(|r| r["success"] == json!(true)).collect();
    match (begun.first(), first_error) {
        (None, Some(e)) => Err(e),
        (first, _) => Ok(HttpResponse::Accepted().json(json!({
            "success": true,
            "run_id": first.map(|r| r["run_id"].clone()),
            "runs": runs,
        }))),
    }
}

/// One bucket's answer to `POST /api/runs`: the body when its run began (or, in bucket
/// mode, was queued for the cluster), else the error.
fn run_answer(
    started: &Result<Result<crate::actors::RunHandle, BeginError>, actix::MailboxError>,
) -> Result<serde_json::Value, ApiError> {
    match started {
        Ok(Ok(handle)) => Ok(json!({"success": true, "run_id": handle.run_id})),
        // Bucket mode: recorded for the cluster; the shards' holders run them.
        Ok(Err(e @ BeginError::Queued)) => Ok(json!({"success": true, "run_id": null, "message": e.to_string()})),
        Ok(Err(BeginError::AlreadyRunning)) => {
            Err(ApiError::new(actix_web::http::StatusCode::CONFLICT, "already_running", "cron job is already running"))
        }
        Ok(Err(e)) => {
            // The answer names no directory; the log has the full error.
            tracing::error!(error = %e, "Cannot begin a run");
            Err(ApiError::new(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, "run_failed", e.reason()))
        }
        Err(_) => Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the pipeline is stopping",
        )),
    }
}
