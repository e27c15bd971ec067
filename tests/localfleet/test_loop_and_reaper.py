"""The autoscaler loop's wiring and the reaper watchdog, with real processes."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until, wait_until_sync
from wsfleet.localfleet import procs, reaper
from wsfleet.localfleet.autoscale import describe, run_autoscaler


@dataclass
class FakeDecision:
    desired: int
    mode: str
    reason: str


@dataclass
class FakeEvent:
    reason: str
    message: str


@dataclass
class FakeResult:
    decision: FakeDecision | None
    status: object = None
    events: list[FakeEvent] | None = None


class ScriptedAutoscaling:
    """Answers ticks from a script; an Exception in it is raised by that tick."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.ticks = 0
        self.closed = False

    async def tick(self, now: float) -> Any:
        item = self.script[min(self.ticks, len(self.script) - 1)]
        self.ticks += 1
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True


async def run_until_ticks(
    scaler: ScriptedAutoscaling,
    ticks: int,
    notify: Callable[[str], None],
    on_result: Callable[[Any], None] | None = None,
) -> None:
    """The autoscaler loop over `scaler` until it has ticked `ticks` times."""
    task = asyncio.create_task(run_autoscaler(scaler, 0.01, notify, on_result))
    try:
        await wait_until(lambda: scaler.ticks >= ticks, timeout_s=30, message="ticks")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_loop_survives_a_failing_tick_and_reports_only_changes() -> None:
    script: list[Any] = [
        RuntimeError("prometheus exploded"),
        FakeResult(FakeDecision(2, "Metrics", "2->2")),
        FakeResult(FakeDecision(2, "Metrics", "2->2 again")),
        FakeResult(None),
        FakeResult(FakeDecision(3, "Metrics", "2->3: proposals connections=3")),
    ]
    scaler = ScriptedAutoscaling(script)
    lines: list[str] = []
    results: list[Any] = []
    await run_until_ticks(scaler, 8, lines.append, results.append)
    assert lines == [
        "autoscaler: 2 replicas (Metrics): 2->2",
        "autoscaler: 3 replicas (Metrics): 2->3: proposals connections=3",
    ]
    assert len(results) == scaler.ticks - 1  # every tick but the failed one
    assert describe(FakeResult(None)) is None


async def test_the_loop_prints_every_anomaly_raised_or_resolved() -> None:
    flood = FakeEvent("AnomalyDetected", "ConnectFlood: 12.0x the usual connects from 1 user")
    over = FakeEvent("AnomalyResolved", "ConnectFlood resolved")
    script: list[Any] = [
        FakeResult(None, events=[FakeEvent("ScaledUp", "2 -> 3"), flood]),
        FakeResult(None, events=[over]),
        FakeResult(None),
    ]
    scaler = ScriptedAutoscaling(script)
    lines: list[str] = []
    await run_until_ticks(scaler, 4, lines.append)
    assert lines == [f"anomaly: {flood.message}", f"anomaly: {over.message}"]


def test_wsfleet_up_runs_the_operators_anomaly_watch() -> None:
    from wsfleet_operator.anomaly.watch import AnomalyWatch
    from wsfleet_operator.spec import parse_spec

    from wsfleet.localfleet.autoscale import build_autoscaler
    from wsfleet.localfleet.manifest import FleetManifest

    spec = parse_spec({"prometheus": {"url": "http://127.0.0.1:1"}})
    manifest = FleetManifest("weddings", "default", spec)
    built = build_autoscaler(spec, target=None, manifest=manifest)  # type: ignore[arg-type]
    watch = built.autoscaler.anomalies  # type: ignore[attr-defined]
    assert isinstance(watch, AnomalyWatch)
    assert (watch.namespace, watch.name) == ("default", "weddings")
    asyncio.run(built.close())


def _sleeper(seconds: int = 60) -> subprocess.Popen[bytes]:
    """A child that sleeps, returned once it runs its program (until it has exec'd, its
    command line is still this process's, which the reaper would rightly not stop)."""
    proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    wait_until_sync(
        lambda: b"time.sleep" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(),
        message=f"pid {proc.pid} running its program",
    )
    return proc


def test_reaper_stops_only_processes_that_still_are_what_they_were() -> None:
    mine = _sleeper()
    other = _sleeper()
    try:
        targets = reaper.parse_targets([f"{mine.pid}:time.sleep", f"{other.pid}:redis-server"])
        assert reaper.stop_all(targets, timeout_s=10) == [mine.pid]
        assert mine.wait(timeout=10) == -15
        assert other.poll() is None  # not a redis-server: a reused PID is left alone
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait(timeout=10)


def test_reaper_acts_at_once_when_its_parent_is_already_gone() -> None:
    victim = _sleeper()
    try:
        # --parent names a process that is not its parent: as if we had died before it tied
        watchdog = subprocess.run(
            [
                sys.executable,
                "-m",
                "wsfleet.localfleet.reaper",
                "--parent",
                "1",
                f"{victim.pid}:time.sleep",
            ],
            timeout=60,
            check=True,
        )
        assert watchdog.returncode == 0
        assert victim.wait(timeout=10) == -15
    finally:
        victim.kill()
        victim.wait(timeout=10)


def test_a_tied_child_gets_sigterm_when_its_parent_dies(tmp_path: Any) -> None:
    """The parent-death signal that ties gateways to `wsfleet up`."""
    script = (
        "import sys, time; from pathlib import Path; from wsfleet.localfleet import procs;"
        "import os; p = procs.spawn([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " env=os.environ, log_path=Path(sys.argv[1])); print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "child.log")], stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert procs.parent_of(child) == parent.pid
    finally:
        parent.kill()
        parent.wait(timeout=10)
    wait_until_sync(lambda: procs.parent_of(child) is None, timeout_s=30, message="child gone")
