"""`CommandLane`: raw request/reply on kept connections, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from wsfleet_gateway.redis_pool import CommandLane, make_client

from tests.support.waiting import wait_until
from wsfleet.services import RedisServer

SCRIPT = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def lane_for(server: RedisServer, max_idle: int = 4) -> tuple[CommandLane, aioredis.Redis]:
    client = make_client(server.url, 1.0, 4)
    pool = client.connection_pool

    def make() -> AbstractConnection:
        conn: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        return conn

    return CommandLane(make, max_idle), client


async def blocked_in_blpop(admin: aioredis.Redis) -> bool:
    return any(c.get("cmd") == "blpop" for c in await admin.client_list())


async def test_evalsha_loads_the_script_once_and_reuses_one_connection(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    lane, client = lane_for(redis_server)
    try:
        await admin.script_flush()
        sha = await admin.script_load(SCRIPT)
        await admin.script_flush()  # the server forgot it: the lane must load it itself
        for i in range(5):
            assert await lane.evalsha(sha, SCRIPT, ["k"], [i]) == ["k", str(i)]
        assert lane.opened == 1
        with pytest.raises(ResponseError):  # an error reply: the connection stays in step
            await lane.execute("NOT-A-COMMAND")
        assert await lane.execute("PING") == "PONG"
        assert lane.opened == 1
    finally:
        await lane.close()
        await client.aclose()


async def test_a_kept_connection_the_server_closed_is_replaced_once(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    lane, client = lane_for(redis_server)
    try:
        await asyncio.gather(*(lane.execute("PING") for _ in range(3)))
        assert lane.opened == 3
        await admin.client_kill_filter(_type="normal", skipme=True)
        assert await lane.execute("PING") == "PONG"
        assert lane.stale == 3  # every killed connection found out and dropped
        assert lane.opened == 4
    finally:
        await lane.close()
        await client.aclose()


async def test_a_cancelled_read_drops_its_connection_and_idle_ones_are_bounded(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    lane, client = lane_for(redis_server, max_idle=1)
    try:
        blocked = asyncio.create_task(lane.execute("BLPOP", "nothing-here", 10))
        await wait_until(lambda: blocked_in_blpop(admin), 5.0, message="blocked in BLPOP")
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert await lane.execute("PING") == "PONG"  # a new connection, not the one mid-read
        assert lane.opened == 2
        await asyncio.gather(*(lane.execute("PING") for _ in range(3)))
        assert len(lane._idle) == 1  # the others were closed, not kept
    finally:
        await lane.close()
        await client.aclose()


async def test_a_fresh_connection_that_fails_raises(redis_server: RedisServer) -> None:
    lane, client = lane_for(redis_server)
    redis_server.stop()
    try:
        with pytest.raises(RedisConnectionError):
            await lane.execute("PING")
        assert lane.stale == 0
    finally:
        await lane.close()
        await client.aclose()
