#!/usr/bin/env bash
# A benchmark that tells the truth, in one run (issue 6):
#
#   bash scripts/bench.sh
#   ICS_BENCH_LIMIT=6 ROUNDS=1 bash scripts/bench.sh      # quick check
#
# Over one set of real images it times, alternately and ROUNDS times (order rotating):
#   limit         the conversion core alone: examples/limit.rs, files already in memory,
#                 one thread per core pulling from a shared index, ics::convert::convert
#   daemon-local  `image-converting-server run-once --json` on a local-directory bucket
#   daemon-s3     the same through the S3-compatible test server (moto, scripts/s3-server.sh)
#   cwebp         `cwebp -q Q -m M -quiet -o OUT IN`, one process per file, xargs -P<cores>
#   vips          `vips copy IN 'OUT.webp[Q=Q,effort=M,strip]'` likewise (keep=none on vips >= 8.15)
# and prints medians of images/s, MP/s (decoded source pixels), MP per CPU second, output
# bytes, mean SSIM against the source (examples/quality.rs) and peak RSS (GNU time -v), plus
# the throughput ratios daemon/limit, daemon/cwebp, daemon/vips. Everything printed on
# stdout is also written to target/bench.txt; per-file SSIM goes to target/bench-ssim.tsv.
#
# Then the latency scenario (issue 14): `run-once` through the S3 test server while it adds
# 0, 40 and 80 ms to every request (scripts/s3_server.py's per-bucket latency hook, a sleep
# as a remote R2 or S3 round trip would be), on two sets — small images (every file of the
# set made 320, 288, ... 48 px wide by `vips thumbnail`, never enlarged) and the set itself
# (the photo corpus) — latencies in rotating order each round. It prints each latency's
# throughput as a ratio of the same set's 0 ms throughput in the same round (median of the
# per-round ratios) and the peak RSS (GNU time -v).
#
# Settings are the same for every tool as far as they can be: lossy always (the daemon's
# conversion.lossless=never), quality Q, method/effort M, alpha quality 100, no metadata
# (the daemon's keep_icc=false; keep_exif/keep_xmp are off by default), one worker per
# core, and the daemon's skip_if_larger=false so that it writes every WebP as the peers do.
# What cannot be made equal is printed under "notes" (EXIF orientation, decoders, libwebp
# versions, vips' own threads).
#
# Environment:
#   ICS_BENCH_DIR      image directory (top-level JPEG/PNG files; default ../shared/corpus when
#                      it exists — its MANIFEST.tsv picks the JPEG and PNG rows — else
#                      testdata/images)
#   ICS_BENCH_LIMIT    take only the first N files, sorted by name (default 0 = all)
#   ICS_BENCH_AVIF     0 leaves out the AVIF scripts run at the end (scripts/bench-avif.sh:
#                      AVIF against WebP bytes, SSIMULACRA2 and CPU s/MP; scripts/bench-webp-first.sh:
#                      the WebP-complete time with AVIF outputs on against off); default 1
#   ROUNDS             rounds (default 3; ICS_BENCH_ROUNDS is accepted too)
#   ICS_BENCH_QUALITY  quality Q (default 80)
#   ICS_BENCH_METHOD   method / effort M, 0-6 (default 4)
#   ICS_BENCH_CORES    threads, workers and xargs -P (default: nproc)
#   ICS_BENCH_KEEP=1   keep the work directory (outputs, logs) instead of deleting it
#   ICS_BENCH_FEATURES cargo features to build with (e.g. `simd`: libwebp's SSE4.1/AVX2 paths)
#   ICS_BENCH_LATENCIES  latencies of the latency scenario, ms, space-separated (default
#                      "0 40 80"; the first is the baseline; empty skips the scenario)
#   ICS_BENCH_TABLE=0  skip the tools table (limit, daemon, cwebp, vips): latency scenario only
#   ICS_BENCH_BASE_BIN another build of the daemon (a baseline: an earlier commit's binary) timed
#                      in the same rounds as `base-local`, so the table shows daemon-local/base-local
#                      and both /limit ratios from one run. Build one with:
#                        git worktree add /tmp/base REV && (cd /tmp/base && cargo build --release)
#                        ICS_BENCH_BASE_BIN=/tmp/base/target/release/image-converting-server bash scripts/bench.sh
#
# Installs, when missing (apt-get, as root or with sudo): Debian packages `webp` (cwebp),
# `libvips-tools` (vips) and `time` (GNU /usr/bin/time); and, through scripts/s3-server.sh,
# moto (pip, into target/s3-venv; python3-venv or python3-pip from apt if needed). Builds
# `cargo build --release` (the binary and the two examples). Needs Rust and python3.
# The S3 server it starts is its own (state in target/bench-s3-server) and is stopped at exit.
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

Q="${ICS_BENCH_QUALITY:-80}"
M="${ICS_BENCH_METHOD:-4}"
ROUNDS="${ROUNDS:-${ICS_BENCH_ROUNDS:-3}}"
LIMIT="${ICS_BENCH_LIMIT:-0}"
CORES="${ICS_BENCH_CORES:-$(nproc)}"
OUT_TXT="$ROOT/target/bench.txt"
TOOLS=(limit daemon-local daemon-s3 cwebp vips)
read -r -a LATENCIES <<<"${ICS_BENCH_LATENCIES-0 40 80}"
TABLE="${ICS_BENCH_TABLE:-1}"
BASE_BIN="${ICS_BENCH_BASE_BIN:-}"
SMALL_SIZES=(320 288 256 224 192 160 128 112 96 80 64 48)
BIN="$ROOT/target/release/image-converting-server"
LIMIT_BIN="$ROOT/target/release/examples/limit"
QUALITY_BIN="$ROOT/target/release/examples/quality"
REPORT=(python3 "$ROOT/scripts/bench_report.py")
export ICS_S3_STATE_DIR="$ROOT/target/bench-s3-server"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

if [ -n "$BASE_BIN" ]; then
    [ -x "$BASE_BIN" ] || die "ICS_BENCH_BASE_BIN: $BASE_BIN is not an executable"
    BASE_BIN="$(realpath "$BASE_BIN")"
    TOOLS+=(base-local)
fi
for v in "${LATENCIES[@]}"; do [[ "$v" =~ ^[0-9]+$ ]] || die "ICS_BENCH_LATENCIES: '$v' is not a whole number of ms"; done
for v in Q M ROUNDS LIMIT CORES; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[ "$ROUNDS" -ge 1 ] && [ "$CORES" -ge 1 ] || die "ROUNDS and ICS_BENCH_CORES must be at least 1"
command -v python3 >/dev/null || die "python3 is needed"

# ------------------------------------------------------------- install ---

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
missing=()
command -v cwebp >/dev/null 2>&1 || missing+=(webp)
command -v vips >/dev/null 2>&1 || missing+=(libvips-tools)
[ -x /usr/bin/time ] || missing+=(time)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "cargo build --release (binary, examples limit and quality)"
cargo build --release ${ICS_BENCH_FEATURES:+--features "$ICS_BENCH_FEATURES"} --bin image-converting-server --example limit --example quality >&2

# ------------------------------------------------------------ work dir ---

W="$(mktemp -d "${TMPDIR:-/tmp}/ics-bench.XXXXXX")"
S3_STARTED=""
cleanup() {
    local rc=$?
    if [ -n "$S3_STARTED" ] || [ -f "$ICS_S3_STATE_DIR/moto.pid" ]; then
        bash "$ROOT/scripts/s3-server.sh" stop >/dev/null 2>&1 || true
    fi
    if [ "${ICS_BENCH_KEEP:-0}" = 1 ]; then
        log "work directory kept: $W"
    else
        rm -rf "$W"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# timed TIMEFILE CMD...: runs CMD under GNU time -v; WALL = its wall seconds.
WALL=""
timed() {
    local tf="$1" t0 t1
    shift
    t0=$EPOCHREALTIME
    /usr/bin/time -v -o "$tf" "$@"
    t1=$EPOCHREALTIME
    WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')"
}

# record ROUND TOOL WALL TIMEFILE BYTES EXTRA
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$W/runs.tsv"; }

sum_webp_bytes() { find "$1" -maxdepth 1 -name '*.webp' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
stem() { local b="${1##*/}"; printf '%s' "${b%.*}"; }

# The daemon's environment: inherited ICS__/R2_/Go-server variables and RUST_LOG removed.
DAEMON_ENV=(env)
for v in $(compgen -e); do
    case "$v" in ICS__* | R2_* | WEBHOOK_* | SERVER_PORT | RUST_LOG) DAEMON_ENV+=(-u "$v") ;; esac
done
DAEMON_SETTINGS=(
    ICS__CONVERSION__QUALITY="$Q"
    ICS__CONVERSION__METHOD="$M"
    ICS__CONVERSION__LOSSLESS=never
    ICS__CONVERSION__KEEP_ICC=false
    ICS__CONVERSION__KEEP_EXIF=false
    ICS__CONVERSION__KEEP_XMP=false
    ICS__CONVERSION__SKIP_IF_LARGER=false
    ICS__PIPELINE__WORKERS="$CORES"
    ICS__LOG__LEVEL=warn
)

VIPS_META=strip
if vips webpsave 2>&1 | grep -Eq '^[[:space:]]+keep[[:space:]]'; then VIPS_META=keep=none; fi

# ----------------------------------------------------------- peer runs ---

# cwebp_into OUTDIR LIST / vips_into OUTDIR LIST: one process per file, CORES at a time.
cwebp_pairs() { while IFS= read -r f; do printf '%s\0%s\0' "$1/$(stem "$f").webp" "$f"; done <"$2"; }
vips_pairs() {
    while IFS= read -r f; do printf '%s\0%s\0' "$f" "$1/$(stem "$f").webp[Q=$Q,effort=$M,$VIPS_META]"; done <"$2"
}
XARGS=(xargs -0 -n2 -P"$CORES")
CWEBP_CMD=(cwebp -q "$Q" -m "$M" -quiet -o)
VIPS_CMD=(vips copy)

# ------------------------------------------------------------ the set ---

select_files() {
    local dir
    if [ -n "${ICS_BENCH_DIR:-}" ]; then
        dir="$ICS_BENCH_DIR"
    elif [ -d "$ROOT/../shared/corpus" ]; then
        dir="$ROOT/../shared/corpus"
    else
        dir="$ROOT/testdata/images"
    fi
    [ -d "$dir" ] || die "no image directory $dir"
    dir="$(cd "$dir" && pwd)"
    SET_DIR="$dir"
    if [ -f "$dir/MANIFEST.tsv" ]; then
        awk -F'\t' -v d="$dir" 'NR > 1 && ($2 == "JPEG" || $2 == "PNG") { print d "/" $1 }' "$dir/MANIFEST.tsv" |
            while IFS= read -r f; do [ -f "$f" ] && printf '%s\n' "$f"; done
    else
        find "$dir" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \)
    fi | sort >"$W/all.list"
    if [ "$LIMIT" -gt 0 ]; then
        head -n "$LIMIT" "$W/all.list" >"$W/all.tmp" && mv "$W/all.tmp" "$W/all.list"
    fi
    [ -s "$W/all.list" ] || die "no JPEG or PNG files in $dir"
}

# Converts every file once with each tool (a warm-up too) and keeps those all of them convert.
preflight() {
    log "preflight: converting each of $(wc -l <"$W/all.list") files once with every tool"
    "$LIMIT_BIN" --check --threads "$CORES" --quality "$Q" --method "$M" --list "$W/all.list" >"$W/check.tsv"
    mkdir -p "$W/pre/cwebp" "$W/pre/vips"
    # sh -c: a tool exiting with 255 (cwebp does on a bad input) would make xargs stop at once.
    local keep_going=(sh -c '"$@" || exit 1' sh)
    cwebp_pairs "$W/pre/cwebp" "$W/all.list" | "${XARGS[@]}" "${keep_going[@]}" "${CWEBP_CMD[@]}" 2>"$W/pre/cwebp.err" || true
    vips_pairs "$W/pre/vips" "$W/all.list" | "${XARGS[@]}" "${keep_going[@]}" "${VIPS_CMD[@]}" 2>"$W/pre/vips.err" || true
    EXCLUDED=()
    : >"$W/files.list"
    while IFS=$'\t' read -r status _ _ path reason; do
        local s why=""
        s="$(stem "$path")"
        [ "$status" = ok ] || why="ours: $reason"
        [ -s "$W/pre/cwebp/$s.webp" ] || why="${why:+$why; }cwebp failed"
        [ -s "$W/pre/vips/$s.webp" ] || why="${why:+$why; }vips failed"
        if [ -n "$why" ]; then
            EXCLUDED+=("${path##*/} ($why)")
        else
            printf '%s\n' "$path" >>"$W/files.list"
        fi
    done <"$W/check.tsv"
    rm -rf "$W/pre"
    [ -s "$W/files.list" ] || die "no file converts with every tool"
    local dups
    dups="$(while IFS= read -r f; do stem "$f"; echo; done <"$W/files.list" | sort | uniq -d)"
    [ -z "$dups" ] || die "files whose names differ only in the extension map to one WebP: $dups"
}

# ------------------------------------------------------------ the runs ---

run_limit() { # ROUND LAST
    local tf="$W/time.$1.limit" extra=()
    [ "$2" = 1 ] && extra=(--out "$W/out/limit")
    timed "$tf" "$LIMIT_BIN" --threads "$CORES" --quality "$Q" --method "$M" --list "$W/files.list" "${extra[@]}" \
        >"$W/limit.$1.txt"
    local _tag n mp wall bytes
    read -r _tag n mp wall bytes _ < <(grep '^RESULT' "$W/limit.$1.txt")
    record "$1" limit "$wall" "$tf" "$bytes" ""
}

# daemon_check SUMMARY.json STDERR: prints "converted bytes_out duration_ms"; dies on failures.
daemon_check() {
    python3 - "$1" "$2" "$N" <<'EOF'
import json, sys
path, err, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    s = json.load(open(path))
except Exception as e:
    sys.exit(f"no JSON summary ({e}); stderr:\n" + open(err).read()[-2000:])
if s.get("failed") or s.get("converted") != n or s.get("error"):
    sys.exit(f"run-once converted {s.get('converted')} of {n}, failed {s.get('failed')}, "
             f"error {s.get('error')}, failures {s.get('failures')}")
print(s["converted"], s["bytes_out"], s["duration_ms"])
EOF
}

run_daemon() { # ROUND LAST BACKEND(local|s3) [TOOL BINARY]: TOOL defaults to daemon-BACKEND, BINARY to ours
    local r="$1" last="$2" backend="$3" tool="${4:-daemon-$3}" bin="${5:-$BIN}"
    local d="$W/r$1/$tool" tf="$W/time.$1.$tool" rc=0 storage=()
    mkdir -p "$d/state"
    if [ "$backend" = local ]; then
        mkdir -p "$d/bucket"
        xargs -d '\n' -a "$W/files.list" cp -t "$d/bucket"
        storage=(ICS__STORAGE__BACKEND=local ICS__STORAGE__LOCAL_ROOT="$d/bucket")
    else
        local bucket="ics-bench-$$-r$r"
        "${REPORT[@]}" s3-mkbucket "$ICS_TEST_S3_ENDPOINT" "$bucket"
        "${REPORT[@]}" s3-put "$ICS_TEST_S3_ENDPOINT" "$bucket" "$W/files.list"
        storage=(ICS__STORAGE__BACKEND=r2 R2_ENDPOINT="$ICS_TEST_S3_ENDPOINT" R2_BUCKET="$bucket"
            R2_ACCESS_KEY="$ICS_TEST_S3_ACCESS_KEY" R2_SECRET_KEY="$ICS_TEST_S3_SECRET_KEY"
            ICS__R2__REGION="$ICS_TEST_S3_REGION")
    fi
    local cpu0
    cpu0="$(moto_cpu)"
    # -C: run in the round's directory, so no config/config.yaml is picked up.
    timed "$tf" "${DAEMON_ENV[@]}" -C "$d" "${DAEMON_SETTINGS[@]}" "${storage[@]}" ICS__STATE__DIR="$d/state" \
        ICS__WEBHOOK__PENDING_DIR="$d/pending" "$bin" run-once --json >"$d/summary.json" 2>"$d/stderr.txt" || rc=$?
    local cpu1
    cpu1="$(moto_cpu)"
    [ "$rc" = 0 ] || { tail -n 20 "$d/stderr.txt" >&2; cat "$d/summary.json" >&2; die "run-once ($backend) exit $rc"; }
    local converted bytes_out ms bytes extra
    read -r converted bytes_out ms < <(daemon_check "$d/summary.json" "$d/stderr.txt")
    extra="duration_ms=$ms"
    if [ "$backend" = local ]; then
        bytes="$(sum_webp_bytes "$d/bucket")"
        if [ "$last" = 1 ]; then mv "$d/bucket" "$W/out/$tool"; fi
    else
        bytes="$bytes_out"
        extra="$extra moto_cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / t }')"
        if [ "$last" = 1 ]; then
            "${REPORT[@]}" s3-get "$ICS_TEST_S3_ENDPOINT" "$bucket" .webp "$W/out/daemon-s3"
            bytes="$(sum_webp_bytes "$W/out/daemon-s3")"
        fi
        # Every round starts from the same server state: an empty server plus its bucket.
        "${REPORT[@]}" s3-rmbucket "$ICS_TEST_S3_ENDPOINT" "$bucket"
    fi
    record "$r" "$tool" "$WALL" "$tf" "$bytes" "$extra"
    rm -rf "$d"
}

moto_cpu() { # the S3 server's CPU time so far, in clock ticks (0 when there is none)
    local pid
    pid="$(cat "$ICS_S3_STATE_DIR/moto.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && [ -r "/proc/$pid/stat" ]; then
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"
    else
        echo 0
    fi
}

# ---------------------------------------------------- latency scenario ---

# make_small_set: every file of the set at each of SMALL_SIZES px wide (never enlarged),
# the 320 px one from the source and the others from it; lists them in $W/small.list.
make_small_set() {
    mkdir -p "$W/small"
    log "making the small-image set: each file at ${SMALL_SIZES[*]} px wide (vips thumbnail --size down)"
    local f s ext px
    while IFS= read -r f; do
        s="$(stem "$f")" ext="${f##*.}"
        printf '%s\0%s\0%s\0' "$f" "$W/small/${s}_320.$ext[strip]" 320
    done <"$W/files.list" | xargs -0 -n3 -P"$CORES" vips thumbnail --size down
    while IFS= read -r f; do
        s="$(stem "$f")" ext="${f##*.}"
        for px in "${SMALL_SIZES[@]:1}"; do
            printf '%s\0%s\0%s\0' "$W/small/${s}_320.$ext" "$W/small/${s}_$px.$ext[strip]" "$px"
        done
    done <"$W/files.list" | xargs -0 -n3 -P"$CORES" vips thumbnail --size down
    find "$W/small" -maxdepth 1 -type f | sort >"$W/small.list"
}

# run_latency ROUND SET LIST MS: run-once through the S3 test server, MS added to every
# request on the round's bucket (after it is filled, before it is emptied).
run_latency() {
    local r="$1" set="$2" list="$3" ms="$4" d="$W/lat-r$1-$2-$4" tf="$W/time.$1.lat-$2-$4" rc=0
    local N bucket="ics-bench-$$-l$1-$2-$4" cpu0 cpu1 converted bytes_out dms
    N="$(wc -l <"$list")"
    mkdir -p "$d/state"
    "${REPORT[@]}" s3-mkbucket "$ICS_TEST_S3_ENDPOINT" "$bucket"
    "${REPORT[@]}" s3-put "$ICS_TEST_S3_ENDPOINT" "$bucket" "$list"
    "${REPORT[@]}" s3-latency "$ICS_TEST_S3_ENDPOINT" "$bucket" "$ms"
    cpu0="$(moto_cpu)"
    timed "$tf" "${DAEMON_ENV[@]}" -C "$d" "${DAEMON_SETTINGS[@]}" ICS__STORAGE__BACKEND=r2 \
        R2_ENDPOINT="$ICS_TEST_S3_ENDPOINT" R2_BUCKET="$bucket" R2_ACCESS_KEY="$ICS_TEST_S3_ACCESS_KEY" \
        R2_SECRET_KEY="$ICS_TEST_S3_SECRET_KEY" ICS__R2__REGION="$ICS_TEST_S3_REGION" ICS__STATE__DIR="$d/state" \
        ICS__WEBHOOK__PENDING_DIR="$d/pending" "$BIN" run-once --json >"$d/summary.json" 2>"$d/stderr.txt" || rc=$?
    cpu1="$(moto_cpu)"
    "${REPORT[@]}" s3-latency "$ICS_TEST_S3_ENDPOINT" "$bucket" 0
    [ "$rc" = 0 ] || { tail -n 20 "$d/stderr.txt" >&2; cat "$d/summary.json" >&2; die "run-once ($set, $ms ms) exit $rc"; }
    read -r converted bytes_out dms < <(daemon_check "$d/summary.json" "$d/stderr.txt")
    "${REPORT[@]}" s3-rmbucket "$ICS_TEST_S3_ENDPOINT" "$bucket"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$set" "$N" "$ms" "$WALL" "$tf" \
        "duration_ms=$dms moto_cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / t }')" \
        >>"$W/latency.tsv"
    rm -rf "$d"
}

latency_scenario() {
    [ "${#LATENCIES[@]}" -gt 0 ] || return 0
    make_small_set
    echo "latency scenario: ${LATENCIES[*]} ms per request; sets: small = $(wc -l <"$W/small.list") images of at most 320 px ($(du -sm "$W/small" | cut -f1) MB), photos = the $N files above"
    : >"$W/latency.tsv"
    local r k set list ms summary
    for ((r = 1; r <= ROUNDS; r++)); do
        summary="latency round $r/$ROUNDS:"
        for set in small photos; do
            list="$W/files.list"
            [ "$set" = small ] && list="$W/small.list"
            for ((k = 0; k < ${#LATENCIES[@]}; k++)); do
                ms="${LATENCIES[$(((k + r - 1) % ${#LATENCIES[@]}))]}"
                log "latency round $r/$ROUNDS: $set, $ms ms"
                run_latency "$r" "$set" "$list" "$ms"
                summary+=" $set@${ms}ms $(tail -n1 "$W/latency.tsv" | cut -f5 | xargs printf '%.2f')s"
            done
        done
        echo "$summary"
    done
    "${REPORT[@]}" latency "$W"
}

run_peer() { # ROUND LAST TOOL
    local r="$1" last="$2" tool="$3" o="$W/r$1/$3" tf="$W/time.$1.$3"
    [ "$last" = 1 ] && o="$W/out/$tool"
    mkdir -p "$o"
    if [ "$tool" = cwebp ]; then
        cwebp_pairs "$o" "$W/files.list" >"$W/pairs"
        timed "$tf" "${XARGS[@]}" -a "$W/pairs" "${CWEBP_CMD[@]}" 2>"$W/$tool.$r.err" ||
            { tail -n 20 "$W/$tool.$r.err" >&2; die "$tool failed"; }
    else
        vips_pairs "$o" "$W/files.list" >"$W/pairs"
        timed "$tf" "${XARGS[@]}" -a "$W/pairs" "${VIPS_CMD[@]}" 2>"$W/$tool.$r.err" ||
            { tail -n 20 "$W/$tool.$r.err" >&2; die "$tool failed"; }
    fi
    record "$r" "$tool" "$WALL" "$tf" "$(sum_webp_bytes "$o")" ""
    [ "$last" = 1 ] || rm -rf "$o"
}

# ---------------------------------------------------------------- main ---

main() {
    select_files
    preflight
    N="$(wc -l <"$W/files.list")"
    local mp in_bytes jpegs=0 pngs=0 oriented
    mp="$(awk -F'\t' 'NR == FNR { keep[$0] = 1; next } ($4 in keep) { s += $2 } END { printf "%.3f", s }' \
        "$W/files.list" "$W/check.tsv")"
    oriented="$(awk -F'\t' 'NR == FNR { keep[$0] = 1; next } ($4 in keep) && $3 != 1 { n++ } END { print n + 0 }' \
        "$W/files.list" "$W/check.tsv")"
    in_bytes="$(xargs -d '\n' -a "$W/files.list" stat -c %s | awk '{ s += $1 } END { print s + 0 }')"
    while IFS= read -r f; do
        case "$(head -c 2 "$f" | od -An -tx1 | tr -d ' \n')" in ffd8) jpegs=$((jpegs + 1)) ;; *) pngs=$((pngs + 1)) ;; esac
    done <"$W/files.list"

    log "starting the S3 test server (scripts/s3-server.sh, state in $ICS_S3_STATE_DIR)"
    local line
    S3_STARTED=1
    while IFS= read -r line; do
        case "$line" in ICS_TEST_S3_*=*) export "${line?}" ;; esac
    done < <(bash "$ROOT/scripts/s3-server.sh" start)
    [ -n "${ICS_TEST_S3_ENDPOINT:-}" ] || die "scripts/s3-server.sh start printed no endpoint"

    echo "ics benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
    echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "set: $N files from $SET_DIR ($jpegs JPEG, $pngs PNG), $mp MP, $((in_bytes / 1000000)) MB; $oriented with an EXIF rotation"
    if [ "${#EXCLUDED[@]}" -gt 0 ]; then
        echo "excluded (not converted by every tool): ${EXCLUDED[*]}"
    fi
    echo "settings: lossy q$Q m$M, alpha quality 100, no metadata, $CORES threads/workers/processes; $ROUNDS round(s), order rotating"
    echo "versions: ours libwebp $("$LIMIT_BIN" --version) (vendored, libwebp-sys); cwebp $(cwebp -version | head -n1); $(vips --version) (libwebp $(dpkg-query -W -f='${Version}' 'libwebp7' 2>/dev/null || echo '?'))"
    echo "commands: cwebp -q $Q -m $M -quiet -o OUT IN | vips copy IN 'OUT.webp[Q=$Q,effort=$M,$VIPS_META]' (each: xargs -P$CORES, one process per file)"
    echo "          image-converting-server run-once --json with ${DAEMON_SETTINGS[*]}"
    if [ -n "$BASE_BIN" ]; then
        echo "baseline: base-local is $BASE_BIN ($("$BASE_BIN" --version 2>/dev/null | head -n1)), run as daemon-local is"
    fi

    mkdir -p "$W/out"
    : >"$W/runs.tsv"
    if [ "$TABLE" = 0 ]; then
        latency_scenario
        echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
        return
    fi
    local r i k tool last
    for ((r = 1; r <= ROUNDS; r++)); do
        last=0
        [ "$r" = "$ROUNDS" ] && last=1
        local summary="round $r/$ROUNDS:"
        for ((k = 0; k < ${#TOOLS[@]}; k++)); do
            i=$(((k + r - 1) % ${#TOOLS[@]}))
            tool="${TOOLS[$i]}"
            log "round $r/$ROUNDS: $tool"
            case "$tool" in
                limit) run_limit "$r" "$last" ;;
                daemon-local) run_daemon "$r" "$last" local ;;
                daemon-s3) run_daemon "$r" "$last" s3 ;;
                base-local) run_daemon "$r" "$last" local base-local "$BASE_BIN" ;;
                *) run_peer "$r" "$last" "$tool" ;;
            esac
            summary+=" $tool $(tail -n1 "$W/runs.tsv" | cut -f3 | xargs printf '%.2f')s"
        done
        echo "$summary"
    done

    log "SSIM of every tool's last-round outputs against the sources (examples/quality.rs)"
    : >"$W/pairs.tsv"
    while IFS= read -r f; do
        s="$(stem "$f")"
        for tool in "${TOOLS[@]}"; do
            case "$tool" in cwebp | vips) o=0 ;; *) o=1 ;; esac
            printf '%s\t%s\t%s\t%s\n' "$tool" "$o" "$f" "$W/out/$tool/$s.webp" >>"$W/pairs.tsv"
        done
    done <"$W/files.list"
    "$QUALITY_BIN" --detail "$ROOT/target/bench-ssim.tsv" <"$W/pairs.tsv" >"$W/quality.txt"

    local notes=(
        "ours applies EXIF orientation ($oriented file(s) here), cwebp and vips do not; each output is compared with the source as it encoded it."
        "decoders differ: ours uses the image crate (zune-jpeg, png), cwebp and vips libjpeg-turbo and libpng (cwebp also applies a PNG's gAMA); libwebp versions differ too (see versions)."
        "vips runs its own thread pool inside each process (VIPS_CONCURRENCY unset); cwebp and ours use one thread per image."
        "mean SSIM is over files, each counting once (tiny PNG test images as much as 18 MP photos); MPw SSIM weights by source pixels. PNGs with a non-sRGB gAMA chunk (pngsuite) lower cwebp's per-file mean: it applies the gamma, the reference decoder does not. Per-file values: target/bench-ssim.tsv."
        "the daemon's defaults would differ: quality 85, lossless auto (graphics PNGs lossless), keep_icc true, skip_if_larger true; all set to match the peers here."
    )
    {
        printf 'images\t%s\n' "$N"
        printf 'megapixels\t%s\n' "$mp"
        printf 'rounds\t%s\n' "$ROUNDS"
        printf 'notes\t%s\n' "$(IFS='|'; echo "${notes[*]}")"
    } >"$W/meta.tsv"
    "${REPORT[@]}" report "$W"
    echo
    echo "quality of the last round's outputs (examples/quality.rs: SSIM of BT.601 luma over white, 11x11 Gaussian):"
    cat "$W/quality.txt"
    latency_scenario
    # Issue 24: AVIF against WebP (bytes, SSIMULACRA2, CPU s/MP of each output) and the
    # time until the bucket is WebP-complete with AVIF outputs on against off, on the
    # same set (ICS_BENCH_AVIF=0 leaves them out: they take a while).
    if [ "${ICS_BENCH_AVIF:-1}" != 0 ]; then
        echo
        bash "$ROOT/scripts/bench-avif.sh" "$SET_DIR" || echo "bench-avif.sh failed"
        echo
        PROFILE="${ICS_BENCH_PROFILE:-release}" bash "$ROOT/scripts/bench-webp-first.sh" "$SET_DIR" ||
            echo "bench-webp-first.sh failed"
    fi
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "per-file SSIM: target/bench-ssim.tsv; this report: target/bench.txt"
}

mkdir -p "$ROOT/target"
main | tee "$OUT_TXT"
