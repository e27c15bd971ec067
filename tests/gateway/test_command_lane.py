"""`CommandLane`: pipelined, multiplexed request/reply on kept connections, against a real
Redis."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from wsfleet_gateway.backends.redis.lane import CommandLane
from wsfleet_gateway.backends.redis.resp import Endpoint

from tests.support.waiting import wait_until
from wsfleet.services import RedisServer

SCRIPT = "return {KEYS[1], ARGV[1]}"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def lane_on(
    server: RedisServer, max_conns: int = 4, timeout_s: float = 5.0
) -> AsyncIterator[CommandLane]:
    """A lane on `server`, closed afterwards."""
    lane = CommandLane(Endpoint.from_url(server.url), max_conns, timeout_s)
    try:
        yield lane
    finally:
        await lane.close()


async def blocked_in_blpop(admin: aioredis.Redis) -> bool:
    return any(c.get("cmd") == "blpop" for c in await admin.client_list())


async def blpop_calls(admin: aioredis.Redis) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_blpop", {}).get("calls", 0))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_conns"):
        CommandLane(Endpoint(), 0)
    with pytest.raises(ValueError, match="timeout_s"):
        CommandLane(Endpoint(), 1, 0)


async def test_evalsha_loads_the_script_once_and_reuses_one_connection(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server) as lane:
        await admin.script_flush()
        sha = await admin.script_load(SCRIPT)
        await admin.script_flush()  # the server forgot it: the lane must load it itself
        for i in range(5):
            assert await lane.evalsha(sha, SCRIPT, 1, "k", i) == ["k", str(i)]
        assert lane.opened == 1
        with pytest.raises(ResponseError):  # an error reply: the connection stays in step
            await lane.execute("NOT-A-COMMAND")
        assert await lane.execute("PING") == "PONG"
        assert (lane.opened, lane.connections) == (1, 1)


async def test_connections_the_server_closed_are_dropped_at_once_and_replaced(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server) as lane:
        await lane.warm(3)
        assert (lane.opened, lane.connections) == (3, 3)
        await admin.client_kill_filter(_type="normal", skipme=True)
        await wait_until(lambda: lane.stale == 3, 5.0, message="every kill seen")
        assert lane.connections == 0
        assert await lane.execute("PING") == "PONG"
        assert (lane.opened, lane.connections) == (4, 1)
        await lane.warm(9)
        assert lane.connections == 4  # at most max_conns


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


async def test_a_caller_that_gives_up_leaves_the_connection_in_step(
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
        # PING's reply was read and dropped: the connection is in step for the next
        assert await lane.execute("ECHO", "after") == "after"
        assert lane.opened == 1


async def test_writes_are_multiplexed_and_a_busy_lane_opens_another_connection(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server, max_conns=2) as lane:
        await admin.delete("lane-mux")
        blpop = asyncio.create_task(lane.execute("BLPOP", "lane-mux", 10))
        await wait_until(lambda: blocked_in_blpop(admin), 5.0, message="blocked in BLPOP")
        # written behind the BLPOP (no waiting for its reply), which opens a second one
        behind = asyncio.create_task(lane.execute("ECHO", "behind"))
        await wait_until(lambda: lane.connections == 2, 5.0, message="a second connection")
        assert await lane.execute("ECHO", "beside") == "beside"  # not held up
        assert not behind.done()
        await admin.rpush("lane-mux", "x")
        assert await blpop == ["lane-mux", "x"]
        assert await behind == "behind"
        assert lane.opened == 2


async def test_a_fresh_connection_that_fails_raises(redis_server: RedisServer) -> None:
    async with lane_on(redis_server) as lane:
        redis_server.stop()
        with pytest.raises(RedisConnectionError, match="cannot connect"):
            await lane.execute("PING")
        assert (lane.stale, lane.opened) == (0, 0)


async def test_a_connection_stuck_past_the_timeout_is_aborted(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server, timeout_s=0.3) as lane:
        with pytest.raises(TimeoutError, match="BLPOP"):
            await lane.execute("BLPOP", "never-pushed", 30)
        assert lane.connections == 0
        assert lane.stale == 0  # closed here, not by the server
        assert await lane.execute("PING") == "PONG"
        assert lane.opened == 2


async def test_close_cancels_queued_and_written_commands(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server) as lane:
        written = asyncio.create_task(lane.execute("BLPOP", "never-pushed", 30))
        await wait_until(lambda: blocked_in_blpop(admin), 5.0, message="blocked in BLPOP")
        queued = asyncio.create_task(lane.execute("PING"))
        await asyncio.sleep(0)  # queued, not yet flushed
        await lane.close()
        for task in (written, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert lane.connections == 0
        with pytest.raises(RedisConnectionError, match="closed"):
            await lane.execute("PING")


async def test_a_command_not_repeatable_is_never_sent_twice(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    """A publish must not run twice; a read may be sent again after a lost connection."""
    async with lane_on(redis_server) as lane:
        await lane.warm(1)
        await admin.client_kill_filter(_type="normal", skipme=True)
        await wait_until(lambda: lane.stale == 1, 5.0, message="the kill seen")
        # dropped while idle: nothing was sent on it, so even this one runs once, here
        assert await lane.execute("INCR", "once", repeatable=False) == 1

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
            assert await blpop_calls(admin) == expected_calls


async def test_a_read_is_sent_again_once_only(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    async with lane_on(redis_server) as lane:
        await admin.config_resetstat()
        blocked = asyncio.create_task(lane.execute("BLPOP", "lane-twice", 10))
        for sent in (1, 2):

            async def blocked_again(sent: int = sent) -> bool:
                return await blpop_calls(admin) == sent and await blocked_in_blpop(admin)

            await wait_until(blocked_again, 5.0, message=f"BLPOP sent {sent} time(s)")
            await admin.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await blpop_calls(admin) == 2
        assert lane.stale == 2


async def test_a_connection_closing_here_is_not_written_to(redis_server: RedisServer) -> None:
    """Aborted (by the watchdog, or here) a connection is closing at once, but its loss is
    reported a loop pass later: a write in between must go elsewhere, not be lost."""
    async with lane_on(redis_server) as lane:
        await lane.warm(1)
        reply = asyncio.ensure_future(lane.execute("PING"))
        await asyncio.sleep(0)  # the PING is queued; its write comes in the next pass
        lane._conns[0].abort()
        assert await asyncio.wait_for(reply, 5.0) == "PONG"
        assert (lane.opened, lane.stale) == (2, 0)


async def test_a_command_that_cannot_be_encoded_fails_alone(redis_server: RedisServer) -> None:
    """Issue 17 §2: asked for in the same loop pass as others, a command with a lone
    surrogate raises in its own caller at once; the others are written and answered."""
    async with lane_on(redis_server) as lane:
        await lane.warm(1)
        results = await asyncio.gather(
            *(lane.execute("SET", f"iso-{i}", str(i)) for i in range(5)),
            lane.execute("SET", "iso-bad", "\ud800"),
            *(lane.evalsha(SHA, SCRIPT, 1, f"k{i}", i) for i in range(3)),
            lane.execute("GET", "iso-3"),
            return_exceptions=True,
        )
        assert results[:5] == ["OK"] * 5
        assert isinstance(results[5], UnicodeEncodeError)
        assert results[6:9] == [["k0", "0"], ["k1", "1"], ["k2", "2"]]
        assert results[9] == "3"
        assert lane.stale == 0
        assert await lane.execute("EXISTS", "iso-bad") == 0
