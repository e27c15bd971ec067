"""Operator faults on the real control plane: SIGKILL mid-scale and a restart; two
instances with kopf peering."""

from __future__ import annotations

import json
from pathlib import Path

from wsfleet_operator.resources import SCALE_CHANGES_ANNOTATION

from tests.cluster.fleets import fleet, replicas, scaling_fleet
from tests.cluster.harness import (
    LocalCluster,
    OperatorProcess,
    audit_now,
    denied,
    describe,
    running_operator,
)
from tests.cluster.podgateways import PodGateways
from tests.support.fleet_checks import assert_fleet_runs, eventually
from tests.support.kube import Kube
from wsfleet.services import PrometheusServer


def one_pod_a_minute(name: str, prometheus_url: str) -> dict[str, object]:
    doc = scaling_fleet(name, prometheus_url)
    doc["spec"]["behavior"]["scaleUp"] = {
        "stabilizationWindowSeconds": 0,
        "maxPodsPerMinute": 1,
        "maxPercentPerMinute": 1000,
        "selectPolicy": "Min",
    }
    return doc


def decisions(op: OperatorProcess, ns: str, name: str) -> float:
    return op.metric("wsfleet_operator_decisions_total", namespace=ns, fleet=name)


async def test_killed_mid_scale_and_restarted_neither_repeats_nor_loses_the_step(
    chart: LocalCluster,
    kube: Kube,
    operator_kubeconfig: Path,
    namespace: str,
    prometheus_server: PrometheusServer,
) -> None:
    """One pod a minute: the operator adds the first, is SIGKILLed the moment the Deployment
    shows it, and a new instance starts. The new one must not add a second pod within that
    minute (its rate limit still counts the first step, recorded on the Deployment), and the
    step it did not see finish is in the fleet's history exactly once."""
    ns, name = namespace, "killed"
    kube.apply(ns, one_pod_a_minute(name, prometheus_server.url))
    first = OperatorProcess(operator_kubeconfig, identity="op-first").start()
    try:
        async with (
            chart.admin_client() as admin,
            PodGateways(admin, ns, name, prometheus_server).running() as gw,
        ):
            await eventually(lambda: len(gw.gateways) == 2, message="2 gateways")
            a, b = sorted(gw.gateways)
            await gw.connect(a, 20)
            await gw.connect(b, 20)  # wants 5 pods, may add one a minute
            await eventually(lambda: replicas(kube, ns, name) == 3, message="the first step")
            first.kill()

            with running_operator(operator_kubeconfig, identity="op-second") as second:
                start = decisions(second, ns, name)
                await eventually(
                    lambda: decisions(second, ns, name) >= start + 5,
                    message="5 decisions of the restarted operator",
                )
                assert replicas(kube, ns, name) == 3, "a second step within the same minute"

                def history() -> list[dict[str, object]]:
                    got = kube.get(ns, "websocketfleet", name) or {}
                    return list((got.get("status") or {}).get("history") or [])

                await eventually(lambda: history(), message="status.history")
                steps = [(h["from"], h["to"]) for h in history()]
                assert steps == [(2, 3)], steps
                dep = kube.get(ns, "deployment", f"{name}-gateway")
                assert dep is not None
                recorded = json.loads(dep["metadata"]["annotations"][SCALE_CHANGES_ANNOTATION])
                assert [(r[1], r[2]) for r in recorded] == [(2, 3)]
                kube.kubectl("delete", "websocketfleet", name, "-n", ns, "--wait=true")
    finally:
        first.close()


async def test_two_instances_only_one_acts(
    chart: LocalCluster, kube: Kube, operator_kubeconfig: Path, namespace: str
) -> None:
    """kopf peering (the chart's ClusterKopfPeering): the higher priority works, the other
    pauses; when the first stops, the second takes over."""
    ns = namespace
    peering = ["--no-forecast", "--peering", "wsfleet"]
    active = OperatorProcess(
        operator_kubeconfig, identity="op-high", extra_args=[*peering, "--priority", "200"]
    ).start()
    standby = OperatorProcess(
        operator_kubeconfig, identity="op-low", extra_args=[*peering, "--priority", "100"]
    ).start()
    try:
        await eventually(lambda: "Pausing" in standby.log(), message="the standby pauses")
        manifest = fleet("ha")
        kube.apply(ns, manifest)
        await assert_fleet_runs(kube, ns, manifest)
        kube.kubectl(
            "patch", "websocketfleet", "ha", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"replicas": {"min": 3, "max": 10}}}),
        )  # fmt: skip
        await eventually(lambda: replicas(kube, ns, "ha") == 3, message="min raised to 3")

        def ours(agent: str, since: str | None = None) -> list[dict[str, object]]:
            return [w for w in chart.operator_writes(ns, since) if f"({agent})" in w["userAgent"]]

        assert ours("op-high"), "the active instance wrote nothing"
        assert ours("op-low") == [], describe(ours("op-low"))

        active.stop()  # graceful: kopf leaves the peering at once
        handover = audit_now()
        kube.kubectl(
            "patch", "websocketfleet", "ha", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"replicas": {"min": 4, "max": 10}}}),
        )  # fmt: skip
        await eventually(lambda: replicas(kube, ns, "ha") == 4, message="the standby took over")
        assert ours("op-low", handover), "the standby never acted"
        assert ours("op-high", handover) == []
        everything = chart.operator_writes(ns)
        assert denied(everything) == [], describe(denied(everything))
        kube.kubectl("delete", "websocketfleet", "ha", "-n", ns, "--wait=true")
    finally:
        standby.close()
        active.close()
