//! What each event source has done, for `/api/status` (`events`): connected or not, messages
//! received, acknowledged and failed, images converted, records and messages given up,
//! events of buckets not configured, the age of the oldest message in hand, the webhook
//! journal's backlog and the last error.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One source's counters, updated by its consumer.
#[derive(Debug, Default)]
pub struct SourceStatus {
    /// `sqs`, `webhook` or `cloudflare_queue` (the metrics' `source` label).
    name: &'static str,
    inner: Mutex<Inner>,
}

/// The webhook journal's backlog: files not yet done, the records in them, the oldest.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Backlog {
    pub files: usize,
    pub records: usize,
    /// When the oldest file was accepted.
    #[serde(skip)]
    pub oldest: Option<DateTime<Utc>>,
    /// Seconds since the oldest file was accepted.
    pub oldest_age_seconds: Option<f64>,
}

#[derive(Debug, Default)]
struct Inner {
    connected: bool,
    received: u64,
    acked: u64,
    failed: u64,
    converted: u64,
    unconfigured_bucket: u64,
    given_up: u64,
    backlog: Option<Backlog>,
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
    /// Records (and messages) that can never succeed, given up once: not retried.
    pub given_up: u64,
    pub in_hand: usize,
    /// Seconds since the oldest message in hand reached the queue.
    pub oldest_message_age_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// The webhook source's journal: what is still to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Backlog>,
}

impl SourceStatus {
    /// The status of the source `name`.
    pub fn named(name: &'static str) -> Self {
        Self { name, inner: Default::default() }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

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

    /// A record or message that can never succeed was given up.
    pub fn given_up(&self) {
        self.with(|i| i.given_up += 1);
    }

    /// The journal's backlog now.
    pub fn backlog(&self, backlog: Backlog) {
        self.with(|i| i.backlog = Some(backlog));
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
            given_up: i.given_up,
            in_hand: i.in_hand.len(),
            oldest_message_age_seconds: i.in_hand.values().min().map(age),
            last_error: i.last_error.clone(),
            last_error_at: i.last_error_at,
            backlog: i.backlog.map(|b| Backlog { oldest_age_seconds: b.oldest.as_ref().map(age), ..b }),
        })
    }
}

/// Seconds since `t`.
fn age(t: &DateTime<Utc>) -> f64 {
    (Utc::now() - *t).num_milliseconds().max(0) as f64 / 1000.0
}

/// Every source's status, by name (`sqs`, `webhook`, `cloudflare_queue`).
#[derive(Debug, Default)]
pub struct EventsStatus {
    sources: Mutex<BTreeMap<&'static str, std::sync::Arc<SourceStatus>>>,
}

impl EventsStatus {
    pub fn source(&self, name: &'static str) -> std::sync::Arc<SourceStatus> {
        let mut sources = self.sources.lock().expect("not poisoned");
        sources.entry(name).or_insert_with(|| std::sync::Arc::new(SourceStatus::named(name))).clone()
    }

    pub fn view(&self) -> BTreeMap<&'static str, SourceView> {
        self.sources.lock().expect("not poisoned").iter().map(|(k, v)| (*k, v.view())).collect()
    }

    /// Sets the journal's backlog gauges in `metrics` (none when the webhook source is off),
    /// the oldest file's age as of now: called as `/metrics` is read.
    pub fn export(&self, metrics: &crate::metrics::Metrics) {
        let webhook = self.sources.lock().expect("not poisoned").get("webhook").cloned();
        if let Some(backlog) = webhook.and_then(|s| s.view().backlog) {
            metrics.journal_backlog(backlog.files, backlog.records, backlog.oldest_age_seconds.unwrap_or(0.0));
        }
    }
}
