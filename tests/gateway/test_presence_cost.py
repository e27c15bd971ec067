"""What presence costs a switch (issue 22): no Redis round trip.

A gateway with a real Redis, counted at its command lane (`CommandLane.writes`: one per
batch of commands sent, `commands`: each command): a switch to a channel the gateway
does not hold yet sends its history read in one write, with presence on or off; with
presence on the same write carries the leave and the join (``ZREM``, ``ZADD``,
``PEXPIRE``). A switch back to a channel the gateway holds waits on no Redis at all,
presence on or off: its presence write goes out and nobody waits for it (shown with
Redis holding every write back).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.backends.redis.lane import CommandLane
from wsfleet_gateway.backends.redis.streams import presence_key

from tests.gateway.helpers import make_settings
from tests.support.waiting import wait_until
from wsfleet.client import Client
from wsfleet.services import RedisServer

SWITCHES = 6


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def lane_of(gateway: Gateway) -> CommandLane:
    assert isinstance(gateway.broker, RedisBroker)
    lane = gateway.broker.lane
    assert isinstance(lane, CommandLane)
    return lane


@pytest.mark.parametrize("presence", [True, False], ids=["presence-on", "presence-off"])
async def test_a_switch_costs_one_redis_write_with_presence_on_or_off(
    redis_server: RedisServer, admin: aioredis.Redis, presence: bool
) -> None:
    settings = make_settings(
        redis_url=redis_server.url,
        presence=presence,
        presence_ttl_s=600.0,  # no heartbeat refresh inside the measured switches
        node_name=f"cost-{presence}",
    )
    gw = Gateway(settings)
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        lane = lane_of(gw)
        channels = [f"cost-{presence}-{i}-{time.monotonic_ns()}" for i in range(SWITCHES + 1)]
        await client.subscribe(channels[0])
        per_switch: list[tuple[int, int]] = []
        for previous, following in itertools.pairwise(channels):
            writes, commands = lane.writes, lane.commands
            reply = await client.switch(previous, following)  # new to this gateway: one read
            assert reply.channel == following
            per_switch.append((lane.writes - writes, lane.commands - commands))
        # the history read alone, or the read with ZREM + ZADD + PEXPIRE: one write each
        assert per_switch == [(1, 4 if presence else 1)] * SWITCHES
        held = await admin.zcard(presence_key(channels[-1]))
        assert held == (1 if presence else 0)
        assert all([await admin.zcard(presence_key(c)) == 0 for c in channels[:-1]])
    finally:
        await client.close()
        await gw.stop()


async def test_a_switch_back_to_a_held_channel_waits_for_no_presence_write(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    settings = make_settings(
        redis_url=redis_server.url, presence_ttl_s=600.0, redis_timeout_s=10.0, linger_s=60.0
    )
    gw = Gateway(settings)
    await gw.start()
    client = await Client.connect(gw.ws_url)
    try:
        a, b = f"held-a-{time.monotonic_ns()}", f"held-b-{time.monotonic_ns()}"
        await client.subscribe(a)
        await client.switch(a, b)
        await client.switch(b, a)  # both held now (subscribed, history ring, cached metadata)
        lane = lane_of(gw)
        writes, commands = lane.writes, lane.commands
        await admin.execute_command("CLIENT", "PAUSE", 3000, "WRITE")  # Redis holds writes back
        try:
            started = time.monotonic()
            async with asyncio.timeout(2.0):
                await client.switch(a, b)
            took = time.monotonic() - started
            assert took < 1.5, took  # not held back with its presence write
            assert await admin.zcard(presence_key(b)) == 0  # which is still waiting
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
        assert (lane.writes - writes, lane.commands - commands) == (1, 3)
        await wait_until(
            lambda: _zcards(admin, a, b, (0, 1)), timeout_s=10.0, message="the write landed"
        )
    finally:
        await client.close()
        await gw.stop()


async def _zcards(admin: aioredis.Redis, a: str, b: str, want: tuple[int, int]) -> bool:
    got = (await admin.zcard(presence_key(a)), await admin.zcard(presence_key(b)))
    return got == want
