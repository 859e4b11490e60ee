#!/usr/bin/env bash
# Validates packaging/kubernetes/*.yaml against the Kubernetes API's own schemas, offline:
#   bash scripts/k8s-validate.sh
# kubernetes-validate (scripts/k8s-requirements.txt, installed once into target/k8s-venv;
# installing needs the package index, validating needs no network) checks each
# built-in resource (Deployment, Job, Service, Secret) strictly: an unknown or misplaced
# field, a wrong type or a missing required field fails. It has no schemas for the CRDs
# (KEDA's ScaledObject and TriggerAuthentication, the Prometheus Operator's
# ServiceMonitor, the Kustomization) and says so; integration/kubernetes.rs checks
# their fields against the daemon. Run by scripts/test.sh: a manifest that does not
# validate fails the test command; a validator that cannot be installed is reported
# as skipped.
#
# Environment: ICS_K8S_VENV (default <repo>/target/k8s-venv), ICS_K8S_VERSION (the
# Kubernetes version to validate against, default 1.33.0: backoffLimitPerIndex and
# FailIndex are GA there), PYTHON (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ICS_K8S_VENV:-$ROOT/target/k8s-venv}"
VERSION="${ICS_K8S_VERSION:-1.33.0}"
PY="${PYTHON:-python3}"
REQS="$ROOT/scripts/k8s-requirements.txt"
MARK="$(sha256sum "$REQS" | cut -d" " -f1)"
export PIP_ROOT_USER_ACTION=ignore

log() { printf 'k8s-validate: %s\n' "$*" >&2; }

if [ "$(cat "$VENV/.ics-k8s-ok" 2>/dev/null)" != "$MARK" ]; then
    log "installing scripts/k8s-requirements.txt into $VENV"
    if ! { "$PY" -m venv "$VENV" >/dev/null 2>&1 &&
        "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
            --prefer-binary -r "$REQS" >&2; }; then
        log "SKIPPED: could not install the validator (no package index?); the manifests are not schema-checked"
        exit 0
    fi
    echo "$MARK" >"$VENV/.ics-k8s-ok"
fi

# --strict: fields the schema does not know are errors, not ignored.
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$VERSION" "$ROOT"/packaging/kubernetes/*.yaml
log "packaging/kubernetes/*.yaml valid against Kubernetes $VERSION"
