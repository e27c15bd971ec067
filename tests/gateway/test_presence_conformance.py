"""Presence, one suite for every `PresenceStore` (issue 22): the in-memory broker, the
Redis broker (a real redis-server) and the Redis Cluster broker (a real cluster of 3
primaries and 3 replicas) keep members alike: written, refreshed, removed, expired
after one TTL without a cleanup job, written with a join, and events fanned out."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.backends.redis.cluster_broker import RedisClusterBroker
from wsfleet_gateway.broker import Broker, Delivery, PresenceOp, PresenceStore
from wsfleet_gateway.presence import Member, encode_member, live_members

from tests.support.waiting import wait_until
from wsfleet.services import RedisCluster, RedisServer

WAIT_S = 10.0
Store = Any  # a Broker that is a PresenceStore
Made = tuple[Store, list[tuple[str, str]], list[Delivery]]
"""A started broker, the presence events it got, the messages it delivered."""
Make = Callable[..., Awaitable[Made]]
_n = itertools.count()


def channel() -> str:
    return f"presence-{time.monotonic_ns()}-{next(_n)}"


def record(conn: str, user: str = "ann", node: str = "gw-a") -> str:
    return encode_member(Member(time.time_ns() // 1_000_000, conn, user, node))


@pytest.fixture(params=["memory", "redis", "cluster"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """`await make(**options)` -> `Made`."""
    brokers: list[Broker] = []
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        await asyncio.to_thread(cluster.flushall)

    async def factory(**options: Any) -> Made:
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
        assert isinstance(broker, PresenceStore)
        events: list[tuple[str, str]] = []
        broker.on_presence_event(lambda ch, frame: events.append((ch, frame)))
        return broker, events, got

    yield factory
    for broker in brokers:
        await broker.close()


async def test_members_are_written_read_and_removed(make: Make) -> None:
    store, _, _ = await make()
    ch, other = channel(), channel()
    ann1, ann2, bo = record("gw-1"), record("gw-2"), record("gw-3", "bo", "gw-b")
    store.presence_write([PresenceOp(ch, ann1, True), PresenceOp(ch, ann2, True)])
    store.presence_write([PresenceOp(ch, bo, True), PresenceOp(other, bo, True)])
    got = live_members(await store.presence_read(ch))
    assert [m.connection_id for m in got] == ["gw-1", "gw-2", "gw-3"]
    assert {(m.user, m.node) for m in got} == {("ann", "gw-a"), ("bo", "gw-b")}
    store.presence_write([PresenceOp(ch, ann2, False)])
    assert sorted(await store.presence_read(ch)) == sorted([ann1, bo])
    store.presence_write([PresenceOp(ch, ann1, False), PresenceOp(ch, bo, False)])
    assert await store.presence_read(ch) == []
    assert await store.presence_read(other) == [bo]
    assert await store.presence_read(channel()) == []


async def test_a_member_not_refreshed_expires_within_one_ttl(make: Make) -> None:
    ttl_s = 0.6
    store, _, _ = await make(presence_ttl_s=ttl_s)
    ch = channel()
    kept, dropped = record("gw-1"), record("gw-2")
    store.presence_write([PresenceOp(ch, kept, True), PresenceOp(ch, dropped, True)])
    written = time.monotonic()
    assert sorted(await store.presence_read(ch)) == sorted([kept, dropped])

    async def refreshed_until_dropped_is_gone() -> bool:
        store.presence_refresh(ch, [kept])  # what the heartbeat does for live ones
        return await store.presence_read(ch) == [kept]

    await wait_until(refreshed_until_dropped_is_gone, timeout_s=WAIT_S, interval_s=0.05)
    gone_after = time.monotonic() - written
    assert gone_after <= ttl_s + 0.5, gone_after  # within one TTL (and a poll)
    assert gone_after >= ttl_s * 0.5  # not before its time (clock and poll slack)
    # refreshed three times per TTL, a member outlives many TTLs
    until = time.monotonic() + 3 * ttl_s
    while time.monotonic() < until:
        store.presence_refresh(ch, [kept])
        assert await store.presence_read(ch) == [kept]
        await asyncio.sleep(ttl_s / 3)


async def test_a_join_writes_its_presence_with_it(
    make: Make,
) -> None:
    store, _, _ = await make()
    a, b = channel(), channel()
    ann = record("gw-1")
    await store.join(a, None, 10, presence=[PresenceOp(a, ann, True)])
    assert await store.presence_read(a) == [ann]  # the join's own write is visible at once
    # a switch: the leave of `a` and the join of `b` go with `b`'s join
    moved = record("gw-1")
    await store.join(b, None, 10, presence=[PresenceOp(a, ann, False), PresenceOp(b, moved, True)])
    assert await store.presence_read(a) == []
    assert await store.presence_read(b) == [moved]
    store.detach(a)
    store.detach(b)


async def test_events_reach_the_pods_holding_the_channel(make: Make) -> None:
    one, events_one, _ = await make()
    two, events_two = one, events_one  # the memory broker: one process, one broker
    if not isinstance(one, MemoryBroker):
        two, events_two, _ = await make()
    ch = channel()
    await two.attach(ch)
    frame = '{"type":"join","channel":"x","member":{"connection_id":"gw-1"}}'
    one.presence_event(ch, frame)
    await wait_until(lambda: (ch, frame) in events_two, timeout_s=WAIT_S, message="event")
    two.detach(ch)


async def test_events_are_no_messages(make: Make) -> None:
    """An event travels beside a channel's messages but never becomes one: no offset,
    nothing in the history, the next message delivered as usual."""
    store, events, got = await make()
    ch = channel()
    await store.join(ch, None, 10)
    store.presence_event(ch, '{"type":"leave"}')
    sent = await store.publish(ch, '"after"')
    await wait_until(lambda: got and events, timeout_s=WAIT_S, message="message and event")
    assert events == [(ch, '{"type":"leave"}')]
    assert [d.offset for d in got] == [sent.offset]
    assert [d.data for d in (await store.history(ch, None, 10)).messages] == ["after"]
    store.detach(ch)
