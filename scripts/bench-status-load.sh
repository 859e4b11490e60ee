#!/usr/bin/env bash
# The /api/status load benchmark (integration/load.rs): a batch of 480 photos (ICS_LOAD_BATCH) converted
# by `serve` on the local backend, unpolled and polled at 520 requests/s over 4
# keep-alive connections, alternately, ROUNDS times (default 5); prints each round and
# the medians: images/s both ways, their ratio, polls/s achieved and p99 latency.
#   bash scripts/bench-status-load.sh [ROUNDS]
# Release build; the pollers run on the same machine, so their CPU counts against the batch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ICS_LOAD_BATCH="${ICS_LOAD_BATCH:-480}" ICS_LOAD_ROUNDS="${1:-5}" cargo test --release --test integration load::status_polled -- --nocapture --test-threads=1 2>&1 |
    grep -E '^(round|status load)' | tee target/bench-status-load.txt
