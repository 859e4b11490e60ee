# syntax=docker/dockerfile:1
# The image-converting-server container: a non-root daemon with CA certificates (R2 and
# S3 are https) and nothing else.
#
#   podman build --format docker -t image-converting-server .      # compiles from source
#   cargo build --release && \
#   podman build --format docker --build-arg SOURCE=prebuilt -t image-converting-server .
#                                  # takes target/release/image-converting-server instead
#   sudo bash scripts/container-base.sh   # no registry: podman and debian:bookworm-slim from
#                                  # Debian's packages (then build with --pull=never)
#
# Configuration comes from the environment: the Go server's variables (R2_ENDPOINT,
# R2_BUCKET, R2_ACCESS_KEY, R2_SECRET_KEY, CRON_SCHEDULE, WEBHOOK_URL, ...) and ICS__...
# ones (CONFIG.md), or a config file mounted into the container and named with
# `--config` (e.g. `podman run ... image-converting-server --config /etc/ics/config.yaml serve`).
# The API listens on 0.0.0.0:4000 inside the container and refuses to start without a
# token: set ICS__API__TOKEN, or ICS__API__TOKEN_FILE to a mounted secret file.

ARG SOURCE=source
# The commit `--version` names (the build context has no .git): --build-arg COMMIT=$(git rev-parse --short=12 HEAD)
ARG COMMIT=unknown
# Which prebuilt binary SOURCE=prebuilt copies (relative to the build context).
ARG BINARY=target/release/image-converting-server

# ---- SOURCE=source: compile in a Rust image (a C compiler is needed for libwebp).
FROM docker.io/library/rust:1-bookworm AS build-source
ARG COMMIT
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
COPY integration ./integration
RUN ICS_BUILD_COMMIT="$COMMIT" cargo build --release --locked --bin image-converting-server \
 && install -D target/release/image-converting-server /out/image-converting-server

# ---- SOURCE=prebuilt: take the binary from the build context (built on a bookworm host).
FROM docker.io/library/debian:bookworm-slim AS build-prebuilt
ARG BINARY
COPY ${BINARY} /out/image-converting-server

FROM build-${SOURCE} AS build

# ---- The runtime image.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ics \
 && useradd --system --uid 10001 --gid ics --home-dir /var/lib/image-converting-server \
      --shell /usr/sbin/nologin ics \
 && install -d -o ics -g ics -m 0750 /var/lib/image-converting-server \
      /var/lib/image-converting-server/state /var/lib/image-converting-server/data \
      /var/lib/image-converting-server/data/webhook_pending /var/lib/image-converting-server/bucket
COPY --from=build /out/image-converting-server /usr/local/bin/image-converting-server

# The working directory is where a Go deployment's .env and data/ are looked for.
WORKDIR /var/lib/image-converting-server
ENV ICS__SERVER__HOST=0.0.0.0 \
    ICS__STATE__DIR=/var/lib/image-converting-server/state \
    ICS__STORAGE__LOCAL_ROOT=/var/lib/image-converting-server/bucket
VOLUME ["/var/lib/image-converting-server/state", "/var/lib/image-converting-server/data"]
EXPOSE 4000
USER 10001:10001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["image-converting-server", "health"]
ENTRYPOINT ["image-converting-server"]
CMD ["serve"]
