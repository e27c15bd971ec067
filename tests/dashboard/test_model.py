"""Snapshots from the operator's status (its real models) and the sources."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsfleet_operator.dashboard.model import (
    FleetSnapshot,
    FleetStateSource,
    StaticFleetStateSource,
)
from wsfleet_operator.dashboard.wire import (
    ResourceFleetStateSource,
    fleet_selector,
    forecast_points,
    parse_time,
    snapshot_from_resource,
    snapshot_from_status,
)
from wsfleet_operator.spec import (
    AnomalyRecord,
    AnomalySignal,
    Condition,
    ConditionType,
    DecisionStatus,
    FleetSpec,
    FleetStatus,
    Mode,
    ObservedMetrics,
    ScalingEvent,
    Shares,
)

T0 = 1_790_000_000.0


def operator_status() -> FleetStatus:
    """A status exactly as the operator's models write it."""
    return FleetStatus(
        desired_replicas=4,
        current_replicas=3,
        ready_replicas=3,
        connections=2500.0,
        p95_switch_ms=12.5,
        mode=Mode.CAPPED,
        observed=ObservedMetrics(connections=2500.0, message_rate=40.0, observed_at=T0),
        last_decision=DecisionStatus(
            desired=4,
            current=3,
            reason="connections 2500 need 4 pods; capped by maxPodsPerMinute",
            mode=Mode.CAPPED,
            shares=Shares(metrics=0.75, forecast=0.25),
            capped=True,
            capped_by=["maxPodsPerMinute"],
            at=T0,
        ),
        conditions=[
            Condition(type=ConditionType.CAPPED, status="True", reason="RateLimited"),
            Condition(
                type=ConditionType.METRICS_AVAILABLE,
                status="False",
                reason="PrometheusDown",
                message="connection refused",
                last_transition_time="2026-11-28T15:00:00Z",
            ),
        ],
        history=[
            ScalingEvent(at=T0 - 60, from_replicas=2, to_replicas=3, reason="load"),
            ScalingEvent(at=T0, from_replicas=3, to_replicas=4, reason="more load", dry_run=True),
        ],
        forecast={
            "ready": True,
            "accuracy": 0.91,
            "floorConnections": 1800.0,
            "peakAt": T0 + 600,
            "backtest": {"wape": 0.09},
            "points": [{"at": T0 + 60, "connections": 2600}, [T0 + 120, 2700]],
        },
    )


def test_snapshot_from_the_operators_status_models() -> None:
    spec = FleetSpec.model_validate({"replicas": {"min": 2, "max": 12}})
    snap = snapshot_from_status("chat", "weddings", operator_status(), spec)
    assert (snap.desired_replicas, snap.current_replicas, snap.ready_replicas) == (4, 3, 3)
    assert (snap.min_replicas, snap.max_replicas) == (2, 12)
    assert snap.mode == "Capped"
    capped = snap.condition("Capped")
    assert capped is not None
    assert capped.status == "True"
    metrics = snap.condition("MetricsAvailable")
    assert metrics is not None
    assert (metrics.status, metrics.message) == ("False", "connection refused")
    assert metrics.last_transition_time == datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    assert snap.condition("Degraded") is None
    decision = snap.last_decision
    assert decision is not None
    assert decision.replicas == 4
    assert decision.mode == "Capped"
    assert decision.sources["metrics"] == 0.75
    assert decision.capped_by == ("maxPodsPerMinute",)
    assert decision.time == datetime.fromtimestamp(T0, UTC)
    assert [(e.from_replicas, e.to_replicas, e.reason, e.dry_run) for e in snap.events] == [
        (2, 3, "load", False),
        (3, 4, "more load", True),
    ]
    assert [p.value for p in snap.forecast] == [2600.0, 2700.0]
    assert snap.forecast_summary == {
        "ready": True,
        "accuracy": 0.91,
        "floorConnections": 1800.0,
        "peakAt": T0 + 600,
    }
    assert snap.observed == {"connections": 2500.0, "messageRate": 40.0}
    # the operator's default selector, filled for this fleet
    assert snap.selector == 'namespace="weddings",service="chat"'


def test_snapshot_json_carries_no_spec_secrets() -> None:
    spec = FleetSpec.model_validate(
        {"redis": {"secretRef": {"name": "redis-auth"}}, "gateway": {"extraEnv": {"A": "b"}}}
    )
    snap = snapshot_from_status("chat", "weddings", operator_status(), spec)
    text = snap.model_dump_json()
    assert "redis-auth" not in text
    assert "extraEnv" not in text
    assert "prometheus-operated" not in text  # not even the Prometheus URL


def test_custom_selector_from_spec() -> None:
    spec = {"prometheus": {"selector": 'app="${name}",ns="${namespace}"'}}
    snap = snapshot_from_status("chat", "w", {}, spec)
    assert snap.selector == 'app="chat",ns="w"'
    assert fleet_selector(None, "a", "b") == 'namespace="a",service="b"'


def test_unreconciled_fleet_shows_up_with_unknowns() -> None:
    snap = snapshot_from_resource({"metadata": {"name": "new", "namespace": "ns"}})
    assert snap.key == ("ns", "new")
    assert snap.desired_replicas is None
    assert snap.conditions == ()
    assert snap.last_decision is None


def test_resource_source_observes_and_forgets() -> None:
    source = ResourceFleetStateSource()
    assert isinstance(source, FleetStateSource)
    body: dict[str, Any] = {
        "metadata": {"name": "b", "namespace": "ns"},
        "status": {"desiredReplicas": 2},
    }
    source.observe(body)
    source.observe({"metadata": {"name": "a", "namespace": "ns"}, "status": {}})
    body["status"]["desiredReplicas"] = 9  # the source keeps its own copy
    assert [(s.name, s.desired_replicas) for s in source.fleets()] == [("a", None), ("b", 2)]
    source.forget("ns", "a")
    source.forget("ns", "missing")
    assert [s.name for s in source.fleets()] == ["b"]


def test_static_source() -> None:
    source = StaticFleetStateSource([FleetSnapshot(name="b"), FleetSnapshot(name="a")])
    assert isinstance(source, FleetStateSource)
    assert [s.name for s in source.fleets()] == ["a", "b"]
    source.put(FleetSnapshot(name="a", desired_replicas=3))
    source.remove("default", "b")
    assert [(s.name, s.desired_replicas) for s in source.fleets()] == [("a", 3)]


def test_tolerant_of_partial_and_odd_status() -> None:
    status = {
        "desiredReplicas": "5",
        "readyReplicas": True,  # not a number
        "conditions": [{"type": "Degraded", "status": True}, {"status": "True"}, "x"],
        "lastDecision": {"desired": 5, "reason": "r", "shares": {"metrics": "x", "floor": 1}},
        "history": [{"at": T0, "to": 5}, {"to": 3}, {"at": "not a time", "to": 1}, 7],
        "forecast": [[T0, "1.5"], [T0, None], {"time": "2026-01-01T00:00:00"}, 3],
        "observed": {"connections": "12", "name": "x", "observedAt": T0},
    }
    snap = snapshot_from_resource({"metadata": {"name": "f"}, "spec": [], "status": status})
    assert snap.namespace == "default"
    assert snap.desired_replicas == 5
    assert snap.ready_replicas is None
    assert [(c.type, c.status) for c in snap.conditions] == [("Degraded", "True")]
    assert snap.last_decision is not None
    assert snap.last_decision.sources == {"floor": 1.0}
    assert [(e.to_replicas, e.from_replicas) for e in snap.events] == [(5, None)]
    assert [p.value for p in snap.forecast] == [1.5]
    assert snap.observed == {"connections": 12.0}
    assert snap.forecast_summary == {}


def test_parse_time() -> None:
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("2026-01-01T00:00:00Z") == aware
    assert parse_time("2026-01-01T00:00:00") == aware
    assert parse_time(aware.replace(tzinfo=None)) == aware
    assert parse_time(aware.timestamp()) == aware
    assert parse_time("yesterday") is None
    assert parse_time("") is None
    assert parse_time(True) is None
    # epoch seconds outside the years 1-9999, or not a number: no time, no crash (found by
    # hypothesis in test_any_status_gives_a_snapshot: a forecast point at -62135596801)
    for bad in (-62135596801, 1e20, float("nan"), float("inf"), -float("inf")):
        assert parse_time(bad) is None, bad


def test_forecast_points_from_a_model() -> None:
    def predict_range(start: float, end: float, step: float) -> tuple[list[float], list[float]]:
        grid = [start + i * step for i in range(int((end - start) / step) + 1)]
        return grid, [t - start for t in grid]

    points = forecast_points(predict_range, T0, T0 + 120, 60)
    assert [(p.time.timestamp(), p.value) for p in points] == [
        (T0, 0.0),
        (T0 + 60, 60.0),
        (T0 + 120, 120.0),
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
status_keys = st.sampled_from(
    [
        "desiredReplicas",
        "currentReplicas",
        "readyReplicas",
        "conditions",
        "lastDecision",
        "history",
        "forecast",
        "observed",
        "mode",
        "anomalies",
    ]
)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(status_keys, json_values), st.dictionaries(st.text(max_size=10), json_values)
)
@example({"desiredReplicas": float("inf"), "readyReplicas": float("-inf")}, {})  # found once
@example({"currentReplicas": float("nan")}, {"replicas": {"max": float("inf")}})
def test_any_status_gives_a_snapshot(status: dict[str, Any], spec: dict[str, Any]) -> None:
    snap = snapshot_from_resource({"metadata": {"name": "f"}, "spec": spec, "status": status})
    assert snap.name == "f"
    # always valid JSON for the API (no NaN/Infinity)
    json.loads(json.dumps(snap.model_dump(mode="json"), allow_nan=False))


def test_anomalies_from_the_operators_records() -> None:
    status = operator_status()
    status.anomalies = [
        AnomalyRecord(
            signal=AnomalySignal.MEMORY_LEAK,
            subject="chat-7d9-abc",
            size=12.5,
            threshold=4.0,
            unit="MiB/h",
            message="pod chat-7d9-abc: memory its connections do not explain grows",
            at=T0 - 300,
        ),
        AnomalyRecord(
            signal=AnomalySignal.SWITCH_LATENCY,
            subject="fleet",
            size=9.1,
            threshold=6.0,
            unit="z",
            message="switch p95 far above its expectation",
            at=T0 - 900,
            resolved_at=T0 - 600,
        ),
    ]
    snap = snapshot_from_status("chat", "weddings", status)
    assert [(a.signal, a.subject) for a in snap.anomalies] == [
        ("SwitchLatency", "fleet"),  # oldest first
        ("MemoryLeak", "chat-7d9-abc"),
    ]
    resolved, open_ = snap.anomalies
    assert resolved.resolved_at == datetime.fromtimestamp(T0 - 600, UTC)
    assert open_.resolved_at is None
    assert (open_.size, open_.threshold, open_.unit) == (12.5, 4.0, "MiB/h")
    assert open_.at == datetime.fromtimestamp(T0 - 300, UTC)


def test_odd_anomalies_are_skipped_and_bounded() -> None:
    rows: list[Any] = [
        {"signal": "ConnectFlood", "at": T0 + i, "size": "x", "message": "m" * 2000}
        for i in range(80)
    ]
    rows += [{"at": T0}, {"signal": "MemoryLeak"}, {"signal": "MemoryLeak", "at": "soon"}, 3]
    snap = snapshot_from_resource({"metadata": {"name": "f"}, "status": {"anomalies": rows}})
    assert len(snap.anomalies) == 50  # the newest
    assert snap.anomalies[-1].at == datetime.fromtimestamp(T0 + 79, UTC)
    assert snap.anomalies[0].size is None
    assert len(snap.anomalies[0].message) == 512
    assert (
        snapshot_from_resource({"metadata": {"name": "f"}, "status": {"anomalies": {}}}).anomalies
        == ()
    )


def test_forecast_points_with_an_upper_quantile() -> None:
    status = {
        "forecast": {
            "points": [
                [T0, 100, 130],
                {"at": T0 + 60, "connections": 110, "upper": 150},
                {"at": T0 + 120, "p50": 120, "p90": 90},  # never below the median
                [T0 + 180, 125],
            ]
        }
    }
    snap = snapshot_from_resource({"metadata": {"name": "f"}, "status": status})
    assert [(p.value, p.upper) for p in snap.forecast] == [
        (100.0, 130.0),
        (110.0, 150.0),
        (120.0, 120.0),
        (125.0, None),
    ]
