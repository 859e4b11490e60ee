//! Bucket event notifications: conversion within seconds of an upload, with the cron run
//! kept as the safety net for anything an event missed.
//!
//! ```text
//!  SQS queue ─────────▶ sqs::consume ────────┐                  event's bucket
//!  Cloudflare Queue ──▶ cloudflare::consume ──┼─▶ route::Router ───────────────▶ handle::Handler (one per bucket)
//!  POST /api/events ──▶ journal ─▶ replay ────┘
//!
//!  handle::Handler ──HEAD, request::decide (one LIST)──GET──▶ request::convert_bytes
//!  (stale? changed meanwhile?)                                 (Converter pool, memory
//!                                                               budget, Uploader: the
//!                                                               one path of every image)
//! ```
//!
//! One source of each kind serves every configured bucket (`r2.buckets`): the router
//! sends each event to the handler of the bucket it names — that bucket's storage,
//! Uploader and metrics — and ignores (and deletes) those of buckets not configured.
//!
//! - [`record`]: S3 event records (AWS, MinIO, moto) read into [`record::ObjectEvent`]s.
//! - [`route`]: each event to its bucket's handler.
//! - [`handle`]: what one event does: a candidate for the one per-image path
//!   ([`crate::request`]: decide, convert, finish, write), with what only an event needs
//!   (a stale event, a source changed while converted, the ledger told, a key lock).
//! - [`sqs`] and [`sigv4`]: the SQS consumer and its request signing.
//! - [`cloudflare`]: the Cloudflare Queues pull consumer (R2 event notifications).
//! - [`journal`]: the `webhook` source's durable journal (`POST /api/events`) and its replay.
//! - [`status`]: per-source counters for `/api/status`.
//! - [`summary`]: the `events.completed` webhook, at most one every `events.webhook_every_seconds`.
//!
//! `serve` starts the configured sources ([`Events::start`]) next to the scheduler and
//! stops them before the pipeline ([`Events::stop`]).

pub mod cloudflare;
pub mod handle;
pub mod journal;
pub mod poll;
pub mod record;
pub mod route;
pub mod sigv4;
pub mod sqs;
pub mod status;
pub mod summary;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::lanes::Lane;
use crate::metrics::Metrics;

pub use status::EventsStatus;

/// What the HTTP API needs of the event sources: their status, and the webhook
/// source's journal when it is on.
#[derive(Clone, Debug)]
pub struct EventsApi {
    pub status: Arc<EventsStatus>,
    pub journal: Option<Arc<journal::Journal>>,
}

/// The running event sources.
pub struct Events {
    pub api: EventsApi,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Events {
    /// Starts every source `events:` configures (none: nothing runs, status stays empty),
    /// each handing its events to the bucket they name among `lanes` (the primary first;
    /// `metrics` the registry, recorded under each bucket's label).
    pub fn start(
        lanes: &[Lane],
        metrics: &Metrics,
        webhook: Option<actix::Addr<crate::actors::webhook::WebhookSender>>,
    ) -> Result<Self, String> {
        let status = Arc::new(EventsStatus::default());
        let (stop, stopped) = watch::channel(false);
        let handlers = lanes
            .iter()
            .map(|lane| {
                handle::Handler::new(
                    lane.config.clone(),
                    lane.storage.clone(),
                    &lane.pipeline,
                    Arc::new(metrics.for_bucket(&lane.bucket)),
                )
            })
            .collect();
        let router = route::Router::new(handlers);
        let config = router.primary().config.clone();
        let mut tasks = Vec::new();
        let any = config.events.any();
        if let (Some(webhook), true) = (webhook, any) {
            // Each bucket's summary, as each bucket's runs send their own batch.completed.
            for handler in router.handlers() {
                tasks.push(actix::spawn(summary::announce(
                    handler.summary.clone(),
                    webhook.clone(),
                    handler.storage.bucket().to_owned(),
                    config.events.webhook_every,
                    stopped.clone(),
                )));
            }
        }
        let mut journal = None;
        if config.events.webhook_enabled {
            let j = Arc::new(journal::Journal::open(&config.state.dir.join("events")).map_err(|e| e.to_string())?);
            tasks.push(actix::spawn(journal::replay(
                j.clone(),
                router.clone(),
                status.source("webhook"),
                stopped.clone(),
            )));
            journal = Some(j);
        }
        if let Some(cf) = &config.events.cloudflare_queue {
            let client = Arc::new(cloudflare::QueueClient::new(cf.clone())?);
            let source = status.source("cloudflare_queue");
            tasks.push(actix::spawn(cloudflare::consume(client, router.clone(), source, stopped.clone())));
        }
        if let Some(sqs) = &config.events.sqs {
            let client = Arc::new(sqs::SqsClient::new(sqs.clone())?);
            let source = status.source("sqs");
            tasks.push(actix::spawn(sqs::consume(
                client,
                router.clone(),
                source,
                config.events.max_receives,
                stopped.clone(),
            )));
        }
        Ok(Self { api: EventsApi { status, journal }, stop, tasks })
    }

    /// Stops receiving, and waits up to `timeout` for the events in hand to finish.
    pub async fn stop(self, timeout: Duration) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("Event sources did not stop in time: their messages come back after the visibility timeout");
        }
    }
}
