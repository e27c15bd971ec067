"""The forecast's median and upper quantile for the dashboard, from the model itself.

The status carries only scalars about the forecast (``status.forecast``: floor,
next peak, accuracy), so a dashboard that runs beside the forecaster (in the
operator, in `wsfleet up`) asks the fitted model for the p50 line and the
`floorQuantile` band over exactly the range and step a chart shows: past and
future, with no series written to the API server.

`ForecastModels` remembers each fleet's forecaster (weakly: a fleet that goes
away takes its forecaster with it) and answers `band(key, start, end, step)`.
`remembering(factory)` wraps the operator's forecaster factory so that every
forecaster it builds is remembered. Without a model, `forecast_lines` draws
what the status says (its points, or what it said at each sample). Nothing
here does I/O; the model is only read (numpy, well under a millisecond for a
chart's 240 points).
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from wsfleet_operator.dashboard.model import FleetSnapshot
from wsfleet_operator.dashboard.series import BandPoint, Point, forecast_at

Key = tuple[str, str]
T = TypeVar("T")

#: Grid points one band may have (a chart draws at most `series.TARGET_POINTS`).
MAX_BAND_POINTS = 1000


@runtime_checkable
class ForecastBands(Protocol):
    """Anything that gives a fleet's forecast as ``(t, p50, upper)`` on a grid."""

    def band(self, key: Key, start: float, end: float, step_s: float) -> list[BandPoint] | None:
        """None: no fitted forecast for this fleet (the dashboard falls back to the status)."""
        ...


def band_from_model(
    model: Any, level: float, start: float, end: float, step_s: float
) -> list[BandPoint] | None:
    """``(t, p50, upper)`` on ``start, start + step, ... <= end`` from a fitted model with
    `predict_range(start, end, step)` and `quantile(times, level)` (the ensemble
    `Forecaster`); None when it is missing or not ready. Non-finite values are left out,
    and the upper value never lies below the median."""
    if model is None or not bool(getattr(model, "ready", False)) or end < start:
        return None
    step = max(step_s, (end - start) / (MAX_BAND_POINTS - 1), 1e-3)
    grid, mid = model.predict_range(start, end, step)
    upper = model.quantile(grid, level)
    out: list[BandPoint] = []
    for t, m, u in zip(grid, mid, upper, strict=True):
        t, m, u = float(t), float(m), float(u)
        if math.isfinite(t) and math.isfinite(m) and math.isfinite(u):
            out.append((t, m, max(m, u)))
    return out


def _model_and_level(forecaster: Any) -> tuple[Any, float]:
    """The fitted model and band level of a `RefreshingForecast` or a provider."""
    provider = getattr(forecaster, "provider", forecaster)
    spec = getattr(provider, "spec", None)
    level = float(getattr(spec, "floor_quantile", 0.9) or 0.9)
    return getattr(provider, "model", None), level


class ForecastModels:
    """Each fleet's forecaster, held weakly, as `ForecastBands` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forecasters: weakref.WeakValueDictionary[Key, Any] = weakref.WeakValueDictionary()

    def register(self, key: Key, forecaster: Any) -> None:
        """Remember `forecaster` (a `RefreshingForecast` or `SeasonalForecastProvider`)."""
        if forecaster is None:
            return
        with self._lock, contextlib.suppress(TypeError):  # TypeError: not weakly referable
            self._forecasters[key] = forecaster

    def keys(self) -> list[Key]:
        with self._lock:
            return sorted(self._forecasters.keys())

    def band(self, key: Key, start: float, end: float, step_s: float) -> list[BandPoint] | None:
        with self._lock:
            forecaster = self._forecasters.get(key)
        if forecaster is None:
            return None
        model, level = _model_and_level(forecaster)
        try:
            return band_from_model(model, level, start, end, step_s)
        except (ValueError, TypeError, ArithmeticError):  # a model mid-refit: no band this time
            return None

    def remembering(
        self, factory: Callable[[str, str, Any, Any], T] | None
    ) -> Callable[[str, str, Any, Any], T] | None:
        """`factory` (the operator's `ForecasterFactory`), remembering what it builds."""
        if factory is None:
            return None
        inner = factory

        def build(namespace: str, name: str, spec_now: Any, prom: Any) -> T:
            forecaster = inner(namespace, name, spec_now, prom)
            self.register((namespace, name), forecaster)
            return forecaster

        return build


def forecast_now(snap: FleetSnapshot, now: float) -> tuple[float | None, float | None]:
    """What the forecast says about `now` (median, upper quantile): its series, else
    the floor it sets (median only)."""
    predicted = forecast_at([(p.time.timestamp(), p.value) for p in snap.forecast], now)
    uppers = [(p.time.timestamp(), p.upper) for p in snap.forecast if p.upper is not None]
    upper = forecast_at(uppers, now)
    if predicted is None:
        floor = snap.forecast_summary.get("floorConnections")
        if isinstance(floor, int | float) and not isinstance(floor, bool):
            predicted = float(floor)
    return predicted, None if predicted is None or upper is None else max(upper, predicted)


def forecast_lines(
    snap: FleetSnapshot,
    sampled: list[Point],
    sampled_band: list[BandPoint],
    start: float,
    end: float,
    range_s: float,
) -> tuple[float, list[Point], list[BandPoint]]:
    """(view end, median points, band points): the forecast drawn against actual.

    When the status carries past points, those; else what it said at each
    sample we took. Then its prediction ahead of now, the view extended by up
    to a quarter of the range. (A model beside the dashboard overrides both.)
    """
    stated = [(p.time.timestamp(), p.value, p.upper) for p in snap.forecast]
    future = [s for s in stated if s[0] > end]
    view_end = min(end + range_s / 4, max(s[0] for s in future)) if future else end
    stated_band = [
        (t, v, max(u, v)) for t, v, u in stated if u is not None and start <= t <= view_end
    ]
    if any(s[0] <= end for s in stated):
        return (
            view_end,
            [(t, v) for t, v, _ in stated if start <= t <= view_end],
            stated_band,
        )
    ahead = [(t, v) for t, v, _ in future if t <= view_end]
    return view_end, [*sampled, *ahead], [*sampled_band, *stated_band]
