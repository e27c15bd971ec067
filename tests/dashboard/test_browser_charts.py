"""The fuller dashboard in headless Chromium: per-pod memory, the forecast's p50 line and
upper band over the actual connections (from the operator's own fitted model), scaling
markers and anomalies on the same time axis. A real Prometheus scrapes two gateway-like
endpoints labelled as two pods; the page's payload size and render time are measured
and written to test-output/dashboard/ (not asserted as timings)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from wsfleet_operator.dashboard.forecasts import ForecastModels
from wsfleet_operator.dashboard.model import Anomaly, ScalingEvent, StaticFleetStateSource

from tests.dashboard.browser import OUTPUT_DIR, browser_page, screenshot_path
from tests.dashboard.conftest import (
    NAME,
    NAMESPACE,
    Dashboard,
    GatewayMetrics,
    demo_snapshot,
    run_dashboard,
)
from tests.dashboard.test_browser import legend, wait_last
from tests.dashboard.test_forecasts import fitted_provider
from wsfleet.services import PrometheusServer

FLEET = f'[data-fleet="{NAMESPACE}/{NAME}"]'
PODS = ("chat-0", "chat-1")
MIB = 1024 * 1024


@pytest.fixture
def pod_scraping(
    prometheus_server: PrometheusServer, gateways: list[GatewayMetrics]
) -> PrometheusServer:
    """The real Prometheus, scraping each endpoint as its own pod of the fleet."""
    groups = [
        {"targets": [gw.address], "labels": {"namespace": NAMESPACE, "service": NAME, "pod": pod}}
        for gw, pod in zip(gateways, PODS, strict=True)
    ]
    target = prometheus_server.targets_file
    target.with_suffix(".tmp").write_text(json.dumps(groups))
    target.with_suffix(".tmp").replace(target)
    return prometheus_server


@pytest.fixture
async def fuller_dashboard(pod_scraping: PrometheusServer) -> AsyncIterator[Dashboard]:
    now = datetime.now(UTC)
    snap = demo_snapshot(with_forecast=False)
    snap = snap.model_copy(
        update={
            "events": (
                ScalingEvent(
                    time=now - timedelta(seconds=150), from_replicas=2, to_replicas=3, reason="up"
                ),
                *snap.events,
            ),
            "anomalies": (
                Anomaly(
                    signal="SwitchLatency",
                    message="switch p95 18 ms, 9.1 robust z above its expectation",
                    at=now - timedelta(seconds=200),
                    resolved_at=now - timedelta(seconds=100),
                ),
                Anomaly(
                    signal="MemoryLeak",
                    subject=PODS[1],
                    message=f"pod {PODS[1]}: memory its connections do not explain grows",
                    at=now - timedelta(seconds=60),
                ),
            ),
            "forecast_summary": {"floorQuantile": 0.9},
        }
    )
    models = ForecastModels()
    provider = fitted_provider()
    models.register((NAMESPACE, NAME), provider)
    async for d in run_dashboard(
        StaticFleetStateSource([snap]), pod_scraping.url, forecasts=models
    ):
        yield d


def chart_sel(chart: str) -> str:
    return f'{FLEET} [data-chart="{chart}"]'


async def test_memory_forecast_band_markers_and_anomalies(
    fuller_dashboard: Dashboard, gateways: list[GatewayMetrics]
) -> None:
    for gw, conns, rss in zip(gateways, (100, 40), (102_400_000, 61_440_000), strict=True):
        gw.connections.set(conns)
        gw.rss.set(rss)
    async with browser_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(fuller_dashboard.url)
        await page.select_option("#range", "5m")  # a point every 2 s

        # memory: a line per pod, with several points each, RSS and bytes per connection
        for pod, rss in zip(PODS, (102_400_000, 61_440_000), strict=True):
            await wait_last(page, legend("memory", pod), rss)
            await page.wait_for_function(
                "(sel) => { const p = document.querySelector(sel);"
                " return p !== null && (p.getAttribute('d').match(/L/g) || []).length >= 2; }",
                arg=f'{chart_sel("memory")} path.series[data-series="{pod}"]',
            )
        await wait_last(page, legend("memory_per_connection", PODS[0]), 1_024_000)
        await wait_last(page, legend("memory_per_connection", PODS[1]), 1_536_000)
        rss_label = await page.locator(
            f'{chart_sel("memory")} .legend [data-series="{PODS[0]}"] .val'
        ).text_content()
        assert rss_label == "97.7 MiB"

        # the forecast's p50 line and p90 band over the actual connections
        await wait_last(page, legend("connections", "actual"), 140)
        conn = chart_sel("connections")
        await page.wait_for_selector(f'{conn} path.series.forecast[data-series="forecast"]')
        band = page.locator(f'{conn} path.band[data-series="p90"]')
        await band.wait_for(state="attached")
        assert len(await band.get_attribute("d") or "") > 100  # an area, not a dot
        assert await page.locator(f'{conn} .legend [data-series="p90"]').count() == 1
        # the view reaches ahead of now, into the forecast
        assert await page.locator(f"{conn} line.now").count() == 1

        # scaling actions as markers on the same time axis
        markers = page.locator(f"{conn} g.marker title")
        assert await markers.count() == 2
        titles = [await markers.nth(i).text_content() or "" for i in range(2)]
        assert any("2→3: up" in t for t in titles)

        # anomalies on the timeline: all on the connections chart, each on its own chart
        leak = page.locator(f'{conn} g.anomaly.open[data-signal="MemoryLeak"]')
        await leak.wait_for(state="attached")
        assert PODS[1] in (await leak.locator("title").text_content() or "")
        assert await page.locator(f'{conn} g.anomaly[data-signal="SwitchLatency"]').count() == 1
        memory_marks = page.locator(f"{chart_sel('memory')} g.anomaly")
        assert await memory_marks.count() == 1
        assert await memory_marks.first.get_attribute("data-signal") == "MemoryLeak"
        switch_marks = page.locator(f"{chart_sel('switch_latency')} g.anomaly")
        assert await switch_marks.count() == 1
        assert await switch_marks.first.get_attribute("data-signal") == "SwitchLatency"
        assert await page.locator(f"{chart_sel('message_rate')} g.anomaly").count() == 0
        rows = page.locator(f"{FLEET} .anomalies tr")
        assert await rows.count() == 2
        assert await rows.first.get_attribute("data-signal") == "MemoryLeak"  # newest first

        # hovering the band reads the forecast there
        box = await page.locator(f"{conn} svg").bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2)
        tip = page.locator(f"{conn} .tip")
        await tip.wait_for(state="visible")
        assert "p90" in (await tip.text_content() or "")

        # what a refresh costs the page (measured, not asserted as a time)
        card = page.locator(FLEET)
        payload = int(await card.get_attribute("data-payload-bytes") or 0)
        render_ms = float(await card.get_attribute("data-render-ms") or 0)
        assert 0 < payload < 400_000
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUTPUT_DIR / "charts-perf.json").write_text(
            json.dumps({"range": "5m", "payload_bytes": payload, "render_ms": render_ms})
        )
        print(f"series payload {payload} B, drawn in {render_ms} ms")
        await page.screenshot(path=str(screenshot_path("fuller-dashboard")), full_page=True)
        assert errors == []
