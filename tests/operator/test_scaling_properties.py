"""Hypothesis properties of the pure replica decision (`wsfleet_operator.scaling`)."""

from __future__ import annotations

import math

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from wsfleet_operator.scaling import (
    Decision,
    History,
    Metrics,
    ScaleChange,
    decide,
    rate_limits,
)
from wsfleet_operator.spec import FleetSpec, SelectPolicy

NOW = 1_000_000.0


@st.composite
def specs(draw: st.DrawFn) -> FleetSpec:
    lo = draw(st.integers(1, 20))
    hi = draw(st.integers(lo, 40))
    target = draw(st.floats(0.3, 1.0))
    down = draw(st.floats(0.05, target * 0.95))
    return FleetSpec.model_validate(
        {
            "replicas": {"min": lo, "max": hi},
            "targets": {
                "connectionsPerPod": draw(st.integers(10, 5000)),
                "targetUtilization": target,
                "scaleDownUtilization": down,
                "switchLatencyP95Ms": draw(st.one_of(st.none(), st.floats(50, 2000))),
                "messagesPerSecondPerPod": draw(st.one_of(st.none(), st.floats(10, 5000))),
            },
            "behavior": {
                "tolerance": draw(st.floats(0.0, 0.5)),
                "scaleUp": {
                    "stabilizationWindowSeconds": draw(st.integers(0, 120)),
                    "maxPodsPerMinute": draw(st.integers(1, 10)),
                    "maxPercentPerMinute": draw(st.integers(1, 200)),
                    "selectPolicy": draw(st.sampled_from(list(SelectPolicy))),
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": draw(st.integers(0, 900)),
                    "maxPodsPerMinute": draw(st.integers(1, 10)),
                    "maxPercentPerMinute": draw(st.integers(1, 100)),
                    "selectPolicy": draw(st.sampled_from(list(SelectPolicy))),
                },
            },
            "costGuard": {"maxSurgePerWindow": draw(st.integers(1, 50))},
        }
    )


def metrics_values(connections: float | None = None) -> st.SearchStrategy[Metrics]:
    return st.builds(
        Metrics,
        observed_at=st.just(NOW),
        connections=st.just(connections)
        if connections is not None
        else st.one_of(st.none(), st.floats(0, 200_000)),
        switch_latency_p95_s=st.one_of(st.none(), st.floats(0, 10)),
        message_rate=st.one_of(st.none(), st.floats(0, 1e6)),
    )


@st.composite
def histories(draw: st.DrawFn, current: int) -> History:
    started = NOW - draw(st.floats(0, 2000))
    recs = draw(st.lists(st.tuples(st.floats(0, 1000), st.integers(1, 40)), max_size=20))
    return History(
        started_at=started,
        recommendations=tuple(
            _rec(NOW - age, n) for age, n in sorted(recs, reverse=True) if NOW - age >= started
        ),
    )


def _rec(at: float, n: int) -> object:
    from wsfleet_operator.scaling import Recommendation

    return Recommendation(at, n)


def _decide(
    spec: FleetSpec,
    m: Metrics | None,
    current: int,
    history: History,
    floor: float | None = None,
) -> Decision:
    return decide(spec, m, floor, current, history, NOW)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=specs(), current=st.integers(0, 60))
def test_stays_within_min_max(data: st.DataObject, spec: FleetSpec, current: int) -> None:
    m = data.draw(st.one_of(st.none(), metrics_values()))
    floor = data.draw(st.one_of(st.none(), st.floats(0, 100)))
    d = _decide(spec, m, current, data.draw(histories(current)), floor)
    assert spec.replicas.min <= d.desired <= spec.replicas.max
    assert math.isclose(d.shares.metrics + d.shares.forecast + d.shares.floor, 1.0)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=specs())
def test_never_exceeds_step_limits(data: st.DataObject, spec: FleetSpec) -> None:
    current = data.draw(st.integers(spec.replicas.min, spec.replicas.max))
    m = data.draw(metrics_values())
    d = _decide(spec, m, current, History(started_at=0.0), data.draw(st.floats(0, 100)))
    up, down = spec.behavior.scale_up, spec.behavior.scale_down
    up_pods, up_pct = up.max_pods_per_minute, math.ceil(current * up.max_percent_per_minute / 100)
    down_pods = down.max_pods_per_minute
    down_pct = current - math.ceil(current * (1 - down.max_percent_per_minute / 100))
    step_up = {"Max": max(up_pods, up_pct), "Min": min(up_pods, up_pct), "Disabled": 0}
    step_down = {"Max": max(down_pods, down_pct), "Min": min(down_pods, down_pct), "Disabled": 0}
    assert d.desired - current <= max(step_up[up.select_policy.value], 0)
    assert current - d.desired <= max(step_down[down.select_policy.value], 0)
    assert d.desired - current <= spec.cost_guard.max_surge_per_window


@settings(max_examples=200, deadline=None)
@given(data=st.data(), spec=specs())
def test_step_limits_hold_across_a_minute(data: st.DataObject, spec: FleetSpec) -> None:
    """Scale-ups already made in the last minute count against the limit."""
    start = data.draw(st.integers(spec.replicas.min, spec.replicas.max))
    current = start
    changes: tuple[ScaleChange, ...] = ()
    for i in range(4):
        now = NOW + i * 10
        _low, high = rate_limits(spec, current, changes, now)
        d = decide(
            spec, Metrics(now, connections=1e9), None, current, History(0.0, (), changes), now
        )
        assert d.desired <= high
        if d.desired != current:
            changes = (*changes, ScaleChange(now, current, d.desired))
        current = d.desired
    up = spec.behavior.scale_up
    allowed = max(up.max_pods_per_minute, math.ceil(start * up.max_percent_per_minute / 100))
    if up.select_policy is SelectPolicy.MIN:
        allowed = min(up.max_pods_per_minute, math.ceil(start * up.max_percent_per_minute / 100))
    if up.select_policy is SelectPolicy.DISABLED:
        allowed = 0
    assert current - start <= allowed


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=specs())
def test_never_scales_down_on_missing_metrics(data: st.DataObject, spec: FleetSpec) -> None:
    current = data.draw(st.integers(spec.replicas.min, spec.replicas.max))
    history = data.draw(histories(current))
    stale_last = data.draw(st.one_of(st.none(), metrics_values()))
    if stale_last is not None:
        age = data.draw(st.floats(0, 1000))
        history = History(
            started_at=history.started_at,
            recommendations=history.recommendations,
            last_good=Metrics(
                NOW - age,
                stale_last.connections,
                stale_last.switch_latency_p95_s,
                stale_last.message_rate,
            ),
        )
    missing = data.draw(st.sampled_from([None, Metrics(NOW), Metrics(NOW, connections=math.nan)]))
    d = _decide(spec, missing, current, history)
    assert d.desired >= current
    assert not d.metrics_available


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=specs())
def test_no_flapping_inside_tolerance(data: st.DataObject, spec: FleetSpec) -> None:
    """Noisy load inside the tolerance band never changes the count."""
    t = spec.targets
    current = data.draw(st.integers(spec.replicas.min, spec.replicas.max))
    target = t.connections_per_pod * t.target_utilization
    low = current * t.connections_per_pod * t.scale_down_utilization * (1 + 1e-9)
    high = current * target * (1 + spec.behavior.tolerance) * (1 - 1e-9)
    assume(high > low)
    history = History(started_at=0.0)
    for _ in range(5):
        load = data.draw(st.floats(low, high))
        m = Metrics(NOW, connections=load)
        d = _decide(spec, m, current, history)
        assert d.desired == current, d.reason


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=specs())
def test_monotone_in_load(data: st.DataObject, spec: FleetSpec) -> None:
    current = data.draw(st.integers(spec.replicas.min, spec.replicas.max))
    history = data.draw(histories(current))
    a, b = sorted(data.draw(st.tuples(st.floats(0, 1e6), st.floats(0, 1e6))))
    lat = data.draw(st.one_of(st.none(), st.floats(0, 5)))
    rate = data.draw(st.one_of(st.none(), st.floats(0, 1e5)))
    lower = _decide(spec, Metrics(NOW, a, lat, rate), current, history)
    higher = _decide(spec, Metrics(NOW, b, lat, rate), current, history)
    assert lower.desired <= higher.desired
    la, lb = sorted(data.draw(st.tuples(st.floats(0, 5), st.floats(0, 5))))
    assert (
        _decide(spec, Metrics(NOW, a, la, rate), current, history).desired
        <= _decide(spec, Metrics(NOW, a, lb, rate), current, history).desired
    )
