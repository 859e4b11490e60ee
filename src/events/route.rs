//! Events of several buckets through one source: each event goes to the [`Handler`] of
//! the bucket it names — that bucket's storage, Uploader and write scope, its metrics
//! label and `events.completed` summary — so one queue (or one webhook) can carry the
//! notifications of every configured bucket.
//!
//! An event that names no bucket goes to the primary's. One that names a bucket this
//! daemon does not keep is done at once (its message may go): nothing is fetched or
//! written, the source's `unconfigured_bucket` counter in `/api/status` counts it, and
//! the first event of each such bucket is said at INFO (the rest at DEBUG), since a
//! shared queue may carry many.
//!
//! A body's or batch's records are handled side by side ([`Router::handle_all`]), so
//! one that fails does not hold the others back, and duplicates among them meet at the
//! handler's key lock and cost one conversion. A record that can never succeed (it
//! cannot be read, its key is refused, its image is bad) is given up with its reason:
//! said once at WARN, counted (`given_up` in `/api/status`,
//! `ics_events_given_up_total{source,reason}`), ledgered when it has a key.
//!
//! Every handler shares one admission at the converter pool (`events.concurrency` for
//! all buckets together), as the buckets' runs share the pool and the memory budget.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::handle::{Done, Handled, Handler};
use super::record::{ObjectEvent, RecordError};
use super::status::SourceStatus;
use crate::reason::Reason;

/// How many unconfigured buckets' names are remembered for the once-only INFO line.
const REMEMBERED: usize = 100;

/// The handlers of every configured bucket, the primary first.
#[derive(Clone)]
pub struct Router {
    handlers: Arc<Vec<Handler>>,
    /// Unconfigured buckets already said at INFO.
    said: Arc<Mutex<BTreeSet<String>>>,
}

impl Router {
    /// Routes to `handlers` (the primary first; at least one), which from now on share
    /// the primary's admission at the converter pool.
    pub fn new(mut handlers: Vec<Handler>) -> Self {
        assert!(!handlers.is_empty(), "events need the primary bucket's handler");
        let admitted = handlers[0].admitted.clone();
        for h in &mut handlers[1..] {
            h.admitted = admitted.clone();
        }
        Self { handlers: Arc::new(handlers), said: Default::default() }
    }

    /// The primary bucket's handler: its configuration (`events:` is the daemon's, the
    /// same in every bucket's) and its metrics handle for the per-source series.
    pub fn primary(&self) -> &Handler {
        &self.handlers[0]
    }

    /// Every bucket's handler, the primary first.
    pub fn handlers(&self) -> &[Handler] {
        &self.handlers
    }

    /// The handler of the bucket `event` names (the primary's when it names none).
    pub fn route(&self, event: &ObjectEvent) -> Option<&Handler> {
        if event.bucket.is_empty() {
            return Some(self.primary());
        }
        self.handlers.iter().find(|h| h.storage.bucket() == event.bucket)
    }

    /// Handles one event in its bucket, and counts what it did in `status` (converted,
    /// an unconfigured bucket) and in the metrics (the upload-to-WebP lag).
    pub async fn handle(&self, event: &ObjectEvent, status: &SourceStatus) -> Handled {
        let Some(handler) = self.route(event) else {
            self.unconfigured(event);
            status.unconfigured_bucket();
            return Handled::Done(Done::OtherBucket);
        };
        let handled = handler.handle(event).await;
        match &handled {
            Handled::Done(Done::Converted) => {
                status.converted();
                if let Some(lag) = super::handle::lag_seconds(event) {
                    handler.metrics.event_lag(lag);
                }
            }
            Handled::Done(Done::GivenUp { code, reason }) => {
                tracing::warn!(bucket = %handler.storage.bucket(), key = ?event.key, code = %code, source = status.name(), "Event's image given up: {reason}");
                status.given_up();
                handler.metrics.event_given_up(status.name(), code);
            }
            _ => {}
        }
        if let Handled::Done(done) = &handled {
            tracing::debug!(bucket = %handler.storage.bucket(), key = %event.key, outcome = ?done, "Bucket event handled");
        }
        handled
    }

    /// Handles a body's (or a batch's) `events` side by side, `events.concurrency` at
    /// once, and gives up its `unreadable` records; answers the errors of those left to
    /// come back (none: the message may go).
    pub async fn handle_all(
        &self,
        events: &[ObjectEvent],
        unreadable: &[RecordError],
        status: &SourceStatus,
    ) -> Vec<String> {
        for e in unreadable {
            self.unreadable(e, status);
        }
        let concurrency = self.primary().config.events.concurrency;
        futures::stream::iter(events)
            .map(|ev| async move {
                match self.handle(ev, status).await {
                    Handled::Retry(e) => Some(format!("{:?}: {e}", ev.key)),
                    Handled::Done(_) => None,
                }
            })
            .buffer_unordered(concurrency)
            .filter_map(|r| async move { r })
            .collect()
            .await
    }

    /// A record (or a whole message) that cannot be read is given up: said once, counted.
    pub fn unreadable(&self, error: &RecordError, status: &SourceStatus) {
        tracing::warn!(source = status.name(), "Event record given up, it can never succeed: {error}");
        status.given_up();
        status.error(error.to_string());
        self.primary().metrics.event_given_up(status.name(), "unreadable_record");
    }

    /// Gives up `events` whose message keeps failing (received more than
    /// `events.max_receives` times with no dead-letter queue): each image's failure goes
    /// to the ledger (not permanent: the runs retry it on their backoff), the message
    /// counted once. Answers the errors of those the ledger could not take.
    pub async fn give_up_message(&self, events: &[ObjectEvent], why: &str, status: &SourceStatus) -> Vec<String> {
        status.given_up();
        self.primary().metrics.event_given_up(status.name(), "max_receives");
        let mut errors = Vec::new();
        for ev in events {
            let Some(handler) = self.route(ev) else { continue };
            if !crate::naming::is_candidate(&ev.key, &handler.config.formats) {
                continue;
            }
            let reason = format!("its bucket event was given up: {why}");
            let code = Reason::StorageError;
            if let Handled::Retry(e) = handler.give_up_key(&ev.key, ev.etag.clone(), code, reason, false).await {
                errors.push(format!("{:?}: {e}", ev.key));
            }
        }
        errors
    }

    fn unconfigured(&self, event: &ObjectEvent) {
        let first = {
            let mut said = self.said.lock().expect("not poisoned");
            said.len() < REMEMBERED && said.insert(event.bucket.clone())
        };
        let configured: Vec<&str> = self.handlers.iter().map(|h| h.storage.bucket()).collect();
        if first {
            tracing::info!(
                bucket = %event.bucket,
                key = %event.key,
                configured = ?configured,
                "Ignoring events of a bucket that is not configured (their messages are deleted; \
                 counted in /api/status as unconfigured_bucket; further ones at DEBUG)"
            );
        } else {
            tracing::debug!(bucket = %event.bucket, key = %event.key, "Event of a bucket that is not configured ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::actors::{Pipeline, StateBackend};
    use crate::config::Config;
    use crate::events::record::EventKind;
    use crate::storage::Storage;

    const JPEG: &[u8] = include_bytes!("../../testdata/images/jpeg_baseline.jpg");

    /// A handler on its own pipeline over the in-memory bucket `name`.
    fn handler(dir: &std::path::Path, name: &str) -> Handler {
        let mut config = Config::validate(Default::default()).unwrap();
        config.state.dir = dir.join(name);
        config.pipeline.workers = 1;
        let config = Arc::new(config);
        let storage = Storage::in_memory(name);
        let p = Pipeline::start_manual(config.clone(), storage.clone(), StateBackend::file(&config.state.dir).unwrap());
        Handler::new(config, storage, &p, Default::default())
    }

    fn created(bucket: &str, key: &str) -> ObjectEvent {
        ObjectEvent { kind: EventKind::Created, bucket: bucket.into(), key: key.into(), etag: None, time: None }
    }

    #[test]
    fn each_event_converts_in_the_bucket_it_names_and_unconfigured_buckets_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        actix::System::new().block_on(async {
            let router = Router::new(vec![handler(dir.path(), "primary"), handler(dir.path(), "second")]);
            let [a, b] = [&router.handlers()[0].storage, &router.handlers()[1].storage];
            assert!(Arc::ptr_eq(&router.handlers()[0].admitted, &router.handlers()[1].admitted), "one admission");
            for s in [a, b] {
                s.put("p/x.jpg", Bytes::from_static(JPEG), "image/jpeg").await.unwrap();
            }
            b.put("p/only-second.jpg", Bytes::from_static(JPEG), "image/jpeg").await.unwrap();
            let status = SourceStatus::default();
            // The second bucket's event converts there, not in the primary.
            let done = router.handle(&created("second", "p/only-second.jpg"), &status).await;
            assert_eq!(done, Handled::Done(Done::Converted));
            assert!(b.head("p/only-second.webp").await.is_ok());
            assert!(a.head("p/only-second.webp").await.is_err());
            assert!(a.head("p/x.webp").await.is_err() && b.head("p/x.webp").await.is_err());
            // An event naming no bucket is the primary's.
            assert_eq!(router.handle(&created("", "p/x.jpg"), &status).await, Handled::Done(Done::Converted));
            assert!(a.head("p/x.webp").await.is_ok());
            assert!(b.head("p/x.webp").await.is_err(), "the second bucket's p/x.jpg has had no event");
            // A bucket not configured: done without touching anything, and counted.
            for _ in 0..2 {
                let done = router.handle(&created("elsewhere", "p/x.jpg"), &status).await;
                assert_eq!(done, Handled::Done(Done::OtherBucket));
            }
            assert!(b.head("p/x.webp").await.is_err());
            let view = status.view();
            assert_eq!((view.converted, view.unconfigured_bucket), (2, 2), "{view:?}");
            assert_eq!(router.said.lock().unwrap().len(), 1, "said once at INFO");
        });
    }

    #[test]
    fn a_refused_key_and_an_unreadable_record_are_given_up_beside_a_good_one_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        actix::System::new().block_on(async {
            let router = Router::new(vec![handler(dir.path(), "primary")]);
            let storage = &router.handlers()[0].storage;
            storage.put("p/x.jpg", Bytes::from_static(JPEG), "image/jpeg").await.unwrap();
            let status = SourceStatus::named("sqs");
            // The refused key first: before, it was retried and the rest waited behind it.
            let events = [created("", "p/evil\0.jpg"), created("", "p/x.jpg"), created("", "p/x.jpg")];
            let unreadable = [RecordError("record 3: bad %-escape".into())];
            let left = router.handle_all(&events, &unreadable, &status).await;
            assert!(left.is_empty(), "nothing left to come back: {left:?}");
            assert!(storage.head("p/x.webp").await.is_ok());
            let view = status.view();
            assert_eq!((view.converted, view.given_up), (1, 2), "the duplicate cost nothing: {view:?}");
            let metrics = router.primary().metrics.render();
            for reason in ["unsafe_key", "unreadable_record"] {
                let line = format!("ics_events_given_up_total{{reason=\"{reason}\",source=\"sqs\"}} 1\n");
                assert!(metrics.contains(&line), "{line} in {metrics}");
            }
            use crate::state::StateStore;
            let state = crate::state::FileStateStore::new(&dir.path().join("primary")).unwrap();
            let ledger = state.load().unwrap().unwrap().ledger;
            let evil = &ledger["p/evil\0.jpg"];
            assert_eq!((evil.kind, evil.code.as_str()), (crate::state::LedgerKind::GivenUp, "unsafe_key"));
        });
    }
}
