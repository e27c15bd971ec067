"""The replica decision: a pure function, no I/O, no clock.

`decide(spec, metrics, forecast_floor, current, history, now) -> Decision`

HPA-style, per metric: connections per pod against `targetUtilization` of
capacity (with a hysteresis band: scale down only below
`scaleDownUtilization`), p95 switch latency (up only), optional message rate
per pod; several metrics combine by taking the max. Then the forecast floor,
min/max, stabilization windows (up: min over the up window, down: max over
the down window, as the HPA does; a window not yet observed since start-up
counts as "current"), per-direction rate limits per minute, and the cost
guard. Missing metrics never lower the count: the last good values are used
for `staleAfterSeconds` (up only), then the configured fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from wsfleet_operator.spec import FallbackMode, FleetSpec, Mode, SelectPolicy

RATE_PERIOD_S = 60.0
POD_HOURS_PERIOD_S = 86400.0
MAX_RECOMMENDATIONS = 512
MAX_CHANGES = 512


@dataclass(frozen=True)
class Metrics:
    """One Prometheus observation of the fleet (None = no data for that query)."""

    observed_at: float
    connections: float | None = None
    switch_latency_p95_s: float | None = None
    message_rate: float | None = None
    draining: float | None = None

    @property
    def usable(self) -> bool:
        """True when at least one scaling metric has a value."""
        values = (self.connections, self.switch_latency_p95_s, self.message_rate)
        return any(v is not None and math.isfinite(v) for v in values)


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class ScaleChange:
    at: float
    from_replicas: int
    to_replicas: int


@dataclass(frozen=True)
class History:
    """What the decision remembers between ticks (kept by the caller)."""

    started_at: float
    recommendations: tuple[Recommendation, ...] = ()
    changes: tuple[ScaleChange, ...] = ()
    last_good: Metrics | None = None

    def record(
        self, decision: Decision, now: float, applied: bool, metrics: Metrics | None = None
    ) -> History:
        """The history after `decision` (applied or not), pruned to what is still needed."""
        recs = (*self.recommendations, Recommendation(now, decision.recommendation))
        recs = tuple(r for r in recs if now - r.at <= 86400.0)[-MAX_RECOMMENDATIONS:]
        changes = self.changes
        if applied and decision.desired != decision.current:
            changes = (*changes, ScaleChange(now, decision.current, decision.desired))
        changes = tuple(c for c in changes if now - c.at <= 7 * 86400.0)[-MAX_CHANGES:]
        last_good = metrics if metrics is not None and metrics.usable else self.last_good
        return replace(self, recommendations=recs, changes=changes, last_good=last_good)


@dataclass(frozen=True)
class Shares:
    """metrics + forecast + floor = 1 (of `desired`); cap = share of the wanted count cut."""

    metrics: float = 0.0
    forecast: float = 0.0
    floor: float = 0.0
    cap: float = 0.0


@dataclass(frozen=True)
class Decision:
    desired: int
    current: int
    recommendation: int
    """clamped recommendation before stabilization and limits (stored in history)"""
    reason: str
    mode: Mode
    shares: Shares
    capped: bool
    capped_by: tuple[str, ...] = ()
    metrics_available: bool = True
    metrics_stale: bool = False
    metrics_used: Metrics | None = None
    proposals: dict[str, int] = field(default_factory=dict)

    @property
    def direction(self) -> int:
        return (self.desired > self.current) - (self.desired < self.current)


# --------------------------------------------------------------------------- metrics


def propose_from_metrics(spec: FleetSpec, m: Metrics, current: int) -> dict[str, int]:
    """One proposal per metric with data: a replica count (`current` = hold)."""
    n = max(current, 1)
    tol = spec.behavior.tolerance
    t = spec.targets
    out: dict[str, int] = {}
    if m.connections is not None and math.isfinite(m.connections):
        load = max(m.connections, 0.0)
        target = t.connections_per_pod * t.target_utilization
        ratio = load / (n * target)
        utilization = load / (n * t.connections_per_pod)
        if ratio > 1.0 + tol or utilization < t.scale_down_utilization:
            out["connections"] = _ceil(load / target)
        else:
            out["connections"] = current
    if (
        m.switch_latency_p95_s is not None
        and math.isfinite(m.switch_latency_p95_s)
        and t.switch_latency_p95_ms is not None
    ):
        ratio = m.switch_latency_p95_s * 1000.0 / t.switch_latency_p95_ms
        if ratio > 1.0 + tol:  # latency only ever asks for more pods
            out["switchLatency"] = max(_ceil(n * ratio), current + 1)
    if (
        m.message_rate is not None
        and math.isfinite(m.message_rate)
        and t.messages_per_second_per_pod is not None
    ):
        rate = max(m.message_rate, 0.0)
        ratio = rate / (n * t.messages_per_second_per_pod)
        out["messageRate"] = (
            _ceil(rate / t.messages_per_second_per_pod) if abs(ratio - 1.0) > tol else current
        )
    return out


def _ceil(x: float) -> int:
    # guard against float noise (e.g. 2.0000000001 → 3)
    return math.ceil(round(x, 9))


# --------------------------------------------------------------------------- limits


def rate_limits(
    spec: FleetSpec, current: int, changes: tuple[ScaleChange, ...], now: float
) -> tuple[int, int]:
    """(lowest, highest) count allowed now by the per-minute policies of each direction."""
    recent = [c for c in changes if now - c.at < RATE_PERIOD_S]
    added = sum(max(c.to_replicas - c.from_replicas, 0) for c in recent)
    removed = sum(max(c.from_replicas - c.to_replicas, 0) for c in recent)

    up = spec.behavior.scale_up
    start_up = max(current - added, 0)
    by_pods = start_up + up.max_pods_per_minute
    by_pct = _ceil(start_up * (1 + up.max_percent_per_minute / 100.0))
    if up.select_policy is SelectPolicy.DISABLED:
        high = current
    elif up.select_policy is SelectPolicy.MIN:
        high = max(min(by_pods, by_pct), current)
    else:
        high = max(by_pods, by_pct, current)

    down = spec.behavior.scale_down
    start_down = current + removed
    by_pods = start_down - down.max_pods_per_minute
    by_pct = _ceil(start_down * (1 - down.max_percent_per_minute / 100.0))
    if down.select_policy is SelectPolicy.DISABLED:
        low = current
    elif down.select_policy is SelectPolicy.MIN:
        low = min(max(by_pods, by_pct), current)
    else:
        low = min(by_pods, by_pct, current)
    return max(low, 0), high


def pod_hours(changes: tuple[ScaleChange, ...], current: int, now: float, period_s: float) -> float:
    """Pod-hours used in the last `period_s`, from the change history."""
    total = 0.0
    end = now
    replicas = current
    for change in sorted(changes, key=lambda c: c.at, reverse=True):
        start = max(change.at, now - period_s)
        if start < end:
            total += replicas * (end - start)
        end = start
        replicas = change.from_replicas
        if change.at <= now - period_s:
            break
    if end > now - period_s:
        total += replicas * (end - (now - period_s))
    return total / 3600.0


def cost_limit(
    spec: FleetSpec, current: int, history: History, now: float
) -> tuple[int, str | None]:
    """Highest count the cost guard allows now, and what limits it."""
    guard = spec.cost_guard
    added = sum(
        max(c.to_replicas - c.from_replicas, 0)
        for c in history.changes
        if now - c.at < guard.window_seconds
    )
    high = current + max(guard.max_surge_per_window - added, 0)
    who: str | None = "costGuard" if high <= current else None
    if guard.pod_hours_per_day is not None:
        used = pod_hours(history.changes, current, now, POD_HOURS_PERIOD_S)
        if used >= guard.pod_hours_per_day:
            return current, "podHoursPerDay"
    return high, who


# --------------------------------------------------------------------------- decision


def decide(
    spec: FleetSpec,
    metrics: Metrics | None,
    forecast_floor: float | None,
    current: int,
    history: History,
    now: float,
) -> Decision:
    """The desired replica count and why. Pure: same inputs, same answer."""
    lo, hi = spec.replicas.min, spec.replicas.max
    notes: list[str] = []

    # 1. which metrics, and may they lower the count?
    fresh = metrics is not None and metrics.usable
    used: Metrics | None = metrics if fresh else None
    stale = False
    fallback = False
    if not fresh:
        last = history.last_good
        if last is not None and now - last.observed_at <= spec.prometheus.stale_after_seconds:
            used, stale = last, True
            notes.append(f"metrics missing: holding values from {now - last.observed_at:.0f}s ago")
        else:
            fallback = True
            notes.append("metrics missing beyond staleAfterSeconds: fallback")

    proposals = propose_from_metrics(spec, used, current) if used is not None else {}
    if fallback:
        metric_rec = current
        if (
            spec.prometheus.fallback_replicas is not None
            and spec.prometheus.fallback is FallbackMode.REPLICAS
        ):
            metric_rec = max(current, spec.prometheus.fallback_replicas)
    else:
        metric_rec = max(proposals.values()) if proposals else current
        if stale:
            metric_rec = max(metric_rec, current)
    if proposals:
        notes.append("proposals " + ", ".join(f"{k}={v}" for k, v in sorted(proposals.items())))

    floor_f = _ceil(forecast_floor) if forecast_floor is not None and forecast_floor > 0 else 0
    if floor_f > metric_rec:
        notes.append(f"forecast floor {floor_f}")
    wanted = max(metric_rec, floor_f, lo)
    recommendation = min(wanted, hi)

    # 2. out of [min, max]: corrected at once (as the HPA does)
    capped_by: list[str] = []
    if current < lo or current > hi:
        desired = min(max(current, lo), hi)
        notes.append(f"current {current} outside [{lo}, {hi}]")
        if wanted > hi:
            capped_by.append("max")
    else:
        desired = _stabilize(spec, recommendation, current, history, now)
        if desired != recommendation:
            notes.append(f"stabilized {recommendation}->{desired}")
        if fallback or stale:
            desired = max(desired, current)  # never down on missing data
        low, high = rate_limits(spec, current, history.changes, now)
        cost_high, cost_who = cost_limit(spec, current, history, now)
        if wanted > hi and desired >= hi:
            capped_by.append("max")
        if desired > high:
            desired = high
            capped_by.append("rateLimit")
        if desired > cost_high:
            desired = cost_high
            capped_by.append(cost_who or "costGuard")
        desired = min(max(desired, low, lo), hi)

    capped = bool(capped_by)
    shares = _shares(desired, metric_rec, floor_f, wanted, capped)
    mode = _mode(fallback, stale, capped, shares, desired, current, recommendation)
    if capped:
        notes.append("capped by " + "+".join(capped_by))
    reason = f"{current}->{desired}: " + "; ".join(notes) if notes else f"{current}->{desired}"
    return Decision(
        desired=desired,
        current=current,
        recommendation=recommendation,
        reason=reason,
        mode=mode,
        shares=shares,
        capped=capped,
        capped_by=tuple(capped_by),
        metrics_available=fresh,
        metrics_stale=stale,
        metrics_used=used,
        proposals=proposals,
    )


def _stabilize(spec: FleetSpec, rec: int, current: int, history: History, now: float) -> int:
    up_w = spec.behavior.scale_up.stabilization_window_seconds
    down_w = spec.behavior.scale_down.stabilization_window_seconds
    ups = [rec, *(r.replicas for r in history.recommendations if now - r.at < up_w)]
    downs = [rec, *(r.replicas for r in history.recommendations if now - r.at < down_w)]
    if now - history.started_at < down_w:
        downs.append(current)  # the unseen part of the window counts as "no change"
    up_rec, down_rec = min(ups), max(downs)
    out = current
    if out < up_rec:
        out = up_rec
    if out > down_rec:
        out = down_rec
    return out


def _shares(desired: int, metric_rec: int, floor_f: int, wanted: int, capped: bool) -> Shares:
    if desired <= 0:
        return Shares()
    from_metrics = min(metric_rec, desired)
    from_forecast = max(min(floor_f, desired) - from_metrics, 0)
    from_floor = desired - from_metrics - from_forecast
    cap = (wanted - desired) / wanted if capped and wanted > desired else 0.0
    return Shares(
        metrics=from_metrics / desired,
        forecast=from_forecast / desired,
        floor=from_floor / desired,
        cap=cap,
    )


def _mode(
    fallback: bool,
    stale: bool,
    capped: bool,
    shares: Shares,
    desired: int,
    current: int,
    recommendation: int,
) -> Mode:
    if fallback:
        return Mode.FALLBACK
    if capped:
        return Mode.CAPPED
    if stale or (desired == current and recommendation != current):
        return Mode.HOLD
    if shares.forecast > 0:
        return Mode.FORECAST
    if shares.floor > 0:
        return Mode.FLOOR
    return Mode.METRICS
