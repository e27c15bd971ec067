#!/usr/bin/env bash
# Run the kind end-to-end tests: bring the cluster up (hack/kind-up.sh), run
# tests/e2e against it, delete the cluster unless WSFLEET_E2E_KEEP=1.
# Needs docker with a running engine and kind; see hack/kind-up.sh.
#   WSFLEET_E2E_REUSE=1  skip kind-up (cluster and release already there)
#   WSFLEET_E2E_KEEP=1   keep the cluster afterwards
set -euo pipefail
IFS=$'\n\t'

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${WSFLEET_KIND_CLUSTER:-wsfleet}"
export WSFLEET_KIND_CLUSTER="$CLUSTER"

if [[ "${WSFLEET_E2E_REUSE:-0}" != "1" ]]; then
  bash "$ROOT/hack/kind-up.sh"
fi

cleanup() {
  if [[ "${WSFLEET_E2E_KEEP:-0}" != "1" && "${WSFLEET_E2E_REUSE:-0}" != "1" ]]; then
    kind delete cluster --name "$CLUSTER" || true
  fi
}
trap cleanup EXIT

HELM="$(bash "$ROOT/hack/helm.sh")"
TOOLS="$(dirname "$HELM")"
export PATH="$TOOLS:$PATH"
export WSFLEET_E2E=1
export WSFLEET_E2E_CONTEXT="kind-${CLUSTER}"
cd "$ROOT"
"$ROOT/.venv/bin/python" -m pytest -p no:cacheprovider -m e2e tests/e2e -v -rs "$@"
