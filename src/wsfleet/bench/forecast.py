"""The forecaster's fit time: 90 days of 5-minute history (25,920 points), median of runs.

`python -m wsfleet.bench --forecast` writes bench/results/<date>-forecast.json and .md.
The fit is the operator's whole refit (`fit_forecaster`: the seasonal model, the
seasonal-naive forecasts, their inner rolling-origin backtest for the weights and the
quantiles); the provider also backtests the result (3 origins, each a whole refit).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

DAY = 86400.0


def history(days: int = 90, step: float = 300.0, seed: int = 1) -> tuple[Any, Any]:
    """An evening-peaked, weekly, gently growing series with 8 % noise and lost scrapes."""
    rng = np.random.default_rng(seed)
    t = 1709510400.0 + step * np.arange(int(days * DAY / step), dtype=np.float64)
    hours = (t % DAY) / 3600.0
    weekday = ((t // DAY).astype(np.int64) + 3) % 7
    shape = np.exp(0.6 * np.exp(-((hours - 19.0) ** 2) / 4.0))
    y = 500.0 * shape * np.where(weekday >= 5, 0.8, 1.05) * np.exp(0.004 * (t - t[0]) / DAY)
    y = y * np.exp(rng.normal(0.0, 0.08, t.size))
    y[rng.random(t.size) < 0.05] = np.nan
    return t, y


def measure(days: int = 90, runs: int = 5) -> dict[str, Any]:
    from wsfleet_operator.forecast.ensemble import fit_forecaster
    from wsfleet_operator.forecast.model import fit_model

    t, y = history(days)
    fit_forecaster(t, y)  # warm-up (imports, caches)
    whole, seasonal = [], []
    for _ in range(runs):
        started = time.perf_counter()
        fit_forecaster(t, y)
        whole.append(time.perf_counter() - started)
        started = time.perf_counter()
        fit_model(t, y)
        seasonal.append(time.perf_counter() - started)
    return {
        "points": int(t.size),
        "days": days,
        "runs": runs,
        "fitForecasterSeconds": {"median": round(statistics.median(whole), 3),
                                 "max": round(max(whole), 3), "all": [round(v, 3) for v in whole]},
        "fitSeasonalModelSeconds": {"median": round(statistics.median(seasonal), 3),
                                    "max": round(max(seasonal), 3)},
        "targetSeconds": 1.0,
    }  # fmt: skip


def to_markdown(doc: dict[str, Any]) -> str:
    whole = doc["fitForecasterSeconds"]
    ok = "✅" if whole["median"] < doc["targetSeconds"] else "❌"
    return (
        f"# Forecaster fit time\n\n{doc['days']} days of 5-minute history ({doc['points']} "
        f"points), {doc['runs']} runs:\n\n| fit | median s | max s |\n| --- | ---: | ---: |\n"
        f"| `fit_forecaster` (target < {doc['targetSeconds']} s) {ok} | {whole['median']} |"
        f" {whole['max']} |\n| `fit_model` (the seasonal model alone) |"
        f" {doc['fitSeasonalModelSeconds']['median']} | {doc['fitSeasonalModelSeconds']['max']} |\n"
    )
