#!/usr/bin/env bash
# Copy the generated sources the Helm chart embeds into charts/wsfleet/files/:
#   crds/*.yaml  ->  charts/wsfleet/files/crds/  (the one CRD source; never edit the copy)
# hack/verify-chart.sh fails CI when a copy is stale.
set -euo pipefail
IFS=$'\n\t'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${root}/charts/wsfleet/files/crds"
mkdir -p "${dest}"
shopt -s nullglob
for src in "${root}"/crds/*.yaml; do
  cp "${src}" "${dest}/$(basename "${src}")"
  echo "synced ${src#"${root}"/} -> ${dest#"${root}"/}/"
done
