//! What `backfill --to-queue` puts in the queue, and how it is cut into send calls.
//!
//! One message per due source, in the very shape the queue's consumers already read
//! ([`crate::events::record`] for SQS, [`crate::events::cloudflare::parse`] for a
//! Cloudflare Queue): to them a backfill is a burst of uploads. An SQS message is an S3
//! `ObjectCreated:Put` notification of one record (the key URL-encoded as S3 encodes it,
//! the listing's size, ETag and LastModified as its eventTime), marked as ours in the
//! fields S3 fills with the uploader (`userIdentity.principalId`,
//! `requestParameters.sourceIPAddress`: `ics-backfill`), which the consumers do not read.
//! A Cloudflare message is an R2 `PutObject` notification (the key as it is); R2's shape
//! has no field for who uploaded, so it carries no mark.
//!
//! [`Batcher`] groups messages into send calls: at most the queue's entries per call
//! (SQS 10, Cloudflare 100) and 256 KiB of bodies in all, as both APIs allow.

use serde_json::{Value, json};

use crate::events::record::encode_key;
use crate::storage::ObjectInfo;

/// Which kind of queue the messages are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    Sqs,
    Cloudflare,
}

impl QueueKind {
    /// Messages one send call takes at most.
    pub fn max_entries(self) -> usize {
        match self {
            QueueKind::Sqs => 10,
            QueueKind::Cloudflare => 100,
        }
    }

    /// The word the summary and the cursor file use.
    pub fn word(self) -> &'static str {
        match self {
            QueueKind::Sqs => "sqs",
            QueueKind::Cloudflare => "cloudflare_queue",
        }
    }
}

/// Bytes of bodies one send call takes at most (SQS's and Cloudflare's limit: 256 KiB).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Who the messages say uploaded the object.
pub const MARK: &str = "ics-backfill";

/// The message body announcing `source` of `bucket` (`account`: the Cloudflare account).
pub fn body(kind: QueueKind, bucket: &str, account: &str, source: &ObjectInfo) -> String {
    let time = source.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let etag = source.etag.as_deref().map(|e| e.trim_matches('"'));
    match kind {
        QueueKind::Sqs => json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": time, "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": MARK}, "requestParameters": {"sourceIPAddress": MARK},
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket},
                   "object": {"key": encode_key(&source.key), "size": source.size, "eTag": etag}},
        }]})
        .to_string(),
        QueueKind::Cloudflare => json!({
            "account": account, "action": "PutObject", "bucket": bucket,
            "object": {"key": source.key, "size": source.size, "eTag": etag}, "eventTime": time,
        })
        .to_string(),
    }
}

/// One message waiting to be sent: its source key (for the cursor and errors) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub body: String,
}

/// Groups entries, in order, into send calls within the queue's limits.
#[derive(Debug)]
pub struct Batcher {
    max_entries: usize,
    max_bytes: usize,
    open: Vec<Entry>,
    bytes: usize,
}

impl Batcher {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { max_entries: max_entries.max(1), max_bytes, open: Vec::new(), bytes: 0 }
    }

    /// Adds `entry`; returns the batch it closed, if it did not fit beside the open one.
    /// (A body over `max_bytes` alone still goes, alone: the queue then refuses it, and
    /// that entry is reported failed.)
    pub fn push(&mut self, entry: Entry) -> Option<Vec<Entry>> {
        let size = entry.body.len();
        let closed =
            if !self.open.is_empty() && (self.open.len() == self.max_entries || self.bytes + size > self.max_bytes) {
                self.take()
            } else {
                None
            };
        self.bytes += size;
        self.open.push(entry);
        closed.or_else(|| (self.open.len() == self.max_entries).then(|| self.take()).flatten())
    }

    /// The open batch, if any (at the end of the listing).
    pub fn take(&mut self) -> Option<Vec<Entry>> {
        self.bytes = 0;
        (!self.open.is_empty()).then(|| std::mem::take(&mut self.open))
    }
}

/// A body as the Cloudflare API takes it (a JSON value, not text).
pub fn as_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::events::record::{self, EventKind, Parsed};

    fn source(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 1234,
            last_modified: chrono::Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap(),
            etag: Some("\"9b2cf535f27731c974343645a3985328\"".into()),
        }
    }

    fn entry(key: &str, bytes: usize) -> Entry {
        Entry { key: key.into(), body: "x".repeat(bytes) }
    }

    #[test]
    fn an_sqs_message_reads_back_through_the_consumers_parser_as_the_upload_of_its_source() {
        let s = source("p/a b+c/café%.jpg");
        let Parsed::Events { events, unreadable } = record::parse(&body(QueueKind::Sqs, "photos", "", &s)).unwrap()
        else {
            panic!("events")
        };
        assert!(unreadable.is_empty(), "{unreadable:?}");
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.kind, e.bucket.as_str(), e.key.as_str()), (EventKind::Created, "photos", "p/a b+c/café%.jpg"));
        assert_eq!(e.etag.as_deref(), Some("9b2cf535f27731c974343645a3985328"));
        assert_eq!(e.time, Some(s.last_modified), "eventTime is the listed LastModified");
        assert!(body(QueueKind::Sqs, "photos", "", &s).contains(MARK));
    }

    #[test]
    fn a_cloudflare_message_reads_back_through_the_consumers_parser_as_the_upload_of_its_source() {
        let s = source("p/a b+c/café%.jpg");
        let text = body(QueueKind::Cloudflare, "photos", "acc1", &s);
        // As the API hands it to a pull consumer: the JSON value, or its text.
        for handed in [as_json(&text), Value::String(text.clone())] {
            let e = crate::events::cloudflare::parse(&handed).unwrap().expect("an object event");
            assert_eq!((e.kind, e.bucket.as_str(), e.key.as_str()), (EventKind::Created, "photos", s.key.as_str()));
            assert_eq!(e.etag.as_deref(), Some("9b2cf535f27731c974343645a3985328"));
            assert_eq!(e.time, Some(s.last_modified));
        }
        assert_eq!(as_json(&text)["account"], "acc1");
    }

    #[test]
    fn batches_close_at_ten_entries() {
        let mut b = Batcher::new(QueueKind::Sqs.max_entries(), MAX_BATCH_BYTES);
        let mut closed = Vec::new();
        for i in 0..25 {
            closed.extend(b.push(entry(&format!("k{i:02}"), 100)));
        }
        closed.extend(b.take());
        let sizes: Vec<usize> = closed.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let keys: Vec<String> = closed.concat().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, (0..25).map(|i| format!("k{i:02}")).collect::<Vec<_>>(), "in order, none lost");
        assert!(b.take().is_none());
    }

    #[test]
    fn batches_close_before_256_kib_of_bodies() {
        let mut b = Batcher::new(10, MAX_BATCH_BYTES);
        let mut closed = Vec::new();
        // 100 KiB bodies: two fit (200 KiB), a third would pass 256 KiB.
        for i in 0..5 {
            closed.extend(b.push(entry(&format!("k{i}"), 100 * 1024)));
        }
        closed.extend(b.take());
        let sizes: Vec<usize> = closed.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
        for batch in &closed {
            assert!(batch.iter().map(|e| e.body.len()).sum::<usize>() <= MAX_BATCH_BYTES);
        }
        // Exactly 256 KiB fits; one byte more does not.
        let mut b = Batcher::new(10, MAX_BATCH_BYTES);
        assert!(b.push(entry("a", 128 * 1024)).is_none());
        assert!(b.push(entry("b", 128 * 1024)).is_none());
        assert_eq!(b.push(entry("c", 1)).map(|v| v.len()), Some(2));
        // A body over the limit alone goes alone (the queue refuses it: reported).
        let mut b = Batcher::new(10, MAX_BATCH_BYTES);
        assert!(b.push(entry("small", 10)).is_none());
        assert_eq!(b.push(entry("huge", MAX_BATCH_BYTES + 1)).map(|v| v.len()), Some(1));
        assert_eq!(b.take().map(|v| v[0].key.clone()), Some("huge".into()));
    }
}
