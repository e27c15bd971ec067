"""What the dashboard shows about a fleet, and where it gets it from.

`FleetSnapshot` is the dashboard's read-only view of one `WebSocketFleet`:
replica counts, conditions, the last scaling decision, a bounded list of
scaling events and the forecast, if any. A `FleetStateSource` hands out
snapshots; the operator and the local fleet each implement one.

- `StaticFleetStateSource`: an in-memory source (tests, simple embedding).
- `ResourceFleetStateSource` (``wire.py``, with the conversion of a
  ``WebSocketFleet`` object or the operator's status models into a snapshot).

A snapshot also carries the fleet's anomalies (``status.anomalies``) for the
timeline; the forecast's quantile band comes from the model when the dashboard
runs beside it (`wsfleet_operator.dashboard.forecasts`), else from the status.

Nothing here does I/O. No secrets: a snapshot carries only names, counts,
conditions, reasons and a PromQL label matcher.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

#: Conditions the page shows as badges first, in this order.
HEADLINE_CONDITIONS: tuple[str, ...] = ("Capped", "MetricsAvailable", "Degraded")

#: How many scaling events a snapshot keeps (newest last).
MAX_EVENTS = 50

#: How many forecast points a snapshot keeps.
MAX_FORECAST_POINTS = 2000

#: How many anomalies a snapshot keeps (newest last; the operator keeps 20).
MAX_ANOMALIES = 50


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Condition(_Frozen):
    """A Kubernetes-style condition: ``status`` is "True", "False" or "Unknown"."""

    type: str
    status: str = "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


class Decision(_Frozen):
    """The autoscaler's latest decision and why it was made."""

    replicas: int | None = None
    reason: str = ""
    time: datetime | None = None
    #: How the count came about (Metrics, Forecast, Floor, Capped, Hold, ...).
    mode: str = ""
    #: Share of the decision per source (metrics, forecast, floor, cap), 0..1.
    sources: dict[str, float] = Field(default_factory=dict)
    capped_by: tuple[str, ...] = ()


class ScalingEvent(_Frozen):
    """One scaling action: from → to replicas at `time`, with its reason."""

    time: datetime
    from_replicas: int | None = None
    to_replicas: int
    reason: str = ""
    dry_run: bool = False


class ForecastPoint(_Frozen):
    """Predicted connections at `time`: the median and, when stated, an upper quantile."""

    time: datetime
    value: float
    #: The upper quantile (``spec.forecast.floorQuantile``, p90 by default), if stated.
    upper: float | None = None


class Anomaly(_Frozen):
    """One anomaly of ``status.anomalies``: `signal` about `subject` from `at` until
    `resolved_at` (None while it holds)."""

    signal: str
    subject: str = "fleet"
    size: float | None = None
    threshold: float | None = None
    unit: str = ""
    message: str = ""
    at: datetime
    resolved_at: datetime | None = None


class FleetSnapshot(_Frozen):
    """The dashboard's view of one fleet at one moment."""

    name: str
    namespace: str = "default"
    desired_replicas: int | None = None
    current_replicas: int | None = None
    ready_replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    conditions: tuple[Condition, ...] = ()
    last_decision: Decision | None = None
    events: tuple[ScalingEvent, ...] = ()
    forecast: tuple[ForecastPoint, ...] = ()
    #: Recent anomalies, open ones included, oldest first.
    anomalies: tuple[Anomaly, ...] = ()
    #: Scalar facts about the forecast (accuracy, next peak, floor...), as written.
    forecast_summary: dict[str, float | str | bool] = Field(default_factory=dict)
    #: How the last desired count came about (Metrics, Forecast, Floor, Capped...).
    mode: str | None = None
    #: Observed metric values as the operator last read them (name → value).
    observed: dict[str, float] = Field(default_factory=dict)
    #: PromQL label matchers selecting this fleet's gateways, e.g.
    #: ``namespace="shop",fleet="chat"``; empty selects every gateway.
    selector: str = ""
    #: This fleet's Prometheus (``spec.prometheus.url``); None: the dashboard's
    #: default. Never sent to the page.
    prometheus_url: str | None = Field(default=None, exclude=True)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@runtime_checkable
class FleetStateSource(Protocol):
    """Anything that can list the fleets it knows, cheaply and without blocking."""

    def fleets(self) -> Sequence[FleetSnapshot]: ...


class StaticFleetStateSource:
    """An in-memory source: callers put and remove snapshots (thread-safe)."""

    def __init__(self, snapshots: Iterable[FleetSnapshot] = ()) -> None:
        self._lock = threading.Lock()
        self._fleets: dict[tuple[str, str], FleetSnapshot] = {s.key: s for s in snapshots}

    def put(self, snapshot: FleetSnapshot) -> None:
        with self._lock:
            self._fleets[snapshot.key] = snapshot

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            self._fleets.pop((namespace, name), None)

    def fleets(self) -> list[FleetSnapshot]:
        with self._lock:
            return sorted(self._fleets.values(), key=lambda s: s.key)
