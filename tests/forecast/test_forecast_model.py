"""The seasonal model on synthetic series with known seasonality (stated margins)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
from wsfleet_operator.forecast.backtest import backtest
from wsfleet_operator.forecast.model import fit_model
from wsfleet_operator.forecast.settings import ModelSettings, Priors, Shrinkage

from .synthetic import DAY, START, WEEKDAY, hour_profile, make_series, truth_at

FLAT = Priors(month_multipliers={}, peak_hours=(), peak_factor=1.0)


def _true_hour_factors() -> np.ndarray:
    fine = np.arange(0, 24, 1 / 12) + 1 / 24  # 5-minute slot centres
    log_hourly = np.log(hour_profile(fine)).reshape(24, 12).mean(axis=1)
    return np.exp(log_hourly - log_hourly.mean())


def test_recovers_profile_and_weekday_factors() -> None:
    s = make_series(days=42)
    model = fit_model(s.t, s.y, FLAT)
    summary = model.summary()
    hours = np.array(summary["hourFactors"])
    # the hour-of-day profile within 4 % at every hour (noise 8 %, 5 % spikes/zeros, gaps)
    np.testing.assert_allclose(hours, _true_hour_factors(), rtol=0.04)
    true_weekday = WEEKDAY / np.exp(np.log(WEEKDAY).mean())
    np.testing.assert_allclose(summary["weekdayFactors"], true_weekday, rtol=0.03)
    # the trend (0.4 %/day) within 0.2 %/day
    assert abs(summary["trendPerDay"] - np.expm1(0.004)) < 0.002


def test_day_ahead_tracks_the_true_signal() -> None:
    s = make_series(days=42)
    train = s.t < s.t[-1] - DAY
    model = fit_model(s.t[train], s.y[train], FLAT)
    pred = model.predict(s.t[~train])
    truth = s.truth[~train]
    assert 1 - np.abs(pred - truth).sum() / truth.sum() >= 0.96


def test_beats_seasonal_naive_by_a_margin() -> None:
    s = make_series(days=42)
    result = backtest(s.t, s.y, FLAT, origins=7)
    assert result is not None
    assert result.naive_week is not None
    assert result.naive_day is not None
    # same split for all three: the model beats both baselines by >= 3 points of 1 - WAPE
    assert result.model.points == result.naive_week.points == result.naive_day.points
    assert result.model.accuracy >= result.naive_week.accuracy + 0.03
    assert result.model.accuracy >= result.naive_day.accuracy + 0.03
    assert result.model.accuracy >= 0.85
    assert result.model.mape < result.naive_week.mape


def test_irregular_sampling_with_jitter_and_holes() -> None:
    s = make_series(days=28, step=60.0, gaps=False, outliers=False)
    rng = np.random.default_rng(7)
    keep = rng.random(s.t.size) < 0.3
    t = s.t[keep] + rng.uniform(0, 50, int(keep.sum()))
    y = truth_at(t) * np.exp(rng.normal(0, 0.05, t.size))
    model = fit_model(t, y, FLAT)
    assert model.slot_s == 300.0  # 1-minute-ish data binned to the 5-minute profile
    np.testing.assert_allclose(model.summary()["hourFactors"], _true_hour_factors(), rtol=0.04)


def test_restarts_and_spikes_barely_move_the_forecast() -> None:
    clean = make_series(days=28, gaps=False, outliers=False, seed=3)
    dirty = make_series(days=28, gaps=True, outliers=True, seed=3)
    future = START + 28 * DAY + 300.0 * np.arange(288)
    truth = truth_at(future)
    a = fit_model(clean.t, clean.y, FLAT).predict(future)
    b = fit_model(dirty.t, dirty.y, FLAT).predict(future)
    # 2 days lost, 5 % of scrapes lost, 0.5 % x8 spikes, 0.25 % zero readings:
    assert np.mean(np.abs(b / a - 1)) < 0.015
    accuracy_clean = 1 - np.abs(a - truth).sum() / truth.sum()
    accuracy_dirty = 1 - np.abs(b - truth).sum() / truth.sum()
    assert accuracy_dirty >= accuracy_clean - 0.01


def test_local_timezone_peak_across_dst() -> None:
    # the evening peak happens at 19:00 Europe/London, before and after the 31 March DST change
    zone = ZoneInfo("Europe/London")
    t = START + 300.0 * np.arange(int(42 * DAY / 300))
    local = [datetime.fromtimestamp(x, zone) for x in t.tolist()]
    local_hours = np.array([d.hour + d.minute / 60 + 1 / 24 for d in local])
    model = fit_model(t, 100 * hour_profile(local_hours), FLAT, timezone="Europe/London")
    for day, utc_peak in ((START + 7 * DAY, 19.0), (START + 49 * DAY, 18.0)):  # GMT, then BST
        grid = day + 300.0 * np.arange(288)
        peak_utc_hour = (grid[np.argmax(model.predict(grid))] % DAY) / 3600
        assert abs(peak_utc_hour - utc_peak) <= 0.5


def test_no_history_is_the_prior_times_the_baseline() -> None:
    model = fit_model([], [], Priors(baseline=200.0))
    centre = 2.0 ** (2 / 24)  # the profile is centred in log space: x2 for 2 of 24 hours
    mid_june = 1718496000.0  # 2024-06-16 00:00 UTC: June's mid-point, its full x10
    feb_evening, feb_night = 1707937200.0, 1707966000.0  # 2024-02-14 19:00, 2024-02-15 03:00
    expected = [200 * 10 / centre, 200 * 2 / centre, 200 / centre]
    predicted = model.predict([mid_june, feb_evening, feb_night])
    np.testing.assert_allclose(predicted, expected, rtol=1e-9)
    assert not fit_model([], [], Priors()).ready


def test_short_history_follows_the_season_prior_then_data_takes_over() -> None:
    # three flat January days: the month factors are all prior, so June is ~10x January
    t = 1704067200.0 + 300.0 * np.arange(3 * 288)  # 2024-01-01
    model = fit_model(t, np.full(t.size, 100.0), Priors())
    jan, june = model.predict([1704067200.0 + 3 * DAY + 43200, 1718452800.0])
    assert 9.0 < june / jan < 11.0
    # the profile's data weight grows with the days observed (same noise): 1 day < 28 days
    s = make_series(days=28)
    one_day = s.t < s.t[0] + DAY
    short = fit_model(s.t[one_day], s.y[one_day], Priors()).weights["profile"]
    long = fit_model(s.t, s.y, Priors()).weights["profile"]
    assert 0.5 < short < long < 1.0


def test_stronger_prior_pulls_the_profile_toward_peak_hours() -> None:
    s = make_series(days=2, outliers=False, gaps=False)
    weak = fit_model(
        s.t, s.y, Priors(), settings=ModelSettings(shrinkage=Shrinkage(profile_sd=10.0))
    )
    strong = fit_model(
        s.t,
        s.y,
        Priors(),
        settings=ModelSettings(shrinkage=Shrinkage(profile_sd=0.005, weekday_profile_sd=0.005)),
    )
    prior = Priors().profile_log(288)
    dist_weak = np.abs(weak.profile_log.mean(axis=0) - prior).mean()
    dist_strong = np.abs(strong.profile_log.mean(axis=0) - prior).mean()
    assert dist_strong < dist_weak / 5
