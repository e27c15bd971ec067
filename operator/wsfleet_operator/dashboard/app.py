"""The live fleet dashboard: a read-only aiohttp app (JSON API, SSE, static page).

Routes (relative to wherever the app is mounted):

- ``GET /``                       the page (``static/index.html``)
- ``GET /static/{file}``          its script and style; no CDN, no build step
- ``GET /api/fleets``             every fleet's snapshot, live connections, Prometheus health
- ``GET /api/fleets/{ns}/{name}/series?range=15m``  chart lines (Prometheus range
  queries + replica history sampled from the source + the forecast's p50 line and
  upper-quantile band + scaling-event and anomaly markers); bounded in size, and
  shared by the requests of one sampling interval
- ``GET /api/events``             server-sent events: ``fleets`` every `interval_s`

When a token is configured, ``/api/*`` needs ``Authorization: Bearer <token>``
or ``?token=<token>`` (browsers' EventSource cannot set headers); the page
and its assets hold no data and stay public.

Embedding (the operator, the local fleet)::

    source = ResourceFleetStateSource()          # operator: source.observe(body)
    source = StaticFleetStateSource()            # local fleet: after each tick,
    source.put(snapshot_from_status(name, namespace, result.status, spec))
    server = await serve_dashboard(source)       # WSFLEET_DASHBOARD_* settings
    # optional: the fitted forecast models beside it (p50 line, p90 band)
    server = await serve_dashboard(source, forecasts=ForecastModels())
    print(server.url); ...; await server.stop()

or ``create_dashboard_app(source, prometheus_url)`` + ``start_dashboard(app,
host, port)``, or mount the app with ``parent.add_subapp("/dashboard/", app)``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from wsfleet_operator.dashboard.forecasts import ForecastBands
from wsfleet_operator.dashboard.model import FleetStateSource
from wsfleet_operator.dashboard.series import DEFAULT_CHARTS, ChartSpec, parse_range
from wsfleet_operator.dashboard.state import DashboardState

log = structlog.get_logger("wsfleet.dashboard")

STATIC_DIR = Path(__file__).parent / "static"
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


STATE_KEY: web.AppKey[DashboardState] = web.AppKey("dashboard_state", DashboardState)
TOKEN_KEY: web.AppKey[str] = web.AppKey("dashboard_token", str)
KEEPALIVE_KEY: web.AppKey[float] = web.AppKey("dashboard_keepalive_s", float)


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
    response = web.json_response(await state.cached_series(snap, range_s))
    response.enable_compression()  # numbers compress ~4x: a 1-day view over port-forward
    return response


def _sse(event: str, payload: Any) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {event}\ndata: {data}\n\n".encode()


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
    payload = state.latest if state.latest is not None else await state.refresh()
    version = state.version
    keepalive_s = request.app[KEEPALIVE_KEY]
    try:
        await response.write(b"retry: 2000\n\n" + _sse("fleets", payload))
        while not state.closing:
            seen = version
            version = await state.wait_newer(seen, timeout_s=keepalive_s)
            if state.closing:
                break
            if version == seen:  # no sample for a while: keep proxies from timing out
                await response.write(b": keep-alive\n\n")
                continue
            payload = state.latest or payload
            await response.write(_sse("fleets", payload))
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
    keepalive_s: float = 15.0,
    forecasts: ForecastBands | None = None,
) -> web.Application:
    """The dashboard as an aiohttp application (serve it alone or `add_subapp` it).

    `rate_window` is the PromQL range for rate()/histogram_quantile(); keep
    it at least 4 scrape intervals. `forecasts`: the fleets' fitted forecast
    models, for the p50 line and upper band (without: what the status says).
    """
    app = web.Application(middlewares=[_guard])
    app[TOKEN_KEY] = token or ""
    app[KEEPALIVE_KEY] = keepalive_s
    state = app[STATE_KEY] = DashboardState(
        source,
        prometheus_url,
        charts=charts,
        interval_s=interval_s,
        rate_window=rate_window,
        prometheus_timeout_s=prometheus_timeout_s,
        forecasts=forecasts,
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
        """Where to open it (loopback when listening on every interface)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = "[::1]" if host == "::" else host
        return f"http://{host}:{self.port}/"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_dashboard(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> DashboardServer:
    """Serve `app` on host:port (0 = a free port) until `stop()`."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:  # port taken: stop the sampler the setup started
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    server = DashboardServer(runner, host, bound)
    log.info("dashboard_listening", url=server.url)
    return server


class DashboardSettings(BaseSettings):
    """The dashboard's settings from ``WSFLEET_DASHBOARD_*`` env (Helm values map 1:1)."""

    model_config = SettingsConfigDict(env_prefix="WSFLEET_DASHBOARD_", extra="ignore")

    enabled: bool = True
    host: str = "127.0.0.1"
    """Interface to listen on; loopback suffices for `kubectl port-forward` (it connects
    inside the pod), 0.0.0.0 only to expose it through a Service (then set a token)."""
    port: int = Field(default=8090, ge=0, le=65535)
    """TCP port; 0 picks a free one."""
    token: SecretStr | None = None
    """Optional bearer token for /api/* (``Authorization: Bearer`` or ``?token=``)."""
    prometheus_url: str | None = None
    """Default Prometheus for fleets whose spec names none."""
    interval_s: float = Field(default=2.0, gt=0, le=60)
    """How often the page gets an update (server-sent events), seconds."""
    rate_window: str = Field(default="1m", pattern=r"^[0-9]+(ms|s|m|h)$")
    """PromQL range of rate() and histogram_quantile(); at least 4 scrape intervals."""


async def serve_dashboard(
    source: FleetStateSource,
    settings: DashboardSettings | None = None,
    forecasts: ForecastBands | None = None,
) -> DashboardServer:
    """Build the app from `settings` (default: from env) and serve it."""
    settings = settings or DashboardSettings()
    app = create_dashboard_app(
        source,
        settings.prometheus_url,
        token=settings.token.get_secret_value() if settings.token else None,
        interval_s=settings.interval_s,
        rate_window=settings.rate_window,
        forecasts=forecasts,
    )
    return await start_dashboard(app, settings.host, settings.port)
