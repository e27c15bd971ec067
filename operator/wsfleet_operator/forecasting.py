"""The seasonal traffic model: level x month x weekday x time-of-day profile.

A pure numpy model of a fleet's connection count, fitted robustly in log space:

    log y(t) = L + s·min(u(t) - u_end, cap) + M(month_pos(t)) + W[weekday] + P[weekday, slot]

- `L`, `s`: the deseasonalised level at the end of the history and a damped trend
  (Theil-Sen slope over the last weeks; extrapolated at most `trend_cap_days`).
- `M`: month effects, linearly interpolated between mid-month points (cyclic), so a
  season ramps in rather than jumping at midnight on the 1st.
- `W`: weekday effects; `P`: the daily profile per weekday at the data's interval
  (slots of 5 min for 5-minute data), a pooled profile plus per-weekday deviations.

Every effect is a *median* (or a mean of daily medians) of residuals, so gaps,
spikes and restarts (zeros, dropped) barely move it, and each is shrunk toward the
fleet's priors with a data weight `n / (n + k)` (see docs/forecasting.md): with no
history the forecast is the priors times a baseline; as history accumulates the
data takes over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wsfleet_operator.forecast_time import (
    DAY_S,
    BoolArray,
    Calendar,
    FloatArray,
    IntArray,
    calendar,
    detect_step,
    grouped_median,
    load_zone,
    profile_step,
    regularize,
)

MIN_SLOT_S = 300.0
"""The finest daily-profile slot (5 min); finer data is binned to it by median."""
MIN_SPREAD = 0.01
"""Floor of the robust residual sigma (log): points within 5 % of the fit are never outliers."""


@dataclass(frozen=True)
class Priors:
    """What the fleet's owner believes before any history (the CR's forecast spec)."""

    month_multipliers: Mapping[int, float] = field(
        default_factory=lambda: {6: 10.0, 9: 8.0, 10: 6.0}
    )
    """month (1-12) -> traffic relative to the base month (others 1.0)"""
    peak_hours: tuple[tuple[int, int], ...] = ((18, 20),)
    """local [start, end) hours of the daily peak"""
    peak_factor: float = 2.0
    """peak-hour traffic relative to the rest of the day"""
    baseline: float | None = None
    """connections at the base month's daily mean, used only when there is no history"""

    def month_log(self) -> FloatArray:
        """Log month effects, index 0 = January."""
        multipliers = [self.month_multipliers.get(m, 1.0) for m in range(1, 13)]
        return np.log(np.asarray(multipliers, dtype=np.float64))

    def profile_log(self, slots_per_day: int) -> FloatArray:
        """Log daily profile at `slots_per_day` slots, centred (mean 0)."""
        hours = (np.arange(slots_per_day) + 0.5) * 24.0 / slots_per_day
        peak = np.zeros(slots_per_day, dtype=bool)
        for start, end in self.peak_hours:
            peak |= (hours >= start) & (hours < end)
        profile = np.where(peak, np.log(self.peak_factor), 0.0).astype(np.float64)
        return np.asarray(profile - profile.mean(), dtype=np.float64)


@dataclass(frozen=True)
class Shrinkage:
    """How far each effect may stray from its prior (see docs/forecasting.md).

    An effect seen `n` times gets the data weight `n / (n + k)` with `k = noise² / sd²`:
    `noise` is the robust sigma of the log residuals (estimated from the data), `sd` the
    prior's standard deviation in log space below. Noisy data or a tight prior need
    more observations before the data takes over.
    """

    profile_sd: float = 0.5
    """pooled daily profile, per slot (n = days observed at that slot)"""
    weekday_profile_sd: float = 0.25
    """per-weekday deviation from the pooled profile (n = that weekday's days at that slot)"""
    weekday_sd: float = 0.25
    """weekday effect (n = days of that weekday observed)"""
    month_days: float = 10.0
    """month effect: a fixed prior strength k in days (n = days of that month observed)"""
    initial_noise: float = 0.1
    """noise assumed by the first pass, before the residuals are known"""


@dataclass(frozen=True)
class ModelSettings:
    """Tuning of the fit (defaults are what the tests and docs state)."""

    shrinkage: Shrinkage = field(default_factory=Shrinkage)
    smooth_s: float = 900.0
    """circular running-median width of the daily profile (3 slots of 5 min)"""
    iterations: int = 4
    outlier_mads: float = 5.0
    """points further than this many robust sigmas from the first fit are refitted without"""
    level_half_window_days: int = 3
    trend_window_days: int = 28
    trend_min_days: int = 7
    trend_cap_days: float = 7.0
    max_trend_per_day: float = 0.05
    """|log slope| limit (5 %/day)"""
    level_days: int = 7
    """without a trend, the level is the median of the last this many days"""


@dataclass(frozen=True)
class SeasonalModel:
    """A fitted model; `predict` is all the operator needs."""

    timezone: str
    slot_s: float
    step_s: float
    level_log: float | None
    """log of the deseasonalised (base-month, mean-day) level at the end of the history"""
    end_u: float
    """local day coordinate of the end of the history (day d's noon = d)"""
    trend_per_day: float
    trend_cap_days: float
    month_log: FloatArray
    weekday_log: FloatArray
    profile_log: FloatArray
    """(7, slots_per_day)"""
    n_points: int
    n_days: int
    weights: dict[str, float]

    @property
    def ready(self) -> bool:
        """Whether it can predict (it had history or a baseline)."""
        return self.level_log is not None

    def predict(self, timestamps: Iterable[float] | FloatArray) -> FloatArray:
        """Forecast connections at `timestamps` (unix seconds)."""
        if self.level_log is None:
            raise ValueError("no history and no baseline: nothing to forecast from")
        t = np.asarray(timestamps, dtype=np.float64)
        cal = calendar(t, load_zone(self.timezone), self.slot_s)
        ahead = np.minimum(cal.day_pos - 0.5 - self.end_u, self.trend_cap_days)
        log_y = (
            self.level_log
            + self.trend_per_day * ahead
            + month_curve(self.month_log, cal.month_pos)
            + self.weekday_log[cal.weekday]
            + self.profile_log[cal.weekday, cal.slot]
        )
        return np.exp(log_y)

    def predict_range(
        self, start: float, end: float, step_s: float
    ) -> tuple[FloatArray, FloatArray]:
        """Forecast on the grid `start, start+step, ...` up to and including `end`."""
        count = int(np.floor((end - start) / step_s + 1e-9)) + 1
        grid = start + step_s * np.arange(max(count, 1), dtype=np.float64)
        return grid, self.predict(grid)

    def summary(self) -> dict[str, Any]:
        """Factors in multiplicative form, for status, docs and the CLI."""
        hourly = self.profile_log.reshape(7, 24, -1).mean(axis=2) if self._hourly_ok() else None
        return {
            "timezone": self.timezone,
            "slotSeconds": self.slot_s,
            "level": None if self.level_log is None else float(np.exp(self.level_log)),
            "trendPerDay": float(np.expm1(self.trend_per_day)),
            "monthFactors": [round(float(v), 4) for v in np.exp(self.month_log)],
            "weekdayFactors": [round(float(v), 4) for v in np.exp(self.weekday_log)],
            "hourFactors": None
            if hourly is None
            else [round(float(v), 4) for v in np.exp(hourly.mean(axis=0))],
            "points": self.n_points,
            "days": self.n_days,
            "dataWeights": {k: round(v, 4) for k, v in self.weights.items()},
        }

    def _hourly_ok(self) -> bool:
        return bool(self.profile_log.shape[1] % 24 == 0)


def month_curve(month_log: FloatArray, month_pos: FloatArray) -> FloatArray:
    """Month effects interpolated between mid-month points, cyclically."""
    xp = np.arange(-0.5, 13.0, 1.0)
    fp = np.concatenate(([month_log[11]], month_log, [month_log[0]]))
    return np.interp(month_pos, xp, fp)


@dataclass
class _Effects:
    """The intra-week effects being backfitted (log space)."""

    level: FloatArray  # per local day index (smoothed level, NaN-free over the span)
    weekday: FloatArray  # (7,)
    profile: FloatArray  # (7, S)


def fit_model(
    timestamps: Iterable[float] | FloatArray,
    values: Iterable[float] | FloatArray,
    priors: Priors | None = None,
    *,
    timezone: str = "UTC",
    settings: ModelSettings | None = None,
    step_s: float | None = None,
) -> SeasonalModel:
    """Fit the model to a (timestamp, value) series, regular or irregular, with gaps.

    `values` <= 0 or non-finite are treated as missing (restarts, outages). `step_s`
    overrides the detected sampling interval.
    """
    priors = priors or Priors()
    settings = settings or ModelSettings()
    t_raw = np.asarray(timestamps, dtype=np.float64)
    v_raw = np.asarray(values, dtype=np.float64)
    if t_raw.shape != v_raw.shape:
        raise ValueError("timestamps and values differ in length")
    step = step_s if step_s else detect_step(t_raw)
    slot_s = max(MIN_SLOT_S, profile_step(step)) if step < DAY_S else DAY_S
    slots = max(1, round(DAY_S / slot_s))
    t, v = regularize(t_raw, v_raw, slot_s)
    zone = load_zone(timezone)
    month_prior = priors.month_log()
    profile_prior = np.tile(priors.profile_log(slots), (7, 1))
    if t.size == 0:
        level = None if priors.baseline is None else float(np.log(priors.baseline))
        return SeasonalModel(
            timezone=timezone,
            slot_s=slot_s,
            step_s=step or slot_s,
            level_log=level,
            end_u=0.0,
            trend_per_day=0.0,
            trend_cap_days=settings.trend_cap_days,
            month_log=month_prior,
            weekday_log=np.zeros(7),
            profile_log=profile_prior,
            n_points=0,
            n_days=0,
            weights={"profile": 0.0, "weekday": 0.0, "month": 0.0},
        )
    cal = calendar(t, zone, slot_s)
    x = np.log(v)
    fitter = _Fitter(cal, priors, settings, slots)
    effects = fitter.backfit(x, np.ones(x.size, dtype=bool), None)
    resid = x - fitter.fitted(effects)
    centre = float(np.median(resid))
    spread = max(1.4826 * float(np.median(np.abs(resid - centre))), MIN_SPREAD)
    keep = np.abs(resid - centre) <= settings.outlier_mads * spread
    fitter.noise = spread
    effects = fitter.backfit(x, keep, effects)
    return fitter.finish(x, keep, effects, timezone, step or slot_s, slot_s)


class _Fitter:
    """Backfitting of the effects over one calendar (pure; arrays in, arrays out)."""

    def __init__(self, cal: Calendar, priors: Priors, settings: ModelSettings, slots: int) -> None:
        self.cal = cal
        self.priors = priors
        self.noise = settings.shrinkage.initial_noise
        self.settings = settings
        self.slots = slots
        self.first_day = int(cal.day.min())
        self.day_index = cal.day - self.first_day
        self.n_days = int(self.day_index.max()) + 1
        day_numbers = self.first_day + np.arange(self.n_days)
        self.day_weekday = (day_numbers + 3) % 7
        self.day_month = (
            day_numbers.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12
        )
        self.prior_profile = priors.profile_log(slots)
        half = max(0, round(settings.smooth_s / (DAY_S / slots)) // 2)
        self.width = 2 * half + 1

    def fitted(self, e: _Effects) -> FloatArray:
        c = self.cal
        return e.level[self.day_index] + e.weekday[c.weekday] + e.profile[c.weekday, c.slot]

    def _daily(self, x: FloatArray, keep: BoolArray, e: _Effects) -> tuple[FloatArray, IntArray]:
        dev = x - e.profile[self.cal.weekday, self.cal.slot]
        return grouped_median(self.day_index[keep], dev[keep], self.n_days)

    def _k(self, prior_sd: float) -> float:
        """Prior strength in observations: noise variance over prior variance."""
        return (self.noise / prior_sd) ** 2 if prior_sd > 0 else float("inf")

    def backfit(self, x: FloatArray, keep: BoolArray, start: _Effects | None) -> _Effects:
        s = self.settings.shrinkage
        e = start or _Effects(
            level=np.zeros(self.n_days),
            weekday=np.zeros(7),
            profile=np.zeros((7, self.slots)),
        )
        c = self.cal
        for _ in range(self.settings.iterations):
            dayval, counts = self._daily(x, keep, e)
            seen = counts > 0
            level = self._smooth_level(dayval - e.weekday[self.day_weekday], seen)
            wd_med, wd_n = grouped_median(self.day_weekday[seen], (dayval - level)[seen], 7)
            weekday = np.where(
                wd_n > 0, np.nan_to_num(wd_med) * _weight(wd_n, self._k(s.weekday_sd)), 0.0
            )
            weekday -= weekday.mean()
            resid = x - level[self.day_index] - weekday[c.weekday]
            pooled_med, pooled_n = grouped_median(c.slot[keep], resid[keep], self.slots)
            w_pool = _weight(pooled_n, self._k(s.profile_sd))
            pooled = w_pool * np.nan_to_num(pooled_med) + (1 - w_pool) * self.prior_profile
            pooled = self._smooth(pooled - pooled.mean())
            key = c.weekday * self.slots + c.slot
            dev_med, dev_n = grouped_median(
                key[keep], (resid - pooled[c.slot])[keep], 7 * self.slots
            )
            dev = (np.nan_to_num(dev_med) * _weight(dev_n, self._k(s.weekday_profile_sd))).reshape(
                7, -1
            )
            profile = pooled[None, :] + np.apply_along_axis(self._smooth, 1, dev)
            profile -= profile.mean(axis=1, keepdims=True)
            e = _Effects(level=level, weekday=weekday, profile=profile)
        return e

    def _smooth(self, row: FloatArray) -> FloatArray:
        """Circular running median: removes a noisy slot, keeps ramps and steps sharp."""
        if self.width == 1:
            return row
        half = self.width // 2
        padded = np.concatenate((row[-half:], row, row[:half]))
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.width)
        return np.asarray(np.median(windows, axis=1), dtype=np.float64)

    def _smooth_level(self, raw: FloatArray, seen: BoolArray) -> FloatArray:
        """Mean of the observed days within ± half-window; interpolated over empty stretches."""
        half = self.settings.level_half_window_days
        ones = np.ones(2 * half + 1)
        values = np.where(seen, raw, 0.0)
        sums = np.convolve(values, ones)[half : half + raw.size]
        counts = np.convolve(seen.astype(np.float64), ones)[half : half + raw.size]
        days = np.arange(raw.size, dtype=np.float64)
        has = counts > 0
        level = np.full(raw.size, np.nan)
        level[has] = sums[has] / counts[has]
        return np.asarray(np.interp(days, days[has], level[has]), dtype=np.float64)

    def finish(
        self,
        x: FloatArray,
        keep: BoolArray,
        e: _Effects,
        timezone: str,
        step_s: float,
        slot_s: float,
    ) -> SeasonalModel:
        s = self.settings
        dayval, counts = self._daily(x, keep, e)
        seen = counts > 0
        raw_level = dayval - e.weekday[self.day_weekday]
        month_log, month_weight = self._months(raw_level, seen)
        noon_pos = self._noon_month_pos()
        z = (raw_level - month_curve(month_log, noon_pos))[seen]
        u = np.flatnonzero(seen).astype(np.float64) + self.first_day
        end_u = float(self.cal.day_pos.max()) - 0.5
        recent = u >= end_u - s.trend_window_days
        slope = 0.0
        if int(recent.sum()) >= s.trend_min_days:
            slope = _theil_sen(u[recent], z[recent])
            slope = float(np.clip(slope, -s.max_trend_per_day, s.max_trend_per_day))
            level = float(np.median(z[recent] - slope * (u[recent] - end_u)))
        else:
            level = float(np.median(z[-s.level_days :]))
        n_slot = np.bincount(self.cal.slot[keep], minlength=self.slots)
        return SeasonalModel(
            timezone=timezone,
            slot_s=slot_s,
            step_s=step_s,
            level_log=level,
            end_u=end_u,
            trend_per_day=slope,
            trend_cap_days=s.trend_cap_days,
            month_log=month_log,
            weekday_log=e.weekday,
            profile_log=e.profile,
            n_points=int(keep.sum()),
            n_days=int(seen.sum()),
            weights={
                "profile": float(_weight(n_slot, self._k(s.shrinkage.profile_sd)).mean()),
                "weekday": float(
                    _weight(
                        np.bincount(self.day_weekday[seen], minlength=7),
                        self._k(s.shrinkage.weekday_sd),
                    ).mean()
                ),
                "month": month_weight,
            },
        )

    def _noon_month_pos(self) -> FloatArray:
        days = self.first_day + np.arange(self.n_days)
        dates = days.astype("datetime64[D]")
        start = dates.astype("datetime64[M]")
        first = start.astype("datetime64[D]").astype(np.int64)
        nxt = (start + 1).astype("datetime64[D]").astype(np.int64)
        return np.asarray(self.day_month + (days - first + 0.5) / (nxt - first), dtype=np.float64)

    def _months(self, raw_level: FloatArray, seen: BoolArray) -> tuple[FloatArray, float]:
        """Posterior month effects: data anchored on the prior, shrunk by n / (n + k)."""
        prior = self.priors.month_log()
        sums = np.bincount(self.day_month[seen], weights=raw_level[seen], minlength=12)
        n = np.bincount(self.day_month[seen], minlength=12).astype(np.float64)
        data = np.where(n > 0, sums / np.maximum(n, 1), 0.0)
        anchor = float(np.sum(n * (prior - data)) / n.sum())
        w = _weight(n, self.settings.shrinkage.month_days)
        posterior = np.where(n > 0, w * (data + anchor) + (1 - w) * prior, prior)
        # a single observed month carries no relative information: it equals its prior
        return posterior, float((w * (n > 0)).sum() / 12.0)


def _weight(n: FloatArray | IntArray, k: float) -> FloatArray:
    """The data weight of an effect seen `n` times with prior strength `k`."""
    n = np.asarray(n, dtype=np.float64)
    if np.isinf(k):
        return np.zeros_like(n)
    return n / (n + k) if k > 0 else (n > 0).astype(np.float64)


def _theil_sen(u: FloatArray, z: FloatArray) -> float:
    """Median of pairwise slopes."""
    i, j = np.triu_indices(u.size, k=1)
    du = u[j] - u[i]
    ok = du > 0
    return float(np.median((z[j] - z[i])[ok] / du[ok])) if ok.any() else 0.0
