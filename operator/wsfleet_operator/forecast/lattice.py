"""A series' steps as integers: slots of the local day, local days, or months.

`Lattice.index(t)` numbers instants on the series' calendar grid (local time, DST
included), so "one week earlier" is `index - week` however long that week was in
seconds, and a monthly series' index is its month number. `binned` puts a series on
it (median per step, values <= 0 or non-finite dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsfleet_operator.forecast.grid import Grid, detect_grid
from wsfleet_operator.forecast.model import MIN_SLOT_S
from wsfleet_operator.forecast.time import (
    DAY_S,
    FloatArray,
    grouped_median,
    load_zone,
    profile_step,
    utc_offsets,
)


@dataclass(frozen=True)
class Lattice:
    grid: Grid
    slot_s: float
    """fixed grids: the slot width (the seasonal model's profile slot); else 0"""
    anchor: int = 0
    """days/months grids: the first step's day or month number modulo the step"""

    @property
    def timezone(self) -> str:
        return self.grid.timezone

    @property
    def family(self) -> str:
        """`intraday` (slots of the day), `daily` (local days) or `yearly` (weeks, months)."""
        if self.grid.kind == "fixed":
            return "intraday"
        if self.grid.kind == "days" and self.grid.size < 7:
            return "daily"
        return "yearly"

    @property
    def per_day(self) -> int:
        return max(1, round(DAY_S / self.slot_s)) if self.grid.kind == "fixed" else 1

    @property
    def short_period(self) -> int | None:
        """Steps in a day (intraday grids only)."""
        return self.per_day if self.grid.kind == "fixed" else None

    @property
    def long_period(self) -> int | None:
        """Steps in a week (intraday, daily) or a year (weekly, monthly), None if not whole."""
        n = int(self.grid.size)
        if self.grid.kind == "fixed":
            return 7 * self.per_day
        if self.grid.kind == "days":
            if n < 7:
                return 7 // n if 7 % n == 0 else None
            return round(365.2425 / n)
        return 12 // n if 12 % n == 0 and n < 12 else None

    def index(self, t: FloatArray) -> FloatArray:
        """Step numbers of instants `t` (floats holding integers)."""
        t = np.asarray(t, dtype=np.float64)
        local = t + utc_offsets(t, load_zone(self.timezone))
        if self.grid.kind == "fixed":
            return np.floor(local / self.slot_s)
        number = _number(local, self.grid)
        return np.floor((number - self.anchor) / self.grid.size).astype(np.float64)


def _number(local: FloatArray, grid: Grid) -> FloatArray:
    """Local day numbers (days grids) or month numbers (months grids) of local seconds."""
    day = np.floor(local / DAY_S).astype(np.int64)
    if grid.kind == "days":
        return day.astype(np.float64)
    months = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return months.astype(np.float64)


def lattice_for(timestamps: FloatArray, timezone: str, step_s: float | None = None) -> Lattice:
    """The lattice of a series (an explicit `step_s` forces a fixed grid of that step)."""
    if step_s:
        grid = Grid("fixed" if step_s < DAY_S else "days", step_s, timezone)
        if grid.kind == "days":
            grid = Grid("days", max(1.0, round(step_s / DAY_S)), timezone)
    else:
        grid = detect_grid(timestamps, timezone)
    if grid.kind == "fixed":
        slot = max(MIN_SLOT_S, profile_step(grid.size)) if grid.size > 0 else 3600.0
        return Lattice(grid=grid, slot_s=slot)
    finite = timestamps[np.isfinite(timestamps)]
    if finite.size == 0:
        return Lattice(grid=grid, slot_s=0.0)
    first = np.array([float(finite.min())])
    number = _number(first + utc_offsets(first, load_zone(timezone)), grid)
    return Lattice(grid=grid, slot_s=0.0, anchor=int(number[0]) % int(grid.size))


@dataclass(frozen=True)
class Binned:
    """A series on its lattice: sorted unique indices, log medians and mean times."""

    index: FloatArray
    log: FloatArray
    times: FloatArray

    @property
    def size(self) -> int:
        return int(self.index.size)

    def before(self, origin: float) -> Binned:
        keep = self.index < origin
        return Binned(self.index[keep], self.log[keep], self.times[keep])

    def dense(self, start: int, end: int) -> FloatArray:
        """Log values at indices start..end-1 (NaN where missing)."""
        out = np.full(max(0, end - start), np.nan)
        pos = (self.index - start).astype(np.int64)
        ok = (pos >= 0) & (pos < out.size)
        out[pos[ok]] = self.log[ok]
        return out


def binned(lattice: Lattice, t: FloatArray, v: FloatArray) -> Binned:
    keep = np.isfinite(t) & np.isfinite(v) & (v > 0)
    t, v = t[keep], v[keep]
    if t.size == 0:
        return Binned(np.empty(0), np.empty(0), np.empty(0))
    idx = lattice.index(t)
    uniq, inverse = np.unique(idx, return_inverse=True)
    inverse = inverse.astype(np.int64)
    medians, counts = grouped_median(inverse, np.log(v), uniq.size)
    times = np.bincount(inverse, weights=t, minlength=uniq.size) / counts
    return Binned(uniq, medians, times)
