"""Condition ForecastAccurate: the real seasonal forecaster's backtest reaches the fleet status.

Low accuracy (`SeasonalForecastProvider.degraded`, weight lowered) -> ForecastAccurate=False,
reason LowAccuracy, the accuracy in the message, a Warning event once; recovery -> True.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import numpy as np
from wsfleet_operator import crd, opmetrics
from wsfleet_operator.autoscaler import Autoscaler
from wsfleet_operator.forecast.provider import SeasonalForecastProvider
from wsfleet_operator.spec import ConditionType, FleetSpec, parse_spec

from tests.operator.test_autoscaler import FakeMetrics, FakeTarget

DAY = 86400.0
START = 1709510400.0  # 2024-03-04 00:00 UTC, a Monday
NOW = START + 14 * DAY + 17 * 3600


def _spec(**forecast: Any) -> FleetSpec:
    return parse_spec(
        {
            "targets": {"connectionsPerPod": 1000},
            "forecast": {"enabled": True, "accuracyThreshold": 0.85, **forecast},
        }
    )


def _evening(t: np.ndarray) -> np.ndarray:
    """400 by day, 4000 from 18:00 to 20:00: a pattern the model learns well."""
    h = (t % DAY) / 3600.0
    return np.where((h >= 18.0) & (h < 20.0), 4000.0, 400.0)


def _times() -> np.ndarray:
    return START + 300.0 * np.arange(int(14 * DAY / 300))


def _noise() -> tuple[np.ndarray, np.ndarray]:
    t = _times()
    return t, 1000 * np.exp(np.random.default_rng(9).normal(0, 1.0, t.size))


def _condition(result: Any) -> Any:
    return next(
        (c for c in result.status.conditions if c.type is ConditionType.FORECAST_ACCURATE), None
    )


def _gauge(name: str, fleet: str) -> float | None:
    for metric in opmetrics.REGISTRY.collect():
        for s in metric.samples:
            if s.name == name and s.labels.get("fleet") == fleet:
                return float(s.value)
    return None


async def test_low_accuracy_sets_forecast_accurate_false() -> None:
    spec = _spec()
    provider = SeasonalForecastProvider(spec)
    provider.update(*_noise())
    assert provider.degraded  # the forecaster's own verdict
    scaler = Autoscaler(
        spec, FakeTarget(), FakeMetrics(connections=100), provider, name="fc-low", namespace="ns"
    )
    first = await scaler.tick(NOW)
    cond = _condition(first)
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", "LowAccuracy")
    assert provider.accuracy is not None
    assert f"{provider.accuracy:.2f}" in cond.message
    assert "0.85" in cond.message
    assert "weight lowered" in cond.message
    assert [e.reason for e in first.events if e.reason == "ForecastInaccurate"] == [
        "ForecastInaccurate"
    ]
    assert first.status.forecast is not None
    assert first.status.forecast["degraded"] is True
    # the status validates against the CRD (the condition type is in its enum)
    status = first.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    jsonschema.Draft4Validator(crd.to_json_schema(crd.crd_schema())).validate({"status": status})
    # the same comparison the alert WsfleetForecastAccuracyLow makes
    accuracy = _gauge("wsfleet_operator_forecast_accuracy", "fc-low")
    threshold = _gauge("wsfleet_operator_forecast_accuracy_threshold", "fc-low")
    assert accuracy is not None
    assert threshold == 0.85
    assert accuracy < threshold
    # no repeated event while it stays low
    second = await scaler.tick(NOW + 30)
    assert not [e for e in second.events if e.reason == "ForecastInaccurate"]
    assert _condition(second).last_transition_time == cond.last_transition_time

    # a good fit again: True, and one event saying so
    provider.update(_times(), _evening(_times()))
    assert not provider.degraded
    third = await scaler.tick(NOW + 60)
    cond = _condition(third)
    assert (cond.status, cond.reason) == ("True", "AccuracyOk")
    assert [e.reason for e in third.events if e.reason == "ForecastAccurate"] == [
        "ForecastAccurate"
    ]


async def test_accurate_forecast_and_no_backtest_yet() -> None:
    spec = _spec()
    provider = SeasonalForecastProvider(spec)
    scaler = Autoscaler(spec, FakeTarget(), FakeMetrics(connections=100), provider, name="fc-ok")
    cond = _condition(await scaler.tick(NOW))
    assert (cond.status, cond.reason) == ("Unknown", "NoBacktest")
    provider.update(_times(), _evening(_times()))
    result = await scaler.tick(NOW + 30)
    cond = _condition(result)
    assert (cond.status, cond.reason) == ("True", "AccuracyOk")
    assert not [e for e in result.events if e.reason.startswith("Forecast")]


async def test_no_condition_when_forecasting_is_off() -> None:
    spec = _spec()
    provider = SeasonalForecastProvider(spec)
    provider.update(*_noise())
    scaler = Autoscaler(spec, FakeTarget(), FakeMetrics(connections=100), provider, name="fc-off")
    assert _condition(await scaler.tick(NOW)) is not None
    scaler.update_spec(parse_spec({"targets": {"connectionsPerPod": 1000}}))
    assert _condition(await scaler.tick(NOW + 30)) is None
    no_forecaster = Autoscaler(spec, FakeTarget(), FakeMetrics(connections=100), None)
    assert _condition(await no_forecaster.tick(NOW)) is None
