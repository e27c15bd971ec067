"""Synthetic connection series with known seasonality, trend, noise, gaps and outliers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DAY = 86400.0
# Monday 2024-03-04 00:00 UTC
START = 1709510400.0
WEEKDAY = np.array([1.05, 1.05, 1.05, 1.05, 1.05, 0.8, 0.8])


def hour_profile(hours: FloatArray) -> FloatArray:
    """Evening peak around 19:00 (~x1.8), night trough around 04:00 (~x0.65)."""
    return np.exp(
        0.6 * np.exp(-((hours - 19.0) ** 2) / 4.0) - 0.4 * np.exp(-((hours - 4.0) ** 2) / 6.0)
    )


@dataclass
class Synthetic:
    t: FloatArray
    y: FloatArray
    """observed: noise, gaps (NaN), outliers (x8 spikes) and restarts (zeros)"""
    truth: FloatArray
    """the noiseless signal"""


def truth_at(t: FloatArray, level: float = 500.0, trend_per_day: float = 0.004) -> FloatArray:
    hours = (t % DAY) / 3600.0
    weekday = ((t // DAY).astype(np.int64) + 3) % 7
    trend = np.exp(trend_per_day * (t - START) / DAY)
    return level * hour_profile(hours) * WEEKDAY[weekday] * trend


def make_series(
    days: int = 42,
    step: float = 300.0,
    noise: float = 0.08,
    seed: int = 1,
    level: float = 500.0,
    trend_per_day: float = 0.004,
    gaps: bool = True,
    outliers: bool = True,
) -> Synthetic:
    rng = np.random.default_rng(seed)
    t = START + step * np.arange(int(days * DAY / step), dtype=np.float64)
    truth = truth_at(t, level, trend_per_day)
    y = truth * np.exp(rng.normal(0.0, noise, t.size))
    if gaps:  # a 2-day outage of the metrics pipeline, and 5 % of scrapes lost
        gap_start = int(t.size * 0.4)
        y[gap_start : gap_start + int(2 * DAY / step)] = np.nan
        y[rng.random(t.size) < 0.05] = np.nan
    if outliers:  # spikes and gateway restarts (a reading of 0)
        y[rng.integers(0, t.size, t.size // 200)] *= 8.0
        y[rng.integers(0, t.size, t.size // 400)] = 0.0
    return Synthetic(t=t, y=y, truth=truth)
