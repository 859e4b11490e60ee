//! Webhooks: announcing finished runs (and manual sends) to `webhook.url`, and retrying
//! what could not be delivered, compatibly with the Go server's `webhook` package.
//!
//! # Layout
//! - [`payload`]: the bodies (`batch.completed`, `manual.triggered`), shaped as Go's.
//! - [`send`]: one signed POST; a redirect or a non-2xx answer is a failed attempt.
//! - [`pending`]: undelivered records on disk, in Go's format and file names.
//! - [`Webhook`] (here): a delivery with its queueing on failure, and a retry pass over
//!   the pending directory. `serve` runs it inside the WebhookSender actor (a pass at
//!   start and every `webhook.retry_interval_minutes`); `run-once` calls it directly and
//!   waits for it, so a delivery it could not make is left for the next process.
//!
//! Retry counting is Go's: a failed first attempt is stored with `retry_count: 0`; each
//! failed retry adds one, and when `retry_count` reaches `webhook.max_retries` the
//! record is given up — moved to `pending_dir/dead/` (Go deletes it).

pub mod payload;
pub mod pending;
pub mod send;

pub use payload::{BATCH_COMPLETED, EventError, ImageEntry, MANUAL_TRIGGERED};
pub use pending::{Pending, PendingError, PendingRecord};
pub use send::{DeliveryError, Target, signature};

use crate::config::WebhookConfig;

/// What one retry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryReport {
    pub delivered: usize,
    /// Failed again and kept for a later pass.
    pub failed: usize,
    /// Failed for the last time and moved to `dead/`.
    pub given_up: usize,
    /// Files that are not pending records (left in place, as Go leaves them).
    pub unreadable: usize,
}

/// Deliveries to the configured `webhook.url`.
#[derive(Debug, Clone)]
pub struct Webhook {
    target: Target,
    config: WebhookConfig,
}

impl Webhook {
    /// `None` when `webhook.url` is not set: nothing is sent (as Go's `SendBulk` with an
    /// empty URL) and nothing is queued.
    pub fn from_config(config: &WebhookConfig) -> Result<Option<Self>, DeliveryError> {
        let Some(url) = &config.url else { return Ok(None) };
        Ok(Some(Self { target: Target::new(url, config.secret.clone())?, config: config.clone() }))
    }

    /// Sends `payload` now. A failed attempt is stored in `webhook.pending_dir` for the
    /// retry passes when `webhook.retry_enabled`, and returned either way.
    pub async fn deliver(&self, payload: serde_json::Value) -> Result<(), DeliveryError> {
        let mut p = Pending::new(self.target.url(), payload);
        let result = self.target.post(&p.id, p.event(), &p.record.payload).await;
        let event = p.event().to_owned();
        match &result {
            Ok(()) => tracing::info!(delivery = %p.id, event, "Webhook delivered"),
            Err(e) if self.config.retry_enabled => {
                p.record.last_error = Some(e.to_string());
                match p.write(&self.config.pending_dir) {
                    Ok(path) => {
                        tracing::warn!(delivery = %p.id, event, error = %e, path = %path.display(), "Webhook delivery failed; queued for retry")
                    }
                    Err(w) => {
                        tracing::error!(delivery = %p.id, event, error = %e, queue_error = %w, "Webhook delivery failed and could not be queued")
                    }
                }
            }
            Err(e) => {
                tracing::error!(delivery = %p.id, event, error = %e, "Webhook delivery failed (webhook.retry_enabled is false)")
            }
        }
        result
    }

    /// Tries every pending delivery once (oldest first), skipping those another process
    /// is sending. Records the Go server left are sent as they are, to `webhook.url`.
    pub async fn retry_pending(&self) -> RetryReport {
        let dir = &self.config.pending_dir;
        let mut report = RetryReport::default();
        let files = match pending::list(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the pending webhooks");
                return report;
            }
        };
        for path in files {
            let _claim = match pending::claim(&path) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot take a pending webhook");
                    continue;
                }
            };
            let mut p = match Pending::read(&path) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "Unreadable pending webhook; left in place");
                    report.unreadable += 1;
                    continue;
                }
            };
            let event = p.event().to_owned();
            match self.target.post(&p.id, &event, &p.record.payload).await {
                Ok(()) => {
                    report.delivered += 1;
                    if let Err(e) = p.remove(dir) {
                        tracing::warn!(delivery = %p.id, error = %e, "Webhook delivered, but its pending file stays");
                    }
                    tracing::info!(delivery = %p.id, event, retries = p.record.retry_count + 1, "Webhook delivered on retry");
                }
                Err(e) => {
                    p.record.retry_count += 1;
                    p.record.last_error = Some(e.to_string());
                    if p.record.retry_count >= self.config.max_retries {
                        report.given_up += 1;
                        match p.bury(dir) {
                            Ok(dead) => {
                                tracing::error!(delivery = %p.id, event, retries = p.record.retry_count, error = %e, path = %dead.display(), "Webhook delivery given up; moved to dead letters")
                            }
                            Err(w) => {
                                tracing::error!(delivery = %p.id, error = %w, "Cannot move a given-up webhook to dead letters")
                            }
                        }
                    } else {
                        report.failed += 1;
                        if let Err(w) = p.write(dir) {
                            tracing::error!(delivery = %p.id, error = %w, "Cannot update a pending webhook");
                        }
                        tracing::warn!(delivery = %p.id, event, retries = p.record.retry_count, error = %e, "Webhook retry failed; will retry");
                    }
                }
            }
        }
        report
    }
}
