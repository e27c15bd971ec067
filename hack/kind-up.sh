#!/usr/bin/env bash
# Create (or reuse) a kind cluster with wsfleet installed, for tests/e2e and Tilt:
#   1. kind cluster "$WSFLEET_KIND_CLUSTER" (default wsfleet) from hack/kind/cluster.yaml
#   2. build the gateway and operator images (targets of ./Dockerfile), load them into kind
#   3. a plain Prometheus in namespace "monitoring" (hack/kind/prometheus.yaml)
#   4. the chart (charts/wsfleet) in namespace wsfleet-system, with its Redis
# Needs: docker (a running engine), kind (https://kind.sigs.k8s.io, e.g.
# `go install sigs.k8s.io/kind@v0.30.0`); helm and kubectl come from hack/helm.sh.
# Env: WSFLEET_KIND_CLUSTER, WSFLEET_KIND_NODE_IMAGE, WSFLEET_SKIP_BUILD=1, WSFLEET_TAG.
set -euo pipefail
IFS=$'\n\t'

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${WSFLEET_KIND_CLUSTER:-wsfleet}"
NODE_IMAGE="${WSFLEET_KIND_NODE_IMAGE:-kindest/node:v1.34.0}"
TAG="${WSFLEET_TAG:-dev}"
GATEWAY_IMAGE="wsfleet/gateway:${TAG}"
OPERATOR_IMAGE="wsfleet/operator:${TAG}"
NAMESPACE="wsfleet-system"

log() { echo "kind-up: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker not found"
docker info >/dev/null 2>&1 || die "docker is installed but no engine answers (docker info failed)"
command -v kind >/dev/null 2>&1 || die "kind not found: go install sigs.k8s.io/kind@v0.30.0"

HELM="$(bash "$ROOT/hack/helm.sh")"
KUBECTL="$(dirname "$HELM")/kubectl"
CONTEXT="kind-${CLUSTER}"
kc() { "$KUBECTL" --context "$CONTEXT" "$@"; }

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER ($NODE_IMAGE)"
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" \
    --config "$ROOT/hack/kind/cluster.yaml" --wait 120s
fi

if [[ "${WSFLEET_SKIP_BUILD:-0}" != "1" ]]; then
  log "building $GATEWAY_IMAGE and $OPERATOR_IMAGE"
  # One Dockerfile, two targets: the second build reuses every layer up to `runtime`.
  docker build -f "$ROOT/Dockerfile" --target gateway -t "$GATEWAY_IMAGE" "$ROOT"
  docker build -f "$ROOT/Dockerfile" --target operator -t "$OPERATOR_IMAGE" "$ROOT"
fi
kind load docker-image --name "$CLUSTER" "$GATEWAY_IMAGE" "$OPERATOR_IMAGE"

log "installing Prometheus (namespace monitoring)"
kc apply -f "$ROOT/hack/kind/prometheus.yaml"
kc -n monitoring rollout status deployment/prometheus --timeout=180s

log "installing the wsfleet chart (namespace $NAMESPACE)"
"$HELM" upgrade --install wsfleet "$ROOT/charts/wsfleet" \
  --kube-context "$CONTEXT" --namespace "$NAMESPACE" --create-namespace \
  --set image.repository=wsfleet/operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set redis.enabled=true \
  --wait --timeout 5m
kc -n "$NAMESPACE" rollout status deployment/wsfleet-operator --timeout=180s
kc -n "$NAMESPACE" rollout status statefulset/wsfleet-redis --timeout=180s
log "ready: kubectl --context $CONTEXT get wsf -A"
echo "$CONTEXT"
