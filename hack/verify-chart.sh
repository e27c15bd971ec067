#!/usr/bin/env bash
# Fail when a file the Helm chart embeds is stale:
#   - charts/wsfleet/files/crds/<crd> must equal crds/<crd> (run hack/sync-chart.sh);
#   - every wsfleet CRD in the chart must have its source in crds/;
#   - the values table of charts/wsfleet/README.md must match values.yaml;
#   - crds/ itself must match the operator's spec model (hack/verify-crd.sh, when present).
set -euo pipefail
IFS=$'\n\t'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-${root}/.venv/bin/python}"
[[ -x "${python}" ]] || python="$(command -v python3)"
chart_crds="${root}/charts/wsfleet/files/crds"
status=0
shopt -s nullglob

sources=("${root}"/crds/*.yaml)
if [[ ${#sources[@]} -eq 0 ]]; then
  echo "error: no CRD in ${root}/crds" >&2
  exit 1
fi
for src in "${sources[@]}"; do
  copy="${chart_crds}/$(basename "${src}")"
  if [[ ! -f "${copy}" ]]; then
    echo "error: ${copy#"${root}"/} is missing; run hack/sync-chart.sh" >&2
    status=1
  elif ! diff -u "${copy}" "${src}" >&2; then
    echo "error: ${copy#"${root}"/} is stale; run hack/sync-chart.sh" >&2
    status=1
  fi
done
# Copies without a source (a CRD renamed or removed in crds/). kopf.dev_* are chart-owned.
for copy in "${chart_crds}"/*.yaml; do
  name="$(basename "${copy}")"
  [[ "${name}" == kopf.dev_* ]] && continue
  if [[ ! -f "${root}/crds/${name}" ]]; then
    echo "error: ${copy#"${root}"/} has no source in crds/; run hack/sync-chart.sh and delete it" >&2
    status=1
  fi
done

if [[ -f "${root}/charts/wsfleet/README.md" ]]; then
  "${python}" "${root}/hack/chart_readme.py" --check || status=1
fi

if [[ -x "${root}/hack/verify-crd.sh" || -f "${root}/hack/verify-crd.sh" ]] && [[ "${WSFLEET_SKIP_VERIFY_CRD:-0}" != "1" ]]; then
  bash "${root}/hack/verify-crd.sh" >&2 || status=1
fi

if [[ ${status} -eq 0 ]]; then
  echo "ok: chart copies are current"
fi
exit "${status}"
