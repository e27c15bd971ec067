"""The dashboard's state: samples the fleet source and Prometheus, builds chart data.

`DashboardState` runs one sampling loop per app: every `interval_s` it reads
the `FleetStateSource`, records replica (and forecast) history, asks each
fleet's Prometheus for the live connection and gateway counts, publishes the
``/api/fleets`` payload and wakes the server-sent-event streams.

Each fleet may name its own Prometheus (`FleetSnapshot.prometheus_url`, from
``spec.prometheus.url``); otherwise the app's default is used. Health is kept
per Prometheus URL and reported per fleet, never as zeros.

Chart data (`series`) is bounded whatever the load: Prometheus lines by the
query step, per-pod lines by their `max_series`, sampled and forecast lines by
`downsample`, markers by the snapshot's own limits. Requests for the same fleet
and range within one sampling interval share one set of Prometheus queries
(`SeriesCache`), so more open pages do not mean more load on Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from wsfleet_operator.dashboard.cache import SeriesCache
from wsfleet_operator.dashboard.forecasts import ForecastBands, forecast_lines, forecast_now
from wsfleet_operator.dashboard.model import FleetSnapshot, FleetStateSource
from wsfleet_operator.dashboard.series import (
    LIVE_CONNECTIONS,
    LIVE_GATEWAYS,
    ChartSpec,
    LineSpec,
    ReplicaHistory,
    band_json,
    downsample,
    downsample_band,
    line_json,
    lines_from_result,
    omitted_series,
    parse_matrix,
    parse_vector_sum,
    render_promql,
    step_for,
)
from wsfleet_operator.prometheus import (
    PrometheusClient,
    PrometheusQueryError,
    PrometheusUnavailableError,
)

log = structlog.get_logger("wsfleet.dashboard")

NOT_CONFIGURED = "no Prometheus URL configured"


@dataclass
class PrometheusHealth:
    configured: bool
    available: bool
    error: str | None = None
    checked_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "available": self.available,
            "error": self.error,
            "checked_at": self.checked_at,
        }


_UNCONFIGURED = PrometheusHealth(configured=False, available=False, error=NOT_CONFIGURED)


class DashboardState:
    """Samples the source (and live Prometheus values) every `interval_s`.

    Keeps the latest ``/api/fleets`` payload and a version counter that
    server-sent-event streams wait on.
    """

    def __init__(
        self,
        source: FleetStateSource,
        prometheus_url: str | None,
        *,
        charts: Sequence[ChartSpec],
        interval_s: float,
        rate_window: str,
        prometheus_timeout_s: float = 5.0,
        forecasts: ForecastBands | None = None,
    ) -> None:
        self.source = source
        self.forecasts = forecasts
        self.series_cache = SeriesCache(ttl_s=interval_s)
        self.prometheus_url = prometheus_url or None
        self.prometheus_timeout_s = prometheus_timeout_s
        self.charts = tuple(charts)
        self.interval_s = interval_s
        self.rate_window = rate_window
        self.history = ReplicaHistory()
        self.latest: dict[str, Any] | None = None
        self.version = 0
        self.closing = False
        self._health: dict[str, PrometheusHealth] = {}
        self._clients: dict[str, PrometheusClient] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- Prometheus per fleet ----------------------------------------------
    def url_for(self, snap: FleetSnapshot) -> str | None:
        return snap.prometheus_url or self.prometheus_url

    def client_for(self, url: str | None) -> PrometheusClient | None:
        if url is None or self._session is None:
            return None
        client = self._clients.get(url)
        if client is None:
            client = PrometheusClient(url, self.prometheus_timeout_s, session=self._session)
            self._clients[url] = client
        return client

    def health(self, url: str | None) -> PrometheusHealth:
        if url is None:
            return _UNCONFIGURED
        return self._health.setdefault(url, PrometheusHealth(configured=True, available=False))

    def note(self, url: str, results: Sequence[object]) -> PrometheusHealth:
        """Record what a batch of queries to `url` says about its health."""
        down = next((r for r in results if isinstance(r, PrometheusUnavailableError)), None)
        health = self.health(url)
        health.available = down is None
        health.error = None if down is None else str(down)
        health.checked_at = time.time()
        return health

    def overall(self, urls: Sequence[str | None]) -> PrometheusHealth:
        """One health for the page header: down if any fleet's Prometheus is down."""
        used = list(dict.fromkeys(urls)) or [self.prometheus_url]
        healths = [self.health(u) for u in used]
        bad = next((h for h in healths if not h.available), None)
        return bad or healths[0]

    # -- sampling ----------------------------------------------------------
    async def refresh(self) -> dict[str, Any]:
        """Take one sample; publish it to waiting streams."""
        now = time.time()
        snapshots = list(self.source.fleets())
        for snap in snapshots:
            self.history.record(
                snap.key,
                now,
                snap.desired_replicas,
                snap.current_replicas,
                snap.ready_replicas,
                *forecast_now(snap, now),
            )
        self.history.retain(s.key for s in snapshots)
        live = await asyncio.gather(*(self._live(snap) for snap in snapshots))
        if not snapshots:
            await self._ping(self.prometheus_url)
        urls = [self.url_for(s) for s in snapshots]
        payload = {
            "generated_at": now,
            "interval_s": self.interval_s,
            "prometheus": self.overall(urls).as_json(),
            "fleets": [
                {
                    # the forecast's points go to the charts only (`series`), not every event
                    **snap.model_dump(mode="json", exclude={"forecast"}),
                    "forecast_points": len(snap.forecast),
                    "live": live[i],
                    "prometheus": self.health(urls[i]).as_json(),
                }
                for i, snap in enumerate(snapshots)
            ],
        }
        self.latest = payload
        async with self._changed:
            self.version += 1
            self._changed.notify_all()
        return payload

    async def _ping(self, url: str | None) -> None:
        client = self.client_for(url)
        if client is None or url is None:
            return
        try:
            await client.query_data("vector(1)")
        except (PrometheusUnavailableError, PrometheusQueryError) as exc:
            self.note(url, [exc])
        else:
            self.note(url, [])

    async def _live(self, snap: FleetSnapshot) -> dict[str, Any]:
        url = self.url_for(snap)
        client = self.client_for(url)
        if client is None or url is None:
            return {"connections": None, "gateways": None}
        queries = [
            client.query_data(render_promql(t, snap.selector, self.rate_window))
            for t in (LIVE_CONNECTIONS, LIVE_GATEWAYS)
        ]
        conns, gws = await asyncio.gather(*queries, return_exceptions=True)
        self.note(url, [conns, gws])
        if not isinstance(conns, dict) or not isinstance(gws, dict):
            return {"connections": None, "gateways": None}
        return {
            "connections": parse_vector_sum(conns),
            "gateways": int(parse_vector_sum(gws) or 0),
        }

    async def wait_newer(self, version: int, timeout_s: float) -> int:
        """Wait until a sample newer than `version` exists (or timeout/closing)."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
        # arrives as the wait ends (cpython #86296), and an SSE stream would outlive its client
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(lambda: self.version > version or self.closing)
            return self.version

    async def run(self) -> None:
        """The sampling loop (one task per app)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a broken source must not kill the loop
                log.exception("dashboard_refresh_failed")
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        """Open the HTTP session and start sampling."""
        self.closing = False
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self.run(), name="wsfleet-dashboard-sampler")

    async def close(self) -> None:
        """Wake every SSE stream so it ends."""
        self.closing = True
        async with self._changed:
            self._changed.notify_all()

    async def stop(self) -> None:
        await self.close()
        await self.series_cache.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # raises a cancel of stop()'s caller, not the task's
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._clients.clear()

    # -- charts ------------------------------------------------------------
    def find(self, namespace: str, name: str) -> FleetSnapshot | None:
        return next((s for s in self.source.fleets() if s.key == (namespace, name)), None)

    async def cached_series(self, snap: FleetSnapshot, range_s: float) -> dict[str, Any]:
        """`series`, shared by the requests of one sampling interval."""
        return await self.series_cache.get((snap.key, range_s), lambda: self.series(snap, range_s))

    async def series(self, snap: FleetSnapshot, range_s: float) -> dict[str, Any]:
        """Chart lines for one fleet over the last `range_s` seconds."""
        end = time.time()
        start = end - range_s
        step = step_for(range_s)
        url = self.url_for(snap)
        client = self.client_for(url)
        jobs: list[tuple[int, LineSpec]] = []
        calls: list[Awaitable[dict[str, Any]]] = []
        if client is not None:
            for ci, chart in enumerate(self.charts):
                for line in chart.lines:
                    promql = render_promql(line.promql, snap.selector, self.rate_window)
                    jobs.append((ci, line))
                    calls.append(client.query_range_data(promql, start, end, step))
        results = await asyncio.gather(*calls, return_exceptions=True)
        health = self.note(url, results) if url is not None and client else self.health(url)
        history = self.history.lines(snap.key, start, end)
        view_end, forecast, band = forecast_lines(
            snap, history["forecast"], self.history.band(snap.key, start, end), start, end, range_s
        )
        if self.forecasts is not None:
            modelled = self.forecasts.band(snap.key, start, end + range_s / 4, step)
            if modelled:
                view_end = modelled[-1][0]
                forecast = [(t, m) for t, m, _ in modelled]
                band = modelled
        level = snap.forecast_summary.get("floorQuantile")
        band_name = f"p{round(level * 100)}" if isinstance(level, float) else "p90"
        anomalies = [
            {
                "t": a.at.timestamp(),
                "until": None if a.resolved_at is None else a.resolved_at.timestamp(),
                "signal": a.signal,
                "subject": a.subject,
                "message": a.message,
                "size": a.size,
                "threshold": a.threshold,
                "unit": a.unit,
            }
            for a in snap.anomalies
            if a.at.timestamp() <= view_end
            and (a.resolved_at is None or a.resolved_at.timestamp() >= start)
        ]
        markers = [
            {
                "t": e.time.timestamp(),
                "label": f"{'?' if e.from_replicas is None else e.from_replicas}→{e.to_replicas}",
                "reason": e.reason[:300] + (" (dry run)" if e.dry_run else ""),
            }
            for e in snap.events
            if start <= e.time.timestamp() <= view_end
        ]
        charts: list[dict[str, Any]] = []
        for ci, chart in enumerate(self.charts):
            lines: list[dict[str, Any]] = []
            errors: list[str] = []
            omitted = 0
            for (job_ci, line), result in zip(jobs, results, strict=True):
                if job_ci != ci:
                    continue
                if isinstance(result, PrometheusQueryError):
                    errors.append(f"{line.name or line.split_by}: {result}")
                elif isinstance(result, dict):
                    parsed = parse_matrix(result)
                    lines.extend(lines_from_result(line, parsed))
                    omitted += omitted_series(line, parsed)
            lines.extend(line_json(n, downsample(history.get(n, []))) for n in chart.source_lines)
            if chart.forecast and band:
                lines.append(band_json(band_name, downsample_band(band)))
            if chart.forecast and forecast:
                lines.append(line_json("forecast", downsample(forecast), "forecast"))
            charts.append(
                {
                    "id": chart.id,
                    "title": chart.title,
                    "unit": chart.unit,
                    "series": lines,
                    "markers": markers if chart.markers else [],
                    # which of the payload's `anomalies` this chart marks ("*": all)
                    "anomaly_signals": list(chart.anomalies),
                    "omitted_series": omitted,
                    "prometheus_unavailable": bool(chart.lines) and not health.available,
                    "errors": errors,
                }
            )
        return {
            "fleet": {"namespace": snap.namespace, "name": snap.name},
            "start": start,
            "end": view_end,
            "now": end,
            "step_s": step,
            "range_s": range_s,
            "prometheus": health.as_json(),
            "charts": charts,
            "anomalies": anomalies,
        }
