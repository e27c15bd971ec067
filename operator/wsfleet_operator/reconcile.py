"""Idempotent reconciliation of a fleet's owned objects (create, repair drift).

Called by the kopf handlers on create/update/resume and when an owned object
drifts or is deleted. Safe to call any number of times: it creates what is
missing, merge-patches what drifted, and leaves the rest. Deletion is the
API server's garbage collector's job: every owned object carries the fleet's
owner reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pydantic
import structlog

from wsfleet_operator import kube, opmetrics
from wsfleet_operator.kube import ConflictError, KubeClient, NamespaceTerminatingError
from wsfleet_operator.resources import build_all, drift_patch
from wsfleet_operator.spec import FleetSpec, parse_spec

log = structlog.get_logger("wsfleet.operator.reconcile")

KINDS = {
    "ConfigMap": kube.CONFIGMAPS,
    "Deployment": kube.DEPLOYMENTS,
    "Service": kube.SERVICES,
    "PodDisruptionBudget": kube.PDBS,
}


@dataclass(frozen=True)
class FleetRef:
    name: str
    namespace: str
    uid: str


@dataclass
class ReconcileResult:
    spec: FleetSpec | None
    errors: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.spec is not None and not self.errors


def validate(raw_spec: dict[str, object] | None) -> tuple[FleetSpec | None, list[str]]:
    """The parsed spec and what is wrong with it (schema or semantics)."""
    try:
        spec = parse_spec(dict(raw_spec or {}))
    except pydantic.ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return None, problems
    return spec, spec.cluster_errors()


async def reconcile(
    client: KubeClient, ref: FleetRef, raw_spec: dict[str, object] | None
) -> ReconcileResult:
    """Bring the owned objects in line with the spec; an invalid spec changes nothing."""
    spec, errors = validate(raw_spec)
    result = ReconcileResult(spec=spec, errors=errors)
    if spec is None or errors:
        opmetrics.RECONCILES.labels(result="invalid").inc()
        log.warning("reconcile.invalid_spec", fleet=ref.name, errors=errors)
        return result
    for desired in build_all(ref.name, ref.namespace, ref.uid, spec):
        kind = KINDS[desired["kind"]]
        name = desired["metadata"]["name"]
        label = f"{desired['kind']}/{name}"
        actual = await client.get(kind, ref.namespace, name)
        if actual is None:
            try:
                await client.create(kind, ref.namespace, desired)
                result.created.append(label)
                continue
            except NamespaceTerminatingError:  # the namespace goes, and the fleet with it
                log.info("reconcile.namespace_terminating", fleet=ref.name, namespace=ref.namespace)
                return result
            except ConflictError:  # created meanwhile (a replayed watch event)
                actual = await client.get(kind, ref.namespace, name)
                if actual is None:
                    raise
        patch = drift_patch(desired, actual)
        if patch is not None:
            await client.patch(kind, ref.namespace, name, patch)
            result.repaired.append(label)
    opmetrics.RECONCILES.labels(result="ok").inc()
    if result.created or result.repaired:
        log.info(
            "reconcile.applied", fleet=ref.name, created=result.created, repaired=result.repaired
        )
    return result


def is_drifted(ref: FleetRef, raw_spec: dict[str, object], actual: kube.JSON) -> bool:
    """True when `actual` (an owned object, as a watch event shows it) differs from the spec.

    Pure: no API call. An object the spec does not describe (or an invalid spec) is not
    drift; reconcile reports invalid specs itself.
    """
    spec, errors = validate(raw_spec)
    if spec is None or errors:
        return False
    kind = actual.get("kind")
    name = (actual.get("metadata") or {}).get("name")
    for desired in build_all(ref.name, ref.namespace, ref.uid, spec):
        if desired["kind"] == kind and desired["metadata"]["name"] == name:
            return drift_patch(desired, actual) is not None
    return False
