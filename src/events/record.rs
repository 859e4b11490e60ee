//! S3 event records as AWS S3, MinIO and S3-compatible stores send them
//! (`{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": …}}}]}`),
//! read into [`ObjectEvent`]s.
//!
//! Keys arrive URL-encoded the way Python's `quote_plus` encodes them (space as `+`, `+`
//! as `%2B`, `/` as `%2F`): they are decoded exactly once here. A message without
//! `Records` that says `"Event": "s3:TestEvent"` (sent when a notification is set up) is
//! [`Parsed::Test`]; anything else unreadable is an error naming what is wrong.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `ObjectCreated:*` (Put, Post, Copy, CompleteMultipartUpload), R2's PutObject…
    Created,
    /// `ObjectRemoved:*`.
    Removed,
}

/// One object event, whatever source it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub kind: EventKind,
    /// The bucket the record names (empty when the source does not say).
    pub bucket: String,
    /// The decoded key.
    pub key: String,
    /// The object's ETag as the event gives it, without quotes.
    pub etag: Option<String>,
    /// When the store says the event happened.
    pub time: Option<DateTime<Utc>>,
}

/// What one message body holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Object events (those of kinds we do not act on are dropped).
    Events(Vec<ObjectEvent>),
    /// `s3:TestEvent`: nothing to do.
    Test,
}

/// A message body that is not an S3 event notification.
#[derive(Debug, thiserror::Error)]
#[error("not an S3 event notification: {0}")]
pub struct RecordError(pub String);

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    #[serde(rename = "Event")]
    event: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_name: String,
    event_time: Option<String>,
    s3: S3Part,
}

#[derive(Deserialize)]
struct S3Part {
    #[serde(default)]
    bucket: Option<BucketPart>,
    object: ObjectPart,
}

#[derive(Deserialize)]
struct BucketPart {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectPart {
    key: String,
    e_tag: Option<String>,
}

/// Parses one S3 event notification body.
pub fn parse(body: &str) -> Result<Parsed, RecordError> {
    let b: Body = serde_json::from_str(body).map_err(|e| RecordError(e.to_string()))?;
    let records = match (b.records, b.event.as_deref()) {
        (Some(r), _) => r,
        (None, Some("s3:TestEvent")) => return Ok(Parsed::Test),
        (None, _) => return Err(RecordError("it has no Records".into())),
    };
    let mut events = Vec::with_capacity(records.len());
    for r in records {
        let kind = match r.event_name.trim_start_matches("s3:").split(':').next() {
            Some("ObjectCreated") => EventKind::Created,
            Some("ObjectRemoved") => EventKind::Removed,
            _ => continue,
        };
        events.push(ObjectEvent {
            kind,
            bucket: r.s3.bucket.map(|b| b.name).unwrap_or_default(),
            key: decode_key(&r.s3.object.key)?,
            etag: r.s3.object.e_tag.map(|e| e.trim_matches('"').to_owned()).filter(|e| !e.is_empty()),
            time: r.event_time.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc)),
        });
    }
    Ok(Parsed::Events(events))
}

/// Decodes a `quote_plus`-encoded key: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub fn decode_key(encoded: &str) -> Result<String, RecordError> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = encoded.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(b) = hex else {
                    return Err(RecordError(format!("key {encoded:?} has a bad %-escape at byte {i}")));
                };
                out.push(b);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| RecordError(format!("key {encoded:?} does not decode to UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_decoded_once_plus_as_space() {
        assert_eq!(decode_key("a+b%2Bc%2Fx.jpg").unwrap(), "a b+c/x.jpg");
        assert_eq!(decode_key("caf%C3%A9%2525.png").unwrap(), "café%25.png");
        assert!(decode_key("bad%2").is_err());
        assert!(decode_key("%FF.jpg").is_err());
    }

    #[test]
    fn reads_the_records_moto_and_s3_send() {
        // As the S3 test server puts it in the queue.
        let body = r#"{"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-29T04:30:15.142Z", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "probe"}, "object": {"key": "a+b%2Bc%2Fx.jpg", "size": 2,
            "eTag": "49f68a5c8493ec2c0bf489821c21fc3b"}}},
            {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "probe"}, "object": {"key": "y.png"}}},
            {"eventName": "ObjectRestore:Completed", "s3": {"object": {"key": "z.png"}}}]}"#;
        let Parsed::Events(e) = parse(body).unwrap() else { panic!("events") };
        assert_eq!(e.len(), 2, "restores are not acted on");
        assert_eq!(e[0].key, "a b+c/x.jpg");
        assert_eq!(e[0].kind, EventKind::Created);
        assert_eq!(e[0].etag.as_deref(), Some("49f68a5c8493ec2c0bf489821c21fc3b"));
        assert_eq!(e[0].time.unwrap().timestamp_millis() % 1000, 142);
        assert_eq!((e[1].kind, e[1].bucket.as_str(), e[1].etag.as_ref()), (EventKind::Removed, "probe", None));
        // MinIO's names carry the s3: prefix.
        let minio =
            r#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"p.jpg","eTag":"\"e\""}}}]}"#;
        let Parsed::Events(e) = parse(minio).unwrap() else { panic!("events") };
        assert_eq!((e[0].kind, e[0].etag.as_deref()), (EventKind::Created, Some("e")));
    }

    #[test]
    fn test_events_and_strangers() {
        let test = r#"{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "probe"}"#;
        assert_eq!(parse(test).unwrap(), Parsed::Test);
        assert!(parse("{}").unwrap_err().to_string().contains("no Records"));
        assert!(parse("not json").is_err());
    }
}
