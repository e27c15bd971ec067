"""A real public series with daily and weekly seasonality, shipped inside a PyPI package.

`pmdarima.datasets.load_taylor()`: half-hourly electricity demand in England and
Wales, Monday 5 June 2000 to Sunday 27 August 2000 (12 weeks, 4032 points; Taylor
2003), bundled in the pmdarima wheel, so no network is needed. Day-ahead forecasts at
the last 7 daily origins (rolling origin: fit on everything before each day) are
scored for our model, statsmodels' Holt-Winters (multiplicative weekly season) and
the seasonal-naive baselines, on the same points, and printed side by side.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from wsfleet_operator.forecast.backtest import backtest, score
from wsfleet_operator.forecast.settings import Priors

pmdarima_datasets = pytest.importorskip(
    "pmdarima.datasets", reason="pmdarima (test extra) ships the Taylor series"
)
holtwinters = pytest.importorskip(
    "statsmodels.tsa.holtwinters", reason="statsmodels (test extra) provides Holt-Winters"
)

START = 960163200.0  # 2000-06-05 00:00, a Monday
STEP = 1800.0
ORIGINS = 7
FLAT = Priors(month_multipliers={}, peak_hours=(), peak_factor=1.0)


def _holt_winters_day_ahead(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    actual, forecast = [], []
    for k in range(ORIGINS, 0, -1):
        origin = y.size - k * 48
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = holtwinters.ExponentialSmoothing(
                y[:origin],
                trend=None,
                seasonal="mul",
                seasonal_periods=336,
                initialization_method="heuristic",
            ).fit()
        forecast.append(fit.forecast(48))
        actual.append(y[origin : origin + 48])
    return np.concatenate(actual), np.concatenate(forecast)


def test_day_ahead_accuracy_on_taylor_beside_holt_winters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    y = np.asarray(pmdarima_datasets.load_taylor(), dtype=np.float64)
    assert y.size == 4032
    t = START + STEP * np.arange(y.size)
    ours = backtest(t, y, FLAT, origins=ORIGINS, horizon_s=86400.0)
    assert ours is not None
    assert ours.origins == ORIGINS
    assert ours.model.points == ORIGINS * 48  # no gaps: every point scored
    hw = score(*_holt_winters_day_ahead(y))
    assert hw.points == ours.model.points
    with capsys.disabled():
        print("\nTaylor half-hourly demand, day-ahead, 7 rolling origins (1 - WAPE / MAPE):")
        rows = [
            ("wsfleet seasonal model", ours.model),
            ("statsmodels Holt-Winters", hw),
            ("seasonal naive (week)", ours.naive_week),
            ("seasonal naive (day)", ours.naive_day),
        ]
        for name, s in rows:
            assert s is not None
            print(f"  {name:<26} {s.accuracy:.4f}  {s.mape * 100:.2f}%")
    assert ours.model.accuracy >= 0.85
    # stated margin: not more than 2 points of 1 - WAPE behind Holt-Winters
    assert ours.model.accuracy >= hw.accuracy - 0.02
    assert ours.naive_day is not None
    assert ours.model.accuracy > ours.naive_day.accuracy
