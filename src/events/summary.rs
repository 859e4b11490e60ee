//! The `events.completed` webhook: event-driven conversions are announced in summaries,
//! at most one every `events.webhook_every_seconds`, never one per event (`batch.completed`
//! stays the runs'). Sent through the WebhookSender, so a failed delivery is kept and
//! retried like any other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::actors::webhook::{SendNow, WebhookSender};
use crate::naming;

/// The event name of a summary.
pub const EVENTS_COMPLETED: &str = "events.completed";

/// What event handling did since the last summary.
#[derive(Debug, Default)]
pub struct Summary {
    inner: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    /// (source key, WebP key) converted.
    images: Vec<(String, String)>,
    failed: u64,
}

impl Summary {
    pub fn converted(&self, source: &str, webp: &str) {
        self.inner.lock().expect("not poisoned").images.push((source.to_owned(), webp.to_owned()));
    }

    pub fn failed(&self) {
        self.inner.lock().expect("not poisoned").failed += 1;
    }

    /// The summary's body, and a fresh start; `None` when nothing happened.
    fn take(&self, bucket: &str) -> Option<Value> {
        let p = std::mem::take(&mut *self.inner.lock().expect("not poisoned"));
        if p.images.is_empty() && p.failed == 0 {
            return None;
        }
        let mut by_format = std::collections::BTreeMap::<String, u64>::new();
        let images: Vec<Value> = p
            .images
            .iter()
            .map(|(s, d)| {
                *by_format.entry(naming::output_format(d)).or_default() += 1;
                crate::webhook::payload::image(bucket, s, d)
            })
            .collect();
        Some(json!({
            "event": EVENTS_COMPLETED,
            "bucket": bucket,
            "processed_count": images.len(),
            "failed_count": p.failed,
            "images": images,
            "by_format": by_format,
            "timestamp": chrono::Utc::now().to_rfc3339(),
        }))
    }
}

/// Sends a summary every `every` while there is something to say, and a last one at stop.
pub async fn announce(
    summary: Arc<Summary>,
    webhook: Addr<WebhookSender>,
    bucket: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = stop.changed() => true,
        };
        if let Some(payload) = summary.take(&bucket) {
            // A failure is kept for retry by the sender (webhook.retry_enabled) and logged there.
            let _ = webhook.send(SendNow { payload }).await;
        }
        if stopping {
            return;
        }
    }
}
