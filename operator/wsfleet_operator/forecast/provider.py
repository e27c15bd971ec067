"""The forecast as the autoscaler sees it: a floor over the lead window.

`floor_connections(now)` = max over [now, now + leadTime] of the forecast's
`floorQuantile` (p90 by default) x (1 + headroom) x weight; `floor(now)` is the same
in replicas (/ connectionsPerPod: headroom is already in it), which is what
`autoscaler.ForecastProvider` and `scaling.decide` take.

`SeasonalForecastProvider` holds the last fit (so a Prometheus outage keeps the
forecast as the fallback floor), refits from history arrays the operator fetched
(`update`) or through a fetch callable (`refresh`), backtests each fit and turns
the accuracy into a weight. No I/O of its own and no clock: `now` is passed in.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import structlog

from wsfleet_operator.forecast.backtest import BacktestResult, backtest, forecast_weight
from wsfleet_operator.forecast.ensemble import Forecaster, fit_forecaster
from wsfleet_operator.forecast.io import MAX_POINTS_PER_QUERY
from wsfleet_operator.forecast.settings import ModelSettings, Priors
from wsfleet_operator.forecast.time import DAY_S, FloatArray, to_unix
from wsfleet_operator.prometheus import PrometheusClient, render_query
from wsfleet_operator.spec import FleetSpec, ForecastSpec

log = structlog.get_logger("wsfleet.operator.forecast")

FetchHistory = Callable[[float, float, float], Awaitable[tuple[Sequence[float], Sequence[float]]]]
"""(start, end, step) unix seconds -> (timestamps, values): a Prometheus range query."""


def prometheus_fetch(client: PrometheusClient, promql: str) -> FetchHistory:
    """A `FetchHistory` over the operator's Prometheus client (series summed per instant)."""

    async def fetch(start: float, end: float, step_s: float) -> tuple[list[float], list[float]]:
        sums: dict[float, float] = {}
        lo = start
        while lo <= end:  # Prometheus caps a range query at 11,000 points per series
            hi = min(end, lo + step_s * (MAX_POINTS_PER_QUERY - 1))
            for series in await client.query_range(promql, lo, hi, step_s):
                for t, v in series.points:
                    sums[t] = sums.get(t, 0.0) + v
            lo = hi + step_s
        times = sorted(sums)
        return times, [sums[t] for t in times]

    return fetch


def priors_from_spec(spec: ForecastSpec, baseline: float | None = None) -> Priors:
    """The model's priors from the CR's forecast spec."""
    return Priors(
        month_multipliers={p.month: p.multiplier for p in spec.season_priors},
        peak_hours=tuple((p.start_hour, p.end_hour) for p in spec.peak_hours),
        baseline=baseline,
    )


def replicas_for(connections: float, connections_per_pod: int) -> int:
    """Pods whose capacity holds `connections` (headroom is already in the floor)."""
    return max(0, math.ceil(round(connections / connections_per_pod, 9)))


@dataclass(frozen=True)
class Peak:
    at: float
    connections: float
    """the forecast's median (p50) there"""
    upper: float | None = None
    """the floor's quantile there (None when it is the median)"""


class SeasonalForecastProvider:
    """An `autoscaler.ForecastProvider`: `floor(now)` in replicas, None before any fit
    (or with no history and no baseline) and when the backtest weight is 0."""

    def __init__(
        self,
        fleet: FleetSpec,
        *,
        settings: ModelSettings | None = None,
        baseline: float | None = None,
        backtest_horizon_s: float = DAY_S,
        backtest_origins: int = 3,
        step_s: float = 300.0,
    ) -> None:
        self.fleet = fleet
        self.settings = settings or ModelSettings()
        self.baseline = baseline
        self.priors = priors_from_spec(fleet.forecast, baseline)
        self.backtest_horizon_s = backtest_horizon_s
        self.backtest_origins = backtest_origins
        self.step_s = step_s
        self.model: Forecaster | None = None
        self.backtest: BacktestResult | None = None
        self.weight = 1.0
        self.fitted_at: float | None = None
        if baseline is not None:
            self.model = fit_forecaster([], [], self.priors, timezone=self.spec.timezone)

    @property
    def spec(self) -> ForecastSpec:
        return self.fleet.forecast

    def update_spec(self, fleet: FleetSpec) -> None:
        """Take a changed CR spec (priors apply from the next fit)."""
        self.fleet = fleet
        self.priors = priors_from_spec(fleet.forecast, self.baseline)

    @property
    def accuracy(self) -> float | None:
        """1 - WAPE of the last backtest (None: too little history to backtest)."""
        return None if self.backtest is None else self.backtest.model.accuracy

    @property
    def degraded(self) -> bool:
        """The backtest accuracy is below the spec's threshold."""
        return self.accuracy is not None and self.accuracy < self.spec.accuracy_threshold

    def update(
        self, timestamps: Sequence[float] | FloatArray, values: Sequence[float] | FloatArray
    ) -> None:
        """Refit from history (unix seconds, connections) and backtest the fit."""
        t = np.asarray(timestamps, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        model = fit_forecaster(
            t, v, self.priors, timezone=self.spec.timezone, settings=self.settings
        )
        if not model.ready:
            return  # keep the last fit: no history is no news
        self.model = model
        self.fitted_at = float(t.max()) if t.size else None
        self.backtest = backtest(
            t,
            v,
            self.priors,
            timezone=self.spec.timezone,
            settings=self.settings,
            horizon_s=self.backtest_horizon_s,
            origins=self.backtest_origins,
            quantile=self.spec.floor_quantile,
        )
        self.weight = forecast_weight(self.accuracy, self.spec.accuracy_threshold)
        log.info(
            "forecast.fitted",
            points=model.n_points,
            combination=model.weights,
            accuracy=self.accuracy,
            coverage=None if self.backtest is None else self.backtest.coverage,
            weight=self.weight,
            degraded=self.degraded,
        )

    async def refresh(self, fetch: FetchHistory, now: datetime | float) -> None:
        """Fetch `historyDays` of history through `fetch` and refit (in a worker thread)."""
        end = to_unix(now)
        start = end - self.spec.history_days * DAY_S
        timestamps, values = await fetch(start, end, self.step_s)
        # the fit and its backtest take ~0.1-0.5 s of CPU: keep the event loop free
        await asyncio.to_thread(self.update, timestamps, values)

    def peak(self, now: datetime | float) -> Peak | None:
        """The highest `floorQuantile` forecast in [now, now + leadTime]."""
        if self.model is None or not self.model.ready:
            return None
        start = to_unix(now)
        end = start + self.spec.lead_time_seconds
        step = min(self.model.slot_s, max(self.spec.lead_time_seconds, 1))
        grid, values = self.model.predict_range(aligned(start, step), end, step)
        upper = self.model.quantile(grid, self.spec.floor_quantile)
        i = int(np.argmax(upper))
        return Peak(at=float(grid[i]), connections=float(values[i]), upper=float(upper[i]))

    def next_peak(self, now: datetime | float, horizon_s: float = DAY_S) -> Peak | None:
        """The highest forecast in [now, now + horizon] (e.g. to pre-warm caches before it)."""
        if self.model is None or not self.model.ready:
            return None
        start = to_unix(now)
        step = self.model.slot_s
        grid, values = self.model.predict_range(aligned(start, step), start + horizon_s, step)
        i = int(np.argmax(values))
        return Peak(at=float(grid[i]), connections=float(values[i]))

    def floor_connections(self, now: datetime | float) -> float | None:
        """Connections the fleet should hold now: the window's highest `floorQuantile`
        forecast x (1 + headroom) x weight."""
        peak = self.peak(now)
        if peak is None or self.weight <= 0.0:
            return None
        upper = peak.connections if peak.upper is None else peak.upper
        return upper * (1.0 + self.spec.headroom) * self.weight

    def floor(self, now: float) -> float | None:
        """The replica floor (fractional; the decision rounds it up)."""
        connections = self.floor_connections(now)
        if connections is None:
            return None
        return connections / self.fleet.targets.connections_per_pod

    @property
    def _cpp(self) -> int:
        return self.fleet.targets.connections_per_pod

    def status(self, now: datetime | float) -> dict[str, Any]:
        """For the CR's `status.forecast`."""
        peak = self.peak(now)
        upcoming = self.next_peak(now)
        floor = self.floor_connections(now)
        return {
            "ready": self.model is not None and self.model.ready,
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "threshold": self.spec.accuracy_threshold,
            "weight": round(self.weight, 4),
            "degraded": self.degraded,
            "floorConnections": None if floor is None else round(floor, 1),
            "floorReplicas": None if floor is None else replicas_for(floor, self._cpp),
            "peakAt": None if peak is None else peak.at,
            "peakConnections": None if peak is None else round(peak.connections, 1),
            "floorQuantile": self.spec.floor_quantile,
            "peakQuantileConnections": None
            if peak is None or peak.upper is None
            else round(peak.upper, 1),
            "coverage": None
            if self.backtest is None or self.backtest.coverage is None
            else round(self.backtest.coverage, 4),
            "nextPeakAt": None if upcoming is None else upcoming.at,
            "nextPeakConnections": None if upcoming is None else round(upcoming.connections, 1),
            "fittedThrough": self.fitted_at,
            "backtest": None if self.backtest is None else self.backtest.to_dict(),
        }


def aligned(t: float, step_s: float) -> float:
    """The start of the step `t` falls in: a window's grid on these points gives the same
    peak (time and size) on every tick of a step, so the status written from it stays the
    same and costs no write (`status.status_essence`)."""
    return float(np.floor(t / step_s) * step_s) if step_s > 0 else t


class RefreshingForecast:
    """Adapts a forecast provider for the autoscaler: refits from Prometheus when due."""

    def __init__(
        self,
        provider: SeasonalForecastProvider,
        fetch: FetchHistory,
        spec_now: Callable[[], FleetSpec],
        refresh_every_s: float = 3600.0,
    ) -> None:
        self.provider = provider
        self.fetch = fetch
        self.spec_now = spec_now
        self.refresh_every_s = refresh_every_s
        self._refreshed_at: float | None = None

    async def floor(self, now: float) -> float | None:
        spec = self.spec_now()
        if spec is not self.provider.fleet:
            self.provider.update_spec(spec)
        if self._refreshed_at is None or now - self._refreshed_at >= self.refresh_every_s:
            self._refreshed_at = now
            try:
                await self.provider.refresh(self.fetch, now)
            except Exception as exc:  # keep the last fit
                log.warning("forecast.refresh_failed", error=repr(exc))
        value = self.provider.floor(now)
        return None if value is None else float(value)

    def status(self, now: float) -> dict[str, Any]:
        result: dict[str, Any] = self.provider.status(now)
        return result


def default_forecaster_factory(
    namespace: str, name: str, spec_now: Callable[[], FleetSpec], prom: PrometheusClient
) -> RefreshingForecast:
    """The seasonal forecaster, fed from the fleet's Prometheus (the operator's and the
    local fleet's)."""
    spec = spec_now()
    query = render_query(spec.prometheus.queries.connections, spec, namespace, name)
    provider = SeasonalForecastProvider(spec)
    return RefreshingForecast(provider, prometheus_fetch(prom, query), spec_now)
