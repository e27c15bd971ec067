"""Operator integration: a rising evening pattern in Prometheus history makes the fleet
scale up `leadTime` before the peak, not after it.

History comes from a real Prometheus (backfilled, see conftest.py) through the
operator's own `PrometheusClient.query_range`; the `Autoscaler` ticks every minute of
the next evening with an in-memory scale target and live readings that follow the
same pattern. A control run without the forecaster shows the reactive scaler only
catches up once the rise is under way.
"""

from __future__ import annotations

import numpy as np
from wsfleet_operator.autoscaler import Autoscaler
from wsfleet_operator.forecast.provider import SeasonalForecastProvider, prometheus_fetch
from wsfleet_operator.prometheus import PrometheusClient
from wsfleet_operator.scaling import Metrics
from wsfleet_operator.spec import FleetSpec, parse_spec

from tests.forecast.conftest import PEAK_START_H, History, evening_load
from tests.forecast.synthetic import DAY

LEAD_S = 1200
TICK_S = 60.0


class MemoryTarget:
    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.changes: list[tuple[int, str]] = []

    async def current_replicas(self) -> int:
        return self.replicas

    async def set_replicas(self, n: int, reason: str) -> None:
        self.replicas = n
        self.changes.append((n, reason))

    async def pod_connections(self) -> dict[str, int]:
        return {f"pod-{i}": 0 for i in range(self.replicas)}

    async def set_deletion_costs(self, costs: dict[str, int]) -> None:
        return None


class LiveLoad:
    """Live connection readings that follow the same evening pattern."""

    async def observe(self, now: float) -> Metrics | None:
        return Metrics(observed_at=now, connections=float(evening_load(np.array([now]))[0]))

    async def pod_connections(self) -> dict[str, int] | None:
        return None


def _spec() -> FleetSpec:
    return parse_spec(
        {
            "replicas": {"min": 2, "max": 20},
            "targets": {"connectionsPerPod": 1000, "targetUtilization": 0.8},
            "forecast": {
                "enabled": True,
                "leadTimeSeconds": LEAD_S,
                "timezone": "UTC",
                "historyDays": 14,
            },
        }
    )


async def _run_evening(
    spec: FleetSpec, provider: SeasonalForecastProvider | None, day: float
) -> list[tuple[float, int]]:
    target = MemoryTarget(spec.replicas.min)
    scaler = Autoscaler(spec, target, LiveLoad(), provider, name="weddings")
    timeline: list[tuple[float, int]] = []
    for now in day + np.arange(16 * 3600, 19 * 3600, TICK_S):
        result = await scaler.tick(float(now))
        assert result.error is None
        timeline.append((float(now), target.replicas))
    return timeline


def _first_at(timeline: list[tuple[float, int]], replicas: int) -> float:
    return next(t for t, n in timeline if n >= replicas)


async def test_scales_up_lead_time_before_the_evening_peak(history_prometheus: History) -> None:
    spec = _spec()
    provider = SeasonalForecastProvider(spec)
    async with PrometheusClient(history_prometheus.url, timeout_s=30.0) as client:
        fetch = prometheus_fetch(client, history_prometheus.query)
        await provider.refresh(fetch, history_prometheus.end)
    assert provider.model is not None
    assert provider.model.n_days >= 13  # the history really came from Prometheus
    assert provider.accuracy is not None
    assert provider.accuracy >= 0.85
    assert provider.weight == 1.0

    day = (np.floor(history_prometheus.end / DAY) + 1) * DAY
    peak = day + PEAK_START_H * 3600
    # the peak needs ceil(4000 / (1000 * 0.8)) = 5 pods
    needed = 5
    with_forecast = await _run_evening(spec, provider, day)
    reactive = await _run_evening(spec, None, day)

    ready_at = _first_at(with_forecast, needed)
    # up by the time the lead window first reaches the peak (within one tick), not before 17:00
    assert peak - LEAD_S - TICK_S <= ready_at <= peak - LEAD_S + TICK_S
    # and the fleet stays there through the peak
    assert all(n >= needed for t, n in with_forecast if peak - LEAD_S + TICK_S <= t)
    # without the forecast the same autoscaler reaches it only once the rise has begun
    reactive_at = _first_at(reactive, needed)
    assert reactive_at >= peak - 10 * 60
    assert reactive_at - ready_at >= 10 * 60
    status = provider.status(peak - LEAD_S)
    assert status["floorReplicas"] >= needed
    assert abs(status["peakAt"] - peak) <= 300
