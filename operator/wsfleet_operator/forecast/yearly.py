"""Models of weekly, monthly and quarterly series: a year's season, a trend, a level.

On a lattice of steps (month numbers for a monthly series), in log space:

    x(k) = level + slope · (k - k_end) + season[k mod period]

- `season`: the ratio to a centred moving average over one period (the classical
  decomposition), averaged per phase over the last `season_years`; it needs two
  periods of history, before that it is the priors' month effects (flat by default).
- `slope`: least squares over the last `trend_years` of the deseasonalised series; it
  is *not* damped: a 12-month forecast keeps the growth of the last years.
- `level`: the line at the end plus an exponentially weighted mean of the recent
  deviations from it (weight `level_decay` per step back), so a recent shift counts.

`year_naive` is the seasonal-naive forecast with drift: the value one year earlier
plus the mean yearly change of the last years. Both are pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsfleet_operator.forecast.time import FloatArray

SEASON_YEARS = 6
TREND_YEARS = 6
LEVEL_DECAY = 0.7
DRIFT_YEARS = 3


@dataclass(frozen=True)
class YearlyModel:
    """A fitted yearly decomposition on lattice indices."""

    end: int
    level: float
    slope: float
    season: FloatArray
    """(period,) log effects, index = lattice index mod period"""

    def predict_log(self, index: FloatArray) -> FloatArray:
        period = self.season.size
        phase = np.mod(index, period).astype(np.int64)
        return np.asarray(
            self.level + self.slope * (index - self.end) + self.season[phase], dtype=np.float64
        )


def fit_yearly(
    index: FloatArray, x: FloatArray, period: int, prior_season: FloatArray | None = None
) -> YearlyModel:
    """Fit log values `x` at integer lattice indices `index` (sorted, no NaN)."""
    first = int(index[0])
    end = int(index[-1])
    n = end - first + 1
    series = np.full(n, np.nan)
    series[(index - first).astype(np.int64)] = x
    series = _fill(series)
    ks = first + np.arange(n)
    season = np.zeros(period) if prior_season is None else prior_season - prior_season.mean()
    if period > 1 and n >= 2 * period + 1:
        season = _season(series, ks, period)
    adjusted = series - season[np.mod(ks, period)]
    span = min(n, TREND_YEARS * period) if period > 1 else min(n, 24)
    u = ks[-span:].astype(np.float64)
    z = adjusted[-span:]
    slope = 0.0
    if span >= max(3, period):
        slope = float(np.polyfit(u - end, z, 1)[0])
    intercept = float(np.mean(z - slope * (u - end)))
    resid = z - intercept - slope * (u - end)
    w = LEVEL_DECAY ** np.arange(resid.size)[::-1]
    level = intercept + float(np.sum(w * resid) / np.sum(w))
    return YearlyModel(end=end, level=level, slope=slope, season=season)


def _season(series: FloatArray, ks: np.ndarray, period: int) -> FloatArray:
    """Mean ratio (log difference) to the centred moving average per phase, recent years."""
    n = series.size
    if period % 2 == 0:
        kernel = np.concatenate(([0.5], np.ones(period - 1), [0.5])) / period
    else:
        kernel = np.ones(period) / period
    trend = np.convolve(series, kernel, mode="valid")
    half = (kernel.size - 1) // 2
    centre = np.arange(half, half + trend.size)
    ratio = series[centre] - trend
    recent = centre >= n - SEASON_YEARS * period
    phase = np.mod(ks[centre], period)
    sums = np.bincount(phase[recent], weights=ratio[recent], minlength=period)
    counts = np.bincount(phase[recent], minlength=period)
    season = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return np.asarray(season - season.mean(), dtype=np.float64)


def _fill(series: FloatArray) -> FloatArray:
    """Linear interpolation across missing steps (ends held)."""
    ok = np.isfinite(series)
    if ok.all():
        return series
    pos = np.arange(series.size, dtype=np.float64)
    return np.asarray(np.interp(pos, pos[ok], series[ok]), dtype=np.float64)


def year_drift(index: FloatArray, x: FloatArray, period: int) -> float:
    """Mean change per year (log) over the last `DRIFT_YEARS` years (0 with < 2 years)."""
    first, end = int(index[0]), int(index[-1])
    series = np.full(end - first + 1, np.nan)
    series[(index - first).astype(np.int64)] = x
    years = min(DRIFT_YEARS, series.size // period - 1)
    if period <= 1 or years < 1:
        return 0.0
    last = np.nanmean(series[-period:])
    before = np.nanmean(series[-period * (years + 1) : -period * years])
    if not (np.isfinite(last) and np.isfinite(before)):
        return 0.0
    return float((last - before) / years)
