//! API errors: the Go server's body `{"success": false, "error": CODE, "message": …}`, its
//! codes and statuses, plus the ones it lacked (`payload_too_large`, `unsupported_image`,
//! `unknown_bucket`, `busy`, `unauthorized`, …). A failure of the image itself is
//! classified once, as a [`Reason`] (shared with the ledger and the metrics), and
//! answered with [`Reason::answer`]'s status and wire code.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::convert::ConvertError;
use crate::job::JobError;
use crate::naming::SourceError;
use crate::reason::Reason;
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
            SourceError::Empty => Self::of(Reason::MissingSource, "source is required"),
            e => JobError::Source(e).into(),
        }
    }
}

impl ApiError {
    /// The answer for `reason` (its status and the Go server's wire code), with `message`.
    pub fn of(reason: Reason, message: impl Into<String>) -> Self {
        let (status, code) = reason.answer();
        Self::new(StatusCode::from_u16(status).expect("a valid status"), code, message)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::of(e.reason(), e.to_string())
    }
}

impl From<ConvertError> for ApiError {
    fn from(e: ConvertError) -> Self {
        Self::of(e.reason(), e.to_string())
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Convert { error, key } => {
                let mut api: ApiError = error.into();
                api.message = format!("{key}: {}", api.message);
                api
            }
            e => Self::of(e.reason(), e.to_string()),
        }
    }
}
