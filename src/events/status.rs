//! What each event source has done, for `/api/status` (`events`): connected or not, messages
//! received, acknowledged and failed, images converted, events of buckets not configured,
//! the age of the oldest message in hand and the last error.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One source's counters, updated by its consumer.
#[derive(Debug, Default)]
pub struct SourceStatus {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    connected: bool,
    received: u64,
    acked: u64,
    failed: u64,
    converted: u64,
    unconfigured_bucket: u64,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
    /// Messages in hand: id → when the queue got it.
    in_hand: BTreeMap<String, DateTime<Utc>>,
}

/// A source's status as `/api/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceView {
    pub connected: bool,
    pub received: u64,
    pub acked: u64,
    pub failed: u64,
    pub converted: u64,
    /// Events of a bucket this daemon does not keep: ignored, their messages deleted.
    pub unconfigured_bucket: u64,
    pub in_hand: usize,
    /// Seconds since the oldest message in hand reached the queue.
    pub oldest_message_age_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

impl SourceStatus {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("not poisoned"))
    }

    pub fn connected(&self, yes: bool) {
        self.with(|i| i.connected = yes);
    }

    pub fn received(&self, id: &str, sent: DateTime<Utc>) {
        self.with(|i| {
            i.received += 1;
            i.in_hand.insert(id.to_owned(), sent);
        });
    }

    /// The message left our hands: acknowledged (deleted) or not.
    pub fn finished(&self, id: &str, acked: bool) {
        self.with(|i| {
            i.in_hand.remove(id);
            if acked {
                i.acked += 1;
            } else {
                i.failed += 1;
            }
        });
    }

    pub fn converted(&self) {
        self.with(|i| i.converted += 1);
    }

    /// An event of a bucket that is not configured was ignored.
    pub fn unconfigured_bucket(&self) {
        self.with(|i| i.unconfigured_bucket += 1);
    }

    pub fn error(&self, e: impl Into<String>) {
        self.with(|i| {
            i.last_error = Some(e.into());
            i.last_error_at = Some(Utc::now());
        });
    }

    pub fn view(&self) -> SourceView {
        self.with(|i| SourceView {
            connected: i.connected,
            received: i.received,
            acked: i.acked,
            failed: i.failed,
            converted: i.converted,
            unconfigured_bucket: i.unconfigured_bucket,
            in_hand: i.in_hand.len(),
            oldest_message_age_seconds: i
                .in_hand
                .values()
                .min()
                .map(|t| (Utc::now() - *t).num_milliseconds().max(0) as f64 / 1000.0),
            last_error: i.last_error.clone(),
            last_error_at: i.last_error_at,
        })
    }
}

/// Every source's status, by name (`sqs`, `webhook`, `cloudflare_queue`).
#[derive(Debug, Default)]
pub struct EventsStatus {
    sources: Mutex<BTreeMap<&'static str, std::sync::Arc<SourceStatus>>>,
}

impl EventsStatus {
    pub fn source(&self, name: &'static str) -> std::sync::Arc<SourceStatus> {
        self.sources.lock().expect("not poisoned").entry(name).or_default().clone()
    }

    pub fn view(&self) -> BTreeMap<&'static str, SourceView> {
        self.sources.lock().expect("not poisoned").iter().map(|(k, v)| (*k, v.view())).collect()
    }
}
