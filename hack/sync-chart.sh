#!/usr/bin/env bash
# Regenerate what the Helm chart embeds or derives:
#   crds/*.yaml  ->  charts/wsfleet/files/crds/  (the one CRD source; never edit the copy)
#   charts/wsfleet/values.yaml  ->  the values table of charts/wsfleet/README.md
# hack/verify-chart.sh fails CI when either is stale.
set -euo pipefail
IFS=$'\n\t'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-${root}/.venv/bin/python}"
[[ -x "${python}" ]] || python="$(command -v python3)"
dest="${root}/charts/wsfleet/files/crds"
mkdir -p "${dest}"
shopt -s nullglob
for src in "${root}"/crds/*.yaml; do
  cp "${src}" "${dest}/$(basename "${src}")"
  echo "synced ${src#"${root}"/} -> ${dest#"${root}"/}/"
done
if [[ -f "${root}/charts/wsfleet/README.md" ]]; then
  "${python}" "${root}/hack/chart_readme.py"
  echo "regenerated charts/wsfleet/README.md values table"
fi
