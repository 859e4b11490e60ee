//! The integration tests, as one test executable: each file below is a module.
//!
//! One executable instead of one per file: the test build links the daemon's
//! dependencies once, not 16 times, which was most of the test command's
//! build time. Run one file's tests with a filter, e.g.
//! `cargo test --test integration cluster::`. Tests that need the S3 test server are
//! `#[ignore]`d with that reason (a plain `cargo test` reports them ignored) and start
//! with `need_s3!()`; `bash scripts/test.sh` starts the server and runs them too.

#[macro_use]
mod common;

mod api;
mod backfill;
mod buckets;
mod cgroup;
mod cli;
mod cluster;
mod conformance;
mod crash;
mod events;
mod faults;
mod go_api;
mod go_compat;
mod hostile;
mod keys;
mod kubernetes;
mod listing;
mod load;
mod memory;
mod outputs;
mod packaging;
mod pipeline;
mod s3;
mod scale;
mod selfharm;
mod shards;
mod webhooks;
