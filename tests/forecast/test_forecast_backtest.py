"""Backtest metrics, seasonal-naive baselines, the accuracy weight, time helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from wsfleet_operator.forecast.backtest import backtest, forecast_weight, score
from wsfleet_operator.forecast.settings import Priors
from wsfleet_operator.forecast.time import (
    calendar,
    detect_step,
    format_duration,
    grouped_median,
    load_zone,
    parse_duration,
    profile_step,
    regularize,
    to_unix,
    utc_offsets,
)

from .synthetic import DAY, START, make_series

FLAT = Priors(month_multipliers={}, peak_hours=(), peak_factor=1.0)


def test_score_wape_and_mape() -> None:
    s = score(np.array([100.0, 200.0, 0.0]), np.array([110.0, 180.0, 5.0]))
    assert s.wape == pytest.approx(35 / 300)
    assert s.accuracy == pytest.approx(1 - 35 / 300)
    assert s.mape == pytest.approx((0.1 + 0.1) / 2)  # zero actuals are left out of MAPE
    assert s.points == 3
    assert s.to_dict()["accuracy"] == round(1 - 35 / 300, 4)
    empty = score(np.zeros(2), np.ones(2))
    assert empty.wape == float("inf")
    assert empty.mape == float("inf")


@pytest.mark.parametrize(
    ("accuracy", "weight"),
    [(None, 1.0), (0.95, 1.0), (0.85, 1.0), (0.80, 2 / 3), (0.775, 0.5), (0.70, 0.0), (0.3, 0.0)],
)
def test_weight_falls_below_the_threshold(accuracy: float | None, weight: float) -> None:
    assert forecast_weight(accuracy, 0.85) == pytest.approx(weight)


def test_weight_with_a_low_threshold_reaches_zero_only_at_zero_accuracy() -> None:
    assert forecast_weight(0.2, 0.4) == pytest.approx(0.5)
    assert forecast_weight(0.1, 0.4) == pytest.approx(0.25)
    assert forecast_weight(0.0, 0.0) == 1.0


def test_seasonal_naive_week_is_perfect_on_a_weekly_periodic_series() -> None:
    t = START + 3600.0 * np.arange(24 * 21)
    weekly = 100 + 50 * np.sin(2 * np.pi * t / (7 * DAY)) + 20 * np.sin(2 * np.pi * t / DAY)
    result = backtest(t, weekly, FLAT, origins=3)
    assert result is not None
    assert result.naive_week is not None
    assert result.naive_week.accuracy == pytest.approx(1.0)
    assert result.naive_day is not None
    assert result.naive_day.accuracy < 1.0
    assert result.to_dict()["origins"] == 3


def test_backtest_needs_history_and_skips_missing_week_baseline() -> None:
    s = make_series(days=3, gaps=False, outliers=False)
    assert backtest(s.t[:100], s.y[:100], FLAT) is None  # < 1 day
    short = backtest(s.t, s.y, FLAT, origins=2, history_s=2 * DAY)
    assert short is not None
    assert short.naive_week is None  # no week of history: that baseline is n/a
    assert short.to_dict()["seasonalNaiveWeek"] is None
    assert backtest([], [], FLAT) is None
    assert backtest(s.t, np.zeros(s.t.size), FLAT) is None


def test_durations() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("1d") == DAY
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90
    assert parse_duration("12mo") == pytest.approx(365.2425 * DAY)
    assert parse_duration("2w") == 14 * DAY
    for bad in ("", "3x", "m5", "5m3"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert format_duration(86400) == "1d"
    assert format_duration(7200) == "2h"
    assert format_duration(300) == "5m"
    assert format_duration(45) == "45s"


def test_steps_and_regularization() -> None:
    assert detect_step(np.array([0.0])) == 0.0
    assert detect_step(np.array([5.0, 5.0])) == 0.0
    assert detect_step(np.array([0.0, 300.0, 600.0, 1500.0])) == 300.0
    assert profile_step(0) == 3600.0
    assert profile_step(290) == 300.0
    assert profile_step(2 * DAY) == DAY
    t, v = regularize(
        np.array([0.0, 10.0, 20.0, 400.0, 500.0]), np.array([1, 3, 100, -1, 0.0]), 300
    )
    np.testing.assert_array_equal(t, [0.0])
    np.testing.assert_array_equal(v, [3.0])
    med, counts = grouped_median(np.array([2, 0, 2, 2]), np.array([1.0, 5.0, 3.0, 2.0]), 4)
    np.testing.assert_array_equal(counts, [1, 0, 3, 0])
    assert med[0] == 5.0
    assert med[2] == 2.0
    assert np.isnan(med[1])


def test_calendar_in_a_timezone() -> None:
    zone = load_zone("America/New_York")
    assert load_zone("UTC") is None
    summer = datetime(2024, 7, 4, 23, 30, tzinfo=UTC).timestamp()  # 19:30 EDT, Thursday
    winter = datetime(2024, 1, 1, 3, 0, tzinfo=UTC).timestamp()  # 22:00 EST on Sunday 31 Dec
    cal = calendar(np.array([summer, winter]), zone, 1800)
    assert cal.slot.tolist() == [39, 44]
    assert cal.weekday.tolist() == [3, 6]
    assert cal.month.tolist() == [6, 11]
    offsets = utc_offsets(np.array([summer, winter]), zone)
    assert offsets.tolist() == [-4 * 3600, -5 * 3600]
    assert utc_offsets(np.array([]), zone).size == 0
    assert to_unix(datetime(1970, 1, 2)) == DAY
    assert to_unix(5) == 5.0
