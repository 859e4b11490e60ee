//! The `sqs` event source: long-polls an SQS queue that the buckets notify, and hands
//! each S3 event record to the [`Router`], which handles it in the bucket it names
//! (`s3.bucket.name`): one queue can carry every configured bucket's notifications.
//!
//! SQS's JSON protocol (`application/x-amz-json-1.0`, `X-Amz-Target: AmazonSQS.*`, what
//! the AWS SDKs speak today), signed with SigV4 by [`super::sigv4`]. Up to 10 messages a
//! receive, as many as there are free handling slots (`events.concurrency`); each is
//! handled in its own task (its records side by side), its visibility extended every half
//! timeout while its images convert, and deleted only once every record in it is done —
//! converted, or given up when it can never succeed (a body or record that cannot be
//! read, a key the storage refuses: [`Router::handle_all`]). A transient failure leaves
//! the message to come back after its visibility timeout. One received more than
//! `events.max_receives` times is left to the queue's dead-letter policy when it has one
//! (`RedrivePolicy`, asked once at start); when it has none, nothing else would ever stop
//! it, so it is given up: its images' failures ledgered, said once at WARN, counted, and
//! the message deleted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, Semaphore, watch};

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

/// An entry of a `SendMessageBatch` that SQS did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The entry's id in the call.
    pub id: String,
    /// SQS says the entry itself is wrong (resending it cannot help).
    pub sender_fault: bool,
    /// Its code and message.
    pub reason: String,
}

/// The few SQS calls the source makes (and `backfill --to-queue`'s send).
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

    /// The queue's URL (not a secret: the credentials sign, the URL only names it).
    pub fn queue_url(&self) -> &str {
        &self.config.queue_url
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

    /// Whether the queue has a dead-letter policy (its `RedrivePolicy` attribute).
    pub async fn has_dead_letter_queue(&self) -> Result<bool, SqsError> {
        let v = self.call("GetQueueAttributes", json!({"AttributeNames": ["RedrivePolicy"]})).await?;
        Ok(v["Attributes"]["RedrivePolicy"].as_str().is_some_and(|p| !p.trim().is_empty()))
    }

    /// `SendMessageBatch`: up to 10 `(id, body)` entries (ids unique within the call, 256 KiB
    /// in all). SQS answers per entry: the ones it did not take come back as
    /// [`Rejected`], the rest were sent.
    pub async fn send_batch(&self, entries: &[(String, String)]) -> Result<Vec<Rejected>, SqsError> {
        let list: Vec<Value> = entries.iter().map(|(id, body)| json!({"Id": id, "MessageBody": body})).collect();
        let v = self.call("SendMessageBatch", json!({ "Entries": list })).await?;
        let failed = v["Failed"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(failed
            .iter()
            .map(|f| Rejected {
                id: f["Id"].as_str().unwrap_or_default().to_owned(),
                sender_fault: f["SenderFault"].as_bool().unwrap_or(false),
                reason: format!("{}: {}", f["Code"].as_str().unwrap_or("?"), f["Message"].as_str().unwrap_or("")),
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
    // Asked now, and again when a message needs the answer if this fails.
    let dead_letter = Arc::new(OnceCell::new());
    match dead_letter_policy(&client, &dead_letter).await {
        Ok(true) => {
            tracing::info!("The queue has a dead-letter policy: messages past events.max_receives are left to it")
        }
        Ok(false) => tracing::info!(
            max_receives,
            "The queue has no dead-letter policy: a message received more than events.max_receives times is given up \
             and deleted"
        ),
        Err(e) => tracing::warn!(error = %e, "Cannot read the queue's dead-letter policy; asked again when needed"),
    }
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
            let dead_letter = dead_letter.clone();
            actix::spawn(async move {
                let receives = Receives { max: max_receives, dead_letter: &dead_letter };
                handle_message(&client, &router, &status, receives, m).await;
                drop(permit);
            });
        }
    }
    // Wait for the messages in hand (their images finish, their messages are deleted).
    let _ = slots.acquire_many(concurrency as u32).await;
    tracing::info!("Stopped consuming bucket events from SQS");
}

/// Whether the queue has a dead-letter policy, asked once (again after a failure).
async fn dead_letter_policy(client: &SqsClient, known: &OnceCell<bool>) -> Result<bool, SqsError> {
    known.get_or_try_init(|| client.has_dead_letter_queue()).await.copied()
}

/// `events.max_receives`, and whether the queue has a dead-letter policy to leave to.
struct Receives<'a> {
    max: u32,
    dead_letter: &'a OnceCell<bool>,
}

async fn handle_message(
    client: &SqsClient,
    router: &Router,
    status: &SourceStatus,
    receives: Receives<'_>,
    m: Message,
) {
    status.received(&m.id, m.sent);
    router.primary().metrics.event_received("sqs");
    let (events, unreadable) = match record::parse(&m.body) {
        Ok(Parsed::Test) => (Vec::new(), Vec::new()),
        Ok(Parsed::Events { events, unreadable }) => (events, unreadable),
        Err(e) => {
            // The whole body can never succeed: given up at once, not left to come back.
            router.unreadable(&record::RecordError(format!("message {}: {e}", m.id)), status);
            return delete(client, status, &m).await;
        }
    };
    if m.receive_count > receives.max {
        let why =
            format!("message {} was received {} times (events.max_receives {})", m.id, m.receive_count, receives.max);
        match dead_letter_policy(client, receives.dead_letter).await {
            Ok(false) => {
                tracing::warn!(message = %m.id, records = events.len(), "Bucket event message given up: {why}, and the queue has no dead-letter policy");
                let errors = router.give_up_message(&events, &why, status).await;
                if let Some(e) = errors.first() {
                    status.error(format!("{why}: not ledgered, left to come back: {e}"));
                    status.finished(&m.id, false);
                    return;
                }
                status.error(format!("{why}: given up (no dead-letter policy)"));
                return delete(client, status, &m).await;
            }
            policy => {
                let left = match policy {
                    Ok(_) => "left for the queue's dead-letter policy".to_owned(),
                    Err(e) => format!("left alone: the queue's dead-letter policy is unknown ({e})"),
                };
                let e = format!("{why}: {left}");
                tracing::warn!("{e}");
                status.error(e);
                status.finished(&m.id, false);
                return;
            }
        }
    }
    // Keeps the message invisible while its images convert.
    let visibility = client.config.visibility_timeout;
    let mut retry = None;
    {
        let work = async {
            let errors = router.handle_all(&events, &unreadable, status).await;
            if let Some(e) = errors.first() {
                retry = Some(format!("{} of {} records left: {e}", errors.len(), events.len()));
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
    delete(client, status, &m).await;
}

/// Deletes a message that is done.
async fn delete(client: &SqsClient, status: &SourceStatus, m: &Message) {
    match client.delete(&m.receipt_handle).await {
        Ok(()) => status.finished(&m.id, true),
        Err(e) => {
            status.error(e.to_string());
            status.finished(&m.id, false);
        }
    }
}
