"""The pure core of realistic load: Zipf, think time, the wedding day, target checks."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfleet.loadtest.shape import (
    RemoteTargetError,
    ZipfSampler,
    check_target,
    day_multiplier,
    is_loopback_host,
    simulated_hour,
    target_connections,
    think_time_s,
)


@given(st.integers(1, 200), st.floats(0, 3), st.integers(0, 2**32))
def test_zipf_samples_stay_in_range(n: int, s: float, seed: int) -> None:
    sampler = ZipfSampler(n, s)
    rng = random.Random(seed)
    assert all(0 <= sampler.sample(rng) < n for _ in range(50))


@given(st.integers(1, 60), st.integers(0, 80), st.integers(0, 2**32))
def test_zipf_distinct_gives_unique_ranks(n: int, k: int, seed: int) -> None:
    ranks = ZipfSampler(n, 1.1).distinct(random.Random(seed), k)
    assert len(ranks) == min(n, k)
    assert len(set(ranks)) == len(ranks)
    assert all(0 <= r < n for r in ranks)


def test_zipf_is_skewed_towards_popular_channels() -> None:
    sampler = ZipfSampler(15, 1.1)
    rng = random.Random(3)
    counts = [0] * 15
    for _ in range(20_000):
        counts[sampler.sample(rng)] += 1
    assert counts[0] > 3 * counts[14]
    assert counts[0] == max(counts)
    uniform = ZipfSampler(15, 0.0)
    flat = [0] * 15
    for _ in range(15_000):
        flat[uniform.sample(rng)] += 1
    assert max(flat) < 1.3 * min(flat)


def test_zipf_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        ZipfSampler(0)
    with pytest.raises(ValueError, match="s >= 0"):
        ZipfSampler(3, -1)


def test_think_time_has_the_requested_mean_and_a_cap() -> None:
    rng = random.Random(5)
    values = [think_time_s(rng, 2.0) for _ in range(40_000)]
    assert statistics.fmean(values) == pytest.approx(2.0, rel=0.05)
    assert max(values) <= 20.0
    assert think_time_s(rng, 0.0) == 0.0


@given(st.floats(-1000, 1000), st.floats(1, 50))
def test_day_multiplier_between_base_and_peak(hour: float, peak: float) -> None:
    m = day_multiplier(hour, peak)
    assert 1.0 - 1e-9 <= m <= peak + 1e-9


@given(st.floats(0, 23.99), st.floats(1, 20))
def test_day_multiplier_is_continuous(hour: float, peak: float) -> None:
    step = 0.001
    assert abs(day_multiplier(hour + step, peak) - day_multiplier(hour, peak)) <= (
        (peak - 1.0) * step * 1.0 + 1e-9
    )


def test_wedding_day_shape() -> None:
    assert day_multiplier(3.0) == 1.0
    assert day_multiplier(19.0) == 10.0
    assert day_multiplier(12.0) == pytest.approx(4.0)
    assert max(day_multiplier(h / 10) for h in range(240)) == 10.0
    # a compressed day: 1440x real time runs 24 h in 60 s; the evening peak at 18-20 h
    assert simulated_hour(45.0, 1440.0) == pytest.approx(18.0)
    assert target_connections(47.5, 100, 1440.0) == 1000
    assert target_connections(10.0, 100, 1440.0) == 100


@pytest.mark.parametrize(
    "url",
    ["ws://127.0.0.1:8080/ws", "ws://localhost/ws", "wss://[::1]:9/ws", "ws://127.8.0.1/ws"],
)
def test_loopback_targets_are_accepted(url: str) -> None:
    assert check_target(url, allow_remote=False) == url


@pytest.mark.parametrize(
    "url", ["ws://10.0.0.5:8080/ws", "wss://ws.example.com/ws", "ws://192.0.2.1/ws"]
)
def test_remote_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(RemoteTargetError, match="--allow-remote"):
        check_target(url, allow_remote=False)
    assert check_target(url, allow_remote=True) == url


def test_bad_target_urls() -> None:
    with pytest.raises(ValueError, match="ws://"):
        check_target("http://127.0.0.1/ws", allow_remote=True)
    with pytest.raises(ValueError, match="no host"):
        check_target("ws:///ws", allow_remote=True)
    assert not is_loopback_host("example.com")
    assert is_loopback_host("api.localhost")
