"""The operator's live dashboard, served by the local fleet.

The autoscaler's status after every tick becomes the dashboard's snapshot of
the fleet; the dashboard reads live series from the local Prometheus and the
forecast's p50 line and upper band from the autoscaler's own forecaster
(`watch_forecaster`).
"""

from __future__ import annotations

from typing import Any

import structlog
from wsfleet_operator.spec import FleetSpec

from wsfleet.localfleet.manifest import FleetManifest

log = structlog.get_logger("wsfleet.localfleet")


class LocalDashboard:
    """One fleet on the dashboard; `update()` after each autoscaler tick."""

    def __init__(self, manifest: FleetManifest, spec: FleetSpec, host: str, port: int) -> None:
        from wsfleet_operator.dashboard.forecasts import ForecastModels
        from wsfleet_operator.dashboard.model import StaticFleetStateSource

        self.forecasts = ForecastModels()
        self.manifest = manifest
        self.spec = spec
        self.host = host
        self.port = port
        self.source = StaticFleetStateSource()
        self.url: str | None = None
        self._server: Any = None
        self.update(None)

    def update(self, status: Any) -> None:
        """Show `status` (a `FleetStatus`, or None before the first tick)."""
        from wsfleet_operator.dashboard.wire import snapshot_from_status

        self.source.put(
            snapshot_from_status(self.manifest.name, self.manifest.namespace, status, self.spec)
        )

    def watch_forecaster(self, forecaster: Any) -> None:
        """Draw the forecast from `forecaster` (the autoscaler's; None: none)."""
        self.forecasts.register((self.manifest.namespace, self.manifest.name), forecaster)

    async def start(self) -> str:
        """Serve the dashboard on `port` (a free one when taken); returns its URL."""
        from wsfleet_operator.dashboard.app import create_dashboard_app, start_dashboard

        for port in dict.fromkeys((self.port, 0)):
            app = create_dashboard_app(
                self.source,
                self.spec.prometheus.url,
                interval_s=2.0,
                rate_window=self.spec.prometheus.rate_window,
                forecasts=self.forecasts,
            )
            try:
                self._server = await start_dashboard(app, self.host, port)
            except OSError as exc:
                log.warning("dashboard_port_taken", port=port, error=str(exc))
                continue
            self.url = str(self._server.url)
            return self.url
        raise OSError(f"cannot serve the dashboard on {self.host}")

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
