"""The gateway's flood signal (`wsfleet_gateway.protection.connects`): a sliding minute
of connection attempts and the shares of its top user and top address, in bounded
memory. Properties over arbitrary streams; the real gateways serve it in
test_anomaly_flood.py."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.protection.connects import ConnectWindow, HeavyHitters
from wsfleet_gateway.protection.metrics import CONNECT_METRIC_NAMES, ProtectionMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


keys = st.sampled_from([f"k{i}" for i in range(200)])
# (seconds since the previous attempt, user or None, address)
streams = st.lists(
    st.tuples(st.floats(0, 25), st.one_of(st.none(), keys), keys), min_size=0, max_size=400
)


@given(streams, st.floats(0, 120))
@settings(max_examples=150, deadline=None)
def test_attempts_are_those_of_the_last_minute(
    stream: list[tuple[float, str | None, str]], later: float
) -> None:
    clock = Clock()
    window = ConnectWindow(clock=clock)
    times = []
    for gap, user, ip in stream:
        clock.now += gap
        window.record(user, ip)
        times.append(clock.now)
    clock.now += later
    stats = window.stats()
    bucket = 10.0
    current = clock.now // bucket
    expected = sum(1 for t in times if t // bucket > current - 6)
    assert stats.attempts == expected
    assert 0.0 <= stats.top_user_share <= 1.0
    assert 0.0 <= stats.top_ip_share <= 1.0
    if expected == 0:
        assert (stats.top_user_share, stats.top_ip_share) == (0.0, 0.0)


@given(st.lists(st.tuples(st.integers(0, 5), keys), max_size=300))
@settings(max_examples=150, deadline=None)
def test_shares_are_exact_while_few_keys(stream: list[tuple[int, str]]) -> None:
    """At most `capacity` distinct keys per bucket: no estimate at all."""
    clock = Clock()
    window = ConnectWindow(capacity=256, clock=clock)
    start = clock.now
    for bucket, key in sorted(stream):
        clock.now = start + bucket * 10.0
        window.record(key, "ip-" + key)
    stats = window.stats()
    if not stream:
        assert stats.attempts == 0
        return
    top = max(Counter(k for _, k in stream).values())
    assert stats.attempts == len(stream)
    assert stats.top_user_share == pytest.approx(top / len(stream))
    assert stats.top_ip_share == pytest.approx(top / len(stream))


@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=600),
    st.integers(1, 4),
    st.integers(2, 16),
)
@settings(max_examples=150, deadline=None)
def test_a_flooding_key_is_never_underestimated(
    crowd: list[int], every: int, capacity: int
) -> None:
    """Space-Saving's guarantee: the top share is never under-estimated and over-estimated
    by at most 1/capacity; a key with more than 1/capacity of the attempts is kept."""
    clock = Clock()
    window = ConnectWindow(capacity=capacity, buckets=1, clock=clock)
    stream: list[str] = []
    for i, other in enumerate(crowd):
        stream.append(f"user-{other}")
        if i % every == 0:
            stream.append("flooder")
    for key in stream:
        window.record(key, "10.0.0.1")
    share = stream.count("flooder") / len(stream)
    stats = window.stats()
    true_top = max(Counter(stream).values()) / len(stream)
    assert true_top - 1e-12 <= stats.top_user_share <= true_top + 1 / capacity + 1e-12
    if share > 1 / capacity:
        assert "flooder" in window._window[0].users.counts
    assert stats.top_ip_share == 1.0


def test_memory_is_bounded_by_capacity() -> None:
    hitters = HeavyHitters(capacity=8)
    for i in range(10_000):
        hitters.add(f"ip-{i}")
    assert len(hitters.counts) == 8
    assert sum(hitters.counts.values()) == 10_000
    with pytest.raises(ValueError, match="capacity"):
        HeavyHitters(0)
    with pytest.raises(ValueError, match="positive"):
        ConnectWindow(window_s=0)


def test_anonymous_attempts_count_in_the_total_only() -> None:
    clock = Clock()
    window = ConnectWindow(clock=clock)
    for i in range(3):
        window.record(None, f"10.0.0.{i}")
    window.record("alice", "10.0.0.9")
    stats = window.stats()
    assert stats.attempts == 4
    assert stats.top_user_share == 0.25
    assert stats.top_ip_share == 0.25


def test_served_as_three_gauges_without_per_user_labels() -> None:
    gateway = GatewayMetrics()
    protection = ProtectionMetrics(gateway)
    for i in range(9):
        protection.connects.record("mallory", f"198.51.100.{i % 3}")
    protection.connects.record("alice", "203.0.113.5")
    text = gateway.render().decode()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(CONNECT_METRIC_NAMES)
    }
    assert values == {
        "wsfleet_connects_per_minute": 10.0,
        "wsfleet_connects_top_user_share": 0.9,
        "wsfleet_connects_top_ip_share": 0.3,
    }
    assert "mallory" not in text
    assert "198.51.100" not in text
    assert "process_resident_memory_bytes" in text  # the leak detector's signal
