"""A gateway SIGKILLed while one connection's publishes are pipelined to Redis.

A client publishes to one channel in bursts of `BURST` without waiting for replies (the
gateway sends the publishes queued on a connection to Redis back to back, as one
pipeline) and keeps two bursts in flight: when the first reply of a burst arrives, the
next burst is on its way to Redis. At such a moment the gateway is SIGKILLed, `ROUNDS`
times, a new gateway taking its place each time. What a client can rely on:

- every acknowledged publish is in the channel once, at the offset it was acknowledged
  with (a process dying after Redis ran a publish does not run it twice);
- what ran of a connection's publishes is what it sent, in order, up to some point: the
  publishes after the last acknowledged one either ran in order right after it or not at
  all, never with a gap (so a client that resends from its first unacknowledged publish
  after reading the channel's history can tell exactly what to resend);
- a subscriber on another gateway gets exactly what ran, once each and in offset order.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chaos.follower import Follower, faults
from tests.support.waiting import wait_until
from wsfleet.client import Client, ConnectionClosedError
from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.services import RedisServer

CHANNEL = "burst-venue"
BURST = 64
BURSTS = 6
"""Bursts sent; the kill comes as the one before the last is answered."""
ROUNDS = 3
WAIT_S = 60.0
ENV = {
    "WSFLEET_AUTH": "disabled",
    "WSFLEET_USER_CONNECTS_PER_MIN": "1000000",
    "WSFLEET_HISTORY_MAX_LEN": "100000",
    "WSFLEET_HISTORY_RECOVER_LIMIT": "100000",
}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def gateways(redis_server: RedisServer) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for gateway in started:
        gateway.stop()


def start_gateway(redis_server: RedisServer, started: list[ServerProcess]) -> ServerProcess:
    env = {**ENV, "WSFLEET_NODE_NAME": f"burst-gw-{len(started)}"}
    gateway = gateway_process(redis_url=redis_server.url, env=env)
    started.append(gateway)
    return gateway.start(WAIT_S)


async def publish_until_killed(gateway: ServerProcess, round_: int) -> dict[int, str]:
    """Bursts of publishes, two in flight; SIGKILL as the last but one is answered (the
    last then goes to Redis). The offsets acknowledged, by publish number."""
    publisher = await Client.connect(gateway.ws_url)
    sent: list[asyncio.Task[str]] = []

    def burst() -> asyncio.Task[str]:
        first = len(sent)
        for n in range(first, first + BURST):
            sent.append(asyncio.create_task(publisher.publish(CHANNEL, {"r": round_, "n": n})))
        return sent[first]

    try:
        firsts = [burst()]
        for _ in range(BURSTS - 1):
            firsts.append(burst())  # this one is queued behind the one in flight
            await firsts[-2]  # the one before is answered: this one goes to Redis now
        os.kill(gateway.pid, signal.SIGKILL)  # as the last burst goes to Redis
        results = await asyncio.gather(*sent, return_exceptions=True)
    finally:
        await publisher.close()
    acked: dict[int, str] = {}
    for n, result in enumerate(results):
        if isinstance(result, BaseException):
            assert isinstance(result, ConnectionClosedError), result  # lost, not refused
        else:
            acked[n] = result
    assert len(acked) > (BURSTS - 2) * BURST  # a reply of the last but one came
    return acked


async def test_a_gateway_killed_mid_pipeline_runs_a_prefix_once_and_in_order(
    redis_server: RedisServer, gateways: list[ServerProcess]
) -> None:
    reader = start_gateway(redis_server, gateways)
    follower = Follower(reader.ws_url, [CHANNEL])
    following = asyncio.create_task(follower.run())
    client = await Client.connect(reader.ws_url)
    try:
        await wait_until(follower.ready.is_set, WAIT_S, message="the follower subscribed")
        start = (await client.subscribe(CHANNEL)).offset
        acked: list[dict[int, str]] = []
        for round_ in range(ROUNDS):
            doomed = start_gateway(redis_server, gateways)
            acked.append(await publish_until_killed(doomed, round_))

        reply = await client.subscribe(CHANNEL, since=start)
        assert reply.recovered
        ran: list[tuple[int, int, str]] = [
            (m.data["r"], m.data["n"], m.offset) for m in reply.history
        ]
        report: list[dict[str, Any]] = []
        for round_, acks in enumerate(acked):
            mine = [(n, offset) for r, n, offset in ran if r == round_]
            numbers = [n for n, _ in mine]
            assert numbers == list(range(len(numbers))), f"round {round_}: not a prefix"
            assert {n: o for n, o in mine if n in acks} == acks  # each once, where acked
            report.append({"acked": len(acks), "ran_unacked": len(mine) - len(acks)})
        print(f"\npipeline kill: {report}")
        assert [r for r, _, _ in ran] == sorted(r for r, _, _ in ran)  # rounds in order

        offsets = [offset for _, _, offset in ran]
        got = follower.got
        await wait_until(
            lambda: offsets[-1] in got.get(CHANNEL, []), WAIT_S, message="the last delivery"
        )
        assert set(got[CHANNEL]) == set(offsets)
        assert faults(offsets, got[CHANNEL]) == {"lost": 0, "duplicated": 0, "out_of_order": 0}
        assert follower.recoveries == 0  # its gateway never went
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        follower.close()
        await client.close()
