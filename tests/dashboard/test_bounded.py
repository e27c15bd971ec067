"""The dashboard stays bounded under the heaviest load: chart payloads, markers, the
history it keeps and the Prometheus queries it sends do not grow with time, pods or
open pages. Sizes are measured and written to test-output/dashboard/ (no timings are
asserted)."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from wsfleet_operator.dashboard.app import create_dashboard_app, start_dashboard
from wsfleet_operator.dashboard.cache import SeriesCache
from wsfleet_operator.dashboard.model import (
    Anomaly,
    FleetSnapshot,
    ForecastPoint,
    ScalingEvent,
    StaticFleetStateSource,
)
from wsfleet_operator.dashboard.series import DEFAULT_CHARTS, TARGET_POINTS, parse_range
from wsfleet_operator.dashboard.state import DashboardState

from tests.dashboard.browser import OUTPUT_DIR

PODS = 40  # far beyond the demo's busiest hour (6 gateways) and a default max of 10


class HeavyPrometheus:
    """Answers every range query with full series: one per pod for ``by (pod)``."""

    def __init__(self) -> None:
        self.queries = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _range(self, request: web.Request) -> web.Response:
        self.queries += 1
        q = request.query
        start, end, step = float(q["start"]), float(q["end"]), float(q["step"])
        times = [start + i * step for i in range(int((end - start) / step) + 1)]
        query = q["query"]
        if "by (pod)" in query:
            labels = [{"pod": f"chat-5f7c9d-{i:05d}"} for i in range(PODS)]
        elif "by (layer)" in query:
            labels = [{"layer": "l1"}, {"layer": "l2"}]
        else:
            labels = [{}]
        rng = random.Random(query)  # noisy values: gzip sizes as with real data
        result = [
            {"metric": m, "values": [[t, f"{rng.uniform(1e5, 2e5):.6g}"] for t in times]}
            for m in labels
        ]
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": result}}
        )

    async def _instant(self, request: web.Request) -> web.Response:
        result = [{"metric": {}, "value": [time.time(), "5000"]}]
        return web.json_response({"status": "success", "data": {"result": result}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/query_range", self._range)
        app.router.add_get("/api/v1/query", self._instant)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in self.runner.addresses if isinstance(a, tuple))
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def heavy_prometheus() -> AsyncIterator[HeavyPrometheus]:
    prom = HeavyPrometheus()
    await prom.start()
    try:
        yield prom
    finally:
        await prom.stop()


def busiest_snapshot(now: datetime) -> FleetSnapshot:
    """A fleet with everything its status may hold, at the parser's limits."""
    return FleetSnapshot(
        name="chat",
        namespace="weddings",
        desired_replicas=PODS,
        current_replicas=PODS,
        ready_replicas=PODS,
        selector='namespace="weddings",service="chat"',
        events=tuple(
            ScalingEvent(time=now - timedelta(minutes=10 * i), to_replicas=i + 2, reason="r" * 200)
            for i in range(50)
        ),
        anomalies=tuple(
            Anomaly(
                signal=("SwitchLatency", "DeliveryLatency", "ConnectFlood", "MemoryLeak")[i % 4],
                subject=f"chat-5f7c9d-{i:05d}",
                message="m" * 512,
                at=now - timedelta(minutes=20 * i),
                resolved_at=None if i % 2 else now - timedelta(minutes=20 * i - 5),
            )
            for i in range(50)
        ),
        forecast=tuple(
            ForecastPoint(time=now + timedelta(seconds=60 * i - 60000), value=1000.0, upper=1300.0)
            for i in range(2000)
        ),
    )


async def test_series_payload_is_bounded_under_heavy_load(
    heavy_prometheus: HeavyPrometheus,
) -> None:
    now = datetime.now(UTC)
    snap = busiest_snapshot(now)
    state = DashboardState(
        StaticFleetStateSource([snap]),
        heavy_prometheus.url,
        charts=DEFAULT_CHARTS,
        interval_s=2.0,
        rate_window="1m",
    )
    # two hours of 2 s samples: as full as the replica history gets
    t0 = now.timestamp()
    for i in reversed(range(state.history.max_points + 500)):
        state.history.record(snap.key, t0 - 2 * i, PODS, PODS, PODS - i % 3, 1000.0, 1300.0)
    measured: dict[str, Any] = {}
    await state.start()
    try:
        for label in ("15m", "1h", "1d", "7d"):
            began = time.perf_counter()
            payload = await state.series(snap, parse_range(label))
            took_ms = (time.perf_counter() - began) * 1000
            body = json.dumps(payload, separators=(",", ":")).encode()
            measured[label] = {
                "bytes": len(body),
                "gzip_bytes": len(gzip.compress(body)),
                "server_ms": round(took_ms, 1),
                "lines": sum(len(c["series"]) for c in payload["charts"]),
            }
            for chart in payload["charts"]:
                for line in chart["series"]:
                    assert len(line["points"]) <= TARGET_POINTS + 1, (label, chart["id"])
                assert len(chart["markers"]) <= 50
            assert len(payload["anomalies"]) <= 50
            memory = next(c for c in payload["charts"] if c["id"] == "memory")
            assert len(memory["series"]) == 12
            assert memory["omitted_series"] == PODS - 12
            # bounded whatever the range: ~40 lines of at most 241 points
            assert len(body) < 400_000, measured
        # the history never outgrows its bound
        assert len(state.history._data[snap.key]) == state.history.max_points
    finally:
        await state.stop()
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / "series-payload.json").write_text(json.dumps(measured, indent=2))
    print("series payload, 40 pods:", json.dumps(measured))


async def test_open_pages_share_one_set_of_queries(heavy_prometheus: HeavyPrometheus) -> None:
    snap = busiest_snapshot(datetime.now(UTC))
    state = DashboardState(
        StaticFleetStateSource([snap]),
        heavy_prometheus.url,
        charts=DEFAULT_CHARTS,
        interval_s=30.0,  # no sampler tick during the test
        rate_window="1m",
    )
    queries_per_series = sum(len(c.lines) for c in DEFAULT_CHARTS)
    await state.start()
    try:
        pages = await asyncio.gather(*(state.cached_series(snap, 900.0) for _ in range(20)))
        assert all(p is pages[0] for p in pages)
        assert heavy_prometheus.queries == queries_per_series
        await state.cached_series(snap, 3600.0)  # another range: its own queries
        assert heavy_prometheus.queries == 2 * queries_per_series
    finally:
        await state.stop()


async def test_series_are_sent_compressed(heavy_prometheus: HeavyPrometheus) -> None:
    snap = busiest_snapshot(datetime.now(UTC))
    app = create_dashboard_app(StaticFleetStateSource([snap]), heavy_prometheus.url)
    server = await start_dashboard(app)
    try:
        async with aiohttp.ClientSession() as session:
            url = server.url + "api/fleets/weddings/chat/series?range=1d"
            async with session.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Encoding"] == "gzip"
                body = await resp.json()
        assert {c["id"] for c in body["charts"]} >= {"memory", "memory_per_connection"}
    finally:
        await server.stop()


async def test_series_cache() -> None:
    calls: list[int] = []
    release = asyncio.Event()

    async def compute() -> dict[str, Any]:
        calls.append(1)
        await release.wait()
        return {"n": len(calls)}

    cache = SeriesCache(ttl_s=60.0, max_entries=2)
    key = (("ns", "a"), 900.0)
    first = asyncio.ensure_future(cache.get(key, compute))
    second = asyncio.ensure_future(cache.get(key, compute))
    await asyncio.sleep(0)
    first.cancel()  # a page that goes away does not cancel the others' wait
    release.set()
    assert await second == {"n": 1}
    assert len(calls) == 1
    assert await cache.get(key, compute) == {"n": 1}  # fresh: shared
    # bounded: the oldest key goes
    await cache.get((("ns", "b"), 900.0), compute)
    await cache.get((("ns", "c"), 900.0), compute)
    assert len(cache) == 2
    # expired: computed again; a failure is not kept
    stale = SeriesCache(ttl_s=0.0)
    assert await stale.get(key, compute) == {"n": 4}
    assert await stale.get(key, compute) == {"n": 5}

    async def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    failing = SeriesCache(ttl_s=60.0)
    with pytest.raises(RuntimeError):
        await failing.get(key, broken)
    assert await failing.get(key, compute) == {"n": 6}
    # still under way: shared even past its ttl, never started twice
    release.clear()
    slow = SeriesCache(ttl_s=0.0)
    waiters = [asyncio.ensure_future(slow.get(key, compute)) for _ in range(3)]
    await asyncio.sleep(0)  # all three asked while the first is under way
    release.set()
    assert [await w for w in waiters] == [{"n": 7}] * 3
    assert len(calls) == 7
    # closing cancels what is still running, evicted entries included
    release.clear()
    pending = SeriesCache(ttl_s=60.0, max_entries=1)
    first_waiter = asyncio.ensure_future(pending.get(key, compute))
    other_waiter = asyncio.ensure_future(pending.get((("ns", "z"), 60.0), compute))
    await asyncio.sleep(0)
    assert len(pending) == 1
    await pending.close()
    for waiter in (first_waiter, other_waiter):
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(pending) == 0
