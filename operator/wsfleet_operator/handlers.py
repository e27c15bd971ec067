"""Thin kopf wiring: register handlers that delegate to reconcile/autoscaler.

`build_registry(config)` returns a fresh `kopf.OperatorRegistry` with:
login, startup/cleanup, create/update/resume (reconcile), a daemon per fleet
(the autoscaler tick every `behavior.intervalSeconds`), and event handlers on
the owned Deployments, Services, ConfigMaps and PodDisruptionBudgets (drift
repair, recreation). Deleting a fleet needs no handler: the owned objects
carry owner references and the API server's garbage collector removes them
(kopf's finalizer is there only to stop the fleet's daemon).

Nothing is written while nothing changes: the status is patched only when it
differs from what was last written (timestamps of an unchanged decision do
not count), and drift is computed from the watch event's body, so status
updates of the owned objects cost no API call at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
import pydantic
import structlog

from wsfleet_operator import kube
from wsfleet_operator.anomaly.watch import AnomalyWatch
from wsfleet_operator.autoscaler import Autoscaler, FleetEvent, ForecastProvider
from wsfleet_operator.kube import Connection, KubeClient
from wsfleet_operator.prewarm import kubernetes_prewarmer
from wsfleet_operator.prometheus import PrometheusClient, PrometheusMetricsSource
from wsfleet_operator.reconcile import FleetRef, is_drifted, reconcile, validate
from wsfleet_operator.resources import FLEET_LABEL, MANAGED_BY
from wsfleet_operator.scaling import Metrics
from wsfleet_operator.spec import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    AnomalyRecord,
    FleetSpec,
    ScalingEvent,
)
from wsfleet_operator.status import status_essence
from wsfleet_operator.targets import KubernetesTarget

log = structlog.get_logger("wsfleet.operator.handlers")


ForecasterFactory = Callable[
    [str, str, Callable[[], FleetSpec], PrometheusClient], ForecastProvider | None
]
"""(namespace, name, current spec, Prometheus client of the fleet) -> floor provider."""


@dataclass
class OperatorConfig:
    """How the operator connects and behaves (set by the CLI or a test)."""

    connection_info: kopf.ConnectionInfo | None = None
    """None: in-cluster service account, else KUBECONFIG / ~/.kube/config."""
    forecaster_factory: ForecasterFactory | None = None
    """Builds the forecast floor of a fleet; None: no forecast (metrics only)."""
    min_interval_s: float = 0.1
    identity: str | None = None
    """Who this operator instance is (User-Agent of its API calls; default: the host name)."""


@dataclass
class _Shared:
    """State shared by every handler of one operator run."""

    config: OperatorConfig
    client: KubeClient | None = None
    autoscalers: dict[tuple[str, str], Autoscaler] = field(default_factory=dict)
    fleets: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """(namespace, name) -> (uid, spec) of every fleet seen: drift is checked against it."""
    reconciling: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    """One lock per fleet: its reconciles never overlap. kopf serializes the handlers of
    one object, not of a fleet's several objects: a deleted Service and a Deployment
    event at once would both find the Service missing and both create it (one 409)."""

    def reporter(self, namespace: str, name: str) -> Autoscaler:
        """The fleet's autoscaler, or a report-only one while its spec is unusable."""
        key = (namespace, name)
        if key not in self.autoscalers:
            self.autoscalers[key] = _placeholder(name, namespace)
        return self.autoscalers[key]

    def kube(self) -> KubeClient:
        if self.client is None:
            raise kopf.TemporaryError("Kubernetes client not ready", delay=1)
        return self.client


def _involved(name: str, namespace: str, uid: str | None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
    }


async def _post(client: KubeClient, involved: dict[str, Any], events: list[FleetEvent]) -> None:
    for e in events:
        await client.create_event(involved, e.reason, e.message, e.type)


def build_registry(config: OperatorConfig | None = None) -> kopf.OperatorRegistry:
    """A fresh registry with every wsfleet handler."""
    registry = kopf.OperatorRegistry()
    shared = _Shared(config or OperatorConfig())

    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        # kopf logs in at start and again on 401: rotated tokens reach our client too
        info = shared.config.connection_info
        if info is None:
            info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
                settings=settings
            )
        if info is not None:
            if shared.client is None:
                shared.client = KubeClient(
                    Connection.from_kopf(info), user_agent=kube.user_agent(shared.config.identity)
                )
            else:
                await shared.client.reconnect(Connection.from_kopf(info))
        return info

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        settings.posting.level = 30  # kopf posts only warnings+; we post our own events
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if shared.client is not None:
            await shared.client.close()
            shared.client = None

    async def _reconcile(name: str, namespace: str, uid: str, spec: dict[str, Any]) -> None:
        client = shared.kube()
        ref = FleetRef(name, namespace, uid)
        lock = shared.reconciling.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            result = await reconcile(client, ref, dict(spec))
        involved = _involved(name, namespace, uid)
        if not result.valid:
            tick = shared.reporter(namespace, name).invalid(result.errors)
            await _post(client, involved, tick.events)
            await client.patch(
                kube.FLEETS, namespace, name, {"status": tick.status_patch()}, sub="status"
            )
            return  # reported, not raised: no crash loop, no retries
        events = [FleetEvent("Created", f"created {o}") for o in result.created]
        events += [FleetEvent("DriftRepaired", f"repaired {o}") for o in result.repaired]
        await _post(client, involved, events)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    async def fleet_changed(
        name: str, namespace: str | None, uid: str, spec: kopf.Spec, **_: Any
    ) -> None:
        namespace = namespace or "default"
        shared.fleets[(namespace, name)] = (uid, dict(spec))
        await _reconcile(name, namespace, uid, dict(spec))

    async def owned_changed(type: str, body: kopf.Body, namespace: str | None) -> None:
        """Drift repair: an owned object edited by hand is patched back, a deleted one made anew."""
        namespace = namespace or "default"
        meta = body.get("metadata", {})
        fleet = (meta.get("labels") or {}).get(FLEET_LABEL)
        if not fleet or type not in ("MODIFIED", "DELETED") or meta.get("deletionTimestamp"):
            return
        key = (namespace, fleet)
        known = shared.fleets.get(key)
        if type == "MODIFIED" and known is not None:
            uid, spec = known
            if not is_drifted(FleetRef(fleet, namespace, uid), spec, dict(body)):
                return  # a status update, or our own patch coming back: no call at all
        # drift or a deletion: act only for a fleet that still exists and is not going away
        # (the garbage collector deletes the owned objects of a deleted fleet: those stay
        # deleted)
        cr = await shared.kube().get(kube.FLEETS, namespace, fleet)
        if cr is None or cr.get("metadata", {}).get("deletionTimestamp"):
            shared.fleets.pop(key, None)
            return
        uid, spec = cr["metadata"].get("uid", ""), dict(cr.get("spec") or {})
        shared.fleets[key] = (uid, spec)
        if type == "MODIFIED" and not is_drifted(FleetRef(fleet, namespace, uid), spec, dict(body)):
            return
        await _reconcile(fleet, namespace, uid, spec)

    for group, version, plural in (
        ("apps", "v1", "deployments"),
        ("", "v1", "services"),
        ("", "v1", "configmaps"),
        ("policy", "v1", "poddisruptionbudgets"),
    ):
        kopf.on.event(
            group,
            version,
            plural,
            labels={"app.kubernetes.io/managed-by": MANAGED_BY},
            registry=registry,
            id=f"owned-{plural}",
        )(_owned_event(owned_changed))

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0)
    async def autoscale(
        name: str,
        namespace: str | None,
        uid: str,
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        namespace = namespace or "default"
        client = shared.kube()
        involved = _involved(name, namespace, uid)
        prom: PrometheusClient | None = None
        scaler: Autoscaler | None = None
        # what the status holds now: an unchanged status is never written again (not even
        # after an operator restart)
        written = status_essence(dict(status or {}))
        try:
            while not stopped:
                parsed, errors = validate(dict(spec))
                interval = 5.0
                if parsed is None or errors:
                    tick = shared.reporter(namespace, name).invalid(errors)
                else:
                    interval = max(parsed.behavior.interval_seconds, shared.config.min_interval_s)
                    if prom is None or prom.url != parsed.prometheus.url.rstrip("/"):
                        if prom is not None:
                            await prom.close()
                        prom = PrometheusClient(
                            parsed.prometheus.url, parsed.prometheus.timeout_seconds
                        )
                        scaler = None
                    if scaler is None:
                        previous = shared.reporter(namespace, name)
                        scaler = _autoscaler(
                            shared,
                            client,
                            prom,
                            parsed,
                            name,
                            namespace,
                            _prewarmed_for(status),
                            _anomalies(status),
                        )
                        scaler.conditions = list(previous.conditions)
                        scaler.events = _history(status)
                        shared.autoscalers[(namespace, name)] = scaler
                    scaler.update_spec(parsed)
                    tick = await scaler.tick()
                await _post(client, involved, tick.events)
                tick.status.observed_generation = meta.get("generation")
                patch = tick.status_patch()
                essence = status_essence(patch)
                if essence != written:
                    with contextlib.suppress(kube.KubeError):
                        await client.patch(
                            kube.FLEETS, namespace, name, {"status": patch}, sub="status"
                        )
                        written = essence
                await stopped.wait(interval)
        finally:
            if prom is not None:
                await prom.close()
            shared.autoscalers.pop((namespace, name), None)
            shared.fleets.pop((namespace, name), None)
            shared.reconciling.pop((namespace, name), None)

    return registry


def _owned_event(
    handler: Callable[[str, kopf.Body, str | None], Any],
) -> Callable[..., Any]:
    """A kopf event handler (its own function per resource: kopf keys handlers by id)."""

    async def on_event(type: str, body: kopf.Body, namespace: str | None, **_: Any) -> None:
        await handler(type, body, namespace)

    return on_event


def _autoscaler(
    shared: _Shared,
    client: KubeClient,
    prom: PrometheusClient,
    spec: FleetSpec,
    name: str,
    namespace: str,
    prewarmed_for: float | None = None,
    anomalies: list[AnomalyRecord] | None = None,
) -> Autoscaler:
    current = {"spec": spec}

    def spec_now() -> FleetSpec:
        return current["spec"] if scaler is None else scaler.spec

    scaler: Autoscaler | None = None
    source = PrometheusMetricsSource(prom, spec_now, namespace, name)
    target = KubernetesTarget(client, namespace, name, source)
    forecaster: ForecastProvider | None = None
    if shared.config.forecaster_factory is not None:
        forecaster = shared.config.forecaster_factory(namespace, name, spec_now, prom)
    prewarmer = None
    if forecaster is not None:
        prewarmer = kubernetes_prewarmer(client, namespace, name, spec_now, prewarmed_for)
    watch = AnomalyWatch(prom, spec_now, namespace, name, history=anomalies or ())
    scaler = Autoscaler(
        spec,
        target,
        source,
        forecaster,
        name=name,
        namespace=namespace,
        prewarmer=prewarmer,
        anomalies=watch,
    )
    return scaler


def _history(status: Any) -> list[ScalingEvent]:
    """The scaling history already in the CR's status (kept across operator restarts)."""
    rows = (status or {}).get("history") or []
    out: list[ScalingEvent] = []
    for row in rows if isinstance(rows, list) else []:
        with contextlib.suppress(pydantic.ValidationError, TypeError):
            out.append(ScalingEvent.model_validate(row))
    return out


def _anomalies(status: Any) -> list[AnomalyRecord]:
    """The anomalies already in the CR's status: open ones stay open across restarts (no
    second Event for the same anomaly)."""
    rows = (status or {}).get("anomalies") or []
    out: list[AnomalyRecord] = []
    for row in rows if isinstance(rows, list) else []:
        with contextlib.suppress(pydantic.ValidationError, TypeError):
            out.append(AnomalyRecord.model_validate(row))
    return out


def _prewarmed_for(status: Any) -> float | None:
    """The peak already pre-warmed for, from the CR's status (survives operator restarts)."""
    forecast = (status or {}).get("forecast") or {}
    value = forecast.get("prewarmedFor") if isinstance(forecast, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _placeholder(name: str, namespace: str) -> Autoscaler:
    """An autoscaler that only reports (for specs too broken to parse)."""

    class _Nothing:
        async def observe(self, now: float) -> Metrics | None:
            return None

        async def pod_connections(self) -> dict[str, int]:
            return {}

    return Autoscaler(FleetSpec(), _NoTarget(), _Nothing(), name=name, namespace=namespace)


class _NoTarget:
    async def current_replicas(self) -> int:
        raise RuntimeError("no target")

    async def set_replicas(self, n: int, reason: str) -> None:
        raise RuntimeError("no target")

    async def pod_connections(self) -> dict[str, int]:
        return {}

    async def set_deletion_costs(self, costs: dict[str, int]) -> None:
        return None
