"""The Prometheus edge of anomaly detection: queries in, findings out, once per tick.

`AnomalyWatch.check(now)` asks the fleet's Prometheus (the operator's one client,
`prometheus.PrometheusClient`) for what each detector of `detect.py` needs, with the
PromQL of `spec.anomalies.queries`, and hands the findings to its `AnomalyTracker`.
All queries of a check run concurrently. The latency expectations are refitted every
`latency.refitSeconds` from `latency.historySeconds` of history (in a worker thread);
the memory trends are re-read every `leak.stepSeconds`. A query that fails leaves its
signal unchecked (nothing raised, nothing resolved); a query that succeeds with no
data is a check that found nothing (no switches: no latency anomaly).
"""

from __future__ import annotations

import asyncio
import math
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from wsfleet_operator.anomaly.detect import (
    ConnectRate,
    Finding,
    LatencyBaseline,
    detect_flood,
    detect_latency,
    detect_leak,
    fit_latency_baseline,
)
from wsfleet_operator.anomaly.track import AnomalyTracker, Transitions
from wsfleet_operator.forecast.provider import prometheus_fetch
from wsfleet_operator.prometheus import (
    PrometheusClient,
    PrometheusError,
    Series,
    render_query,
    single_value,
)
from wsfleet_operator.spec import AnomalyRecord, AnomalySignal, FleetSpec

log = structlog.get_logger("wsfleet.operator.anomaly")

MAX_POINTS = 10_000
"""Points per series of one range query (Prometheus refuses more than 11,000)."""


@dataclass
class _Check:
    checked: bool
    findings: list[Finding]


_UNCHECKED = _Check(False, [])


class AnomalyWatch:
    """The anomaly detectors of one fleet, fed from its Prometheus."""

    def __init__(
        self,
        client: PrometheusClient,
        spec_provider: Callable[[], FleetSpec],
        namespace: str,
        name: str,
        history: Iterable[AnomalyRecord] = (),
        pod_label: str = "pod",
    ) -> None:
        self.client = client
        self.spec_provider = spec_provider
        self.namespace = namespace
        self.name = name
        self.pod_label = pod_label
        self.tracker = AnomalyTracker(spec_provider().anomalies.for_seconds, history)
        self.baselines: dict[AnomalySignal, LatencyBaseline | None] = {}
        self._tried: dict[AnomalySignal, float] = {}
        self._leak: tuple[float, _Check] | None = None

    def _q(self, template: str, spec: FleetSpec, extra: dict[str, str] | None = None) -> str:
        text = string.Template(template).safe_substitute(extra or {})
        return render_query(text, spec, self.namespace, self.name)

    async def check(self, now: float) -> Transitions | None:
        """One look at every enabled signal; None when anomaly detection is off."""
        spec = self.spec_provider()
        a = spec.anomalies
        if not a.enabled:
            return None
        self.tracker.for_s = a.for_seconds
        results = await asyncio.gather(
            self._latency(AnomalySignal.SWITCH_LATENCY, a.queries.switch_latency_p95, spec, now),
            self._latency(
                AnomalySignal.DELIVERY_LATENCY, a.queries.delivery_latency_p95, spec, now
            ),
            self._flood(spec, now),
            self._leaks(spec, now),
        )
        signals = (
            AnomalySignal.SWITCH_LATENCY,
            AnomalySignal.DELIVERY_LATENCY,
            AnomalySignal.CONNECT_FLOOD,
            AnomalySignal.MEMORY_LEAK,
        )
        checked = [s for s, r in zip(signals, results, strict=True) if r.checked]
        findings = [f for r in results for f in r.findings]
        return self.tracker.update(now, findings, checked)

    # -- latency -------------------------------------------------------------
    async def _baseline(
        self, signal: AnomalySignal, promql: str, spec: FleetSpec, now: float
    ) -> LatencyBaseline | None:
        """The latency's expectation, refitted when due (None: not enough history yet)."""
        cfg = spec.anomalies.latency
        baseline = self.baselines.get(signal)
        tried = self._tried.get(signal)
        due = cfg.refit_seconds if baseline is not None else cfg.step_seconds
        if tried is not None and now - tried < due:
            return baseline
        self._tried[signal] = now
        step = max(float(cfg.step_seconds), cfg.history_seconds / MAX_POINTS)
        fetch = prometheus_fetch(self.client, promql)
        times, values = await fetch(now - cfg.history_seconds, now, step)
        fitted = await asyncio.to_thread(
            fit_latency_baseline,
            times,
            values,
            min_points=cfg.min_points,
            timezone=spec.forecast.timezone,
        )
        if fitted is not None or baseline is None:
            self.baselines[signal] = fitted
        log.info(
            "anomaly.latency_baseline",
            fleet=self.name,
            signal=signal.value,
            points=len(times),
            scale=None if fitted is None else round(fitted.scale, 4),
        )
        return self.baselines.get(signal)

    async def _latency(
        self, signal: AnomalySignal, template: str, spec: FleetSpec, now: float
    ) -> _Check:
        cfg = spec.anomalies.latency
        if not cfg.enabled:
            return _UNCHECKED
        promql = self._q(template, spec)
        try:
            baseline = await self._baseline(signal, promql, spec, now)
            observed = single_value(await self.client.query(promql, at=now))
        except PrometheusError as exc:
            log.warning(
                "anomaly.query_failed", fleet=self.name, signal=signal.value, error=str(exc)
            )
            return _UNCHECKED
        finding = detect_latency(
            signal,
            baseline,
            now,
            observed,
            z_threshold=cfg.z_threshold,
            min_excess_s=cfg.min_excess_seconds,
            active=self.tracker.is_active(signal),
        )
        return _Check(True, [] if finding is None else [finding])

    # -- floods --------------------------------------------------------------
    async def _flood(self, spec: FleetSpec, now: float) -> _Check:
        cfg = spec.anomalies.flood
        if not cfg.enabled:
            return _UNCHECKED
        q = spec.anomalies.queries
        window = {
            "baselineWindow": f"{cfg.baseline_seconds}s",
            "baselineStep": f"{max(cfg.baseline_seconds // 60, 1)}s",
        }
        templates = (q.connects_per_minute, q.top_user_connects, q.top_ip_connects)
        try:
            total, user, ip, base = await asyncio.gather(
                *(self.client.query(self._q(t, spec), at=now) for t in templates),
                self.client.query(self._q(q.connects_baseline, spec, window), at=now),
            )
        except PrometheusError as exc:
            log.warning(
                "anomaly.query_failed", fleet=self.name, signal="ConnectFlood", error=str(exc)
            )
            return _UNCHECKED
        per_minute = single_value(total)
        if per_minute is None:
            return _Check(True, [])
        rate = ConnectRate(per_minute, single_value(user), single_value(ip), single_value(base))
        finding = detect_flood(
            rate,
            min_per_minute=cfg.min_connects_per_minute,
            burst_factor=cfg.burst_factor,
            top_share=cfg.top_share,
            count_ips=cfg.count_client_ips,
            active=self.tracker.is_active(AnomalySignal.CONNECT_FLOOD),
        )
        return _Check(True, [] if finding is None else [finding])

    # -- leaks ---------------------------------------------------------------
    def _per_pod(self, series: list[Series]) -> dict[str, dict[float, float]]:
        out: dict[str, dict[float, float]] = {}
        for s in series:
            pod = s.labels.get(self.pod_label)
            if pod:
                out.setdefault(pod, {}).update((t, v) for t, v in s.points if math.isfinite(v))
        return out

    async def _leaks(self, spec: FleetSpec, now: float) -> _Check:
        cfg = spec.anomalies.leak
        if not cfg.enabled:
            return _UNCHECKED
        if self._leak is not None and now - self._leak[0] < cfg.step_seconds:
            return self._leak[1]
        q = spec.anomalies.queries
        step = max(float(cfg.step_seconds), cfg.window_seconds / MAX_POINTS)
        start = now - cfg.window_seconds
        try:
            memory, conns = await asyncio.gather(
                self.client.query_range(self._q(q.pod_memory, spec), start, now, step),
                self.client.query_range(self._q(q.pod_connections, spec), start, now, step),
            )
        except PrometheusError as exc:
            log.warning(
                "anomaly.query_failed", fleet=self.name, signal="MemoryLeak", error=str(exc)
            )
            return _UNCHECKED
        try:
            cache = self._per_pod(
                await self.client.query_range(self._q(q.pod_cache_bytes, spec), start, now, step)
            )
        except PrometheusError:
            cache = {}  # optional: without it, RSS alone
        rss, connections = self._per_pod(memory), self._per_pod(conns)
        active = self.tracker.active_subjects(AnomalySignal.MEMORY_LEAK)
        findings: list[Finding] = []
        for pod in sorted(rss):
            times = sorted(t for t in rss[pod] if t in connections.get(pod, {}))
            found = detect_leak(
                pod,
                times,
                [rss[pod][t] for t in times],
                [connections[pod][t] for t in times],
                [cache.get(pod, {}).get(t, 0.0) for t in times],
                window_s=cfg.window_seconds,
                min_growth_bytes=cfg.min_growth_bytes,
                min_growth_ratio=cfg.min_growth_ratio,
                active=pod in active,
            )
            if found is not None:
                findings.append(found)
        result = _Check(True, findings)
        self._leak = (now, result)
        return result
