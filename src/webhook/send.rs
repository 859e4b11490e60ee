//! One delivery attempt: the JSON body POSTed to `webhook.url`, signed, redirects refused.
//!
//! Headers: `Content-Type: application/json`, `X-Webhook-Event` (the payload's
//! `event`), `X-Webhook-Delivery` (the delivery's id, the same on every attempt) and,
//! when `webhook.secret` is set, `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the
//! body>`. Only a 2xx answer delivers. A redirect is a failed delivery: following it
//! would re-send the signed body to an address nobody configured (the Go server follows
//! up to ten, keeping the POST; see MIGRATING.md).

use std::time::Duration;

use crate::secret::Secret;

/// How long one attempt may take (the Go server's `SendTimeout`).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    #[error(
        "webhook answered HTTP {status}, a redirect to {location}; webhook redirects are not followed (set webhook.url to the final address)"
    )]
    Redirect { status: u16, location: String },
    #[error("webhook unreachable: {0}")]
    Unreachable(String),
    #[error("webhook request could not be made: {0}")]
    Request(String),
}

/// HMAC-SHA256 of `body` with `secret`, hex.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where deliveries go and how they are signed.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    secret: Secret,
    client: reqwest::Client,
}

impl Target {
    pub fn new(url: &str, secret: Secret) -> Result<Self, DeliveryError> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DeliveryError::Request(e.to_string()))?;
        Ok(Self { url: url.to_owned(), secret, client })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One attempt to deliver `payload` as delivery `id` of `event`.
    pub async fn post(&self, id: &str, event: &str, payload: &serde_json::Value) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(payload).expect("a payload serialises");
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Webhook-Event", event)
            .header("X-Webhook-Delivery", id);
        if !self.secret.is_empty() {
            req = req.header("X-Webhook-Signature", format!("sha256={}", signature(self.secret.expose(), &body)));
        }
        let resp = req.body(body).send().await.map_err(|e| {
            if e.is_builder() {
                DeliveryError::Request(e.without_url().to_string())
            } else {
                DeliveryError::Unreachable(e.without_url().to_string())
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or("");
            Err(DeliveryError::Redirect { status: status.as_u16(), location: without_query(location) })
        } else {
            Err(DeliveryError::Status(status.as_u16()))
        }
    }
}

/// A redirect target as it may be logged: no query or fragment (they may hold tokens).
fn without_query(location: &str) -> String {
    if location.is_empty() {
        return "an empty location".into();
    }
    let end = location.find(['?', '#']).unwrap_or(location.len());
    let shown: String = location[..end].chars().filter(|c| !c.is_control()).take(200).collect();
    format!("{shown:?}")
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

    #[test]
    fn a_logged_redirect_target_loses_its_query() {
        assert_eq!(super::without_query("http://[::1]/admin?token=s3cret#x"), "\"http://[::1]/admin\"");
    }
}
