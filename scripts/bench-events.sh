#!/usr/bin/env bash
# Upload-to-WebP latency of event-driven conversion (issue 15), printed, never asserted:
#
#   bash scripts/bench-events.sh              # 200 uploads over 20 s
#   COUNT=50 SPREAD=5 bash scripts/bench-events.sh
#
# Starts the S3 test server (moto with SQS, scripts/s3-server.sh) unless ICS_TEST_S3_ENDPOINT
# names a running one, builds the binary (BIN overrides it; PROFILE=release for a release
# build, default the dev profile whose dependencies are optimised), makes a bucket that
# notifies an SQS queue, runs `serve` consuming it, uploads COUNT images from IMAGES
# (default testdata/images; JPEG/PNG under 2 MB) spread over SPREAD seconds, and prints p50/p95/max
# of the time from each upload to its WebP being listed (the bucket is listed every 50 ms).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COUNT="${COUNT:-200}"
SPREAD="${SPREAD:-20}"
IMAGES="${IMAGES:-$ROOT/testdata/images}"
PROFILE="${PROFILE:-dev}"
export ICS_S3_VENV="${ICS_S3_VENV:-$ROOT/target/s3-venv}"
if [ -z "${BIN:-}" ]; then
    (cd "$ROOT" && cargo build --profile "$PROFILE" --bin image-converting-server >&2)
    dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
    BIN="$ROOT/target/$dir/image-converting-server"
fi
source "$ROOT/scripts/bench-s3.sh" events
echo "cores: $(nproc); binary: $BIN"
"$PY" "$ROOT/scripts/bench_events.py" "$BIN" "$ICS_TEST_S3_ENDPOINT" "$COUNT" "$SPREAD" "$IMAGES"
