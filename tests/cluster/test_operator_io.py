"""The operator's edges against the real API server: its small Kubernetes client, the
cache pre-warm's reads (pods, Secrets), and the `wsfleet operator` process itself."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from wsfleet_operator import kube
from wsfleet_operator.kube import ConflictError
from wsfleet_operator.prewarm import (
    PodAddress,
    kubernetes_prewarmer,
    read_secret_key,
    ready_pod_addresses,
)
from wsfleet_operator.reconcile import FleetRef, reconcile
from wsfleet_operator.resources import common_labels
from wsfleet_operator.spec import parse_spec

from tests.cluster.fleets import fleet
from tests.cluster.harness import LocalCluster, running_operator
from tests.support.fleet_checks import eventually
from tests.support.kube import Kube
from tests.support.prewarm_gateway import API_KEY, NOW, seed
from wsfleet.services import free_port


async def test_client_semantics_on_the_real_server(chart: LocalCluster, namespace: str) -> None:
    """Conflict, missing objects, server-side label selection, new credentials."""
    async with chart.admin_client() as client:
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"x": "1"}},
        }
        created = await client.create(kube.CONFIGMAPS, namespace, cm)
        assert created["metadata"]["uid"]  # the server's, not the test's
        with pytest.raises(ConflictError):
            await client.create(kube.CONFIGMAPS, namespace, cm)
        await client.create(kube.CONFIGMAPS, namespace, {**cm, "metadata": {"name": "b"}})
        assert await client.get(kube.CONFIGMAPS, namespace, "nope") is None
        assert await client.patch(kube.CONFIGMAPS, namespace, "nope", {"data": {}}) is None
        assert not await client.delete(kube.CONFIGMAPS, namespace, "nope")
        labelled = await client.list(kube.CONFIGMAPS, namespace, {"x": "1"})
        assert [c["metadata"]["name"] for c in labelled] == ["a"]
        assert await client.list(kube.CONFIGMAPS, namespace, {"x": "2"}) == []
        assert await client.delete(kube.CONFIGMAPS, namespace, "b")
        await client.reconnect(client.conn)  # a rotated credential: the next call works
        assert await client.get(kube.CONFIGMAPS, namespace, "a") is not None


def manual_pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": common_labels("chat")},
        "spec": {"nodeName": node, "containers": [{"name": "gateway", "image": "x"}]},
    }


def play_kubelet(kube_: Kube, namespace: str, pod: str, ip: str, ready: bool) -> None:
    """Set a pod's status as its kubelet would (the pod sits on a node no kwok manages)."""
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    kube_.kubectl(
        "patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


async def test_prewarm_reads_pods_and_secrets_and_warms_a_real_gateway(
    chart: LocalCluster, kube: Kube, namespace: str, gateway: Any, redis_server: Any
) -> None:
    await seed(gateway, redis_server.url)
    node = f"manual-{namespace}"
    kube.apply("default", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    try:
        for name, ip, ready in (("chat-gw-0", "127.0.0.1", True), ("chat-gw-1", "10.0.0.9", False)):
            kube.apply(namespace, manual_pod(name, node))
            play_kubelet(kube, namespace, name, ip, ready)
        b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
        kube.apply(namespace, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-auth"},
            "data": {"api-key": b64(API_KEY)},
        })  # fmt: skip
        kube.apply(namespace, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-redis"},
            "data": {"url": b64(redis_server.url)},
        })  # fmt: skip
        spec = parse_spec({
            "auth": {
                "jwtSecretRef": {"name": "chat-auth", "key": "jwt"},
                "apiKeySecretRef": {"name": "chat-auth", "key": "api-key"},
            },
            "redis": {"secretRef": {"name": "chat-redis", "key": "url"}},
            "gateway": {"adminPort": gateway.admin_port},
            "forecast": {"enabled": True, "prewarmChannels": 2},
        })  # fmt: skip
        async with chart.admin_client() as client:
            assert await ready_pod_addresses(client, namespace, "chat") == [
                PodAddress("chat-gw-0", "127.0.0.1")
            ]
            assert spec.auth is not None
            assert spec.auth.api_key_secret_ref is not None
            missing = spec.auth.api_key_secret_ref.model_copy(update={"key": "nope"})
            assert await read_secret_key(client, namespace, missing) is None
            report = await kubernetes_prewarmer(client, namespace, "chat", lambda: spec).maybe(
                spec, NOW, NOW + 60
            )
            assert report is not None
            assert report.ok, report.message()
            no_key = parse_spec({"auth": {"disabled": True}, "forecast": {"enabled": True}})
            report = await kubernetes_prewarmer(client, namespace, "chat", lambda: no_key).maybe(
                no_key, NOW, NOW + 60
            )
            assert report is not None
            assert "apiKeySecretRef" in str(report.problem)
        assert sorted(gateway.protection.cache.l1.keys("meta")) == ["venue-0", "venue-1"]
    finally:
        # no kubelet confirms these pods' end: remove them at once, then their node
        kube.run("delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force",
                 check=False)  # fmt: skip
        kube.kubectl("delete", "node", node, "--wait=false")


def http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode()) if resp.status == 200 else None
    except OSError:
        return None


async def test_operator_process_serves_liveness_and_metrics(
    chart: LocalCluster, kube: Kube, operator_kubeconfig: Path, namespace: str
) -> None:
    """`wsfleet operator` as the chart's container runs it: kopf's /healthz, its metrics."""
    live = free_port()
    with running_operator(
        operator_kubeconfig,
        identity="op-cli",
        extra_args=["--liveness-port", str(live)],
        env={"WSFLEET_OPERATOR_LIVENESS_HOST": "127.0.0.1"},
    ) as op:
        await eventually(lambda: http(f"http://127.0.0.1:{live}/healthz"), message="liveness")
        kube.apply(namespace, fleet("cli"))
        await eventually(
            lambda: kube.get(namespace, "deployment", "cli-gateway"), message="deployment"
        )
        body = await eventually(
            lambda: (
                (op.metrics_text() or "")
                if "decisions_total{" in (op.metrics_text() or "")
                else None
            ),
            message="decisions in the operator's metrics",
        )
        assert "wsfleet_operator_prometheus_errors_total" in body
        assert "wsfleet_operator_kube_writes_total" in body
        kube.kubectl("delete", "websocketfleet", "cli", "-n", namespace, "--wait=true")


async def test_reconcile_into_a_terminating_namespace_stops_quietly(
    chart: LocalCluster, kube: Kube
) -> None:
    """A namespace held in Terminating by a finalizer: creates there are refused (403,
    NamespaceTerminating); reconcile stops without an error and without retrying."""
    ns = "t-terminating"
    kube.create_namespace(ns)
    hold = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "hold", "finalizers": ["wsfleet.io/test-hold"]}}  # fmt: skip
    kube.apply(ns, hold)
    kube.delete_namespace(ns)
    try:
        await eventually(
            lambda: (
                (kube.get("", "namespace", ns) or {}).get("status", {}).get("phase")
                == "Terminating"
            ),
            message="namespace terminating",
        )
        raw = fleet("late")["spec"]
        async with chart.admin_client() as client:
            result = await reconcile(client, FleetRef("late", ns, "uid-late"), raw)
        assert result.valid
        assert result.created == []
        assert kube.get(ns, "deployment", "late-gateway") is None
    finally:
        kube.kubectl("patch", "configmap", "hold", "-n", ns, "--type=merge",
                     "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip
