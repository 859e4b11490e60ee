#!/usr/bin/env bash
# The project's test command (README, .ci/run):
#   bash scripts/test.sh [extra cargo test args...]
# Starts a local S3-compatible server (moto, on 127.0.0.1, see
# scripts/s3-server.sh), exports ICS_TEST_S3_* for the integration tests, runs
# `cargo test --all-targets "$@" -- --include-ignored` (the tests that need the S3
# server are #[ignore]d, so that a plain `cargo test` reports them ignored rather than
# passed; no test is ignored for any other reason), stops the server, and exits with
# cargo's status. Arguments after a `--` of "$@" go to the test binaries as usual.
# If ICS_TEST_S3_ENDPOINT is already set, that server is used and none is started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

if [ -n "${ICS_TEST_S3_ENDPOINT:-}" ]; then
    step "S3 server: using ICS_TEST_S3_ENDPOINT=$ICS_TEST_S3_ENDPOINT from the environment"
    export ICS_TEST_S3_REGION="${ICS_TEST_S3_REGION:-us-east-1}"
    export ICS_TEST_S3_ACCESS_KEY="${ICS_TEST_S3_ACCESS_KEY:-testing}"
    export ICS_TEST_S3_SECRET_KEY="${ICS_TEST_S3_SECRET_KEY:-testing}"
else
    step "S3 server: starting moto (log: target/s3-server/moto.log)"
    # Stop it on any exit, keeping the exit status; quiet so that cargo's
    # summary stays the last thing printed.
    trap 'rc=$?; bash scripts/s3-server.sh stop >/dev/null 2>&1 || true; exit $rc' EXIT
    t0=$SECONDS
    env_lines="$(bash scripts/s3-server.sh start)"
    while IFS= read -r line; do
        case "$line" in
            ICS_TEST_S3_*=*) export "${line?}"; printf '    %s\n' "$line" >&2 ;;
        esac
    done <<<"$env_lines"
    [ -n "${ICS_TEST_S3_ENDPOINT:-}" ] || { echo "scripts/s3-server.sh start printed no endpoint" >&2; exit 1; }
    printf '    (ready after %ss)\n' "$((SECONDS - t0))" >&2
fi

# The container test (integration/packaging.rs) needs podman and a local
# debian:bookworm-slim; scripts/container-base.sh makes both from Debian's
# packages (no registry needed, ~3 min on a fresh machine). It runs in the background
# while cargo compiles; without it the container test says it is skipped.
ctr_pid=""
if ! podman image exists docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
    base="scripts/container-base.sh"
    if [ "$(id -u)" = 0 ]; then
        step "container base: $base in the background (log: target/container-base.log)"
        mkdir -p target
        bash "$base" >target/container-base.log 2>&1 &
        ctr_pid=$!
    else
        step "container base: not set up (bash $base needs root); the container test will be skipped"
    fi
fi

# The Kubernetes manifests against the API's schemas (offline once installed); a manifest
# that does not validate fails here. integration/kubernetes.rs checks them against the daemon.
step "kubernetes manifests: bash scripts/k8s-validate.sh"
bash scripts/k8s-validate.sh

step "cargo test --all-targets --no-run $*"
cargo test --all-targets --no-run "$@"
if [ -n "$ctr_pid" ]; then
    if wait "$ctr_pid"; then
        step "container base: ready"
    else
        step "container base: failed (see target/container-base.log); the container test will be skipped"
    fi
fi

# Four tests at a time (the harness's default is one a core): most integration tests wait
# on servers and child processes, not the CPU. On 2 cores the integration suite took 407 s
# with 4 against 665 s with 2 (2026-12-06, a loaded machine). RUST_TEST_THREADS overrides.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"

# The S3 tests are #[ignore]d: include them. After the caller's own `--`, if any.
test_args=("$@")
case " $* " in
    *" -- "*) test_args+=(--include-ignored) ;;
    *) test_args+=(-- --include-ignored) ;;
esac
step "cargo test --all-targets ${test_args[*]}"
cargo test --all-targets "${test_args[@]}"
