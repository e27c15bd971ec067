"""Idempotent reconciliation of a fleet's owned objects (create, repair drift, delete).

Called by the kopf handlers on create/update/resume, when an owned
Deployment changes, and on delete. Safe to call any number of times: it
creates what is missing, merge-patches what drifted, and leaves the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pydantic
import structlog

from wsfleet_operator import kube, opmetrics
from wsfleet_operator.kube import ConflictError, KubeClient
from wsfleet_operator.resources import build_all, config_name, drift_patch, object_name
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


async def delete_owned(client: KubeClient, ref: FleetRef) -> list[str]:
    """Delete the owned objects (garbage collection would too; the emulator has none)."""
    deleted: list[str] = []
    for kind_name, kind in KINDS.items():
        name = config_name(ref.name) if kind_name == "ConfigMap" else object_name(ref.name)
        if await client.delete(kind, ref.namespace, name):
            deleted.append(f"{kind_name}/{name}")
    log.info("reconcile.deleted", fleet=ref.name, deleted=deleted)
    return deleted
