"""The live fleet dashboard: a read-only aiohttp app (JSON API, SSE, static page).

Routes (relative to wherever the app is mounted):

- ``GET /``                       the page (``dashboard_static/index.html``)
- ``GET /static/{file}``          its script and style; no CDN, no build step
- ``GET /api/fleets``             every fleet's snapshot, live connections, Prometheus health
- ``GET /api/fleets/{ns}/{name}/series?range=15m``  chart lines (Prometheus range
  queries + replica history sampled from the source + forecast + event markers)
- ``GET /api/events``             server-sent events: ``fleets`` every `interval_s`

When a token is configured, ``/api/*`` needs ``Authorization: Bearer <token>``
or ``?token=<token>`` (browsers' EventSource cannot set headers); the page
and its assets hold no data and stay public.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from wsfleet_operator.dashboard_model import FleetSnapshot, FleetStateSource
from wsfleet_operator.dashboard_prometheus import (
    DashboardPrometheus,
    PrometheusQueryError,
    PrometheusUnavailableError,
)
from wsfleet_operator.dashboard_series import (
    DEFAULT_CHARTS,
    LIVE_CONNECTIONS,
    LIVE_GATEWAYS,
    ChartSpec,
    LineSpec,
    ReplicaHistory,
    forecast_at,
    line_json,
    lines_from_result,
    parse_matrix,
    parse_range,
    parse_vector_sum,
    render_promql,
    step_for,
)

log = structlog.get_logger("wsfleet.dashboard")

STATIC_DIR = Path(__file__).parent / "dashboard_static"
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


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
    ) -> None:
        self.source = source
        self.prometheus_url = prometheus_url or None
        self.prometheus_timeout_s = prometheus_timeout_s
        #: Set by `start()` (needs a running loop for its HTTP session).
        self.prometheus: DashboardPrometheus | None = None
        self.charts = tuple(charts)
        self.interval_s = interval_s
        self.rate_window = rate_window
        self.history = ReplicaHistory()
        self.health = PrometheusHealth(configured=self.prometheus_url is not None, available=False)
        if self.prometheus_url is None:
            self.health.error = "no Prometheus URL configured"
        self.latest: dict[str, Any] | None = None
        self.version = 0
        self.closing = False
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def note_prometheus(self, error: str | None) -> None:
        self.health.available = error is None and self.prometheus is not None
        if self.prometheus is not None:
            self.health.error = error
        self.health.checked_at = time.time()

    async def refresh(self) -> dict[str, Any]:
        """Take one sample; publish it to waiting streams."""
        now = time.time()
        snapshots = list(self.source.fleets())
        for snap in snapshots:
            predicted = forecast_at([(p.time.timestamp(), p.value) for p in snap.forecast], now)
            if predicted is None:  # no series: the floor the forecast sets right now
                floor = snap.forecast_summary.get("floorConnections")
                if isinstance(floor, int | float) and not isinstance(floor, bool):
                    predicted = float(floor)
            self.history.record(
                snap.key,
                now,
                snap.desired_replicas,
                snap.current_replicas,
                snap.ready_replicas,
                predicted,
            )
        self.history.retain(s.key for s in snapshots)
        live = await self._live(snapshots)
        payload = {
            "generated_at": now,
            "interval_s": self.interval_s,
            "prometheus": self.health.as_json(),
            "fleets": [
                {**snap.model_dump(mode="json"), "live": live[i]}
                for i, snap in enumerate(snapshots)
            ],
        }
        self.latest = payload
        async with self._changed:
            self.version += 1
            self._changed.notify_all()
        return payload

    async def _live(self, snapshots: Sequence[FleetSnapshot]) -> list[dict[str, Any]]:
        empty: dict[str, Any] = {"connections": None, "gateways": None}
        if self.prometheus is None:
            return [dict(empty) for _ in snapshots]
        if not snapshots:
            # still report whether Prometheus is up
            try:
                await self.prometheus.query("vector(1)")
            except (PrometheusUnavailableError, PrometheusQueryError) as exc:
                self.note_prometheus(str(exc))
            else:
                self.note_prometheus(None)
            return []
        queries = []
        for snap in snapshots:
            for template in (LIVE_CONNECTIONS, LIVE_GATEWAYS):
                promql = render_promql(template, snap.selector, self.rate_window)
                queries.append(self.prometheus.query(promql))
        results = await asyncio.gather(*queries, return_exceptions=True)
        down = next((r for r in results if isinstance(r, PrometheusUnavailableError)), None)
        self.note_prometheus(None if down is None else str(down))
        out = []
        for i in range(len(snapshots)):
            conns, gws = results[2 * i], results[2 * i + 1]
            out.append(
                {
                    "connections": parse_vector_sum(conns) if isinstance(conns, dict) else None,
                    "gateways": _as_count(parse_vector_sum(gws)) if isinstance(gws, dict) else 0,
                }
            )
            if not isinstance(conns, dict) or not isinstance(gws, dict):
                out[-1]["gateways"] = None
        return out

    async def wait_newer(self, version: int, timeout_s: float) -> int:
        """Wait until a sample newer than `version` exists (or timeout/closing)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version > version or self.closing),
                    timeout_s,
                )
            return self.version

    async def start(self) -> None:
        """Open the HTTP session and start sampling."""
        self.closing = False
        self._session = aiohttp.ClientSession()
        if self.prometheus_url is not None:
            self.prometheus = DashboardPrometheus(
                self.prometheus_url, self._session, self.prometheus_timeout_s
            )
        self._task = asyncio.create_task(self.run(), name="wsfleet-dashboard-sampler")

    async def close(self) -> None:
        """Wake every SSE stream so it ends."""
        self.closing = True
        async with self._changed:
            self._changed.notify_all()

    async def stop(self) -> None:
        await self.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.prometheus = None

    async def run(self) -> None:
        """The sampling loop (one task per app)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a broken source must not kill the loop
                log.exception("dashboard_refresh_failed")
            await asyncio.sleep(self.interval_s)

    def find(self, namespace: str, name: str) -> FleetSnapshot | None:
        return next((s for s in self.source.fleets() if s.key == (namespace, name)), None)

    async def series(self, snap: FleetSnapshot, range_s: float) -> dict[str, Any]:
        """Chart lines for one fleet over the last `range_s` seconds."""
        end = time.time()
        start = end - range_s
        step = step_for(range_s)
        jobs: list[tuple[int, LineSpec]] = []
        calls: list[Awaitable[dict[str, Any]]] = []
        if self.prometheus is not None:
            for ci, chart in enumerate(self.charts):
                for line in chart.lines:
                    promql = render_promql(line.promql, snap.selector, self.rate_window)
                    jobs.append((ci, line))
                    calls.append(self.prometheus.query_range(promql, start, end, step))
        results = await asyncio.gather(*calls, return_exceptions=True)
        down = next((r for r in results if isinstance(r, PrometheusUnavailableError)), None)
        if self.prometheus is not None:
            self.note_prometheus(None if down is None else str(down))
        history = self.history.lines(snap.key, start, end)
        # forecast vs actual: what the forecast said at each past sample, then
        # its prediction ahead of now (the view extends up to a quarter range)
        future = [(p.time.timestamp(), p.value) for p in snap.forecast if p.time.timestamp() > end]
        view_end = end
        if future:
            view_end = min(end + range_s / 4, max(t for t, _ in future))
        stated = [(p.time.timestamp(), p.value) for p in snap.forecast]
        forecast: list[tuple[float, float | None]]
        if any(t <= end for t, _ in stated):  # the status carries the past too
            forecast = [(t, v) for t, v in stated if start <= t <= view_end]
        else:  # what it said at each sample we took, then ahead of now
            forecast = [*history["forecast"], *((t, v) for t, v in future if t <= view_end)]
        markers = [
            {
                "t": e.time.timestamp(),
                "label": f"{e.from_replicas if e.from_replicas is not None else '?'}"
                f"→{e.to_replicas}",
                "reason": e.reason,
            }
            for e in snap.events
            if start <= e.time.timestamp() <= view_end
        ]
        charts: list[dict[str, Any]] = []
        for ci, chart in enumerate(self.charts):
            lines: list[dict[str, Any]] = []
            errors: list[str] = []
            for (job_ci, line), result in zip(jobs, results, strict=True):
                if job_ci != ci:
                    continue
                if isinstance(result, PrometheusQueryError):
                    errors.append(f"{line.name or line.split_by}: {result}")
                elif isinstance(result, dict):
                    lines.extend(lines_from_result(line, parse_matrix(result)))
            lines.extend(line_json(n, history.get(n, [])) for n in chart.source_lines)
            if chart.forecast and forecast:
                lines.append(line_json("forecast", forecast, "forecast"))
            prom_lines = bool(chart.lines)
            charts.append(
                {
                    "id": chart.id,
                    "title": chart.title,
                    "unit": chart.unit,
                    "series": lines,
                    "markers": markers if chart.markers else [],
                    "prometheus_unavailable": prom_lines and not self.health.available,
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
            "prometheus": self.health.as_json(),
            "charts": charts,
        }


def _as_count(value: float | None) -> int:
    return 0 if value is None else int(value)


STATE_KEY: web.AppKey[DashboardState] = web.AppKey("dashboard_state", DashboardState)
TOKEN_KEY: web.AppKey[str] = web.AppKey("dashboard_token", str)


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    supplied = header[7:] if header[:7].lower() == "bearer " else request.query.get("token", "")
    return hmac.compare_digest(supplied.encode(), token.encode())


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    token = request.app[TOKEN_KEY]
    if token and "/api/" in request.path and not _authorized(request, token):
        return web.json_response(
            {"error": "unauthorized: send Authorization: Bearer <token> or ?token="},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="wsfleet-dashboard"'},
        )
    response = await handler(request)
    if not response.prepared:
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
    return response


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Content-Type": "text/html"})


async def _fleets(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    payload = state.latest if state.latest is not None else await state.refresh()
    return web.json_response(payload)


async def _series(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        range_s = parse_range(request.query.get("range"))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    ns, name = request.match_info["namespace"], request.match_info["name"]
    snap = state.find(ns, name)
    if snap is None:
        return web.json_response({"error": f"no fleet {ns}/{name}"}, status=404)
    return web.json_response(await state.series(snap, range_s))


async def _events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    version = state.version
    payload = state.latest if state.latest is not None else await state.refresh()
    try:
        await response.write(b"retry: 2000\n\n")
        while not state.closing:
            data = json.dumps(payload, separators=(",", ":"))
            await response.write(f"event: fleets\ndata: {data}\n\n".encode())
            seen = version
            version = await state.wait_newer(seen, timeout_s=max(15.0, 4 * state.interval_s))
            if state.closing:
                break
            if version == seen:
                await response.write(b": keep-alive\n\n")
                continue
            payload = state.latest or payload
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
    return response


def create_dashboard_app(
    source: FleetStateSource,
    prometheus_url: str | None,
    *,
    token: str | None = None,
    interval_s: float = 2.0,
    rate_window: str = "1m",
    charts: Sequence[ChartSpec] = DEFAULT_CHARTS,
    prometheus_timeout_s: float = 5.0,
) -> web.Application:
    """The dashboard as an aiohttp application (serve it alone or `add_subapp` it).

    `rate_window` is the PromQL range for rate()/histogram_quantile(); keep
    it at least 4 scrape intervals.
    """
    app = web.Application(middlewares=[_guard])
    app[TOKEN_KEY] = token or ""
    state = app[STATE_KEY] = DashboardState(
        source,
        prometheus_url,
        charts=charts,
        interval_s=interval_s,
        rate_window=rate_window,
        prometheus_timeout_s=prometheus_timeout_s,
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await state.start()
        log.info(
            "dashboard_started", prometheus=state.prometheus_url is not None, token=bool(token)
        )
        try:
            yield
        finally:
            await state.stop()

    async def on_shutdown(app: web.Application) -> None:
        await state.close()  # ends the SSE streams so shutdown is quick

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", _index)
    app.router.add_get("/index.html", _index)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    app.router.add_get("/api/fleets", _fleets)
    app.router.add_get("/api/fleets/{namespace}/{name}/series", _series)
    app.router.add_get("/api/events", _events)
    return app


@dataclass
class DashboardServer:
    """A running dashboard: `url` to open, `stop()` to shut it down."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_dashboard(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> DashboardServer:
    """Serve `app` on host:port (0 = a free port) until `stop()`."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    log.info("dashboard_listening", url=f"http://{host}:{bound}/")
    return DashboardServer(runner, host, bound)
