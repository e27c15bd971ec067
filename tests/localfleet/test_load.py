"""The demo's load against real gateway processes: its own process, and drains it follows."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from tests.support.waiting import wait_until
from wsfleet.loadtest import run_scenario
from wsfleet.localfleet import procs
from wsfleet.localfleet.load import LoadProcess
from wsfleet.localfleet.supervisor import Gateway, GatewaySupervisor


def ws_url(sup: GatewaySupervisor) -> str:
    return f"ws://127.0.0.1:{sup.config.port}/ws"


async def counts(sup: GatewaySupervisor, gateways: list[Gateway]) -> dict[str, int]:
    found = await sup.connection_counts(gateways)
    return {name: round(value or 0) for name, value in found.items()}


def drain_report(log_path: Path) -> dict[str, object]:
    for line in log_path.read_text().splitlines():
        if line.startswith("{") and '"drain_finished"' in line:
            event: dict[str, object] = json.loads(line)
            return event
    raise AssertionError(f"no drain_finished in {log_path}")


async def test_load_users_follow_a_drain_to_the_other_gateway(
    supervisor: GatewaySupervisor,
) -> None:
    """A scale-down drains a gateway: the load's users move as real clients do (the
    `reconnect` frame) instead of holding the drain until its grace period ends."""
    gateways = await supervisor.scale_up_to(2)
    users = 40
    stop = asyncio.Event()
    run = asyncio.create_task(
        run_scenario(
            "photographer",
            ws_url(supervisor),
            {"connections": users, "duration_s": 120.0, "think_time_s": 0.05, "stop": stop},
        )
    )
    try:
        spread = await wait_until(
            lambda: _spread(supervisor, gateways, users), timeout_s=60, message="users spread"
        )
        victim = next(g for g in gateways if g.name == max(spread, key=spread.__getitem__))
        keeper = next(g for g in gateways if g is not victim)
        supervisor.begin_drain(victim, timeout_s=60.0)
        assert await supervisor.wait_exited(victim, 60.0)
        drained = drain_report(victim.log_path)
        assert drained["connections"] == spread[victim.name]
        assert drained["forced"] == 0, drained  # every user left when asked, none was cut off
        await wait_until(
            lambda: _all_on(supervisor, keeper, users), timeout_s=60, message="users moved"
        )
    finally:
        stop.set()
        report = await run
    assert report.stats.failed == 0
    assert report.stats.opened >= users + spread[victim.name]  # the moved users connected again
    assert report.stats.errors.get("disconnected", 0) == 0, report.stats.errors
    assert report.stats.latencies["switch"].count > 0


async def _spread(sup: GatewaySupervisor, gateways: list[Gateway], users: int) -> dict[str, int]:
    found = await counts(sup, gateways)
    return found if sum(found.values()) == users and all(found.values()) else {}


async def _all_on(sup: GatewaySupervisor, gateway: Gateway, users: int) -> bool:
    return (await counts(sup, [gateway])).get(gateway.name) == users


async def test_the_load_process_runs_beside_us_and_stops_on_request(
    supervisor: GatewaySupervisor,
) -> None:
    """`wsfleet up --load` runs the load in a child process: its progress is relayed to us,
    and stopping it ends the run (with its report) and closes every connection."""
    gateways = await supervisor.scale_up_to(1)
    lines: list[str] = []
    load = LoadProcess(
        "wedding-season",
        ws_url(supervisor),
        lines.append,
        {"connections": 20, "start_hour": 12.0, "progress_interval_s": 0.5},
    )
    await load.start()
    assert load.proc is not None
    try:
        assert load.proc.pid in procs.descendants_of(os.getpid())
        await wait_until(
            lambda: any(line.startswith("load wedding-season: [") for line in lines),
            timeout_s=60,
            message="a progress line relayed",
        )
        await wait_until(
            lambda: _connected(supervisor, gateways[0]),
            timeout_s=60,
            message="the load connected",
        )
    finally:
        await load.stop()
    assert load.proc.returncode == 0  # SIGTERM ended the run: it exited on its own
    assert any(line == "load wedding-season: round 1 finished" for line in lines), lines
    assert not any("the load process exited" in line for line in lines), lines
    await wait_until(
        lambda: _empty(supervisor, gateways[0]), timeout_s=10, message="its connections closed"
    )


async def _connected(sup: GatewaySupervisor, gateway: Gateway) -> bool:
    return (await counts(sup, [gateway])).get(gateway.name, 0) >= 20


async def _empty(sup: GatewaySupervisor, gateway: Gateway) -> bool:
    return (await counts(sup, [gateway])).get(gateway.name) == 0
