#!/usr/bin/env bash
# Regenerate the WebSocketFleet CRD from operator/wsfleet_operator/spec.py and
# fail when crds/ differs (the committed file is stale).
#   hack/verify-crd.sh           check
#   hack/verify-crd.sh --update  rewrite crds/ in place
set -euo pipefail
IFS=$'\n\t'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-${root}/.venv/bin/python}"
crd="${root}/crds/wsfleet.io_websocketfleets.yaml"
tmp="$(mktemp)"
trap 'rm -f "${tmp}"' EXIT

PYTHONPATH="${root}/operator${PYTHONPATH:+:${PYTHONPATH}}" "${python}" -m wsfleet_operator.crd >"${tmp}"

if [[ "${1:-}" == "--update" ]]; then
  cp "${tmp}" "${crd}"
  echo "updated ${crd}"
  exit 0
fi

if ! diff -u "${crd}" "${tmp}"; then
  echo "error: ${crd} is stale; run hack/verify-crd.sh --update" >&2
  exit 1
fi
echo "ok: ${crd} matches spec.py"
