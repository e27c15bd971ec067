"""A `WebSocketFleet` as the operator writes it, read into a `FleetSnapshot`.

- `snapshot_from_resource`: a whole object (metadata, spec, status), tolerant of
  missing or partial status; `snapshot_from_status`: the operator's models (the
  local fleet holds those rather than an object).
- `ResourceFleetStateSource`: remembers the objects kopf shows the operator and
  converts each one on demand.
- `forecast_points`: a snapshot's forecast from a model's ``predict_range``.

Pure: nothing here does I/O.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from wsfleet_operator.dashboard.model import (
    MAX_ANOMALIES,
    MAX_EVENTS,
    MAX_FORECAST_POINTS,
    Anomaly,
    Condition,
    Decision,
    FleetSnapshot,
    ForecastPoint,
    ScalingEvent,
)


class ResourceFleetStateSource:
    """Snapshots of the `WebSocketFleet` objects the operator has seen.

    kopf handlers call `observe(body)` with each object (or its latest
    status) and `forget(namespace, name)` on deletion.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[tuple[str, str], Mapping[str, Any]] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        with self._lock:
            self._bodies[key] = _plain(body)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._bodies.pop((namespace, name), None)

    def fleets(self) -> list[FleetSnapshot]:
        with self._lock:
            bodies = [self._bodies[k] for k in sorted(self._bodies)]
        return [snapshot_from_resource(b) for b in bodies]


def _plain(value: Any) -> Any:
    """Deep-copy mappings/sequences into plain dicts/lists (kopf bodies are views)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None  # JSON has no NaN


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string, a datetime or epoch seconds → aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:  # NaN, or outside the years 1-9999: no time
            return datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            return None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _conditions(raw: Any) -> tuple[Condition, ...]:
    if not isinstance(raw, list):
        return ()
    out: list[Condition] = []
    for item in raw:
        if not isinstance(item, Mapping) or not item.get("type"):
            continue
        status = item.get("status", "Unknown")
        if isinstance(status, bool):
            status = "True" if status else "False"
        out.append(
            Condition(
                type=str(item["type"]),
                status=str(status),
                reason=str(item.get("reason") or ""),
                message=str(item.get("message") or ""),
                last_transition_time=parse_time(
                    _first(item, "lastTransitionTime", "last_transition_time")
                ),
            )
        )
    return tuple(out)


def _decision(raw: Any) -> Decision | None:
    if not isinstance(raw, Mapping):
        return None
    sources_raw = _first(raw, "sources", "shares", "contributions") or {}
    sources: dict[str, float] = {}
    if isinstance(sources_raw, Mapping):
        for k, v in sources_raw.items():
            f = _as_float(v)
            if f is not None:
                sources[str(k)] = f
    capped_by = raw.get("cappedBy")
    return Decision(
        replicas=_as_int(_first(raw, "desired", "replicas", "desiredReplicas")),
        reason=str(_first(raw, "reason", "message") or ""),
        time=parse_time(_first(raw, "at", "time", "timestamp")),
        mode=str(raw.get("mode") or ""),
        sources=sources,
        capped_by=tuple(str(c) for c in capped_by) if isinstance(capped_by, list) else (),
    )


def _events(raw: Any) -> tuple[ScalingEvent, ...]:
    if not isinstance(raw, list):
        return ()
    out: list[ScalingEvent] = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        time = parse_time(_first(item, "time", "timestamp", "at"))
        to = _as_int(_first(item, "toReplicas", "to", "replicas", "desiredReplicas"))
        if time is None or to is None:
            continue
        out.append(
            ScalingEvent(
                time=time,
                from_replicas=_as_int(_first(item, "fromReplicas", "from", "previousReplicas")),
                to_replicas=to,
                reason=str(_first(item, "reason", "message") or ""),
                dry_run=bool(item.get("dryRun", False)),
            )
        )
    out.sort(key=lambda e: e.time)
    return tuple(out[-MAX_EVENTS:])


def _forecast_summary(raw: Any) -> dict[str, float | str | bool]:
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(k): v
        for k, v in raw.items()
        if (isinstance(v, str | bool) and len(str(v)) <= 200)
        or (isinstance(v, int | float) and math.isfinite(v))
    }


def _forecast(raw: Any) -> tuple[ForecastPoint, ...]:
    points: Any = raw
    if isinstance(raw, Mapping):
        points = _first(raw, "points", "series", "values")
    if not isinstance(points, list):
        return ()
    out: list[ForecastPoint] = []
    for item in points:
        upper: float | None = None
        if isinstance(item, Mapping):
            time = parse_time(_first(item, "at", "time", "timestamp", "t"))
            value = _as_float(_first(item, "connections", "value", "v", "p50"))
            upper = _as_float(_first(item, "upper", "p90"))
        elif isinstance(item, list | tuple) and len(item) in (2, 3):
            time, value = parse_time(item[0]), _as_float(item[1])
            upper = _as_float(item[2]) if len(item) == 3 else None
        else:
            continue
        if time is not None and value is not None:
            if upper is not None:
                upper = max(upper, value)  # a band never dips below its median
            out.append(ForecastPoint(time=time, value=value, upper=upper))
    out.sort(key=lambda p: p.time)
    return tuple(out[-MAX_FORECAST_POINTS:])


def _anomalies(raw: Any) -> tuple[Anomaly, ...]:
    """``status.anomalies`` as `spec.AnomalyRecord` writes them (camelCase)."""
    if not isinstance(raw, list):
        return ()
    out: list[Anomaly] = []
    for item in raw:
        if not isinstance(item, Mapping) or not item.get("signal"):
            continue
        at = parse_time(item.get("at"))
        if at is None:
            continue
        out.append(
            Anomaly(
                signal=str(item["signal"])[:64],
                subject=str(item.get("subject") or "fleet")[:253],
                size=_as_float(item.get("size")),
                threshold=_as_float(item.get("threshold")),
                unit=str(item.get("unit") or "")[:32],
                message=str(item.get("message") or "")[:512],
                at=at,
                resolved_at=parse_time(_first(item, "resolvedAt", "resolved_at")),
            )
        )
    out.sort(key=lambda a: a.at)
    return tuple(out[-MAX_ANOMALIES:])


def _observed(raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, float] = {}
    for k, v in raw.items():
        f = _as_float(v)
        if str(k).endswith("At"):
            continue  # timestamps, not metrics
        if f is not None:
            out[str(k)] = f
    return out


#: The operator's default selector (spec.prometheus.selector), placeholders included.
DEFAULT_SELECTOR_TEMPLATE = 'namespace="${namespace}",service="${name}"'


def fleet_selector(template: str | None, namespace: str, name: str) -> str:
    """Fill the spec's selector template (``${namespace}``, ``${name}``)."""
    text = DEFAULT_SELECTOR_TEMPLATE if template is None else template
    return text.replace("${namespace}", namespace).replace("${name}", name)


def snapshot_from_resource(body: Mapping[str, Any]) -> FleetSnapshot:
    """Convert a `WebSocketFleet` object (metadata, spec, status) to a snapshot.

    Reads the status as `wsfleet_operator.spec.FleetStatus` writes it
    (camelCase: ``desiredReplicas``, ``lastDecision.{desired,reason,mode,
    shares,at}``, ``history[].{at,from,to,reason}``, ``conditions``), and
    ``forecast.points`` as ``[{"at": unix_s, "connections": n}]`` or
    ``[[unix_s, n]]`` when the forecaster writes a series (a third value, or
    ``upper``/``p90``, is the upper quantile), ``anomalies`` as
    `spec.AnomalyRecord` (``signal``, ``subject``, ``at``, ``resolvedAt``). The selector is
    ``spec.prometheus.selector`` with its placeholders filled.

    Tolerant of missing or partial status (a fleet the operator has not
    reconciled yet shows up with unknown counts rather than not at all).
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "default")
    raw_replicas = spec.get("replicas")
    replicas_spec: Mapping[str, Any] = raw_replicas if isinstance(raw_replicas, Mapping) else {}
    raw_prom = spec.get("prometheus")
    prom: Mapping[str, Any] = raw_prom if isinstance(raw_prom, Mapping) else {}
    raw_selector = prom.get("selector")
    selector = fleet_selector(
        raw_selector if isinstance(raw_selector, str) else None, namespace, name
    )
    mode = status.get("mode")
    return FleetSnapshot(
        name=name,
        namespace=namespace,
        desired_replicas=_as_int(_first(status, "desiredReplicas", "desired")),
        current_replicas=_as_int(_first(status, "currentReplicas", "current", "replicas")),
        ready_replicas=_as_int(_first(status, "readyReplicas", "ready")),
        min_replicas=_as_int(_first(replicas_spec, "min", "minReplicas")),
        max_replicas=_as_int(_first(replicas_spec, "max", "maxReplicas")),
        conditions=_conditions(status.get("conditions")),
        last_decision=_decision(_first(status, "lastDecision", "decision")),
        events=_events(_first(status, "history", "scalingEvents", "events")),
        forecast=_forecast(status.get("forecast")),
        anomalies=_anomalies(status.get("anomalies")),
        forecast_summary=_forecast_summary(status.get("forecast")),
        mode=str(mode) if mode else None,
        observed=_observed(_first(status, "observed", "observedMetrics", "metrics")),
        selector=selector,
        prometheus_url=str(prom["url"]) if isinstance(prom.get("url"), str) else None,
    )


def _wire(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    to_wire = getattr(value, "to_wire", None)
    if callable(to_wire):
        wire: Mapping[str, Any] = to_wire()
        return wire
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"expected a mapping or a wsfleet_operator.spec model, got {type(value)!r}")


def snapshot_from_status(name: str, namespace: str, status: Any, spec: Any = None) -> FleetSnapshot:
    """A snapshot from `FleetStatus` / `FleetSpec` models (or their wire dicts).

    For sources that hold the operator's models rather than a whole object
    (the local fleet).
    """
    body = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": _wire(spec),
        "status": _wire(status),
    }
    return snapshot_from_resource(body)


def forecast_points(
    predict_range: Callable[[float, float, float], tuple[Iterable[float], Iterable[float]]],
    start: float,
    end: float,
    step_s: float,
) -> tuple[ForecastPoint, ...]:
    """Forecast points for a snapshot from a model's ``predict_range(start, end, step)``
    (e.g. `wsfleet_operator.forecast.model.SeasonalModel.predict_range`)."""
    grid, values = predict_range(start, end, step_s)
    return tuple(
        ForecastPoint(time=datetime.fromtimestamp(float(t), UTC), value=float(v))
        for t, v in zip(grid, values, strict=True)
    )
