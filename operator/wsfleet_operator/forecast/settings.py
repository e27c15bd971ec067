"""What the seasonal model is fitted with: the fleet's priors and the fit's tuning.

Apart from the model (`model.py`) and its fit (`fit.py`), which both use them, so that
neither imports the other's module for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from wsfleet_operator.forecast.time import FloatArray


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
