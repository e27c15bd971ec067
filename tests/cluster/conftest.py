"""Fixtures of the real-cluster suite: one control plane per session (hack/cluster.sh),
the chart installed on it by helm, and a token of the chart's ServiceAccount.

Needs the binaries of `make cluster-build` (Go and its module proxy). Where they are
missing the suite is skipped and says why; in CI (WSFLEET_CI=1) it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import (
    LocalCluster,
    OperatorProcess,
    cluster_sh,
    helm_binary,
    install_chart,
    token_kubeconfig,
    unavailable_reason,
)
from tests.support.kube import Kube
from tests.support.prewarm_gateway import gateway  # noqa: F401 (a fixture)

REASON = unavailable_reason()
IN_CI = os.environ.get("WSFLEET_CI") == "1"
AUTH_SECRET = "wsfleet-auth"


def require_cluster() -> None:
    if REASON is None:
        return
    if IN_CI:
        pytest.fail(f"real-cluster tests cannot run in CI: {REASON}")
    pytest.skip(f"real-cluster tests skipped: {REASON}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if "real-cluster tests skipped" in str(r.longrepr)
    ]
    if skipped and REASON is not None:
        terminalreporter.write_line(
            f"tests/cluster: {len(skipped)} real-cluster tests skipped: {REASON}"
        )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane for the whole session (about 12 s to start)."""
    require_cluster()
    state = tmp_path_factory.mktemp("cluster") / "state"
    cluster_sh("up", cluster_dir=state)
    try:
        yield LocalCluster(state)
    finally:
        cluster_sh("down", cluster_dir=state)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return helm_binary()


@pytest.fixture(scope="session")
def chart(cluster: LocalCluster, helm_bin: str) -> LocalCluster:
    """The chart installed the way the docs say, with peering; the operator itself runs out
    of cluster (`OperatorProcess`), so the chart's own Deployment is scaled to zero."""
    install_chart(
        cluster,
        helm_bin,
        "--set",
        "operator.replicaCount=0",
        "--set",
        "operator.peering.enabled=true",
    )
    return cluster


@pytest.fixture(scope="session")
def operator_kubeconfig(chart: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kubectl create token` of the chart's ServiceAccount, as a kubeconfig."""
    return token_kubeconfig(chart, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture
def kube(chart: LocalCluster) -> Kube:
    """kubectl as the cluster admin (the platform engineer)."""
    return chart.kube


def auth_secret() -> dict[str, Any]:
    """The Secret the examples name (`auth.jwtSecretRef`, `auth.apiKeySecretRef`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": AUTH_SECRET},
        "type": "Opaque",
        "stringData": {"jwt-secret": secrets.token_urlsafe(48), "api-key": secrets.token_hex(32)},
    }


@contextlib.contextmanager
def fresh_namespace(kube: Kube, wait: bool = True) -> Iterator[str]:
    """A new namespace with the auth Secret; deleted afterwards. With `wait`, its fleets are
    deleted first while the test's operator still runs (it releases kopf's finalizers);
    the namespace itself then goes in the background (the namespace controller takes
    5-15 s, which no test needs to wait for)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create_namespace(name)
    kube.apply(name, auth_secret())
    try:
        yield name
    finally:
        if kube.get("", "namespace", name) is not None:  # unless the test deleted it
            release(kube, name, wait)


def release(kube: Kube, name: str, wait: bool) -> None:
    if wait:
        gone = kube.run(
            "delete", "websocketfleets", "--all", "-n", name, "--wait=true", "--timeout=60s",
            check=False,
        )  # fmt: skip
        if gone.returncode != 0:
            # no operator left to release kopf's finalizers (a test that stopped its own):
            # release them so that the namespace can go
            for fleet in kube.items(name, "websocketfleets"):
                kube.kubectl(
                    "patch", "-n", name, "websocketfleet", fleet["metadata"]["name"],
                    "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                )  # fmt: skip
    kube.delete_namespace(name)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace with the auth Secret; no operator."""
    with fresh_namespace(kube) as name:
        yield name


@pytest.fixture(scope="module")
def shared_namespace(chart: LocalCluster) -> Iterator[str]:
    """One namespace for a module whose tests never run an operator (names kept apart)."""
    with fresh_namespace(chart.kube, wait=False) as name:
        yield name


@pytest.fixture
def operator(operator_kubeconfig: Path) -> Iterator[OperatorProcess]:
    """One operator, cluster-wide, standalone, with the chart SA's token."""
    op = OperatorProcess(operator_kubeconfig, extra_args=["--no-forecast"]).start()
    try:
        yield op
    finally:
        op.close()


@pytest.fixture
def managed_namespace(kube: Kube, operator: OperatorProcess) -> Iterator[str]:
    """A namespace deleted while its operator still runs (finalizers released by it)."""
    with fresh_namespace(kube) as name:
        yield name
