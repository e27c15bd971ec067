"""Scale targets: what the autoscaler resizes (a Deployment, or local processes).

`ScaleTarget` is the protocol; `KubernetesTarget` resizes the gateway
Deployment of one fleet and annotates its pods with
`controller.kubernetes.io/pod-deletion-cost` (the local fleet brings its own
target that SIGTERMs the emptiest processes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import structlog

from wsfleet_operator import kube
from wsfleet_operator.kube import KubeClient
from wsfleet_operator.prometheus import MetricsSource
from wsfleet_operator.resources import (
    DELETION_COST_ANNOTATION,
    REPLICAS_ANNOTATION,
    SCALE_CHANGES_ANNOTATION,
    object_name,
    selector_labels,
)
from wsfleet_operator.scaling import MAX_CHANGES, ScaleChange

log = structlog.get_logger("wsfleet.operator.targets")

INT32_MAX = 2**31 - 1


class TargetNotFoundError(RuntimeError):
    """The scale target does not exist (yet)."""


@runtime_checkable
class ScaleTarget(Protocol):
    async def current_replicas(self) -> int:
        """The replica count the target is asked to run now."""
        ...

    async def set_replicas(self, n: int, reason: str) -> None: ...

    async def pod_connections(self) -> dict[str, int]:
        """Live connections per pod (draining pods included)."""
        ...

    async def set_deletion_costs(self, costs: dict[str, int]) -> None:
        """Lower cost = removed first when the count goes down."""
        ...


@runtime_checkable
class ReadyReplicas(Protocol):
    """Optional: targets that know how many pods are ready."""

    async def ready_replicas(self) -> int | None: ...


@runtime_checkable
class RecordedTarget(Protocol):
    """Optional: targets that keep the operator's replica changes beside the count.

    A restarted operator reads them back (`recorded_changes`), so its rate limits and cost
    guard still count every change it made; `owned_replicas` tells a hand edit of the count
    (drift) from the operator's own.
    """

    async def recorded_changes(self) -> list[ScaleChange]: ...

    async def owned_replicas(self) -> tuple[int, int | None]:
        """(the count the target runs now, the count the operator set last or None)."""
        ...

    async def set_replicas_recorded(
        self, n: int, reason: str, changes: Sequence[ScaleChange]
    ) -> None:
        """Set the count and store `changes` (this one included) in one write."""
        ...


def encode_changes(changes: Sequence[ScaleChange]) -> str:
    """`[[at, from, to], ...]`, newest last, at most MAX_CHANGES."""
    rows = [[round(c.at, 3), c.from_replicas, c.to_replicas] for c in changes[-MAX_CHANGES:]]
    return json.dumps(rows, separators=(",", ":"))


def decode_changes(text: str | None) -> list[ScaleChange]:
    """The changes in an annotation; anything malformed is skipped, never raised."""
    try:
        rows: Any = json.loads(text or "[]")
    except ValueError:
        return []
    out: list[ScaleChange] = []
    for row in rows if isinstance(rows, list) else []:
        if not (isinstance(row, list) and len(row) == 3):
            continue
        at, before, after = row
        if (
            isinstance(at, int | float)
            and not isinstance(at, bool)
            and math.isfinite(at)
            and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (before, after)
            )
        ):
            out.append(ScaleChange(float(at), before, after))
    out.sort(key=lambda c: c.at)
    return out[-MAX_CHANGES:]


def deletion_costs(connections: dict[str, int]) -> dict[str, int]:
    """Cost per pod = its live connections: the emptiest pods are deleted first."""
    return {pod: max(0, min(int(n), INT32_MAX)) for pod, n in connections.items()}


class KubernetesTarget:
    """The gateway Deployment of one fleet."""

    def __init__(
        self, client: KubeClient, namespace: str, fleet: str, metrics: MetricsSource
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.fleet = fleet
        self.metrics = metrics
        self.deployment = object_name(fleet)

    async def _get(self) -> kube.JSON:
        dep = await self.client.get(kube.DEPLOYMENTS, self.namespace, self.deployment)
        if dep is None:
            raise TargetNotFoundError(f"deployment {self.namespace}/{self.deployment} not found")
        return dep

    async def current_replicas(self) -> int:
        dep = await self._get()
        return int(dep.get("spec", {}).get("replicas", 1))

    async def ready_replicas(self) -> int | None:
        dep = await self._get()
        ready = dep.get("status", {}).get("readyReplicas")
        return int(ready) if ready is not None else 0

    async def set_replicas(self, n: int, reason: str) -> None:
        await self._patch_replicas(n, reason, {REPLICAS_ANNOTATION: str(n)})

    async def set_replicas_recorded(
        self, n: int, reason: str, changes: Sequence[ScaleChange]
    ) -> None:
        annotations = {
            REPLICAS_ANNOTATION: str(n),
            SCALE_CHANGES_ANNOTATION: encode_changes(changes),
        }
        await self._patch_replicas(n, reason, annotations)

    async def _patch_replicas(self, n: int, reason: str, annotations: dict[str, str]) -> None:
        body = {"metadata": {"annotations": annotations}, "spec": {"replicas": n}}
        got = await self.client.patch(kube.DEPLOYMENTS, self.namespace, self.deployment, body)
        if got is None:
            raise TargetNotFoundError(f"deployment {self.namespace}/{self.deployment} not found")
        log.info("target.replicas_set", fleet=self.fleet, replicas=n, reason=reason)

    async def recorded_changes(self) -> list[ScaleChange]:
        dep = await self._get()
        annotations = dep.get("metadata", {}).get("annotations") or {}
        return decode_changes(annotations.get(SCALE_CHANGES_ANNOTATION))

    async def owned_replicas(self) -> tuple[int, int | None]:
        dep = await self._get()
        actual = int(dep.get("spec", {}).get("replicas", 1))
        raw = (dep.get("metadata", {}).get("annotations") or {}).get(REPLICAS_ANNOTATION)
        try:
            owned = int(raw) if raw is not None else None
        except ValueError:
            owned = None
        return actual, owned if owned is not None and owned >= 0 else None

    async def _pods(self) -> list[kube.JSON]:
        return await self.client.list(kube.PODS, self.namespace, selector_labels(self.fleet))

    async def pod_connections(self) -> dict[str, int]:
        pods = await self._pods()
        live = await self.metrics.pod_connections() or {}
        return {
            p["metadata"]["name"]: live.get(p["metadata"]["name"], 0)
            for p in pods
            if p.get("metadata", {}).get("name")
        }

    async def set_deletion_costs(self, costs: dict[str, int]) -> None:
        for pod in await self._pods():
            meta = pod.get("metadata", {})
            name = meta.get("name")
            if name not in costs or meta.get("deletionTimestamp"):
                continue
            value = str(costs[name])
            if (meta.get("annotations") or {}).get(DELETION_COST_ANNOTATION) == value:
                continue
            await self.client.patch(
                kube.PODS,
                self.namespace,
                name,
                {"metadata": {"annotations": {DELETION_COST_ANNOTATION: value}}},
            )
