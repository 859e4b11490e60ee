//! S3 event records as AWS S3, MinIO and S3-compatible stores send them
//! (`{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": …}}}]}`),
//! read into [`ObjectEvent`]s.
//!
//! Keys arrive URL-encoded the way Python's `quote_plus` encodes them (space as `+`, `+`
//! as `%2B`, `/` as `%2F`): they are decoded exactly once here. A message without
//! `Records` that says `"Event": "s3:TestEvent"` (sent when a notification is set up) is
//! [`Parsed::Test`]; anything else unreadable is an error naming what is wrong.
//!
//! Each record is read on its own: one that cannot be read (no key, a bad `%`-escape, a
//! key that is not UTF-8) is [`Parsed::Events`]'s `unreadable`, given up by the source
//! while the body's other records are handled as usual.

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
    /// Object events (those of kinds we do not act on are dropped), and the records that
    /// could not be read, each saying why (they can never succeed).
    Events { events: Vec<ObjectEvent>, unreadable: Vec<RecordError> },
    /// `s3:TestEvent`: nothing to do.
    Test,
}

/// A message body that is not an S3 event notification.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an S3 event notification: {0}")]
pub struct RecordError(pub String);

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "Records")]
    records: Option<Vec<serde_json::Value>>,
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
    let (mut events, mut unreadable) = (Vec::with_capacity(records.len()), Vec::new());
    for (i, r) in records.into_iter().enumerate() {
        match parse_record(r) {
            Ok(Some(e)) => events.push(e),
            Ok(None) => {}
            Err(e) => unreadable.push(RecordError(format!("record {i}: {}", e.0))),
        }
    }
    Ok(Parsed::Events { events, unreadable })
}

/// One record: `None` for a kind we do not act on.
fn parse_record(r: serde_json::Value) -> Result<Option<ObjectEvent>, RecordError> {
    let r: Record = serde_json::from_value(r).map_err(|e| RecordError(e.to_string()))?;
    let kind = match r.event_name.trim_start_matches("s3:").split(':').next() {
        Some("ObjectCreated") => EventKind::Created,
        Some("ObjectRemoved") => EventKind::Removed,
        _ => return Ok(None),
    };
    Ok(Some(ObjectEvent {
        kind,
        bucket: r.s3.bucket.map(|b| b.name).unwrap_or_default(),
        key: decode_key(&r.s3.object.key)?,
        etag: r.s3.object.e_tag.map(|e| e.trim_matches('"').to_owned()).filter(|e| !e.is_empty()),
        time: r.event_time.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc)),
    }))
}

/// `events` as one S3 notification body, as [`parse`] reads them back (the webhook
/// journal rewrites a file with the records still to do).
pub fn to_body(events: &[ObjectEvent]) -> String {
    let records: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            let name = match e.kind {
                EventKind::Created => "ObjectCreated:Put",
                EventKind::Removed => "ObjectRemoved:Delete",
            };
            serde_json::json!({"eventName": name, "eventTime": e.time.map(|t| t.to_rfc3339()),
                "s3": {"bucket": {"name": e.bucket}, "object": {"key": encode_key(&e.key), "eTag": e.etag}}})
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}

/// Encodes a key as `quote_plus` does (what [`decode_key`] reads).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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
    fn bodies_written_for_the_journal_read_back_as_the_same_events() {
        let body = r#"{"Records": [{"eventTime": "2026-11-29T04:30:15.142Z", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "probe"}, "object": {"key": "a+b%2Bc%2Fcaf%C3%A9%25.jpg", "eTag": "e1"}}},
            {"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": "y.png"}}}]}"#;
        let Parsed::Events { events, .. } = parse(body).unwrap() else { panic!("events") };
        let Parsed::Events { events: again, unreadable } = parse(&to_body(&events)).unwrap() else { panic!() };
        assert_eq!(again, events);
        assert!(unreadable.is_empty());
        assert_eq!(again[0].key, "a b+c/café%.jpg");
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
        let Parsed::Events { events: e, unreadable } = parse(body).unwrap() else { panic!("events") };
        assert!(unreadable.is_empty(), "{unreadable:?}");
        assert_eq!(e.len(), 2, "restores are not acted on");
        assert_eq!(e[0].key, "a b+c/x.jpg");
        assert_eq!(e[0].kind, EventKind::Created);
        assert_eq!(e[0].etag.as_deref(), Some("49f68a5c8493ec2c0bf489821c21fc3b"));
        assert_eq!(e[0].time.unwrap().timestamp_millis() % 1000, 142);
        assert_eq!((e[1].kind, e[1].bucket.as_str(), e[1].etag.as_ref()), (EventKind::Removed, "probe", None));
        // MinIO's names carry the s3: prefix.
        let minio =
            r#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"p.jpg","eTag":"\"e\""}}}]}"#;
        let Parsed::Events { events: e, .. } = parse(minio).unwrap() else { panic!("events") };
        assert_eq!((e[0].kind, e[0].etag.as_deref()), (EventKind::Created, Some("e")));
    }

    #[test]
    fn test_events_and_strangers() {
        let test = r#"{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "probe"}"#;
        assert_eq!(parse(test).unwrap(), Parsed::Test);
        assert!(parse("{}").unwrap_err().to_string().contains("no Records"));
        assert!(parse("not json").is_err());
    }

    #[test]
    fn an_unreadable_record_beside_a_good_one_leaves_the_good_one_readable() {
        // Today's main refused the whole body for one bad record, the good one with it.
        let body = r#"{"Records": [
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "bad%2"}}},
            {"eventName": "ObjectCreated:Put", "s3": {"object": {}}},
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "good.jpg"}}},
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "nul%00.jpg"}}}]}"#;
        let Parsed::Events { events, unreadable } = parse(body).unwrap() else { panic!("events") };
        let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["good.jpg", "nul\0.jpg"], "a NUL decodes: the storage layer refuses it");
        assert_eq!(unreadable.len(), 2, "{unreadable:?}");
        assert!(unreadable[0].0.starts_with("record 0: ") && unreadable[0].0.contains("bad %-escape"));
        assert!(unreadable[1].0.starts_with("record 1: ") && unreadable[1].0.contains("key"), "{}", unreadable[1]);
    }
}
