"""Hypothesis properties of the pure model."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsfleet_operator.forecast.model import fit_model
from wsfleet_operator.forecast.settings import Priors

from .synthetic import DAY, START

STEP = 1800.0
_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def series(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    days = draw(st.integers(min_value=1, max_value=10))
    n = int(days * DAY / STEP)
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    t = START + STEP * np.arange(n, dtype=np.float64)
    scale = draw(st.floats(min_value=1e-2, max_value=1e5))
    y = scale * np.exp(rng.normal(0, draw(st.floats(min_value=0, max_value=2)), n))
    holes = rng.random(n) < draw(st.floats(min_value=0, max_value=0.9))
    y[holes] = draw(st.sampled_from([0.0, np.nan, -1.0]))
    return t, y


@given(series(), st.floats(min_value=0, max_value=400 * DAY))
@_settings
def test_forecasts_are_finite_and_non_negative(
    data: tuple[np.ndarray, np.ndarray], ahead: float
) -> None:
    t, y = data
    model = fit_model(t, y, Priors(baseline=10.0))
    pred = model.predict(t[-1] + ahead + STEP * np.arange(48))
    assert np.all(np.isfinite(pred))
    assert np.all(pred >= 0)


@given(series(), st.floats(min_value=1e-3, max_value=1e3))
@_settings
def test_scale_equivariance(data: tuple[np.ndarray, np.ndarray], k: float) -> None:
    t, y = data
    future = t[-1] + STEP * np.arange(1, 97)
    base = fit_model(t, y, Priors())
    scaled = fit_model(t, k * y, Priors())
    if not base.ready:
        assert not scaled.ready
        return
    np.testing.assert_allclose(scaled.predict(future), k * base.predict(future), rtol=1e-6)


@given(
    st.floats(min_value=1.0, max_value=1e5),
    st.dictionaries(st.integers(1, 12), st.floats(min_value=0.1, max_value=20), max_size=4),
    st.integers(min_value=0, max_value=23),
    st.integers(min_value=1, max_value=4),
)
@_settings
def test_priors_dominate_without_data(
    baseline: float, months: dict[int, float], start: int, length: int
) -> None:
    end = min(start + length, 24)
    priors = Priors(month_multipliers=months, peak_hours=((start, end),), baseline=baseline)
    model = fit_model([], [], priors)
    # the 15th of each month at 12:00 UTC is within a day of the month's mid-point
    stamps = np.array(
        [
            np.datetime64(f"2025-{m:02d}-16T00:00").astype("datetime64[s]").astype(np.int64)
            for m in range(1, 13)
        ],
        dtype=np.float64,
    )
    got = model.predict(stamps)
    profile = np.exp(priors.profile_log(48)[0])  # 00:00 slot
    for m in range(12):
        if m + 1 == 2:
            continue  # February's mid-point is the 15th at 00:00, not the 16th
        expected = baseline * months.get(m + 1, 1.0) * profile
        # the 16th at 00:00 is <= 1 day from mid-month: within one day's interpolation
        neighbours = [months.get((m + d) % 12 + 1, 1.0) for d in (-1, 0, 1)]
        lo, hi = min(neighbours), max(neighbours)
        assert baseline * lo * profile * 0.999 <= got[m] <= baseline * hi * profile * 1.001
        if neighbours[0] == neighbours[1] == neighbours[2]:
            assert got[m] == np.float64(expected) or abs(got[m] / expected - 1) < 1e-9
