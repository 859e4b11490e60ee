//! `GET /ready`: whether this instance can do its work now — every bucket's storage
//! answered a cheap request within the last few seconds and the pipelines' actors are
//! running.
//!
//! `/health` stays a liveness answer (the process serves HTTP). Readiness is for load
//! balancers and container health checks: a daemon whose bucket is unreachable is alive
//! but not ready. The storage probe runs inside the request when the last answer is older
//! than [`FRESH_FOR`] (one listing of a prefix that need not exist: a bucket that does
//! not exist answers it 404, and is not ready), at most one at a time, bounded by
//! [`PROBE_TIMEOUT`]; polls in between are answered from the cached result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::storage::{Storage, StorageError};

/// How long a storage answer counts as recent.
pub const FRESH_FOR: Duration = Duration::from_secs(10);
/// How long the probe may wait for the storage.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The prefix the probe lists; that nothing is under it is a fine answer.
const PROBE_PREFIX: &str = ".image-converting-server/ready-probe";

/// The last storage probe's result, per bucket.
#[derive(Default)]
pub struct Readiness {
    last: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<LastProbe>>>>,
}

type LastProbe = Option<(Instant, Result<(), String>)>;

impl Readiness {
    /// `Ok` when `bucket`'s storage answered within [`FRESH_FOR`] (probing it now if needed).
    async fn storage(&self, bucket: &str, storage: &Storage) -> Result<(), String> {
        let slot = self.last.lock().unwrap_or_else(|e| e.into_inner()).entry(bucket.to_owned()).or_default().clone();
        let mut last = slot.lock().await;
        if let Some((at, result)) = &*last
            && at.elapsed() < FRESH_FOR
        {
            return result.clone();
        }
        let result = match tokio::time::timeout(PROBE_TIMEOUT, storage.check_bucket(PROBE_PREFIX)).await {
            Ok(Ok(())) => Ok(()),
            // Reachable, but there is nothing to keep: not ready (issue 23).
            Ok(Err(StorageError::NoBucket)) => Err(format!("bucket {bucket} does not exist")),
            Ok(Err(e)) => Err(format!("storage did not answer (bucket {bucket}): {e}")),
            Err(_) => Err(format!("storage did not answer within {} s (bucket {bucket})", PROBE_TIMEOUT.as_secs())),
        };
        if let Err(e) = &result {
            tracing::warn!(reason = %e, "Not ready");
        }
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

/// `GET /ready`: 200 `{"status": "ready"}`, or 503 `{"status": "not_ready", "reason": …}`.
#[utoipa::path(get, path = "/ready", tag = "meta", responses(
    (status = 200, description = "Ready", body = super::schemas::Readiness),
    (status = 503, description = "Not ready, with the reason and `Retry-After`", body = super::schemas::Readiness),
))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let stopped = state.lanes.iter().find_map(|l| l.pipeline.stopped_actor().map(|a| (a, &l.bucket)));
    let result = match stopped {
        Some((actor, bucket)) => Err(format!("the {actor} actor of bucket {bucket} has stopped")),
        // Every bucket's storage, probed side by side; the first that fails is the reason.
        None => futures::future::join_all(state.lanes.iter().map(|l| state.readiness.storage(&l.bucket, &l.storage)))
            .await
            .into_iter()
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ()),
    };
    match result {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", FRESH_FOR.as_secs().to_string()))
            .json(json!({"status": "not_ready", "reason": reason})),
    }
}
