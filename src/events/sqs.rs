//! The `sqs` event source: long-polls an SQS queue that the buckets notify, and hands
//! each S3 event record to the [`Router`], which handles it in the bucket it names
//! (`s3.bucket.name`): one queue can carry every configured bucket's notifications.
//!
//! SQS's JSON protocol (`application/x-amz-json-1.0`, `X-Amz-Target: AmazonSQS.*`, what
//! the AWS SDKs speak today), signed with SigV4 by [`super::sigv4`]. Up to 10 messages a
//! receive, as many as there are free handling slots (`events.concurrency`); each is
//! handled in its own task, its visibility extended every half timeout while its images
//! convert, and deleted only once every record in it is done. A transient failure leaves
//! the message to come back after its visibility timeout; one received more than
//! `events.max_receives` times is left alone for the queue's dead-letter policy.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::handle::Handled;
use super::poll::{Backoff, batch_permits};
use super::record::{self, Parsed};
use super::route::Router;
use super::sigv4::{Request, Signer};
use super::status::SourceStatus;
use crate::config::SqsConfig;

/// An SQS error answer, or a failure to reach the queue.
#[derive(Debug, thiserror::Error)]
#[error("SQS {action}: {message}")]
pub struct SqsError {
    pub action: &'static str,
    pub message: String,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
    pub sent: DateTime<Utc>,
}

/// The few SQS calls the source makes.
pub struct SqsClient {
    http: reqwest::Client,
    config: SqsConfig,
    url: reqwest::Url,
    host: String,
}

impl SqsClient {
    pub fn new(config: SqsConfig) -> Result<Self, String> {
        let url = reqwest::Url::parse(&format!("{}/", config.endpoint.trim_end_matches('/')))
            .map_err(|e| format!("events.sqs.endpoint {}: {e}", config.endpoint))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(format!("events.sqs.endpoint {} has no host", config.endpoint)),
        };
        let http = reqwest::Client::builder()
            .timeout(config.wait + Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot make the SQS client: {e}"))?;
        Ok(Self { http, config, url, host })
    }

    async fn call(&self, action: &'static str, mut body: Value) -> Result<Value, SqsError> {
        body["QueueUrl"] = json!(self.config.queue_url);
        let body = serde_json::to_vec(&body).expect("JSON serialises");
        let target = format!("AmazonSQS.{action}");
        let signer = Signer {
            access_key: self.config.access_key.expose(),
            secret_key: self.config.secret_key.expose(),
            region: &self.config.region,
            service: "sqs",
        };
        let content_type = "application/x-amz-json-1.0";
        let headers = [("content-type", content_type), ("x-amz-target", target.as_str())];
        let req = Request { method: "POST", host: &self.host, path: "/", query: "", headers: &headers, body: &body };
        let signed = signer.sign(&req, Utc::now());
        let err = |message: String| SqsError { action, message };
        let res = self
            .http
            .post(self.url.clone())
            .header("content-type", content_type)
            .header("x-amz-target", &target)
            .header("x-amz-date", signed.amz_date)
            .header("authorization", signed.authorization)
            .body(body)
            .send()
            .await
            .map_err(|e| err(format!("cannot reach {}: {}", self.config.endpoint, e.without_url())))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| err(format!("reading the answer: {}", e.without_url())))?;
        let value: Value =
            if bytes.is_empty() { json!({}) } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if !status.is_success() {
            let kind = value["__type"].as_str().unwrap_or("").rsplit('#').next().unwrap_or("").to_owned();
            let msg = value["message"].as_str().or(value["Message"].as_str()).unwrap_or("");
            let text = if kind.is_empty() && msg.is_empty() {
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
            } else {
                format!("{kind}: {msg}")
            };
            return Err(err(format!("HTTP {}: {text}", status.as_u16())));
        }
        if value.is_null() {
            return Err(err("the answer is not JSON".into()));
        }
        Ok(value)
    }

    /// Receives up to `max` messages, waiting up to `events.sqs.wait_seconds` for one.
    pub async fn receive(&self, max: usize) -> Result<Vec<Message>, SqsError> {
        let v = self
            .call(
                "ReceiveMessage",
                json!({
                    "MaxNumberOfMessages": max.clamp(1, 10),
                    "WaitTimeSeconds": self.config.wait.as_secs(),
                    "VisibilityTimeout": self.config.visibility_timeout.as_secs(),
                    "AttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
                    "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
                }),
            )
            .await?;
        let Some(list) = v["Messages"].as_array() else { return Ok(Vec::new()) };
        Ok(list
            .iter()
            .filter_map(|m| {
                let attr = |k: &str| m["Attributes"][k].as_str().and_then(|s| s.parse::<i64>().ok());
                Some(Message {
                    id: m["MessageId"].as_str()?.to_owned(),
                    receipt_handle: m["ReceiptHandle"].as_str()?.to_owned(),
                    body: m["Body"].as_str().unwrap_or_default().to_owned(),
                    receive_count: attr("ApproximateReceiveCount").unwrap_or(1) as u32,
                    sent: attr("SentTimestamp")
                        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                        .unwrap_or_else(Utc::now),
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt_handle: &str) -> Result<(), SqsError> {
        self.call("DeleteMessage", json!({"ReceiptHandle": receipt_handle})).await.map(|_| ())
    }

    pub async fn change_visibility(&self, receipt_handle: &str, timeout: Duration) -> Result<(), SqsError> {
        self.call(
            "ChangeMessageVisibility",
            json!({"ReceiptHandle": receipt_handle, "VisibilityTimeout": timeout.as_secs()}),
        )
        .await
        .map(|_| ())
    }
}

/// The consumer loop: runs until `stop` says so, then lets the messages in hand finish.
pub async fn consume(
    client: Arc<SqsClient>,
    router: Router,
    status: Arc<SourceStatus>,
    max_receives: u32,
    mut stop: watch::Receiver<bool>,
) {
    let concurrency = router.primary().config.events.concurrency;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut backoff = Backoff::default();
    tracing::info!(queue = %client.config.queue_url, region = %client.config.region, "Consuming bucket events from SQS");
    loop {
        if *stop.borrow() {
            break;
        }
        // At least one free slot, then as many more as are free (at most 10 a receive).
        let Some(mut permits) = batch_permits(&slots, 10, &mut stop).await else { break };
        let messages = match client.receive(permits.len()).await {
            Ok(m) => {
                backoff.succeeded(&status);
                m
            }
            Err(e) => {
                backoff.failed(&status, &e, "Cannot receive bucket events", &mut stop).await;
                continue;
            }
        };
        if *stop.borrow() {
            // Stopping: give them back at once instead of after their timeout.
            for m in &messages {
                let _ = client.change_visibility(&m.receipt_handle, Duration::ZERO).await;
            }
            break;
        }
        for (m, permit) in messages.into_iter().zip(permits.drain(..)) {
            let (client, router, status) = (client.clone(), router.clone(), status.clone());
            actix::spawn(async move {
                handle_message(&client, &router, &status, max_receives, m).await;
                drop(permit);
            });
        }
    }
    // Wait for the messages in hand (their images finish, their messages are deleted).
    let _ = slots.acquire_many(concurrency as u32).await;
    tracing::info!("Stopped consuming bucket events from SQS");
}

async fn handle_message(client: &SqsClient, router: &Router, status: &SourceStatus, max_receives: u32, m: Message) {
    status.received(&m.id, m.sent);
    router.primary().metrics.event_received("sqs");
    if m.receive_count > max_receives {
        let e = format!(
            "message {} was received {} times (events.max_receives {max_receives}): left for the queue's dead-letter policy",
            m.id, m.receive_count
        );
        tracing::warn!("{e}");
        status.error(e);
        status.finished(&m.id, false);
        return;
    }
    let events = match record::parse(&m.body) {
        Ok(Parsed::Test) => Vec::new(),
        Ok(Parsed::Events(e)) => e,
        Err(e) => {
            let e = format!("message {}: {e}", m.id);
            tracing::warn!("{e}");
            status.error(e);
            status.finished(&m.id, false);
            return;
        }
    };
    // Keeps the message invisible while its images convert.
    let visibility = client.config.visibility_timeout;
    let mut retry = None;
    {
        let work = async {
            for ev in &events {
                if let Handled::Retry(e) = router.handle(ev, status).await {
                    retry = Some(format!("{}: {e}", ev.key));
                    break;
                }
            }
        };
        let keep_invisible = async {
            loop {
                tokio::time::sleep(visibility / 2).await;
                if let Err(e) = client.change_visibility(&m.receipt_handle, visibility).await {
                    tracing::warn!(error = %e, "Cannot extend a message's visibility");
                }
            }
        };
        tokio::select! {
            _ = work => {}
            _ = keep_invisible => {}
        }
    }
    if let Some(e) = retry {
        tracing::warn!(message = %m.id, "Bucket event left for a later delivery: {e}");
        status.error(e);
        status.finished(&m.id, false);
        return;
    }
    match client.delete(&m.receipt_handle).await {
        Ok(()) => status.finished(&m.id, true),
        Err(e) => {
            status.error(e.to_string());
            status.finished(&m.id, false);
        }
    }
}
