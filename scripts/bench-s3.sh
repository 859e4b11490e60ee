# Sourced by the benchmarks that run against the S3 test server (bench-events.sh,
# bench-backfill.sh): `source "$ROOT/scripts/bench-s3.sh" NAME`. Starts moto through
# scripts/s3-server.sh unless ICS_TEST_S3_ENDPOINT names a running server (its state in
# target/s3-bench-NAME), exports the ICS_TEST_S3_* variables, stops what it started on
# exit, and sets PY to the Python that has moto's packages (for the bench's driver).
started=""
if [ -z "${ICS_TEST_S3_ENDPOINT:-}" ]; then
    export ICS_S3_STATE_DIR="${ICS_S3_STATE_DIR:-$ROOT/target/s3-bench-$1}"
    eval "$(bash "$ROOT/scripts/s3-server.sh" start | sed 's/^/export /')"
    started=1
fi
trap '[ -n "$started" ] && bash "$ROOT/scripts/s3-server.sh" stop' EXIT
PY="$ICS_S3_VENV/bin/python"
[ -x "$PY" ] || PY="$(cat "$ICS_S3_VENV/site/.ics-s3-python" 2>/dev/null || echo python3)"
