"""The dashboard's charts: which PromQL draws which line, and how results become JSON.

Pure: chart definitions, PromQL rendering for one fleet's label selector,
range/step arithmetic, Prometheus range-result parsing and the in-memory
replica history the dashboard samples from its `FleetStateSource`.
Queries follow the gateway metrics contract (``wsfleet_*``).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

Point = tuple[float, float | None]
Unit = Literal["count", "seconds", "ratio", "per_second", "replicas"]

_RANGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

DEFAULT_RANGE_S = 15 * 60.0
MAX_RANGE_S = 7 * 86400.0
MIN_RANGE_S = 30.0
#: Points per line the page draws at most (step = range / this).
TARGET_POINTS = 240


def parse_range(text: str | None) -> float:
    """``"15m"`` → 900.0 seconds, clamped to [30 s, 7 d]; raises ValueError."""
    if text is None or text == "":
        return DEFAULT_RANGE_S
    match = _RANGE_RE.match(text)
    if match is None:
        raise ValueError(f"invalid range {text!r}: use e.g. 30s, 15m, 6h, 1d")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    return min(max(seconds, MIN_RANGE_S), MAX_RANGE_S)


def step_for(range_s: float, min_step_s: float = 1.0) -> float:
    """A query step giving at most `TARGET_POINTS` points, whole seconds."""
    return float(max(min_step_s, math.ceil(range_s / TARGET_POINTS)))


def render_promql(template: str, selector: str, window: str) -> str:
    """Fill ``{SEL}`` / ``{SEL,...}`` with the fleet's matchers and ``[W]`` with the window."""
    sel = selector.strip().strip(",")
    text = template.replace("{SEL}", "{" + sel + "}")
    text = text.replace("{SEL,", "{" + sel + "," if sel else "{")
    return text.replace("[W]", f"[{window}]")


@dataclass(frozen=True)
class LineSpec:
    """One line of a chart: a PromQL template (see `render_promql`).

    With `split_by`, every result series becomes its own line named
    ``"<name> <label value>"``.
    """

    name: str
    promql: str
    split_by: str | None = None


@dataclass(frozen=True)
class ChartSpec:
    id: str
    title: str
    unit: Unit
    lines: tuple[LineSpec, ...] = ()
    #: Lines the dashboard draws from the source, not Prometheus.
    source_lines: tuple[str, ...] = ()
    #: Draw the fleet's forecast on this chart.
    forecast: bool = False
    #: Draw scaling events as markers on this chart.
    markers: bool = False


def _quantile(q: float, metric: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{SEL}}[W])))"


DEFAULT_CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "connections",
        "Connections",
        "count",
        (LineSpec("actual", "sum(wsfleet_connections{SEL})"),),
        forecast=True,
        markers=True,
    ),
    ChartSpec(
        "replicas",
        "Replicas",
        "replicas",
        (LineSpec("scraped", "count(wsfleet_connections{SEL})"),),
        source_lines=("desired", "ready"),
        markers=True,
    ),
    ChartSpec(
        "switch_latency",
        "Channel switch latency",
        "seconds",
        (
            LineSpec("p95", _quantile(0.95, "wsfleet_channel_switch_seconds")),
            LineSpec("p99", _quantile(0.99, "wsfleet_channel_switch_seconds")),
        ),
    ),
    ChartSpec(
        "delivery_latency",
        "Message delivery latency",
        "seconds",
        (
            LineSpec("p95", _quantile(0.95, "wsfleet_message_delivery_seconds")),
            LineSpec("p99", _quantile(0.99, "wsfleet_message_delivery_seconds")),
        ),
    ),
    ChartSpec(
        "cache_hit_ratio",
        "Cache hit ratio",
        "ratio",
        (
            LineSpec(
                "all",
                'sum(rate(wsfleet_cache_requests_total{SEL,result="hit"}[W]))'
                " / sum(rate(wsfleet_cache_requests_total{SEL}[W]))",
            ),
            LineSpec(
                "",
                'sum by (layer) (rate(wsfleet_cache_requests_total{SEL,result="hit"}[W]))'
                " / sum by (layer) (rate(wsfleet_cache_requests_total{SEL}[W]))",
                split_by="layer",
            ),
        ),
    ),
    ChartSpec(
        "message_rate",
        "Message rate",
        "per_second",
        (
            LineSpec("published/s", "sum(rate(wsfleet_messages_total{SEL}[W]))"),
            LineSpec("delivered/s", "sum(rate(wsfleet_deliveries_total{SEL}[W]))"),
        ),
    ),
)

#: Instant query for the live connection count shown beside each fleet.
LIVE_CONNECTIONS = "sum(wsfleet_connections{SEL})"
LIVE_GATEWAYS = "count(wsfleet_connections{SEL})"


def parse_sample_value(raw: Any) -> float | None:
    """A Prometheus sample value (a string) → float; NaN/Inf → None (a gap)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    points: tuple[Point, ...]


def parse_matrix(data: Mapping[str, Any]) -> list[RangeSeries]:
    """The ``data`` of a ``query_range`` response (resultType matrix) → series."""
    out: list[RangeSeries] = []
    for item in data.get("result") or []:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        points = tuple(
            (float(t), parse_sample_value(v)) for t, v in item.get("values") or [] if t is not None
        )
        out.append(RangeSeries(labels, points))
    return out


def parse_vector_sum(data: Mapping[str, Any]) -> float | None:
    """The ``data`` of an instant query → the sum of its samples (None if empty)."""
    values = [parse_sample_value((item.get("value") or [None, None])[1]) for item in data["result"]]
    finite = [v for v in values if v is not None]
    return sum(finite) if finite else None


def line_json(name: str, points: Sequence[Point], kind: str = "line") -> dict[str, Any]:
    last = next((v for _, v in reversed(points) if v is not None), None)
    return {"name": name, "kind": kind, "points": [list(p) for p in points], "last": last}


def lines_from_result(spec: LineSpec, series: Sequence[RangeSeries]) -> list[dict[str, Any]]:
    """Name the result series of one `LineSpec` and turn them into JSON lines."""
    if spec.split_by is None:
        if not series:
            return [line_json(spec.name, [])]
        return [line_json(spec.name, series[0].points)]
    out = []
    for s in sorted(series, key=lambda s: s.labels.get(spec.split_by or "", "")):
        value = s.labels.get(spec.split_by, "?")
        out.append(line_json(f"{spec.name} {value}".strip(), s.points))
    return out


def forecast_at(points: Sequence[tuple[float, float]], t: float) -> float | None:
    """The forecast at `t`, linearly interpolated; None outside the points' span."""
    if not points or t < points[0][0] or t > points[-1][0]:
        return None
    for (t0, v0), (t1, v1) in pairwise(points):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1]


_Row = tuple[float, int | None, int | None, int | None, float | None]


@dataclass
class ReplicaHistory:
    """Bounded per-fleet samples from the source: desired/current/ready replicas
    and what the forecast said about that moment."""

    max_points: int = 3600
    _data: dict[tuple[str, str], deque[_Row]] = field(default_factory=dict)

    def record(
        self,
        key: tuple[str, str],
        t: float,
        desired: int | None,
        current: int | None,
        ready: int | None,
        forecast: float | None = None,
    ) -> None:
        buf = self._data.get(key)
        if buf is None:
            buf = self._data[key] = deque(maxlen=self.max_points)
        buf.append((t, desired, current, ready, forecast))

    def retain(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget fleets that are gone."""
        keep = set(keys)
        for key in list(self._data):
            if key not in keep:
                del self._data[key]

    def lines(self, key: tuple[str, str], start: float, end: float) -> dict[str, list[Point]]:
        """``{"desired", "current", "ready", "forecast"}`` point lists within [start, end]."""
        rows = [r for r in self._data.get(key, ()) if start <= r[0] <= end]
        return {
            "desired": [(r[0], _f(r[1])) for r in rows],
            "current": [(r[0], _f(r[2])) for r in rows],
            "ready": [(r[0], _f(r[3])) for r in rows],
            "forecast": [(r[0], r[4]) for r in rows if r[4] is not None],
        }


def _f(value: int | None) -> float | None:
    return None if value is None else float(value)
