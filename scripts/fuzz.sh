#!/usr/bin/env bash
# Fuzzes the conversion core (ics::convert::convert) with cargo-fuzz / libFuzzer:
#   bash scripts/fuzz.sh [SECONDS]        (default 600)
# Target: fuzz/fuzz_targets/convert.rs. Installs cargo-fuzz and the nightly toolchain
# if missing. Seeds fuzz/corpus/convert with testdata/images/*.{jpg,png,gif,bmp,tif}
# and testdata/images/bad/* (each behind the target's two option bytes: once as is,
# once with a width-only resize), then runs libFuzzer for SECONDS and prints the
# execs and whether it found crashes. Crashing inputs land in fuzz/artifacts/convert;
# reproduce one with `cargo +nightly fuzz run convert <file>`, shrink it with
# `cargo +nightly fuzz tmin convert <file>`. Log: fuzz/target/convert.log.
# Use `nice -n 10` on a shared machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-600}"
corpus=fuzz/corpus/convert
artifacts=fuzz/artifacts/convert
log=fuzz/target/convert.log

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

mkdir -p "$corpus" "$artifacts" fuzz/target
shopt -s nullglob
for f in testdata/images/*.{jpg,png,gif,bmp,tif} testdata/images/bad/*; do
    name="$(basename "$f")"
    # Byte 0: 0x00 = lossless auto, no resize; 0x04 = width-only resize. Byte 1: 0x3f = 64 px.
    [ -e "$corpus/seed-$name" ] || { printf '\x00\x3f'; cat "$f"; } >"$corpus/seed-$name"
    [ -e "$corpus/seed-w64-$name" ] || { printf '\x04\x3f'; cat "$f"; } >"$corpus/seed-w64-$name"
done

marker="$(mktemp)"
trap 'rm -f "$marker"' EXIT
status=0
cargo +nightly fuzz run convert "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -timeout=30 \
    2>&1 | tee "$log" || status=$?

printf '\n==> fuzz summary (%s s requested, log %s)\n' "$seconds" "$log"
grep -E '^Done [0-9]+ runs' "$log" || grep -E '^#[0-9]+' "$log" | tail -n 1 || true
printf 'corpus: %s files\n' "$(find "$corpus" -type f | wc -l)"
new="$(find "$artifacts" -type f -newer "$marker" | sort)"
if [ -n "$new" ]; then
    printf 'CRASHES FOUND (libFuzzer exit %s):\n%s\n' "$status" "$new"
    exit 1
fi
printf 'no crashes found (libFuzzer exit %s)\n' "$status"
exit "$status"
