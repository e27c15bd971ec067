"""Run the operator's own autoscaler against the local scale target.

The decision logic is the operator's (`wsfleet_operator`): the same pure
decision function, fed by the same PromQL from our local Prometheus, with the
same anomaly watch (`spec.anomalies`: latency far above its own seasonal
expectation, connection floods, memory per connection drifting up). Here is
only the wiring and the timer loop; what a cluster would get as Events is
printed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from wsfleet_operator.spec import FleetSpec

from wsfleet.localfleet.manifest import FleetManifest
from wsfleet.localfleet.target import LocalProcessTarget

log = structlog.get_logger("wsfleet.localfleet")


class AutoscalerUnavailableError(RuntimeError):
    """The operator's autoscaler is not part of this build."""


class Autoscaling(Protocol):
    """What the loop drives: one decision per tick, then cleanup."""

    async def tick(self, now: float) -> Any: ...

    async def close(self) -> None: ...


class _OperatorAutoscaling:
    """Adapts `wsfleet_operator`'s Autoscaler (sync or async tick) to `Autoscaling`."""

    def __init__(self, autoscaler: Any, closers: list[Any]) -> None:
        self.autoscaler = autoscaler
        self.closers = closers

    async def tick(self, now: float) -> Any:
        result = self.autoscaler.tick(now)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def close(self) -> None:
        for closer in self.closers:
            result = closer()
            if inspect.isawaitable(result):
                await result


def build_autoscaler(
    spec: FleetSpec, target: LocalProcessTarget, manifest: FleetManifest
) -> Autoscaling:
    """The operator's Autoscaler reading our Prometheus and scaling `target`."""
    try:
        from wsfleet_operator.anomaly.watch import AnomalyWatch
        from wsfleet_operator.autoscaler import Autoscaler
        from wsfleet_operator.prometheus import PrometheusClient, PrometheusMetricsSource
    except ImportError as exc:  # pragma: no cover - the operator ships in this package
        raise AutoscalerUnavailableError(f"the operator's autoscaler is missing: {exc}") from exc
    client = PrometheusClient(spec.prometheus.url, spec.prometheus.timeout_seconds)
    source = PrometheusMetricsSource(
        client, lambda: spec, manifest.namespace, manifest.name, pod_label="pod"
    )
    forecaster = None
    if spec.forecast.enabled:
        # the operator's own seasonal forecaster, fed from our Prometheus (a fresh local
        # Prometheus has little history: the floor stays off until a fit is ready)
        from wsfleet_operator.forecast.provider import default_forecaster_factory

        forecaster = default_forecaster_factory(
            manifest.namespace, manifest.name, lambda: spec, client
        )
    watch = AnomalyWatch(client, lambda: spec, manifest.namespace, manifest.name)
    autoscaler = Autoscaler(
        spec,
        target,
        source,
        forecaster,
        name=manifest.name,
        namespace=manifest.namespace,
        anomalies=watch,
    )
    return _OperatorAutoscaling(autoscaler, [client.close])


ANOMALY_REASONS = ("AnomalyDetected", "AnomalyResolved")


def anomaly_lines(result: Any) -> list[str]:
    """A line per anomaly raised or resolved by this tick (its Events in a cluster)."""
    return [
        f"anomaly: {event.message}"
        for event in getattr(result, "events", None) or ()
        if getattr(event, "reason", None) in ANOMALY_REASONS
    ]


def describe(result: Any) -> tuple[tuple[object, ...], str] | None:
    """(what changed, a line for people) from a `TickResult`; None without a decision."""
    decision = getattr(result, "decision", None)
    if decision is None:
        return None
    mode = getattr(decision.mode, "value", decision.mode)
    key = (decision.desired, mode)
    return key, f"autoscaler: {decision.desired} replicas ({mode}): {decision.reason}"


async def run_autoscaler(
    autoscaling: Autoscaling,
    interval_s: float,
    notify: Callable[[str], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> None:
    """Tick every `interval_s` until cancelled; a failing tick is logged, not fatal.

    `notify` hears about every change of the desired count or mode;
    `on_result` gets every tick's result (the operator's `TickResult`).
    """
    last: tuple[object, ...] | None = None
    while True:
        started = time.monotonic()
        try:
            result = await autoscaling.tick(time.time())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("autoscale_tick_failed", error=str(exc))
        else:
            if on_result is not None:
                on_result(result)
            for line in anomaly_lines(result):
                log.warning("anomaly", line=line)
                if notify is not None:
                    notify(line)
            described = describe(result)
            if described is not None and described[0] != last:
                last = described[0]
                log.info("autoscale_decision", line=described[1])
                if notify is not None:
                    notify(described[1])
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
