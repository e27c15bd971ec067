"""Calendar grids: the instants a series is sampled at, in the fleet's local calendar.

A 5-minute series steps by a fixed number of seconds. A daily or weekly series steps
by local *days* (same wall-clock time, 23 or 25 hours across a clock change) and a
monthly one by local *months* (the 1st of each month at the same wall-clock time,
whatever the month's length). `detect_grid` finds which from the timestamps;
`Grid.after` continues it. Spans (`12mo`, `1y`, `8w`, `1d`, `30m`) are calendar spans
too: `12mo` after the 1st of January is the 1st of January a year later, so a monthly
grid gives exactly 12 points in it, a weekly grid 8 in `8w`.
"""

from __future__ import annotations

import calendar as _cal
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Literal

import numpy as np

from wsfleet_operator.forecast.time import DAY_S, FloatArray, load_zone, utc_offsets

GridKind = Literal["fixed", "days", "months"]

_SPAN = re.compile(r"(\d+)(mo|s|m|h|d|w|y)")


@dataclass(frozen=True)
class Span:
    """A calendar span: whole months, whole local days, then seconds."""

    months: int = 0
    days: int = 0
    seconds: float = 0.0

    def add_to(self, instant: float, timezone: str) -> float:
        """`instant` + this span, months and days counted in `timezone`'s calendar."""
        if self.months or self.days:
            zone = load_zone(timezone) or UTC
            local = datetime.fromtimestamp(instant, zone)
            day = _add_months(local.date(), self.months, local.day)
            day = day + timedelta(days=self.days)
            instant = _local_instant(day, local.time(), zone)
        return instant + self.seconds

    @property
    def approx_s(self) -> float:
        """Its length in seconds, months counted as average Gregorian months."""
        return self.months * 365.2425 / 12 * DAY_S + self.days * DAY_S + self.seconds


def parse_span(text: str) -> Span:
    """`12mo`, `1y`, `8w`, `1d`, `1h30m`, `90` (seconds) as a calendar `Span`."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValueError("empty duration")
    try:
        return Span(seconds=float(cleaned))
    except ValueError:
        pass
    months = days = 0
    seconds = 0.0
    pos = 0
    for match in _SPAN.finditer(cleaned):
        if match.start() != pos:
            break
        n, unit = int(match.group(1)), match.group(2)
        if unit in ("mo", "y"):
            months += n * (12 if unit == "y" else 1)
        elif unit in ("d", "w"):
            days += n * (7 if unit == "w" else 1)
        else:
            seconds += n * {"s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = match.end()
    if pos != len(cleaned):
        raise ValueError(f"bad duration {text!r}: use e.g. 30m, 1d, 8w, 12mo, 1y")
    return Span(months=months, days=days, seconds=seconds)


@dataclass(frozen=True)
class Grid:
    """How a series steps: `size` seconds (fixed), local days or local months."""

    kind: GridKind
    size: float
    """seconds (fixed), or a whole number of days or months"""
    timezone: str = "UTC"
    day_of_month: int = 0
    """months: the day the points fall on (-1: month ends; 0: the last point's day)"""

    @property
    def approx_s(self) -> float:
        """One step in seconds (months as average months)."""
        if self.kind == "fixed":
            return self.size
        if self.kind == "days":
            return self.size * DAY_S
        return self.size * 365.2425 / 12 * DAY_S

    def after(self, last: float, count: int) -> FloatArray:
        """The `count` grid points after `last` (a point of the grid)."""
        if count <= 0:
            return np.empty(0)
        if self.kind == "fixed":
            return last + self.size * np.arange(1, count + 1, dtype=np.float64)
        zone = load_zone(self.timezone) or UTC
        local = datetime.fromtimestamp(last, zone)
        step = int(self.size)
        out = np.empty(count)
        for k in range(1, count + 1):
            if self.kind == "days":
                day = local.date() + timedelta(days=k * step)
            else:
                anchor = self.day_of_month or local.day
                day = _add_months(local.date(), k * step, 31 if anchor < 0 else anchor)
            out[k - 1] = _local_instant(day, local.time(), zone)
        return out

    def within(self, last: float, span: Span) -> FloatArray:
        """The grid points in (last, last + span]."""
        end = span.add_to(last, self.timezone)
        if end <= last:
            return np.empty(0)
        if self.kind == "fixed":
            count = int(np.floor((end - last) / self.size + 1e-9)) if self.size > 0 else 0
            return self.after(last, count)
        guess = int(np.ceil((end - last) / self.approx_s)) + 2
        points = self.after(last, guess)
        return points[points <= end + 1e-6]


def detect_grid(timestamps: FloatArray, timezone: str = "UTC") -> Grid:
    """The calendar grid of a series: monthly, daily/weekly (local days) or fixed seconds.

    Local days when every point falls at (about: within the clock change) the same local
    time and the gaps are whole local days; months when the points also share their day
    of the month (or are all month ends) and the gaps are whole months.
    """
    t = np.unique(timestamps[np.isfinite(timestamps)])
    if t.size < 2:
        return Grid("fixed", 0.0, timezone)
    gaps = np.diff(t)
    median_gap = float(np.median(gaps))
    if median_gap < DAY_S - 3600.0:
        return Grid("fixed", median_gap, timezone)
    local = t + utc_offsets(t, load_zone(timezone))
    days = np.floor(local / DAY_S).astype(np.int64)
    tod = local - days * DAY_S
    if float(np.ptp(tod)) > 7200.0:  # not the same wall-clock time (2 h: any clock change)
        return Grid("fixed", median_gap, timezone)
    dates = days.astype("datetime64[D]")
    month_no = dates.astype("datetime64[M]").astype(np.int64)
    dom = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    next_month_start = (dates.astype("datetime64[M]") + 1).astype("datetime64[D]")
    month_end = (next_month_start - dates).astype(np.int64) == 1
    anchor = -1 if bool(np.all(month_end)) and int(dom.min()) >= 28 else int(dom[0])
    same_dom = anchor < 0 or bool(np.all(dom == dom[0]))
    if median_gap >= 27 * DAY_S and same_dom:
        step = int(np.median(np.diff(month_no)))
        if step >= 1:
            return Grid("months", float(step), timezone, day_of_month=anchor)
    day_gaps = np.diff(days)
    return Grid("days", float(max(1, int(np.median(day_gaps)))), timezone)


def _add_months(day: date, months: int, want_day: int) -> date:
    """`day` moved by `months`, at `want_day` clamped to the month's length."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = _cal.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(want_day, last))


def _local_instant(day: date, wall: dtime, zone: tzinfo) -> float:
    """Unix seconds of the wall-clock time `wall` on `day` (the earlier one when ambiguous;
    a time skipped by a clock change moves forward by the change)."""
    return datetime.combine(day, wall.replace(tzinfo=None, fold=0), tzinfo=zone).timestamp()
