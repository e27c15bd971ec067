"""`wsfleet forecast backtest|predict` and `wsfleet plan`: the forecaster for people."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wsfleet_operator.forecast.backtest import BacktestResult, backtest, forecast_weight
from wsfleet_operator.forecast.io import (
    Series,
    fetch_prometheus,
    format_timestamp,
    read_csv,
    read_fleet,
)
from wsfleet_operator.forecast.model import fit_model
from wsfleet_operator.forecast.planning import format_table, plan_day, render_png
from wsfleet_operator.forecast.provider import priors_from_spec
from wsfleet_operator.forecast.settings import Priors
from wsfleet_operator.forecast.time import (
    detect_step,
    format_duration,
    load_zone,
    parse_duration,
)

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
    bt.add_argument("--horizon", default="1d", help="forecast horizon per origin (default 1d)")
    bt.add_argument("--origins", type=int, default=7, help="held-out horizons (default 7)")
    _model_options(bt)
    bt.set_defaults(func=run_backtest)

    pr = actions.add_parser("predict", help="fit on the whole file, forecast after its end")
    pr.add_argument("--csv", type=Path, required=True, help="timestamp,value CSV")
    pr.add_argument("--horizon", required=True, help="e.g. 30m, 1d, 12mo")
    _model_options(pr)
    pr.set_defaults(func=run_predict)

    plan = subparsers.add_parser("plan", help="the replica schedule the forecast implies")
    plan.add_argument("-f", "--file", type=Path, required=True, help="WebSocketFleet YAML")
    plan.add_argument("--month", type=int, choices=range(1, 13), help="plan the 15th of MONTH")
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
        horizon = parse_duration(args.horizon)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"wsfleet forecast backtest: {exc}", file=sys.stderr)
        return 2
    result = backtest(
        series.timestamps,
        series.values,
        priors,
        timezone=timezone,
        horizon_s=horizon,
        origins=args.origins,
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
        ("seasonal model", result.model),
        ("naive: last week", result.naive_week),
        ("naive: last day", result.naive_day),
    ]
    for name, scores in rows:
        if scores is None:
            lines.append(f"{name:<22} {'n/a (< 1 week)':>18}")
            continue
        lines.append(f"{name:<22} {scores.accuracy:>9.4f} {scores.mape * 100:>7.2f}%")
    lines.append(f"forecast weight {weight:.2f} (threshold {threshold:.2f})")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    try:
        series = read_csv(args.csv)
        priors, timezone = _priors(args)
        horizon = parse_duration(args.horizon)
    except (OSError, ValueError) as exc:
        print(f"wsfleet forecast predict: {exc}", file=sys.stderr)
        return 2
    step = detect_step(series.timestamps)
    model = fit_model(series.timestamps, series.values, priors, timezone=timezone)
    if not model.ready or step <= 0:
        print("wsfleet forecast predict: no usable history in the file", file=sys.stderr)
        return 1
    last = float(series.timestamps[-1])
    count = int(np.floor(horizon / step + 1e-9))
    times = last + step * np.arange(1, count + 1, dtype=np.float64)
    values = model.predict(times)
    stamps: list[Any] = (
        [float(t) if t % 1 else int(t) for t in times.tolist()]
        if series.numeric_timestamps
        else [format_timestamp(t) for t in times.tolist()]
    )
    if args.json:
        rows = [{"timestamp": s, "value": round(v, 3)} for s, v in zip(stamps, values, strict=True)]
        print(json.dumps(rows))
    else:
        print(f"{'timestamp':<22} value")
        for s, v in zip(stamps, values.tolist(), strict=True):
            print(f"{s!s:<22} {v:.3f}")
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
        model = fit_model(series.timestamps, series.values, priors, timezone=fc.timezone)
        result = backtest(series.timestamps, series.values, priors, timezone=fc.timezone, origins=3)
        if result is not None:
            weight = forecast_weight(result.model.accuracy, fc.accuracy_threshold)
        anchor = float(series.timestamps[-1]) + 1.0
    else:
        model = fit_model([], [], priors, timezone=fc.timezone)
        anchor = time.time()
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
