//! WebhookSender: in `serve`, announces each finished run to `webhook.url` with the Go
//! server's `batch.completed` payload (one per bucket's run, naming its bucket), sends the API's manual sends, and retries the
//! pending deliveries — once at start (what an earlier process left) and every
//! `webhook.retry_interval_minutes`. The delivery itself is [`crate::webhook`]'s.
//!
//! [`RunListener`] is `run-once`'s stand-in: it hands the finished run to a channel, and
//! `run-once` delivers it and waits, so nothing is lost when the process exits.

use actix::prelude::*;
use tokio::sync::mpsc;

use super::state_keeper::RunFinished;
use crate::webhook::{DeliveryError, RetryReport, Webhook, payload};

/// Deliver a payload now (the API's `POST /api/webhook/send`); on failure it is queued
/// for retry (when `webhook.retry_enabled`) and the reason returned.
#[derive(Message)]
#[rtype(result = "Result<(), DeliveryError>")]
pub struct SendNow {
    pub payload: serde_json::Value,
}

/// Retry the pending deliveries now (also fired by the timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetryPending;

/// The actor.
pub struct WebhookSender {
    webhook: Webhook,
    retry_enabled: bool,
    retry_interval: std::time::Duration,
    retrying: bool,
}

impl WebhookSender {
    /// `Ok(None)` when no `webhook.url` is configured.
    pub fn new(config: &crate::config::WebhookConfig) -> Result<Option<Self>, DeliveryError> {
        Ok(Webhook::from_config(config)?.map(|webhook| Self {
            webhook,
            retry_enabled: config.retry_enabled,
            retry_interval: config.retry_interval,
            retrying: false,
        }))
    }
}

impl Actor for WebhookSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.retry_enabled {
            // As Go's retry worker: a first pass at once, then one per interval.
            ctx.notify(RetryPending);
            ctx.run_interval(self.retry_interval, |_, ctx| ctx.notify(RetryPending));
        }
    }
}

impl Handler<RunFinished> for WebhookSender {
    type Result = ();

    fn handle(&mut self, msg: RunFinished, ctx: &mut Context<Self>) {
        let body = payload::batch_completed(&msg.bucket, &msg.summary, &msg.images);
        let webhook = self.webhook.clone();
        ctx.spawn(
            async move {
                let _ = webhook.deliver(body).await;
            }
            .into_actor(self),
        );
    }
}

impl Handler<SendNow> for WebhookSender {
    type Result = ResponseFuture<Result<(), DeliveryError>>;

    fn handle(&mut self, msg: SendNow, _: &mut Context<Self>) -> Self::Result {
        let webhook = self.webhook.clone();
        Box::pin(async move { webhook.deliver(msg.payload).await })
    }
}

impl Handler<RetryPending> for WebhookSender {
    type Result = ();

    fn handle(&mut self, _: RetryPending, ctx: &mut Context<Self>) {
        if self.retrying {
            return;
        }
        self.retrying = true;
        let webhook = self.webhook.clone();
        ctx.spawn(
            async move { webhook.retry_pending().await }
                .into_actor(self)
                .map(|_: RetryReport, act, _| act.retrying = false),
        );
    }
}

/// Hands finished runs to a channel (`run-once` delivers them itself and waits).
pub struct RunListener(mpsc::UnboundedSender<RunFinished>);

impl RunListener {
    /// The listener (to give the pipeline) and the receiving end.
    pub fn channel() -> (Recipient<RunFinished>, mpsc::UnboundedReceiver<RunFinished>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (RunListener(tx).start().recipient(), rx)
    }
}

impl Actor for RunListener {
    type Context = Context<Self>;
}

impl Handler<RunFinished> for RunListener {
    type Result = ();

    fn handle(&mut self, msg: RunFinished, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}
