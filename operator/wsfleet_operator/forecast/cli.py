"""`wsfleet forecast backtest|predict` and `wsfleet plan`: the forecaster for people."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from wsfleet_operator.forecast.backtest import BacktestResult, backtest, forecast_weight
from wsfleet_operator.forecast.ensemble import fit_forecaster
from wsfleet_operator.forecast.grid import Span, detect_grid, parse_span
from wsfleet_operator.forecast.io import (
    Series,
    fetch_prometheus,
    format_timestamp,
    read_csv,
    read_fleet,
)
from wsfleet_operator.forecast.lattice import lattice_for
from wsfleet_operator.forecast.planning import (
    format_month,
    format_table,
    plan_day,
    plan_month,
    render_month_png,
    render_png,
)
from wsfleet_operator.forecast.provider import priors_from_spec
from wsfleet_operator.forecast.settings import Priors
from wsfleet_operator.forecast.time import format_duration, load_zone, parse_duration

FLAT_PRIORS = Priors(month_multipliers={}, peak_hours=(), peak_factor=1.0)
"""Without a fleet file the model learns from the data alone."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `forecast` (backtest, predict) and `plan` to the `wsfleet` command."""
    forecast = subparsers.add_parser("forecast", help="seasonal traffic forecast tools")
    actions = forecast.add_subparsers(dest="forecast_command", metavar="ACTION")
    actions.required = True

    bt = actions.add_parser("backtest", help="rolling-origin accuracy vs seasonal-naive")
    source = bt.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, help="timestamp,value CSV with a header row")
    source.add_argument("--prometheus", metavar="URL", help="Prometheus base URL")
    bt.add_argument("--query", help="PromQL (with --prometheus)")
    bt.add_argument("--range", default="14d", help="history to fetch (default 14d)")
    bt.add_argument("--step", default="5m", help="range-query step (default 5m)")
    bt.add_argument(
        "--horizon",
        help="forecast horizon per origin (default: the series' natural horizon: 1d for"
        " data within the day, 28d for daily, 12mo for monthly)",
    )
    bt.add_argument(
        "--every", help="spacing of the origins (default: the horizon; 7d daily, one step monthly)"
    )
    bt.add_argument(
        "--origins", type=int, help="held-out horizons (default 7; 8 daily; 24 monthly)"
    )
    _model_options(bt)
    bt.set_defaults(func=run_backtest)

    pr = actions.add_parser("predict", help="fit on the whole file, forecast after its end")
    pr.add_argument("--csv", type=Path, required=True, help="timestamp,value CSV")
    pr.add_argument("--horizon", required=True, help="e.g. 30m, 1d, 8w, 12mo, 1y (calendar)")
    pr.add_argument(
        "--quantiles",
        default="0.1,0.5,0.9",
        help="quantile levels to print beside the p50 (default 0.1,0.5,0.9)",
    )
    _model_options(pr)
    pr.set_defaults(func=run_predict)

    plan = subparsers.add_parser("plan", help="the replica schedule the forecast implies")
    plan.add_argument("-f", "--file", type=Path, required=True, help="WebSocketFleet YAML")
    plan.add_argument(
        "--month",
        type=int,
        choices=range(1, 13),
        help="plan MONTH (its next occurrence): peak replicas per day, the busiest day by hour",
    )
    plan.add_argument("--day", type=date.fromisoformat, help="plan this day (YYYY-MM-DD)")
    plan.add_argument(
        "--days",
        type=int,
        default=1,
        choices=range(1, 401),
        metavar="N",
        help="plan N days (a season: one row per day; default 1: one row per hour)",
    )
    plan.add_argument("--csv", type=Path, help="connection history (timestamp,value)")
    plan.add_argument(
        "--baseline",
        type=float,
        help="connections at the base month's daily mean, without history"
        " (default: half the min fleet's capacity)",
    )
    plan.add_argument("--png", type=Path, help="write the plot here")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.set_defaults(func=run_plan)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--fleet", type=Path, help="take priors and timezone from this WebSocketFleet YAML"
    )
    parser.add_argument("--timezone", help="local timezone of the pattern (default UTC)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _priors(args: argparse.Namespace) -> tuple[Priors, str]:
    priors, timezone = FLAT_PRIORS, args.timezone or "UTC"
    if args.fleet is not None:
        _, spec = read_fleet(args.fleet)
        priors, timezone = priors_from_spec(spec.forecast), args.timezone or spec.forecast.timezone
    try:
        load_zone(timezone)
    except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown timezone {timezone!r}") from exc
    return priors, timezone


def _load(args: argparse.Namespace) -> Series:
    if args.csv is not None:
        return read_csv(args.csv)
    if not args.query:
        raise ValueError("--prometheus needs --query")
    end = time.time()
    step = parse_duration(args.step)
    end -= end % step
    return fetch_prometheus(
        args.prometheus, args.query, end - parse_duration(args.range), end, step
    )


def run_backtest(args: argparse.Namespace) -> int:
    try:
        series = _load(args)
        priors, timezone = _priors(args)
        horizon: Span | None = None if args.horizon is None else parse_span(args.horizon)
        every = None if args.every is None else parse_span(args.every)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"wsfleet forecast backtest: {exc}", file=sys.stderr)
        return 2
    family = lattice_for(series.timestamps, timezone).family
    natural = {
        "intraday": ("1d", None, 7),
        "daily": ("28d", "7d", 8),
        "yearly": ("12mo", "1mo", 24),
    }
    default_horizon, default_every, default_origins = natural[family]
    result = backtest(
        series.timestamps,
        series.values,
        priors,
        timezone=timezone,
        horizon_s=horizon or parse_span(default_horizon),
        every=every or (None if default_every is None else parse_span(default_every)),
        origins=args.origins or default_origins,
        min_train_s=parse_span(default_horizon).approx_s if family != "intraday" else 86400.0,
    )
    if result is None:
        print("wsfleet forecast backtest: too little history for one origin", file=sys.stderr)
        return 1
    threshold = 0.85
    if args.fleet is not None:
        threshold = read_fleet(args.fleet)[1].forecast.accuracy_threshold
    weight = forecast_weight(result.model.accuracy, threshold)
    if args.json:
        print(json.dumps({**result.to_dict(), "threshold": threshold, "weight": weight}))
    else:
        print(_backtest_table(result, threshold, weight))
    return 0


def _backtest_table(result: BacktestResult, threshold: float, weight: float) -> str:
    lines = [
        f"rolling-origin backtest: {result.origins} origins x {format_duration(result.horizon_s)}"
        f" ahead, step {format_duration(result.step_s)}, {result.model.points} points",
        f"{'method':<22} {'1 - WAPE':>9} {'MAPE':>8}",
    ]
    rows = [
        ("forecaster (p50)", result.model),
        ("naive: last week", result.naive_week),
        ("naive: last day", result.naive_day),
        ("naive: last year", result.naive_year),
    ]
    for name, scores in rows:
        if scores is None:
            if name != "naive: last year" and result.naive_year is None:
                lines.append(f"{name:<22} {'n/a (too short)':>18}")
            continue
        lines.append(f"{name:<22} {scores.accuracy:>9.4f} {scores.mape * 100:>7.2f}%")
    if result.coverage is not None:
        lines.append(
            f"p{round(result.quantile * 100)} coverage {result.coverage * 100:.1f}%"
            f" (share of actuals at or below it; aim {result.quantile * 100 - 5:.0f}-"
            f"{min(100.0, result.quantile * 100 + 5):.0f}%)"
        )
    lines.append(f"forecast weight {weight:.2f} (threshold {threshold:.2f})")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    try:
        series = read_csv(args.csv)
        priors, timezone = _priors(args)
        horizon = parse_span(args.horizon)
        levels = [float(q) for q in args.quantiles.split(",") if q.strip()]
        if any(not 0.0 < q < 1.0 for q in levels):
            raise ValueError("quantiles must be between 0 and 1")
    except (OSError, ValueError) as exc:
        print(f"wsfleet forecast predict: {exc}", file=sys.stderr)
        return 2
    grid = detect_grid(series.timestamps, timezone)
    model = fit_forecaster(series.timestamps, series.values, priors, timezone=timezone)
    if not model.ready or grid.size <= 0:
        print("wsfleet forecast predict: no usable history in the file", file=sys.stderr)
        return 1
    times = grid.within(float(series.timestamps[-1]), horizon)
    values = model.predict(times)
    bands = {f"p{round(q * 100)}": model.quantile(times, q) for q in levels}
    stamps: list[Any] = (
        [float(t) if t % 1 else int(t) for t in times.tolist()]
        if series.numeric_timestamps
        else [format_timestamp(t) for t in times.tolist()]
    )
    if args.json:
        rows = [
            {
                "timestamp": s,
                "value": round(float(values[i]), 3),
                **{k: round(float(v[i]), 3) for k, v in bands.items()},
            }
            for i, s in enumerate(stamps)
        ]
        print(json.dumps(rows))
    else:
        print(f"{'timestamp':<22} {'value':>12}" + "".join(f" {k:>12}" for k in bands))
        for i, s in enumerate(stamps):
            cells = "".join(f" {float(v[i]):>12.3f}" for v in bands.values())
            print(f"{s!s:<22} {float(values[i]):>12.3f}{cells}")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    try:
        name, spec = read_fleet(args.file)
        series = read_csv(args.csv) if args.csv is not None else None
    except (OSError, ValueError) as exc:
        print(f"wsfleet plan: {exc}", file=sys.stderr)
        return 2
    fc = spec.forecast
    baseline = args.baseline
    if baseline is None:
        baseline = 0.5 * spec.replicas.min * spec.targets.connections_per_pod
    priors = priors_from_spec(fc, baseline)
    weight = 1.0
    if series is not None and series.timestamps.size:
        model = fit_forecaster(series.timestamps, series.values, priors, timezone=fc.timezone)
        result = backtest(series.timestamps, series.values, priors, timezone=fc.timezone, origins=3)
        if result is not None:
            weight = forecast_weight(result.model.accuracy, fc.accuracy_threshold)
        anchor = float(series.timestamps[-1]) + 1.0
    else:
        model = fit_forecaster([], [], priors, timezone=fc.timezone)
        anchor = time.time()
    if args.month is not None and args.day is None:
        start = datetime.fromtimestamp(anchor, UTC).date()
        year = start.year if args.month >= start.month else start.year + 1
        month = plan_month(model, spec, year, args.month, weight)
        if args.json:
            print(json.dumps({"fleet": name, **month.to_dict()}))
        else:
            print(format_month(month))
        if args.png is not None:
            history = None if series is None else (series.timestamps, series.values)
            title = f"wsfleet plan: {name}, {date(year, args.month, 1).strftime('%B %Y')}"
            render_month_png(month, args.png, history, model, title=title)
            if not args.json:
                print(f"plot written to {args.png}")
        return 0
    day = _plan_day(args, anchor)
    schedule = plan_day(model, spec, day, weight, days=args.days)
    if args.json:
        print(json.dumps({"fleet": name, **schedule.to_dict()}))
    else:
        print(format_table(schedule))
    if args.png is not None:
        span = f"on {day.isoformat()}" if args.days == 1 else f"{args.days} days from {day}"
        render_png(schedule, args.png, title=f"wsfleet plan: {name} {span}")
        if not args.json:
            print(f"plot written to {args.png}")
    return 0


def _plan_day(args: argparse.Namespace, anchor: float) -> date:
    if args.day is not None:
        return date.fromisoformat(str(args.day))
    start = datetime.fromtimestamp(anchor, UTC).date()
    if args.month is None:
        return date.fromordinal(start.toordinal() + (1 if args.csv is not None else 0))
    year = start.year if (args.month, 15) >= (start.month, start.day) else start.year + 1
    return date(year, args.month, 15)
