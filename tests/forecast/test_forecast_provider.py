"""The autoscaler-facing provider: floor over the lead window, weight, status, refresh."""

from __future__ import annotations

import numpy as np
import pytest
from wsfleet_operator.forecast.provider import (
    SeasonalForecastProvider,
    priors_from_spec,
    replicas_for,
)
from wsfleet_operator.scaling import History, decide
from wsfleet_operator.spec import FleetSpec, parse_spec

from .conftest import evening_load
from .synthetic import DAY, START


def _spec(**forecast: object) -> FleetSpec:
    return parse_spec(
        {
            "targets": {"connectionsPerPod": 1000},
            "forecast": {"enabled": True, "leadTimeSeconds": 1200, **forecast},
        }
    )


def _history(days: int = 14, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    t = START + 300.0 * np.arange(int(days * DAY / 300))
    y = evening_load(t) * np.exp(np.random.default_rng(2).normal(0, noise, t.size))
    return t, y


def test_no_floor_before_any_history() -> None:
    provider = SeasonalForecastProvider(_spec())
    assert provider.floor(START) is None
    assert provider.floor_connections(START) is None
    provider.update([], [])  # no history is no news
    assert provider.model is None
    status = provider.status(START)
    assert status["ready"] is False
    assert status["floorConnections"] is None
    assert status["accuracy"] is None
    assert status["nextPeakAt"] is None
    assert provider.next_peak(START) is None


def test_baseline_gives_a_prior_only_floor() -> None:
    spec = _spec(peakHours=[{"startHour": 0, "endHour": 2}])
    provider = SeasonalForecastProvider(spec, baseline=500.0)
    # 2024-06-16 00:00 UTC is June's mid-point (its full x10) and a peak hour (x2, centred)
    mid_june = 1718496000.0
    floor = provider.floor_connections(mid_june)
    assert floor is not None
    assert floor == pytest.approx(500 * 10 * 2 / 2 ** (2 / 24) * 1.3, rel=1e-9)
    assert provider.floor(mid_june) == pytest.approx(floor / 1000)
    assert provider.accuracy is None
    assert provider.weight == 1.0


def test_floor_is_the_window_max_with_headroom() -> None:
    t, y = _history()
    provider = SeasonalForecastProvider(_spec(headroom=0.5))
    provider.update(t, y)
    assert provider.weight == 1.0
    assert provider.accuracy is not None
    assert provider.accuracy >= 0.85
    assert not provider.degraded
    day = START + 14 * DAY
    before = provider.floor_connections(day + 17 * 3600)  # window 17:00-17:20: quiet
    ahead = provider.floor_connections(day + 17 * 3600 + 45 * 60)  # window reaches 18:05
    assert before is not None
    assert ahead is not None
    assert before == pytest.approx(400 * 1.5, rel=0.15)
    assert ahead == pytest.approx(4000 * 1.5, rel=0.15)
    peak = provider.peak(day + 17 * 3600 + 45 * 60)
    assert peak is not None
    assert day + 18 * 3600 - 300 <= peak.at <= day + 17 * 3600 + 45 * 60 + 1200
    # the replica floor feeds the pure decision: 6000 / 1000 -> 6 pods at least
    spec = _spec(headroom=0.5)
    decision = decide(spec, None, provider.floor(day + 17 * 3600 + 45 * 60), 2, History(0.0), 0.0)
    assert decision.recommendation >= 6
    upcoming = provider.next_peak(day + 6 * 3600)
    assert upcoming is not None
    assert day + 18 * 3600 - 300 <= upcoming.at < day + 20 * 3600
    status = provider.status(day + 17 * 3600 + 45 * 60)
    assert status["nextPeakAt"] is not None
    assert status["floorReplicas"] == replicas_for(ahead, 1000)
    assert status["backtest"]["model"]["accuracy"] >= 0.85
    assert status["degraded"] is False


def test_poor_accuracy_lowers_the_weight_and_the_floor() -> None:
    rng = np.random.default_rng(9)
    t = START + 300.0 * np.arange(int(14 * DAY / 300))
    y = 1000 * np.exp(rng.normal(0, 1.0, t.size))  # no pattern, heavy noise
    provider = SeasonalForecastProvider(_spec(accuracyThreshold=0.85))
    provider.update(t, y)
    assert provider.accuracy is not None
    assert provider.accuracy < 0.7
    assert provider.degraded
    assert provider.weight == 0.0
    assert provider.floor(START + 14 * DAY) is None
    assert provider.status(START + 14 * DAY)["degraded"] is True


def test_keeps_the_last_fit_through_an_outage_and_takes_spec_changes() -> None:
    t, y = _history(days=7)
    provider = SeasonalForecastProvider(_spec())
    provider.update(t, y)
    fitted = provider.model
    provider.update(t[:0], y[:0])  # Prometheus returned nothing
    assert provider.model is fitted
    assert provider.floor(START + 7 * DAY + 18 * 3600) is not None
    changed = _spec(headroom=0.0)
    provider.update_spec(changed)
    assert provider.spec.headroom == 0.0
    a = provider.floor_connections(START + 7 * DAY + 18.5 * 3600)
    provider.update_spec(_spec(headroom=1.0))
    b = provider.floor_connections(START + 7 * DAY + 18.5 * 3600)
    assert a is not None
    assert b is not None
    assert b == pytest.approx(2 * a)


async def test_refresh_asks_for_history_days_through_the_fetch_callable() -> None:
    t, y = _history(days=14)
    calls: list[tuple[float, float, float]] = []

    async def fetch(start: float, end: float, step: float) -> tuple[list[float], list[float]]:
        calls.append((start, end, step))
        keep = (t >= start) & (t <= end)
        return t[keep].tolist(), y[keep].tolist()

    provider = SeasonalForecastProvider(_spec(historyDays=7))
    await provider.refresh(fetch, float(t[-1]))
    assert calls == [(float(t[-1]) - 7 * DAY, float(t[-1]), 300.0)]
    assert provider.model is not None
    assert provider.model.n_days == 7 or provider.model.n_days == 8


def test_priors_from_spec() -> None:
    spec = parse_spec(
        {
            "forecast": {
                "seasonPriors": [{"month": 12, "multiplier": 3}],
                "peakHours": [{"startHour": 9, "endHour": 17}, {"startHour": 18, "endHour": 20}],
            }
        }
    )
    priors = priors_from_spec(spec.forecast, 10.0)
    assert priors.month_multipliers == {12: 3.0}
    assert priors.peak_hours == ((9, 17), (18, 20))
    assert priors.baseline == 10.0
    assert replicas_for(2000.0000001, 1000) == 2
    assert replicas_for(2001, 1000) == 3


def _noisy_evenings(days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """400 by day; 18:00-20:00 an evening peak whose height varies a lot from day to day
    (median 3000, log-sd 0.35: one evening in ten above ~4700)."""
    rng = np.random.default_rng(seed)
    t = START + 300.0 * np.arange(int(days * DAY / 300))
    h = (t % DAY) / 3600.0
    height = 3000.0 * np.exp(rng.normal(0.0, 0.35, days))[((t - START) // DAY).astype(int)]
    y = np.where((h >= 18.0) & (h < 20.0), height, 400.0)
    return t, y * np.exp(rng.normal(0.0, 0.03, t.size))


def test_a_p90_floor_scales_ahead_of_a_noisy_evening_that_a_p50_floor_misses() -> None:
    t, y = _noisy_evenings(28, seed=4)
    before_peak = START + 28 * DAY + 17 * 3600 + 50 * 60  # the lead window reaches 18:10
    evening = 3500.0  # a busy evening, as one in three of the evenings seen
    hours = (t % DAY) / 3600
    seen = y[(hours >= 18.5) & (hours < 19.5)]
    assert 0.2 <= float(np.mean(seen >= evening)) <= 0.5
    desired = {}
    for quantile in (0.5, 0.9):
        spec = _spec(headroom=0.0, floorQuantile=quantile)
        provider = SeasonalForecastProvider(spec)
        provider.update(t, y)
        assert provider.weight == 1.0
        assert provider.backtest is not None
        assert provider.backtest.coverage is not None
        decision = decide(spec, None, provider.floor(before_peak), 2, History(0.0), 0.0)
        desired[quantile] = decision.recommendation
        status = provider.status(before_peak)
        assert status["floorQuantile"] == quantile
        assert status["coverage"] == pytest.approx(provider.backtest.coverage, abs=1e-4)
    # 1000 connections per pod: the p50 floor has too few pods for the busy evening, the
    # p90 floor has them before it starts
    assert desired[0.5] * 1000 < evening <= desired[0.9] * 1000


def test_status_stays_the_same_on_every_tick_of_a_step() -> None:
    """A fitted forecast's status must not move with the clock inside one step: the
    operator writes the status only when it changes, and a peak found on a grid that
    started at `now` moved its time (and size) on every tick: a write per tick."""
    t, y = _history()
    provider = SeasonalForecastProvider(_spec())
    provider.update(t, y)
    assert provider.model is not None
    step = provider.model.slot_s
    slot = START + 14 * DAY + 17 * 3600  # a step boundary, in the evening ramp
    assert slot % step == 0
    first = provider.status(slot)
    assert first["peakAt"] is not None
    assert first["nextPeakAt"] is not None
    for tick in (1.0, 7.5, step / 2, step - 1):
        assert provider.status(slot + tick) == first, tick
    assert provider.floor(slot + step - 1) == provider.floor(slot)
    later = provider.status(slot + step)  # the next step may differ, and only then
    assert later["peakAt"] is not None
    assert later["peakAt"] >= first["peakAt"]
