"""Properties of the pure anomaly core (`wsfleet_operator.anomaly.detect` and `.track`):
what each detector may and may not say, and how findings become raised and resolved
anomalies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_operator.anomaly.detect import (
    HOLD,
    MIB,
    ConnectRate,
    Finding,
    LatencyBaseline,
    detect_flood,
    detect_latency,
    detect_leak,
    fit_latency_baseline,
    memory_trend,
)
from wsfleet_operator.anomaly.track import (
    HISTORY_LIMIT,
    AnomalyTracker,
    anomaly_condition,
    event_message,
)
from wsfleet_operator.spec import AnomalySignal

DAY = 86400.0
START = 1_717_200_000.0  # 2024-06-01 00:00 UTC: the season
SWITCH = AnomalySignal.SWITCH_LATENCY


def hit(found: Finding | None) -> bool:
    """An anomalous finding (not just a reading of the signal)."""
    return found is not None and found.anomalous


def closeness_says_it(found: Finding) -> None:
    """At the raising thresholds, anomalous exactly when every condition holds."""
    if abs(found.closeness - 1.0) > 1e-9:
        assert found.anomalous == (found.closeness > 1.0)


def seasonal_latency(
    days: int = 4, noise: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """p95 switch latency every 5 minutes: 3 ms at night, about 6 ms at the evening peak."""
    rng = np.random.default_rng(seed)
    t = START + 300.0 * np.arange(int(days * DAY / 300))
    hours = (t % DAY) / 3600.0
    shape = 0.003 * np.exp(0.7 * np.exp(-((hours - 19.0) ** 2) / 4.0))
    return t, shape * np.exp(rng.normal(0.0, noise, t.size))


@pytest.fixture(scope="module")
def baseline() -> LatencyBaseline:
    t, v = seasonal_latency()
    fitted = fit_latency_baseline(t, v)
    assert fitted is not None
    return fitted


def test_the_expectation_follows_the_season_and_its_spread(baseline: LatencyBaseline) -> None:
    night = baseline.expected(START + 4 * DAY + 3 * 3600)
    evening = baseline.expected(START + 4 * DAY + 19 * 3600)
    assert night == pytest.approx(0.003, rel=0.15)
    assert evening == pytest.approx(0.003 * math.exp(0.7), rel=0.15)
    # the spread is the noise's (15 %), from held-out residuals
    assert 0.1 <= baseline.scale <= 0.25


def test_too_little_history_is_no_baseline() -> None:
    t, v = seasonal_latency(days=1)
    assert fit_latency_baseline(t[:10], v[:10]) is None
    assert fit_latency_baseline([], []) is None
    assert fit_latency_baseline(t, np.zeros_like(v)) is None  # no positive value at all


@given(
    st.floats(0, DAY),
    st.floats(1e-4, 5.0),
    st.floats(1e-4, 5.0),
    st.floats(2, 20),
    st.floats(0, 0.2),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_latency_is_monotone_and_never_below_the_excess(
    baseline: LatencyBaseline,
    offset: float,
    a: float,
    b: float,
    z: float,
    excess: float,
    active: bool,
) -> None:
    now = START + 4 * DAY + offset
    low, high = sorted((a, b))
    kwargs = {"z_threshold": z, "min_excess_s": excess, "active": active}
    found_low = detect_latency(SWITCH, baseline, now, low, **kwargs)  # type: ignore[arg-type]
    found_high = detect_latency(SWITCH, baseline, now, high, **kwargs)  # type: ignore[arg-type]
    assert found_low is not None
    assert found_high is not None
    assert found_high.size >= found_low.size  # slower is never less anomalous
    assert found_high.closeness >= found_low.closeness
    if hit(found_low):
        assert hit(found_high)
    hold = HOLD if active else 1.0
    for value, found in ((low, found_low), (high, found_high)):
        if value - baseline.expected(now) < excess * hold:
            assert not hit(found)
        if hit(found):
            assert found.size >= z * hold - 0.01
            assert found.subject == "fleet"
        if not active:
            closeness_says_it(found)


def test_latency_without_data_or_baseline_is_quiet(baseline: LatencyBaseline) -> None:
    now = START + 4 * DAY
    for observed in (None, math.nan, 0.0, -1.0):
        assert (
            detect_latency(SWITCH, baseline, now, observed, z_threshold=6, min_excess_s=0) is None
        )
    assert detect_latency(SWITCH, None, now, 10.0, z_threshold=6, min_excess_s=0) is None
    found = detect_latency(SWITCH, baseline, now, 0.4, z_threshold=6, min_excess_s=0.025)
    assert hit(found)
    assert found is not None
    assert "channel switch p95 400 ms" in found.message


rates = st.builds(
    ConnectRate,
    st.floats(0, 1e5),
    st.one_of(st.none(), st.floats(0, 1e5)),
    st.one_of(st.none(), st.floats(0, 1e5)),
    st.one_of(st.none(), st.floats(0, 1e5)),
)


@given(rates, st.floats(1, 500), st.floats(1, 10), st.floats(0.05, 1), st.booleans(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_flood_is_many_concentrated_attempts(
    rate: ConnectRate, minimum: float, burst: float, share: float, ips: bool, active: bool
) -> None:
    found = detect_flood(
        rate,
        min_per_minute=minimum,
        burst_factor=burst,
        top_share=share,
        count_ips=ips,
        active=active,
    )
    assert found is not None
    if not active:
        closeness_says_it(found)
    if not hit(found):
        return
    assert found is not None
    hold = HOLD if active else 1.0
    assert rate.per_minute >= minimum * hold
    assert 0.0 <= found.size <= 1.0
    assert found.size >= share * hold - 1e-9
    user = min((rate.top_user_per_minute or 0) / rate.per_minute, 1.0)
    ip = min((rate.top_ip_per_minute or 0) / rate.per_minute, 1.0) if ips else 0.0
    assert found.size == pytest.approx(max(user, ip), abs=1e-4)
    base = rate.baseline_per_minute
    if not active and base:
        assert rate.per_minute >= burst * base


def test_a_flood_needs_a_burst_to_start_and_not_to_go_on() -> None:
    flood = ConnectRate(600.0, top_user_per_minute=540.0, baseline_per_minute=400.0)
    kw = {"min_per_minute": 120.0, "burst_factor": 3.0, "top_share": 0.5}
    assert not hit(detect_flood(flood, **kw))  # 1.5x the median: no burst
    assert hit(detect_flood(flood, **kw, active=True))  # its own minutes: still on
    burst = ConnectRate(600.0, top_user_per_minute=540.0, baseline_per_minute=60.0)
    found = detect_flood(burst, **kw)
    assert hit(found)
    assert found is not None
    assert "600 connection attempts/min (10x the recent median 60/min), 90% from its top user" in (
        found.message
    )
    crowd = ConnectRate(600.0, top_user_per_minute=6.0, top_ip_per_minute=9.0)
    assert not hit(detect_flood(crowd, **kw))  # many users, many addresses: a rush, no flood
    proxied = ConnectRate(600.0, top_user_per_minute=6.0, top_ip_per_minute=600.0)
    assert hit(detect_flood(proxied, **kw))
    assert not hit(detect_flood(proxied, **kw, count_ips=False))
    assert detect_flood(ConnectRate(math.nan), **kw) is None  # no data
    quiet = detect_flood(ConnectRate(0.0), **kw)
    assert quiet is not None
    assert (quiet.anomalous, quiet.closeness) == (False, 0.0)


def leak_series(
    growth_per_h: float,
    noise: float = 0.0,
    seed: int = 0,
    minutes: int = 60,
    leave_at: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pod's hour: connections rise and fall (and, from `leave_at`, mostly leave);
    memory follows them and keeps part of what their peak needed, plus `growth_per_h`."""
    rng = np.random.default_rng(seed)
    t = START + 60.0 * np.arange(minutes + 1)
    conns = 500 + 300 * np.sin(np.arange(t.size) / 9.0)
    if leave_at is not None:
        conns[leave_at:] = 20.0
    high = np.maximum.accumulate(conns)
    rss = 120 * MIB + 14_000 * (0.7 * conns + 0.3 * high) + growth_per_h / 3600.0 * (t - t[0])
    return t, rss + rng.normal(0, noise, t.size), conns


@given(
    st.floats(0, 1e9),
    st.floats(0, 50_000),
    st.floats(-1e5, 1e5),
    st.lists(st.floats(0, 5000), min_size=8, max_size=80),
)
@settings(max_examples=200, deadline=None)
def test_the_trend_recovers_unexplained_growth(
    base: float, per_conn: float, per_s: float, conns: list[float]
) -> None:
    t = START + 30.0 * np.arange(len(conns))
    high = np.maximum.accumulate(np.asarray(conns))
    rss = base + per_conn * high + per_s * (t - t[0])
    trend = memory_trend(t, rss, conns)
    assert trend is not None
    scale = max(abs(base), per_conn * 5000, abs(per_s) * 30 * len(conns), 1.0)
    assert trend.growth_per_s == pytest.approx(per_s, abs=1e-6 * scale)


@given(st.integers(0, 10_000), st.floats(0, 5 * MIB))
@settings(max_examples=50, deadline=None)
def test_memory_that_follows_connections_is_no_leak(seed: int, noise: float) -> None:
    """A pod whose RSS follows its connections and their peak, with jitter: never a leak,
    even when its clients leave and part of the memory stays (the allocator keeps it)."""
    for leave_at in (None, 40):
        t, rss, conns = leak_series(0.0, noise=noise, seed=seed, leave_at=leave_at)
        found = detect_leak(
            "gw-0", t, rss, conns, window_s=3600, min_growth_bytes=64 * MIB, min_growth_ratio=0.2
        )
        assert found is not None
        assert not hit(found)
        assert found.closeness < 1.0


def test_a_leak_is_growth_its_connections_do_not_explain() -> None:
    t, rss, conns = leak_series(200 * MIB, noise=2 * MIB)
    kw = {"window_s": 3600.0, "min_growth_bytes": 64 * MIB, "min_growth_ratio": 0.2}
    found = detect_leak("gw-3", t, rss, conns, **kw)
    assert hit(found)
    assert found is not None
    assert found.subject == "gw-3"
    assert found.size == pytest.approx(200 * MIB, rel=0.05)
    assert found.unit == "bytes/h"
    assert found.message.startswith("pod gw-3: memory its connections do not explain grows ")
    assert "KB/h at 5" in found.message  # per connection, at ~500 connections
    # the same growth held by the L1 cache is no leak
    cache = 200 * MIB / 3600.0 * (t - t[0])
    assert not hit(detect_leak("gw-3", t, rss, conns, cache, **kw))
    # too young a pod (a third of the window) says nothing yet
    assert detect_leak("gw-3", t[:20], rss[:20], conns[:20], **kw) is None
    assert memory_trend(t[:5], rss[:5], conns[:5]) is None


# --------------------------------------------------------------------------- tracker

SIGNALS = list(AnomalySignal)
ticks = st.lists(
    st.tuples(
        st.floats(0.1, 30),  # seconds since the previous check
        st.sets(st.tuples(st.sampled_from(SIGNALS), st.sampled_from(["fleet", "gw-1"]))),
        st.sets(st.sampled_from(SIGNALS)),  # signals that could be checked
    ),
    max_size=60,
)


def finding(signal: AnomalySignal, subject: str) -> Finding:
    return Finding(signal, subject, 2.0, 1.0, "z", f"{signal} on {subject}")


@given(ticks, st.sampled_from([0.0, 10.0, 60.0]))
@settings(max_examples=300, deadline=None)
def test_tracker_raises_after_for_and_resolves_after_for(
    stream: list[tuple[float, set[tuple[AnomalySignal, str]], set[AnomalySignal]]],
    for_s: float,
) -> None:
    tracker = AnomalyTracker(for_s=for_s)
    now = 1000.0
    seen_since: dict[tuple[AnomalySignal, str], float] = {}
    gone_since: dict[tuple[AnomalySignal, str], float] = {}
    raised_total = resolved_total = 0
    for gap, present, checked in stream:
        now += gap
        before = dict(tracker.active)
        condition_before = anomaly_condition(tracker.open())
        out = tracker.update(now, [finding(*k) for k in present], checked)
        for k in present:
            if k[0] in checked:
                seen_since.setdefault(k, now)
                gone_since.pop(k, None)
        for k in [k for k in seen_since if k[0] in checked and k not in present]:
            del seen_since[k]
            gone_since.setdefault(k, now)
        for record in out.raised:
            key = (record.signal, record.subject)
            assert key not in before
            assert record.at == pytest.approx(seen_since[key], abs=1e-3)
            assert now - record.at >= for_s - 1e-3
        for record in out.resolved:
            key = (record.signal, record.subject)
            assert key in before
            assert record.resolved_at is not None
            assert now - record.resolved_at >= for_s - 1e-3
            assert record.resolved_at >= record.at
        for key in set(before) ^ set(tracker.active):  # only checked signals change
            assert key[0] in checked
        if not out.raised and not out.resolved:
            assert anomaly_condition(tracker.open()) == condition_before
        if for_s == 0:
            want = {k for k in present if k[0] in checked}
            kept = {k for k in before if k[0] not in checked}
            assert set(tracker.active) == want | kept
        raised_total += len(out.raised)
        resolved_total += len(out.resolved)
        assert len(tracker.active) == raised_total - resolved_total
        assert all(r in tracker.history for r in tracker.active.values())
        assert len(tracker.history) <= HISTORY_LIMIT + len(tracker.active)
        assert set(out.scores) == checked


def test_open_anomalies_survive_a_restart_and_say_so() -> None:
    tracker = AnomalyTracker(for_s=0)
    out = tracker.update(10.0, [finding(AnomalySignal.MEMORY_LEAK, "gw-1")], SIGNALS)
    (record,) = out.raised
    assert event_message(record) == "MemoryLeak (gw-1): MemoryLeak on gw-1"
    again = AnomalyTracker(for_s=0, history=tracker.history)
    assert again.is_active(AnomalySignal.MEMORY_LEAK, "gw-1")
    assert again.update(20.0, [finding(AnomalySignal.MEMORY_LEAK, "gw-1")], SIGNALS).raised == []
    out = again.update(30.0, [], SIGNALS)
    (resolved,) = out.resolved
    assert resolved.resolved_at == 30.0
    assert event_message(resolved, True).startswith("MemoryLeak (gw-1) resolved after 20 s")
    assert anomaly_condition(again.open()) == (False, "NoAnomaly", "no anomaly detected")
    ok, reason, _ = anomaly_condition(
        [record, record.model_copy(update={"signal": AnomalySignal.CONNECT_FLOOD})]
    )
    assert (ok, reason) == (True, "ConnectFlood+MemoryLeak")


def test_history_keeps_the_last_twenty_and_every_open_one() -> None:
    tracker = AnomalyTracker(for_s=0)
    tracker.update(0.0, [finding(SWITCH, "fleet")], SIGNALS)
    for i in range(30):
        pod = f"gw-{i}"
        tracker.update(
            1.0 + 2 * i,
            [finding(SWITCH, "fleet"), finding(AnomalySignal.MEMORY_LEAK, pod)],
            SIGNALS,
        )
        tracker.update(2.0 + 2 * i, [finding(SWITCH, "fleet")], SIGNALS)
    assert len(tracker.history) == HISTORY_LIMIT
    assert tracker.history[0].signal is SWITCH  # the open one, oldest, kept
    assert tracker.history[-1].subject == "gw-29"
