"""Pure helpers for the WebSocketFleet status: conditions and the decision record."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from wsfleet_operator.scaling import Decision
from wsfleet_operator.spec import (
    Condition,
    ConditionType,
    DecisionStatus,
    FleetStatus,
    Mode,
    ObservedMetrics,
    Shares,
)


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Condition],
    type_: ConditionType,
    status: bool | None,
    reason: str,
    message: str,
    now: float,
) -> tuple[list[Condition], bool]:
    """The conditions with `type_` set; True when its status changed (a transition)."""
    value = "Unknown" if status is None else ("True" if status else "False")
    out: list[Condition] = []
    changed = True
    found = False
    for c in conditions:
        if c.type is type_:
            found = True
            changed = c.status != value
            out.append(
                Condition(
                    type=type_,
                    status=value,
                    reason=reason,
                    message=message[:512],
                    last_transition_time=iso(now) if changed else c.last_transition_time,
                )
            )
        else:
            out.append(c)
    if not found:
        out.append(
            Condition(
                type=type_,
                status=value,
                reason=reason,
                message=message[:512],
                last_transition_time=iso(now),
            )
        )
    order = list(ConditionType)
    out.sort(key=lambda c: order.index(c.type))
    return out, changed


def get_condition(conditions: Iterable[Condition], type_: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type is type_), None)


def decision_status(decision: Decision, now: float, dry_run: bool) -> DecisionStatus:
    s = decision.shares
    return DecisionStatus(
        desired=decision.desired,
        current=decision.current,
        reason=decision.reason,
        mode=Mode.DRY_RUN if dry_run else decision.mode,
        shares=Shares(
            metrics=round(s.metrics, 4),
            forecast=round(s.forecast, 4),
            floor=round(s.floor, 4),
            cap=round(s.cap, 4),
        ),
        capped=decision.capped,
        capped_by=list(decision.capped_by),
        at=round(now, 3),
    )


def observed_status(decision: Decision) -> ObservedMetrics | None:
    m = decision.metrics_used
    if m is None:
        return None
    return ObservedMetrics(
        connections=m.connections,
        switch_latency_p95_seconds=m.switch_latency_p95_s,
        message_rate=m.message_rate,
        draining=m.draining,
        observed_at=round(m.observed_at, 3),
    )


VOLATILE: dict[str, tuple[str, ...]] = {"lastDecision": ("at",), "observed": ("observedAt",)}
"""Timestamps that move on every tick while nothing else does (status key -> its fields)."""


def status_essence(status: Mapping[str, Any]) -> dict[str, Any]:
    """What a status says, without the timestamps of an unchanged decision or observation.

    Two statuses with the same essence need no write: the operator patches the status only
    when the essence changes, so a quiet fleet costs the API server nothing. Unset (None)
    fields count as absent, as a merge patch treats them.
    """
    out: dict[str, Any] = {}
    for key, value in status.items():
        if value is None:
            continue
        drop = VOLATILE.get(key)
        if drop and isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if k not in drop}
        out[key] = value
    return out


def status_merge_patch(status: FleetStatus) -> dict[str, Any]:
    """The status as a merge-patch body: every field unset now is sent as null (removed).

    Without the nulls, a merge patch would keep values that no longer hold (the connection
    count of a Prometheus that has since gone away).
    """
    wire = status.to_wire()
    unset = {
        (info.alias or name): None
        for name, info in FleetStatus.model_fields.items()
        if (info.alias or name) not in wire
    }
    return {**unset, **wire}
