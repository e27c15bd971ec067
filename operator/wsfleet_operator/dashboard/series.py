"""The dashboard's charts: which PromQL draws which line, and how results become JSON.

Pure: chart definitions, PromQL rendering for one fleet's label selector,
range/step arithmetic, Prometheus range-result parsing, downsampling and the
in-memory replica history the dashboard samples from its `FleetStateSource`.
Queries follow the gateway metrics contract (``wsfleet_*``, and the process
collector's ``process_resident_memory_bytes``).

Every line the page gets is bounded: Prometheus lines by the query step
(`step_for`), per-pod charts by `LineSpec.max_series`, sampled lines by
`downsample`.
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
Unit = Literal["count", "seconds", "ratio", "per_second", "replicas", "bytes"]

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
    ``"<name> <label value>"``; at most `max_series` of them (the highest
    peaks: a leaking or crowded pod is the one to see).
    """

    name: str
    promql: str
    split_by: str | None = None
    max_series: int = 12


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
    #: Mark anomalies of these signals on this chart (``"*"``: every signal).
    anomalies: tuple[str, ...] = ()


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
        anomalies=("*",),
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
        anomalies=("SwitchLatency",),
    ),
    ChartSpec(
        "delivery_latency",
        "Message delivery latency",
        "seconds",
        (
            LineSpec("p95", _quantile(0.95, "wsfleet_message_delivery_seconds")),
            LineSpec("p99", _quantile(0.99, "wsfleet_message_delivery_seconds")),
        ),
        anomalies=("DeliveryLatency",),
    ),
    ChartSpec(
        "memory",
        "Memory (RSS) per pod",
        "bytes",
        (LineSpec("", "sum by (pod) (process_resident_memory_bytes{SEL})", split_by="pod"),),
        markers=True,
        anomalies=("MemoryLeak",),
    ),
    ChartSpec(
        "memory_per_connection",
        "Memory per connection",
        "bytes",
        (
            LineSpec(
                "",
                "sum by (pod) (process_resident_memory_bytes{SEL})"
                " / sum by (pod) (wsfleet_connections{SEL} > 0)",
                split_by="pod",
            ),
        ),
        anomalies=("MemoryLeak",),
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


BandPoint = tuple[float, float, float]


def band_json(name: str, points: Sequence[BandPoint]) -> dict[str, Any]:
    """A shaded band: ``points`` are ``[t, low, high]``; ``last`` is the last high."""
    last = points[-1][2] if points else None
    return {"name": name, "kind": "band", "points": [list(p) for p in points], "last": last}


def _peak(series: RangeSeries) -> float:
    return max((v for _, v in series.points if v is not None), default=-math.inf)


def lines_from_result(spec: LineSpec, series: Sequence[RangeSeries]) -> list[dict[str, Any]]:
    """Name the result series of one `LineSpec` and turn them into JSON lines.

    A split line keeps its `max_series` highest-peaking series, in label order.
    """
    if spec.split_by is None:
        if not series:
            return [line_json(spec.name, [])]
        return [line_json(spec.name, series[0].points)]
    label = spec.split_by
    kept = sorted(series, key=_peak, reverse=True)[: max(spec.max_series, 0)]
    out = []
    for s in sorted(kept, key=lambda s: s.labels.get(label, "")):
        value = s.labels.get(label, "?")
        out.append(line_json(f"{spec.name} {value}".strip(), s.points))
    return out


def omitted_series(spec: LineSpec, series: Sequence[RangeSeries]) -> int:
    """How many series of a split line `lines_from_result` leaves out."""
    if spec.split_by is None:
        return 0
    return max(0, len(series) - max(spec.max_series, 0))


def downsample(points: Sequence[Point], max_points: int = TARGET_POINTS) -> list[Point]:
    """At most `max_points` of `points` (time-ordered) that draw the same picture.

    The span is cut into `max_points // 5` equal buckets; each keeps its first,
    last, lowest and highest value and its first gap (None), so peaks, dips
    and breaks survive and every kept point is a real sample. Shorter input is
    returned unchanged.
    """
    if len(points) <= max_points:
        return list(points)
    buckets = max(1, max_points // 5)
    t0, t1 = points[0][0], points[-1][0]
    width = (t1 - t0) / buckets
    groups: list[list[int]] = [[] for _ in range(buckets)]
    for i, (t, _) in enumerate(points):
        b = buckets - 1 if width <= 0 else min(buckets - 1, int((t - t0) / width))
        groups[b].append(i)
    keep: set[int] = set()
    for idx in groups:
        if not idx:
            continue
        valued = [i for i in idx if points[i][1] is not None]
        gap = next((i for i in idx if points[i][1] is None), None)
        if gap is not None:
            keep.add(gap)
        if valued:
            keep.update((valued[0], valued[-1]))
            keep.add(min(valued, key=lambda i: points[i][1] or 0.0))
            keep.add(max(valued, key=lambda i: points[i][1] or 0.0))
    return [points[i] for i in sorted(keep)]


def downsample_band(
    points: Sequence[BandPoint], max_points: int = TARGET_POINTS
) -> list[BandPoint]:
    """At most `max_points` band points, evenly picked (first and last kept)."""
    n = len(points)
    if n <= max_points:
        return list(points)
    if max_points <= 1:
        return [points[-1]]
    picks = {round(i * (n - 1) / (max_points - 1)) for i in range(max_points)}
    return [points[i] for i in sorted(picks)]


def forecast_at(points: Sequence[tuple[float, float]], t: float) -> float | None:
    """The forecast at `t`, linearly interpolated; None outside the points' span."""
    if not points or t < points[0][0] or t > points[-1][0]:
        return None
    for (t0, v0), (t1, v1) in pairwise(points):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1]


_Row = tuple[float, int | None, int | None, int | None, float | None, float | None]


@dataclass
class ReplicaHistory:
    """Bounded per-fleet samples from the source: desired/current/ready replicas
    and what the forecast (median, upper quantile) said about that moment."""

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
        upper: float | None = None,
    ) -> None:
        buf = self._data.get(key)
        if buf is None:
            buf = self._data[key] = deque(maxlen=self.max_points)
        buf.append((t, desired, current, ready, forecast, upper))

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

    def band(self, key: tuple[str, str], start: float, end: float) -> list[BandPoint]:
        """``(t, median, upper)`` of the samples within [start, end] that had both."""
        out: list[BandPoint] = []
        for t, _, _, _, median, upper in self._data.get(key, ()):
            if start <= t <= end and median is not None and upper is not None:
                out.append((t, median, upper))
        return out


def _f(value: int | None) -> float | None:
    return None if value is None else float(value)
