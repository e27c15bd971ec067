"""Serve the dashboard from the operator: kopf handlers that feed and run it.

`register_dashboard(registry)` adds to a kopf registry:

- an event handler on `WebSocketFleet` objects that keeps a
  `ResourceFleetStateSource` in step with the cluster (every status the
  operator writes arrives as a watch event; deletions forget the fleet);
- startup/cleanup handlers that serve the dashboard on
  ``WSFLEET_DASHBOARD_HOST:PORT`` (`DashboardSettings`) for the operator's
  lifetime — reach it with ``kubectl port-forward``.

Each fleet's Prometheus is its ``spec.prometheus.url``; the settings'
``prometheus_url`` is only the fallback. Pass the operator's `ForecastModels`
(`ForecastModels.remembering` wraps its forecaster factory) for the forecast's
p50 line and upper band.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import kopf
import structlog

from wsfleet_operator.dashboard.app import DashboardServer, DashboardSettings, serve_dashboard
from wsfleet_operator.dashboard.forecasts import ForecastBands
from wsfleet_operator.dashboard.wire import ResourceFleetStateSource
from wsfleet_operator.spec import GROUP, PLURAL, VERSION

log = structlog.get_logger("wsfleet.dashboard")


@dataclass
class KopfDashboard:
    """The dashboard wired into one kopf registry."""

    settings: DashboardSettings
    source: ResourceFleetStateSource = field(default_factory=ResourceFleetStateSource)
    server: DashboardServer | None = None
    forecasts: ForecastBands | None = None

    def on_event(self, event_type: str | None, body: Any) -> None:
        meta = body.get("metadata") or {}
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.source.forget(str(meta.get("namespace") or "default"), str(meta.get("name")))
        elif event_type is not None:  # None: kopf's initial listing marker
            self.source.observe(body)

    async def start(self) -> None:
        if self.server is None and self.settings.enabled:
            self.server = await serve_dashboard(self.source, self.settings, self.forecasts)
            log.info("dashboard_serving", url=self.server.url)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


def register_dashboard(
    registry: kopf.OperatorRegistry,
    settings: DashboardSettings | None = None,
    forecasts: ForecastBands | None = None,
) -> KopfDashboard:
    """Add the dashboard's handlers to `registry`; returns its handle."""
    dashboard = KopfDashboard(settings or DashboardSettings(), forecasts=forecasts)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def dashboard_fleet_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        dashboard.on_event(type, body)

    @kopf.on.startup(registry=registry)
    async def dashboard_startup(**_: Any) -> None:
        await dashboard.start()

    @kopf.on.cleanup(registry=registry)
    async def dashboard_cleanup(**_: Any) -> None:
        await dashboard.stop()

    return dashboard
