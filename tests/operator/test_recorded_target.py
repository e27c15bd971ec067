"""The replica count the operator owns: changes recorded beside the count (restart-safe
rate limits and cost guard), hand edits put back, the status essence, drift checks.

tests/cluster proves the same against the real API server; these pin the rules."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from wsfleet_operator.autoscaler import Autoscaler
from wsfleet_operator.reconcile import FleetRef, is_drifted
from wsfleet_operator.resources import build_deployment, build_service
from wsfleet_operator.scaling import MAX_CHANGES, ScaleChange
from wsfleet_operator.spec import FleetStatus, ScalingEvent, parse_spec
from wsfleet_operator.status import status_essence, status_merge_patch
from wsfleet_operator.targets import RecordedTarget, decode_changes, encode_changes

from tests.operator.test_autoscaler import NOW, FakeMetrics, FakeTarget, spec


@dataclass
class RecordingTarget(FakeTarget):
    """A FakeTarget that also keeps the operator's changes and count, as a Deployment does."""

    owned: int | None = None
    recorded: list[ScaleChange] = field(default_factory=list)

    async def recorded_changes(self) -> list[ScaleChange]:
        return list(self.recorded)

    async def owned_replicas(self) -> tuple[int, int | None]:
        return self.replicas, self.owned

    async def set_replicas_recorded(self, n: int, reason: str, changes: Any) -> None:
        self.calls.append(("set_replicas_recorded", n))
        self.replicas = self.owned = n
        self.recorded = list(changes)


changes = st.lists(
    st.builds(
        ScaleChange,
        st.floats(min_value=0, max_value=4e9, allow_nan=False),
        st.integers(min_value=0, max_value=1000),
        st.integers(min_value=0, max_value=1000),
    ),
    max_size=20,
).map(lambda cs: sorted(cs, key=lambda c: c.at))


@given(changes)
def test_changes_round_trip_through_the_annotation(cs: list[ScaleChange]) -> None:
    back = decode_changes(encode_changes(cs))
    assert [(c.from_replicas, c.to_replicas) for c in back] == [
        (c.from_replicas, c.to_replicas) for c in cs
    ]
    assert all(abs(a.at - b.at) <= 0.0005 for a, b in zip(back, cs, strict=True))


def test_a_malformed_annotation_is_skipped_never_raised() -> None:
    for text in (None, "", "not json", "{}", '{"a": 1}', "[1, 2]", "[[1, 2]]"):
        assert decode_changes(text) == []
    rows = [[5, 2, 3], ["x", 1, 2], [1, -1, 2], [1, True, 2], [1, 2, 2.5], [3, 1, 2]]
    assert decode_changes(json.dumps(rows)) == [ScaleChange(3.0, 1, 2), ScaleChange(5.0, 2, 3)]
    assert decode_changes("[[NaN, 1, 2], [Infinity, 1, 2]]") == []
    many = [[float(i), 1, 2] for i in range(MAX_CHANGES + 5)]
    assert len(decode_changes(json.dumps(many))) == MAX_CHANGES
    assert math.isclose(decode_changes(json.dumps(many))[0].at, 5.0)


def one_pod_a_minute() -> Any:
    return spec(
        behavior={
            "scaleUp": {"maxPodsPerMinute": 1, "selectPolicy": "Min", "maxPercentPerMinute": 1000},
            "scaleDown": {"stabilizationWindowSeconds": 0},
        }
    )


async def test_a_restarted_autoscaler_counts_the_recorded_step() -> None:
    """A step made 10 s before a restart still counts in the per-minute limit."""
    target = RecordingTarget(replicas=3, owned=3, recorded=[ScaleChange(NOW - 10, 2, 3)])
    assert isinstance(target, RecordedTarget)
    scaler = Autoscaler(one_pod_a_minute(), target, FakeMetrics(connections=400.0))
    held = await scaler.tick(NOW)
    assert held.decision is not None
    assert held.decision.desired == 3
    assert "rateLimit" in held.decision.capped_by
    # the step shows in the history exactly once, although no status recorded it
    assert [(e.from_replicas, e.to_replicas) for e in scaler.events] == [(2, 3)]
    later = await scaler.tick(NOW + 55)
    assert later.decision is not None
    assert later.decision.desired == 4
    assert target.calls[-1] == ("set_replicas_recorded", 4)
    assert [(c.from_replicas, c.to_replicas) for c in target.recorded] == [(2, 3), (3, 4)]


async def test_a_fresh_autoscaler_without_the_record_repeats_the_step() -> None:
    """What the record prevents: the same situation without it scales again at once."""
    target = FakeTarget(replicas=3)
    scaler = Autoscaler(one_pod_a_minute(), target, FakeMetrics(connections=400.0))
    result = await scaler.tick(NOW)
    assert result.decision is not None
    assert result.decision.desired == 4


async def test_a_hand_edit_of_the_count_is_put_back() -> None:
    target = RecordingTarget(replicas=5, owned=2)
    scaler = Autoscaler(spec(), target, FakeMetrics(connections=10.0))
    result = await scaler.tick(NOW)
    assert ("set_replicas_recorded", 2) in target.calls
    (event,) = [e for e in result.events if e.reason == "DriftRepaired"]
    assert "spec.replicas was set to 5 by hand; put back to 2" in event.message
    assert result.decision is not None
    assert result.decision.current == 2


async def test_dry_run_or_no_record_leaves_the_count_alone() -> None:
    for target, raw in (
        (RecordingTarget(replicas=5, owned=2), {"dryRun": True}),
        (RecordingTarget(replicas=5, owned=None), {}),
    ):
        result = await Autoscaler(spec(**raw), target, FakeMetrics(connections=10.0)).tick(NOW)
        assert not [e for e in result.events if e.reason == "DriftRepaired"]
        assert result.decision is not None
        assert result.decision.current == 5


def test_the_essence_ignores_timestamps_of_an_unchanged_decision() -> None:
    a = {"desiredReplicas": 2, "lastDecision": {"desired": 2, "at": 1.0}, "observed": None}
    b = {"desiredReplicas": 2, "lastDecision": {"desired": 2, "at": 9.0}}
    assert status_essence(a) == status_essence(b)
    assert status_essence({**b, "desiredReplicas": 3}) != status_essence(a)
    assert status_essence({"observed": {"connections": 1, "observedAt": 5}}) == status_essence(
        {"observed": {"connections": 1, "observedAt": 6}}
    )


def test_the_merge_patch_clears_what_no_longer_holds() -> None:
    patch = status_merge_patch(FleetStatus(desired_replicas=2))
    assert patch["desiredReplicas"] == 2
    assert patch["connections"] is None  # a merge patch with null removes the old value
    assert patch["observed"] is None
    history = [ScalingEvent(at=1.0, from_replicas=1, to_replicas=2, reason="x")]
    assert status_merge_patch(FleetStatus(history=history))["history"][0]["from"] == 1


def test_drift_is_computed_from_the_object_alone() -> None:
    raw = {"auth": {"disabled": True}}
    ref = FleetRef("chat", "ns", "uid-1")
    dep = build_deployment("chat", "ns", "uid-1", parse_spec(raw))
    served = json.loads(json.dumps(dep))
    served["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"  # a server default
    served["status"] = {"readyReplicas": 2}
    assert not is_drifted(ref, raw, served)
    served["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    assert is_drifted(ref, raw, served)
    served["metadata"]["labels"]["app.kubernetes.io/component"] = "x"
    assert is_drifted(ref, raw, build_service("chat", "ns", "uid-1", parse_spec(raw))) is False
    assert not is_drifted(ref, {"replicas": {"min": 5, "max": 1}}, served)  # invalid: not drift
    other = {**served, "metadata": {**served["metadata"], "name": "someone-else"}}
    assert not is_drifted(ref, raw, other)
