//! image-converting-server keeps an S3-compatible bucket (Cloudflare R2, AWS S3, MinIO,
//! or a plain local directory) WebP-complete: it finds images that have no WebP yet,
//! converts them with libwebp and uploads the WebP beside the original.
//!
//! # Layout
//!
//! - [`config`]: the YAML file and environment, read in layers and validated once into
//!   a typed [`config::Config`]; credentials are [`secret::Secret`]s.
//! - [`storage`]: one small interface over `object_store` for the local directory,
//!   S3-compatible services and memory; untrusted keys are checked there.
//! - [`convert`]: the conversion core — sniff, decode, orient, resize, encode — as plain
//!   functions; [`convert::webp`] is the only place that touches libwebp.
//! - [`memory`]: admission by memory — what an image will take, reserved before it is
//!   downloaded and decoded; [`memory_limit`]: the memory the process may use (its
//!   cgroup's limit or physical memory), which the budget's default follows.
//! - [`lease`]: leases held in the bucket with conditional PUTs (for scale-out; not yet
//!   wired into the daemon).
//! - [`reason`]: why an image was not converted — one enum for the ledger, the metrics
//!   and the API (which answers with the Go server's wire codes).
//! - [`lanes`]: several buckets (`r2.buckets`) — one pipeline per bucket, sharing the
//!   converter pool and the memory budget.
//! - [`naming`]: which keys are candidates, where their WebP goes, `r2://` addresses.
//! - [`job`]: fetch → convert → upload for one object, the unit of work of the CLI, the
//!   API and the pipeline.
//! - [`webhook`]: `batch.completed` and manual sends to `webhook.url`, signed, with
//!   undelivered ones kept on disk in the Go server's format and retried.
//! - [`events`]: bucket event notifications (SQS) converted within seconds of an upload,
//!   through the same converter pool and uploader as runs.
//! - [`cli`] and [`logging`]: the binary's edges; [`health`]: the `health` subcommand,
//!   which asks a running daemon's `GET /ready`.

pub mod actors;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod events;
pub mod health;
pub mod job;
pub mod lanes;
pub mod lease;
pub mod logging;
pub mod memory;
pub mod memory_limit;
pub mod metrics;
pub mod model;
pub mod naming;
pub mod planner;
pub mod reason;
pub mod schedule;
pub mod scope;
pub mod secret;
pub mod state;
pub mod storage;
pub mod webhook;
