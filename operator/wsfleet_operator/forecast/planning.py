"""The replica schedule the autoscaler's forecast floor implies over a day or a season.

For every slot of the day: the forecast (p50, and the p10-p90 band), the floor (max of
the `floorQuantile` forecast over the next `leadTimeSeconds` x (1 + headroom) x weight),
and the replicas that hold the floor (`ceil(floor / connectionsPerPod)`, clamped to
[min, max]), as the autoscaler would pre-scale with no live metrics. `plan_month` is a
month's view: one row per day and the busiest day hour by hour. `render_png` and
`render_month_png` draw them (matplotlib, imported lazily).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np

from wsfleet_operator.forecast.ensemble import Forecaster
from wsfleet_operator.forecast.provider import replicas_for
from wsfleet_operator.forecast.time import FloatArray, IntArray, load_zone
from wsfleet_operator.spec import FleetSpec

PLAN_STEP_S = 300.0
"""The schedule's resolution (finer than an hourly prior profile, so lead times show)."""


@dataclass(frozen=True)
class Schedule:
    day: date
    timezone: str
    times: FloatArray
    """slot starts (unix seconds) over the local day"""
    forecast: FloatArray
    floor: FloatArray
    replicas: IntArray
    capacity: FloatArray
    weight: float
    days: int = 1
    lower: FloatArray | None = None
    """p10 of the forecast"""
    upper: FloatArray | None = None
    """p90 of the forecast"""

    @property
    def step_s(self) -> float:
        return float(self.times[1] - self.times[0]) if self.times.size > 1 else PLAN_STEP_S

    def daily(self) -> list[dict[str, Any]]:
        """One row per local day: peak forecast, replica range and pod-hours."""
        zone = load_zone(self.timezone)
        dates = np.array([datetime.fromtimestamp(t, zone or UTC).date() for t in self.times])
        rows: list[dict[str, Any]] = []
        for day in sorted(set(dates.tolist())):
            sel = dates == day
            rows.append(
                {
                    "day": day.isoformat(),
                    "peakForecast": round(float(self.forecast[sel].max()), 1),
                    "peakP90": None
                    if self.upper is None
                    else round(float(self.upper[sel].max()), 1),
                    "minReplicas": int(self.replicas[sel].min()),
                    "maxReplicas": int(self.replicas[sel].max()),
                    "podHours": round(float(self.replicas[sel].sum()) * self.step_s / 3600.0, 1),
                }
            )
        return rows

    def hourly(self) -> list[dict[str, Any]]:
        """One row per local hour: max forecast, max floor, max replicas in that hour."""
        zone = load_zone(self.timezone)
        rows: list[dict[str, Any]] = []
        hours = np.array([datetime.fromtimestamp(t, zone).hour for t in self.times])
        for hour in sorted(set(hours.tolist())):
            sel = hours == hour
            replicas = int(self.replicas[sel].max())
            rows.append(
                {
                    "hour": f"{hour:02d}:00",
                    "forecast": round(float(self.forecast[sel].max()), 1),
                    "floor": round(float(self.floor[sel].max()), 1),
                    "replicas": replicas,
                    "capacity": float(self.capacity[sel].max()),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "day": self.day.isoformat(),
            "days": self.days,
            "timezone": self.timezone,
            "weight": self.weight,
        }
        if self.days == 1:
            out["hours"] = self.hourly()
        else:
            out["daily"] = self.daily()
        return out


def day_start(day: date, timezone: str) -> float:
    """Unix seconds of local midnight starting `day`."""
    zone = load_zone(timezone)
    return datetime.combine(day, time(0), tzinfo=zone or UTC).timestamp()


def plan_day(
    model: Forecaster, spec: FleetSpec, day: date, weight: float = 1.0, days: int = 1
) -> Schedule:
    """The schedule over `days` local days from `day`, every 5 minutes (or finer slots)."""
    fc = spec.forecast
    start = day_start(day, fc.timezone)
    end = day_start(date.fromordinal(day.toordinal() + days), fc.timezone)  # DST: 23 or 25 h
    step = min(model.slot_s, PLAN_STEP_S)
    times = start + step * np.arange(math.ceil((end - start) / step), dtype=np.float64)
    # forecast on a fine grid covering the lead window of the last slot too
    lead = float(fc.lead_time_seconds)
    ahead = math.ceil(lead / step)
    grid = start + step * np.arange(times.size + ahead + 1, dtype=np.float64)
    values = model.predict(grid)
    held = model.quantile(grid, fc.floor_quantile)
    window = np.lib.stride_tricks.sliding_window_view(held, ahead + 1)[: times.size]
    floor = window.max(axis=1) * (1.0 + fc.headroom) * weight
    cpp = spec.targets.connections_per_pod
    replicas = np.array(
        [min(max(replicas_for(f, cpp), spec.replicas.min), spec.replicas.max) for f in floor],
        dtype=np.int64,
    )
    return Schedule(
        day=day,
        timezone=fc.timezone,
        times=times,
        forecast=values[: times.size],
        floor=floor,
        replicas=replicas,
        capacity=(replicas * cpp).astype(np.float64),
        weight=weight,
        days=days,
        lower=model.quantile(times, 0.1),
        upper=model.quantile(times, 0.9),
    )


@dataclass(frozen=True)
class MonthPlan:
    """A month: the schedule of all its days, and its busiest day's."""

    month: Schedule
    busiest: Schedule

    def to_dict(self) -> dict[str, Any]:
        return {
            "month": self.month.day.strftime("%Y-%m"),
            "timezone": self.month.timezone,
            "weight": self.month.weight,
            "daily": self.month.daily(),
            "busiestDay": self.busiest.day.isoformat(),
            "hours": self.busiest.hourly(),
        }


def plan_month(
    model: Forecaster, spec: FleetSpec, year: int, month: int, weight: float = 1.0
) -> MonthPlan:
    """The month's schedule and, hour by hour, its busiest day (most replicas, then the
    highest peak)."""
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    days = following.toordinal() - first.toordinal()
    whole = plan_day(model, spec, first, weight, days=days)
    rows = whole.daily()
    best = max(rows, key=lambda r: (r["maxReplicas"], r["peakForecast"]))
    busiest = plan_day(model, spec, date.fromisoformat(best["day"]), weight)
    return MonthPlan(month=whole, busiest=busiest)


def format_month(plan: MonthPlan) -> str:
    """The month's daily table, then its busiest day's hourly table."""
    return "\n".join(
        [
            _daily_table(plan.month),
            "",
            f"busiest day: {plan.busiest.day.isoformat()}",
            format_table(plan.busiest),
        ]
    )


def format_table(schedule: Schedule) -> str:
    """The schedule as a fixed-width text table: hourly for a day, daily for longer."""
    if schedule.days > 1:
        return _daily_table(schedule)
    lines = [
        f"replica schedule for {schedule.day.isoformat()} ({schedule.timezone}),"
        f" forecast weight {schedule.weight:.2f}",
        f"{'hour':>5}  {'forecast':>10}  {'floor':>10}  {'replicas':>8}  {'capacity':>9}",
    ]
    for row in schedule.hourly():
        lines.append(
            f"{row['hour']:>5}  {row['forecast']:>10.1f}  {row['floor']:>10.1f}"
            f"  {row['replicas']:>8d}  {row['capacity']:>9.0f}"
        )
    return "\n".join(lines)


def _daily_table(schedule: Schedule) -> str:
    lines = [
        f"replica schedule for {schedule.days} days from {schedule.day.isoformat()}"
        f" ({schedule.timezone}), forecast weight {schedule.weight:.2f}",
        f"{'day':>10}  {'peak':>10}  {'replicas':>9}  {'pod-hours':>9}",
    ]
    for row in schedule.daily():
        span = f"{row['minReplicas']}-{row['maxReplicas']}"
        if row["minReplicas"] == row["maxReplicas"]:
            span = str(row["maxReplicas"])
        lines.append(
            f"{row['day']:>10}  {row['peakForecast']:>10.1f}  {span:>9}  {row['podHours']:>9.1f}"
        )
    return "\n".join(lines)


def render_png(schedule: Schedule, path: Path, title: str = "") -> None:
    """Forecast, floor and capacity (connections) and replicas (right axis) over the day."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:  # an optional extra
        raise RuntimeError("charts need matplotlib: pip install 'wsfleet[plot]'") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = 3600.0 if schedule.days == 1 else 86400.0
    hours = (schedule.times - schedule.times[0]) / unit
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    try:
        ax.plot(hours, schedule.forecast, label="forecast (connections)", color="tab:blue")
        if schedule.lower is not None and schedule.upper is not None:
            ax.fill_between(
                hours, schedule.lower, schedule.upper, color="tab:blue", alpha=0.2, label="p10-p90"
            )
        ax.plot(
            hours,
            schedule.floor,
            label="floor (lead window quantile x headroom)",
            color="tab:orange",
        )
        ax.step(hours, schedule.capacity, where="post", label="capacity", color="tab:green")
        if schedule.days == 1:
            ax.set_xlabel(f"hour of {schedule.day.isoformat()} ({schedule.timezone})")
            ax.set_xlim(0, max(24.0, float(hours[-1]) + schedule.step_s / unit))
            ax.set_xticks(range(0, 25, 2))
        else:
            ax.set_xlabel(f"days from {schedule.day.isoformat()} ({schedule.timezone})")
            ax.set_xlim(0, float(schedule.days))
        ax.set_ylabel("connections")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        right = ax.twinx()
        right.step(
            hours,
            schedule.replicas,
            where="post",
            color="tab:red",
            linestyle="--",
            label="replicas",
        )
        right.set_ylabel("replicas")
        right.set_ylim(0, max(int(schedule.replicas.max()) + 1, 2))
        handles, labels = ax.get_legend_handles_labels()
        r_handles, r_labels = right.get_legend_handles_labels()
        ax.legend(handles + r_handles, labels + r_labels, loc="upper left")
        ax.set_title(title or "wsfleet plan")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def render_month_png(
    plan: MonthPlan,
    path: Path,
    history: tuple[FloatArray, FloatArray] | None,
    model: Forecaster,
    title: str = "",
) -> None:
    """Top: the recent history and the forecast after it with its p10-p90 band. Bottom:
    the planned month, daily peak forecast with its band, and the peak replicas."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:  # an optional extra
        raise RuntimeError("charts need matplotlib: pip install 'wsfleet[plot]'") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), dpi=100)
    try:
        if history is not None and history[0].size:
            t, v = history
            end = float(t[-1])
            recent = t >= end - 14 * 86400.0
            step = max(model.slot_s, 300.0)
            ahead = end + step * np.arange(1, int(7 * 86400.0 / step) + 1)
            days_t = (t[recent] - end) / 86400.0
            days_a = (ahead - end) / 86400.0
            top.plot(days_t, v[recent], color="black", linewidth=0.8, label="history")
            top.plot(days_a, model.predict(ahead), color="tab:blue", label="forecast (p50)")
            top.fill_between(
                days_a,
                model.quantile(ahead, 0.1),
                model.quantile(ahead, 0.9),
                color="tab:blue",
                alpha=0.25,
                label="p10-p90",
            )
            top.axvline(0.0, color="grey", linestyle=":")
            top.set_xlabel("days from the end of the history")
            top.legend(loc="upper left")
        else:
            top.text(0.5, 0.5, "no history: the priors alone", ha="center", transform=top.transAxes)
        top.set_ylabel("connections")
        top.set_ylim(bottom=0)
        top.grid(alpha=0.3)
        top.set_title(title or "wsfleet plan")
        sched = plan.month
        x = (sched.times - sched.times[0]) / 86400.0 + 1.0
        bottom.plot(x, sched.forecast, color="tab:blue", linewidth=0.6, label="forecast (p50)")
        if sched.lower is not None and sched.upper is not None:
            bottom.fill_between(
                x, sched.lower, sched.upper, color="tab:blue", alpha=0.2, label="p10-p90"
            )
        bottom.step(x, sched.capacity, where="post", color="tab:green", label="capacity")
        bottom.set_xlabel(f"day of {sched.day.strftime('%B %Y')} ({sched.timezone})")
        bottom.set_ylabel("connections")
        bottom.set_ylim(bottom=0)
        bottom.set_xlim(1.0, float(sched.days) + 1.0)
        bottom.grid(alpha=0.3)
        right = bottom.twinx()
        right.step(
            x, sched.replicas, where="post", color="tab:red", linestyle="--", label="replicas"
        )
        right.set_ylabel("replicas")
        right.set_ylim(0, max(int(sched.replicas.max()) + 1, 2))
        handles, labels = bottom.get_legend_handles_labels()
        r_handles, r_labels = right.get_legend_handles_labels()
        bottom.legend(handles + r_handles, labels + r_labels, loc="upper left")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
