"""The dashboard's JSON API against a real Prometheus, up and then stopped."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from wsfleet_operator.dashboard.app import create_dashboard_app, start_dashboard
from wsfleet_operator.dashboard.model import FleetSnapshot, StaticFleetStateSource
from wsfleet_operator.dashboard.series import ChartSpec, LineSpec

from tests.dashboard.conftest import (
    NAME,
    NAMESPACE,
    Dashboard,
    GatewayMetrics,
    demo_snapshot,
    run_dashboard,
)
from tests.support.waiting import wait_until
from wsfleet.services import PrometheusServer, free_port

SERIES = f"api/fleets/{NAMESPACE}/{NAME}/series?range=5m"


def chart(payload: dict[str, Any], chart_id: str) -> dict[str, Any]:
    return next(c for c in payload["charts"] if c["id"] == chart_id)


def line(payload: dict[str, Any], chart_id: str, name: str) -> dict[str, Any]:
    return next(s for s in chart(payload, chart_id)["series"] if s["name"] == name)


async def test_api_with_real_prometheus_up_then_stopped(
    dashboard: Dashboard, scraping: PrometheusServer, gateways: list[GatewayMetrics]
) -> None:
    """One Prometheus for three checks (each Prometheus start costs seconds)."""
    await check_fleets_and_series(dashboard, gateways)
    await check_bad_promql_and_broken_source(scraping)
    await check_prometheus_stopped(dashboard, scraping)


async def check_fleets_and_series(dashboard: Dashboard, gateways: list[GatewayMetrics]) -> None:
    gateways[0].connections.set(100)
    gateways[1].connections.set(37)

    async def live() -> dict[str, Any] | None:
        status, body = await dashboard.get("api/fleets")
        assert status == 200
        fleet = body["fleets"][0]
        return body if fleet["live"]["connections"] == 137 else None

    body = await wait_until(live, timeout_s=30, message="Prometheus to see 137 connections")
    assert body["prometheus"]["available"] is True
    assert body["prometheus"]["error"] is None
    fleet = body["fleets"][0]
    assert (fleet["namespace"], fleet["name"]) == (NAMESPACE, NAME)
    assert fleet["live"]["gateways"] == 2
    assert (fleet["desired_replicas"], fleet["ready_replicas"]) == (3, 2)
    assert {c["type"]: c["status"] for c in fleet["conditions"]} == {
        "MetricsAvailable": "True",
        "Capped": "True",
        "Degraded": "False",
    }
    assert fleet["last_decision"]["reason"].startswith("connections 137")
    assert fleet["events"][0]["reason"] == "connections above target"

    # chart lines from Prometheus range queries
    gateways[0].connections.set(60)
    gateways[1].connections.set(40)

    async def ready() -> dict[str, Any] | None:
        for gw in gateways:
            gw.traffic(5)  # keeps the rates non-zero while we wait
        status, body = await dashboard.get(SERIES)
        assert status == 200
        ok = (
            line(body, "connections", "actual")["last"] == 100
            and line(body, "switch_latency", "p95")["last"] is not None
            and (line(body, "message_rate", "published/s")["last"] or 0) > 0
            and line(body, "cache_hit_ratio", "all")["last"] is not None
            and line(body, "replicas", "scraped")["last"] == 2
        )
        return body if ok else None

    body = await wait_until(ready, timeout_s=40, interval_s=0.5, message="range data")
    assert body["prometheus"]["available"] is True
    # histogram_quantile over buckets: 4 ms falls in the (0, 5 ms] bucket
    assert 0 < line(body, "switch_latency", "p95")["last"] <= 0.005
    assert 0 < line(body, "delivery_latency", "p99")["last"] <= 0.005
    # 9 + 1 hits out of 11 lookups
    assert abs(line(body, "cache_hit_ratio", "all")["last"] - 10 / 11) < 0.01
    layers = {s["name"] for s in chart(body, "cache_hit_ratio")["series"]}
    assert {"l1", "l2"} <= layers
    assert abs(line(body, "cache_hit_ratio", "l1")["last"] - 0.9) < 0.01
    assert line(body, "message_rate", "delivered/s")["last"] > 0
    # replica lines come from the source, sampled by the dashboard
    assert line(body, "replicas", "desired")["last"] == 3
    assert line(body, "replicas", "ready")["last"] == 2
    # the forecast is drawn against the actual connections, reaching past now
    forecast = line(body, "connections", "forecast")
    assert forecast["kind"] == "forecast"
    assert forecast["points"][-1][0] > body["now"]
    assert body["end"] > body["now"]
    markers = chart(body, "replicas")["markers"]
    assert [m["reason"] for m in markers] == ["connections above target"]
    assert markers[0]["label"] == "2→3"
    assert chart(body, "switch_latency")["markers"] == []
    assert all(not c["prometheus_unavailable"] for c in body["charts"])


async def check_prometheus_stopped(dashboard: Dashboard, scraping: PrometheusServer) -> None:
    """Prometheus stops: the API says so explicitly, never zeros."""
    scraping.stop()

    async def down() -> dict[str, Any] | None:
        _, body = await dashboard.get("api/fleets")
        return body if body["prometheus"]["available"] is False else None

    body = await wait_until(down, timeout_s=20, message="Prometheus reported unavailable")
    assert body["prometheus"]["configured"] is True
    assert "Prometheus" in body["prometheus"]["error"]
    assert body["fleets"][0]["live"] == {"connections": None, "gateways": None}
    # the operator's own state is still there
    assert body["fleets"][0]["desired_replicas"] == 3

    status, series = await dashboard.get(SERIES)
    assert status == 200
    assert series["prometheus"]["available"] is False
    for c in series["charts"]:
        assert c["prometheus_unavailable"] is True, c["id"]
        names = {s["name"] for s in c["series"]}
        assert not names & {"actual", "p95", "p99", "all", "published/s", "scraped"}
    assert line(series, "replicas", "desired")["last"] == 3
    assert line(series, "connections", "forecast")["points"]


async def test_prometheus_never_reachable_and_not_configured() -> None:
    source = StaticFleetStateSource([demo_snapshot(with_forecast=False)])
    async for d in run_dashboard(source, f"http://127.0.0.1:{free_port()}"):
        status, body = await d.get("api/fleets")
        assert status == 200
        assert body["prometheus"]["available"] is False
        assert "cannot reach Prometheus" in body["prometheus"]["error"]
    async for d in run_dashboard(source, None):
        _, body = await d.get("api/fleets")
        assert body["prometheus"] == {
            "configured": False,
            "available": False,
            "error": "no Prometheus URL configured",
            "checked_at": None,
        }
        _, series = await d.get(SERIES)
        assert chart(series, "connections")["prometheus_unavailable"] is True
        assert chart(series, "connections")["series"] == []  # no zeros drawn
        assert [s["name"] for s in chart(series, "replicas")["series"]] == ["desired", "ready"]


async def test_bad_requests() -> None:
    source = StaticFleetStateSource([demo_snapshot()])
    async for d in run_dashboard(source, None):
        status, body = await d.get(f"api/fleets/{NAMESPACE}/{NAME}/series?range=soon")
        assert status == 400
        assert "invalid range" in body["error"]
        status, body = await d.get(f"api/fleets/{NAMESPACE}/nope/series")
        assert status == 404
        source.remove(NAMESPACE, NAME)
        status, body = await d.get(f"api/fleets/{NAMESPACE}/{NAME}/series")
        assert status == 404


class BrokenSource:
    """A source that fails every other call (the sampler must survive it)."""

    def __init__(self) -> None:
        self.calls = 0

    def fleets(self) -> list[FleetSnapshot]:
        self.calls += 1
        if self.calls % 2:
            raise RuntimeError("source broke")
        return [demo_snapshot()]


async def check_bad_promql_and_broken_source(scraping: PrometheusServer) -> None:
    """A bad query shows on its chart only; a failing source does not stop the sampler."""
    charts = (
        ChartSpec("good", "Good", "count", (LineSpec("actual", "sum(wsfleet_connections{SEL})"),)),
        ChartSpec("bad", "Bad", "count", (LineSpec("oops", "sum(wsfleet_connections{SEL}"),)),
    )
    source = BrokenSource()
    app = create_dashboard_app(source, scraping.url, interval_s=0.1, charts=charts)
    server = await start_dashboard(app)
    try:
        async with aiohttp.ClientSession() as session:

            async def series() -> dict[str, Any] | None:
                async with session.get(server.url + SERIES) as resp:
                    if resp.status != 200:  # the source raised this time
                        return None
                    body: dict[str, Any] = await resp.json()
                return body if line(body, "good", "actual")["last"] == 100 else None

            body = await wait_until(series, timeout_s=30, interval_s=0.2, message="good chart")
            assert body["prometheus"]["available"] is True
            bad = chart(body, "bad")
            assert bad["series"] == []
            assert bad["errors"]
            assert bad["errors"][0].startswith("oops: ")
            assert chart(body, "good")["errors"] == []
            await wait_until(lambda: source.calls > 4, timeout_s=10, message="sampler alive")
    finally:
        await server.stop()


async def test_each_fleet_reports_its_own_prometheus() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    own = demo_snapshot().model_copy(update={"name": "own", "prometheus_url": closed})
    source = StaticFleetStateSource([demo_snapshot(), own])
    async for d in run_dashboard(source, None):
        status, body = await d.get("api/fleets")
        assert status == 200
        by_name = {f["name"]: f for f in body["fleets"]}
        assert by_name[NAME]["prometheus"]["configured"] is False
        assert by_name["own"]["prometheus"]["configured"] is True
        assert by_name["own"]["prometheus"]["available"] is False
        assert "cannot reach Prometheus" in by_name["own"]["prometheus"]["error"]
        assert body["prometheus"]["available"] is False
        assert "prometheus_url" not in by_name["own"]  # URLs stay server-side
        assert closed not in json.dumps(body)
        _, series = await d.get(f"api/fleets/{NAMESPACE}/own/series")
        assert series["prometheus"]["configured"] is True
        assert chart(series, "message_rate")["prometheus_unavailable"] is True
