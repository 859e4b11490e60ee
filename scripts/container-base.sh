#!/usr/bin/env bash
# container-base.sh: podman with a registry-free debian:bookworm-slim image, made from the Debian mirror (root, Debian 12).
# Usage: bash scripts/container-base.sh [--selftest] [--docker-socket]   idempotent; a fresh machine takes about 2 min, a re-run about 1 s.
# Then:  podman build --pull=never --format docker --network host -t app .  &&  podman run -d --network host app
# Env:   CTR_HOME=DIR keeps config, storage and state under DIR (then `source DIR/env`); unset means system-wide
#        (/etc/containers/containers.conf.d, /var/lib/containers). CTR_REBUILD=1 remakes the base. CTR_TEST_PORT=8080 for --selftest.
# The project's copy: scripts/test.sh runs it for the container test (integration/packaging.rs) where no registry is
# reachable; README.md's and USAGE.md's container quick starts name it. Needs only the repository and a Debian mirror.
set -euo pipefail

SELFTEST=0 DSOCK=0
for a in "$@"; do
  case "$a" in
    --selftest) SELFTEST=1 ;;
    --docker-socket) DSOCK=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "container-base: unknown argument: $a" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "container-base: must run as root" >&2; exit 1; }

MIRROR=${CTR_MIRROR:-http://deb.debian.org/debian}
SECMIRROR=${CTR_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BASE=docker.io/library/debian:bookworm-slim
TAGS="docker.io/library/debian:bookworm docker.io/library/debian:12-slim docker.io/library/debian:12"
T0=$(date +%s)
log() { echo "[container-base +$(( $(date +%s) - T0 ))s] $*" >&2; }

# 1. Debian packages. runc, not crun: crun 1.8 refuses this kernel's hybrid cgroup v1/v2 layout.
need=()
for p in podman buildah runc mmdebstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman buildah runc mmdebstrap >/dev/null
fi

# 2. Config. The sandbox refuses to raise rlimits: podman's defaults (nofile/nproc 1048576) fail with
#    "setrlimit RLIMIT_NOFILE: Operation not permitted", so pin them at what the sandbox allows.
nofile=$(ulimit -Hn); if [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; then nofile=1048576; fi
nproc=$(ulimit -Hu);  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
if [ -n "${CTR_HOME:-}" ]; then
  mkdir -p "$CTR_HOME"/conf "$CTR_HOME"/storage/root "$CTR_HOME"/storage/run "$CTR_HOME"/storage/libpod "$CTR_HOME"/state "$CTR_HOME"/tmp
  CONF=$CTR_HOME/conf/containers.conf STATE=$CTR_HOME/state RUNDIR=$CTR_HOME/storage/libpod
  extra="tmp_dir = \"$CTR_HOME/storage/libpod\"
image_copy_tmp_dir = \"$CTR_HOME/tmp\""
  cat > "$CTR_HOME/conf/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CTR_HOME/storage/root"
runroot = "$CTR_HOME/storage/run"
EOF
  cat > "$CTR_HOME/env" <<EOF
export CONTAINERS_CONF=$CONF
export CONTAINERS_STORAGE_CONF=$CTR_HOME/conf/storage.conf
export TMPDIR=$CTR_HOME/tmp
EOF
  # shellcheck disable=SC1091
  . "$CTR_HOME/env"
else
  mkdir -p /etc/containers/containers.conf.d /var/cache/container-base
  CONF=/etc/containers/containers.conf.d/90-container-base.conf STATE=/var/cache/container-base RUNDIR=/run/podman extra=""
fi
cat > "$CONF.tmp" <<EOF
# written by container-base.sh
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
$extra
EOF
mv "$CONF.tmp" "$CONF"

# 3. Base image: minbase bookworm with merged /usr and slim-style path excludes (~75 MB), imported under the Hub names.
if [ "${CTR_REBUILD:-0}" = 1 ] || ! podman image exists "$BASE"; then
  tar=$STATE/debian-bookworm-slim.tar
  if [ "${CTR_REBUILD:-0}" = 1 ] || [ ! -s "$tar" ]; then
    log "mmdebstrap bookworm -> $tar"
    rm -f "$tar.tmp"
    mmdebstrap --quiet --variant=minbase --format=tar \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --aptopt='Acquire::Languages "none"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/groff/*' \
      --dpkgopt='path-exclude=/usr/share/lintian/*' \
      bookworm "$tar.tmp" \
      "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECMIRROR bookworm-security main" \
      >"$STATE/mmdebstrap.log" 2>&1 || { tail -40 "$STATE/mmdebstrap.log" >&2; echo "container-base: mmdebstrap failed" >&2; exit 1; }
    mv "$tar.tmp" "$tar"
  fi
  log "podman import $BASE"
  podman import --quiet --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tar" "$BASE" >/dev/null
fi
for t in $TAGS; do podman tag "$BASE" "$t"; done
log "base ready: $(podman image inspect -f '{{.Id}}' "$BASE" | cut -c1-12) $BASE (+ bookworm, 12-slim, 12)"

# 4. Optional Docker-API socket, so the docker CLI works: DOCKER_HOST=unix://$RUNDIR/podman.sock
if [ "$DSOCK" = 1 ]; then
  sock=$RUNDIR/podman.sock pidf=$STATE/podman-service.pid
  if [ -S "$sock" ] && [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    log "podman service already running (pid $(cat "$pidf"))"
  else
    mkdir -p "$RUNDIR"; rm -f "$sock"
    setsid podman system service --time=0 "unix://$sock" >"$STATE/podman-service.log" 2>&1 < /dev/null &
    echo $! > "$pidf"
    for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.2; done
    [ -S "$sock" ] || { echo "container-base: podman service did not start, see $STATE/podman-service.log" >&2; exit 1; }
    log "podman service pid $(cat "$pidf")"
  fi
  [ -z "${CTR_HOME:-}" ] || grep -q DOCKER_HOST "$CTR_HOME/env" || echo "export DOCKER_HOST=unix://$sock" >> "$CTR_HOME/env"
  echo "export DOCKER_HOST=unix://$sock"
fi

# 5. Optional self-test: an ordinary Dockerfile, FROM debian:bookworm-slim, run with host networking.
if [ "$SELFTEST" = 1 ]; then
  port=${CTR_TEST_PORT:-8080}
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "container-base: port $port is busy" >&2; exit 1; fi
  d=$(mktemp -d "${CTR_HOME:-/tmp}/ctr-selftest.XXXXXX")
  name=ctr-selftest-$$
  cleanup() { podman rm -f -t 2 "$name" >/dev/null 2>&1 || true; podman rmi -f localhost/ctr-selftest:latest >/dev/null 2>&1 || true; rm -rf "$d"; }
  trap cleanup EXIT
  echo "hello from container-base selftest" > "$d/index.html"
  cat > "$d/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --create-home app
COPY --chown=app:app index.html /srv/www/index.html
USER app
WORKDIR /srv/www
ENV PORT=8080
EXPOSE 8080
STOPSIGNAL SIGINT
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python3 -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ['PORT'], timeout=2)"
CMD ["sh", "-c", "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1"]
EOF
  log "selftest: podman build"
  podman build --pull=never --format docker --network host -t localhost/ctr-selftest:latest "$d" >"$d/build.log" 2>&1 \
    || { tail -30 "$d/build.log" >&2; echo "container-base: selftest FAILED: build" >&2; exit 1; }
  log "selftest: podman run --network host (port $port)"
  podman run -d --name "$name" --network host -e PORT="$port" localhost/ctr-selftest:latest >/dev/null 2>"$d/run.err" \
    || { cat "$d/run.err" >&2; exit 1; }
  ok=0
  for _ in $(seq 40); do
    if curl -fsS -m 2 "http://127.0.0.1:$port/index.html" 2>/dev/null | grep -q 'hello from container-base'; then ok=1; break; fi
    sleep 0.25
  done
  [ "$ok" = 1 ] || { podman logs "$name" >&2 || true; echo "container-base: selftest FAILED: no answer on 127.0.0.1:$port" >&2; exit 1; }
  podman healthcheck run "$name" >/dev/null || { echo "container-base: selftest FAILED: healthcheck" >&2; exit 1; }
  user=$(podman exec "$name" id -un)
  [ "$user" = app ] || { echo "container-base: selftest FAILED: runs as $user" >&2; exit 1; }
  log "selftest passed: answered on 127.0.0.1:$port, healthy, user=$user"
fi
log "done"
