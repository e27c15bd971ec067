"""The dashboard in headless Chromium against a real local fleet (`wsfleet.localfleet`,
what `wsfleet up` runs): Redis, Prometheus, gateway processes, the operator's
autoscaler and the dashboard the local fleet serves, with real WebSocket clients.
The page must show the fleet's real replicas and connections, each gateway's memory,
the scale-up as a marker with its reason, and say so when Prometheus stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.dashboard.browser import browser_page, screenshot_path
from tests.dashboard.test_browser import legend_of, wait_last, wait_text
from tests.support.waiting import wait_until
from wsfleet.localfleet.fleet import FleetOptions, LocalFleet
from wsfleet.localfleet.manifest import Overrides, load_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01-minimal-fleet.yaml"
CLIENTS = 30
PER_POD = 10  # 30 connections at 80 % of 10 per pod → 4 gateways


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
        dashboard_port=0,  # `wsfleet up` serves the dashboard; any free port here
    )
    fleet = LocalFleet(load_manifest(manifest_file), options)
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


def auth_header(fleet: LocalFleet, user: str) -> dict[str, str]:
    """The gateways' JWT auth (one user per client: per-user connection rate limits)."""
    token = fleet.token(user)
    return {"Authorization": f"Bearer {token}"} if token else {}


def ready_gateways(fleet: LocalFleet) -> int:
    return sum(1 for g in fleet.gateways() if g.state.value == "ready")


async def test_page_against_a_real_local_fleet(local_fleet: LocalFleet) -> None:
    fleet = local_fleet
    assert fleet.dashboard is not None, "the local fleet serves no dashboard"
    assert fleet.dashboard.url is not None
    name = f"{fleet.manifest.namespace}/{fleet.manifest.name}"
    async with aiohttp.ClientSession() as session, browser_page() as page:
        clients = [
            await session.ws_connect(fleet.ws_url, headers=auth_header(fleet, f"user-{i}"))
            for i in range(CLIENTS)
        ]
        await page.goto(fleet.dashboard.url)
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
        # each real gateway's resident memory, a line per pod, and memory per connection
        await page.wait_for_function(
            "(sel) => Array.from(document.querySelectorAll(sel))"
            ".filter((n) => n.dataset.last !== '' && Number(n.dataset.last) > 1e6).length >= 4",
            arg=f'[data-fleet="{name}"] [data-chart="memory"] .legend .item',
        )
        per_conn = f'[data-fleet="{name}"] [data-chart="memory_per_connection"] path.series'
        await page.locator(per_conn).first.wait_for(state="attached")
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


def stat_of(fleet: str, key: str) -> str:
    return f'[data-fleet="{fleet}"] [data-stat="{key}"] .value'
