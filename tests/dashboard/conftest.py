"""Fixtures for the dashboard tests: gateway-like /metrics endpoints the test
controls, a real Prometheus scraping them, a fleet source and a running dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from wsfleet_operator.dashboard.app import DashboardServer, create_dashboard_app, start_dashboard
from wsfleet_operator.dashboard.forecasts import ForecastBands
from wsfleet_operator.dashboard.model import (
    Condition,
    Decision,
    FleetSnapshot,
    ForecastPoint,
    ScalingEvent,
    StaticFleetStateSource,
)

from wsfleet.services import PrometheusServer

NAMESPACE = "weddings"
NAME = "chat"
SELECTOR = f'namespace="{NAMESPACE}",service="{NAME}"'


class GatewayMetrics:
    """A tiny HTTP server exporting the gateway metrics contract with test-set values."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("wsfleet_connections", "open connections", registry=r)
        self.switch = Histogram("wsfleet_channel_switch_seconds", "switch latency", registry=r)
        self.delivery = Histogram(
            "wsfleet_message_delivery_seconds", "publish to socket write", registry=r
        )
        self.messages = Counter("wsfleet_messages_total", "published", registry=r)
        self.deliveries = Counter("wsfleet_deliveries_total", "delivered", registry=r)
        self.cache = Counter(
            "wsfleet_cache_requests_total", "cache lookups", ["layer", "result"], registry=r
        )
        # the gateway's process collector exports this one (a test-set value here)
        self.rss = Gauge("process_resident_memory_bytes", "resident memory", registry=r)
        self.runner: web.AppRunner | None = None
        self.address = ""

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in self.runner.addresses if isinstance(a, tuple))
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def traffic(self, n: int = 1) -> None:
        """Some switches, deliveries, messages and cache lookups."""
        for _ in range(n):
            self.switch.observe(0.004)
            self.delivery.observe(0.002)
            self.messages.inc()
            self.deliveries.inc(10)
            self.cache.labels("l1", "hit").inc(9)
            self.cache.labels("l1", "miss").inc(1)
            self.cache.labels("l2", "hit").inc(1)


@pytest.fixture
async def gateways() -> AsyncIterator[list[GatewayMetrics]]:
    gws = [GatewayMetrics(), GatewayMetrics()]
    for gw in gws:
        await gw.start()
    try:
        yield gws
    finally:
        for gw in gws:
            await gw.stop()


@pytest.fixture
def scraping(
    prometheus_server: PrometheusServer, gateways: list[GatewayMetrics]
) -> PrometheusServer:
    """The real Prometheus, scraping both endpoints with the fleet's labels."""
    prometheus_server.set_targets(
        [g.address for g in gateways], labels={"namespace": NAMESPACE, "service": NAME}
    )
    return prometheus_server


def demo_snapshot(desired: int = 3, ready: int = 2, *, with_forecast: bool = True) -> FleetSnapshot:
    now = datetime.now(UTC)
    forecast = (
        tuple(
            ForecastPoint(time=now + timedelta(minutes=m), value=120.0 + 4 * m)
            for m in range(-20, 6)
        )
        if with_forecast
        else ()
    )
    return FleetSnapshot(
        name=NAME,
        namespace=NAMESPACE,
        desired_replicas=desired,
        current_replicas=desired,
        ready_replicas=ready,
        min_replicas=2,
        max_replicas=10,
        selector=SELECTOR,
        conditions=(
            Condition(type="MetricsAvailable", status="True", reason="QueryOK"),
            Condition(type="Capped", status="True", reason="MaxReplicas", message="at max 3"),
            Condition(type="Degraded", status="False"),
        ),
        last_decision=Decision(
            replicas=desired,
            reason="connections 137 > 80% of 2x100",
            time=now,
            mode="Metrics",
            sources={"metrics": 1.0},
        ),
        events=(
            ScalingEvent(
                time=now - timedelta(seconds=30),
                from_replicas=2,
                to_replicas=desired,
                reason="connections above target",
            ),
        ),
        forecast=forecast,
    )


@dataclass
class Dashboard:
    server: DashboardServer
    source: StaticFleetStateSource
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.url

    async def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.url + path, **kwargs) as resp:
            return resp.status, await resp.json()


async def run_dashboard(
    source: StaticFleetStateSource,
    prometheus_url: str | None,
    token: str | None = None,
    forecasts: ForecastBands | None = None,
) -> AsyncIterator[Dashboard]:
    app = create_dashboard_app(
        source,
        prometheus_url,
        token=token,
        interval_s=0.3,
        rate_window="10s",
        prometheus_timeout_s=3.0,
        forecasts=forecasts,
    )
    server = await start_dashboard(app, "127.0.0.1", 0)
    session = aiohttp.ClientSession()
    try:
        yield Dashboard(server, source, session)
    finally:
        await session.close()
        await server.stop()


@pytest.fixture
async def dashboard(scraping: PrometheusServer) -> AsyncIterator[Dashboard]:
    """A running dashboard over a static source and the real Prometheus."""
    source = StaticFleetStateSource([demo_snapshot()])
    async for d in run_dashboard(source, scraping.url):
        yield d
