"""One autoscaling tick: observe, decide, (maybe) apply, report.

Usable without kopf: the local fleet (`wsfleet up`) builds
`Autoscaler(spec, target, metrics_source, forecaster)` and calls
`await autoscaler.tick()` on its own timer; the operator does the same from a
kopf timer and writes `TickResult.status` into the CR's status and
`TickResult.events` as Kubernetes Events.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from wsfleet_operator import opmetrics
from wsfleet_operator.anomaly.track import (
    AnomalyTracker,
    Transitions,
    anomaly_condition,
    event_message,
)
from wsfleet_operator.prometheus import MetricsSource
from wsfleet_operator.scaling import Decision, History, Metrics, ScaleChange, decide
from wsfleet_operator.spec import (
    HISTORY_LIMIT,
    AnomalySignal,
    Condition,
    ConditionType,
    FleetSpec,
    FleetStatus,
    Mode,
    ScalingEvent,
)
from wsfleet_operator.status import (
    decision_status,
    get_condition,
    observed_status,
    set_condition,
    status_merge_patch,
)
from wsfleet_operator.targets import ReadyReplicas, RecordedTarget, ScaleTarget, deletion_costs

log = structlog.get_logger("wsfleet.operator.autoscaler")


class ForecastProvider(Protocol):
    """A replica floor from the forecast (None: no opinion). May be sync or async."""

    def floor(self, now: float) -> float | Awaitable[float | None] | None: ...


class PrewarmOutcome(Protocol):
    """What a pre-warm attempt reports."""

    @property
    def ok(self) -> bool: ...

    def message(self) -> str: ...


class Prewarmer(Protocol):
    """Warms the gateways' caches once per predicted peak (`prewarm.CachePrewarmer`)."""

    prewarmed_for: float | None

    async def maybe(
        self, spec: FleetSpec, now: float, peak_at: float | None
    ) -> PrewarmOutcome | None: ...


class AnomalyDetector(Protocol):
    """Watches the fleet for anomalies beside scaling (`anomaly.watch.AnomalyWatch`)."""

    tracker: AnomalyTracker

    async def check(self, now: float) -> Transitions | None: ...


@dataclass(frozen=True)
class FleetEvent:
    """A Kubernetes Event to post about the fleet."""

    reason: str
    message: str
    type: str = "Normal"


@dataclass
class TickResult:
    decision: Decision | None
    applied: bool
    status: FleetStatus
    events: list[FleetEvent] = field(default_factory=list)
    error: str | None = None

    def status_patch(self) -> dict[str, Any]:
        """The status as a merge-patch body (wire names; unset fields as null)."""
        return status_merge_patch(self.status)


class Autoscaler:
    """Decides and applies the replica count of one fleet, one `tick()` at a time."""

    def __init__(
        self,
        spec: FleetSpec,
        target: ScaleTarget,
        metrics_source: MetricsSource,
        forecaster: ForecastProvider | None = None,
        *,
        name: str = "fleet",
        namespace: str = "",
        clock: Callable[[], float] = time.time,
        prewarmer: Prewarmer | None = None,
        anomalies: AnomalyDetector | None = None,
    ) -> None:
        self.spec = spec
        self.target = target
        self.metrics_source = metrics_source
        self.forecaster = forecaster
        self.name = name
        self.namespace = namespace
        self.clock = clock
        self.prewarmer = prewarmer
        """Pre-warms gateway caches before the forecaster's next peak (forecast only)."""
        self.anomalies = anomalies
        """Raises condition `Anomaly`, its Events and metrics (`spec.anomalies`)."""
        self.history: History | None = None
        self.conditions: list[Condition] = []
        self.events: list[ScalingEvent] = []
        self.last_decision: Decision | None = None
        self._last_dry_run_desired: int | None = None
        self._last_at = 0.0

    def update_spec(self, spec: FleetSpec) -> None:
        self.spec = spec

    def _cond(
        self, type_: ConditionType, ok: bool | None, reason: str, message: str, now: float
    ) -> bool:
        self.conditions, changed = set_condition(self.conditions, type_, ok, reason, message, now)
        return changed

    async def _forecast_floor(self, now: float) -> float | None:
        if self.forecaster is None or not self.spec.forecast.enabled:
            return None
        try:
            value = self.forecaster.floor(now)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # a broken forecast must not stop scaling
            log.warning("autoscaler.forecast_failed", fleet=self.name, error=repr(exc))
            return None
        if value is None or not math.isfinite(value):
            return None
        return float(value)

    def _forecast_status(self) -> dict[str, Any] | None:
        report = getattr(self.forecaster, "status", None)
        if report is None or not self.spec.forecast.enabled:
            return None
        try:
            result: dict[str, Any] = report(self._last_at or self.clock())
        except Exception as exc:
            log.warning("autoscaler.forecast_status_failed", fleet=self.name, error=repr(exc))
            return None
        labels = {"namespace": self.namespace, "fleet": self.name}
        for key, gauge in (
            ("floorConnections", opmetrics.FORECAST_CONNECTIONS),
            ("accuracy", opmetrics.FORECAST_ACCURACY),
            ("threshold", opmetrics.FORECAST_ACCURACY_THRESHOLD),
        ):
            value = result.get(key)
            if isinstance(value, int | float):
                gauge.labels(**labels).set(value)
        return result

    async def _observe(self, now: float) -> Metrics | None:
        try:
            return await self.metrics_source.observe(now)
        except Exception as exc:  # metrics outage = missing data, never a crash
            log.warning("autoscaler.observe_failed", fleet=self.name, error=repr(exc))
            return None

    def _forecast_condition(
        self, report: dict[str, Any] | None, now: float, events: list[FleetEvent]
    ) -> None:
        """ForecastAccurate from the forecaster's backtest (absent when forecasting is off)."""
        if report is None:
            self.conditions = [
                c for c in self.conditions if c.type is not ConditionType.FORECAST_ACCURATE
            ]
            return
        accuracy, threshold = report.get("accuracy"), report.get("threshold")
        weight = report.get("weight")
        weight_text = f"{weight:.2f}" if isinstance(weight, int | float) else "unknown"
        if not isinstance(accuracy, int | float) or not isinstance(threshold, int | float):
            self._cond(
                ConditionType.FORECAST_ACCURATE,
                None,
                "NoBacktest",
                f"no backtest yet (history too short); forecast weight {weight_text}",
                now,
            )
            return
        before = get_condition(self.conditions, ConditionType.FORECAST_ACCURATE)
        low = bool(report.get("degraded")) or accuracy < threshold
        if low:
            message = (
                f"backtest accuracy {accuracy:.2f} is below the threshold {threshold:.2f}: "
                f"forecast weight lowered to {weight_text}"
            )
            if self._cond(ConditionType.FORECAST_ACCURATE, False, "LowAccuracy", message, now):
                events.append(FleetEvent("ForecastInaccurate", message, "Warning"))
        else:
            message = f"backtest accuracy {accuracy:.2f} >= threshold {threshold:.2f}"
            self._cond(ConditionType.FORECAST_ACCURATE, True, "AccuracyOk", message, now)
            if before is not None and before.status == "False":
                events.append(FleetEvent("ForecastAccurate", message))

    async def _prewarm(
        self, forecast: dict[str, Any] | None, now: float, events: list[FleetEvent]
    ) -> None:
        """Once per predicted peak, `forecast.prewarmBeforeSeconds` ahead of it."""
        if self.prewarmer is None or forecast is None:
            return
        peak = forecast.get("nextPeakAt")
        peak_at = float(peak) if isinstance(peak, int | float) else None
        report = await self.prewarmer.maybe(self.spec, now, peak_at)
        if report is not None:
            if report.ok:
                events.append(FleetEvent("CachePrewarmed", report.message()))
            else:
                events.append(FleetEvent("CachePrewarmFailed", report.message(), "Warning"))
        forecast["prewarmedFor"] = self.prewarmer.prewarmed_for

    def _auth_condition(self, now: float, events: list[FleetEvent]) -> None:
        """AuthEnabled: False (and a Warning Event each time it turns so) with auth.disabled."""
        auth = self.spec.auth
        if auth is None:  # the local fleet configures its gateways' auth itself
            self.conditions = [
                c for c in self.conditions if c.type is not ConditionType.AUTH_ENABLED
            ]
            return
        if auth.disabled:
            message = (
                "AUTHENTICATION IS DISABLED (spec.auth.disabled): anyone can connect and join "
                "any channel; development only"
            )
            if self._cond(ConditionType.AUTH_ENABLED, False, "AuthDisabled", message, now):
                events.append(FleetEvent("AuthDisabled", message, "Warning"))
                log.warning("autoscaler.auth_disabled", fleet=self.name, namespace=self.namespace)
            return
        how = "HS256" if auth.jwt_secret_ref is not None else "RS256"
        self._cond(ConditionType.AUTH_ENABLED, True, how, f"JWT auth ({how}) from a Secret", now)

    async def _anomaly_step(
        self, metrics: Metrics | None, now: float, events: list[FleetEvent]
    ) -> None:
        """Condition `Anomaly`, its Events and metrics; checked only with usable metrics
        (Prometheus down or no gateway scraped: nothing raised, nothing resolved)."""
        watch = self.anomalies
        labels = {"namespace": self.namespace, "fleet": self.name}
        if watch is None or not self.spec.anomalies.enabled:
            self.conditions = [c for c in self.conditions if c.type is not ConditionType.ANOMALY]
            if watch is not None:
                for signal in AnomalySignal:
                    opmetrics.ANOMALY.labels(**labels, signal=signal.value).set(0)
            return
        report: Transitions | None = None
        if metrics is not None and metrics.usable:
            try:
                report = await watch.check(now)
            except Exception as exc:  # a broken detector must not stop scaling
                log.warning("autoscaler.anomaly_check_failed", fleet=self.name, error=repr(exc))
        if report is not None:
            for record in report.raised:
                events.append(FleetEvent("AnomalyDetected", event_message(record), "Warning"))
                opmetrics.ANOMALIES.labels(**labels, signal=record.signal.value).inc()
                log.warning(
                    "autoscaler.anomaly",
                    namespace=self.namespace,
                    fleet=self.name,
                    signal=record.signal.value,
                    subject=record.subject,
                    size=record.size,
                    message=record.message,
                )
            for record in report.resolved:
                events.append(FleetEvent("AnomalyResolved", event_message(record, True)))
                log.info(
                    "autoscaler.anomaly_resolved",
                    fleet=self.name,
                    signal=record.signal.value,
                    subject=record.subject,
                )
            for signal, score in report.scores.items():
                opmetrics.ANOMALY_SCORE.labels(**labels, signal=signal.value).set(score)
        holding = watch.tracker.open()
        for signal in AnomalySignal:
            on = any(r.signal is signal for r in holding)
            opmetrics.ANOMALY.labels(**labels, signal=signal.value).set(1 if on else 0)
        ok, reason, message = anomaly_condition(holding)
        self._cond(ConditionType.ANOMALY, ok, reason, message, now)

    def _status(
        self,
        current: int,
        ready: int | None,
        desired: int | None,
        forecast: dict[str, Any] | None = None,
    ) -> FleetStatus:
        d = self.last_decision
        m = d.metrics_used if d is not None else None
        mode = None
        if d is not None:
            mode = Mode.DRY_RUN if self.spec.dry_run else d.mode
        return FleetStatus(
            desired_replicas=desired,
            current_replicas=current,
            ready_replicas=ready,
            connections=m.connections if m is not None else None,
            p95_switch_ms=(
                round(m.switch_latency_p95_s * 1000.0, 3)
                if m is not None and m.switch_latency_p95_s is not None
                else None
            ),
            mode=mode,
            observed=observed_status(d) if d is not None else None,
            last_decision=(
                decision_status(d, self._last_at, self.spec.dry_run) if d is not None else None
            ),
            conditions=list(self.conditions),
            history=list(self.events[-HISTORY_LIMIT:]),
            forecast=forecast,
            anomalies=(
                list(self.anomalies.tracker.history)
                if self.anomalies is not None and self.spec.anomalies.enabled
                else []
            ),
        )

    def invalid(self, errors: list[str], now: float | None = None) -> TickResult:
        """Report a spec the schema could not reject (min > max...): no decision, no crash."""
        now = self.clock() if now is None else now
        message = "; ".join(errors)
        changed = self._cond(ConditionType.DEGRADED, True, "InvalidSpec", message, now)
        self._cond(ConditionType.READY, False, "InvalidSpec", message, now)
        events = [FleetEvent("InvalidSpec", message, "Warning")] if changed else []
        status = FleetStatus(mode=Mode.INVALID, conditions=list(self.conditions))
        return TickResult(None, False, status, events, error=message)

    async def tick(self, now: float | None = None) -> TickResult:
        """Observe, decide, apply unless dryRun; never raises for I/O failures."""
        now = self.clock() if now is None else now
        spec = self.spec
        errors = spec.semantic_errors()
        if errors:
            return self.invalid(errors, now)
        events: list[FleetEvent] = []
        try:
            if self.history is None:
                self.history = History(started_at=now, changes=await self._recorded_changes())
            current = await self._current(events)
        except Exception as exc:
            msg = f"scale target unavailable: {exc}"
            if self._cond(ConditionType.DEGRADED, True, "TargetUnavailable", msg, now):
                events.append(FleetEvent("TargetUnavailable", msg, "Warning"))
            status = self._status(0, None, None, self._forecast_status())
            return TickResult(None, False, status, events, error=msg)

        metrics = await self._observe(now)
        floor = await self._forecast_floor(now)
        decision = decide(spec, metrics, floor, current, self.history, now)
        self.last_decision = decision
        self._last_at = now
        if_applied = self.history.record(decision, now, True, metrics)
        applied, error = await self._apply(decision, events, if_applied.changes)
        self.history = if_applied if applied else self.history.record(decision, now, False, metrics)
        dry_news = spec.dry_run and decision.desired != self._last_dry_run_desired
        if (applied or dry_news) and decision.desired != current:
            self.events.append(
                ScalingEvent(
                    at=round(now, 3),
                    from_replicas=current,
                    to_replicas=decision.desired,
                    reason=decision.reason[:256],
                    dry_run=spec.dry_run,
                )
            )
            self.events = self.events[-HISTORY_LIMIT:]
            if spec.dry_run:
                events.append(FleetEvent("DryRunScale", f"would scale {decision.reason}"))
        if spec.dry_run:
            self._last_dry_run_desired = decision.desired
        self._conditions(decision, applied, error, now, events)
        self._metrics(decision, applied, current)
        ready = await self._ready()
        if ready is not None:
            want = min(decision.desired, spec.replicas.min)
            ok = ready >= max(want, 1)
            self._cond(
                ConditionType.READY,
                ok,
                "PodsReady" if ok else "PodsNotReady",
                f"{ready} ready of {current}",
                now,
            )
        forecast = self._forecast_status()
        self._forecast_condition(forecast, now, events)
        await self._prewarm(forecast, now, events)
        self._auth_condition(now, events)
        await self._anomaly_step(metrics, now, events)
        running = decision.desired if applied else current
        return TickResult(
            decision,
            applied,
            self._status(running, ready, decision.desired, forecast),
            events,
            error,
        )

    async def _recorded_changes(self) -> tuple[ScaleChange, ...]:
        """The changes a previous run recorded beside the count (none for other targets).

        Also completes the visible history (`status.history`, restored by the caller into
        `events`) with a change made just before a restart whose status write was lost.
        """
        if not isinstance(self.target, RecordedTarget):
            return ()
        changes = tuple(await self.target.recorded_changes())
        shown = {round(e.at, 3) for e in self.events}
        for change in changes:
            if round(change.at, 3) not in shown:
                self.events.append(
                    ScalingEvent(
                        at=round(change.at, 3),
                        from_replicas=change.from_replicas,
                        to_replicas=change.to_replicas,
                        reason="recorded on the Deployment by an earlier operator run",
                    )
                )
        self.events = sorted(self.events, key=lambda e: e.at)[-HISTORY_LIMIT:]
        return changes

    async def _current(self, events: list[FleetEvent]) -> int:
        """The replica count now; a hand edit of it is put back (the operator owns it)."""
        if not isinstance(self.target, RecordedTarget):
            return await self.target.current_replicas()
        actual, owned = await self.target.owned_replicas()
        if owned is None or owned == actual or self.spec.dry_run:
            return actual
        assert self.history is not None
        await self.target.set_replicas_recorded(owned, "replica drift", self.history.changes)
        message = (
            f"spec.replicas was set to {actual} by hand; put back to {owned} (the operator "
            "owns the replica count: change spec.replicas.min/max instead)"
        )
        events.append(FleetEvent("DriftRepaired", message))
        log.info("autoscaler.replica_drift_repaired", fleet=self.name, actual=actual, owned=owned)
        return owned

    async def _apply(
        self, decision: Decision, events: list[FleetEvent], changes: tuple[ScaleChange, ...]
    ) -> tuple[bool, str | None]:
        if decision.desired == decision.current or self.spec.dry_run:
            return False, None
        try:
            if decision.desired < decision.current:
                # emptiest pods first: costs before the count goes down
                costs = deletion_costs(await self.target.pod_connections())
                await self.target.set_deletion_costs(costs)
            if isinstance(self.target, RecordedTarget):
                # the change travels with the count: a restart can neither lose nor repeat it
                await self.target.set_replicas_recorded(decision.desired, decision.reason, changes)
            else:
                await self.target.set_replicas(decision.desired, decision.reason)
        except Exception as exc:
            msg = f"scaling to {decision.desired} failed: {exc}"
            log.warning("autoscaler.apply_failed", fleet=self.name, error=repr(exc))
            events.append(FleetEvent("ScalingFailed", msg, "Warning"))
            return False, msg
        verb = "ScaledUp" if decision.desired > decision.current else "ScaledDown"
        events.append(FleetEvent(verb, decision.reason))
        log.info(
            "autoscaler.scaled",
            audit=True,
            namespace=self.namespace,
            fleet=self.name,
            current=decision.current,
            desired=decision.desired,
            mode=decision.mode.value,
            reason=decision.reason,
        )
        return True, None

    def _conditions(
        self,
        d: Decision,
        applied: bool,
        error: str | None,
        now: float,
        events: list[FleetEvent],
    ) -> None:
        before = get_condition(self.conditions, ConditionType.METRICS_AVAILABLE)
        if d.metrics_available:
            self._cond(ConditionType.METRICS_AVAILABLE, True, "Observed", "metrics ok", now)
            if before is not None and before.status == "False":
                events.append(FleetEvent("MetricsAvailable", "metrics are back"))
        else:
            reason = "Stale" if d.metrics_stale else "NoData"
            if self._cond(ConditionType.METRICS_AVAILABLE, False, reason, d.reason, now):
                events.append(FleetEvent("MetricsUnavailable", d.reason, "Warning"))
        direction = {1: "ScaledUp", -1: "ScaledDown", 0: "Stable"}[d.direction]
        if self.spec.dry_run:
            self._cond(ConditionType.SCALING, False, "DryRun", d.reason, now)
        else:
            self._cond(ConditionType.SCALING, applied, direction, d.reason, now)
        by = "+".join(d.capped_by) or "NotCapped"
        if self._cond(ConditionType.CAPPED, d.capped, by, d.reason, now) and d.capped:
            events.append(FleetEvent("Capped", d.reason, "Warning"))
        degraded = error is not None or d.mode is Mode.FALLBACK
        why = "ScalingFailed" if error else ("MetricsFallback" if degraded else "AsExpected")
        self._cond(ConditionType.DEGRADED, degraded, why, error or d.reason, now)

    def _metrics(self, d: Decision, applied: bool, current: int) -> None:
        labels = {"namespace": self.namespace, "fleet": self.name}
        direction = {1: "up", -1: "down", 0: "none"}[d.direction]
        opmetrics.DECISIONS.labels(**labels, direction=direction, mode=d.mode.value).inc()
        opmetrics.DESIRED.labels(**labels).set(d.desired)
        opmetrics.CURRENT.labels(**labels).set(d.desired if applied else current)
        opmetrics.METRICS_AVAILABLE.labels(**labels).set(1 if d.metrics_available else 0)
        if applied or (self.spec.dry_run and d.direction):
            opmetrics.SCALING_ACTIONS.labels(
                **labels, direction=direction, dry_run=str(self.spec.dry_run).lower()
            ).inc()

    async def _ready(self) -> int | None:
        if not isinstance(self.target, ReadyReplicas):
            return None
        try:
            return await self.target.ready_replicas()
        except Exception:
            return None
