"""Scenarios of the pure decision: windows, limits, cost guard, fallback, forecast, shares."""

from __future__ import annotations

import math
from typing import Any

import pytest
from wsfleet_operator.scaling import (
    History,
    Metrics,
    Recommendation,
    ScaleChange,
    decide,
    pod_hours,
    propose_from_metrics,
)
from wsfleet_operator.spec import FleetSpec, Mode, parse_spec

NOW = 100_000.0


def spec(**raw: Any) -> FleetSpec:
    base: dict[str, Any] = {
        "replicas": {"min": 2, "max": 10},
        "targets": {"connectionsPerPod": 100, "switchLatencyP95Ms": 500},
        "behavior": {
            "scaleUp": {"maxPodsPerMinute": 4, "maxPercentPerMinute": 100},
            "scaleDown": {"stabilizationWindowSeconds": 600, "maxPodsPerMinute": 2},
        },
    }
    base.update(raw)
    return parse_spec(base)


def old_history(**kw: Any) -> History:
    return History(started_at=0.0, **kw)


def test_scale_up_on_connections() -> None:
    d = decide(spec(), Metrics(NOW, connections=400), None, 2, old_history(), NOW)
    assert d.desired == 5  # 400 / (100 * 0.8)
    assert d.mode is Mode.METRICS
    slow = spec(behavior={"scaleUp": {"maxPodsPerMinute": 2, "maxPercentPerMinute": 100}})
    d = decide(slow, Metrics(NOW, connections=400), None, 2, old_history(), NOW)
    assert d.desired == 4  # +2 pods or +100 % per minute
    assert d.capped_by == ("rateLimit",)
    assert d.mode is Mode.CAPPED
    assert d.proposals == {"connections": 5}
    assert "2->4" in d.reason


def test_latency_scales_up_only() -> None:
    s = spec()
    assert propose_from_metrics(s, Metrics(NOW, switch_latency_p95_s=1.0), 4) == {
        "switchLatency": 8
    }
    assert propose_from_metrics(s, Metrics(NOW, switch_latency_p95_s=0.01), 4) == {}
    d = decide(
        s, Metrics(NOW, connections=300, switch_latency_p95_s=0.7), None, 4, old_history(), NOW
    )
    assert d.desired == 6  # latency 1.4x target beats connections (hold at 4)


def test_message_rate_both_ways() -> None:
    s = spec(targets={"connectionsPerPod": 100, "messagesPerSecondPerPod": 100})
    assert propose_from_metrics(s, Metrics(NOW, message_rate=900), 4)["messageRate"] == 9
    assert propose_from_metrics(s, Metrics(NOW, message_rate=100), 4)["messageRate"] == 1
    assert propose_from_metrics(s, Metrics(NOW, message_rate=420), 4)["messageRate"] == 4


def test_scale_down_waits_for_the_window() -> None:
    s = spec()
    low = Metrics(NOW, connections=50)  # 50 of 800 capacity on 8 pods
    recent_high = old_history(recommendations=(Recommendation(NOW - 300, 8),))
    d = decide(s, low, None, 8, recent_high, NOW)
    assert d.desired == 8
    assert d.mode is Mode.HOLD
    expired = old_history(recommendations=(Recommendation(NOW - 700, 8),))
    d = decide(s, low, None, 8, expired, NOW)
    assert d.desired == 6  # -2 per minute
    assert d.direction == -1


def test_restart_does_not_scale_down_before_a_full_window() -> None:
    s = spec()
    fresh = History(started_at=NOW - 10)
    assert decide(s, Metrics(NOW, connections=50), None, 8, fresh, NOW).desired == 8
    seen = History(started_at=NOW - 601)
    assert decide(s, Metrics(NOW, connections=50), None, 8, seen, NOW).desired == 6


def test_scale_up_window_uses_the_minimum() -> None:
    s = spec(behavior={"scaleUp": {"stabilizationWindowSeconds": 60}})
    h = old_history(recommendations=(Recommendation(NOW - 30, 3),))
    assert decide(s, Metrics(NOW, connections=400), None, 2, h, NOW).desired == 3


def test_rate_limit_counts_recent_changes() -> None:
    s = spec()
    h = old_history(changes=(ScaleChange(NOW - 20, 2, 4),))
    d = decide(s, Metrics(NOW, connections=800), None, 4, h, NOW)
    assert d.desired == 6  # +4 per minute from 2 (or +100 % of 2) already used 2
    h2 = old_history(changes=(ScaleChange(NOW - 20, 2, 6),))
    assert decide(s, Metrics(NOW, connections=800), None, 6, h2, NOW).desired == 6


def test_select_policies() -> None:
    s = spec(
        behavior={
            "scaleUp": {"maxPodsPerMinute": 1, "maxPercentPerMinute": 100, "selectPolicy": "Min"}
        }
    )
    assert decide(s, Metrics(NOW, connections=800), None, 4, old_history(), NOW).desired == 5
    s = spec(behavior={"scaleUp": {"selectPolicy": "Disabled"}})
    assert decide(s, Metrics(NOW, connections=800), None, 4, old_history(), NOW).desired == 4
    s = spec(behavior={"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"}})
    assert decide(s, Metrics(NOW, connections=10), None, 6, old_history(), NOW).desired == 6
    s = spec(
        behavior={
            "scaleDown": {
                "stabilizationWindowSeconds": 0,
                "maxPodsPerMinute": 3,
                "maxPercentPerMinute": 20,
                "selectPolicy": "Min",
            }
        }
    )
    assert decide(s, Metrics(NOW, connections=10), None, 6, old_history(), NOW).desired == 5


def test_cost_guard_surge_per_window() -> None:
    s = spec(costGuard={"maxSurgePerWindow": 3, "windowSeconds": 3600})
    h = old_history(changes=(ScaleChange(NOW - 1800, 2, 4),))
    d = decide(s, Metrics(NOW, connections=800), None, 4, h, NOW)
    assert d.desired == 5
    assert "costGuard" in d.capped_by
    assert d.shares.cap == pytest.approx((10 - 5) / 10)
    h = old_history(changes=(ScaleChange(NOW - 1800, 2, 5),))
    assert decide(s, Metrics(NOW, connections=800), None, 5, h, NOW).desired == 5


def test_pod_hours_budget() -> None:
    changes = (ScaleChange(NOW - 7200, 2, 4),)
    # 4 pods for the last 2 h, 2 pods for the 22 h before
    assert pod_hours(changes, 4, NOW, 86400) == pytest.approx(4 * 2 + 2 * 22)
    assert pod_hours((), 3, NOW, 3600) == pytest.approx(3)
    s = spec(costGuard={"podHoursPerDay": 40})
    d = decide(s, Metrics(NOW, connections=800), None, 4, old_history(changes=changes), NOW)
    assert d.desired == 4
    assert "podHoursPerDay" in d.capped_by


def test_missing_metrics_hold_last_good_then_fallback() -> None:
    s = spec(prometheus={"staleAfterSeconds": 60})
    last = Metrics(NOW - 30, connections=700)
    h = old_history(last_good=last)
    d = decide(s, None, None, 4, h, NOW)
    assert d.metrics_stale
    assert d.desired == 8  # stale values may still scale up
    low = old_history(last_good=Metrics(NOW - 30, connections=10))
    assert decide(s, None, None, 4, low, NOW).desired == 4  # never down on stale data
    old = old_history(last_good=Metrics(NOW - 120, connections=10))
    d = decide(s, None, None, 4, old, NOW)
    assert d.mode is Mode.FALLBACK
    assert d.desired == 4
    s = spec(prometheus={"staleAfterSeconds": 60, "fallback": "Replicas", "fallbackReplicas": 6})
    assert decide(s, Metrics(NOW), None, 4, old, NOW).desired == 6
    assert decide(s, Metrics(NOW), None, 8, old, NOW).desired == 8


def test_out_of_range_is_corrected_at_once() -> None:
    s = spec()
    assert decide(s, Metrics(NOW, connections=0), None, 0, old_history(), NOW).desired == 2
    d = decide(s, Metrics(NOW, connections=5000), None, 14, old_history(), NOW)
    assert d.desired == 10
    assert d.capped_by == ("max",)


def test_forecast_floor_and_shares() -> None:
    s = spec()
    d = decide(s, Metrics(NOW, connections=250), 5.2, 4, old_history(), NOW)
    assert d.desired == 6
    assert d.mode is Mode.FORECAST
    assert d.shares.metrics == pytest.approx(4 / 6)
    assert d.shares.forecast == pytest.approx(2 / 6)
    d = decide(s, Metrics(NOW, connections=10), None, 2, old_history(), NOW)
    assert d.mode is Mode.FLOOR
    assert d.shares.floor == pytest.approx(0.5)
    d = decide(s, Metrics(NOW, connections=300), None, 4, old_history(), NOW)
    assert d.mode is Mode.METRICS
    assert d.shares.metrics == 1.0
    assert math.isclose(d.shares.metrics + d.shares.forecast + d.shares.floor, 1.0)


def test_history_record_prunes_and_remembers() -> None:
    s = spec()
    h = History(started_at=NOW)
    d = decide(s, Metrics(NOW, connections=400), None, 2, h, NOW)
    m = Metrics(NOW, connections=400)
    h2 = h.record(d, NOW, applied=True, metrics=m)
    assert h2.changes == (ScaleChange(NOW, 2, 5),)
    assert h2.last_good == m
    h3 = h2.record(d, NOW + 10, applied=False, metrics=Metrics(NOW + 10))
    assert h3.last_good == m  # empty observation does not replace the last good one
    assert len(h3.recommendations) == 2
    far = h3.record(d, NOW + 90_000, applied=False)
    assert len(far.recommendations) == 1
