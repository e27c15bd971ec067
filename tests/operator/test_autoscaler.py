"""The Autoscaler tick without kopf (as the local fleet uses it): fake target, fake metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
from wsfleet_operator import crd
from wsfleet_operator.autoscaler import Autoscaler
from wsfleet_operator.scaling import Metrics
from wsfleet_operator.spec import FleetSpec, parse_spec
from wsfleet_operator.targets import ScaleTarget, deletion_costs

NOW = 1_000_000.0


@dataclass
class FakeTarget:
    replicas: int = 2
    connections: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail: bool = False
    ready: int | None = 2

    async def current_replicas(self) -> int:
        if self.fail:
            raise RuntimeError("api down")
        return self.replicas

    async def set_replicas(self, n: int, reason: str) -> None:
        self.calls.append(("set_replicas", n))
        self.replicas = n

    async def pod_connections(self) -> dict[str, int]:
        self.calls.append(("pod_connections", None))
        return dict(self.connections)

    async def set_deletion_costs(self, costs: dict[str, int]) -> None:
        self.calls.append(("set_deletion_costs", costs))

    async def ready_replicas(self) -> int | None:
        return self.ready


@dataclass
class FakeMetrics:
    connections: float | None = None
    error: bool = False

    async def observe(self, now: float) -> Metrics | None:
        if self.error:
            raise OSError("prometheus down")
        return Metrics(now, connections=self.connections)

    async def pod_connections(self) -> dict[str, int] | None:
        return None


def spec(**raw: Any) -> FleetSpec:
    base: dict[str, Any] = {
        "targets": {"connectionsPerPod": 100, "switchLatencyP95Ms": None},
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0, "maxPodsPerMinute": 10}},
    }
    base.update(raw)
    return parse_spec(base)


def validate_status(status: dict[str, Any]) -> None:
    jsonschema.Draft4Validator(crd.to_json_schema(crd.crd_schema())).validate({"status": status})


def conditions(result: Any) -> dict[str, str]:
    return {c.type.value: c.status for c in result.status.conditions}


def test_fake_target_is_a_scale_target() -> None:
    assert isinstance(FakeTarget(), ScaleTarget)


async def test_scale_up_applies_and_reports() -> None:
    target = FakeTarget()
    scaler = Autoscaler(spec(), target, FakeMetrics(connections=400), name="f", namespace="n")
    result = await scaler.tick(NOW)
    assert result.applied
    assert target.replicas == 5
    assert target.calls == [("set_replicas", 5)]  # no deletion costs on the way up
    assert [e.reason for e in result.events] == ["ScaledUp"]
    status = result.status_patch()
    validate_status(status)
    assert status["desiredReplicas"] == 5
    assert status["currentReplicas"] == 5
    assert status["connections"] == 400
    assert status["history"][0]["from"] == 2
    assert conditions(result)["Scaling"] == "True"
    assert conditions(result)["MetricsAvailable"] == "True"


async def test_scale_down_sets_deletion_costs_first() -> None:
    target = FakeTarget(replicas=6, connections={"a": 30, "b": 0, "c": 12})
    scaler = Autoscaler(spec(), target, FakeMetrics(connections=40))
    result = await scaler.tick(NOW)
    assert result.applied
    assert target.calls[0] == ("pod_connections", None)
    assert target.calls[1] == ("set_deletion_costs", {"a": 30, "b": 0, "c": 12})
    assert target.calls[2] == ("set_replicas", 2)
    assert [e.reason for e in result.events] == ["ScaledDown"]


async def test_dry_run_never_touches_the_target() -> None:
    target = FakeTarget(replicas=6, connections={"a": 1})
    scaler = Autoscaler(spec(dryRun=True), target, FakeMetrics(connections=700))
    first = await scaler.tick(NOW)
    second = await scaler.tick(NOW + 1)
    assert not first.applied
    assert target.calls == []
    assert target.replicas == 6
    assert first.status.mode is not None
    assert first.status.mode.value == "DryRun"
    assert [e.reason for e in first.events] == ["DryRunScale"]
    assert second.events == []  # the same would-be decision is not repeated
    assert len(second.status.history) == 1
    assert second.status.history[0].dry_run


async def test_metrics_outage_holds_and_flags() -> None:
    target = FakeTarget(replicas=4)
    metrics = FakeMetrics(connections=300)
    scaler = Autoscaler(spec(prometheus={"staleAfterSeconds": 5}), target, metrics)
    await scaler.tick(NOW)
    metrics.error = True
    stale = await scaler.tick(NOW + 1)
    assert conditions(stale)["MetricsAvailable"] == "False"
    assert [e.reason for e in stale.events] == ["MetricsUnavailable"]
    assert target.replicas == 4
    fallback = await scaler.tick(NOW + 10)
    assert conditions(fallback)["Degraded"] == "True"
    assert fallback.status.mode is not None
    assert fallback.status.mode.value == "Fallback"
    metrics.error = False
    back = await scaler.tick(NOW + 11)
    assert conditions(back)["MetricsAvailable"] == "True"
    assert "MetricsAvailable" in [e.reason for e in back.events]


async def test_target_failure_is_reported_not_raised() -> None:
    target = FakeTarget(fail=True)
    result = await Autoscaler(spec(), target, FakeMetrics(connections=1)).tick(NOW)
    assert result.error is not None
    assert result.decision is None
    assert conditions(result)["Degraded"] == "True"
    assert [e.reason for e in result.events] == ["TargetUnavailable"]


async def test_apply_failure_is_reported() -> None:
    class Broken(FakeTarget):
        async def set_replicas(self, n: int, reason: str) -> None:
            raise RuntimeError("conflict")

    result = await Autoscaler(spec(), Broken(), FakeMetrics(connections=900)).tick(NOW)
    assert not result.applied
    assert result.error is not None
    assert "ScalingFailed" in [e.reason for e in result.events]


async def test_invalid_spec_reports_once() -> None:
    scaler = Autoscaler(spec(replicas={"min": 5, "max": 2}), FakeTarget(), FakeMetrics())
    first = await scaler.tick(NOW)
    second = await scaler.tick(NOW + 1)
    assert first.decision is None
    assert [e.reason for e in first.events] == ["InvalidSpec"]
    assert second.events == []
    assert conditions(first)["Degraded"] == "True"
    validate_status(first.status_patch())


class Floor:
    def __init__(self, value: float | None, fail: bool = False) -> None:
        self.value = value
        self.fail = fail

    def floor(self, now: float) -> float | None:
        if self.fail:
            raise ValueError("model broke")
        return self.value

    def status(self, now: float) -> dict[str, Any]:
        return {"accuracy": 0.9, "floorConnections": 500.0}


class AsyncFloor:
    async def floor(self, now: float) -> float | None:
        return 7.0


@pytest.mark.parametrize(
    ("forecaster", "enabled", "expected"),
    [
        (Floor(6.5), True, 7),
        (Floor(6.5), False, 2),
        (Floor(None), True, 2),
        (Floor(1.0, fail=True), True, 2),
        (AsyncFloor(), True, 7),
        (Floor(float("nan")), True, 2),
    ],
)
async def test_forecast_floor(forecaster: Any, enabled: bool, expected: int) -> None:
    target = FakeTarget()
    s = spec(forecast={"enabled": enabled}, behavior={"scaleUp": {"maxPodsPerMinute": 10}})
    scaler = Autoscaler(s, target, FakeMetrics(connections=10), forecaster)
    result = await scaler.tick(NOW)
    assert target.replicas == expected
    if expected == 7:
        assert result.status.mode is not None
        assert result.status.mode.value == "Forecast"
        assert result.status.last_decision is not None
        assert result.status.last_decision.shares.forecast > 0
    if enabled and isinstance(forecaster, Floor) and not forecaster.fail:
        assert result.status.forecast == {"accuracy": 0.9, "floorConnections": 500.0}


async def test_ready_condition() -> None:
    target = FakeTarget(ready=0)
    result = await Autoscaler(spec(), target, FakeMetrics(connections=100)).tick(NOW)
    assert conditions(result)["Ready"] == "False"
    target.ready = 2
    scaler = Autoscaler(spec(), target, FakeMetrics(connections=100))
    assert conditions(await scaler.tick(NOW))["Ready"] == "True"


def test_deletion_costs_clamp() -> None:
    assert deletion_costs({"a": -5, "b": 2**40, "c": 7}) == {"a": 0, "b": 2**31 - 1, "c": 7}


async def test_disabled_auth_is_a_loud_condition_and_one_warning() -> None:
    scaler = Autoscaler(
        spec(auth={"disabled": True}), FakeTarget(), FakeMetrics(connections=100), name="f"
    )
    first = await scaler.tick(NOW)
    warnings = [e for e in first.events if e.reason == "AuthDisabled"]
    assert len(warnings) == 1
    assert warnings[0].type == "Warning"
    assert "AUTHENTICATION IS DISABLED" in warnings[0].message
    assert conditions(first)["AuthEnabled"] == "False"
    validate_status(first.status_patch())
    second = await scaler.tick(NOW + 15)
    assert not [e for e in second.events if e.reason == "AuthDisabled"]  # once per change
    assert conditions(second)["AuthEnabled"] == "False"
    scaler.update_spec(spec(auth={"jwtSecretRef": {"name": "s", "key": "k"}}))
    third = await scaler.tick(NOW + 30)
    assert conditions(third)["AuthEnabled"] == "True"
    # no auth section (the local fleet manages its gateways' auth): no condition at all
    scaler.update_spec(spec())
    fourth = await scaler.tick(NOW + 45)
    assert "AuthEnabled" not in conditions(fourth)
