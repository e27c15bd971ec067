"""Rolling-origin backtest of the forecaster beside seasonal-naive baselines.

The last `origins` horizons of the history are held out one at a time (spaced by
`every`, by default the horizon): for each origin the whole forecaster (its own inner
backtest and combination weights included) is fitted on everything before it and
forecasts the next horizon. The seasonal-naive baselines forecast each point with the
latest value one day, one week or one year earlier, taken from before the origin. All
methods are scored on the same points (those where every method has a forecast and
the actual is > 0), and the share of actuals at or below the forecast's
`quantile` (p90 by default) is the interval's coverage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsfleet_operator.forecast.ensemble import Naive, fit_forecaster
from wsfleet_operator.forecast.grid import Span
from wsfleet_operator.forecast.lattice import Lattice, binned, lattice_for
from wsfleet_operator.forecast.settings import ModelSettings, Priors
from wsfleet_operator.forecast.time import DAY_S, FloatArray


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
    naive_year: Scores | None = None
    quantile: float = 0.9
    coverage: float | None = None
    """share of actuals at or below the forecast's `quantile`"""

    @property
    def best_naive(self) -> Scores | None:
        """The better seasonal-naive baseline."""
        scored = [s for s in (self.naive_week, self.naive_day, self.naive_year) if s is not None]
        return max(scored, key=lambda s: s.accuracy) if scored else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "seasonalNaiveWeek": None if self.naive_week is None else self.naive_week.to_dict(),
            "seasonalNaiveDay": None if self.naive_day is None else self.naive_day.to_dict(),
            "seasonalNaiveYear": None if self.naive_year is None else self.naive_year.to_dict(),
            "origins": self.origins,
            "horizonSeconds": self.horizon_s,
            "stepSeconds": self.step_s,
            "quantile": self.quantile,
            "coverage": None if self.coverage is None else round(self.coverage, 4),
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


def steps_in(lattice: Lattice, span: Span | float) -> int:
    """Whole lattice steps in a span (seconds, or a calendar `Span`)."""
    seconds = span if isinstance(span, (int, float)) else span.approx_s
    unit = lattice.slot_s if lattice.grid.kind == "fixed" else lattice.grid.approx_s
    return max(1, round(float(seconds) / unit))


def backtest(
    timestamps: Iterable[float] | FloatArray,
    values: Iterable[float] | FloatArray,
    priors: Priors | None = None,
    *,
    timezone: str = "UTC",
    settings: ModelSettings | None = None,
    horizon_s: float | Span = DAY_S,
    origins: int = 7,
    every: float | Span | None = None,
    min_train_s: float = DAY_S,
    history_s: float | None = None,
    quantile: float = 0.9,
) -> BacktestResult | None:
    """Score `horizon`-ahead forecasts at the last `origins` origins, `every` apart.

    Returns None when the history is too short for a single origin (less than
    `min_train_s` of training data before the first held-out horizon).
    """
    t_raw = np.asarray(timestamps, dtype=np.float64)
    v_raw = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(t_raw)
    t_raw, v_raw = t_raw[ok], v_raw[ok]
    if t_raw.size < 2:
        return None
    lattice = lattice_for(t_raw, timezone)
    data = binned(lattice, t_raw, v_raw)
    if data.size < 2:
        return None
    step_s = lattice.slot_s if lattice.grid.kind == "fixed" else None
    horizon = steps_in(lattice, horizon_s)
    spacing = horizon if every is None else steps_in(lattice, every)
    min_train = steps_in(lattice, min_train_s)
    keep_steps = None if history_s is None else steps_in(lattice, history_s)
    raw_index = lattice.index(t_raw)
    end = float(data.index[-1]) + 1
    first = float(data.index[0])
    starts = [end - horizon - (k - 1) * spacing for k in range(origins, 0, -1)]
    starts = [o for o in starts if o - first >= min_train]
    periods = _baseline_periods(lattice)
    actual_all: list[FloatArray] = []
    model_all: list[FloatArray] = []
    upper_all: list[FloatArray] = []
    naive_all: dict[str, list[FloatArray]] = {name: [] for name in periods}
    used = 0
    for origin in starts:
        lo = -np.inf if keep_steps is None else origin - keep_steps
        train = (raw_index >= lo) & (raw_index < origin)
        test = (data.index >= origin) & (data.index < origin + horizon)
        if not test.any() or not train.any():
            continue
        forecaster = fit_forecaster(
            t_raw[train], v_raw[train], priors, timezone=timezone, settings=settings, step_s=step_s
        )
        if not forecaster.ready:
            continue
        used += 1
        idx, times = data.index[test], data.times[test]
        history = data.before(origin)
        actual_all.append(np.exp(data.log[test]))
        model_all.append(forecaster.predict(times))
        upper_all.append(forecaster.quantile(times, quantile))
        for name, period in periods.items():
            have = history.size >= 1 and history.index[-1] - history.index[0] >= period
            forecast = (
                Naive(history, period).predict_log(idx) if have else np.full(idx.size, np.nan)
            )
            naive_all[name].append(np.exp(forecast))
    if not actual_all:
        return None
    actual = np.concatenate(actual_all)
    predicted = np.concatenate(model_all)
    upper = np.concatenate(upper_all)
    naive = {name: np.concatenate(v) for name, v in naive_all.items()}
    have = {name: bool(np.isfinite(f).any()) for name, f in naive.items()}
    usable = np.isfinite(actual) & (actual > 0) & np.isfinite(predicted)
    for name, f in naive.items():
        if have[name]:
            usable &= np.isfinite(f)
    if not usable.any():
        return None

    def scored(name: str) -> Scores | None:
        if name not in naive or not have[name]:
            return None
        return score(actual[usable], naive[name][usable])

    unit = lattice.slot_s if lattice.grid.kind == "fixed" else lattice.grid.approx_s
    return BacktestResult(
        model=score(actual[usable], predicted[usable]),
        naive_week=scored("week"),
        naive_day=scored("day"),
        naive_year=scored("year"),
        origins=used,
        horizon_s=horizon * unit,
        step_s=unit,
        quantile=quantile,
        coverage=float(np.mean(actual[usable] <= upper[usable])),
    )


def _baseline_periods(lattice: Lattice) -> dict[str, int]:
    """The seasonal-naive baselines of a lattice: day and week, week, or year (in steps)."""
    long = lattice.long_period
    if lattice.family == "intraday":
        return {"week": 7 * lattice.per_day, "day": lattice.per_day}
    if lattice.family == "daily":
        return {"week": long} if long else {}
    return {"year": long} if long else {}
