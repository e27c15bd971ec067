"""Several load processes as one run: past the 20,000 open files of one process.

Each child runs its share of the scenario on its own uvloop and sends
progress snapshots and its `RunStats` back over a queue; the parent merges
the stats (percentiles over all samples) and prints one progress line.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing as mp
import queue as queue_module
import signal
import time
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.report import Report, build_report
from wsfleet.loadtest.runner import resolve_options, run_stats
from wsfleet.loadtest.shape import check_target
from wsfleet.loadtest.stats import RunStats, merge_stats


async def _child_main(
    name: str, url: str, opts: ScenarioOptions, out: Any, stop: MpEvent
) -> tuple[RunStats, float]:
    local_stop = asyncio.Event()
    index = opts.process_index
    opts.stop = local_stop
    opts.progress = lambda snap: out.put(("progress", index, snap))

    async def watch_stop() -> None:
        while not stop.is_set():  # noqa: ASYNC110 - a process-shared event cannot be awaited
            await asyncio.sleep(0.1)
        local_stop.set()

    watcher = asyncio.create_task(watch_stop())
    try:
        return await run_stats(name, url, opts)
    finally:
        watcher.cancel()
        # not suppress(CancelledError): that would also swallow a cancel of this task
        await asyncio.gather(watcher, return_exceptions=True)


def _child(name: str, url: str, opts: ScenarioOptions, out: Any, stop: MpEvent) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    import uvloop

    try:
        stats, elapsed = uvloop.run(_child_main(name, url, opts, out, stop))
        out.put(("result", opts.process_index, (stats, elapsed)))
    except Exception as exc:  # reported to the parent, which fails the run
        out.put(("error", opts.process_index, f"{type(exc).__name__}: {exc}"))


def aggregate_progress(snaps: dict[int, dict[str, float]]) -> dict[str, float]:
    """One progress snapshot for all processes (sums; latency of the worst process)."""
    out: dict[str, float] = {}
    for snap in snaps.values():
        for key, value in snap.items():
            if key in ("t", "p50_ms", "p99_ms"):
                out[key] = max(out.get(key, -1.0), value)
            else:
                out[key] = out.get(key, 0.0) + value
    return out


def run_processes(name: str, url: str, options: ScenarioOptions, processes: int) -> Report:
    """Run scenario `name` split over `processes` child processes; the merged report."""
    opts = resolve_options(name, options)
    check_target(url, opts.allow_remote)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    children = [
        ctx.Process(
            target=_child,
            args=(name, url, opts.share(i, processes), out, stop),
            name=f"wsfleet-loadtest-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    started_at = dt.datetime.now(dt.UTC)
    for child in children:
        child.start()
    assert opts.duration_s is not None
    limit = time.monotonic() + opts.duration_s + opts.drain_s + opts.request_timeout_s + 60.0
    results: dict[int, tuple[RunStats, float]] = {}
    errors: list[str] = []
    snaps: dict[int, dict[str, float]] = {}
    try:
        while len(results) + len(errors) < processes and time.monotonic() < limit:
            try:
                kind, index, body = out.get(timeout=0.5)
            except queue_module.Empty:
                if all(not c.is_alive() for c in children) and out.empty():
                    break
                continue
            except KeyboardInterrupt:
                stop.set()
                continue
            if kind == "progress":
                snaps[index] = body
                if opts.progress is not None:
                    opts.progress(aggregate_progress(snaps))
            elif kind == "result":
                results[index] = body
            else:
                errors.append(f"process {index}: {body}")
    finally:
        stop.set()
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
    if errors:
        raise RuntimeError("load processes failed: " + "; ".join(errors))
    missing = sorted(set(range(processes)) - set(results))
    if missing:
        raise RuntimeError(f"load processes {missing} sent no result")
    merged = merge_stats([results[i][0] for i in range(processes)])
    elapsed = max(results[i][1] for i in range(processes))
    return build_report(name, url, opts, merged, started_at, elapsed, processes)
