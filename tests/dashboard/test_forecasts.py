"""The forecast's p50 line and upper band: from the operator's fitted model, or from what
the status says; and the operator's wiring that hands the models to the dashboard."""

from __future__ import annotations

import gc
import math
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_operator import cli
from wsfleet_operator.dashboard.forecasts import (
    MAX_BAND_POINTS,
    ForecastBands,
    ForecastModels,
    band_from_model,
    forecast_lines,
    forecast_now,
)
from wsfleet_operator.dashboard.model import FleetSnapshot, ForecastPoint
from wsfleet_operator.forecast.provider import SeasonalForecastProvider
from wsfleet_operator.handlers import OperatorConfig, build_registry
from wsfleet_operator.spec import FleetSpec

DAY = 86400.0
KEY = ("weddings", "chat")


def fitted_provider(end: float | None = None, days: int = 14) -> SeasonalForecastProvider:
    """The operator's forecaster fitted on `days` of noisy daily-peaked connections."""
    end = time.time() if end is None else end
    t = np.arange(end - days * DAY, end, 300.0)
    hour = (t % DAY) / 3600.0
    daily = 100.0 + 300.0 * np.exp(-(((hour - 19.0) / 2.0) ** 2))
    noise = np.random.default_rng(7).lognormal(0.0, 0.15, t.size)
    provider = SeasonalForecastProvider(
        FleetSpec.model_validate({"forecast": {"enabled": True}}),
        backtest_origins=1,
    )
    provider.update(t, daily * noise)
    assert provider.model is not None
    assert provider.model.ready
    return provider


@pytest.fixture(scope="module")
def provider() -> SeasonalForecastProvider:
    return fitted_provider()


def test_band_from_the_fitted_model(provider: SeasonalForecastProvider) -> None:
    now = time.time()
    band = band_from_model(provider.model, 0.9, now - 3600, now + 900, 15.0)
    assert band is not None
    assert len(band) == 301  # start, start + 15 s, ..., end
    assert band[0][0] == now - 3600
    assert all(math.isfinite(m) and m > 0 and u >= m for _, m, u in band)
    assert any(u > m for _, m, u in band)  # a real band: the fit saw errors
    # the median follows the model's own prediction
    assert provider.model is not None
    assert band[10][1] == pytest.approx(float(provider.model.predict([band[10][0]])[0]))
    # a day at 1 s steps is still a bounded grid
    wide = band_from_model(provider.model, 0.9, now - DAY, now, 1.0)
    assert wide is not None
    assert len(wide) <= MAX_BAND_POINTS
    assert band_from_model(None, 0.9, 0, 10, 1) is None
    assert band_from_model(provider.model, 0.9, 10, 0, 1) is None


def test_models_are_remembered_weakly_and_by_the_factory(
    provider: SeasonalForecastProvider,
) -> None:
    models = ForecastModels()
    assert isinstance(models, ForecastBands)
    now = time.time()
    assert models.band(KEY, now, now + 60, 15) is None  # nothing registered

    class Refreshing:  # the shape of `RefreshingForecast`: the provider inside
        def __init__(self, inner: SeasonalForecastProvider) -> None:
            self.provider = inner

    built: list[Refreshing] = []

    def factory(namespace: str, name: str, spec_now: Any, prom: Any) -> Refreshing:
        built.append(Refreshing(provider))
        return built[-1]

    wrapped = models.remembering(factory)
    assert wrapped is not None
    assert models.remembering(None) is None
    assert wrapped("weddings", "chat", None, None) is built[0]
    assert models.keys() == [KEY]
    band = models.band(KEY, now, now + 60, 15)
    assert band is not None
    assert len(band) == 5
    # a fleet that goes away takes its forecaster along: nothing kept for it
    built.clear()
    gc.collect()
    assert models.keys() == []
    models.register(KEY, None)
    models.register(("a", "b"), 42)  # not weakly referable: ignored, never fatal
    assert models.keys() == []


def test_an_unfitted_or_broken_model_gives_no_band() -> None:
    class Broken:
        ready = True

        def predict_range(self, start: float, end: float, step: float) -> Any:
            raise ValueError("mid-refit")

    class Unfitted:
        model = None
        spec = None

    models = ForecastModels()
    broken = type("P", (), {"model": Broken(), "spec": None})()
    unfitted = Unfitted()
    models.register(KEY, broken)
    models.register(("x", "y"), unfitted)
    assert models.band(KEY, 0, 10, 1) is None
    assert models.band(("x", "y"), 0, 10, 1) is None


def test_the_operator_hands_its_forecasters_to_the_dashboard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wsfleet_operator.dashboard.kopf as dashboard_kopf

    class Forecaster:
        pass

    def make(namespace: str, name: str, spec_now: Any, prom: Any) -> Forecaster:
        return Forecaster()

    factory: Any = make

    configs: list[OperatorConfig] = []
    dashboards: list[Any] = []
    real_build = build_registry

    def build(config: OperatorConfig) -> Any:
        configs.append(config)
        return real_build(config)

    monkeypatch.setattr(cli, "build_registry", build)
    monkeypatch.setattr(dashboard_kopf, "register_dashboard", lambda *args: dashboards.append(args))
    monkeypatch.setenv("WSFLEET_DASHBOARD_ENABLED", "true")
    cli._with_dashboard(OperatorConfig(forecaster_factory=factory))
    (_, _, models), config = dashboards[0], configs[0]
    assert isinstance(models, ForecastModels)
    # every forecaster the operator builds is one the dashboard can draw
    build_one: Any = config.forecaster_factory
    made = build_one("weddings", "chat", None, None)
    assert isinstance(made, Forecaster)
    assert models.keys() == [KEY]  # held weakly: as long as the operator holds it
    # dashboard off: the operator's own handlers only, its factory untouched
    monkeypatch.setenv("WSFLEET_DASHBOARD_ENABLED", "false")
    cli._with_dashboard(OperatorConfig(forecaster_factory=factory))
    assert len(dashboards) == 1
    assert configs[1].forecaster_factory is factory


T0 = 1_790_000_000.0


def snapshot(points: list[tuple[float, float, float | None]], **summary: Any) -> FleetSnapshot:
    return FleetSnapshot(
        name="chat",
        forecast=tuple(
            ForecastPoint(time=datetime.fromtimestamp(t, UTC), value=v, upper=u)
            for t, v, u in points
        ),
        forecast_summary=summary,
    )


def test_forecast_from_the_status() -> None:
    # stated past and future points: those, the view reaching a quarter range ahead
    snap = snapshot([(T0 - 600, 100, 120), (T0, 110, 130), (T0 + 600, 120, None)])
    end, median, band = forecast_lines(snap, [], [], T0 - 900, T0, 900)
    assert end == T0 + 225
    assert median == [(T0 - 600, 100), (T0, 110)]
    assert band == [(T0 - 600, 100, 120), (T0, 110, 130)]
    assert forecast_now(snap, T0 - 300) == (105, 125)
    # future points only: what it said at each sample, then what it says ahead
    ahead = snapshot([(T0 + 60, 100, 150)])
    end, median, band = forecast_lines(ahead, [(T0 - 5, 90.0)], [(T0 - 5, 90.0, 99.0)], 0, T0, 900)
    assert end == T0 + 60
    assert median == [(T0 - 5, 90.0), (T0 + 60, 100)]
    assert band == [(T0 - 5, 90.0, 99.0), (T0 + 60, 100, 150)]
    # no points: the floor it set, with no band
    floor = snapshot([], floorConnections=1800.0)
    assert forecast_now(floor, T0) == (1800.0, None)
    assert forecast_now(snapshot([]), T0) == (None, None)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(T0 - 3600, T0 + 3600),
            st.floats(0, 1e6),
            st.none() | st.floats(0, 1e6),
        ),
        max_size=30,
    ).map(lambda rows: sorted(rows, key=lambda r: r[0])),
    st.floats(60, 7200),
)
def test_forecast_lines_stay_in_view(
    rows: list[tuple[float, float, float | None]], range_s: float
) -> None:
    snap = snapshot(rows)
    start, end = T0 - range_s, T0
    view_end, median, band = forecast_lines(snap, [], [], start, end, range_s)
    assert end <= view_end <= end + range_s / 4
    assert all(start <= t <= view_end for t, _ in median)
    assert all(start <= t <= view_end and u >= m for t, m, u in band)
