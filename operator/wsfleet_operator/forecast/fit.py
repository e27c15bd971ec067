"""Robust backfitting of the seasonal model's effects (pure numpy, log space).

`robust_fit` runs the backfit twice: a first pass with an assumed noise level, then,
without the points further than `outlier_mads` robust sigmas from it and with the
shrinkage set by the measured noise, a second pass from the first one's effects.
See docs/forecasting.md for the steps and the shrinkage formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsfleet_operator.forecast.settings import ModelSettings, Priors
from wsfleet_operator.forecast.time import (
    DAY_S,
    BoolArray,
    Calendar,
    FloatArray,
    IntArray,
    grouped_median,
    month_curve,
)

MIN_SPREAD = 0.01
"""Floor of the robust residual sigma (log): points within 5 % of the fit are never outliers."""


@dataclass(frozen=True)
class Fit:
    """The fitted effects (log space) and what they were fitted from."""

    level_log: float
    end_u: float
    trend_per_day: float
    month_log: FloatArray
    weekday_log: FloatArray
    profile_log: FloatArray
    n_points: int
    n_days: int
    weights: dict[str, float]


def robust_fit(
    cal: Calendar, x: FloatArray, priors: Priors, settings: ModelSettings, slots: int
) -> Fit:
    """Fit log values `x` observed at the calendar points `cal` (no NaN in `x`)."""
    fitter = Fitter(cal, priors, settings, slots)
    effects = fitter.backfit(x, np.ones(x.size, dtype=bool), None)
    resid = x - fitter.fitted(effects)
    centre = float(np.median(resid))
    spread = max(1.4826 * float(np.median(np.abs(resid - centre))), MIN_SPREAD)
    keep = np.abs(resid - centre) <= settings.outlier_mads * spread
    fitter.noise = spread
    effects = fitter.backfit(x, keep, effects)
    return fitter.finish(x, keep, effects)


@dataclass
class Effects:
    """The intra-week effects being backfitted (log space)."""

    level: FloatArray  # per local day index (smoothed level, NaN-free over the span)
    weekday: FloatArray  # (7,)
    profile: FloatArray  # (7, S)


class Fitter:
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

    def fitted(self, e: Effects) -> FloatArray:
        c = self.cal
        return e.level[self.day_index] + e.weekday[c.weekday] + e.profile[c.weekday, c.slot]

    def _daily(self, x: FloatArray, keep: BoolArray, e: Effects) -> tuple[FloatArray, IntArray]:
        dev = x - e.profile[self.cal.weekday, self.cal.slot]
        return grouped_median(self.day_index[keep], dev[keep], self.n_days)

    def _k(self, prior_sd: float) -> float:
        """Prior strength in observations: noise variance over prior variance."""
        return (self.noise / prior_sd) ** 2 if prior_sd > 0 else float("inf")

    def backfit(self, x: FloatArray, keep: BoolArray, start: Effects | None) -> Effects:
        s = self.settings.shrinkage
        e = start or Effects(
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
            e = Effects(level=level, weekday=weekday, profile=profile)
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

    def finish(self, x: FloatArray, keep: BoolArray, e: Effects) -> Fit:
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
        return Fit(
            level_log=level,
            end_u=end_u,
            trend_per_day=slope,
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
