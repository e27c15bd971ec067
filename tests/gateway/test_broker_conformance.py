"""One suite, every `Broker` implementation: what the gateway relies on holds for the
in-memory broker (one process), the Redis broker (real redis-server) and the Redis
Cluster broker (a real cluster of 3 primaries and 3 replicas) alike.

Where they differ by design it is said here: Redis trims history approximately
(`MAXLEN ~`), and keeps a detached channel's subscription for `linger_s`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.backends.redis.cluster_broker import RedisClusterBroker
from wsfleet_gateway.broker import Broker, Delivery, parse_offset

from tests.support.waiting import wait_until
from wsfleet.services import RedisCluster, RedisServer

Make = Callable[..., Awaitable[tuple[Broker, list[Delivery]]]]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """`await make(**options)` -> (a started broker of this kind, what it delivered).

    ``cluster``: `RedisClusterBroker` on the session's Redis Cluster (3 primaries, 3
    replicas), emptied before each test.
    """
    brokers: list[Broker] = []
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        await asyncio.to_thread(cluster.flushall)

    async def factory(**options: Any) -> tuple[Broker, list[Delivery]]:
        broker: Broker
        if request.param == "memory":
            broker = MemoryBroker(**options)
        elif request.param == "cluster":
            broker = RedisClusterBroker(cluster.url, op_timeout_s=2.0, linger_s=0.05, **options)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            broker = RedisBroker(server.url, op_timeout_s=2.0, linger_s=0.05, **options)
        got: list[Delivery] = []
        await broker.start(got.append)
        brokers.append(broker)
        return broker, got

    yield factory
    for broker in brokers:
        await broker.close()


async def test_offsets_increase_per_channel_and_data_round_trips(make: Make) -> None:
    broker, _ = await make()
    assert broker.available
    sent = [{"n": i, "text": "été ✓"} for i in range(20)]
    deliveries = [await broker.publish("a", f'{{"n": {s["n"]}, "text": "été ✓"}}') for s in sent]
    keys = [parse_offset(d.offset) for d in deliveries]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert [d.data for d in deliveries] == sent
    assert all(d.channel == "a" for d in deliveries)


async def test_publish_many_runs_in_order_as_publish_would(make: Make) -> None:
    broker, got = await make()
    await broker.attach("a")
    before = await broker.publish("a", '"before"')
    sent = [{"n": i, "text": "été ✓"} for i in range(30)]
    results = await broker.publish_many("a", [json.dumps(s) for s in sent])
    deliveries = [r for r in results if isinstance(r, Delivery)]
    assert len(deliveries) == len(sent)
    keys = [parse_offset(d.offset) for d in [before, *deliveries]]
    assert all(a < b for a, b in itertools.pairwise(keys))
    assert [d.data for d in deliveries] == sent
    after = await broker.publish("a", '"after"')
    assert parse_offset(after.offset) > keys[-1]
    offsets = [d.offset for d in [before, *deliveries, after]]
    await wait_until(lambda: len(got) >= len(offsets), message="live deliveries")
    assert [d.offset for d in got] == offsets  # live, once each, in order
    history = await broker.history("a", None, 100)
    assert [d.offset for d in history.messages] == offsets
    assert await broker.publish_many("a", []) == []


async def test_history_without_since_is_the_latest_limit(make: Make) -> None:
    broker, _ = await make()
    empty = await broker.history("never", None, 10)
    assert (empty.messages, empty.offset, empty.recovered) == ([], "0-0", True)
    offsets = [(await broker.publish("a", str(i))).offset for i in range(5)]
    latest = await broker.history("a", None, 3)
    assert [d.data for d in latest.messages] == [2, 3, 4]
    assert latest.offset == offsets[-1]
    assert latest.recovered


async def test_history_since_recovers_exactly_what_came_after(make: Make) -> None:
    broker, _ = await make()
    offsets = [(await broker.publish("a", str(i))).offset for i in range(10)]
    after = await broker.history("a", offsets[6], 100)
    assert [d.data for d in after.messages] == [7, 8, 9]
    assert after.recovered
    current = await broker.history("a", offsets[-1], 100)
    assert (current.messages, current.recovered) == ([], True)
    too_many = await broker.history("a", offsets[2], 3)
    assert [d.data for d in too_many.messages] == [7, 8, 9]
    assert not too_many.recovered  # more were missed than the limit returns
    assert (await broker.history("never", "0-0", 10)).recovered


async def test_a_since_older_than_the_kept_history_is_not_recovered(make: Make) -> None:
    broker, _ = await make(history_max_len=5)
    first = (await broker.publish("a", "0")).offset
    for i in range(1, 400):  # far past MAXLEN ~ 5, whole stream nodes get trimmed
        await broker.publish("a", str(i))
    lost = await broker.history("a", first, 1000)
    assert not lost.recovered
    assert lost.messages
    assert lost.messages[-1].data == 399


async def test_only_attached_channels_are_delivered_and_join_misses_nothing(make: Make) -> None:
    broker, got = await make()
    await broker.publish("quiet", "0")
    snapshot = await broker.join("live", None, 10)
    assert snapshot.history.messages == []
    published = [await broker.publish("live", str(i)) for i in range(5)]
    await broker.publish("quiet", "1")
    await wait_until(lambda: len(got) >= 5, timeout_s=10, message="live deliveries")
    assert [d.offset for d in got] == [d.offset for d in published]
    broker.detach("live")


async def test_join_returns_history_and_meta_in_one_snapshot(make: Make) -> None:
    broker, _ = await make()
    await broker.set_meta("m", {"venue": "Old Mill", "guests": 120})
    first = await broker.publish("m", "1")
    snapshot = await broker.join("m", first.offset, 10, meta=True)
    assert snapshot.history.recovered
    assert snapshot.history.messages == []
    assert snapshot.meta_json is not None
    assert '"Old Mill"' in snapshot.meta_json
    without = await broker.read("m", None, 10, meta=False)
    assert without.meta_json is None
    assert [d.data for d in without.history.messages] == [1]
    broker.detach("m")


async def test_meta_is_replaced_whole_and_empty_when_never_set(make: Make) -> None:
    broker, _ = await make()
    assert await broker.get_meta("m") == {}
    meta = {"title": "June wedding", "tags": ["venue", "band"]}
    await broker.set_meta("m", meta)
    meta["title"] = "changed after the call"
    assert await broker.get_meta("m") == {"title": "June wedding", "tags": ["venue", "band"]}
    await broker.set_meta("m", {"other": 1})
    assert await broker.get_meta("m") == {"other": 1}
