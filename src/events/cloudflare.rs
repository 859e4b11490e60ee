//! The `cloudflare_queue` event source: a Cloudflare Queues HTTP pull consumer reading R2
//! event notifications, each handled in the bucket it names (`bucket`) by the [`Router`]:
//! one queue can carry every configured bucket's notifications.
//!
//! `POST {api}/accounts/{account}/queues/{queue}/messages/pull` with `batch_size` and
//! `visibility_timeout_ms` leases a batch; each message is handled in its own task (up to
//! `events.concurrency` at once) and then acknowledged — `messages/ack` with `acks` (done)
//! or `retries` (a transient failure: the queue delivers it again, and after its
//! `max_retries` moves it to its dead-letter queue). A message that can never succeed (it
//! is not an R2 notification, its key is refused) is given up and acked at once: said
//! once, counted. Bearer-token authentication.
//!
//! An R2 notification message: `{"account", "bucket", "action": "PutObject" |
//! "CopyObject" | "CompleteMultipartUpload" | "DeleteObject" | "LifecycleDeletion",
//! "object": {"key", "size", "eTag"}, "eventTime"}`; the key is not URL-encoded.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::handle::Handled;
use super::poll::{Backoff, batch_permits};
use super::record::{EventKind, ObjectEvent, RecordError};
use super::route::Router;
use super::status::SourceStatus;
use crate::config::CloudflareQueueConfig;

/// An error answer of the Cloudflare API, or a failure to reach it.
#[derive(Debug, thiserror::Error)]
#[error("Cloudflare Queues {action}: {message}")]
pub struct QueueError {
    pub action: &'static str,
    pub message: String,
}

/// One leased message.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    pub lease_id: String,
    pub body: Value,
    pub attempts: u32,
    pub sent: DateTime<Utc>,
}

/// The pull and ack calls.
pub struct QueueClient {
    http: reqwest::Client,
    config: CloudflareQueueConfig,
}

impl QueueClient {
    pub fn new(config: CloudflareQueueConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot make the Cloudflare Queues client: {e}"))?;
        Ok(Self { http, config })
    }

    fn url(&self, what: &str) -> String {
        format!(
            "{}/accounts/{}/queues/{}/messages/{what}",
            self.config.api.trim_end_matches('/'),
            self.config.account_id,
            self.config.queue_id
        )
    }

    async fn call(&self, action: &'static str, body: Value) -> Result<Value, QueueError> {
        let err = |message: String| QueueError { action, message };
        let res = self
            .http
            .post(self.url(action))
            .bearer_auth(self.config.api_token.expose())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| err(format!("cannot reach {}: {}", self.config.api, e.without_url())))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| err(format!("reading the answer: {}", e.without_url())))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() || v["success"] == false {
            let errors = v["errors"].as_array().map(|e| {
                e.iter().map(|x| format!("{} {}", x["code"], x["message"].as_str().unwrap_or(""))).collect::<Vec<_>>()
            });
            let text = match errors {
                Some(e) if !e.is_empty() => e.join("; "),
                _ => String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            };
            return Err(err(format!("HTTP {}: {text}", status.as_u16())));
        }
        Ok(v)
    }

    /// Leases up to `max` messages.
    pub async fn pull(&self, max: usize) -> Result<Vec<Leased>, QueueError> {
        let v = self
            .call(
                "pull",
                json!({
                    "batch_size": max.clamp(1, 100),
                    "visibility_timeout_ms": self.config.visibility_timeout.as_millis() as u64,
                }),
            )
            .await?;
        // `result.messages`, as documented; `result` itself a list in the API's first shape.
        let Some(list) = v["result"]["messages"].as_array().or_else(|| v["result"].as_array()) else {
            return Ok(Vec::new());
        };
        Ok(list
            .iter()
            .filter_map(|m| {
                Some(Leased {
                    id: m["id"].as_str()?.to_owned(),
                    lease_id: m["lease_id"].as_str()?.to_owned(),
                    body: m["body"].clone(),
                    attempts: m["attempts"].as_u64().unwrap_or(1) as u32,
                    sent: m["timestamp_ms"]
                        .as_i64()
                        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                        .unwrap_or_else(Utc::now),
                })
            })
            .collect())
    }

    /// Acknowledges (`retry: false`) or hands back for another delivery (`retry: true`).
    pub async fn ack(&self, lease_id: &str, retry: bool) -> Result<(), QueueError> {
        let body = if retry {
            json!({"acks": [], "retries": [{"lease_id": lease_id, "delay_seconds": 5}]})
        } else {
            json!({"acks": [{"lease_id": lease_id}], "retries": []})
        };
        self.call("ack", body).await.map(|_| ())
    }
}

impl QueueClient {
    /// Sends `bodies` as one batch (`messages/batch`, up to 100 messages and 256 KB in
    /// all), each a JSON message. The API takes the batch whole or not at all.
    pub async fn send_batch(&self, bodies: &[Value]) -> Result<(), QueueError> {
        let messages: Vec<Value> = bodies.iter().map(|b| json!({"body": b, "content_type": "json"})).collect();
        self.call("batch", json!({ "messages": messages })).await.map(|_| ())
    }

    /// The queue, as `backfill --to-queue` names it: `<account>/<queue id>`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.config.account_id, self.config.queue_id)
    }
}

/// Reads one R2 event notification: the message body as an object, as JSON text, or as
/// JSON text base64-encoded (how the pull API may hand a `json` or `bytes` message).
pub fn parse(body: &Value) -> Result<Option<ObjectEvent>, RecordError> {
    let parsed;
    let body = match body {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s)
                .or_else(|e| from_base64(s).ok_or(e))
                .map_err(|e| RecordError(format!("R2 notification: neither JSON nor base64-encoded JSON: {e}")))?;
            &parsed
        }
        other => other,
    };
    let action = body["action"].as_str().ok_or_else(|| RecordError("R2 notification without `action`".into()))?;
    let kind = match action {
        "PutObject" | "CopyObject" | "CompleteMultipartUpload" => EventKind::Created,
        "DeleteObject" | "LifecycleDeletion" => EventKind::Removed,
        _ => return Ok(None),
    };
    let key =
        body["object"]["key"].as_str().ok_or_else(|| RecordError("R2 notification without `object.key`".into()))?;
    Ok(Some(ObjectEvent {
        kind,
        bucket: body["bucket"].as_str().unwrap_or_default().to_owned(),
        key: key.to_owned(),
        etag: body["object"]["eTag"].as_str().map(|e| e.trim_matches('"').to_owned()).filter(|e| !e.is_empty()),
        time: body["eventTime"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
    }))
}

/// `s` as base64 (standard alphabet, padded or not) of a JSON object.
fn from_base64(s: &str) -> Option<Value> {
    use base64::Engine;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(s.trim()).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok().filter(Value::is_object)
}

/// The consumer loop, until `stop`; then the messages in hand finish.
pub async fn consume(
    client: Arc<QueueClient>,
    router: Router,
    status: Arc<SourceStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let concurrency = router.primary().config.events.concurrency;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut backoff = Backoff::default();
    let idle = client.config.poll_interval;
    tracing::info!(queue = %client.config.queue_id, "Consuming R2 event notifications from a Cloudflare Queue");
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(mut permits) = batch_permits(&slots, client.config.batch_size, &mut stop).await else { break };
        let messages = match client.pull(permits.len()).await {
            Ok(m) => {
                backoff.succeeded(&status);
                m
            }
            Err(e) => {
                backoff.failed(&status, &e, "Cannot pull R2 event notifications", &mut stop).await;
                continue;
            }
        };
        if messages.is_empty() {
            // No long poll in this API: wait a little before asking again.
            drop(permits);
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for (m, permit) in messages.into_iter().zip(permits.drain(..)) {
            let (client, router, status) = (client.clone(), router.clone(), status.clone());
            actix::spawn(async move {
                handle_message(&client, &router, &status, m).await;
                drop(permit);
            });
        }
    }
    let _ = slots.acquire_many(concurrency as u32).await;
    tracing::info!("Stopped consuming R2 event notifications");
}

async fn handle_message(client: &QueueClient, router: &Router, status: &SourceStatus, m: Leased) {
    status.received(&m.id, m.sent);
    router.primary().metrics.event_received("cloudflare_queue");
    let retry = match parse(&m.body) {
        Ok(None) => None,
        Ok(Some(ev)) => match router.handle(&ev, status).await {
            Handled::Done(_) => None,
            Handled::Retry(e) => Some(format!("{}: {e}", ev.key)),
        },
        Err(e) => {
            // It can never succeed: given up (acked) at once, not handed back.
            router.unreadable(&RecordError(format!("message {}: {e}", m.id)), status);
            None
        }
    };
    if let Some(e) = &retry {
        tracing::warn!(message = %m.id, attempts = m.attempts, "R2 event handed back for another delivery: {e}");
        status.error(e.clone());
    }
    match client.ack(&m.lease_id, retry.is_some()).await {
        Ok(()) => status.finished(&m.id, retry.is_none()),
        Err(e) => {
            status.error(e.to_string());
            status.finished(&m.id, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_r2_notifications() {
        let put = json!({"account": "3f4b", "action": "PutObject", "bucket": "photos",
            "object": {"key": "a b/c+d.jpg", "size": 65536, "eTag": "c846ff7a"}, "eventTime": "2024-05-24T19:36:44.379Z"});
        let ev = parse(&put).unwrap().unwrap();
        assert_eq!((ev.kind, ev.key.as_str(), ev.bucket.as_str()), (EventKind::Created, "a b/c+d.jpg", "photos"));
        assert_eq!(ev.etag.as_deref(), Some("c846ff7a"));
        assert!(ev.time.is_some());
        // As JSON text too.
        let text = Value::String(put.to_string());
        assert_eq!(parse(&text).unwrap().unwrap(), ev);
        // And as base64 of the JSON text, padded or not.
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(put.to_string());
        assert_eq!(parse(&Value::String(encoded.clone())).unwrap().unwrap(), ev);
        assert_eq!(parse(&Value::String(encoded.trim_end_matches('=').to_owned())).unwrap().unwrap(), ev);
        let garbage = parse(&Value::String("not json, not base64!".into())).unwrap_err();
        assert!(garbage.0.contains("neither JSON nor base64"), "{}", garbage.0);
        let del = json!({"action": "DeleteObject", "bucket": "photos", "object": {"key": "x.png"}});
        assert_eq!(parse(&del).unwrap().unwrap().kind, EventKind::Removed);
        assert_eq!(parse(&json!({"action": "SomethingNew", "object": {"key": "x"}})).unwrap(), None);
        assert!(parse(&json!({"object": {"key": "x"}})).is_err());
        assert!(parse(&json!({"action": "PutObject"})).is_err());
    }
}
