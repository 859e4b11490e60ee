//! The integration tests, as one test executable: each file below is a module.
//!
//! One executable instead of one per file: the test build links the daemon's
//! dependencies once, not 16 times, which was most of the test command's
//! build time. Run one file's tests with a filter, e.g.
//! `cargo test --test integration cluster::`. Tests that need the S3 test server
//! start with `need_s3!()`: without `ICS_TEST_S3_ENDPOINT` they return at once and
//! one line says how to run them (`bash scripts/test.sh`).

#[macro_use]
mod common;

mod api;
mod buckets;
mod cgroup;
mod cli;
mod cluster;
mod crash;
mod events;
mod faults;
mod go_api;
mod go_compat;
mod hostile;
mod listing;
mod load;
mod memory;
mod packaging;
mod pipeline;
mod s3;
mod scale;
mod webhooks;
