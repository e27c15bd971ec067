"""Rolling-origin backtest of the seasonal model beside seasonal-naive baselines.

The last `origins` horizons of the history are held out one at a time: for each
origin the model is fitted on everything before it and forecasts the next
`horizon_s`; the seasonal-naive baselines forecast each point with the value one
week (or one day) earlier, taken from before the origin. All methods are scored on
the same points (those where every method has a forecast and the actual is > 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsfleet_operator.forecast.model import MIN_SLOT_S, fit_model
from wsfleet_operator.forecast.settings import ModelSettings, Priors
from wsfleet_operator.forecast.time import (
    DAY_S,
    WEEK_S,
    FloatArray,
    detect_step,
    profile_step,
    regularize,
)


@dataclass(frozen=True)
class Scores:
    """Accuracy of one method: 1 - WAPE, WAPE and MAPE (fractions) over `points`."""

    accuracy: float
    wape: float
    mape: float
    points: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "accuracy": round(self.accuracy, 4),
            "wape": round(self.wape, 4),
            "mape": round(self.mape, 4),
            "points": self.points,
        }


def score(actual: FloatArray, forecast: FloatArray) -> Scores:
    """WAPE = sum|a - f| / sum|a|; MAPE = mean(|a - f| / a) over a > 0."""
    err = np.abs(actual - forecast)
    total = float(np.sum(np.abs(actual)))
    wape = float(err.sum()) / total if total > 0 else float("inf")
    positive = actual > 0
    mape = float(np.mean(err[positive] / actual[positive])) if positive.any() else float("inf")
    return Scores(accuracy=1.0 - wape, wape=wape, mape=mape, points=int(actual.size))


@dataclass(frozen=True)
class BacktestResult:
    model: Scores
    naive_week: Scores | None
    naive_day: Scores | None
    origins: int
    horizon_s: float
    step_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "seasonalNaiveWeek": None if self.naive_week is None else self.naive_week.to_dict(),
            "seasonalNaiveDay": None if self.naive_day is None else self.naive_day.to_dict(),
            "origins": self.origins,
            "horizonSeconds": self.horizon_s,
            "stepSeconds": self.step_s,
        }


def forecast_weight(accuracy: float | None, threshold: float) -> float:
    """How much the autoscaler trusts the forecast, from its backtest accuracy.

    1 at or above `threshold` (and when accuracy is unknown: the priors are the
    owner's stated belief); falling linearly to 0 at `2 * threshold - 1` (0.70 for
    the default 0.85).
    """
    if accuracy is None or accuracy >= threshold:
        return 1.0
    zero_at = max(0.0, 2.0 * threshold - 1.0)
    if accuracy <= zero_at:
        return 0.0
    return float((accuracy - zero_at) / (threshold - zero_at))


def backtest(
    timestamps: Iterable[float] | FloatArray,
    values: Iterable[float] | FloatArray,
    priors: Priors | None = None,
    *,
    timezone: str = "UTC",
    settings: ModelSettings | None = None,
    horizon_s: float = DAY_S,
    origins: int = 7,
    min_train_s: float = DAY_S,
    history_s: float | None = None,
) -> BacktestResult | None:
    """Score day-ahead (or `horizon_s`-ahead) forecasts at the last `origins` origins.

    Returns None when the history is too short for a single origin (less than
    `min_train_s` of training data before the first held-out horizon).
    """
    t_raw = np.asarray(timestamps, dtype=np.float64)
    v_raw = np.asarray(values, dtype=np.float64)
    step = max(MIN_SLOT_S, profile_step(detect_step(t_raw)))
    t, v = regularize(t_raw, v_raw, step)
    if t.size < 2:
        return None
    first = float(t[0])
    grid = np.full(round((t[-1] - first) / step) + 1, np.nan)
    grid[np.round((t - first) / step).astype(np.int64)] = v
    end = float(t[-1]) + step
    starts = [end - k * horizon_s for k in range(origins, 0, -1)]
    starts = [o for o in starts if o - first >= min_train_s]
    if not starts:
        return None
    actual_all: list[FloatArray] = []
    model_all: list[FloatArray] = []
    week_all: list[FloatArray] = []
    day_all: list[FloatArray] = []
    for origin in starts:
        lo = origin - history_s if history_s else -np.inf
        train = (t >= lo) & (t < origin)
        test_t = origin + step * np.arange(round(horizon_s / step), dtype=np.float64)
        test_t = test_t[test_t < end]
        model = fit_model(
            t[train], v[train], priors, timezone=timezone, settings=settings, step_s=step
        )
        actual_all.append(_lookup(grid, first, step, test_t))
        model_all.append(model.predict(test_t))
        week_all.append(_naive(grid, first, step, test_t, origin, WEEK_S))
        day_all.append(_naive(grid, first, step, test_t, origin, DAY_S))
    actual = np.concatenate(actual_all)
    predicted = np.concatenate(model_all)
    week = np.concatenate(week_all)
    day = np.concatenate(day_all)
    have_week = bool(np.isfinite(week).any())
    usable = np.isfinite(actual) & (actual > 0) & np.isfinite(day)
    if have_week:
        usable &= np.isfinite(week)
    if not usable.any():
        return None
    return BacktestResult(
        model=score(actual[usable], predicted[usable]),
        naive_week=score(actual[usable], week[usable]) if have_week else None,
        naive_day=score(actual[usable], day[usable]),
        origins=len(starts),
        horizon_s=horizon_s,
        step_s=step,
    )


def _lookup(grid: FloatArray, first: float, step: float, at: FloatArray) -> FloatArray:
    index = np.round((at - first) / step).astype(np.int64)
    inside = (index >= 0) & (index < grid.size)
    out = np.full(at.size, np.nan)
    out[inside] = grid[index[inside]]
    return out


def _naive(
    grid: FloatArray, first: float, step: float, at: FloatArray, origin: float, period: float
) -> FloatArray:
    """The value `k` periods earlier, with the smallest `k` that lands before `origin`."""
    k = np.floor((at - origin) / period) + 1
    return _lookup(grid, first, step, at - k * period)
