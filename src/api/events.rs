//! `POST /api/events`: the `webhook` event source. S3 event records as MinIO's webhook
//! target and other S3-compatible stores post them (`{"Records": [...]}`), accepted with
//! 202 only once written durably to the journal under `state.dir` (`events/`), so a crash
//! after the answer loses nothing; the daemon converts them from there.
//!
//! Authenticated by `api.token` or `events.webhook_token` (`Authorization: Bearer T`, or
//! the bare token as MinIO's `auth_token` may send it); open only when neither is set
//! (and the API is then on a loopback address, as `serve` requires). The token is checked
//! before the body is read, and the body's time is bounded as on `/api/*`.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::json;

use super::AppState;
use super::error::ApiError;

fn authorised(state: &AppState, req: &HttpRequest) -> bool {
    let tokens = [&state.config.api.token, &state.config.events.webhook_token];
    if tokens.iter().all(|t| t.is_empty()) {
        return true;
    }
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let given = header.strip_prefix("Bearer ").unwrap_or(header);
    tokens.iter().any(|t| !t.is_empty() && super::auth::constant_time_eq(given.as_bytes(), t.expose().as_bytes()))
}

/// Journals posted S3 event records for conversion.
#[utoipa::path(post, path = "/api/events", tag = "events", security(("bearer" = [])),
    request_body(content = Object, description = "S3 event records: `{\"Records\": [...]}` (MinIO, S3-compatible stores)"),
    responses(super::schemas::EventsAnswers))]
pub async fn post_events(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The token before the body: a caller without it is answered at once, whatever it
    // sends or withholds after its headers (a body extractor would wait for it all).
    if !authorised(&state, &req) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong Authorization: Bearer token (api.token or events.webhook_token)",
        ));
    }
    let Some(journal) = state.events.as_ref().and_then(|e| e.journal.clone()) else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "events_off",
            "the webhook event source is off (events.webhook_enabled: true turns it on)",
        ));
    };
    let body = read_body(&req, payload, state.config.api.max_body_bytes).await?;
    let written = web::block(move || journal.append(&body)).await.map_err(|_| {
        ApiError::new(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the daemon is stopping")
    })?;
    match written {
        Ok(events) => Ok(HttpResponse::Accepted().json(json!({"success": true, "events": events}))),
        Err(crate::events::journal::JournalError::Invalid(e)) => {
            Err(ApiError::bad_request("invalid_events", e.to_string()))
        }
        Err(e) => {
            // The answer names no directory; the log has the full error.
            tracing::error!(error = %e, "Cannot journal posted events");
            Err(ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "journal_failed",
                "the events could not be stored; post them again",
            ))
        }
    }
}

/// The posted body, at most `limit` bytes (`api.max_body_kb`; a longer `Content-Length`
/// is refused before reading), read within the request's deadline (`server.timeout_seconds`).
async fn read_body(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the events are over api.max_body_kb ({limit} bytes)"),
        )
    };
    let announced = req.headers().get(actix_web::http::header::CONTENT_LENGTH);
    if announced.and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match payload.to_bytes_limited(limit).await {
        Err(_) => Err(too_large()),
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => match e.as_error::<actix_web::error::PayloadError>() {
            Some(p) if super::deadline::is_timeout(p) => {
                Err(ApiError::new(actix_web::http::StatusCode::REQUEST_TIMEOUT, "request_timeout", p.to_string()))
            }
            _ => Err(ApiError::bad_request("invalid_request", format!("cannot read the body: {e}"))),
        },
    }
}
