"""The anomaly detectors: pure functions of what Prometheus said (no I/O, no clock).

Each returns a `Finding` about its signal now (None: no data to judge), `anomalous` or
not, with its `closeness`: the smallest ratio of a condition to its raising threshold
(1 or more: every condition holds), what the operator's score metric shows and what
says how near a normal day came:

- `detect_latency`: a p95 latency far above its own seasonal expectation. The
  expectation is the forecast's seasonal model (`forecast/model.py`, flat priors)
  fitted to the latency's history in log space; its size is a **robust z-score**, the
  log residual over 1.4826 x the median absolute deviation of the model's residuals on
  held-out history (the last quarter, at most a day, predicted by a fit without it:
  in-sample residuals of a per-weekday profile are too small). It must also exceed the
  expectation by `min_excess_s`: a 1 ms switch becoming 3 ms is a large z and no
  incident.
- `detect_flood`: connection attempts per minute at `min_per_minute` or more, a
  `burst_factor` above their recent median, with `top_share` or more of them from each
  pod's top user or top address (the gateways' `wsfleet_connects_*` gauges).
- `detect_leak`: per pod, RSS (less the L1 cache) regressed on the pod's connections,
  their high-water mark and time; the time slope is memory its connections do not
  explain.
  A leak grows by `min_growth_bytes` and `min_growth_ratio` of the RSS over the window,
  with a t-statistic of `MIN_T` or more (once raised, by `HOLD` of `min_growth_bytes`).

While an anomaly is already raised, its thresholds are `HOLD` of the raising ones (and
a flood no longer needs to be a burst: its own minutes are in the baseline by then),
so a signal hovering at the threshold does not flap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsfleet_operator.forecast.model import SeasonalModel, fit_model
from wsfleet_operator.forecast.settings import Priors
from wsfleet_operator.forecast.time import DAY_S, FloatArray
from wsfleet_operator.spec import AnomalySignal

HOLD = 0.75
"""An active anomaly holds until its size falls below this share of its threshold."""
MIN_SCALE = 0.05
"""Floor of the latency's robust sigma in log space (5 %): histogram buckets quantize."""
MIN_T = 4.0
"""t-statistic of the leak's time slope needed (RSS jitter is no trend)."""
MIN_COVERAGE = 0.75
"""Share of the leak window a pod's samples must span (a pod starting up is no leak)."""
FLAT = Priors(month_multipliers={}, peak_hours=(), peak_factor=1.0)
"""No prior belief about the latency's rhythm: the data speaks."""
MIB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Finding:
    """What a detector says about one signal now."""

    signal: AnomalySignal
    subject: str
    """`fleet`, or the pod it is about"""
    size: float
    threshold: float
    """the size at which it is raised"""
    unit: str
    message: str
    anomalous: bool = True
    closeness: float = math.inf
    """min over the conditions of value / raising threshold (>= 1: all of them hold)"""

    @property
    def key(self) -> tuple[AnomalySignal, str]:
        return (self.signal, self.subject)


def _ratio(value: float, threshold: float) -> float:
    return max(value, 0.0) / threshold if threshold > 0 else math.inf


def _robust_sigma(residuals: FloatArray) -> float:
    if residuals.size == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(residuals - np.median(residuals))))


def _positive(
    t: Sequence[float] | FloatArray, v: Sequence[float] | FloatArray
) -> tuple[FloatArray, FloatArray]:
    ta = np.asarray(t, dtype=np.float64)
    va = np.asarray(v, dtype=np.float64)
    ok = np.isfinite(ta) & np.isfinite(va) & (va > 0)
    order = np.argsort(ta[ok], kind="stable")
    return ta[ok][order], va[ok][order]


# --------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class LatencyBaseline:
    """A latency's seasonal expectation and the spread of its residuals (log space)."""

    model: SeasonalModel
    center: float
    """median in-sample log residual"""
    scale: float
    """robust sigma of the residuals (held-out ones when there were enough)"""
    points: int
    fitted_through: float

    def expected(self, t: float) -> float:
        """The expected latency at `t` (seconds)."""
        return float(self.model.predict(np.asarray([t]))[0]) * math.exp(self.center)

    def z(self, t: float, value: float) -> float:
        """How many robust sigmas `value` lies above its expectation at `t`."""
        return (math.log(value) - math.log(self.expected(t))) / self.scale


def fit_latency_baseline(
    timestamps: Sequence[float] | FloatArray,
    values: Sequence[float] | FloatArray,
    *,
    min_points: int = 24,
    timezone: str = "UTC",
) -> LatencyBaseline | None:
    """Fit the expectation to a latency history (seconds); None with too few points."""
    t, v = _positive(timestamps, values)
    if t.size < min_points:
        return None
    log_v = np.log(v)
    model = fit_model(t, v, FLAT, timezone=timezone)
    if not model.ready:
        return None
    resid = log_v - np.log(model.predict(t))
    center = float(np.median(resid))
    scale = _robust_sigma(resid)
    hold_s = min(DAY_S, 0.25 * float(t[-1] - t[0]))
    train = t < t[-1] - hold_s
    half = max(min_points // 2, 3)
    if int(train.sum()) >= half and int((~train).sum()) >= half:
        early = fit_model(t[train], v[train], FLAT, timezone=timezone)
        if early.ready:
            held = log_v[~train] - np.log(early.predict(t[~train]))
            scale = max(scale, _robust_sigma(held))
    return LatencyBaseline(
        model=model,
        center=center,
        scale=max(scale, MIN_SCALE),
        points=int(t.size),
        fitted_through=float(t[-1]),
    )


def _num(x: float) -> str:
    """Three significant digits, never an exponent: 0.0123, 4.56, 78.9, 1,234."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _ms(seconds: float) -> str:
    return f"{_num(seconds * 1000.0)} ms"


LATENCY_NAMES = {
    AnomalySignal.SWITCH_LATENCY: "channel switch p95",
    AnomalySignal.DELIVERY_LATENCY: "message delivery p95",
}


def detect_latency(
    signal: AnomalySignal,
    baseline: LatencyBaseline | None,
    now: float,
    observed: float | None,
    *,
    z_threshold: float,
    min_excess_s: float,
    active: bool = False,
) -> Finding | None:
    """`observed` p95 (seconds) far above the baseline's expectation at `now`."""
    if baseline is None or observed is None or not math.isfinite(observed) or observed <= 0:
        return None
    hold = HOLD if active else 1.0
    expected = baseline.expected(now)
    z = baseline.z(now, observed)
    excess = observed - expected
    anomalous = z >= z_threshold * hold and excess >= min_excess_s * hold
    name = LATENCY_NAMES.get(signal, str(signal))
    message = (
        f"{name} {_ms(observed)}, {_num(observed / expected)}x its seasonal expectation of "
        f"{_ms(expected)} (robust z {z:.1f} >= {z_threshold:g})"
    )
    closeness = min(_ratio(z, z_threshold), _ratio(excess, min_excess_s))
    return Finding(signal, "fleet", round(z, 2), z_threshold, "z", message, anomalous, closeness)


# --------------------------------------------------------------------------- floods


@dataclass(frozen=True)
class ConnectRate:
    """The fleet's connection attempts over the last minute (the gateways' gauges)."""

    per_minute: float
    top_user_per_minute: float | None = None
    """attempts by each pod's top user, summed over the pods"""
    top_ip_per_minute: float | None = None
    baseline_per_minute: float | None = None
    """the median of `per_minute` over the baseline window (None: no history)"""


def detect_flood(
    rate: ConnectRate,
    *,
    min_per_minute: float,
    burst_factor: float,
    top_share: float,
    count_ips: bool = True,
    active: bool = False,
) -> Finding | None:
    """A concentrated burst of connection attempts."""
    hold = HOLD if active else 1.0
    total = rate.per_minute
    if not math.isfinite(total):
        return None
    total = max(total, 0.0)
    user = min(max(rate.top_user_per_minute or 0.0, 0.0) / total, 1.0) if total else 0.0
    ip = min(max(rate.top_ip_per_minute or 0.0, 0.0) / total, 1.0) if total and count_ips else 0.0
    share = max(user, ip)
    base = rate.baseline_per_minute
    burst = total / base if base is not None and base > 0 else None
    anomalous = (
        total >= min_per_minute * hold
        and share >= top_share * hold
        and (active or burst is None or burst >= burst_factor)
    )
    closeness = min(
        _ratio(total, min_per_minute),
        _ratio(share, top_share),
        math.inf if burst is None else _ratio(burst, burst_factor),
    )
    who = "its top user per pod" if user >= ip else "its top address per pod"
    versus = f" ({_num(burst)}x the recent median {base:.0f}/min)" if burst is not None else ""
    message = (
        f"{total:.0f} connection attempts/min{versus}, {share:.0%} from {who} "
        f"(user {user:.0%}, address {ip:.0%}; threshold {top_share:.0%})"
    )
    return Finding(
        AnomalySignal.CONNECT_FLOOD,
        "fleet",
        round(share, 4),
        top_share,
        "share",
        message,
        anomalous,
        closeness,
    )


# --------------------------------------------------------------------------- leaks


@dataclass(frozen=True)
class MemoryTrend:
    """RSS ~ a + b x connections + b' x their high-water mark + g x time, for one pod."""

    growth_per_s: float
    """g: bytes per second the connections do not explain"""
    t_stat: float
    median_rss: float
    mean_connections: float
    span_s: float


def memory_trend(
    timestamps: Sequence[float] | FloatArray,
    rss: Sequence[float] | FloatArray,
    connections: Sequence[float] | FloatArray,
) -> MemoryTrend | None:
    """Least squares of RSS on the connections, their running maximum and time (None:
    fewer than 6 points).

    The running maximum as well as the count: Python's allocator keeps part of what a
    peak needed, so memory that stays up after the evening's clients left is no leak.
    A regressor that does not vary (or is the count itself) is left out; collinear
    ones (connections rising steadily with time) give a wide error, hence a small t:
    the detector stays quiet when it cannot tell.
    """
    t = np.asarray(timestamps, dtype=np.float64)
    m = np.asarray(rss, dtype=np.float64)
    c = np.asarray(connections, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(m) & np.isfinite(c)
    t, m, c = t[ok], m[ok], c[ok]
    order = np.argsort(t, kind="stable")
    t, m, c = t[order], m[order], np.maximum(c[order], 0.0)
    if t.size < 6 or float(t[-1] - t[0]) <= 0:
        return None
    high = np.maximum.accumulate(c)
    columns = [np.ones_like(t)]
    if float(np.ptp(c)) > 0:
        columns.append(c - float(c.mean()))
    if float(np.ptp(high - c)) > 0:
        columns.append(high - float(high.mean()))
    columns.append(t - float(t.mean()))
    x = np.column_stack(columns)
    beta, *_ = np.linalg.lstsq(x, m, rcond=None)
    resid = m - x @ beta
    dof = t.size - x.shape[1]
    slope = float(beta[-1])
    sigma2 = float(resid @ resid) / dof if dof > 0 else 0.0
    var = sigma2 * float(np.linalg.pinv(x.T @ x)[-1, -1])
    se = math.sqrt(max(var, 0.0))
    # a perfect fit has no error: its slope is certain
    t_stat = slope / se if se > 0 else math.copysign(math.inf, slope) if slope else 0.0
    return MemoryTrend(
        growth_per_s=slope,
        t_stat=t_stat,
        median_rss=float(np.median(m)),
        mean_connections=float(np.mean(c)),
        span_s=float(t[-1] - t[0]),
    )


def detect_leak(
    pod: str,
    timestamps: Sequence[float] | FloatArray,
    rss: Sequence[float] | FloatArray,
    connections: Sequence[float] | FloatArray,
    cache_bytes: Sequence[float] | FloatArray | None = None,
    *,
    window_s: float,
    min_growth_bytes: float,
    min_growth_ratio: float,
    active: bool = False,
) -> Finding | None:
    """Memory of `pod` growing beyond what its connections (and L1 cache) explain."""
    m = np.asarray(rss, dtype=np.float64)
    if cache_bytes is not None:
        cache = np.nan_to_num(np.asarray(cache_bytes, dtype=np.float64), nan=0.0)
        if cache.shape == m.shape:
            m = m - cache
    trend = memory_trend(timestamps, m, connections)
    if trend is None or trend.span_s < MIN_COVERAGE * window_s:
        return None
    # the share of RSS gates the onset only: a leak that goes on inflates the RSS it is a
    # share of, and would end up below its own threshold
    threshold = max(min_growth_bytes, min_growth_ratio * max(trend.median_rss, 0.0))
    need = min_growth_bytes * HOLD if active else threshold
    growth = trend.growth_per_s * window_s
    anomalous = growth > 0 and growth >= need and trend.t_stat >= MIN_T
    closeness = min(_ratio(growth, threshold), _ratio(trend.t_stat, MIN_T))
    per_hour = trend.growth_per_s * 3600.0
    per_conn = ""
    if trend.mean_connections >= 1:
        kb = per_hour / trend.mean_connections / 1024.0
        per_conn = (
            f"; memory per connection +{_num(kb)} KB/h at {trend.mean_connections:.0f} connections"
        )
    message = (
        f"pod {pod}: memory its connections do not explain grows {_num(per_hour / MIB)} MiB/h "
        f"(RSS {_num(trend.median_rss / MIB)} MiB, t {trend.t_stat:.1f}){per_conn}"
    )
    return Finding(
        AnomalySignal.MEMORY_LEAK,
        pod,
        round(per_hour, 1),
        round(threshold / window_s * 3600.0, 1),
        "bytes/h",
        message,
        anomalous,
        closeness,
    )
