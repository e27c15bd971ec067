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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsfleet_operator.forecast.fit import robust_fit
from wsfleet_operator.forecast.settings import ModelSettings, Priors
from wsfleet_operator.forecast.time import (
    DAY_S,
    FloatArray,
    calendar,
    detect_step,
    load_zone,
    month_curve,
    profile_step,
    regularize,
)

MIN_SLOT_S = 300.0
"""The finest daily-profile slot (5 min); finer data is binned to it by median."""


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
    fit = robust_fit(calendar(t, zone, slot_s), np.log(v), priors, settings, slots)
    return SeasonalModel(
        timezone=timezone,
        slot_s=slot_s,
        step_s=step or slot_s,
        level_log=fit.level_log,
        end_u=fit.end_u,
        trend_per_day=fit.trend_per_day,
        trend_cap_days=settings.trend_cap_days,
        month_log=fit.month_log,
        weekday_log=fit.weekday_log,
        profile_log=fit.profile_log,
        n_points=fit.n_points,
        n_days=fit.n_days,
        weights=fit.weights,
    )
