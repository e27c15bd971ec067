"""The page in headless Chromium over a real Prometheus scraping gateway-like
metrics endpoints the test controls: live numbers, charts, the forecast drawn
against actual, condition badges and event markers, updates over SSE.
(`test_browser_localfleet.py` runs the page against a real local fleet.)"""

from __future__ import annotations

from typing import Any

from tests.dashboard.browser import browser_page, screenshot_path
from tests.dashboard.conftest import (
    NAME,
    NAMESPACE,
    Dashboard,
    GatewayMetrics,
    demo_snapshot,
)
from wsfleet.services import PrometheusServer

FLEET = f'[data-fleet="{NAMESPACE}/{NAME}"]'


def stat(key: str) -> str:
    return f'{FLEET} [data-stat="{key}"] .value'


def legend_of(fleet: str, chart: str, series: str) -> str:
    return f'[data-fleet="{fleet}"] [data-chart="{chart}"] .legend [data-series="{series}"]'


def legend(chart: str, series: str) -> str:
    return legend_of(f"{NAMESPACE}/{NAME}", chart, series)


async def wait_text(page: Any, selector: str, text: str) -> None:
    await page.wait_for_function(
        "([sel, want]) => { const n = document.querySelector(sel);"
        " return n !== null && n.textContent.trim() === want; }",
        arg=[selector, text],
        timeout=60_000,
    )


async def wait_last(page: Any, selector: str, value: float) -> None:
    await page.wait_for_function(
        "([sel, want]) => { const n = document.querySelector(sel);"
        " return n !== null && n.dataset.last !== '' && Number(n.dataset.last) === want; }",
        arg=[selector, value],
        timeout=60_000,
    )


async def test_page_shows_live_state_forecast_and_conditions(
    dashboard: Dashboard, scraping: PrometheusServer, gateways: list[GatewayMetrics]
) -> None:
    gateways[0].connections.set(100)
    gateways[1].connections.set(37)
    for gw in gateways:
        gw.traffic(20)
    async with browser_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(dashboard.url)

        # headline numbers: the fleet's real replicas and connections
        await wait_text(page, stat("connections"), "137")
        # Prometheus has scraped once: a second batch gives rate() an increase
        for gw in gateways:
            gw.traffic(20)
        await wait_text(page, stat("desired"), "3")
        await wait_text(page, stat("ready"), "2")
        await wait_text(page, stat("gateways"), "2")
        # the charts carry the same values as their latest points
        await wait_last(page, legend("connections", "actual"), 137)
        await wait_last(page, legend("replicas", "desired"), 3)
        await wait_last(page, legend("replicas", "ready"), 2)
        await wait_last(page, legend("replicas", "scraped"), 2)
        await page.wait_for_selector(
            f'{FLEET} [data-chart="switch_latency"] path.series[data-series="p95"]'
        )
        await page.wait_for_selector(f'{FLEET} [data-chart="connections"] path.series.forecast')
        # conditions at a glance, scaling events as markers with their reason
        capped = page.locator(f'{FLEET} [data-condition="Capped"]')
        assert await capped.get_attribute("data-status") == "True"
        assert "MaxReplicas" in (await capped.get_attribute("title") or "")
        metrics = page.locator(f'{FLEET} [data-condition="MetricsAvailable"]')
        assert "good" in (await metrics.get_attribute("class") or "")
        degraded = page.locator(f'{FLEET} [data-condition="Degraded"]')
        assert await degraded.get_attribute("data-status") == "False"
        marker = page.locator(f'{FLEET} [data-chart="replicas"] g.marker title')
        assert "connections above target" in (await marker.first.text_content() or "")
        assert await page.locator("#prom-status").text_content() == "Prometheus up"

        # live: the source and the load change; the page follows over SSE
        snap = demo_snapshot(desired=4, ready=4)
        assert snap.last_decision is not None
        hostile = '<img src=x onerror="window.pwned=1">scale up'
        decision = snap.last_decision.model_copy(update={"reason": hostile})
        dashboard.source.put(snap.model_copy(update={"last_decision": decision}))
        gateways[1].connections.set(63)
        await wait_text(page, stat("desired"), "4")
        await wait_text(page, stat("connections"), "163")
        await wait_last(page, legend("connections", "actual"), 163)
        await wait_last(page, legend("replicas", "ready"), 4)
        # reasons come from the cluster: shown as text, never run as markup
        await wait_text(page, f"{FLEET} .decision .reason", hostile)
        assert await page.evaluate("window.pwned === undefined")
        await page.screenshot(path=str(screenshot_path("fleet-live")), full_page=True)

        # hovering a chart reads its values at that moment
        plot = page.locator(f'{FLEET} [data-chart="connections"] svg')
        box = await plot.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2)
        tip = page.locator(f'{FLEET} [data-chart="connections"] .tip')
        await tip.wait_for(state="visible")
        assert "forecast" in (await tip.text_content() or "")

        # another range: the page asks for it and redraws
        await page.select_option("#range", "1h")
        await page.wait_for_function(
            "(sel) => { const n = document.querySelector(sel);"
            " return n && Number(n.dataset.rangeS) === 3600; }",
            arg=FLEET,
        )

        assert errors == []
