"""`wsfleet up --load wedding-season`, the demo, as a user runs it (issue 17 §5).

Real processes throughout: `wsfleet up` on examples/01-minimal-fleet.yaml
with its Redis, Prometheus, gateways, dashboard and load process. The demo
must scale the fleet up and back down to its minimum within one compressed
day, the dashboard must follow it under that load, and Ctrl-C must stop the
load first and everything within 10 s, with no gateway started meanwhile.

The compressed day is shorter here than in the demo (``compress=960``: a day
in 90 s; the demo's is 3 minutes): the same code path, sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.waiting import wait_until
from wsfleet.localfleet import procs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01-minimal-fleet.yaml"
STOP_BOUND_S = 10.0
"""Ctrl-C to nothing left running (the issue's bound)."""
SCALING = re.compile(r"^scaling (\d+) -> (\d+): (.*)$")


@dataclass
class Up:
    """A running `wsfleet up` and every line it printed (stdout and stderr, in order)."""

    proc: asyncio.subprocess.Process
    workdir: Path
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, tmp_path: Path, *args: str) -> Up:
        workdir = tmp_path / "work"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wsfleet",
            "up",
            "-f",
            str(EXAMPLE),
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--workdir",
            str(workdir),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, as in a terminal
        )
        up = cls(proc, workdir)
        up.reader = asyncio.create_task(up._read(), name="wsfleet-up-output")
        return up

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def index_of(self, prefix: str) -> int | None:
        return next((i for i, line in enumerate(self.lines) if line.startswith(prefix)), None)

    async def wait_line(self, prefix: str, timeout_s: float) -> int:
        def seen() -> int | None:
            if self.proc.returncode is not None and self.index_of(prefix) is None:
                raise AssertionError(f"`wsfleet up` exited before {prefix!r}:\n{self.text()}")
            return self.index_of(prefix)

        found = await wait_until(
            lambda: seen() is not None, timeout_s=timeout_s, message=f"line {prefix!r}"
        )
        assert found
        index = self.index_of(prefix)
        assert index is not None
        return index

    def scalings(self) -> list[tuple[int, int, str]]:
        out = []
        for line in self.lines:
            match = SCALING.match(line)
            if match:
                out.append((int(match[1]), int(match[2]), match[3]))
        return out

    def value(self, label: str) -> str:
        match = re.search(rf"^\s+{label}\s+(\S+)", self.text(), re.MULTILINE)
        assert match, f"no {label} in the summary:\n{self.text()}"
        return match[1]

    def ctrl_c(self) -> None:
        """What a terminal does: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    async def finish(self) -> int:
        """Wait for the exit (bounded) and the rest of the output."""
        try:
            async with asyncio.timeout(60.0):
                code = await self.proc.wait()
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            if self.reader is not None:
                await self.reader
        return code


def scaled_up_and_back_down(scalings: list[tuple[int, int, str]], minimum: int) -> bool:
    """True once the fleet grew past `minimum` and later came back down to it."""
    peak_at = next((i for i, (_f, to, _r) in enumerate(scalings) if to > minimum), None)
    if peak_at is None:
        return False
    return any(to == minimum for _f, to, _r in scalings[peak_at:])


def gateway_events(workdir: Path, event: str) -> dict[str, dict[str, Any]]:
    """Each gateway's last `event` log line (JSON), by log file name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((workdir / "logs").glob("gw-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                found[path.stem] = json.loads(line)
    return found


async def follow_dashboard(url: str, seen: list[dict[str, Any]]) -> None:
    """Every `fleets` event of the dashboard's event stream, until cancelled."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}api/events") as resp:
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                seen.append(json.loads(line.removeprefix("data: ")))


def dashboard_replicas(seen: list[dict[str, Any]]) -> list[int]:
    """The fleet's current replica count in each dashboard event, changes only."""
    counts: list[int] = []
    for payload in seen:
        for fleet in payload["fleets"]:
            count = fleet.get("current_replicas")
            if isinstance(count, int) and (not counts or counts[-1] != count):
                counts.append(count)
    return counts


async def test_the_demo_scales_up_and_back_down_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    up = await Up.start(tmp_path, "--load", "wedding-season", "--load-option", "compress=960")
    seen: list[dict[str, Any]] = []
    follower: asyncio.Task[None] | None = None
    children: set[int] = set()
    stop_at: float | None = None
    try:
        await up.wait_line("Ready. Stop with Ctrl-C.", 120.0)
        follower = asyncio.create_task(follow_dashboard(up.value("Dashboard"), seen))
        await wait_until(
            lambda: scaled_up_and_back_down(up.scalings(), 2),
            timeout_s=240.0,
            message="the fleet scaled up and back down to 2",
        )
        # the dashboard follows the fleet under that load: its peak and its way back
        await wait_until(
            lambda: scaled_up_and_back_down([(0, n, "") for n in dashboard_replicas(seen)], 2),
            timeout_s=60.0,
            message="the dashboard showed the fleet grow and come back to 2",
        )
        children = procs.descendants_of(up.proc.pid)
        stop_at = time.monotonic()
        up.ctrl_c()
    finally:
        if stop_at is None and up.proc.returncode is None:
            up.ctrl_c()
        code = await up.finish()
        stopped_in = time.monotonic() - stop_at if stop_at is not None else None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await follower
    output = up.text()
    print(f"demo: scalings {up.scalings()}; stopped in {stopped_in}")

    # the load drove the fleet up past its minimum of 2 and back down to it
    scalings = up.scalings()
    peak = max(to for _f, to, _r in scalings)
    assert peak >= 3, scalings
    assert all("connections" in reason for f, to, reason in scalings if to > f), scalings

    # the dashboard showed the peak (held for many of its samples) and live numbers
    shown = dashboard_replicas(seen)
    assert peak in shown, (shown, scalings)
    live = [f["live"]["connections"] for p in seen for f in p["fleets"]]
    assert any(isinstance(c, float | int) and c > 0 for c in live), live

    # Ctrl-C: the load first (no gateway had a client left to drain), all within the bound
    assert code == 0, output
    assert stopped_in is not None
    assert stopped_in <= STOP_BOUND_S, f"stopped {stopped_in:.1f} s after Ctrl-C:\n{output}"
    assert "stopped: nothing left running" in output
    stopping = up.index_of("stopping:")
    assert stopping is not None, output
    assert not [line for line in up.lines[stopping:] if '"gateway_spawned"' in line], output
    stops = gateway_events(up.workdir, "gateway_stopping")
    assert stops, "the gateways logged their stop"
    assert all(event["connections"] == 0 for event in stops.values()), stops
    left = {pid for pid in children if procs.parent_of(pid) is not None}
    assert not left, f"still running after Ctrl-C: {left}"


async def test_a_second_ctrl_c_under_load_starts_nothing(tmp_path: Path) -> None:
    """The second Ctrl-C kills the load and the gateways: none may be started again."""
    up = await Up.start(
        tmp_path,
        "--load",
        "wedding-season",
        "--load-option",
        "start_hour=18",  # the evening peak from the start: 500 connections
        "--load-option",
        "progress_interval_s=0.5",
    )
    children: set[int] = set()
    first_at: float | None = None
    try:
        await up.wait_line("Ready. Stop with Ctrl-C.", 120.0)
        await wait_until(
            lambda: any(re.search(r"\] open ([2-9]\d\d)/", line) for line in up.lines),
            timeout_s=120.0,
            message="the load holds 200+ connections",
        )
        children = procs.descendants_of(up.proc.pid)
        first_at = time.monotonic()
        up.ctrl_c()
        await up.wait_line("stopping:", 30.0)
        up.ctrl_c()
    finally:
        if first_at is None and up.proc.returncode is None:
            up.ctrl_c()
        code = await up.finish()
    stopped_in = time.monotonic() - first_at if first_at is not None else None
    output = up.text()
    assert code == 0, output
    assert stopped_in is not None
    assert stopped_in <= STOP_BOUND_S, f"stopped {stopped_in:.1f} s after Ctrl-C:\n{output}"
    stopping = up.index_of("stopping:")
    assert stopping is not None
    after = up.lines[stopping:]
    assert not [line for line in after if '"gateway_spawned"' in line], output
    assert not [line for line in after if '"gateway_replacing"' in line], output
    left = {pid for pid in children if procs.parent_of(pid) is not None}
    assert not left, f"still running after Ctrl-C twice: {left}"
