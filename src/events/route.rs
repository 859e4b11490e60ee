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
//! Every handler shares one admission at the converter pool (`events.concurrency` for
//! all buckets together), as the buckets' runs share the pool and the memory budget.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::handle::{Done, Handled, Handler};
use super::record::ObjectEvent;
use super::status::SourceStatus;

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
                tracing::warn!(bucket = %handler.storage.bucket(), key = %event.key, code = %code, "Event's image given up: {reason}");
            }
            _ => {}
        }
        if let Handled::Done(done) = &handled {
            tracing::debug!(bucket = %handler.storage.bucket(), key = %event.key, outcome = ?done, "Bucket event handled");
        }
        handled
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
}
