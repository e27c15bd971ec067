"""An anomaly on the real control plane: real gateways behind kwok's pods, a real
Prometheus, a real API server that validates the status the operator writes.

One user hammers a gateway (refused after the per-user limit, counted all the same):
the operator raises `ConnectFlood` as condition `Anomaly`, a record in
`status.anomalies` (accepted by the CRD's structural schema), an Event
`AnomalyDetected` the API server stores, and its metric."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.cluster.fleets import scaling_fleet
from tests.cluster.harness import LocalCluster, OperatorProcess
from tests.cluster.podgateways import PodGateways
from tests.support.fleet_checks import eventually
from tests.support.kube import Kube
from wsfleet.loadtest.engine import mint_token
from wsfleet.services import PrometheusServer

FLOOD = "ConnectFlood"
HAMMER = 60


def anomaly_condition(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    got = kube.get(ns, "websocketfleet", name) or {}
    for c in (got.get("status") or {}).get("conditions") or []:
        if c["type"] == "Anomaly":
            return dict(c)
    return None


async def attempt(http: aiohttp.ClientSession, url: str, token: str) -> str:
    """One connection: its first frame's type, or the close code when it was refused."""
    async with http.ws_connect(f"{url}?token={token}", heartbeat=None) as ws:
        msg = await ws.receive(timeout=10)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return str(json.loads(msg.data)["type"])
        return f"closed {ws.close_code}"


async def test_a_connection_flood_raises_condition_event_and_metric(
    chart: LocalCluster,
    kube: Kube,
    operator: OperatorProcess,
    managed_namespace: str,
    prometheus_server: PrometheusServer,
) -> None:
    ns, name = managed_namespace, "flooded"
    anomalies = {
        "forSeconds": 0,
        "latency": {"enabled": False},
        "leak": {"enabled": False},
        "flood": {
            "minConnectsPerMinute": 30,
            "burstFactor": 3,
            "topShare": 0.5,
            "baselineSeconds": 60,
        },
    }
    kube.apply(ns, scaling_fleet(name, prometheus_server.url, anomalies=anomalies))
    async with (
        chart.admin_client() as admin,
        PodGateways(admin, ns, name, prometheus_server).running() as gw,
        aiohttp.ClientSession() as http,
    ):
        await eventually(lambda: len(gw.gateways) == 2, message="2 gateways behind 2 pods")
        await eventually(
            lambda: (anomaly_condition(kube, ns, name) or {}).get("reason") == "NoAnomaly",
            message="condition Anomaly=False (NoAnomaly) once metrics are usable",
        )
        target = gw.gateways[sorted(gw.gateways)[0]]
        token = mint_token(gw.secret, "mallory", "paid", 600)
        kinds = [await attempt(http, target.ws_url, token) for _ in range(HAMMER)]
        assert kinds.count("closed 4008") >= HAMMER - 10, kinds

        await eventually(
            lambda: (anomaly_condition(kube, ns, name) or {}).get("status") == "True",
            message="condition Anomaly=True",
        )

        got = anomaly_condition(kube, ns, name)
        assert got is not None
        assert got["reason"] == FLOOD, got
        fleet = kube.get(ns, "websocketfleet", name) or {}
        records = [r for r in fleet["status"].get("anomalies") or [] if r["signal"] == FLOOD]
        assert records, fleet["status"]
        assert records[-1]["subject"] == "fleet", records
        assert records[-1]["size"] >= 0.5, records
        events = [
            e
            for e in kube.items(ns, "events")
            if e.get("reason") == "AnomalyDetected"
            and (e.get("involvedObject") or {}).get("name") == name
        ]
        assert events, "no AnomalyDetected Event stored"
        assert events[0]["type"] == "Warning"
        assert FLOOD in events[0]["message"]
        on = operator.metric("wsfleet_operator_anomaly", namespace=ns, fleet=name, signal=FLOOD)
        raised = operator.metric(
            "wsfleet_operator_anomalies_total", namespace=ns, fleet=name, signal=FLOOD
        )
        assert (on, raised) == (1.0, 1.0)
