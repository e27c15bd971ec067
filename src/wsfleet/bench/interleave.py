"""Warm-switch latency of two servers at once, in alternating short windows (A/B).

The suite measures each server kind in its own slot of a run, a minute or more
apart. On a shared machine a stall of a few tens of milliseconds (another
tenant, the hypervisor) then lands in one kind's 6-second window and not the
other's, and a p99 read from ~11,000 switches moves by 2-20x with it: the
per-run on ÷ off ratios of the switch p99 scattered from 0.85 to 16.6. The
load process sees those stalls in its own loop lag, which no server causes.

Here both servers run together, each with its idle fleet open (held by a child
process per server, so the load process stays under its open-file limit),
and the switchers alternate between them in windows of `window_s`: A, B, B, A,
A, B, ... A disturbance longer than a window hits one kind in one window; over
many windows both kinds get the same exposure, so the ratio of their
percentiles says what the servers cost, not when the machine stalled.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from wsfleet.bench.background import LoadChild, run_child
from wsfleet.bench.figures import bench_options
from wsfleet.bench.probes import calm_gc, percentile
from wsfleet.loadtest.engine import Engine

CYCLE = 15
"""Channels each switcher cycles through (as in the suite's switch figures)."""


@dataclass(frozen=True)
class Target:
    """One server to switch on: its WebSocket URL and the JWT key its tokens need."""

    url: str
    jwt_secret: str | None = None


async def _hold(target: Target, count: int, out: Any, stop: MpEvent) -> None:
    engine = Engine(target.url, bench_options(jwt_secret=target.jwt_secret))
    try:
        conns = await engine.open_many(count)
        calm_gc()
        out.put(("ready", len(conns)))
        while not stop.is_set():  # noqa: ASYNC110 - a process-shared event cannot be awaited
            await asyncio.sleep(0.05)
    finally:
        await engine.close_all()


def _holder(target: Target, count: int, out: Any, stop: MpEvent) -> None:
    run_child(_hold(target, count, out, stop), out)


class IdleFleetProcess(LoadChild):
    """`count` idle connections to `target`, held by a spawned child process."""

    def __init__(self, target: Target, count: int) -> None:
        super().__init__("idle fleet", _holder, target, count)


def window_order(kinds: tuple[str, ...], window: int) -> tuple[str, ...]:
    """`kinds` in round `window`: as given, then reversed, and so on (none always first)."""
    return kinds if window % 2 == 0 else tuple(reversed(kinds))


async def _switch_window(
    engine: Engine,
    movers: list[Any],
    prefix: str,
    position: list[int],
    until: float,
    think_s: float,
) -> list[float]:
    """Every mover switches to its next channel, at least once and again until `until`."""
    samples: list[float] = []

    async def mover(index: int, conn: Any) -> None:
        while True:
            current = position[index]
            nxt = (current + 1) % CYCLE
            started = time.perf_counter()
            reply = await engine.call(
                conn,
                "switch",
                **{"from": f"{prefix}-{index}-{current}", "to": f"{prefix}-{index}-{nxt}"},
            )
            if reply is not None:
                samples.append(time.perf_counter() - started)
            position[index] = nxt
            await asyncio.sleep(think_s)
            if time.perf_counter() >= until:
                return

    await asyncio.gather(*(mover(i, conn) for i, conn in enumerate(movers)))
    return samples


async def interleaved_switch(
    targets: dict[str, Target],
    idle_connections: int,
    switchers: int,
    windows: int,
    window_s: float,
    think_s: float = 0.01,
) -> dict[str, dict[str, float | str]]:
    """Warm-switch p50/p99 per kind, all kinds' fleets open, windows alternating.

    Each kind has `idle_connections` open in all (its switchers included). Every
    switcher first visits its `CYCLE` channels untimed, so the timed switches
    are all to channels its server holds.
    """
    kinds = tuple(targets)
    holders = {
        kind: IdleFleetProcess(targets[kind], max(0, idle_connections - switchers))
        for kind in kinds
    }
    engines = {
        kind: Engine(targets[kind].url, bench_options(jwt_secret=targets[kind].jwt_secret))
        for kind in kinds
    }
    try:
        held = await asyncio.gather(*(holder.ready() for holder in holders.values()))
        movers = {kind: await engines[kind].open_many(switchers) for kind in kinds}
        positions = {kind: [0] * len(movers[kind]) for kind in kinds}
        prefix = f"ab{os.getpid()}"
        for kind in kinds:  # untimed first cycle: every channel held afterwards
            engine = engines[kind]
            for index, conn in enumerate(movers[kind]):
                await engine.call(conn, "subscribe", channel=f"{prefix}-{index}-0")
            for _ in range(CYCLE):  # `until` passed: one switch each
                await _switch_window(engine, movers[kind], prefix, positions[kind], 0.0, think_s)
        samples: dict[str, list[float]] = {kind: [] for kind in kinds}
        for window in range(windows):
            for kind in window_order(kinds, window):
                samples[kind] += await _switch_window(
                    engines[kind],
                    movers[kind],
                    prefix,
                    positions[kind],
                    time.perf_counter() + window_s,
                    think_s,
                )
        return {
            kind: {
                "ab_switch_p50_ms": percentile(samples[kind], 0.5) * 1e3,
                "ab_switch_p99_ms": percentile(samples[kind], 0.99) * 1e3,
                "ab_switches": float(len(samples[kind])),
                "ab_open": float(held[i] + len(movers[kind])),
            }
            for i, kind in enumerate(kinds)
        }
    finally:
        for engine in engines.values():
            await engine.close_all()
        for holder in holders.values():
            await asyncio.to_thread(holder.close)
