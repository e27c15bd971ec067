"""Probes of the load process itself: its event-loop lag and its GC pauses.

A latency the load tool records includes every stall of the load process, so
the suite measures those stalls beside the figures (and `calm_gc` removes the
one it can: collections walking thousands of long-lived connection objects).
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field
from typing import Any

LOAD_GEN0_THRESHOLD = 50_000
"""Gen-0 threshold of the load process once its long-lived objects are frozen."""


def calm_gc(gen0: int = LOAD_GEN0_THRESHOLD) -> tuple[int, int, int]:
    """Freeze every object alive now (out of later collections) and collect less often.

    Called after the idle connections are opened, in the load process only, the
    same way for every server kind. Returns the thresholds to give `release_gc`.
    """
    saved = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, saved[1], saved[2])
    return saved


def release_gc(saved: tuple[int, int, int]) -> None:
    """Undo `calm_gc` once the fleet is closed (frozen objects become collectable)."""
    gc.unfreeze()
    gc.set_threshold(*saved)


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN when empty."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass
class GcPauses:
    """Durations of this process's garbage collections (via `gc.callbacks`)."""

    pauses_s: list[float] = field(default_factory=list)
    by_generation: dict[int, int] = field(default_factory=dict)
    _started: float = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.pauses_s.append(time.perf_counter() - self._started)
        generation = int(info.get("generation", -1))
        self.by_generation[generation] = self.by_generation.get(generation, 0) + 1

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)


@dataclass
class LoopLag:
    """How late a 1 ms timer fires on this process's event loop (its stalls)."""

    interval_s: float = 0.001
    lags_s: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lags_s.append(max(0.0, time.perf_counter() - due))

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run(), name="bench-loop-lag")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def probe_figures(prefix: str, lag: LoopLag, pauses: GcPauses) -> dict[str, float]:
    """``<prefix>_load_lag_p99_ms`` / ``_max_ms`` and the load process's GC pauses."""
    return {
        f"{prefix}_load_lag_p99_ms": percentile(lag.lags_s, 0.99) * 1e3,
        f"{prefix}_load_lag_max_ms": max(lag.lags_s, default=float("nan")) * 1e3,
        f"{prefix}_load_gc_max_ms": max(pauses.pauses_s, default=0.0) * 1e3,
        f"{prefix}_load_gc_total_ms": sum(pauses.pauses_s) * 1e3,
        f"{prefix}_load_gc_gen2": float(pauses.by_generation.get(2, 0)),
    }
