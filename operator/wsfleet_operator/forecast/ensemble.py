"""The forecaster: simple forecasts combined by their recent error, with quantiles.

For a series with slots of the day (5 minutes, half-hourly, hourly) or daily steps,
three forecasts, in log space:

- `seasonal`: the seasonal model (`model.py`: level, trend, months, weekdays, the daily
  profile, shrunk toward the fleet's priors);
- `naive_week`: the value one week earlier (the latest observed week);
- `naive_day`: the value one day earlier (slots of the day only).

For weekly, monthly and quarterly series: `yearly` (season, undamped trend and level,
`yearly.py`) and `naive_year` (the value a year earlier plus the yearly drift).

Each forecast is corrected by its own recent error, decaying (an AR(1) of its
in-sample residuals over the last week, or the last two years of a monthly series):
what was 5 % above the forecast an hour ago is probably still above it for a while.

The combination weights are the inverse mean squared (log) errors of the forecasts
in a rolling-origin backtest on the last horizons of the history (`inner_plan`), and
the quantiles come from the combination's errors in that same backtest: the errors
are scaled by their spread per local hour of day (intraday series: an evening peak
that varies gets a wider band than the night) or per lead (others), and the
empirical quantiles of the scaled errors give every quantile level.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from wsfleet_operator.forecast.lattice import Binned, Lattice, binned, lattice_for
from wsfleet_operator.forecast.model import SeasonalModel, fit_model
from wsfleet_operator.forecast.settings import ModelSettings, Priors
from wsfleet_operator.forecast.time import DAY_S, FloatArray, load_zone, utc_offsets
from wsfleet_operator.forecast.yearly import YearlyModel, fit_yearly, year_drift

LEVELS = np.round(np.arange(0.01, 1.0, 0.01), 2)
"""The quantile levels stored (others are interpolated)."""
MIN_ERRORS = 20
"""Fewer backtest errors than this: quantiles from the in-sample spread, normal shape."""
SPREAD_PRIOR = 10.0
"""A group's error spread is shrunk toward the overall one as if seen this many times."""
MAX_LOOKBACK = 8
"""Seasonal-naive: periods to look back for an observed value past a gap."""


@dataclass(frozen=True)
class Correction:
    """A forecast's recent error, decaying by `rho` per step after `end`."""

    end: float = 0.0
    start: float = 0.0
    rho: float = 0.0

    def at(self, index: FloatArray) -> FloatArray:
        ahead = np.maximum(index - self.end, 0.0)
        return np.where(index > self.end, self.start * self.rho**ahead, 0.0)


@dataclass(frozen=True)
class Naive:
    """The value `period` steps earlier (the latest observed one before the end)."""

    history: Binned
    period: int
    drift: float = 0.0
    """added per period looked back (the yearly drift of `naive_year`)"""

    def predict_log(self, index: FloatArray) -> FloatArray:
        end = float(self.history.index[-1])
        start = int(self.history.index[0])
        dense = self.history.dense(start, int(end) + 1)
        k = np.maximum(np.ceil((index - end) / self.period), 1.0)
        out = np.full(index.shape, np.nan)
        for _ in range(MAX_LOOKBACK):
            src = (index - k * self.period - start).astype(np.int64)
            ok = np.isnan(out) & (src >= 0) & (src < dense.size)
            val = np.full(index.shape, np.nan)
            val[ok] = dense[src[ok]]
            got = np.isfinite(val)
            out[got] = val[got] + k[got] * self.drift
            k = k + 1
            if not np.isnan(out).any():
                break
        return out


@dataclass(frozen=True)
class Component:
    name: str
    seasonal: SeasonalModel | None = None
    naive: Naive | None = None
    yearly: YearlyModel | None = None
    correction: Correction = field(default_factory=Correction)

    def predict_log(self, index: FloatArray, t: FloatArray, corrected: bool = True) -> FloatArray:
        if self.seasonal is not None:
            base = np.log(self.seasonal.predict(t))
        elif self.naive is not None:
            base = self.naive.predict_log(index)
        else:
            assert self.yearly is not None
            base = self.yearly.predict_log(index)
        return base + self.correction.at(index) if corrected else base


@dataclass(frozen=True)
class Spread:
    """Quantiles of the log error: `scale[key] * z[level]` (see `quantile_log`)."""

    by: str
    """`hour` (local hour of day) or `lead` (quarter of the backtest horizon)"""
    scale: FloatArray
    z: FloatArray
    """the scaled errors' quantile at each of `LEVELS`"""
    horizon: float = 1.0
    """the backtest horizon in steps (for `lead`)"""
    errors: int = 0


@dataclass(frozen=True)
class Forecaster:
    """A fitted forecaster: `predict` (p50), `quantile(t, p)`, and what the tools show."""

    lattice: Lattice
    components: tuple[Component, ...]
    weights: dict[str, float]
    spread: Spread
    end: float
    """the lattice index of the last observation"""
    model: SeasonalModel | None
    """the seasonal model (its summary, priors, weights), if the series has one"""
    n_points: int = 0
    inner_errors: dict[str, float] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.components) or (self.model is not None and self.model.ready)

    @property
    def timezone(self) -> str:
        return self.lattice.timezone

    @property
    def n_days(self) -> int:
        """Days of history the seasonal model saw (steps x days per step otherwise)."""
        if self.model is not None:
            return self.model.n_days
        return round(self.n_points * self.lattice.grid.approx_s / DAY_S)

    @property
    def slot_s(self) -> float:
        """The resolution the forecast varies at (the daily profile's slot for intraday)."""
        if self.model is not None and self.lattice.family != "yearly":
            return self.model.slot_s
        return self.lattice.grid.approx_s

    def predict_log(self, timestamps: Iterable[float] | FloatArray) -> FloatArray:
        t = np.asarray(timestamps, dtype=np.float64)
        if not self.components:
            if self.model is None or not self.model.ready:
                raise ValueError("no history and no baseline: nothing to forecast from")
            return np.asarray(np.log(self.model.predict(t)), dtype=np.float64)
        index = self.lattice.index(t)
        total = np.zeros(t.shape)
        weight = np.zeros(t.shape)
        for c in self.components:
            f = c.predict_log(index, t)
            ok = np.isfinite(f)
            w = self.weights.get(c.name, 0.0)
            total[ok] += w * f[ok]
            weight[ok] += w
        out = np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), np.nan)
        if np.isnan(out).any():  # no weighted forecast there: the first component's
            fallback = self.components[0].predict_log(index, t)
            out = np.where(np.isnan(out), fallback, out)
        return np.asarray(out, dtype=np.float64)

    def predict(self, timestamps: Iterable[float] | FloatArray) -> FloatArray:
        """The median forecast (p50) at `timestamps` (unix seconds): the combination."""
        return np.asarray(np.exp(self.predict_log(timestamps)), dtype=np.float64)

    def quantile(self, timestamps: Iterable[float] | FloatArray, level: float) -> FloatArray:
        """The `level` quantile (0 < level < 1) of the forecast at `timestamps`."""
        t = np.asarray(timestamps, dtype=np.float64)
        log_mid = self.predict_log(t)
        return np.asarray(np.exp(log_mid + self.quantile_log(t, level)), dtype=np.float64)

    def quantile_log(self, t: FloatArray, level: float) -> FloatArray:
        """The log-error quantile at `level` for forecasts of instants `t`."""
        s = self.spread
        z = float(np.interp(level, LEVELS, s.z))
        key = _keys(self.lattice, s, t, self.end)
        return np.asarray(s.scale[key] * z, dtype=np.float64)

    def predict_range(
        self, start: float, end: float, step_s: float
    ) -> tuple[FloatArray, FloatArray]:
        """The p50 forecast on the grid `start, start+step, ...` up to and including `end`."""
        count = int(np.floor((end - start) / step_s + 1e-9)) + 1
        grid = start + step_s * np.arange(max(count, 1), dtype=np.float64)
        return grid, self.predict(grid)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.model is None else self.model.summary()
        out.update(
            {
                "grid": {"kind": self.lattice.grid.kind, "size": self.lattice.grid.size},
                "combination": {k: round(v, 4) for k, v in self.weights.items()},
                "backtestErrors": self.spread.errors,
            }
        )
        return out


def _keys(lattice: Lattice, spread: Spread, t: FloatArray, end: float) -> np.ndarray:
    if spread.by == "hour":
        local = t + utc_offsets(t, load_zone(lattice.timezone))
        return np.asarray(np.floor(np.mod(local, DAY_S) / 3600.0).astype(np.int64) % 24)
    lead = np.maximum(lattice.index(t) - end, 1.0)
    quarter = np.floor(4.0 * (lead - 1.0) / max(spread.horizon, 1.0)).astype(np.int64)
    return np.asarray(np.clip(quarter, 0, 3))


@dataclass(frozen=True)
class InnerPlan:
    """The rolling-origin backtest behind the weights: horizon and spacing in steps."""

    horizon: int
    every: int
    origins: int
    min_train: int


def inner_plan(lattice: Lattice) -> InnerPlan:
    """Day-ahead x3 (intraday); 4 weeks every week x8 (daily); a year every step (yearly)."""
    long = lattice.long_period
    if lattice.family == "intraday":
        day = lattice.per_day
        return InnerPlan(horizon=day, every=day, origins=4, min_train=day)
    if lattice.family == "daily":
        return InnerPlan(horizon=28, every=7, origins=8, min_train=14)
    period = long or 4
    return InnerPlan(horizon=period, every=1, origins=2 * period, min_train=period + 1)


def fit_forecaster(
    timestamps: Iterable[float] | FloatArray,
    values: Iterable[float] | FloatArray,
    priors: Priors | None = None,
    *,
    timezone: str = "UTC",
    settings: ModelSettings | None = None,
    step_s: float | None = None,
) -> Forecaster:
    """Fit the combination to a (timestamp, value) series (regular or not, with gaps)."""
    priors = priors or Priors()
    t = np.asarray(timestamps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.shape != v.shape:
        raise ValueError("timestamps and values differ in length")
    lattice = lattice_for(t, timezone, step_s)
    data = binned(lattice, t, v)
    fit = _Fit(lattice, priors, settings, t, v, step_s)
    components = fit.components(data)
    model = next((c.seasonal for c in components if c.seasonal is not None), None)
    if model is None and lattice.family != "yearly":
        model = fit_model(t, v, priors, timezone=timezone, settings=settings, step_s=step_s)
    if not components:
        # priors only: no error seen, no interval (the headroom is the only margin)
        spread = Spread(by="lead", scale=np.ones(4), z=np.zeros(LEVELS.size), horizon=1.0)
        return Forecaster(lattice, (), {}, spread, 0.0, model, n_points=0)
    plan = inner_plan(lattice)
    inner = fit.inner_errors(data, plan)
    weights = _weights(inner.errors, inner.names)
    spread = _spread(lattice, plan, inner, weights, components, data)
    return Forecaster(
        lattice=lattice,
        components=components,
        weights=weights,
        spread=spread,
        end=float(data.index[-1]),
        model=model,
        n_points=data.size,
        inner_errors={k: round(float(np.mean(e**2)), 6) for k, e in inner.errors.items() if e.size},
    )


class _Fit:
    """Fits the components of one series at any origin (pure)."""

    def __init__(
        self,
        lattice: Lattice,
        priors: Priors,
        settings: ModelSettings | None,
        t: FloatArray,
        v: FloatArray,
        step_s: float | None,
    ) -> None:
        self.lattice = lattice
        self.priors = priors
        self.settings = settings
        keep = np.isfinite(t)
        self.t = t[keep]
        self.v = v[keep]
        self.index = lattice.index(self.t)
        self.step_s = step_s

    def components(self, data: Binned) -> tuple[Component, ...]:
        if data.size == 0:
            return ()
        lat = self.lattice
        end = float(data.index[-1])
        out: list[Component] = []
        if lat.family == "yearly":
            period = lat.long_period or 1
            prior = self.priors.month_log() if period == 12 else None
            yearly = fit_yearly(data.index, data.log, period, prior)
            out.append(Component("yearly", yearly=yearly))
            if period > 1 and data.index[-1] - data.index[0] >= period:
                drift = year_drift(data.index, data.log, period)
                naive = Naive(data, period, drift)
                out.append(self._corrected(Component("naive_year", naive=naive), data, end))
            return tuple(out)
        train = self.index <= end
        model = fit_model(
            self.t[train],
            self.v[train],
            self.priors,
            timezone=lat.timezone,
            settings=self.settings,
            step_s=self.step_s,
        )
        out.append(self._corrected(Component("seasonal", seasonal=model), data, end))
        span = data.index[-1] - data.index[0]
        week = lat.long_period
        if week and span >= week:
            naive = Naive(data, week)
            out.append(self._corrected(Component("naive_week", naive=naive), data, end))
        day = lat.short_period
        if day and span >= day:
            naive = Naive(data, day)
            out.append(self._corrected(Component("naive_day", naive=naive), data, end))
        return tuple(out)

    def _corrected(self, c: Component, data: Binned, end: float) -> Component:
        """`c` with an AR(1) correction fitted to its in-sample errors of the last window."""
        lat = self.lattice
        window = lat.long_period or 24
        if lat.family == "yearly":
            window = 2 * window
        recent = data.index > end - window
        idx, x, t = data.index[recent], data.log[recent], data.times[recent]
        if c.naive is not None:  # in-sample: one period earlier, not the latest period
            fitted = _shift_lookup(data, idx - c.naive.period) + c.naive.drift
        else:
            fitted = c.predict_log(idx, t, corrected=False)
        resid = np.full(int(window), np.nan)
        pos = (idx - (end - window + 1)).astype(np.int64)
        resid[pos] = x - fitted
        a, b = resid[:-1], resid[1:]
        ok = np.isfinite(a) & np.isfinite(b)
        if int(ok.sum()) < 8 or float(np.sum(a[ok] ** 2)) <= 0:
            return c
        rho = float(np.clip(np.sum(a[ok] * b[ok]) / np.sum(a[ok] ** 2), 0.0, 0.99))
        tail = max(1, round(3600.0 / lat.slot_s)) if lat.family == "intraday" else 1
        last = resid[-tail:]
        if not np.isfinite(last).any():
            return c
        start = float(np.nanmean(last))
        return Component(c.name, c.seasonal, c.naive, c.yearly, Correction(end, start, rho))

    def inner_errors(self, data: Binned, plan: InnerPlan) -> InnerErrors:
        """Log errors per component at the inner origins (points every component forecast)."""
        end = float(data.index[-1])
        first = float(data.index[0])
        per: dict[str, list[FloatArray]] = {}
        leads: list[FloatArray] = []
        times: list[FloatArray] = []
        names: list[str] = []
        for k in range(plan.origins, 0, -1):
            origin = end + 1 - plan.horizon - (k - 1) * plan.every
            if origin - first < plan.min_train:
                continue
            train = data.before(origin)
            test = (data.index >= origin) & (data.index < origin + plan.horizon)
            if train.size < 2 or not test.any():
                continue
            comps = self.components(train)
            idx, x, t = data.index[test], data.log[test], data.times[test]
            forecasts = {c.name: c.predict_log(idx, t) for c in comps}
            if not names:
                names = [c.name for c in comps]
            if [c.name for c in comps] != names:
                continue  # a component appeared (history grew past a week): compare like with like
            ok = np.all([np.isfinite(f) for f in forecasts.values()], axis=0)
            for name, f in forecasts.items():
                per.setdefault(name, []).append((x - f)[ok])
            leads.append((idx - origin + 1)[ok])
            times.append(t[ok])
        return InnerErrors(
            errors={k: np.concatenate(v) for k, v in per.items()},
            times=np.concatenate(times) if times else np.empty(0),
            leads=np.concatenate(leads) if leads else np.empty(0),
            names=names,
        )


@dataclass(frozen=True)
class InnerErrors:
    """Log errors (actual - forecast) per component at the inner origins' points."""

    errors: dict[str, FloatArray]
    times: FloatArray
    leads: FloatArray
    """steps ahead of the origin (1 = the first step)"""
    names: list[str]


def _shift_lookup(data: Binned, index: FloatArray) -> FloatArray:
    start = int(data.index[0])
    dense = data.dense(start, int(data.index[-1]) + 1)
    pos = (index - start).astype(np.int64)
    out = np.full(index.shape, np.nan)
    ok = (pos >= 0) & (pos < dense.size)
    out[ok] = dense[pos[ok]]
    return out


def _weights(errors: dict[str, FloatArray], names: list[str]) -> dict[str, float]:
    """Inverse mean squared log error; the seasonal model alone without a backtest."""
    scored = {n: errors[n] for n in names if n in errors and errors[n].size >= MIN_ERRORS}
    if not scored:
        return {names[0] if names else "seasonal": 1.0} if names else {}
    inv = {n: 1.0 / max(float(np.mean(e**2)), 1e-8) for n, e in scored.items()}
    total = sum(inv.values())
    return {n: w / total for n, w in inv.items()}


def _spread(
    lattice: Lattice,
    plan: InnerPlan,
    inner: InnerErrors,
    weights: dict[str, float],
    components: tuple[Component, ...],
    data: Binned,
) -> Spread:
    by = "hour" if lattice.family == "intraday" else "lead"
    groups = 24 if by == "hour" else 4
    errors, times = inner.errors, inner.times
    names = [n for n in weights if n in errors]
    if not names or times.size < MIN_ERRORS:
        sigma = _in_sample_sigma(components, data)
        return Spread(by, np.full(groups, sigma), _normal_z(1.0), float(plan.horizon), 0)
    total = sum(weights[n] for n in names)
    combined = np.asarray(sum(weights[n] * errors[n] for n in names) / total, dtype=np.float64)
    if by == "hour":
        # the shape over the day from the seasonal model's in-sample errors (every day of
        # the history), the level of the quantiles from the backtest's
        key = _hour_keys(lattice, times)
        resid = data.log - components[0].predict_log(data.index, data.times, corrected=False)
        ok = np.isfinite(resid)
        scale = _group_spread(_hour_keys(lattice, data.times[ok]), resid[ok], groups)
    else:
        key = _lead_keys(combined.size, inner.leads, plan)
        scale = _group_spread(key, combined, groups)
    z = np.quantile(combined / scale[key], LEVELS)
    z = z - float(np.interp(0.5, LEVELS, z))  # the median is the combination itself
    return Spread(by, np.asarray(scale), np.asarray(z), float(plan.horizon), int(combined.size))


def _hour_keys(lattice: Lattice, times: FloatArray) -> np.ndarray:
    local = times + utc_offsets(times, load_zone(lattice.timezone))
    return np.asarray(np.floor(np.mod(local, DAY_S) / 3600.0).astype(np.int64) % 24)


def _group_spread(key: np.ndarray, errors: FloatArray, groups: int) -> FloatArray:
    """Mean absolute error per group, shrunk toward the overall one."""
    overall = float(np.mean(np.abs(errors))) if errors.size else 0.0
    overall = max(overall, 1e-3)
    sums = np.bincount(key, weights=np.abs(errors), minlength=groups)
    counts = np.bincount(key, minlength=groups).astype(np.float64)
    return np.asarray((sums + SPREAD_PRIOR * overall) / (counts + SPREAD_PRIOR), dtype=np.float64)


def _lead_keys(n: int, leads: FloatArray, plan: InnerPlan) -> np.ndarray:
    if leads.size != n:
        return np.zeros(n, dtype=np.int64)
    quarter = np.floor(4.0 * (leads - 1.0) / max(plan.horizon, 1)).astype(np.int64)
    return np.asarray(np.clip(quarter, 0, 3))


def _in_sample_sigma(components: tuple[Component, ...], data: Binned) -> float:
    """Robust sigma of the first component's in-sample log errors (0.25 when unknown)."""
    if not components or data.size < 4:
        return 0.25
    c = components[0]
    resid = data.log - c.predict_log(data.index, data.times, corrected=False)
    resid = resid[np.isfinite(resid)]
    if resid.size < 4:
        return 0.25
    return max(1.4826 * float(np.median(np.abs(resid - np.median(resid)))), 0.01)


def _normal_z(sigma: float) -> FloatArray:
    """Normal quantiles at `LEVELS` times `sigma` (the shape without backtest errors)."""
    normal = NormalDist()
    return np.asarray([sigma * normal.inv_cdf(float(p)) for p in LEVELS], dtype=np.float64)
