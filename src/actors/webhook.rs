//! WebhookSender: announces finished runs to `webhook.url` with the Go server's
//! `batch.completed` payload, signed, and keeps retrying what could not be delivered.
//!
//! Each delivery is a JSON body POSTed with `X-Webhook-Event`, `X-Webhook-Delivery` and,
//! when `webhook.secret` is set, `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the
//! body>`. A failed delivery is written (atomically) to `webhook.pending_dir` and retried
//! every `webhook.retry_interval_minutes`; after `webhook.max_retries` retries it moves to
//! `pending_dir/dead/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::state_keeper::RunFinished;
use crate::config::WebhookConfig;
use crate::naming;
use crate::secret::Secret;

/// One notification, as stored while it waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub attempts: u32,
    pub payload: serde_json::Value,
}

impl Delivery {
    pub fn new(payload: serde_json::Value) -> Self {
        let id = format!("{}-{:08x}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"), rand_u32());
        Self { id, attempts: 0, payload }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish() as u32
}

/// Deliver now (the API's `POST /api/webhook/send`); on failure it is queued for retry.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SendNow {
    pub delivery: Delivery,
}

/// Retry the pending deliveries now (also fired by the timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetryPending;

/// The actor.
pub struct WebhookSender {
    url: String,
    secret: Secret,
    bucket: String,
    config: WebhookConfig,
    client: reqwest::Client,
    retrying: bool,
}

impl WebhookSender {
    /// `None` when no `webhook.url` is configured.
    pub fn new(config: &WebhookConfig, bucket: &str) -> Option<Self> {
        let url = config.url.clone()?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok()?;
        Some(Self {
            url,
            secret: config.secret.clone(),
            bucket: bucket.to_owned(),
            config: config.clone(),
            client,
            retrying: false,
        })
    }

    fn pending_dir(&self) -> &Path {
        &self.config.pending_dir
    }
}

/// HMAC-SHA256 of `body` with `secret`, hex.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn post(client: reqwest::Client, url: String, secret: Secret, d: &Delivery) -> Result<(), String> {
    let body = serde_json::to_vec(&d.payload).expect("payload serialises");
    let event = d.payload["event"].as_str().unwrap_or("batch.completed").to_owned();
    let mut req = client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-Webhook-Event", event)
        .header("X-Webhook-Delivery", &d.id);
    if !secret.is_empty() {
        req = req.header("X-Webhook-Signature", format!("sha256={}", signature(secret.expose(), &body)));
    }
    match req.body(body).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("webhook answered HTTP {}", r.status())),
        Err(e) => Err(format!("webhook unreachable: {}", e.without_url())),
    }
}

/// Writes `d` into `dir` atomically (temp file + rename).
fn store(dir: &Path, d: &Delivery) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", d.id));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &serde_json::to_vec_pretty(d).expect("serialises"))?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

impl WebhookSender {
    /// Records a failed attempt: back to pending, or to the dead letters.
    fn failed(pending: &Path, max_retries: u32, mut d: Delivery, error: &str) {
        d.attempts += 1;
        let old = pending.join(format!("{}.json", d.id));
        let dest = if d.attempts > max_retries { pending.join("dead") } else { pending.to_owned() };
        match store(&dest, &d) {
            Ok(_) if dest != pending => {
                let _ = std::fs::remove_file(&old);
                tracing::error!(delivery = %d.id, attempts = d.attempts, error, "Webhook delivery given up; moved to dead letters");
            }
            Ok(_) => {
                tracing::warn!(delivery = %d.id, attempts = d.attempts, error, "Webhook delivery failed; will retry")
            }
            Err(e) => tracing::error!(delivery = %d.id, error = %e, "Cannot store a failed webhook delivery"),
        }
    }

    fn deliver(&self, d: Delivery, ctx: &mut Context<Self>) {
        let (client, url, secret) = (self.client.clone(), self.url.clone(), self.secret.clone());
        let (pending, max) = (self.pending_dir().to_owned(), self.config.max_retries);
        let retry = self.config.retry_enabled;
        ctx.spawn(
            async move {
                if let Err(e) = post(client, url, secret, &d).await {
                    if retry {
                        Self::failed(&pending, max, d, &e)
                    } else {
                        tracing::error!(error = %e, "Webhook delivery failed")
                    }
                } else {
                    tracing::info!(delivery = %d.id, "Webhook delivered");
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for WebhookSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.config.retry_enabled {
            ctx.run_interval(self.config.retry_interval, |_, ctx| ctx.notify(RetryPending));
        }
    }
}

impl Handler<RunFinished> for WebhookSender {
    type Result = ();

    fn handle(&mut self, msg: RunFinished, ctx: &mut Context<Self>) {
        let images: Vec<serde_json::Value> = msg
            .images
            .iter()
            .map(|(s, d)| json!({"source": naming::address(&self.bucket, s), "destination": naming::address(&self.bucket, d)}))
            .collect();
        let payload = json!({
            "event": "batch.completed",
            "processed_count": msg.summary.counts.converted,
            "failed_count": msg.summary.counts.failed,
            "images": images,
            "run_id": msg.summary.run_id,
            "complete": msg.summary.complete,
            "timestamp": msg.summary.finished_at.to_rfc3339(),
        });
        self.deliver(Delivery::new(payload), ctx);
    }
}

impl Handler<SendNow> for WebhookSender {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: SendNow, _: &mut Context<Self>) -> Self::Result {
        let (client, url, secret) = (self.client.clone(), self.url.clone(), self.secret.clone());
        let (pending, max) = (self.pending_dir().to_owned(), self.config.max_retries);
        let retry = self.config.retry_enabled;
        Box::pin(async move {
            let d = msg.delivery;
            let r = post(client, url, secret, &d).await;
            if let Err(e) = &r
                && retry
            {
                Self::failed(&pending, max, d, e);
            }
            r
        })
    }
}

impl Handler<RetryPending> for WebhookSender {
    type Result = ();

    fn handle(&mut self, _: RetryPending, ctx: &mut Context<Self>) {
        if self.retrying {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.pending_dir()) else { return };
        let mut waiting: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        waiting.sort();
        if waiting.is_empty() {
            return;
        }
        self.retrying = true;
        let (client, url, secret) = (self.client.clone(), self.url.clone(), self.secret.clone());
        let (pending, max) = (self.pending_dir().to_owned(), self.config.max_retries);
        ctx.spawn(
            async move {
                for path in waiting {
                    let Ok(d) = std::fs::read(&path)
                        .map_err(|_| ())
                        .and_then(|b| serde_json::from_slice::<Delivery>(&b).map_err(|_| ()))
                    else {
                        tracing::warn!(path = %path.display(), "Unreadable pending webhook; left in place");
                        continue;
                    };
                    match post(client.clone(), url.clone(), secret.clone(), &d).await {
                        Ok(()) => {
                            let _ = std::fs::remove_file(&path);
                            tracing::info!(delivery = %d.id, attempts = d.attempts + 1, "Webhook delivered on retry");
                        }
                        Err(e) => Self::failed(&pending, max, d, &e),
                    }
                }
            }
            .into_actor(self)
            .map(|_, act, _| act.retrying = false),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
