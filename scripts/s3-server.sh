#!/usr/bin/env bash
# Local S3-compatible server (moto) for the integration tests, run by scripts/s3_server.py
# (moto's own server plus a bulk-fill and a request-count hook for the scale tests).
#
#   bash scripts/s3-server.sh start   # install if needed, start, print env lines
#   bash scripts/s3-server.sh env     # print env lines of the running server
#   bash scripts/s3-server.sh stop    # stop it (harmless if none runs)
#
# stdout carries only the KEY=VALUE lines; progress goes to stderr.
# The server only ever binds 127.0.0.1.
#
# Environment:
#   ICS_S3_VENV           where moto is installed (default <repo>/target/s3-venv)
#   ICS_S3_STATE_DIR      pid/port/log files (default <repo>/target/s3-server)
#   ICS_S3_START_TIMEOUT  seconds to wait for the server to answer (default 30)
#   PYTHON                python to bootstrap with (default python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ICS_S3_VENV:-$ROOT/target/s3-venv}"
STATE="${ICS_S3_STATE_DIR:-$ROOT/target/s3-server}"
PIDFILE="$STATE/moto.pid"
PORTFILE="$STATE/moto.port"
LOGFILE="$STATE/moto.log"
TIMEOUT="${ICS_S3_START_TIMEOUT:-30}"
PY="${PYTHON:-python3}"
HOST=127.0.0.1
REGION=us-east-1
ACCESS_KEY=testing
SECRET_KEY=testing

# moto's S3 and SQS server, pinned with hashes in scripts/s3-requirements.txt. Not
# 'moto[server]': that extra pulls in the deps of every AWS service (cfn-lint, sympy,
# docker, ...: ~320 MB, ~65 s to install). The server needs only flask + flask-cors on top
# of moto[s3,sqs] (~100 MB, ~18 s).
REQS_FILE="$ROOT/scripts/s3-requirements.txt"
MOTO_REQS=(--require-hashes -r "$REQS_FILE")
# --no-compile: byte-compiling all of botocore etc. costs more than compiling
# the few modules moto imports on its first start.
PIP_OPTS=(install --disable-pip-version-check --no-input --quiet --prefer-binary --no-compile)
MARK_TEXT="$(sha256sum "$REQS_FILE" | cut -d" " -f1)"
export PIP_ROOT_USER_ACTION=ignore  # no "running pip as root" warning (--target fallback)

log() { printf 's3-server: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- install ---

# Installs Debian packages when running as root (as CI does); never calls sudo: as
# another user it says what to install and fails.
APT_UPDATED=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    if [ "$(id -u)" != 0 ]; then
        log "needs the Debian package(s) $* and is not root: install them (sudo apt-get install $*) and retry"
        return 1
    fi
    if [ -z "$APT_UPDATED" ]; then
        log "apt-get update"
        env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Already installed by this script, with the current requirements?
venv_ok() {
    [ -x "$VENV/bin/moto_server" ] && [ -x "$VENV/bin/python" ] &&
        [ "$(cat "$VENV/.ics-s3-ok" 2>/dev/null)" = "$MARK_TEXT" ]
}
target_ok() {
    [ "$(cat "$VENV/site/.ics-s3-ok" 2>/dev/null)" = "$MARK_TEXT" ] &&
        [ -x "$(cat "$VENV/site/.ics-s3-python" 2>/dev/null)" ]
}

# Can the host python's pip install into another interpreter (pip >= 22.3,
# 'pip --python')? Then the venv needs no pip of its own (saves ~8 s of ensurepip).
host_pip_can_target_python() {
    "$PY" -c 'import sys, pip; sys.exit(0 if tuple(int(x) for x in pip.__version__.split(".")[:2]) >= (22, 3) else 1)' \
        >/dev/null 2>&1
}

make_venv() { # make_venv [--without-pip]
    if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ] && [ ! -d "$VENV/site" ] &&
        [ -n "$(ls -A "$VENV" 2>/dev/null)" ]; then
        die "$VENV exists and is not a virtualenv; refusing to replace it"
    fi
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$@" "$VENV" >/dev/null 2>&1 && [ -x "$VENV/bin/python" ]
}

installed() { # installed CMD... ; sets MOTO_CMD
    MOTO_CMD=("$@")
    log "installed in $((SECONDS - T0))s"
}

# Sets MOTO_CMD (array) to the command that runs the server.
ensure_moto() {
    if venv_ok; then
        MOTO_CMD=("$VENV/bin/python" "$ROOT/scripts/s3_server.py")
        return 0
    fi
    if target_ok; then
        MOTO_CMD=(env "PYTHONPATH=$VENV/site" "$(cat "$VENV/site/.ics-s3-python")" "$ROOT/scripts/s3_server.py")
        return 0
    fi

    command -v "$PY" >/dev/null 2>&1 || die "$PY not found"
    T0=$SECONDS

    # 0. A venv that already has moto_server but not our marker (interrupted
    #    install, or a venv of the developer's own): top it up, don't replace it.
    if [ -x "$VENV/bin/moto_server" ] && [ -x "$VENV/bin/python" ]; then
        log "checking ${MOTO_REQS[*]} in existing $VENV"
        if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
            "$VENV/bin/python" -m pip "${PIP_OPTS[@]}" "${MOTO_REQS[@]}" >&2
        else
            "$PY" -m pip --python "$VENV/bin/python" "${PIP_OPTS[@]}" "${MOTO_REQS[@]}" >&2
        fi || die "pip install into $VENV failed"
        echo "$MARK_TEXT" >"$VENV/.ics-s3-ok"
        installed "$VENV/bin/python" "$ROOT/scripts/s3_server.py"
        return 0
    fi

    # 1. Fast path: a pip-less venv, filled by the host's pip.
    if host_pip_can_target_python && make_venv --without-pip; then
        log "installing ${MOTO_REQS[*]} into $VENV (host pip --python)"
        if "$PY" -m pip --python "$VENV/bin/python" "${PIP_OPTS[@]}" "${MOTO_REQS[@]}" >&2 &&
            [ -x "$VENV/bin/moto_server" ]; then
            echo "$MARK_TEXT" >"$VENV/.ics-s3-ok"
            installed "$VENV/bin/python" "$ROOT/scripts/s3_server.py"
            return 0
        fi
        log "host pip --python failed; trying a venv with its own pip"
    fi

    # 2. Ordinary venv with its own pip. Debian's python3 has no ensurepip
    #    until the python3-venv package is installed.
    if ! make_venv; then
        log "'$PY -m venv' failed (no venv/ensurepip module?); installing python3-venv"
        if ! { apt_install python3-venv && make_venv; }; then
            rm -rf "$VENV"
        fi
    fi
    if [ -x "$VENV/bin/python" ]; then
        log "installing ${MOTO_REQS[*]} into $VENV (venv pip)"
        "$VENV/bin/python" -m pip "${PIP_OPTS[@]}" "${MOTO_REQS[@]}" >&2 || die "pip install into $VENV failed"
        [ -x "$VENV/bin/moto_server" ] || die "moto_server missing after pip install"
        echo "$MARK_TEXT" >"$VENV/.ics-s3-ok"
        installed "$VENV/bin/python" "$ROOT/scripts/s3_server.py"
        return 0
    fi

    # 3. Fallback: no usable venv; pip --target into $VENV/site.
    log "no virtualenv possible; falling back to pip --target $VENV/site"
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip || die "python3 has no pip and it cannot be installed"
    fi
    rm -rf "$VENV"
    mkdir -p "$VENV/site"
    "$PY" -m pip "${PIP_OPTS[@]}" --target "$VENV/site" "${MOTO_REQS[@]}" >&2 || die "pip install --target failed"
    "$PY" -c 'import sys; print(sys.executable)' >"$VENV/site/.ics-s3-python"
    echo "$MARK_TEXT" >"$VENV/site/.ics-s3-ok"
    installed env "PYTHONPATH=$VENV/site" "$(cat "$VENV/site/.ics-s3-python")" "$ROOT/scripts/s3_server.py"
}

# ------------------------------------------------------------------ state ---

# Is the pid in $PIDFILE a live (non-zombie) moto process?
running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -e moto -e s3_server.py || return 1
        # Zombie (exited, not yet reaped) does not count.
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    fi
    echo "$pid"
}

print_env() {
    local port="$1"
    printf 'ICS_TEST_S3_ENDPOINT=http://%s:%s\n' "$HOST" "$port"
    printf 'ICS_TEST_S3_REGION=%s\n' "$REGION"
    printf 'ICS_TEST_S3_ACCESS_KEY=%s\n' "$ACCESS_KEY"
    printf 'ICS_TEST_S3_SECRET_KEY=%s\n' "$SECRET_KEY"
}

free_port() {
    "$PY" - "$HOST" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
s.close()
EOF
}

# wait_ready URL PID TIMEOUT -> 0 answered, 1 timeout, 2 process died
wait_ready() {
    "$PY" - "$@" <<'EOF'
import os, sys, time, urllib.request, urllib.error
url, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def alive():
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    if not alive():
        sys.exit(2)
    try:
        # An S3 ListBuckets with a dummy SigV4 header: loads moto's S3 backend too.
        req = urllib.request.Request(url, headers={"Authorization":
            "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=" + "0" * 64})
        opener.open(req, timeout=2).read()
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)  # any HTTP answer means it is up
    except Exception:
        time.sleep(0.1)
sys.exit(1)
EOF
}

# --------------------------------------------------------------- commands ---

cmd_start() {
    local pid port
    if pid="$(running_pid)" && [ -f "$PORTFILE" ]; then
        port="$(cat "$PORTFILE")"
        log "already running (pid $pid, port $port)"
        print_env "$port"
        return 0
    fi
    rm -f "$PIDFILE" "$PORTFILE"

    ensure_moto
    mkdir -p "$STATE"

    local attempt rc t0=$SECONDS
    for attempt in 1 2 3; do
        port="$(free_port)"
        log "starting moto on $HOST:$port (log: $LOGFILE)"
        # Let python cache bytecode in the venv even if the caller's
        # environment says PYTHONDONTWRITEBYTECODE: later starts take ~1 s, not ~3 s.
        env -u PYTHONDONTWRITEBYTECODE "${MOTO_CMD[@]}" -H "$HOST" -p "$port" </dev/null >"$LOGFILE" 2>&1 &
        pid=$!
        echo "$pid" >"$PIDFILE"
        echo "$port" >"$PORTFILE"
        rc=0
        wait_ready "http://$HOST:$port/" "$pid" "$TIMEOUT" || rc=$?
        if [ "$rc" = 0 ]; then
            log "ready in $((SECONDS - t0))s (pid $pid)"
            print_env "$port"
            return 0
        fi
        if [ "$rc" = 2 ] && grep -qi "address already in use" "$LOGFILE"; then
            log "port $port was taken meanwhile; retrying"
            rm -f "$PIDFILE" "$PORTFILE"
            continue
        fi
        break
    done
    log "moto did not come up (rc=$rc); last log lines:"
    tail -n 20 "$LOGFILE" >&2 || true
    cmd_stop
    exit 1
}

cmd_env() {
    local pid
    pid="$(running_pid)" && [ -f "$PORTFILE" ] || die "no S3 server running (run: $0 start)"
    print_env "$(cat "$PORTFILE")"
}

cmd_stop() {
    local pid i
    if pid="$(running_pid)"; then
        log "stopping moto (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
            log "still alive; SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$PIDFILE" "$PORTFILE"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
