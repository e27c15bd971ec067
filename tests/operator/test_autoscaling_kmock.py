"""Autoscaling end to end: kopf + kmock + a real Prometheus scraping a /metrics we control."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from wsfleet_operator import kube, opmetrics
from wsfleet_operator.kube import KubeClient
from wsfleet_operator.prometheus import PrometheusClient
from wsfleet_operator.resources import DELETION_COST_ANNOTATION

from tests.operator.harness import (
    FakeGatewayMetrics,
    assert_rbac_covered,
    fleet_manifest,
    kube_api,
    pod_manifest,
    running_operator,
    user_client,
)
from tests.support.waiting import wait_until
from wsfleet.services import PrometheusServer

INTERVAL_S = 0.5
DOWN_WINDOW_S = 4


def fleet_spec(prom_url: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "redis": {"url": "redis://redis:6379/0"},
        "replicas": {"min": 2, "max": 6},
        "prometheus": {"url": prom_url, "staleAfterSeconds": 1, "timeoutSeconds": 2},
        "targets": {
            "connectionsPerPod": 100,
            "targetUtilization": 0.8,
            "scaleDownUtilization": 0.4,
            "switchLatencyP95Ms": None,
        },
        "behavior": {
            "intervalSeconds": INTERVAL_S,
            "scaleUp": {"stabilizationWindowSeconds": 0, "maxPodsPerMinute": 4},
            "scaleDown": {
                "stabilizationWindowSeconds": DOWN_WINDOW_S,
                "maxPodsPerMinute": 4,
                "maxPercentPerMinute": 100,
            },
        },
    }
    spec.update(overrides)
    return spec


@pytest.fixture
async def gateway_metrics(prometheus_server: PrometheusServer) -> AsyncIterator[FakeGatewayMetrics]:
    fake = FakeGatewayMetrics(connections={"chat-gw-0": 20, "chat-gw-1": 20})
    addr = await fake.start()
    prometheus_server.set_targets([addr], labels={"namespace": "default", "service": "chat"})
    try:
        yield fake
    finally:
        await fake.stop()


async def prom_connections(url: str) -> float | None:
    async with PrometheusClient(url) as prom:
        samples = await prom.query('sum(wsfleet_connections{namespace="default",service="chat"})')
    return samples[0].value if samples else None


async def replicas(client: KubeClient) -> int:
    dep = await client.get(kube.DEPLOYMENTS, "default", "chat-gateway")
    return int(dep["spec"]["replicas"]) if dep else -1


async def fleet_status(client: KubeClient) -> dict[str, Any]:
    cr = await client.get(kube.FLEETS, "default", "chat")
    return dict((cr or {}).get("status") or {})


def condition(status: dict[str, Any], type_: str) -> str | None:
    for c in status.get("conditions") or []:
        if c["type"] == type_:
            return str(c["status"])
    return None


def decisions() -> float:
    total = 0.0
    for metric in opmetrics.REGISTRY.collect():
        if metric.name == "wsfleet_operator_decisions":
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels.get("fleet") == "chat":
                    total += s.value
    return total


async def create_fleet(client: KubeClient, spec: dict[str, Any]) -> None:
    await client.create(kube.FLEETS, "default", fleet_manifest("chat", spec))
    await wait_until(
        lambda: client.get(kube.DEPLOYMENTS, "default", "chat-gateway"),
        timeout_s=30,
        message="deployment",
    )
    for pod in ("chat-gw-0", "chat-gw-1"):
        await client.create(kube.PODS, "default", pod_manifest(pod, "chat"))


def request_index(api: kmock.KubernetesEmulator, plural: str, predicate: Any) -> list[int]:
    out = []
    for i, r in enumerate(list(api)):
        if (
            r.action == kmock.action.UPDATE
            and r.resource is not None
            and r.resource.plural == plural
            and predicate(r)
        ):
            out.append(i)
    return out


async def test_load_scales_up_then_down_after_window_with_deletion_costs(
    prometheus_server: PrometheusServer, gateway_metrics: FakeGatewayMetrics
) -> None:
    async with kube_api() as (api, url), user_client(url) as client:
        async with running_operator(api, url):
            await create_fleet(client, fleet_spec(prometheus_server.url))
            await wait_until(lambda: fleet_status(client), timeout_s=30, message="first status")
            assert await replicas(client) == 2

            # load up: 600 connections on 2 pods of capacity 100 (target 80 each)
            gateway_metrics.connections = {"chat-gw-0": 350, "chat-gw-1": 250}
            await wait_until(
                lambda: _equals(prom_connections(prometheus_server.url), 600),
                timeout_s=30,
                message="prometheus sees the load",
            )
            mark = len(list(api))
            await wait_until(
                lambda: _equals(replicas(client), 6), timeout_s=30, message="scaled up to max"
            )
            # Each tick writes the status once, after any replica patch. Between the moment
            # Prometheus had the load and the scale-up patch, at most one tick (in flight,
            # its query answered before) may have written its status: the next tick acted.
            log = list(api)[mark:]
            scale_up = next(
                i
                for i, r in enumerate(log)
                if r.action == kmock.action.UPDATE
                and r.resource is not None
                and r.resource.plural == "deployments"
                and (r.data or {}).get("spec", {}).get("replicas") == 6
            )
            ticks_before = [
                r
                for r in log[:scale_up]
                if r.action == kmock.action.UPDATE and r.subresource == "status"
            ]
            assert len(ticks_before) <= 1
            status = await wait_until(
                lambda: _status_where(client, lambda s: s["lastDecision"]["current"] == 6),
                timeout_s=30,
                message="status after the scale-up",
            )
            assert status["lastDecision"]["cappedBy"] == ["max"]
            assert condition(status, "Capped") == "True"
            assert condition(status, "MetricsAvailable") == "True"

            # load gone: the emptier pod must be cheaper to delete; no scale-down before the window
            gateway_metrics.connections = {"chat-gw-0": 30, "chat-gw-1": 5}
            await wait_until(
                lambda: _equals(prom_connections(prometheus_server.url), 35),
                timeout_s=30,
                message="prometheus sees the drop",
            )
            dropped_at = time.time()
            await wait_until(
                lambda: _equals(replicas(client), 2), timeout_s=60, message="scaled down"
            )
            status = await wait_until(
                lambda: _status_where(client, lambda s: s["lastDecision"]["current"] == 2),
                timeout_s=30,
                message="status after the scale-down",
            )
            downs = [e for e in status["history"] if e["to"] < e["from"]]
            assert downs, status["history"]
            # the window starts at the first low observation (not before `dropped_at`)
            assert downs[0]["at"] >= dropped_at - 1.0 + DOWN_WINDOW_S - INTERVAL_S

            pods = {
                p: await client.get(kube.PODS, "default", p) for p in ("chat-gw-0", "chat-gw-1")
            }
            costs = {
                p: int(body["metadata"]["annotations"][DELETION_COST_ANNOTATION])
                for p, body in pods.items()
                if body is not None
            }
            assert costs == {"chat-gw-0": 30, "chat-gw-1": 5}
            cost_patches = request_index(api, "pods", lambda r: True)
            down_patches = request_index(
                api,
                "deployments",
                lambda r: (
                    isinstance(r.data, dict) and r.data.get("spec", {}).get("replicas", 99) < 6
                ),
            )
            assert cost_patches
            assert down_patches
            assert cost_patches[0] < down_patches[0]
        assert_rbac_covered(api)


async def test_prometheus_stopped_never_scales_down(
    prometheus_server: PrometheusServer, gateway_metrics: FakeGatewayMetrics
) -> None:
    async with kube_api() as (api, url), user_client(url) as client:
        async with running_operator(api, url):
            gateway_metrics.connections = {"chat-gw-0": 250, "chat-gw-1": 250}
            await wait_until(
                lambda: _equals(prom_connections(prometheus_server.url), 500), timeout_s=30
            )
            await create_fleet(client, fleet_spec(prometheus_server.url))
            await wait_until(lambda: _equals(replicas(client), 6), timeout_s=30)

            prometheus_server.stop()

            async def unavailable() -> bool:
                return condition(await fleet_status(client), "MetricsAvailable") == "False"

            await wait_until(unavailable, timeout_s=30, message="MetricsAvailable=False")
            base = decisions()
            await wait_until(lambda: decisions() >= base + 4, timeout_s=30, message="more ticks")
            assert await replicas(client) == 6
            status = await fleet_status(client)
            assert status["lastDecision"]["desired"] == 6
            assert condition(status, "Degraded") == "True"  # past staleAfterSeconds: fallback
        assert_rbac_covered(api)


async def test_dry_run_decides_but_never_patches(
    prometheus_server: PrometheusServer, gateway_metrics: FakeGatewayMetrics
) -> None:
    async with kube_api() as (api, url), user_client(url) as client, running_operator(api, url):
        gateway_metrics.connections = {"chat-gw-0": 400, "chat-gw-1": 400}
        await wait_until(
            lambda: _equals(prom_connections(prometheus_server.url), 800), timeout_s=30
        )
        await create_fleet(client, fleet_spec(prometheus_server.url, dryRun=True))

        async def decided() -> dict[str, Any] | None:
            status = await fleet_status(client)
            last = status.get("lastDecision") or {}
            return status if last.get("desired") == 6 else None

        status = await wait_until(decided, timeout_s=30, message="dry-run decision")
        assert status["mode"] == "DryRun"
        assert status["history"][-1]["dryRun"] is True
        assert await replicas(client) == 2
        assert not request_index(
            api, "deployments", lambda r: "replicas" in (r.data or {}).get("spec", {})
        )
        assert not request_index(api, "pods", lambda r: True)


async def _status_where(client: KubeClient, pred: Any) -> dict[str, Any] | None:
    status = await fleet_status(client)
    return status if status.get("lastDecision") and pred(status) else None


async def _equals(value: Any, expected: float) -> bool:
    got = await value
    return got is not None and abs(got - expected) < 1e-9
