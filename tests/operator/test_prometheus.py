"""The Prometheus client and metrics source against a real Prometheus."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest
from wsfleet_operator.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusMetricsSource,
    render_query,
)
from wsfleet_operator.spec import FleetSpec, QueriesSpec, parse_spec

from tests.operator.harness import FakeGatewayMetrics
from tests.support.waiting import wait_until
from wsfleet.services import PrometheusServer, free_port


@pytest.fixture
async def scraped(prometheus_server: PrometheusServer) -> AsyncIterator[FakeGatewayMetrics]:
    fake = FakeGatewayMetrics(connections={"p-0": 11, "p-1": 31})
    addr = await fake.start()
    prometheus_server.set_targets([addr], labels={"namespace": "ns", "service": "chat"})
    try:
        yield fake
    finally:
        await fake.stop()


def test_default_queries_read_metrics_the_gateway_serves() -> None:
    from wsfleet_gateway import metrics

    served = set(metrics.METRIC_NAMES)
    for name, query in QueriesSpec().model_dump().items():
        used = set(re.findall(r"wsfleet_[a-z_]+", query))
        assert used, name
        for metric in used:
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            assert base in served, f"{name} reads {metric}, the gateway serves {sorted(served)}"


def test_render_query_fills_placeholders() -> None:
    spec = parse_spec({"prometheus": {"rateWindow": "30s"}})
    q = render_query(spec.prometheus.queries.message_rate, spec, "shop", "chat")
    assert q == 'sum(rate(wsfleet_messages_total{namespace="shop",service="chat"}[30s]))'


async def test_instant_and_range_queries(
    prometheus_server: PrometheusServer, scraped: FakeGatewayMetrics
) -> None:
    async with PrometheusClient(prometheus_server.url) as prom:

        async def total() -> float | None:
            samples = await prom.query('sum(wsfleet_connections{service="chat"})')
            return samples[0].value if samples else None

        assert await wait_until(total, timeout_s=30, message="scraped") == 42
        per_pod = await prom.query("wsfleet_connections")
        assert {s.labels["pod"]: s.value for s in per_pod} == {"p-0": 11, "p-1": 31}
        assert (await prom.query("scalar(vector(3))"))[0].value == 3
        end = time.time()
        series = await prom.query_range("sum(wsfleet_connections)", end - 5, end, 0.5)
        assert series
        assert series[0].points
        assert series[0].points[-1][1] == 42
        with pytest.raises(PrometheusError):
            await prom.query("sum(")  # a PromQL syntax error
        with pytest.raises(PrometheusError):
            await prom.query('"a string"')  # not a vector


async def test_unreachable_prometheus_raises() -> None:
    async with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as prom:
        with pytest.raises(PrometheusError):
            await prom.query("up")


async def test_metrics_source_observes_the_fleet(
    prometheus_server: PrometheusServer, scraped: FakeGatewayMetrics
) -> None:
    spec = parse_spec(
        {
            "prometheus": {"url": prometheus_server.url},
            "targets": {"messagesPerSecondPerPod": 10},
        }
    )
    async with PrometheusClient(prometheus_server.url) as prom:
        source = PrometheusMetricsSource(prom, lambda: spec, "ns", "chat")

        async def seen() -> float | None:
            m = await source.observe(time.time())
            return m.connections if m else None

        assert await wait_until(seen, timeout_s=30) == 42
        m = await source.observe(time.time())
        assert m is not None
        assert m.usable
        assert m.switch_latency_p95_s is None  # no histogram served: no data, not zero
        assert m.message_rate is None
        assert m.draining == 0
        assert await source.pod_connections() == {"p-0": 11, "p-1": 31}

        other = PrometheusMetricsSource(prom, lambda: spec, "ns", "nobody")
        empty = await other.observe(time.time())
        assert empty is not None
        assert not empty.usable

    async with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_s=1) as dead:
        down = PrometheusMetricsSource(dead, FleetSpec, "ns", "chat")
        m = await down.observe(time.time())
        assert m is not None
        assert not m.usable
        assert down.last_error is not None
        assert await down.pod_connections() is None
