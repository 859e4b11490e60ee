#!/usr/bin/env bash
# The memory cost model against measured peaks (issue 23, item 3):
#   bash scripts/bench-memory.sh [CORPUS_DIR...]
# Builds examples/memory_peak (dev profile: dependencies, libwebp included, are built
# optimised), writes the worst cases a corpus lacks into target/memory-synthetic (JPEGs
# of seeded noise of 6, 16 and 24 MP, and of 6 MP at quality 50 and 100; the
# repository's photo upscaled to 24 and 31 MP; 4 MP truecolour PNGs of that photo with
# grain of ±0, 4, 16 and 64, and of RGB and RGBA noise; graphics of at most 256 colours,
# which libwebp encodes lossless by palette: noise of 256, 16 and 4 colours a block,
# stripes, a dithered gradient, flat blocks at 1, 4 and 16 MP, transparent ones, and
# the shapes of the most and fewest histogram tiles),
# then measures each file of those and of CORPUS_DIR in a process of its own: what the
# budget reserves for it against the peak RSS its conversion adds. Then the noise again
# under a 330 MB budget (what a 512 MiB container gets), where libwebp's low_memory is
# what lets it convert. Prints the tables and the lowest and highest reserved/peak
# ratio, and keeps them in target/bench-memory.txt. Exit status 1 when a reservation is
# under its peak. About five minutes of CPU (the corpus' 300 MP and the 16 MP graphics).
#
# ICS_BENCH_BASE_BIN=<an earlier build of the daemon> adds the A/B on this machine, no
# memory limit: `run-once` over CORPUS_DIR's JPEG and PNG files with the default
# configuration, that build and this one (target/debug unless ICS_BENCH_NEW_BIN says)
# alternating, ROUNDS rounds (default 3); prints each run's seconds, CPU seconds and
# peak RSS (GNU time) and the median of this build's throughput over the base's. Build a base without
# a checkout (release, as BENCHMARKS.md's figures):
#   git archive REV | tar -x -C /tmp/base && (cd /tmp/base && cargo build --release)
# ICS_BENCH_NEW_BIN=<this build's binary, already built, of the base's profile:
# target/release/image-converting-server> skips building it; ICS_BENCH_TABLES=0 skips
# the tables (the A/B alone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

exec > >(tee target/bench-memory.txt) 2>&1
status=0
if [ "${ICS_BENCH_TABLES:-1}" != 0 ]; then
    nice -n 10 cargo build --example memory_peak >&2
    bin=target/debug/examples/memory_peak
    synthetic=target/memory-synthetic
    echo "== default budget (this machine's): every file"
    nice -n 10 "$bin" --synthetic "$synthetic" "$@" || status=1
    echo
    echo "== pipeline.memory_budget_mb 330 (a 512 MiB container): the noise"
    nice -n 10 "$bin" --budget 330 "$synthetic"/noise-*mp.jpg || status=1
fi

if [ -n "${ICS_BENCH_BASE_BIN:-}" ]; then
    command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
    new=${ICS_BENCH_NEW_BIN:-target/debug/image-converting-server}
    [ -n "${ICS_BENCH_NEW_BIN:-}" ] || nice -n 10 cargo build --bin image-converting-server >&2
    echo
    echo "== A/B, no memory limit: run-once over $* (JPEG, PNG), base $ICS_BENCH_BASE_BIN vs $new"
    ratios=()
    for round in $(seq "${ROUNDS:-3}"); do
        declare -A took=()
        for which in base new; do
            exe=$new
            [ "$which" = base ] && exe=$ICS_BENCH_BASE_BIN
            work=$(mktemp -d)
            mkdir -p "$work/bucket" "$work/state"
            for dir in "$@"; do
                find "$dir" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) \
                    -exec cp {} "$work/bucket/" \;
            done
            env -u ICS__PIPELINE__MEMORY_BUDGET_MB ICS__STORAGE__BACKEND=local \
                ICS__STORAGE__LOCAL_ROOT="$work/bucket" ICS__STATE__DIR="$work/state" ICS__LOG__LEVEL=warn \
                nice -n 10 /usr/bin/time -f "%e %M %U %S" -o "$work/time" "$exe" run-once --json >"$work/summary"
            read -r seconds kb user sys <"$work/time"
            cpu=$(python3 -c "print(f'{$user + $sys:.1f}')")
            converted=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["converted"])' "$work/summary")
            echo "round $round  $which  ${seconds} s  CPU ${cpu} s  peak RSS $((kb / 1024)) MiB  converted $converted"
            took[$which]=$seconds
            rm -rf "$work"
        done
        ratios+=("$(python3 -c "print(${took[base]} / ${took[new]})")")
    done
    python3 -c 'import statistics,sys; r=[float(x) for x in sys.argv[1:]]; print(f"this build / base throughput: median {statistics.median(r):.3f}x, rounds " + " ".join(f"{x:.3f}" for x in r))' "${ratios[@]}"
fi
exit $status
