"""What the anomaly tests share: a /metrics exporter whose behaviour the test sets (it
advances on every scrape, so no test waits on a clock), a scale target that only
counts, and the operator's `Autoscaler` with its `AnomalyWatch` on a real Prometheus."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from wsfleet_gateway.metrics import LATENCY_BUCKETS_S
from wsfleet_operator.anomaly.watch import AnomalyWatch
from wsfleet_operator.autoscaler import Autoscaler, FleetEvent, TickResult
from wsfleet_operator.prometheus import PrometheusClient, PrometheusMetricsSource
from wsfleet_operator.spec import FleetSpec, parse_spec

from tests.support.waiting import wait_until

NAMESPACE = "weddings"
NAME = "chat"
LABELS = {"namespace": NAMESPACE, "service": NAME}
MIB = 1024 * 1024


@dataclass
class Pod:
    """One simulated gateway pod: its connections wobble, its RSS follows their peak."""

    phase: float = 0.0
    base_connections: float = 60.0
    base_rss: float = 120 * MIB
    per_connection: float = 14_000.0
    leak_per_scrape: float = 0.0
    leaked: float = 0.0
    high: float = 0.0

    def advance(self, scrape: int) -> tuple[float, float]:
        conns = self.base_connections + 30.0 * math.sin(scrape / 5.0 + self.phase)
        self.high = max(self.high, conns)
        self.leaked += self.leak_per_scrape
        return conns, self.base_rss + self.per_connection * self.high + self.leaked


@dataclass
class AnomalyExporter:
    """The gateway metrics contract, per pod (label `pod`), with test-set behaviour.

    Each scrape advances the simulation one step: every pod's connections and RSS, and
    `per_scrape` channel switches and deliveries observed around `switch_s` and
    `delivery_s` (log-normal, 15 %). A real gateway cannot be made slow or leaky on
    purpose; this endpoint can, and a real Prometheus scrapes it.
    """

    pods: dict[str, Pod] = field(default_factory=lambda: {"gw-0": Pod(), "gw-1": Pod(phase=2)})
    switch_s: float = 0.003
    delivery_s: float = 0.002
    per_scrape: int = 40
    scrapes: int = 0
    runner: web.AppRunner | None = None
    address: str = ""
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))

    def __post_init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("wsfleet_connections", "open", ["pod"], registry=r)
        self.rss = Gauge("process_resident_memory_bytes", "rss", ["pod"], registry=r)
        self.drain = Gauge("wsfleet_drain_in_progress", "draining", ["pod"], registry=r)
        self.switch = Histogram(
            "wsfleet_channel_switch_seconds",
            "switch",
            ["pod"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.delivery = Histogram(
            "wsfleet_message_delivery_seconds",
            "delivery",
            ["pod"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )

    def step(self) -> None:
        self.scrapes += 1
        for name, pod in self.pods.items():
            conns, rss = pod.advance(self.scrapes)
            self.connections.labels(name).set(round(conns))
            self.rss.labels(name).set(rss)
            self.drain.labels(name).set(0)
            noise = self._rng.normal(0.0, 0.15, (2, self.per_scrape))
            for x in self.switch_s * np.exp(noise[0]):
                self.switch.labels(name).observe(float(x))
            for x in self.delivery_s * np.exp(noise[1]):
                self.delivery.labels(name).observe(float(x))

    async def _metrics(self, request: web.Request) -> web.Response:
        self.step()
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        port = next(a[1] for a in self.runner.addresses if isinstance(a, tuple))
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class CountingTarget:
    """A scale target that holds its count (the anomaly tests do not scale)."""

    replicas: int = 2

    async def current_replicas(self) -> int:
        return self.replicas

    async def set_replicas(self, n: int, reason: str) -> None:
        self.replicas = n

    async def pod_connections(self) -> dict[str, int]:
        return {}

    async def set_deletion_costs(self, costs: dict[str, int]) -> None:
        return None


def anomaly_spec(prometheus_url: str, anomalies: dict[str, Any]) -> FleetSpec:
    """A fleet that never scales (min = max) and watches for anomalies quickly."""
    return parse_spec(
        {
            "replicas": {"min": 2, "max": 2},
            "prometheus": {"url": prometheus_url, "rateWindow": "3s", "timeoutSeconds": 3},
            "anomalies": {"forSeconds": 1, **anomalies},
        }
    )


@dataclass
class Watched:
    """The operator's autoscaler and anomaly watch over one fleet, ticked by the test."""

    scaler: Autoscaler
    watch: AnomalyWatch
    client: PrometheusClient
    results: list[TickResult] = field(default_factory=list)

    @property
    def events(self) -> list[FleetEvent]:
        """The anomaly Events posted so far (not the scaling ones)."""
        return [e for r in self.results for e in r.events if e.reason.startswith("Anomaly")]

    def condition(self) -> dict[str, Any] | None:
        last = self.results[-1].status_patch() if self.results else {}
        return next((c for c in last.get("conditions") or [] if c["type"] == "Anomaly"), None)

    async def tick(self) -> TickResult:
        result = await self.scaler.tick()
        self.results.append(result)
        return result

    async def tick_until(
        self, predicate: Callable[[TickResult], bool], timeout_s: float = 60.0, message: str = ""
    ) -> TickResult:
        """Tick (a few times a second) until `predicate` holds for a tick's result."""

        async def ticked() -> TickResult | None:
            result = await self.tick()
            return result if predicate(result) else None

        return await wait_until(ticked, timeout_s=timeout_s, interval_s=0.2, message=message)

    async def close(self) -> None:
        await self.client.close()


def watched(spec: FleetSpec) -> Watched:
    client = PrometheusClient(spec.prometheus.url, spec.prometheus.timeout_seconds)
    source = PrometheusMetricsSource(client, lambda: spec, NAMESPACE, NAME)
    watch = AnomalyWatch(client, lambda: spec, NAMESPACE, NAME)
    scaler = Autoscaler(
        spec, CountingTarget(), source, name=NAME, namespace=NAMESPACE, anomalies=watch
    )
    return Watched(scaler, watch, client)


def anomaly_of(result: TickResult) -> dict[str, Any] | None:
    """The `Anomaly` condition of a tick's status."""
    return next(
        (c for c in result.status_patch().get("conditions") or [] if c["type"] == "Anomaly"),
        None,
    )


def raised(result: TickResult, signal: str, subject: str = "fleet") -> bool:
    return any(
        r["signal"] == signal and r["subject"] == subject and r.get("resolvedAt") is None
        for r in result.status_patch().get("anomalies") or []
    )


def operator_metric(name: str, **labels: str) -> float:
    from wsfleet_operator import opmetrics

    value = opmetrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
