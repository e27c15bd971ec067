"""Scaling end to end on the real control plane: real gateways behind kwok's pods, a real
Prometheus, real WebSocket clients; the real ReplicaSet controller picks the pods to remove
by the pod-deletion-cost the operator set."""

from __future__ import annotations

from typing import Any

from tests.cluster.fleets import condition, replicas, scaling_fleet
from tests.cluster.harness import LocalCluster, OperatorProcess, denied, describe
from tests.cluster.podgateways import PodGateways
from tests.support.fleet_checks import eventually
from tests.support.kube import Kube
from wsfleet.services import PrometheusServer


async def test_load_scales_up_and_down_removing_the_emptiest_pods(
    chart: LocalCluster,
    kube: Kube,
    operator: OperatorProcess,
    managed_namespace: str,
    prometheus_server: PrometheusServer,
) -> None:
    ns, name = managed_namespace, "wedding"
    kube.apply(ns, scaling_fleet(name, prometheus_server.url))
    async with (
        chart.admin_client() as admin,
        PodGateways(admin, ns, name, prometheus_server).running() as gw,
    ):
        await eventually(lambda: len(gw.gateways) == 2, message="2 gateways behind 2 pods")
        first, second = sorted(gw.gateways)

        # 1. load: 40 connections want ceil(40 / 8) = 5 pods; kwok makes them Ready and a
        #    gateway starts behind each
        await gw.connect(first, 20)
        await gw.connect(second, 20)
        await eventually(lambda: replicas(kube, ns, name) == 5, message="scaled up to 5")
        await eventually(lambda: len(gw.gateways) == 5, message="5 gateways running")
        newer = sorted(set(gw.gateways) - {first, second})

        # 2. Prometheus goes away and the load with it: never a scale-down on missing data
        prometheus_server.stop()
        await gw.disconnect(first)
        await gw.disconnect(second)
        await eventually(
            lambda: condition(kube, ns, name, "MetricsAvailable") == "False",
            message="MetricsAvailable=False",
        )
        ticks = operator.metric("wsfleet_operator_decisions_total", namespace=ns, fleet=name)
        await eventually(
            lambda: (
                operator.metric("wsfleet_operator_decisions_total", namespace=ns, fleet=name)
                >= ticks + 5
            ),
            message="5 decisions without metrics",
        )
        assert replicas(kube, ns, name) == 5
        assert gw.stopped == []

        # 3. Prometheus is back; a few connections stay, unevenly: 3 on the first pod, 4 on
        #    the newest. Want ceil(7 / 8) = 1 -> min 2: three pods go. Without the costs the
        #    ReplicaSet controller would remove the newest pods; with them, the emptiest.
        prometheus_server.start()
        keep = {first, newer[-1]}
        await gw.connect(first, 3)
        await gw.connect(newer[-1], 4)
        await eventually(lambda: replicas(kube, ns, name) == 2, message="scaled down to 2")
        await eventually(lambda: set(gw.gateways) == keep, timeout_s=60, message="the kept pods")
        assert sorted(gw.stopped) == sorted({second, *newer} - keep)
        await eventually(
            lambda: condition(kube, ns, name, "MetricsAvailable") == "True", message="metrics back"
        )

    operator_calls = [
        e for e in chart.audit() if e["user"]["username"].endswith(":wsfleet") and
        (e.get("objectRef") or {}).get("namespace") == ns
    ]  # fmt: skip
    cost_patches = [
        e for e in operator_calls if e["verb"] == "patch" and e["objectRef"]["resource"] == "pods"
    ]
    assert len(cost_patches) >= 3, describe(operator_calls)
    assert denied(operator_calls) == [], describe(denied(operator_calls))


async def test_dry_run_decides_but_never_patches(
    chart: LocalCluster,
    kube: Kube,
    operator: OperatorProcess,
    managed_namespace: str,
    prometheus_server: PrometheusServer,
) -> None:
    ns, name = managed_namespace, "rehearsal"
    kube.apply(ns, scaling_fleet(name, prometheus_server.url, dryRun=True))
    async with (
        chart.admin_client() as admin,
        PodGateways(admin, ns, name, prometheus_server).running() as gw,
    ):
        await eventually(lambda: len(gw.gateways) == 2, message="2 gateways")
        for pod in sorted(gw.gateways):
            await gw.connect(pod, 30)  # 60 connections: the fleet would want its max, 6

        def decided() -> dict[str, Any] | None:
            status = (kube.get(ns, "websocketfleet", name) or {}).get("status") or {}
            last = status.get("lastDecision") or {}
            return status if last.get("desired") == 6 else None

        status = await eventually(decided, message="a dry-run decision for 6")
        assert status["mode"] == "DryRun"
        assert status["history"][-1]["dryRun"] is True
        assert replicas(kube, ns, name) == 2
    writes = [
        w
        for w in chart.operator_writes(ns)
        if w["objectRef"]["resource"] in ("deployments", "pods") and w["verb"] == "patch"
    ]
    assert writes == [], describe(writes)
