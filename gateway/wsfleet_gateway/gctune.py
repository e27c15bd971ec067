"""Garbage-collector tuning of a gateway process (``WSFLEET_GC_*``).

A gateway holds thousands of long-lived objects per connection set (sockets,
sessions, subscriptions). CPython's cyclic collector walks all of them on every
older-generation collection: tens of milliseconds at 10k connections, paid by
whichever request is in flight. `GcTuner` moves the long-lived objects to the
permanent generation (`gc.freeze`) after startup and again after each burst of
accepts, and raises the gen-0 threshold so young collections run less often.

Frozen objects freed by reference counting are freed normally; only frozen
objects in reference cycles (and young cyclic garbage frozen with a burst)
wait until the next refresh: one full collection, run only when no connection
is open (nobody to stall). A connection's objects form no cycle (a test holds
that), so little waits for it.

When the fleet shrinks to half of what was frozen, the count is only *rebased*
(no collection), so that a regrowth freezes again. It used to run the full
collection then: measured in the bench's gateway after 10,000 connections had
closed, it found nothing to free (0 objects) and stalled every connection for
52-207 ms (209k objects walked), the same-node delivery p99 of 199.5 ms in
bench/results/2026-11-29d.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = structlog.get_logger("wsfleet_gateway.gctune")


class GcSettings(BaseSettings):
    """How the gateway process tunes its garbage collector."""

    model_config = SettingsConfigDict(
        env_prefix="WSFLEET_GC_", extra="ignore", use_attribute_docstrings=True
    )

    freeze: bool = True
    """`WSFLEET_GC_FREEZE`: freeze long-lived objects after startup and accept bursts."""
    gen0_threshold: int = Field(default=20_000, ge=1)
    """`WSFLEET_GC_GEN0_THRESHOLD`: allocations between young collections (CPython: 700)."""
    burst_connections: int = Field(default=500, ge=1)
    """`WSFLEET_GC_BURST_CONNECTIONS`: new connections since the last freeze to freeze again."""
    check_interval_s: float = Field(default=5.0, gt=0)
    """`WSFLEET_GC_CHECK_INTERVAL_S`: how often the connection count is looked at."""


@dataclass(frozen=True)
class Decision:
    """What `decide` says to do now."""

    refreeze: bool = False
    refresh: bool = False
    rebase: bool = False


def decide(frozen_at: int, now: int, burst: int) -> Decision:
    """Pure: freeze again after `burst` new connections; a full refresh only when no
    connection is open (after `burst` or more were frozen); rebase the count when halved."""
    if now >= frozen_at + burst:
        return Decision(refreeze=True)
    if now == 0 and frozen_at >= burst:
        return Decision(refresh=True)
    if frozen_at >= 2 * burst and now <= frozen_at // 2:
        return Decision(rebase=True)
    return Decision()


class GcTuner:
    """Applies `GcSettings` to this process; `run` keeps it applied as the fleet grows."""

    def __init__(self, settings: GcSettings, connections: Callable[[], int]) -> None:
        self.settings = settings
        self.connections = connections
        self.frozen_at = 0
        self.freezes = 0

    def apply(self) -> None:
        """Startup: thresholds, one full collection, freeze everything alive."""
        if not self.settings.freeze:
            log.info("gc_tuning_off")
            return
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(self.settings.gen0_threshold, gen1, gen2)
        self._freeze(full=True, reason="startup")

    def _freeze(self, full: bool, reason: str) -> None:
        started = time.perf_counter()
        if full:
            gc.unfreeze()
            gc.collect()
        gc.freeze()  # no collection first: that would be the very pause we avoid
        pause_ms = round((time.perf_counter() - started) * 1e3, 2)
        self.frozen_at = self.connections()
        self.freezes += 1
        # (no gc.get_freeze_count() here: it walks every frozen object, itself a pause)
        log.info("gc_frozen", reason=reason, connections=self.frozen_at, pause_ms=pause_ms)

    def check(self) -> Decision:
        """One look at the connection count; freezes or refreshes as `decide` says."""
        decision = decide(self.frozen_at, self.connections(), self.settings.burst_connections)
        if decision.refreeze:
            self._freeze(full=False, reason="accept_burst")
        elif decision.refresh:
            self._freeze(full=True, reason="fleet_empty")
        elif decision.rebase:
            self.frozen_at = self.connections()  # no collection: see the module docstring
        return decision

    async def run(self) -> None:
        """Check every `check_interval_s` until cancelled (no-op when freezing is off)."""
        if not self.settings.freeze:
            return
        while True:
            await asyncio.sleep(self.settings.check_interval_s)
            self.check()
