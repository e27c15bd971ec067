"""Graceful drain on SIGTERM: move every client elsewhere without a reconnect storm.

1. Readiness fails at once (``/readyz`` 503) and new connections are refused
   (503 with ``Retry-After``; with ``reuse_port`` the listening socket closes
   so the kernel hands new connections to the other local gateways).
2. Open connections get ``reconnect`` frames (``after_ms`` jittered across
   one pacing tick, ``resume`` = channel → last delivered offset) in paced
   batches: at least ``drain_reconnect_per_s`` per second, faster only when
   that would not reach everyone within `SEND_WINDOW` of ``drain_grace_s``.
   From its ``reconnect`` frame on a connection gets no live messages
   (`Hub.move`): the ``resume`` offsets are exact, a client resuming from them
   gets nothing twice. Its requests are still answered.
3. The drain ends when no connection is left or at the deadline, where the
   rest are closed with 1001 (going away).

`plan_drain` is the pure pacing core; `drain_gateway` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from dataclasses import dataclass
from typing import Final, Protocol

import structlog

from wsfleet_gateway.channels import Hub
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.protocol import encode_reconnect
from wsfleet_gateway.server import WsServer
from wsfleet_gateway.settings import GatewaySettings


class Gateway(Protocol):
    """What a drain uses of a gateway (`app.Gateway` is one), so the drain names only
    this, never the app that runs it."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    ws: WsServer
    hub: Hub
    draining: bool


log = structlog.get_logger("wsfleet_gateway.drain")

SEND_WINDOW: Final = 0.7
"""Share of the grace period in which every reconnect frame is sent (the rest
leaves clients time to move)."""
TICK_S: Final = 0.1
"""Pacing interval: one batch of reconnect frames per tick."""


@dataclass(frozen=True, slots=True)
class DrainPlan:
    """How fast to send reconnect frames."""

    rate_per_s: float
    """Reconnect frames per second."""
    batch_size: int
    """Frames per tick (at least 1)."""
    tick_s: float
    send_s: float
    """Seconds until the last batch is sent."""


def plan_drain(
    connections: int, grace_s: float, budget_per_s: float, tick_s: float = TICK_S
) -> DrainPlan:
    """Pace `connections` reconnect frames: the budget, or faster to fit the grace window."""
    window_s = grace_s * SEND_WINDOW
    needed_per_s = connections / window_s if window_s > 0 else math.inf
    rate = max(budget_per_s, needed_per_s)
    batch = max(1, math.ceil(rate * tick_s)) if math.isfinite(rate) else max(1, connections)
    ticks = math.ceil(connections / batch) if connections else 0
    return DrainPlan(
        rate_per_s=rate, batch_size=batch, tick_s=tick_s, send_s=max(0, ticks - 1) * tick_s
    )


def jitter_ms(rng: random.Random, tick_s: float = TICK_S) -> int:
    """A client's reconnect delay: spread over one tick so a batch arrives smoothly."""
    return int(rng.uniform(0.0, tick_s) * 1000)


@dataclass(frozen=True, slots=True)
class DrainResult:
    connections: int
    """Open connections when the drain began."""
    reconnects_sent: int
    left: int
    """Connections that closed by themselves before the deadline."""
    forced: int
    """Connections closed with 1001 at the deadline."""


async def drain_gateway(gateway: Gateway, rng: random.Random | None = None) -> DrainResult:
    """Drain `gateway` (see the module docstring); returns what happened."""
    rng = rng or random.Random()
    settings = gateway.settings
    metrics = gateway.metrics
    ws = gateway.ws
    gateway.draining = True
    metrics.drain_in_progress.set(1)
    ws.accepting = False
    if settings.reuse_port:
        ws.stop_listening()
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + settings.drain_grace_s
    targets = list(ws.listeners.items())
    plan = plan_drain(len(targets), settings.drain_grace_s, settings.drain_reconnect_per_s)
    log.info(
        "drain_started",
        node=settings.node_name,
        connections=len(targets),
        grace_s=settings.drain_grace_s,
        rate_per_s=round(plan.rate_per_s, 1),
    )
    sent = 0
    for start in range(0, len(targets), plan.batch_size):
        if loop.time() >= deadline:
            break
        for transport, listener in targets[start : start + plan.batch_size]:
            session = listener.session
            if session is None or transport.is_disconnected:
                continue
            resume = gateway.hub.move(session)  # nothing live after the frame below
            session.moved = True
            session.send(encode_reconnect(jitter_ms(rng, plan.tick_s), resume))
            sent += 1
        await asyncio.sleep(plan.tick_s)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await ws.empty.wait()
    forced = len(ws.listeners)
    if forced:
        await ws.close_all(1001, b"going away")
    left = len(targets) - forced
    metrics.drained_connections.inc(max(0, left))
    metrics.drain_forced_closes.inc(forced)
    result = DrainResult(len(targets), sent, max(0, left), forced)
    log.info(
        "drain_finished",
        node=settings.node_name,
        connections=result.connections,
        reconnects_sent=sent,
        left=result.left,
        forced=forced,
        seconds=round(loop.time() - started, 3),
    )
    return result
