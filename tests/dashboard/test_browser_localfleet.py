"""The dashboard in headless Chromium against a real local fleet (`wsfleet.localfleet`):
Redis, Prometheus, gateway processes and the operator's autoscaler, with real
WebSocket clients. The page must show the fleet's real replicas and connections,
the scale-up as a marker with its reason, and say so when Prometheus stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from wsfleet_operator.dashboard import DashboardServer, create_dashboard_app, start_dashboard
from wsfleet_operator.dashboard_model import StaticFleetStateSource, snapshot_from_status

from tests.dashboard.browser import browser_page, screenshot_path
from tests.dashboard.test_browser import legend_of, wait_last, wait_text
from tests.support.waiting import wait_until
from wsfleet.localfleet.fleet import FleetOptions, LocalFleet
from wsfleet.localfleet.manifest import Overrides, load_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01-minimal-fleet.yaml"
CLIENTS = 30
PER_POD = 10  # 30 connections at 80 % of 10 per pod → 4 gateways


def capture_status(fleet: LocalFleet, source: StaticFleetStateSource) -> None:
    """Put a snapshot of every autoscaler tick's status into `source`."""
    autoscaling: Any = fleet.autoscaling
    assert autoscaling is not None, "the local fleet runs no autoscaler"
    tick = autoscaling.tick

    async def recording_tick(now: float) -> Any:
        result = await tick(now)
        source.put(
            snapshot_from_status(
                fleet.manifest.name, fleet.manifest.namespace, result.status, fleet.spec
            )
        )
        return result

    autoscaling.tick = recording_tick


@pytest.fixture
async def local_fleet(tmp_path: Path) -> AsyncIterator[LocalFleet]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["targets"] = {"connectionsPerPod": PER_POD}
    manifest_file = tmp_path / "fleet.yaml"
    manifest_file.write_text(yaml.safe_dump(doc))
    options = FleetOptions(
        port=0,
        scrape_interval_s=0.5,
        overrides=Overrides(interval_s=1.0, scale_up_window_s=0, drain_grace_s=2),
        workdir=tmp_path / "fleet",
    )
    fleet = LocalFleet(load_manifest(manifest_file), options)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


def ready_gateways(fleet: LocalFleet) -> int:
    return sum(1 for g in fleet.gateways() if g.state.value == "ready")


async def test_page_against_a_real_local_fleet(local_fleet: LocalFleet) -> None:
    fleet = local_fleet
    source = StaticFleetStateSource()
    capture_status(fleet, source)
    app = create_dashboard_app(source, fleet.prometheus_url, interval_s=0.5, rate_window="10s")
    server: DashboardServer = await start_dashboard(app)
    name = f"{fleet.manifest.namespace}/{fleet.manifest.name}"
    async with aiohttp.ClientSession() as session, browser_page() as page:
        try:
            clients = [await session.ws_connect(fleet.ws_url) for _ in range(CLIENTS)]
            await page.goto(server.url)
            # the autoscaler sees the load and scales 2 → 4; the page follows live
            await wait_until(lambda: ready_gateways(fleet) == 4, timeout_s=60, message="4 gateways")
            await wait_text(page, stat_of(name, "connections"), str(CLIENTS))
            await wait_text(page, stat_of(name, "ready"), "4")
            await wait_text(page, stat_of(name, "desired"), "4")
            await wait_text(page, stat_of(name, "gateways"), "4")
            await wait_last(page, legend_of(name, "connections", "actual"), CLIENTS)
            await wait_last(page, legend_of(name, "replicas", "ready"), 4)
            await wait_last(page, legend_of(name, "replicas", "scraped"), 4)
            marker = page.locator(f'[data-fleet="{name}"] [data-chart="replicas"] g.marker title')
            await marker.first.wait_for(state="attached")
            assert "2→4" in (await marker.first.text_content() or "")
            assert ready_gateways(fleet) == 4  # the page shows the fleet's real state
            await page.screenshot(path=str(screenshot_path("localfleet-live")), full_page=True)

            # Prometheus stops: the page says so instead of drawing zeros
            assert fleet.prometheus is not None
            await asyncio.to_thread(fleet.prometheus.stop)
            await wait_text(page, "#prom-status", "Prometheus unavailable")
            await wait_text(page, stat_of(name, "connections"), "Prometheus unavailable")
            await wait_text(
                page,
                f'[data-fleet="{name}"] [data-chart="message_rate"] .overlay',
                "Prometheus unavailable",
            )
            banner = page.locator("#banner")
            assert await banner.is_visible()
            assert "Prometheus unavailable" in (await banner.text_content() or "")
            await wait_text(page, stat_of(name, "ready"), "4")  # the autoscaler's state stays
            actual = f'[data-fleet="{name}"] [data-chart="connections"] path[data-series="actual"]'
            assert await page.locator(actual).count() == 0
            await page.screenshot(
                path=str(screenshot_path("localfleet-prometheus-down")), full_page=True
            )
            for ws in clients:
                await ws.close()
        finally:
            await server.stop()


def stat_of(fleet: str, key: str) -> str:
    return f'[data-fleet="{fleet}"] [data-stat="{key}"] .value'
