"""Scale targets: what the autoscaler resizes (a Deployment, or local processes).

`ScaleTarget` is the protocol; `KubernetesTarget` resizes the gateway
Deployment of one fleet and annotates its pods with
`controller.kubernetes.io/pod-deletion-cost` (the local fleet brings its own
target that SIGTERMs the emptiest processes).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import structlog

from wsfleet_operator import kube
from wsfleet_operator.kube import KubeClient
from wsfleet_operator.prometheus import MetricsSource
from wsfleet_operator.resources import DELETION_COST_ANNOTATION, object_name, selector_labels

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
        got = await self.client.patch(
            kube.DEPLOYMENTS, self.namespace, self.deployment, {"spec": {"replicas": n}}
        )
        if got is None:
            raise TargetNotFoundError(f"deployment {self.namespace}/{self.deployment} not found")
        log.info("target.replicas_set", fleet=self.fleet, replicas=n, reason=reason)

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
