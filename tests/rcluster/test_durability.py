"""``publish_durability="replicas"`` on one Redis with a replica: a publish is acknowledged
once ``WAIT`` saw the replica have it, refused (`unavailable`) when no replica confirms in
time; a script the server forgot is loaded again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.broker import BrokerUnavailableError

from tests.support.waiting import wait_until
from wsfleet.services import RedisServer


@pytest.fixture
def primary_and_replica(redis_server: RedisServer) -> Iterator[tuple[RedisServer, RedisServer]]:
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(redis_server.port)])
    with replica:
        yield redis_server, replica


async def linked(primary: RedisServer) -> bool:
    broker = RedisBroker(primary.url)
    try:
        info = await broker._lane.execute("INFO", "replication")
        return "connected_slaves:1" in str(info) and "state=online" in str(info)
    finally:
        await broker.close()


async def test_replicas_durability_acknowledges_only_what_a_replica_has(
    primary_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = primary_and_replica
    await wait_until(lambda: linked(primary), timeout_s=20, message="replica online")
    with pytest.raises(ValueError, match="publish_durability"):
        RedisBroker(primary.url, publish_durability="quorum")
    broker = RedisBroker(primary.url, op_timeout_s=0.4, publish_durability="replicas")
    await broker.start(lambda d: None)
    try:
        first = await broker.publish("d", '"one"')
        await broker._lane.execute("SCRIPT", "FLUSH")  # forgotten: loaded again, once
        second = await broker.publish("d", '"two"')
        history = await broker.history("d", None, 10)
        assert [m.offset for m in history.messages] == [first.offset, second.offset]
        await asyncio.to_thread(replica.stop)
        with pytest.raises(BrokerUnavailableError, match="not confirmed by a replica"):
            await broker.publish("d", '"three"')
        # not acknowledged, but kept by the primary: what the error says
        assert len((await broker.history("d", None, 10)).messages) == 3
    finally:
        await broker.close()
