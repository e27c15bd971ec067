"""The gateway supervisor and the local scale target, on real gateway processes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import pytest
from wsfleet_operator.targets import ScaleTarget

from tests.localfleet.traffic import Publisher, Subscriber, caught_up, connect, stream_truth, tally
from tests.support.waiting import wait_until
from wsfleet.localfleet.load import LoadUnavailableError, check_load, load_options, run_load
from wsfleet.localfleet.supervisor import GatewayState, GatewaySupervisor, SupervisorConfig
from wsfleet.localfleet.target import LocalProcessTarget
from wsfleet.services import RedisServer, free_port

from .conftest import GATEWAY_ENV


def ws_url(sup: GatewaySupervisor) -> str:
    return f"ws://127.0.0.1:{sup.config.port}/ws"


async def test_gateways_share_one_public_port(supervisor: GatewaySupervisor) -> None:
    started = await supervisor.scale_up_to(2)
    assert {g.state for g in started} == {GatewayState.READY}
    assert len({g.admin_port for g in started}) == 2
    clients = [await connect(ws_url(supervisor)) for _ in range(40)]
    try:
        nodes = {c.welcome.node for c in clients if c.welcome is not None}
        assert nodes == {"gw-1", "gw-2"}  # the kernel spread them over both listeners
        counts = await wait_until(
            lambda: _counts_sum(supervisor, 40), timeout_s=30, message="40 connections counted"
        )
        assert counts
    finally:
        for client in clients:
            await client.close()


async def _counts_sum(supervisor: GatewaySupervisor, want: float) -> bool:
    counts = await supervisor.connection_counts()
    return sum(v or 0 for v in counts.values()) == want


async def test_target_scales_up_then_drains_the_emptiest(supervisor: GatewaySupervisor) -> None:
    target = LocalProcessTarget(supervisor, drain_timeout_s=30.0)
    assert isinstance(target, ScaleTarget)  # the operator's protocol
    await target.set_replicas(1, "start")
    clients = [await connect(ws_url(supervisor)) for _ in range(10)]  # all on gw-1
    try:
        await target.set_replicas(3, "load")
        assert await target.current_replicas() == 3
        assert await target.ready_replicas() == 3
        conns = await target.pod_connections()
        assert conns == {"gw-1": 10, "gw-2": 0, "gw-3": 0}
        # the autoscaler's deletion costs say which to keep
        await target.set_deletion_costs({"gw-1": 10, "gw-2": 5, "gw-3": 0})
        await target.set_replicas(2, "quiet")
        (draining,) = supervisor.draining()
        assert draining.name == "gw-3"
        await wait_until(lambda: not supervisor.draining(), timeout_s=60, message="drained")
        assert [g.name for g in supervisor.exited] == ["gw-3"]
        assert supervisor.exited[0].exit_code == 0
        # without costs: live counts decide; gw-1 holds every client
        await target.set_replicas(1, "quieter")
        assert [g.name for g in supervisor.draining()] == ["gw-2"]
        await wait_until(lambda: not supervisor.draining(), timeout_s=60, message="drained")
        assert [g.name for g in supervisor.active()] == ["gw-1"]
        assert all(c.connected for c in clients)
        assert [a[:2] for a in target.actions] == [(0, 1), (1, 3), (3, 2), (2, 1)]
    finally:
        for client in clients:
            await client.close()


async def test_a_gateway_that_dies_is_replaced(supervisor: GatewaySupervisor) -> None:
    await supervisor.scale_up_to(2)
    victim = supervisor.gateways["gw-1"]
    supervisor.kill(victim)
    await wait_until(
        lambda: [g.name for g in supervisor.serving()] == ["gw-2", "gw-3"],
        timeout_s=90,
        message="gw-1 replaced by gw-3",
    )
    assert victim.exit_code == -9
    assert victim.state is GatewayState.EXITED
    assert supervisor.pids() == {g.pid for g in supervisor.serving()}


async def test_sigkill_loses_no_message_for_clients_that_resume(
    supervisor: GatewaySupervisor, redis_server: RedisServer
) -> None:
    """SIGKILL (no drain): subscribers reconnect with resume and miss nothing."""
    await supervisor.scale_up_to(2)
    channels = [f"kill-{n}" for n in range(3)]
    url = ws_url(supervisor)
    subscribers = [await Subscriber.start(url, channels[: 1 + n % 3]) for n in range(30)]
    publisher = Publisher(url, channels, pause_s=0.02)
    try:
        on_victim = [s for s in subscribers if s.client.welcome and s.client.welcome.node == "gw-1"]
        assert on_victim, "the kernel put some subscribers on gw-1"
        publisher.start()
        await wait_until(lambda: publisher.published_at_least(50), timeout_s=60, message="traffic")
        supervisor.kill(supervisor.gateways["gw-1"])
        await wait_until(
            lambda: all(s.client.reconnects >= 1 for s in on_victim),
            timeout_s=90,
            message="subscribers of the killed gateway reconnected",
        )
        mark = len(publisher.acked)
        await wait_until(
            lambda: publisher.published_at_least(mark + 50), timeout_s=60, message="more"
        )
        await publisher.stop()
        publisher.check()
        truth = await stream_truth(redis_server.url, channels)
        assert set(publisher.acked) <= {(c, o) for c, offs in truth.items() for o in offs}
        await wait_until(
            lambda: caught_up(subscribers, truth), timeout_s=60, message="subscribers caught up"
        )
        result = tally(subscribers, truth)
        assert result.published >= 100
        assert result.lost == 0
        assert result.duplicated == 0
        assert result.extra == 0
        assert result.delivered == result.expected
    finally:
        await publisher.stop()
        for sub in subscribers:
            await sub.stop()


async def test_the_load_tool_drives_the_fleet(supervisor: GatewaySupervisor) -> None:
    """`wsfleet up --load wedding-season` runs the load tool's scenario in-process."""
    await supervisor.scale_up_to(2)
    lines: list[str] = []
    options = {"connections": 10, "duration_s": 3.0, "progress_interval_s": 0.5}
    rounds = await run_load("wedding-season", ws_url(supervisor), lines.append, options, 1)
    assert rounds == 1
    assert any("round 1 finished" in line for line in lines), lines
    assert any(line.startswith("load wedding-season: ") and "open" in line for line in lines)
    with pytest.raises(LoadUnavailableError, match="unknown load scenario 'nope'"):
        check_load("nope")
    assert load_options("wedding-season")["duration_s"] is None


async def test_a_scale_up_is_not_started_twice_by_the_supervise_loop(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """`scale_up_to` raises `desired` at once; its starts must count from then, or the
    supervise loop, running before they do, starts the same replicas again (a scale 2 → 4
    once ended with 6 gateways)."""
    config = SupervisorConfig(
        port=free_port(),
        workdir=tmp_path,
        redis_url=redis_server.url,
        env=GATEWAY_ENV,
        ready_timeout_s=90.0,
        supervise_interval_s=0.0,  # every loop pass: it always runs before the starts would
    )
    async with aiohttp.ClientSession() as session:
        sup = GatewaySupervisor(config, session)
        loop_task = asyncio.create_task(sup.supervise(), name="supervise")
        try:
            await asyncio.sleep(0)  # the loop has run once: it is scheduled every pass now
            started = await sup.scale_up_to(2)
            assert [g.name for g in started] == ["gw-1", "gw-2"]
            assert sorted(sup.gateways) == ["gw-1", "gw-2"]  # nothing more was spawned
        finally:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
            await sup.stop_all()


async def test_once_the_fleet_stops_a_killed_gateway_is_not_replaced(
    supervisor: GatewaySupervisor,
) -> None:
    """Ctrl-C, then Ctrl-C again (which kills the gateways): the supervise loop must not
    start new ones meanwhile, nor may a late scale-up (issue 17 §5)."""
    first, second = await supervisor.scale_up_to(2)
    supervisor.stop_starting()
    supervisor.kill(first)
    await wait_until(lambda: first.name not in supervisor.gateways, timeout_s=30, message="reaped")
    assert await supervisor.scale_up_to(3) == []
    assert list(supervisor.gateways) == [second.name]
    assert supervisor._starting == 0
