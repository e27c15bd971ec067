"""A control plane of its own for what touches the whole cluster: hack/cluster.sh up and
down, and the chart's install, upgrade (monitoring APIs appearing, the namespaced mode)
and uninstall."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import auth_secret, require_cluster
from tests.cluster.fleets import fleet
from tests.cluster.harness import (
    CLUSTER_SH,
    OPERATOR_NS,
    OPERATOR_USER,
    RELEASE,
    LocalCluster,
    cluster_sh,
    denied,
    describe,
    install_chart,
    running_operator,
    token_kubeconfig,
)
from tests.support.fleet_checks import assert_fleet_runs
from tests.support.kube import Kube

ROOT = Path(__file__).resolve().parents[2]
UP_BOUND_S = 60.0
"""The issue's bound for `up` with cached binaries (it takes about 12 s here)."""
TENANT = "tenant"
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


def pinned_version() -> str:
    for line in (ROOT / "hack" / "k8s" / "go.mod").read_text().splitlines():
        if line.startswith("require k8s.io/kubernetes "):
            return line.split()[-1]
    raise AssertionError("hack/k8s/go.mod pins no k8s.io/kubernetes")


def monitoring_crd(kind: str) -> dict[str, object]:
    """A stand-in for prometheus-operator's CRD of `kind` (any spec accepted)."""
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def release_objects(kube: Kube) -> list[str]:
    """kind/name of everything labelled as the release's, cluster-wide (every listable kind
    the API server serves, so nothing the chart made can hide)."""
    kinds = kube.kubectl("api-resources", "--verbs=list", "-o", "name").split()
    skip = {"events", "events.events.k8s.io"}
    listed = kube.run(
        "get", ",".join(k for k in kinds if k not in skip), "-A",
        "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json",
    )  # fmt: skip
    items = json.loads(listed.stdout)["items"]
    return sorted(f"{i['kind']}/{i['metadata']['name']}" for i in items)


def monitoring_objects(kube: Kube) -> list[str]:
    out = []
    for kind in MONITORING_KINDS:
        proc = kube.run("get", kind.lower() + "s", "-n", OPERATOR_NS, "-o", "name", check=False)
        out += proc.stdout.split()
    return sorted(out)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_of(directory: Path) -> list[str]:
    """Live (not zombie) processes whose command line names `directory`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = next(
                line.split()[1]
                for line in (proc / "status").read_text().splitlines()
                if line.startswith("State:")
            )
        except (OSError, StopIteration):
            continue
        if str(directory) in cmdline and state != "Z":
            found.append(f"{proc.name} {cmdline[:120]}")
    return found


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Brought up by the first test, brought down by the last (or here, if one failed)."""
    require_cluster()
    cluster = LocalCluster(tmp_path_factory.mktemp("own-cluster") / "state")
    try:
        yield cluster
    finally:
        if cluster.dir.exists():
            cluster_sh("down", cluster_dir=cluster.dir, check=False)


def test_up_is_quick_and_says_when_it_already_runs(own_cluster: LocalCluster) -> None:
    started = time.monotonic()
    out = cluster_sh("up", cluster_dir=own_cluster.dir)
    took = time.monotonic() - started
    assert took < UP_BOUND_S, out
    assert "up in" in out

    again = cluster_sh("up", cluster_dir=own_cluster.dir)
    assert "already running" in again
    assert str(own_cluster.kubeconfig) in again

    # while one `up` or `down` holds the lock, another is refused at once
    with (own_cluster.dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = subprocess.run(
            ["bash", str(CLUSTER_SH), "up"],
            capture_output=True,
            text=True,
            env={**os.environ, "WSFLEET_CLUSTER_DIR": str(own_cluster.dir)},
            check=False,
            timeout=30,
        )
    assert proc.returncode != 0
    assert "in progress" in proc.stderr

    kube = own_cluster.kube
    versions = json.loads(kube.kubectl("version", "-o", "json"))
    assert versions["serverVersion"]["gitVersion"] == pinned_version()
    assert versions["clientVersion"]["gitVersion"] == pinned_version()
    nodes = kube.items(None, "nodes")
    assert len(nodes) >= 2
    assert all(n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake" for n in nodes)


async def test_chart_install_upgrade_uninstall(own_cluster: LocalCluster, helm_bin: str) -> None:
    kube = own_cluster.kube
    monitoring = (
        "--set", "prometheus.rules.enabled=true",
        "--set", "prometheus.serviceMonitor.enabled=true",
        "--set", "prometheus.podMonitor.enabled=true",
    )  # fmt: skip

    # install with the defaults, monitoring asked for but its API absent: skipped cleanly
    install_chart(own_cluster, helm_bin, *monitoring)
    crd = kube.get("", "customresourcedefinition", "websocketfleets.wsfleet.io")
    assert crd is not None
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    deploy = kube.get(OPERATOR_NS, "deployment", "wsfleet-operator")
    assert deploy is not None
    assert deploy["status"].get("availableReplicas") == 1  # kwok runs the operator's pod
    assert kube.get("", "clusterrole", "wsfleet") is not None
    assert kube.get("", "clusterrolebinding", "wsfleet") is not None
    assert kube.get(OPERATOR_NS, "serviceaccount", "wsfleet") is not None
    assert monitoring_objects(kube) == []

    # the monitoring APIs appear; an upgrade with changed values puts the objects in
    for kind in MONITORING_KINDS:
        kube.apply("default", monitoring_crd(kind))
        plural = kind.lower() + "s"
        kube.kubectl("wait", "--for=condition=Established", f"crd/{plural}.monitoring.coreos.com")
    kube.create_namespace(TENANT)
    own_cluster.helm(
        helm_bin, "upgrade", RELEASE, str(ROOT / "charts" / "wsfleet"), "-n", OPERATOR_NS,
        "--wait", *monitoring, "--set", "operator.logLevel=debug",
        "--set", f"operator.watchNamespace={TENANT}",
    )  # fmt: skip
    assert monitoring_objects(kube) == [
        "podmonitor.monitoring.coreos.com/wsfleet-gateways",
        "prometheusrule.monitoring.coreos.com/wsfleet",
        "servicemonitor.monitoring.coreos.com/wsfleet-operator",
    ]
    deploy = kube.get(OPERATOR_NS, "deployment", "wsfleet-operator")
    assert deploy is not None
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--log-level=debug" in args
    assert f"--namespace={TENANT}" in args
    # namespaced mode: a Role in the tenant namespace instead of the ClusterRole
    assert kube.get("", "clusterrole", "wsfleet") is None
    assert kube.get(TENANT, "role", "wsfleet") is not None
    history = own_cluster.helm(helm_bin, "history", RELEASE, "-n", OPERATOR_NS)
    assert "upgrade complete" in history.lower()

    # the namespaced operator works with just that Role
    token = token_kubeconfig(own_cluster, own_cluster.dir / "operator.kubeconfig")
    kube.apply(TENANT, auth_secret())
    manifest = fleet("tenant-chat")
    namespaced = ["--namespace", TENANT]
    with running_operator(
        token, identity="op-tenant", extra_args=["--no-forecast"], scope=namespaced
    ):
        kube.apply(TENANT, manifest)
        await assert_fleet_runs(kube, TENANT, manifest)
    asked = [e for e in own_cluster.audit() if e["user"]["username"] == OPERATOR_USER]
    assert denied(asked) == [], describe(denied(asked))

    # uninstall: what docs/upgrade.md says stays (the CRDs, and fleets with their gateways)
    own_cluster.helm(helm_bin, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait")
    assert release_objects(kube) == ["CustomResourceDefinition/websocketfleets.wsfleet.io"]
    assert kube.get(TENANT, "websocketfleet", "tenant-chat") is not None
    assert kube.get(TENANT, "deployment", "tenant-chat-gateway") is not None


def test_down_leaves_nothing_behind(own_cluster: LocalCluster) -> None:
    state = yaml.safe_load(own_cluster.kubeconfig.read_text())
    port = int(state["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1])
    assert listening(port)
    assert processes_of(own_cluster.dir)
    out = cluster_sh("down", cluster_dir=own_cluster.dir)
    assert "removed" in out
    assert processes_of(own_cluster.dir) == []
    assert not listening(port)
    assert not own_cluster.dir.exists()  # state, logs, lock: all gone
    assert "no cluster" in cluster_sh("status", cluster_dir=own_cluster.dir, check=False)
