//! image-converting-server keeps an S3-compatible bucket (Cloudflare R2, AWS S3, MinIO,
//! or a plain local directory) WebP-complete: it finds images that have no WebP yet,
//! converts them with libwebp and uploads the WebP beside the original.
//!
//! # Layout
//!
//! The flow: four entry points — a run's listing, a bucket event, the HTTP API and the
//! CLI's `convert` — each decide an image by the same rules, convert it in one converter
//! pool under one memory budget and write it by the bucket's rule; runs and events record
//! it in the bucket's ledger, which the API and the CLI consult (`ARCHITECTURE.md` draws
//! the graph).
//!
//! Entry points and assembly:
//! - [`cli`] and [`logging`]: the binary's edges; only [`cli`] prints and picks exit
//!   codes (`cli::report` turns the daemon's typed reports into text, JSON, a spinner).
//! - [`daemon`]: `serve` (on a handed listener, until a shutdown future), `run_once`,
//!   `dry_run` and `convert`; it prints nothing.
//! - [`lanes`]: several buckets (`r2.buckets`) — one pipeline per bucket, sharing the
//!   converter pool and the memory budget; where each bucket's [`mode`] is chosen.
//! - [`api`]: the HTTP API (actix-web), every route in `api::configure`.
//! - [`events`]: bucket event notifications (SQS, Cloudflare Queues, MinIO webhooks)
//!   converted within seconds of an upload.
//! - [`health`]: the `health` subcommand, which asks a running daemon's `GET /ready`.
//!
//! The pipeline and its seams:
//! - [`actors`]: Scheduler, Lister, Converter pool, Uploader, StateKeeper and the
//!   WebhookSender, one module each; [`model`]: the payloads they share.
//! - [`mode`]: alone or shared — the state store and run scope before the actors run
//!   ([`mode::Backend`]), how runs begin and end once they do ([`mode::Mode`]).
//! - [`cluster`]: the shared mode (`state.backend: bucket`) — the bucket's objects and
//!   shards; [`cluster::lease`]: leases held with conditional PUTs;
//!   [`cluster::coordinator`]: the loop that holds a fair share of them and runs owed
//!   shards; [`cluster::plan`]: membership planning as plain functions;
//!   [`cluster::Shared`]: its side of the [`mode`] seam.
//! - [`scope`]: where a run may act ([`scope::RunScope`]): every key alone, the shards
//!   held at the run's epoch when shared.
//! - [`state`]: the state file, the ledger and the run lock.
//! - [`schedule`]: the cron schedule (robfig/cron's syntax) in its time zone.
//! - [`metrics`]: the counters behind `/metrics`.
//! - [`backfill`]: `backfill --to-queue` — a message per due source into the queue `serve`
//!   consumes, with a cursor and a rate limit, for many consumers to share a backlog.
//! - [`webhook`]: `batch.completed` and manual sends to `webhook.url`, signed, with
//!   undelivered ones kept on disk in the Go server's format and retried.
//!
//! One image:
//! - [`run_book`]: a run's bookkeeping as a plain state machine (queue, cursor, counts,
//!   checkpoints, summary), held by the StateKeeper.
//! - [`planner`]: what a listing says needs converting, with no request per object.
//! - [`request`]: one object on request — the API's `/api/convert` and the CLI's
//!   `convert` — decided, converted, kept when larger, named and written as runs do.
//! - [`job`]: the per-image rules every path shares: the checks and the one LIST of a
//!   key's stem, fetch, the write rule.
//! - [`naming`]: which keys are candidates, where their WebP goes (a resize has a name of
//!   its own), `r2://` addresses.
//! - [`outputs`]: `conversion.outputs` — each source's outputs (WebP, AVIF, widths), their
//!   names (stem + a fixed suffix, so a listed key inverts to the outputs it could be) and
//!   ledger keys.
//! - [`reason`]: why an image was not converted — one enum for the ledger, the metrics
//!   and the API (which answers with the Go server's wire codes).
//! - [`convert`]: the conversion core — sniff, decode, orient, resize, encode — as plain
//!   functions; [`convert::webp`] is the only place that touches libwebp.
//! - [`memory`]: admission by memory — what an image will take, reserved before it is
//!   downloaded and decoded; [`memory_limit`]: the memory the process may use (its
//!   cgroup's limit or physical memory), which the budget's default follows.
//!
//! Below everything:
//! - [`storage`]: one small interface over `object_store` for the local directory,
//!   S3-compatible services and memory; untrusted keys are checked there.
//! - [`config`]: the YAML file and environment, read in layers and validated once into
//!   a typed [`config::Config`]; credentials are [`secret::Secret`]s ([`secret`]).
//!
//! `one_path_tests` (tests only) sends the same scenarios through a run, an event, the
//! API and the CLI and expects one decision and one reason from all four.

pub mod actors;
pub mod api;
pub mod backfill;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod daemon;
pub mod events;
pub mod health;
pub mod job;
pub mod lanes;
pub mod logging;
pub mod memory;
pub mod memory_limit;
pub mod metrics;
pub mod mode;
pub mod model;
pub mod naming;
pub mod outputs;
pub mod planner;
pub mod reason;
pub mod request;
pub mod run_book;
pub mod schedule;
pub mod scope;
pub mod secret;
pub mod state;
pub mod storage;
pub mod webhook;

#[cfg(test)]
mod one_path_tests;
#[cfg(test)]
mod test_rng;
