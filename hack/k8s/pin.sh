#!/usr/bin/env bash
# Pin the control plane of hack/cluster.sh to another Kubernetes release:
#   bash hack/k8s/pin.sh v1.36.3
# Rewrites hack/k8s/go.mod: requires k8s.io/kubernetes at that release and maps every
# k8s.io staging module that the release's own go.mod requires at v0.0.0 onto the
# published v0.<minor>.<patch>; then lets `go get -tool` fill in go.sum and the tools
# (the four Kubernetes commands and the etcd server at the version the release requires).
set -euo pipefail
IFS=$'\n\t'

VERSION="${1:?usage: pin.sh vMAJOR.MINOR.PATCH}"
[[ "$VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "pin.sh: not a release: $VERSION" >&2; exit 2; }
STAGING="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROXY="${GOPROXY%%,*}"
PROXY="${PROXY:-https://proxy.golang.org}"
[[ "$PROXY" == "direct" || "$PROXY" == "off" ]] && PROXY="https://proxy.golang.org"

upstream="$(curl -fsS "$PROXY/k8s.io/kubernetes/@v/$VERSION.mod")"
mapfile -t staging < <(grep -E '^[[:space:]]+k8s\.io/[a-z0-9-]+ v0\.0\.0$' <<<"$upstream" | awk '{print $1}' | sort -u)
go_line="$(grep -E '^go ' <<<"$upstream")"
etcd="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' <<<"$upstream")"

{
  sed -n '1,/^module /p' "$HERE/go.mod" | sed '$d'
  echo "module wsfleet.dev/hack/k8s"
  echo
  echo "$go_line"
  echo
  echo "require k8s.io/kubernetes $VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m $STAGING"; done
  echo ")"
} >"$HERE/go.mod.new"
mv "$HERE/go.mod.new" "$HERE/go.mod"
rm -f "$HERE/go.sum"
cd "$HERE"
GOTOOLCHAIN=local GOFLAGS=-mod=mod go get -tool \
  "k8s.io/kubernetes/cmd/kube-apiserver@$VERSION" \
  "k8s.io/kubernetes/cmd/kube-controller-manager@$VERSION" \
  "k8s.io/kubernetes/cmd/kube-scheduler@$VERSION" \
  "k8s.io/kubernetes/cmd/kubectl@$VERSION" \
  "go.etcd.io/etcd/server/v3@$etcd"
echo "pinned $VERSION (${#staging[@]} staging modules at $STAGING)"
