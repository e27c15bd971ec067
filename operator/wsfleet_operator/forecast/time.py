"""Time helpers of the forecaster: durations, sampling intervals, local calendar features.

Everything here is pure and vectorised over numpy arrays of unix seconds (float64).
Calendar features (month, weekday, slot of the day) are computed in the fleet's
timezone, DST included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
MONTH_S = 365.2425 / 12 * DAY_S
"""An average Gregorian month (the `mo` unit of durations)."""

_UNITS_S: dict[str, float] = {
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": DAY_S,
    "w": WEEK_S,
    "mo": MONTH_S,
    "y": 12 * MONTH_S,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(mo|s|m|h|d|w|y)")

# Sampling steps the profile may use: each divides a day evenly.
_NICE_STEPS_S = (60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 43200)


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `30m`, `1d`, `12mo`, `1h30m` or a bare `90` (seconds)."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValueError("empty duration")
    try:
        return float(cleaned)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS_S[match.group(2)]
        pos = match.end()
    if pos != len(cleaned):
        raise ValueError(f"bad duration {text!r}: use e.g. 30m, 1d, 12mo")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact `1d`/`2h`/`5m`/`30s` form of a whole number of seconds."""
    s = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def detect_step(timestamps: FloatArray) -> float:
    """The series' sampling interval: the median positive gap (seconds; 0 for < 2 points)."""
    if timestamps.size < 2:
        return 0.0
    gaps = np.diff(np.sort(timestamps))
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if gaps.size else 0.0


def profile_step(step_s: float) -> float:
    """The slot width of the daily profile: the nice divisor of a day nearest to `step_s`."""
    if step_s <= 0:
        return 3600.0
    if step_s >= DAY_S:
        return DAY_S
    nice = np.asarray(_NICE_STEPS_S, dtype=np.float64)
    return float(nice[np.argmin(np.abs(np.log(nice / step_s)))])


def regularize(
    timestamps: FloatArray, values: FloatArray, step_s: float
) -> tuple[FloatArray, FloatArray]:
    """Median per `step_s` bin of the positive, finite values (gaps simply stay empty).

    Values <= 0 (restarts, outages) and NaN/inf are dropped. Returns bin start times
    (multiples of `step_s`) and the bins' medians, sorted by time.
    """
    keep = np.isfinite(timestamps) & np.isfinite(values) & (values > 0)
    t = timestamps[keep]
    v = values[keep]
    if t.size == 0:
        return np.empty(0), np.empty(0)
    bins = np.floor(t / step_s).astype(np.int64)
    uniq, inverse = np.unique(bins, return_inverse=True)
    medians, _ = grouped_median(inverse.astype(np.int64), v, uniq.size)
    return uniq.astype(np.float64) * step_s, medians


def grouped_median(
    keys: IntArray, values: FloatArray, n_groups: int
) -> tuple[FloatArray, IntArray]:
    """Median of `values` per integer key in [0, n_groups) (NaN when empty), and the counts."""
    counts = np.bincount(keys, minlength=n_groups).astype(np.int64)
    medians = np.full(n_groups, np.nan)
    if values.size == 0:
        return medians, counts
    order = np.lexsort((values, keys))
    ordered = values[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    filled = counts > 0
    lo = starts[filled] + (counts[filled] - 1) // 2
    hi = starts[filled] + counts[filled] // 2
    medians[filled] = 0.5 * (ordered[lo] + ordered[hi])
    return medians, counts


@dataclass(frozen=True)
class Calendar:
    """Local calendar features of a set of instants."""

    day: IntArray
    """local day number (days since 1970-01-01 in the fleet's timezone)"""
    day_pos: FloatArray
    """local days since 1970-01-01 00:00, fractional (noon of day d = d + 0.5)"""
    weekday: IntArray
    """0 = Monday .. 6 = Sunday"""
    month_pos: FloatArray
    """fractional month of the year: 0.0 = 1 January 00:00 .. 12.0 = next 1 January"""
    month: IntArray
    """0 = January .. 11 = December"""
    slot: IntArray
    """slot of the local day, of width `slot_s`"""


def utc_offsets(timestamps: FloatArray, tz: ZoneInfo | None) -> FloatArray:
    """UTC offset (seconds) of `tz` at each instant, vectorised over DST transitions."""
    if tz is None or timestamps.size == 0:
        return np.zeros(timestamps.shape)
    first = float(np.min(timestamps))
    last = float(np.max(timestamps))
    # offsets at every UTC hour of the span, found from daily samples refined where they change
    days = np.arange(np.floor(first / DAY_S), np.floor(last / DAY_S) + 2) * DAY_S
    daily = np.array([_offset(float(d), tz) for d in days])
    hours = np.arange(np.floor(first / 3600.0), np.floor(last / 3600.0) + 1)
    day_index = np.floor((hours * 3600.0 - days[0]) / DAY_S).astype(np.int64)
    hourly = daily[day_index]
    changed = np.flatnonzero(daily[1:] != daily[:-1])
    for d in changed:
        span = (day_index == d) | (day_index == d + 1)
        hourly[span] = [_offset(h * 3600.0, tz) for h in hours[span]]
    index = np.floor(timestamps / 3600.0).astype(np.int64) - int(hours[0])
    return np.asarray(hourly[index], dtype=np.float64)


def _offset(instant: float, tz: ZoneInfo) -> float:
    offset = datetime.fromtimestamp(instant, tz).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def calendar(timestamps: FloatArray, tz: ZoneInfo | None, slot_s: float) -> Calendar:
    """Local calendar features of `timestamps` (unix seconds)."""
    local = timestamps + utc_offsets(timestamps, tz)
    day = np.floor(local / DAY_S).astype(np.int64)
    seconds_of_day = local - day * DAY_S
    dates = day.astype("datetime64[D]")
    month_start = dates.astype("datetime64[M]")
    month_index = month_start.astype(np.int64)
    month = month_index % 12
    start_day = month_start.astype("datetime64[D]").astype(np.int64)
    next_day = (month_start + 1).astype("datetime64[D]").astype(np.int64)
    frac = (day - start_day + seconds_of_day / DAY_S) / (next_day - start_day)
    slots_per_day = max(1, round(DAY_S / slot_s))
    slot = np.minimum(np.floor(seconds_of_day / slot_s).astype(np.int64), slots_per_day - 1)
    return Calendar(
        day=day,
        day_pos=local / DAY_S,
        weekday=(day + 3) % 7,
        month_pos=month.astype(np.float64) + frac,
        month=month,
        slot=slot,
    )


def load_zone(name: str) -> ZoneInfo | None:
    """The timezone named `name` (None for UTC, which needs no conversion)."""
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return None
    return ZoneInfo(name)


def to_unix(instant: datetime | float) -> float:
    """Unix seconds of a datetime (naive = UTC) or a number."""
    if isinstance(instant, datetime):
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
        return instant.timestamp()
    return float(instant)


def month_curve(month_log: FloatArray, month_pos: FloatArray) -> FloatArray:
    """Month effects interpolated between mid-month points, cyclically."""
    xp = np.arange(-0.5, 13.0, 1.0)
    fp = np.concatenate(([month_log[11]], month_log, [month_log[0]]))
    return np.asarray(np.interp(month_pos, xp, fp), dtype=np.float64)
