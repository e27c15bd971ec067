"""`CommandLane`: pipelined request/reply on kept connections, against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from wsfleet_gateway.redis_lane import CommandLane
from wsfleet_gateway.redis_pool import make_client

from tests.support.waiting import wait_until
from wsfleet.services import RedisServer

SCRIPT = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def lane_on(
    server: RedisServer, max_idle: int = 4, timeout_s: float = 5.0
) -> AsyncIterator[CommandLane]:
    """A lane on `server`'s connections, closed (with its client) afterwards."""
    client = make_client(server.url, 1.0, 4)
    pool = client.connection_pool

    def make() -> AbstractConnection:
        conn: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        return conn

    lane = CommandLane(make, max_idle, timeout_s)
    try:
        yield lane
    finally:
        await lane.close()
        await client.aclose()


async def blocked_in_blpop(admin: aioredis.Redis) -> bool:
    return any(c.get("cmd") == "blpop" for c in await admin.client_list())


async def test_evalsha_loads_the_script_once_and_reuses_one_connection(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server) as lane:
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


async def test_a_kept_connection_the_server_closed_is_replaced_once(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server) as lane:
        await lane.warm(3)
        assert lane.opened == 3
        await admin.client_kill_filter(_type="normal", skipme=True)
        assert await lane.execute("PING") == "PONG"
        assert lane.stale == 3  # every killed connection found out and dropped
        assert lane.opened == 4


async def test_a_cancelled_read_drops_its_connection_and_idle_ones_are_bounded(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server, max_idle=1) as lane:
        blocked = asyncio.create_task(lane.execute("BLPOP", "nothing-here", 10))
        await wait_until(lambda: blocked_in_blpop(admin), 5.0, message="blocked in BLPOP")
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert await lane.execute("PING") == "PONG"  # a new connection, not the one mid-read
        assert lane.opened == 2
        await wait_until(lambda: not lane._batches, 5.0, message="the cancelled batch ended")
        await lane.warm(5)
        assert len(lane._idle) == 1  # at most max_idle kept


async def test_a_fresh_connection_that_fails_raises(redis_server: RedisServer) -> None:
    async with lane_on(redis_server) as lane:
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await lane.execute("PING")
        assert lane.stale == 0


async def test_commands_of_one_loop_pass_go_in_one_write_each_with_its_own_reply(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server) as lane:
        await admin.config_resetstat()
        replies = await asyncio.gather(
            *(lane.execute("ECHO", f"m{i}") for i in range(10)),
            lane.execute("NOT-A-COMMAND"),
            lane.execute("INCRBY", "lane-counter", 7),
            return_exceptions=True,
        )
        assert replies[:10] == [f"m{i}" for i in range(10)]
        assert isinstance(replies[10], ResponseError)  # fails alone: the rest are in step
        assert replies[11] == 7
        assert (lane.writes, lane.commands, lane.opened) == (1, 12, 1)
        stats = await admin.info("commandstats")
        assert stats["cmdstat_echo"]["calls"] == 10
        assert await lane.execute("PING") == "PONG"  # the same connection, still in step
        assert (lane.writes, lane.opened) == (2, 1)


async def test_a_caller_cancelled_alone_leaves_its_batch_answered(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    """Redis answers a pipeline in order: PING's reply waits behind the BLPOP's."""
    async with lane_on(redis_server) as lane:
        await admin.delete("lane-list")
        blpop = asyncio.create_task(lane.execute("BLPOP", "lane-list", 10))
        ping = asyncio.create_task(lane.execute("PING"))
        await wait_until(lambda: blocked_in_blpop(admin), 5.0, message="blocked in BLPOP")
        assert lane.writes == 1
        ping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ping
        await admin.rpush("lane-list", "x")
        assert await blpop == ["lane-list", "x"]
        await wait_until(lambda: not lane._batches, 5.0, message="the batch ended")
        assert len(lane._idle) == 1  # PING's reply was read and dropped: still in step
        assert await lane.execute("ECHO", "after") == "after"
        assert lane.opened == 1


async def test_a_batch_past_its_timeout_fails_and_drops_the_connection(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server, timeout_s=0.3) as lane:
        with pytest.raises(TimeoutError):
            await lane.execute("BLPOP", "never-pushed", 30)
        assert lane._idle == []
        assert await lane.execute("PING") == "PONG"
        assert lane.opened == 2


async def test_close_cancels_queued_and_running_batches(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server) as lane:
        running = asyncio.create_task(lane.execute("BLPOP", "never-pushed", 30))
        await wait_until(lambda: blocked_in_blpop(admin), 5.0, message="blocked in BLPOP")
        queued = asyncio.create_task(lane.execute("PING"))
        await asyncio.sleep(0)  # queued, not yet flushed
        await lane.close()
        for task in (running, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not lane._batches


async def all_idle_closed(lane: CommandLane) -> bool:
    return all([await conn.can_read() for conn in lane._idle])


async def test_a_command_not_repeatable_is_never_sent_twice(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    """A publish must not run twice; a read may be sent again after a lost connection."""
    async with lane_on(redis_server) as lane:
        await lane.warm(1)
        await admin.client_kill_filter(_type="normal", skipme=True)
        await wait_until(lambda: all_idle_closed(lane), 5.0, message="the kill seen")
        # closed while idle: found out before anything is sent, so even this one is safe
        assert await lane.execute("INCR", "once", repeatable=False) == 1
        assert lane.stale == 1

        for repeatable, expected_calls in ((True, 2), (False, 1)):
            await admin.config_resetstat()
            blocked = asyncio.create_task(
                lane.execute("BLPOP", "lane-kill", 10, repeatable=repeatable)
            )
            await wait_until(lambda: blocked_in_blpop(admin), 5.0, message="blocked in BLPOP")
            await admin.client_kill_filter(_type="normal", skipme=True)  # lost mid-command
            if repeatable:  # sent again on a new connection: answered there
                await wait_until(lambda: blocked_in_blpop(admin), 5.0, message="sent again")
                await admin.rpush("lane-kill", "x")
                assert await blocked == ["lane-kill", "x"]
            else:  # it may have run: the caller learns, nothing is sent again
                with pytest.raises(RedisConnectionError):
                    await blocked
            stats = await admin.info("commandstats")
            assert stats["cmdstat_blpop"]["calls"] == expected_calls
