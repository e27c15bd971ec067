"""Background traffic in its own process, so the switchers' process only switches.

The switch-under-traffic figure needs ~20,000 deliveries/s flowing. Received in
the same process as the switchers, those deliveries keep that process's loop
busy and every switch reply waits behind them: the figure then measures the
load tool. Here a child process (spawned, same CPU as the load) owns the
subscribers and the publishers; the parent keeps the switchers and the idle
fleet. The same for every server kind.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue as queue_module
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from wsfleet.bench.probes import calm_gc
from wsfleet.loadtest.engine import Engine
from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.scenarios import run_coordinator

LONG = 3600.0
BACKGROUND_NICE = 10


@dataclass(frozen=True)
class BackgroundPlan:
    """`channels` channels of `subscribers` each, `rate` publishes/s per channel."""

    url: str
    channels: int
    subscribers: int
    rate: float
    jwt_secret: str | None = None

    @property
    def connections(self) -> int:
        return self.channels * (self.subscribers + 1)


async def _traffic(plan: BackgroundPlan, go: MpEvent, out: Any, stop: MpEvent) -> None:
    opts = ScenarioOptions(
        duration_s=LONG, max_requests=10**12, connect_concurrency=64, jwt_secret=plan.jwt_secret
    )
    engine = Engine(plan.url, opts)
    try:
        subs = await engine.open_many(plan.channels * plan.subscribers)
        await asyncio.gather(
            *(
                engine.call(conn, "subscribe", channel=f"bg-{i % plan.channels}")
                for i, conn in enumerate(subs)
            )
        )
        calm_gc()
        out.put(("ready", len(subs)))
        while not go.is_set():  # noqa: ASYNC110 - a process-shared event cannot be awaited
            await asyncio.sleep(0.01)
        engine.options.publish_rate = plan.rate
        engine.deadline = time.perf_counter() + LONG

        async def watch_stop() -> None:
            while not stop.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            engine.deadline = time.perf_counter()

        before = engine.stats.delivered
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            group.create_task(watch_stop())
            for i in range(plan.channels):
                group.create_task(
                    run_coordinator(engine, f"bg-{i}", i, lambda: 0, phase=i / plan.channels)
                )
        span = time.perf_counter() - started
        dps = (engine.stats.delivered - before) / span if span > 0 else 0.0
        errors = ",".join(f"{k}={v}" for k, v in sorted(engine.stats.errors.items()) if v)
        out.put(("done", dps, errors))
    finally:
        await engine.close_all()


def run_child(main: Coroutine[Any, Any, None], out: Any) -> None:
    """The body of a load child process: `main` on uvloop, at a lower priority, its
    failure reported on `out`."""
    import uvloop

    os.nice(BACKGROUND_NICE)  # the switchers' process wins the shared load CPU when it wakes
    try:
        uvloop.run(main)
    except Exception as exc:  # reported to the parent
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _child(plan: BackgroundPlan, go: MpEvent, out: Any, stop: MpEvent) -> None:
    """`LoadChild` passes its own queue and stop event last."""
    run_child(_traffic(plan, go, out, stop), out)


class LoadChild:
    """A spawned load process: it reports on `out` (``("error", text)`` on failure) and
    ends when `stop` is set. `what` names it in errors."""

    def __init__(self, what: str, target: Any, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.what = what
        self.out = ctx.Queue()
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=target, args=(*args, self.out, self.stop), daemon=True)

    async def ready(self, timeout_s: float = 180.0) -> int:
        """Spawn the child; the count it reports once its connections are set up (the
        background: subscribed; an idle fleet: open)."""
        self.proc.start()
        msg = await self._get(timeout_s)
        return int(msg[1])

    async def _get(self, timeout_s: float) -> tuple[Any, ...]:
        try:
            msg: tuple[Any, ...] = await asyncio.to_thread(self.out.get, True, timeout_s)
        except queue_module.Empty as exc:
            raise RuntimeError(f"{self.what} process silent for {timeout_s} s") from exc
        if msg[0] == "error":
            raise RuntimeError(f"{self.what} process failed: {msg[1]}")
        return msg

    def close(self) -> None:
        self.stop.set()
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)


class BackgroundTraffic(LoadChild):
    """Parent side: `await ready()`, `start()`, run the switchers, `await finish()`."""

    def __init__(self, plan: BackgroundPlan) -> None:
        self.go = mp.get_context("spawn").Event()
        super().__init__("background", _child, plan, self.go)

    def start(self) -> None:
        self.go.set()

    async def finish(self, timeout_s: float = 60.0) -> tuple[float, str]:
        """Stop publishing; (deliveries/s achieved, errors)."""
        self.stop.set()
        msg = await self._get(timeout_s)
        return float(msg[1]), str(msg[2])

    def close(self) -> None:
        self.go.set()
        super().close()
