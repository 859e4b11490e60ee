#!/usr/bin/env bash
# Benchmark of the conversion core against cwebp (benches/core.rs):
#   bash scripts/bench-core.sh [FILE|DIR...]
# Installs Debian's `webp` package (which provides cwebp) when cwebp is missing,
# then runs `cargo bench --bench core -- "$@"` (release-optimised bench profile) and
# tees everything it prints to target/bench-core.txt. Settings come from the
# environment: ICS_BENCH_DIR, ICS_BENCH_LIMIT, ICS_BENCH_ROUNDS, ICS_BENCH_QUALITY,
# ICS_BENCH_METHOD, ICS_BENCH_CWEBP (see the doc comment at the top of benches/core.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cwebp >/dev/null 2>&1 && [ -z "${ICS_BENCH_CWEBP:-}" ]; then
    echo "==> cwebp not found: installing Debian's webp package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq webp >/dev/null
fi

mkdir -p target
echo "==> cargo bench --bench core -- $* (log: target/bench-core.txt)" >&2
cargo bench --bench core -- "$@" 2>&1 | tee target/bench-core.txt
