"""Hypothesis properties of the calendar grid: count and alignment of predicted steps."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_operator.forecast.grid import Grid, Span, detect_grid, parse_span

ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]
_settings = settings(max_examples=60, deadline=None)

dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2040, 12, 1))
walls = st.integers(min_value=0, max_value=23 * 4).map(lambda q: (q // 4, 15 * (q % 4)))


def _local(day: date, hm: tuple[int, int], zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, hm[0], hm[1], tzinfo=ZoneInfo(zone))


@given(dates, st.sampled_from(ZONES), st.integers(min_value=1, max_value=36))
@_settings
def test_monthly_steps_are_month_starts_and_12mo_is_12(day: date, zone: str, n: int) -> None:
    start = _local(day.replace(day=1), (0, 0), zone)
    grid = Grid("months", 1.0, zone, day_of_month=1)
    points = grid.after(start.timestamp(), n)
    assert points.size == n
    assert np.all(np.diff(points) > 0)
    local = [datetime.fromtimestamp(p, ZoneInfo(zone)) for p in points]
    assert all(d.day == 1 and (d.hour, d.minute) == (0, 0) for d in local)
    months = [d.year * 12 + d.month for d in local]
    assert months == list(
        range(start.year * 12 + start.month + 1, start.year * 12 + start.month + n + 1)
    )
    assert grid.within(start.timestamp(), Span(months=n)).size == n
    assert grid.within(start.timestamp(), parse_span(f"{n}mo")).tolist() == points.tolist()
    if n % 12 == 0:
        assert grid.within(start.timestamp(), parse_span(f"{n // 12}y")).size == n


@given(dates, walls, st.sampled_from(ZONES), st.sampled_from([1, 7]), st.integers(1, 60))
@_settings
def test_daily_and_weekly_steps_keep_the_wall_clock_through_dst(
    day: date, hm: tuple[int, int], zone: str, step: int, n: int
) -> None:
    start = _local(day, hm, zone)
    grid = Grid("days", float(step), zone)
    points = grid.after(start.timestamp(), n)
    assert points.size == n
    assert np.all(np.diff(points) > 0)
    tz = ZoneInfo(zone)
    for k, p in enumerate(points, start=1):
        local = datetime.fromtimestamp(p, tz)
        assert local.date() == day + timedelta(days=k * step)
        # the same wall-clock time, unless a clock change skipped it that day
        wall = datetime.combine(local.date(), start.time().replace(tzinfo=None), tzinfo=tz)
        exists = wall.astimezone(ZoneInfo("UTC")).astimezone(tz).replace(
            tzinfo=None
        ) == wall.replace(tzinfo=None)
        if exists:
            assert (local.hour, local.minute) == hm
    weeks = parse_span(f"{n}w")
    assert grid.within(start.timestamp(), weeks).size == (n * 7) // step


@given(dates, st.sampled_from(ZONES), st.integers(min_value=3, max_value=40))
@_settings
def test_detects_a_monthly_series_in_its_timezone(day: date, zone: str, n: int) -> None:
    first = day.replace(day=1)
    stamps = []
    for k in range(n):
        index = first.year * 12 + first.month - 1 + k
        stamps.append(_local(date(index // 12, index % 12 + 1, 1), (0, 0), zone).timestamp())
    grid = detect_grid(np.asarray(stamps), zone)
    assert (grid.kind, grid.size, grid.day_of_month) == ("months", 1.0, 1)
    assert grid.within(stamps[-1], parse_span("12mo")).size == 12
