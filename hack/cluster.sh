#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, without a container engine:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl of one pinned
# release, and the etcd that release is built and tested with, all compiled from the Go
# module proxy through the wrapper module hack/k8s; and kwok, which plays the kubelet of
# fake nodes so that the Pods of a Deployment become Running and Ready.
#
# Why not Debian's etcd-server (3.4.23): Kubernetes 1.36 needs etcd >= 3.5.13 for
# RequestWatchProgress. On 3.4 the API server turns that storage feature off, client-go
# 0.36's streaming lists fail ("a watch stream was requested by the client but the
# required storage feature RequestWatchProgress is disabled"), and kwok never sees a pod
# deleted: scaled-down pods stay Terminating forever.
#
#   bash hack/cluster.sh build    build the binaries once (cached outside the checkout)
#   bash hack/cluster.sh up       start a cluster; the admin kubeconfig is $DIR/kubeconfig
#   bash hack/cluster.sh down     stop it; no process, port, lock or state left behind
#   bash hack/cluster.sh status   say whether it runs (exit 0) or not (exit 3)
#   bash hack/cluster.sh env      print `export KUBECONFIG=... PATH=...` for a shell
#   bash hack/cluster.sh built    exit 0 when the cached binaries are current, else say why
#
# RBAC authorization, TLS everywhere on the API server, service-account tokens issued
# and signed by the API server (`kubectl create token` works), the real controllers
# (ReplicaSet, garbage collector, namespace, service-account, ...) and scheduler.
#
# Env:
#   WSFLEET_CLUSTER_DIR   state dir (default: .cluster/ in the checkout, git-ignored)
#   WSFLEET_CACHE_DIR     build cache (default: ${XDG_CACHE_HOME:-~/.cache}/wsfleet)
#   WSFLEET_KWOK_NODES    fake nodes to create (default 2)
set -euo pipefail
IFS=$'\n\t'

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_MODULE="$ROOT/hack/k8s"
K8S_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$K8S_MODULE/go.mod")"
KWOK_VERSION="v0.8.0"
CACHE="${WSFLEET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wsfleet}"
K8S_BIN="$CACHE/k8s/$K8S_VERSION/bin"
KWOK_BIN="$CACHE/kwok/$KWOK_VERSION/bin"
DIR="${WSFLEET_CLUSTER_DIR:-$ROOT/.cluster}"
NODES="${WSFLEET_KWOK_NODES:-2}"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# The API server's ClusterIP range; kubernetes.default is its first address.
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1"
POD_CIDR="10.244.0.1/16"

export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ----------------------------------------------------------------------------- build

module_hash() {
  cat "$K8S_MODULE/go.mod" "$K8S_MODULE/go.sum" | sha256sum | cut -c1-16
}

# the Go toolchain's usual home, for shells whose PATH lacks it
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi

check_go() {
  command -v go >/dev/null 2>&1 ||
    die "go not found: the control plane is built from the Go module proxy (Go >= 1.26 needed)"
  local want have
  want="$(awk '$1 == "go" {print $2}' "$K8S_MODULE/go.mod")"
  have="$(go env GOVERSION)"
  have="${have#go}"
  if [[ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]]; then
    die "go $have is older than the go $want that Kubernetes $K8S_VERSION needs"
  fi
}

# Compile with `go build -v` and print a line every 100 packages (the list is long).
compile() {
  local what="$1"
  shift
  local started
  started="$(now)"
  log "building $what ..."
  "$@" 2>&1 | awk -v what="$what" '
    /^go: downloading/ { d++; if (d % 50 == 0) printf "cluster:   %s: %d modules downloaded\n", what, d; next }
    /^[a-zA-Z0-9_.\/-]+$/ { n++; if (n % 100 == 0) printf "cluster:   %s: %d packages compiled\n", what, n; next }
    { print }' >&2 || die "building $what failed (output above)"
  log "built $what in $(since "$started") s"
}

# The modules first, with retries (a cold cache fetches about 300 from the proxy; one
# dropped connection should not cost the whole build)
download_modules() {
  local attempt
  for attempt in 1 2 3; do
    log "downloading the Go modules of hack/k8s (attempt $attempt) ..."
    if (cd "$K8S_MODULE" && go mod download -x 2>&1 | awk '
        /^# get / { n++; if (n % 50 == 0) printf "cluster:   %d modules fetched\n", n }
        /error|Error/ { print }' >&2 && go mod verify >/dev/null); then
      return 0
    fi
    sleep $((attempt * 5))
  done
  die "could not download the Go modules of hack/k8s (see above)"
}

build_k8s() {
  local stamp="$K8S_BIN/.module-hash" hash
  hash="$(module_hash)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
    log "Kubernetes $K8S_VERSION binaries cached in $K8S_BIN"
    return
  fi
  check_go
  local minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  local date
  date="$(curl -fsS "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/$K8S_VERSION.info" 2>/dev/null |
    sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' || true)"
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${date:-1970-01-01T00:00:00Z}"
  done
  mkdir -p "$K8S_BIN"
  rm -f "$stamp"
  download_modules
  (cd "$K8S_MODULE" && compile "Kubernetes $K8S_VERSION (apiserver, controller-manager, scheduler, kubectl)" \
    go build -v -ldflags "$ldflags" -o "$K8S_BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  # the etcd server of the version this release requires (go.etcd.io/etcd/server/v3)
  local etcd_version
  etcd_version="$(cd "$K8S_MODULE" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
  (cd "$K8S_MODULE" && compile "etcd $etcd_version" \
    go build -v -ldflags "-s -w" -o "$K8S_BIN/etcd" go.etcd.io/etcd/server/v3)
  echo "$hash" >"$stamp"
}

build_kwok() {
  if [[ -x "$KWOK_BIN/kwok" && -f "$KWOK_BIN/stages.yaml" ]]; then
    log "kwok $KWOK_VERSION cached in $KWOK_BIN"
    return
  fi
  check_go
  mkdir -p "$KWOK_BIN"
  # kwok's go.mod has no replace directives, so `go install` of the pinned version works
  compile "kwok $KWOK_VERSION" env GOFLAGS= GOBIN="$KWOK_BIN" \
    go install -v -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # kwok's own stages (from its module): nodes become Ready, scheduled pods Running and
  # Ready, deleted pods go away; the same set kwokctl uses by default
  local src
  src="$(env GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    sed -n 's/.*"Dir": *"\([^"]*\)".*/\1/p')"
  [[ -d "$src" ]] || die "kwok module source not found"
  local stage first=1
  : >"$KWOK_BIN/stages.yaml.new"
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    [[ $first == 1 ]] || echo "---" >>"$KWOK_BIN/stages.yaml.new"
    first=0
    cat "$src/kustomize/stage/$stage.yaml" >>"$KWOK_BIN/stages.yaml.new"
  done
  mv "$KWOK_BIN/stages.yaml.new" "$KWOK_BIN/stages.yaml"
}

cmd_build() {
  local started
  started="$(now)"
  build_k8s
  build_kwok
  log "binaries ready in $(since "$started") s: $K8S_BIN, $KWOK_BIN"
}

# ----------------------------------------------------------------------------- up

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# alive = exists and is not a zombie (a component outlives the `up` that started it, and
# the init of a container or sandbox does not always reap what it inherits)
pid_alive() {
  [[ -f "$1" ]] || return 1
  local pid state
  pid="$(cat "$1")"
  state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != "Z" ]]
}

running() {
  local c
  for c in "${COMPONENTS[@]}"; do
    pid_alive "$DIR/pids/$c.pid" && return 0
  done
  return 1
}

# openssl helpers: one CA signs the serving certificate and every client certificate
new_cert() { # name subject [san]
  local name="$1" subject="$2" san="${3:-}"
  local pki="$DIR/pki"
  openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$san" ]]; then
      echo "extendedKeyUsage=serverAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}

make_pki() {
  local pki="$DIR/pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  openssl genrsa -out "$pki/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=wsfleet-cluster-ca" -days 30 \
    -sha256 -out "$pki/ca.crt" 2>/dev/null
  new_cert apiserver "/CN=kube-apiserver" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_IP"
  new_cert admin "/O=system:masters/CN=wsfleet-admin"
  new_cert controller-manager "/CN=system:kube-controller-manager"
  new_cert scheduler "/CN=system:kube-scheduler"
  new_cert kwok "/O=system:masters/CN=kwok"
  # the service-account token signing key pair
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# The API server's audit log ($DIR/audit.log, JSON lines) records every request of users
# other than the control plane's own components: the operator's, kubectl's, helm's. Tests
# read it to prove what the operator did (and did not do) against the real server.
write_audit_policy() {
  cat >"$DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver", "kwok"]
- level: None
  userGroups: ["system:serviceaccounts:kube-system", "system:nodes"]
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version"]
- level: Metadata
EOF
}

b64() { base64 -w0 <"$1"; }

write_kubeconfig() { # file user
  local file="$1" user="$2"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: wsfleet
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$DIR/pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(b64 "$DIR/pki/$user.crt")
    client-key-data: $(b64 "$DIR/pki/$user.key")
contexts:
- name: wsfleet
  context:
    cluster: wsfleet
    user: $user
    namespace: default
current-context: wsfleet
EOF
  chmod 600 "$file"
}

start() { # component args...
  local name="$1"
  shift
  # its own session, so that `down` can stop it and every child it might start
  # (fd 9, the lock of `up`, is not passed on: it must go when `up` ends)
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$DIR/pids/$name.pid"
}

wait_for() { # what timeout_s command...
  local what="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    local c
    for c in "${COMPONENTS[@]}"; do
      if [[ -f "$DIR/pids/$c.pid" ]] && ! pid_alive "$DIR/pids/$c.pid"; then
        log "$c exited; the end of $DIR/logs/$c.log:"
        tail -n 30 "$DIR/logs/$c.log" >&2 || true
        return 1
      fi
    done
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout} s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=10s "$@"; }

api_ready() { [[ "$(kubectl_admin get --raw /readyz 2>/dev/null)" == "ok" ]]; }
watchable() { # api-path...: a watch on each is served (no "storage is (re)initializing")
  local path out
  for path in "$@"; do
    out="$(kubectl_admin get --raw "$path?watch=1&timeoutSeconds=1" 2>&1)" || return 1
    [[ "$out" != *'"type":"ERROR"'* ]] || return 1
  done
}
etcd_ready() { curl -fsS "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
nodes_ready() {
  local ready
  ready="$(kubectl_admin get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
  [[ "$ready" -ge "$NODES" ]]
}
default_sa() { kubectl_admin get serviceaccount default -n default; }
root_ca() { kubectl_admin get configmap kube-root-ca.crt -n default; }
scheduler_leads() { kubectl_admin get --raw /api/v1/namespaces/default/pods >/dev/null && pid_alive "$DIR/pids/kube-scheduler.pid"; }

fake_nodes() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
EOF
  done
}

cmd_up() {
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  if ! flock -n 9; then
    die "another 'up' or 'down' of $DIR is in progress"
  fi
  if running; then
    # shellcheck disable=SC1091
    source "$DIR/state.env"
    log "already running in $DIR (API server https://127.0.0.1:$API_PORT): KUBECONFIG=$DIR/kubeconfig"
    exec 9>&-
    return 0
  fi
  local started
  started="$(now)"
  [[ -x "$K8S_BIN/kube-apiserver" && -f "$K8S_BIN/.module-hash" ]] ||
    die "the Kubernetes $K8S_VERSION binaries are not built: bash hack/cluster.sh build (or make cluster)"
  [[ "$(cat "$K8S_BIN/.module-hash")" == "$(module_hash)" ]] ||
    die "the cached binaries are of another hack/k8s/go.mod: bash hack/cluster.sh build"
  [[ -x "$KWOK_BIN/kwok" ]] || die "kwok is not built: bash hack/cluster.sh build"

  # a stopped cluster's leftovers (a crash, a reboot) are not reused
  find "$DIR" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
  mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/bin"
  ETCD_PORT="$(free_port)"
  ETCD_PEER_PORT="$(free_port)"
  API_PORT="$(free_port)"
  cat >"$DIR/state.env" <<EOF
K8S_VERSION=$K8S_VERSION
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
EOF
  make_pki
  write_kubeconfig "$DIR/kubeconfig" admin
  write_kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "$DIR/scheduler.kubeconfig" scheduler
  write_kubeconfig "$DIR/kwok.kubeconfig" kwok
  write_audit_policy
  ln -s "$K8S_BIN/kubectl" "$DIR/bin/kubectl"
  ln -s "$KWOK_BIN/kwok" "$DIR/bin/kwok"

  trap 'log "up failed; stopping what started"; stop_all; exit 1' ERR

  # a throw-away cluster: no fsync (etcd's own flag for tests), so a busy disk cannot stall it
  start etcd "$K8S_BIN/etcd" --name wsfleet --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "wsfleet=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new --log-level warn --unsafe-no-fsync
  wait_for etcd 30 etcd_ready

  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --cert-dir "$DIR/pki" \
    --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
    --client-ca-file "$DIR/pki/ca.crt" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$DIR/pki/sa.pub" \
    --service-account-signing-key-file "$DIR/pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/audit.log" \
    --audit-log-format json --audit-log-maxsize 200 \
    --allow-privileged=true --profiling=false --v=1
  wait_for "the API server (/readyz)" 60 api_ready

  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --secure-port 0 --leader-elect=false --use-service-account-credentials=true \
    --root-ca-file "$DIR/pki/ca.crt" --service-cluster-ip-range "$SERVICE_CIDR" \
    --cluster-signing-cert-file "$DIR/pki/ca.crt" --cluster-signing-key-file "$DIR/pki/ca.key" \
    --profiling=false --v=1
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --secure-port 0 --leader-elect=false --profiling=false --v=1
  start kwok "$KWOK_BIN/kwok" --kubeconfig "$DIR/kwok.kubeconfig" \
    --config "$KWOK_BIN/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds 40 --cidr "$POD_CIDR" --node-ip 127.0.0.1

  fake_nodes | kubectl_admin apply -f - >/dev/null
  wait_for "$NODES Ready kwok nodes" 60 nodes_ready
  wait_for "the default ServiceAccount (service-account controller)" 60 default_sa
  wait_for "kube-root-ca.crt (root-ca publisher)" 60 root_ca
  # /readyz can say ok while a watch cache is still initializing: a watch then ends with
  # an ERROR event (429), which kopf takes as fatal for that resource's watcher
  wait_for "watches served" 60 watchable /api/v1/pods /api/v1/services /api/v1/configmaps \
    /api/v1/namespaces /api/v1/events /apis/apps/v1/deployments \
    /apis/policy/v1/poddisruptionbudgets /apis/coordination.k8s.io/v1/leases
  trap - ERR
  exec 9>&-
  log "up in $(since "$started") s: Kubernetes $K8S_VERSION at https://127.0.0.1:$API_PORT, $NODES kwok nodes"
  log "KUBECONFIG=$DIR/kubeconfig (kubectl: $DIR/bin/kubectl)"
}

# ----------------------------------------------------------------------------- down

stop_one() { # component: SIGTERM to its process group, SIGKILL after 20 s
  local c="$1" pid
  pid_alive "$DIR/pids/$c.pid" || return 0
  pid="$(cat "$DIR/pids/$c.pid")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while pid_alive "$DIR/pids/$c.pid"; do
    if ((SECONDS >= deadline)); then
      log "$c did not stop within 20 s of SIGTERM: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 5))
    fi
    sleep 0.1
  done
}

stop_all() {
  # the clients of the API server first, then the API server, etcd last
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_one "${COMPONENTS[$i]}"
  done
}

cmd_down() {
  if [[ ! -d "$DIR" ]]; then
    log "no cluster in $DIR"
    return 0
  fi
  exec 9>"$DIR/.lock"
  flock -w 60 9 || die "another 'up' or 'down' of $DIR holds its lock"
  stop_all
  exec 9>&-
  rm -rf "$DIR"
  log "down: $DIR removed"
}

cmd_status() {
  if [[ -d "$DIR" ]] && running; then
    # shellcheck disable=SC1091
    source "$DIR/state.env"
    local c
    for c in "${COMPONENTS[@]}"; do
      if pid_alive "$DIR/pids/$c.pid"; then
        echo "$c: running (pid $(cat "$DIR/pids/$c.pid"))"
      else
        echo "$c: STOPPED (see $DIR/logs/$c.log)"
      fi
    done
    echo "API server: https://127.0.0.1:$API_PORT ($K8S_VERSION)"
    echo "KUBECONFIG=$DIR/kubeconfig"
    return 0
  fi
  echo "no cluster running in $DIR"
  return 3
}

cmd_built() {
  local missing=()
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd; do
    [[ -x "$K8S_BIN/$b" ]] || missing+=("$b")
  done
  [[ -x "$KWOK_BIN/kwok" && -f "$KWOK_BIN/stages.yaml" ]] || missing+=("kwok")
  if ((${#missing[@]})); then
    echo "not built in $CACHE: ${missing[*]}"
    return 3
  fi
  if [[ "$(cat "$K8S_BIN/.module-hash" 2>/dev/null)" != "$(module_hash)" ]]; then
    echo "the binaries in $K8S_BIN are of another hack/k8s/go.mod"
    return 3
  fi
  echo "Kubernetes $K8S_VERSION, kwok $KWOK_VERSION in $CACHE"
}

cmd_env() {
  echo "export KUBECONFIG=$DIR/kubeconfig"
  echo "export PATH=$DIR/bin:\$PATH"
}

case "${1:-}" in
build) cmd_build ;;
up)
  cmd_up
  ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
built) cmd_built ;;
versions) echo "kubernetes=$K8S_VERSION kwok=$KWOK_VERSION" ;;
*)
  sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
