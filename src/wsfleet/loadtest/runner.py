"""Run a scenario in this process: `run_scenario(name, url, options) -> Report`.

Cancel-safe: cancelling the awaiting task cancels the scenario, closes every
connection it opened and re-raises; setting `options.stop` ends the run early
and still returns a report of what ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from wsfleet.loadtest.engine import Engine
from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.report import Report, build_report
from wsfleet.loadtest.scenarios import SCENARIOS
from wsfleet.loadtest.shape import check_target
from wsfleet.loadtest.stats import RunStats

DEFAULT_DURATION_S = 10.0


def resolve_options(
    name: str, options: ScenarioOptions | Mapping[str, Any] | None
) -> ScenarioOptions:
    """Validated options for scenario `name` (wedding-season: one compressed day)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
    opts = (
        options if isinstance(options, ScenarioOptions) else ScenarioOptions.from_mapping(options)
    )
    duration_s = opts.duration_s
    if duration_s is None:
        duration_s = 86_400.0 / opts.compress if name == "wedding-season" else DEFAULT_DURATION_S
        opts = dataclasses.replace(opts, duration_s=duration_s)
    if duration_s <= 0 or opts.max_requests <= 0 or opts.connections < 0:
        raise ValueError("duration_s and max_requests must be > 0, connections >= 0")
    return opts


async def run_stats(name: str, url: str, opts: ScenarioOptions) -> tuple[RunStats, float]:
    """Run the scenario; its stats and wall-clock seconds. Closes every connection."""
    scenario = SCENARIOS[name]
    engine = Engine(url, opts)
    started = time.perf_counter()
    progress = asyncio.create_task(engine.progress_loop(), name="loadtest-progress")
    work = asyncio.create_task(scenario(engine), name=f"loadtest-{name}")
    stopper = (
        asyncio.create_task(opts.stop.wait(), name="loadtest-stop")
        if opts.stop is not None
        else None
    )
    assert opts.duration_s is not None
    hard_limit = opts.duration_s + opts.drain_s + opts.request_timeout_s + opts.connect_timeout_s
    try:
        waiters: set[asyncio.Task[Any]] = {work} if stopper is None else {work, stopper}
        await asyncio.wait(waiters, timeout=hard_limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        elapsed = time.perf_counter() - started
        final = {
            "t": round(elapsed, 3),
            "open": engine.stats.open_now,
            "target": engine.target,
            "sent": engine.stats.sent,
            "delivered": engine.stats.delivered,
        }
        tasks = [t for t in (work, progress, stopper) if t is not None]
        for task in tasks:
            task.cancel()
        engine.halt()  # every connection closes now, whatever the tasks still do
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:  # cancelled again meanwhile: still wait for picows to see them go
            await engine.close_all()
    if work.done() and not work.cancelled() and work.exception() is not None:
        raise work.exception()  # type: ignore[misc]
    if not engine.stats.timeline or engine.stats.timeline[-1]["t"] < final["t"]:
        engine.stats.timeline.append(final)
    return engine.stats, elapsed


async def run_scenario(
    name: str, url: str, options: ScenarioOptions | Mapping[str, Any] | None = None
) -> Report:
    """Run scenario `name` against the WebSocket endpoint `url` in this process.

    `options`: a `ScenarioOptions` or a mapping of its fields. Raises
    `RemoteTargetError` for a non-loopback `url` unless `allow_remote` is set.
    """
    opts = resolve_options(name, options)
    check_target(url, opts.allow_remote)
    started_at = dt.datetime.now(dt.UTC)
    stats, elapsed = await run_stats(name, url, opts)
    return build_report(name, url, opts, stats, started_at, elapsed)
