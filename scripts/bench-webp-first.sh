#!/usr/bin/env bash
# Time until the bucket is WebP-complete with AVIF outputs on, as a ratio of the time
# with them off (issue 24's "WebP first"): scripts/bench_webp_first.py over COUNT JPEGs
# of CORPUS_DIR, ROUNDS alternating rounds, the release build (PROFILE=dev: the test
# build). Printed, never asserted.
#   bash scripts/bench-webp-first.sh CORPUS_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="${1:?usage: bash scripts/bench-webp-first.sh CORPUS_DIR}"
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build --release --quiet
    bin=target/release/image-converting-server
else
    cargo build --quiet
    bin=target/debug/image-converting-server
fi
python3 scripts/bench_webp_first.py "$bin" "$corpus" "${ROUNDS:-2}" "${COUNT:-8}"
