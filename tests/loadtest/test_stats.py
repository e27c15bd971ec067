"""Counters, latency recorders and their merge across processes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.stats import LatencyRecorder, RunStats, merge_stats, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile(values, 101)


@given(st.lists(st.floats(0, 10), min_size=1, max_size=200), st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_a_member_and_monotone(values: list[float], q1: float, q2: float) -> None:
    ordered = sorted(values)
    low, high = sorted((q1, q2))
    assert percentile(ordered, low) in ordered
    assert percentile(ordered, low) <= percentile(ordered, high)


def test_recorder_keeps_exact_count_and_max_beyond_its_reservoir() -> None:
    rec = LatencyRecorder(cap=100)
    for i in range(1000):
        rec.record(i / 1000)
    assert rec.count == 1000
    assert len(rec.samples) == 100
    assert rec.maximum == 0.999
    summary = rec.summary()
    assert summary["count"] == 1000
    assert summary["max_ms"] == 999.0
    assert summary["mean_ms"] == pytest.approx(499.5)
    assert len(rec.take_recent()) == 1000
    assert rec.take_recent() == []


def test_empty_recorder_summary_has_no_percentiles() -> None:
    assert LatencyRecorder().summary()["p50_ms"] is None


@given(st.integers(0, 300), st.integers(0, 300))
def test_merge_keeps_counts_and_caps_samples(a: int, b: int) -> None:
    left, right = LatencyRecorder(cap=100), LatencyRecorder(cap=100)
    for i in range(a):
        left.record(0.001 * (i + 1))
    for i in range(b):
        right.record(0.002 * (i + 1))
    merged = left.merged(right)
    assert merged.count == a + b
    assert len(merged.samples) <= 100
    assert len(merged.samples) == min(100, len(left.samples) + len(right.samples))
    assert merged.maximum == max(left.maximum, right.maximum)


def test_merge_stats_sums_processes() -> None:
    one, two = RunStats(), RunStats()
    for stats, n in ((one, 3), (two, 4)):
        for _ in range(n):
            stats.attempted += 1
            stats.connection_opened()
            stats.latency("switch").record(0.001 * n)
        stats.sent = 10 * n
        stats.errors["timeout"] += n
        stats.timeline.append({"t": float(n), "open": float(n), "target": float(n)})
    two.loss_measured = True
    two.expected_deliveries = 8
    two.delivered = 5
    merged = merge_stats([one, two])
    assert (merged.attempted, merged.opened, merged.peak_open, merged.sent) == (7, 7, 7, 70)
    assert merged.errors["timeout"] == 7
    assert merged.latency("switch").count == 7
    assert merged.timeline == [{"t": 4.0, "open": 7.0, "target": 7.0}]
    assert merged.lost == 3
    assert RunStats().lost is None


@given(st.integers(0, 100_000), st.integers(1, 16))
def test_options_share_splits_counts_exactly(total: int, processes: int) -> None:
    opts = ScenarioOptions(connections=total, coordinators=total)
    parts = [opts.share(i, processes) for i in range(processes)]
    assert sum(p.connections for p in parts) == total
    assert sum(p.coordinators for p in parts) == total
    assert len({p.seed for p in parts}) == processes
    assert max(p.connections for p in parts) - min(p.connections for p in parts) <= 1


def test_options_from_mapping_rejects_unknown_keys() -> None:
    assert ScenarioOptions.from_mapping({"connections": 5}).connections == 5
    with pytest.raises(ValueError, match="unknown load-test options: nope"):
        ScenarioOptions.from_mapping({"nope": 1})
    public = ScenarioOptions(token="tok-value", jwt_secret="key-value").public()
    assert "tok-value" not in str(public)
    assert "key-value" not in str(public)
    assert public["token_set"] is True
    assert public["jwt_secret_set"] is True
