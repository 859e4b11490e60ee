#!/usr/bin/env bash
# Runs compose.offline.yaml (the daemon next to the project's S3 test server, for machines
# that cannot pull MinIO's image): builds the daemon (cargo build --release), downloads the
# S3 test server's pinned wheels on the host, assembles its build context under
# target/compose-offline/, then runs `podman-compose -f compose.offline.yaml ARGS...`
# (or `docker compose`). Needs podman (scripts/container-base.sh sets it up with a
# local debian:bookworm-slim) and podman-compose (apt-get install podman-compose).
#
#   bash scripts/compose-offline.sh up -d     # start in the background
#   bash scripts/compose-offline.sh down      # stop and remove
# ICS_BINARY=target/debug/image-converting-server takes that binary instead of building
# the release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -gt 0 ] || set -- up
log() { printf 'compose-offline: %s\n' "$*" >&2; }

if command -v podman-compose >/dev/null 2>&1; then
    # Host networking for the builds (apt-get in the images), as container-base.sh does,
    # and Docker's image format, which keeps the HEALTHCHECK.
    compose=(podman-compose --podman-build-args "--network host --format docker")
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    log "needs podman-compose (apt-get install podman-compose) or docker compose"; exit 1
fi

# The daemon finds the bucket by its service name (http://s3:9000): with podman's CNI
# network backend that needs the dnsname plugin, which Debian packages separately.
if [ "${compose[0]}" = podman-compose ] && [ "$(podman info --format '{{.Host.NetworkBackend}}' 2>/dev/null)" = cni ] \
    && [ ! -x /usr/lib/cni/dnsname ]; then
    pkg=golang-github-containernetworking-plugin-dnsname
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "apt-get install $pkg (service names on podman's CNI networks)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
        # A network made before the plugin has no name service: make it again.
        "${compose[@]}" -f compose.offline.yaml down >/dev/null 2>&1 || true
        podman network rm -f "$(basename "$PWD")_default" >/dev/null 2>&1 || true
    else
        log "podman's CNI networks need the dnsname plugin for service names: install $pkg"; exit 1
    fi
fi

if [ "$1" = up ] || [ "$1" = build ]; then
    if [ -z "${ICS_BINARY:-}" ]; then
        log "cargo build --release"
        cargo build --release --locked --bin image-converting-server
    else
        # e.g. ICS_BINARY=target/debug/image-converting-server, built by the tests.
        log "using $ICS_BINARY"
    fi
    ctx=target/compose-offline/s3
    mkdir -p "$ctx/wheels"
    if [ ! -f "$ctx/wheels/.complete" ] || [ scripts/s3-requirements.txt -nt "$ctx/wheels/.complete" ]; then
        log "pip download the S3 test server's pinned wheels into $ctx/wheels"
        python3 -m pip download --disable-pip-version-check --no-input --quiet --require-hashes \
            --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux_2_28_x86_64 --platform any --python-version 3.11 \
            -r scripts/s3-requirements.txt -d "$ctx/wheels"
        touch "$ctx/wheels/.complete"
    fi
    cp packaging/s3-test-server/Containerfile scripts/s3-requirements.txt scripts/s3_server.py "$ctx/"
    # Rebuilt every time (layers are cached): `up` alone keeps an existing image.
    "${compose[@]}" -f compose.offline.yaml build
    [ "$1" = build ] && exit 0
fi
exec "${compose[@]}" -f compose.offline.yaml "$@"
