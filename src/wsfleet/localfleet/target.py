"""The operator's scale target, backed by local gateway processes.

Scale up starts processes and waits until they are ready; scale down picks
the emptiest gateways (deletion costs when the autoscaler set them, else
live connection counts from each admin /metrics), sends them SIGTERM and
lets them drain; the supervisor reaps them when they exit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from wsfleet.localfleet.supervisor import GatewaySupervisor

log = structlog.get_logger("wsfleet.localfleet")


def pick_victims(
    counts: Mapping[str, float | None], costs: Mapping[str, float], k: int
) -> list[str]:
    """The `k` gateways to remove: lowest deletion cost, then fewest connections.

    A gateway whose count is unknown (admin port unreachable) goes first: it
    is probably unhealthy. Ties go to the newest (highest-numbered) gateway,
    which holds the youngest connections.
    """

    def key(name: str) -> tuple[float, float, int]:
        count = counts.get(name)
        live = -1.0 if count is None else count
        cost = costs.get(name, live)
        return (cost, live, -_ordinal(name))

    return sorted(counts, key=key)[: max(0, k)]


def _ordinal(name: str) -> int:
    digits = name.rpartition("-")[2]
    return int(digits) if digits.isdigit() else 0


class LocalProcessTarget:
    """`ScaleTarget` over a `GatewaySupervisor`."""

    def __init__(
        self,
        supervisor: GatewaySupervisor,
        drain_timeout_s: float,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.notify = notify or (lambda _line: None)
        self.drain_timeout_s = drain_timeout_s
        self.costs: dict[str, int] = {}
        self.actions: list[tuple[int, int, str]] = []
        """(from, to, reason) of every change, oldest first."""

    async def current_replicas(self) -> int:
        """Starting and ready gateways (draining ones no longer count)."""
        return len(self.supervisor.active())

    async def ready_replicas(self) -> int:
        return len(self.supervisor.serving())

    async def pod_connections(self) -> dict[str, int]:
        """Live connections per gateway (draining included), from admin /metrics."""
        gateways = self.supervisor.active() + self.supervisor.draining()
        counts = await self.supervisor.connection_counts(gateways)
        return {name: round(value) for name, value in counts.items() if value is not None}

    async def set_deletion_costs(self, costs: Mapping[str, int]) -> None:
        """Remember which gateways the autoscaler wants to keep (higher = keep)."""
        self.costs = dict(costs)

    async def set_replicas(self, replicas: int, reason: str) -> None:
        """Start or drain gateways until `replicas` are active."""
        current = len(self.supervisor.active())
        if replicas == current:
            self.supervisor.desired = replicas
            return
        log.info("local_scale", from_replicas=current, to_replicas=replicas, reason=reason)
        self.actions.append((current, replicas, reason))
        self.notify(f"scaling {current} -> {replicas}: {reason}")
        if replicas > current:
            await self.supervisor.scale_up_to(replicas)
            return
        await self.scale_down_to(replicas)

    async def scale_down_to(self, replicas: int) -> list[str]:
        """Drain the emptiest gateways until `replicas` remain active."""
        self.supervisor.desired = replicas
        active = self.supervisor.active()
        counts = await self.supervisor.connection_counts(active)
        victims = pick_victims(counts, self.costs, len(active) - replicas)
        self.costs = {}  # used once: the next scale-down brings fresh ones
        by_name = {g.name: g for g in active}
        for name in victims:
            log.info("local_scale_down_pick", gateway=name, connections=counts.get(name))
            self.supervisor.begin_drain(by_name[name], self.drain_timeout_s)
        return victims
