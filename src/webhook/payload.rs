//! The webhook bodies, shaped as the Go server sends them.
//!
//! Go's `BatchPayload` is `{event, processed_count, failed_count, images: [{source,
//! destination}]}`, where `source` and `destination` are object keys (`photos/a.jpg` →
//! `photos/a.webp`). We send exactly that, and add fields a Go receiver ignores: `bucket`
//! (as the multi-bucket Go server's `ImageEntry` carries it),
//! `source_address`/`destination_address` (`r2://bucket/key`) in each image, and
//! `run_id`, `complete`, `timestamp` for a finished run.
//!
//! Events: `batch.completed` is sent only for a finished run. `POST /api/webhook/send`
//! sends `manual.triggered` (as Go does), or an event the caller names — but never a
//! `batch.*` event: a manual send is signed with the same secret, and must not pass for
//! a run the daemon made.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::RunSummary;
use crate::naming;

/// The event of a finished run.
pub const BATCH_COMPLETED: &str = "batch.completed";
/// The event of a manual send that names none.
pub const MANUAL_TRIGGERED: &str = "manual.triggered";

/// One converted image as a manual send lists it (Go's `ImageEntry`); missing fields are
/// empty, as Go decodes them, and other fields are dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ImageEntry {
    pub source: String,
    pub destination: String,
}

/// Why a manual send's `event` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event {0:?} is reserved for runs the daemon made; a manual send cannot claim it")]
    Reserved(String),
    #[error("event {0:?} is not an event name (1 to 64 letters, digits, '.', '_' or '-')")]
    Malformed(String),
}

/// The event of a manual send: `manual.triggered` unless `named`, which must be a plain
/// name outside `batch.*`.
pub fn manual_event(named: Option<&str>) -> Result<String, EventError> {
    let Some(event) = named else { return Ok(MANUAL_TRIGGERED.to_owned()) };
    let plain = (1..=64).contains(&event.len())
        && event.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !plain {
        return Err(EventError::Malformed(event.chars().take(80).collect()));
    }
    if event.to_ascii_lowercase().starts_with("batch.") {
        return Err(EventError::Reserved(event.to_owned()));
    }
    Ok(event.to_owned())
}

/// One made output of `bucket` as a summary lists it: object keys as Go sends them, their
/// `r2://` addresses and the output's format.
pub fn image(bucket: &str, source: &str, destination: &str) -> Value {
    json!({
        "source": source,
        "destination": destination,
        "source_address": naming::address(bucket, source),
        "destination_address": naming::address(bucket, destination),
        "format": naming::output_format(destination),
    })
}

/// The body of a manual send (`POST /api/webhook/send`).
pub fn manual(event: &str, images: &[ImageEntry]) -> Value {
    let images: Vec<Value> = images.iter().map(|i| json!({"source": i.source, "destination": i.destination})).collect();
    json!({
        "event": event,
        "processed_count": images.len(),
        "failed_count": 0,
        "images": images,
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
}

/// The body announcing a finished run of `bucket`; `images` are (source key, output key),
/// each listed with its output's format, and `by_format` counts the outputs made of each.
pub fn batch_completed(bucket: &str, summary: &RunSummary, images: &[(String, String)]) -> Value {
    let images: Vec<Value> = images
        .iter()
        .map(|(s, d)| {
            let mut entry = image(bucket, s, d);
            entry.as_object_mut().expect("an object").insert("bucket".into(), json!(bucket));
            entry
        })
        .collect();
    json!({
        "event": BATCH_COMPLETED,
        "processed_count": summary.counts.converted,
        "failed_count": summary.counts.failed,
        "images": images,
        "by_format": summary.counts.by_format,
        "bucket": bucket,
        "run_id": summary.run_id,
        "complete": summary.complete,
        "timestamp": summary.finished_at.to_rfc3339(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_send_defaults_to_manual_triggered_and_cannot_claim_a_batch_event() {
        assert_eq!(manual_event(None).unwrap(), "manual.triggered");
        assert_eq!(manual_event(Some("cms.refresh")).unwrap(), "cms.refresh");
        for reserved in ["batch.completed", "Batch.Completed", "batch.anything"] {
            assert!(matches!(manual_event(Some(reserved)), Err(EventError::Reserved(_))), "{reserved}");
        }
        for bad in ["", "a\r\nX-Webhook-Signature: x", "with space", &"x".repeat(65)] {
            assert!(matches!(manual_event(Some(bad)), Err(EventError::Malformed(_))), "{bad:?}");
        }
    }
}
