"""Issue 17's acceptance: an outside-style chaos run on a real Redis and two real gateway
processes, with 500 clients that follow `reconnect` and resume.

The gateways share one port (``SO_REUSEPORT``: the kernel spreads new connections, as
`wsfleet up` does), so a client reconnects to the same URL and lands on whichever gateway
listens. Redis keeps an append-only file (fsync on every write), so what it acknowledged
survives its restart. While publishers publish to 20 channels all along:

1. drain: SIGTERM one gateway; its clients get `reconnect` frames and move; a new gateway
   takes its place;
2. SIGKILL the other gateway; its clients lose their connection without a word and
   resume from the last offset they got; a new gateway takes its place;
3. Redis restart: stopped and started again on the same port and file.

Then every client must hold, per channel, every acknowledged publish after its first
subscribe reply exactly once and in offset order (counted as lost, duplicated, out of
order: all zero), and every resume must have said `recovered: true`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from wsfleet_gateway.broker import parse_offset

from tests.chaos.follower import Follower, Publisher, faults, stop_all
from tests.support.waiting import wait_until
from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.services import RedisServer, free_port

CLIENTS = 500
CHANNELS = [f"chaos-{i}" for i in range(20)]
PER_CLIENT = 2
PUBLISHERS = 4
LANES = 4
"""Publishes each publisher keeps in flight."""
PUBLISH_PAUSE_S = 0.005
"""Each lane's pause after a publish."""
WAIT_S = 60.0
CHAOS_ENV = {
    "WSFLEET_AUTH": "disabled",
    "WSFLEET_REUSE_PORT": "true",
    "WSFLEET_DRAIN_GRACE_S": "4",
    "WSFLEET_REDIS_TIMEOUT_S": "0.5",
    "WSFLEET_USER_CONNECTS_PER_MIN": "1000000",
    "WSFLEET_HISTORY_MAX_LEN": "100000",
    "WSFLEET_HISTORY_RECOVER_LIMIT": "100000",
    "WSFLEET_LOG_LEVEL": "info",
}

pytestmark = pytest.mark.timeout(300)


class Fleet:
    """Gateway processes on one shared port, started and stopped by the test."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self.gateways: list[ServerProcess] = []
        self.started = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start_one(self) -> ServerProcess:
        self.started += 1
        env = {**CHAOS_ENV, "WSFLEET_NODE_NAME": f"chaos-gw-{self.started}"}
        gateway = gateway_process(
            redis_url=self.redis_url, env=env, extra_args=["--port", str(self.port)]
        )
        gateway.start(WAIT_S)
        self.gateways.append(gateway)
        return gateway

    def running(self) -> list[ServerProcess]:
        return [g for g in self.gateways if g.running]

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()


@pytest.fixture
def chaos_redis() -> Iterator[RedisServer]:
    server = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    with server:
        yield server


@pytest.fixture
def fleet(chaos_redis: RedisServer) -> Iterator[Fleet]:
    made = Fleet(chaos_redis.url)
    try:
        yield made
    finally:
        made.stop()


def wait_exit(gateway: ServerProcess, timeout_s: float) -> int:
    assert gateway.proc is not None
    return gateway.proc.wait(timeout=timeout_s)


async def all_ready(followers: list[Follower], what: str) -> None:
    await wait_until(
        lambda: all(f.ready.is_set() for f in followers), WAIT_S, interval_s=0.05, message=what
    )


async def acked_more(publishers: list[Publisher], than: int, what: str) -> None:
    def total() -> int:
        return sum(len(o) for p in publishers for o in p.acked.values())

    await wait_until(lambda: total() >= than + 100, WAIT_S, interval_s=0.02, message=what)


def acked_total(publishers: list[Publisher]) -> int:
    return sum(len(o) for p in publishers for o in p.acked.values())


async def test_drain_sigkill_and_a_redis_restart_lose_duplicate_and_reorder_nothing(
    chaos_redis: RedisServer, fleet: Fleet
) -> None:
    started = time.monotonic()
    fleet.start_one()
    fleet.start_one()
    followers = [
        Follower(fleet.url, [CHANNELS[(i + k * 7) % len(CHANNELS)] for k in range(PER_CLIENT)])
        for i in range(CLIENTS)
    ]
    publishers = [Publisher(fleet.url, CHANNELS, PUBLISH_PAUSE_S, LANES) for _ in range(PUBLISHERS)]
    stop = asyncio.Event()
    following: list[asyncio.Task[None]] = []
    publishing: list[asyncio.Task[None]] = []
    report: dict[str, Any] = {}
    try:
        for follower in followers:  # in small groups: connecting is not under test
            following.append(asyncio.create_task(follower.run()))
            if len(following) % 50 == 0:
                await all_ready(followers[: len(following)], "clients subscribed")
        await all_ready(followers, "every client subscribed")
        publishing = [asyncio.create_task(p.run(stop)) for p in publishers]
        await acked_more(publishers, 0, "publishes flowing")

        # 1. drain: SIGTERM; clients follow their reconnect frames
        draining, other = fleet.running()
        assert draining.proc is not None
        draining.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(wait_exit, draining, WAIT_S) == 0
        fleet.start_one()
        await all_ready(followers, "every client moved after the drain")
        report["moved"] = sum(f.moves for f in followers)
        await acked_more(publishers, acked_total(publishers), "publishes after the drain")

        # 2. SIGKILL the other; its clients resume from their own last offsets
        assert other.proc is not None
        os.kill(other.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(wait_exit, other, WAIT_S)
        fleet.start_one()
        await wait_until(
            lambda: sum(f.recoveries for f in followers) > 0, WAIT_S, message="recoveries"
        )
        await all_ready(followers, "every client back after the SIGKILL")
        report["recovered_after_kill"] = sum(f.recoveries for f in followers)
        await acked_more(publishers, acked_total(publishers), "publishes after the SIGKILL")

        # 3. Redis restart (same port, same append-only file)
        failed = sum(p.failed for p in publishers)
        await asyncio.to_thread(chaos_redis.stop)
        await wait_until(
            lambda: sum(p.failed for p in publishers) > failed, WAIT_S, message="an outage"
        )
        await asyncio.to_thread(chaos_redis.start)
        await acked_more(publishers, acked_total(publishers), "publishes after the restart")
    finally:
        stop.set()
        await asyncio.gather(*publishing, return_exceptions=True)
    try:
        # the last acknowledged publish of every channel reaches every subscriber
        last = {ch: max(o, key=parse_offset) for ch, o in merged(publishers).items()}
        for follower in followers:
            await wait_until(
                lambda f=follower: all(last[ch] in f.got.get(ch, ()) for ch in f.channels),
                WAIT_S,
                interval_s=0.05,
                message="every client has the last publish of its channels",
            )
        totals = {"lost": 0, "duplicated": 0, "out_of_order": 0}
        acked = merged(publishers)
        deliveries = 0
        for follower in followers:
            for channel in follower.channels:
                start = parse_offset(follower.start[channel])
                expected = [o for o in acked[channel] if parse_offset(o) > start]
                got = follower.got[channel]
                deliveries += len(got)
                for key, value in faults(expected, got).items():
                    totals[key] += value
        report |= {
            "seconds": round(time.monotonic() - started, 1),
            "clients": CLIENTS,
            "acknowledged": acked_total(publishers),
            "not_acknowledged": sum(p.failed for p in publishers),
            "deliveries": deliveries,
            "unrecovered": sum(f.unrecovered for f in followers),
            **totals,
        }
        print(f"\nchaos: {report}")
        assert report["moved"] > 0
        assert report["recovered_after_kill"] > 0
        assert totals == {"lost": 0, "duplicated": 0, "out_of_order": 0}, report
        assert report["unrecovered"] == 0, report
    finally:
        await stop_all([*following])
        for client in [*followers, *publishers]:
            client.close()


def merged(publishers: list[Publisher]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {ch: [] for ch in CHANNELS}
    for publisher in publishers:
        for channel, offsets in publisher.acked.items():
            out[channel] += offsets
    return {ch: sorted(o, key=parse_offset) for ch, o in out.items()}
