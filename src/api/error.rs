//! API errors: the Go server's body `{"success": false, "error": CODE, "message": …}`, its
//! codes and statuses, plus the ones it lacked (`payload_too_large`, `unsupported_image`,
//! `bucket_mismatch`, `busy`, `unauthorized`, …).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::convert::ConvertError;
use crate::job::JobError;
use crate::naming::SourceError;
use crate::storage::StorageError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 405: the methods the resource allows.
    pub allow: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    success: bool,
    error: &'a str,
    message: &'a str,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if let Some(allow) = self.allow {
            r.insert_header(("Allow", allow));
        }
        r.json(Body { success: false, error: self.code, message: &self.message })
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), allow: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("allowed: {allow}"))
        }
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Empty => Self::bad_request("missing_source", "source is required"),
            SourceError::OtherBucket { .. } => Self::bad_request("bucket_mismatch", e.to_string()),
            // As the Go server: an unsupported scheme or an address without a key.
            SourceError::NoKey(_) | SourceError::Scheme(_) => Self::bad_request("invalid_source_format", e.to_string()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "image_not_found", e.to_string()),
            StorageError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string())
            }
            StorageError::UnsafeKey { .. } => Self::bad_request("invalid_request", e.to_string()),
            _ => Self::new(StatusCode::BAD_GATEWAY, "storage_error", e.to_string()),
        }
    }
}

impl From<ConvertError> for ApiError {
    fn from(e: ConvertError) -> Self {
        match &e {
            ConvertError::TooLarge { .. }
            | ConvertError::TooManyPixels { .. }
            | ConvertError::OutputTooManyPixels { .. }
            | ConvertError::CanvasTooLarge { .. }
            | ConvertError::TooWide { .. }
            | ConvertError::TooManyFrames { .. }
            | ConvertError::LimitExceeded { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string())
            }
            // Its own reason: the remedy is a setting (named in the message), not the file.
            ConvertError::OverMemoryBudget { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "over_memory_budget", e.to_string())
            }
            // Only a request that already timed out cancels its conversion.
            ConvertError::Cancelled => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string()),
            ConvertError::InvalidResize(_) => Self::bad_request("invalid_resize_params", e.to_string()),
            ConvertError::Encode(_) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "conversion_failed", e.to_string()),
            _ => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported_image", e.to_string()),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Source(s) => s.into(),
            JobError::Storage(s) => s.into(),
            JobError::Convert { error, key } => {
                let mut api: ApiError = error.into();
                api.message = format!("{key}: {}", api.message);
                api
            }
            JobError::NotCandidate { .. } => Self::bad_request("invalid_source_format", e.to_string()),
            JobError::Collision { .. } => Self::new(StatusCode::CONFLICT, "output_collision", e.to_string()),
            JobError::Worker { .. } => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "conversion_failed", e.to_string()),
        }
    }
}
