"""Anomalies injected on real servers and raised by the operator's autoscaler tick: a real
Prometheus scraping what the test makes misbehave, the real `AnomalyWatch` querying it,
the `Autoscaler` turning findings into condition `Anomaly`, Events, metrics and
`status.anomalies`.

Latency and the leak: a real gateway cannot be made slow or leaky on purpose, so a
/metrics endpoint the test controls (`anomaly_support.AnomalyExporter`, the gateway's
metric names and buckets) stands in for the gateways; it advances one step per scrape.
The flood is made against real gateway processes in test_anomaly_flood.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from wsfleet_operator.spec import AnomalySignal
from wsfleet_operator.status import status_essence

from tests.operator.anomaly_support import (
    LABELS,
    MIB,
    NAME,
    NAMESPACE,
    AnomalyExporter,
    Watched,
    anomaly_of,
    anomaly_spec,
    operator_metric,
    raised,
    watched,
)
from wsfleet.services import PrometheusServer

SWITCH = AnomalySignal.SWITCH_LATENCY.value
DELIVERY = AnomalySignal.DELIVERY_LATENCY.value
LEAK = AnomalySignal.MEMORY_LEAK.value


@pytest.fixture
async def exporter(prometheus_server: PrometheusServer) -> AsyncIterator[AnomalyExporter]:
    fake = AnomalyExporter()
    prometheus_server.set_targets([await fake.start()], labels=LABELS)
    try:
        yield fake
    finally:
        await fake.stop()


def anomaly_part(w: Watched) -> tuple[object, object]:
    """What the status says about anomalies (what a status write would carry)."""
    essence = status_essence(w.results[-1].status_patch())
    return anomaly_of(w.results[-1]), essence.get("anomalies")


async def test_slow_switches_raise_a_latency_anomaly_that_resolves(
    prometheus_server: PrometheusServer, exporter: AnomalyExporter
) -> None:
    spec = anomaly_spec(
        prometheus_server.url,
        {
            "latency": {
                "historySeconds": 120,
                "stepSeconds": 1,
                "refitSeconds": 3600,  # fitted once, on the normal minutes
                "minPoints": 8,
            },
            "flood": {"enabled": False},
            "leak": {"enabled": False},
        },
    )
    w = watched(spec)
    try:
        # 1. normal: the expectation is fitted from the first 8 s of history
        await w.tick_until(
            lambda _: w.watch.baselines.get(AnomalySignal.SWITCH_LATENCY) is not None,
            message="a switch latency baseline",
        )
        baseline = w.watch.baselines[AnomalySignal.SWITCH_LATENCY]
        assert baseline is not None
        assert 0.002 < baseline.expected(w.results[-1].status.last_decision.at) < 0.006  # type: ignore[union-attr]
        for _ in range(5):
            result = await w.tick()
            assert anomaly_of(result) is not None
            assert anomaly_of(result)["status"] == "False"  # type: ignore[index]
        assert anomaly_of(result)["reason"] == "NoAnomaly"  # type: ignore[index]
        assert w.events == []

        # 2. switches become 80x slower: raised after forSeconds, once
        exporter.switch_s = 0.25
        result = await w.tick_until(lambda r: raised(r, SWITCH), message="SwitchLatency raised")
        condition = anomaly_of(result)
        assert condition is not None
        assert (condition["status"], condition["reason"]) == ("True", SWITCH)
        assert "channel switch p95" in condition["message"]
        (record,) = result.status_patch()["anomalies"]
        assert record["size"] >= 6.0
        assert record["unit"] == "z"
        (event,) = [e for e in w.events if e.reason == "AnomalyDetected"]
        assert event.type == "Warning"
        assert event.message.startswith("SwitchLatency: channel switch p95 ")
        labels = {"namespace": NAMESPACE, "fleet": NAME}
        assert operator_metric("wsfleet_operator_anomaly", **labels, signal=SWITCH) == 1
        assert operator_metric("wsfleet_operator_anomaly", **labels, signal=DELIVERY) == 0
        assert operator_metric("wsfleet_operator_anomaly_score", **labels, signal=SWITCH) >= 1
        assert operator_metric("wsfleet_operator_anomalies_total", **labels, signal=SWITCH) >= 1
        # while it holds, the status does not change: no write per tick
        held = anomaly_part(w)
        for _ in range(3):
            await w.tick()
            assert anomaly_part(w) == held

        # 3. back to normal: resolved after forSeconds, with an Event
        exporter.switch_s = 0.003
        result = await w.tick_until(
            lambda r: not raised(r, SWITCH), message="SwitchLatency resolved"
        )
        assert anomaly_of(result)["status"] == "False"  # type: ignore[index]
        (record,) = result.status_patch()["anomalies"]
        assert record["resolvedAt"] >= record["at"]
        assert [e.reason for e in w.events] == ["AnomalyDetected", "AnomalyResolved"]
        assert operator_metric("wsfleet_operator_anomaly", **labels, signal=SWITCH) == 0
        assert not any(raised(r, DELIVERY) for r in w.results)  # delivery stayed normal
    finally:
        await w.close()


async def test_a_pod_whose_memory_grows_raises_a_leak_for_that_pod(
    prometheus_server: PrometheusServer, exporter: AnomalyExporter
) -> None:
    spec = anomaly_spec(
        prometheus_server.url,
        {
            "latency": {"enabled": False},
            "flood": {"enabled": False},
            "leak": {
                "windowSeconds": 10,
                "stepSeconds": 1,
                "minGrowthBytes": 8 * MIB,
                "minGrowthRatio": 0.05,
            },
        },
    )
    w = watched(spec)
    try:
        # 1. both pods' RSS follows their connections' peak: no leak over a whole window
        await w.tick_until(lambda _: exporter.scrapes >= 24, message="12 s of scrapes")
        assert not any(r.status_patch().get("anomalies") for r in w.results)
        assert anomaly_of(w.results[-1])["reason"] == "NoAnomaly"  # type: ignore[index]

        # 2. gw-1 starts leaking 2 MiB a scrape (4 MiB/s)
        exporter.pods["gw-1"].leak_per_scrape = 2 * MIB
        result = await w.tick_until(lambda r: raised(r, LEAK, "gw-1"), message="gw-1 leaks")
        (record,) = result.status_patch()["anomalies"]
        assert record["subject"] == "gw-1"
        assert record["unit"] == "bytes/h"
        assert record["size"] >= record["threshold"]
        assert "pod gw-1: memory its connections do not explain grows" in record["message"]
        assert "memory per connection +" in record["message"]
        condition = anomaly_of(result)
        assert (condition["status"], condition["reason"]) == ("True", LEAK)  # type: ignore[index]
        (event,) = w.events
        assert (event.reason, event.type) == ("AnomalyDetected", "Warning")
        assert event.message.startswith("MemoryLeak (gw-1): pod gw-1")
        assert not any(raised(r, LEAK, "gw-0") for r in w.results)
    finally:
        await w.close()
