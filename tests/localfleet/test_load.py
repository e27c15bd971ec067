"""The load tool against real gateway processes: the drains it follows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support.waiting import wait_until
from wsfleet.loadtest import run_scenario
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
