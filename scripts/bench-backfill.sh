#!/usr/bin/env bash
# Backfill throughput through the queue (issue 25, item 1), printed, never asserted:
#
#   bash scripts/bench-backfill.sh [CORPUS_DIR]       # default testdata/images
#   ROUNDS=3 COPIES=2 PROFILE=release bash scripts/bench-backfill.sh /path/to/corpus
#
# The same objects (every JPEG, PNG and GIF of CORPUS_DIR, COPIES times; default 1) in a
# fresh bucket of the S3 test server for each of: (a) one `run-once`; (b) `backfill
# --to-queue` into moto's SQS with one `serve` consumer, until the queue is empty; (c) the
# same with two consumers. ROUNDS rounds (default 3), the order rotating; prints each
# run, the medians in images/s and the ratios. Starts the S3 test server (moto with SQS,
# scripts/s3-server.sh) unless ICS_TEST_S3_ENDPOINT names a running one; builds the
# binary (BIN overrides it; PROFILE=release for a release build, default the dev
# profile whose dependencies are optimised).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="${1:-$ROOT/testdata/images}"
ROUNDS="${ROUNDS:-3}"
COPIES="${COPIES:-1}"
PROFILE="${PROFILE:-dev}"
[ -d "$CORPUS" ] || { echo "no such directory: $CORPUS" >&2; exit 64; }
export ICS_S3_VENV="${ICS_S3_VENV:-$ROOT/target/s3-venv}"
if [ -z "${BIN:-}" ]; then
    (cd "$ROOT" && cargo build --profile "$PROFILE" --bin image-converting-server >&2)
    dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
    BIN="$ROOT/target/$dir/image-converting-server"
fi
BIN="$(realpath "$BIN")"
source "$ROOT/scripts/bench-s3.sh" backfill
echo "ics backfill benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(cd "$ROOT" && git rev-parse --short HEAD)"
echo "machine: $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg); binary: $BIN"
"$PY" "$ROOT/scripts/bench_backfill.py" "$BIN" "$ICS_TEST_S3_ENDPOINT" "$CORPUS" "$ROUNDS" "$COPIES"
