"""A busy channel's slot migrated mid-traffic, step by step, under two cluster brokers.

The steps are the ones ``redis-cli --cluster reshard`` takes, done by hand so each state
of the slot is seen: IMPORTING on the target and MIGRATING on the source; the channel's
metadata moved first (its history read now spans two nodes: TRYAGAIN), then its stream
(publishes and reads get ASK); then the slot given to the target on every primary (the
source unsubscribes its shard subscribers; commands get MOVED). A publisher publishes
all along; the subscriber's pod must deliver every acknowledged publish exactly once and
in order, and the channel's history must be whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from wsfleet_gateway.backends.redis.cluster_broker import RedisClusterBroker
from wsfleet_gateway.backends.redis.slots import SlotMap, channel_slot
from wsfleet_gateway.backends.redis.streams import meta_key, stream_key
from wsfleet_gateway.broker import BrokerUnavailableError, Delivery, parse_offset

from tests.chaos.follower import faults
from tests.support.waiting import wait_until
from wsfleet.services import RedisCluster

CHANNEL = "busy-venue"
WAIT_S = 20.0


def node_id(cluster: RedisCluster, port: int) -> str:
    return cluster.cli(port, "cluster", "myid").strip()


async def test_a_slot_migrated_step_by_step_loses_and_repeats_nothing(
    redis_cluster: RedisCluster,
) -> None:
    cluster = redis_cluster
    slot = channel_slot(CHANNEL)
    source = await asyncio.to_thread(cluster.owner, slot)
    primaries = [p for p, _ in await asyncio.to_thread(cluster.shards)]
    target = next(p for p in primaries if p != source)
    ids = {p: await asyncio.to_thread(node_id, cluster, p) for p in (source, target)}

    got: list[Delivery] = []
    own: list[Delivery] = []
    # the publisher's pod subscribes too: its fan-out must move whether its own MOVED
    # replies patched its slot map before the new topology arrived or not
    publisher = RedisClusterBroker(cluster.url, op_timeout_s=2.0, linger_s=0.05)
    subscriber = RedisClusterBroker(cluster.url, op_timeout_s=2.0, linger_s=0.05)
    await publisher.start(own.append)
    await subscriber.start(got.append)
    try:
        acked: list[str] = []
        failed: list[BaseException] = []
        stop = asyncio.Event()

        async def publish() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    acked.append((await publisher.publish(CHANNEL, str(n))).offset)
                except BrokerUnavailableError as exc:
                    failed.append(exc)
                await asyncio.sleep(0.003)  # a paced load

        async def more(count: int, what: str) -> None:
            seen = len(acked)
            await wait_until(lambda: len(acked) >= seen + count, WAIT_S, message=what)

        def cli(port: int, *args: str) -> Any:
            return asyncio.to_thread(cluster.cli, port, *args)

        await publisher.set_meta(CHANNEL, {"venue": "Old Mill"})
        snapshot = await subscriber.join(CHANNEL, None, 10)
        assert (await publisher.join(CHANNEL, None, 10)).history.offset == snapshot.history.offset
        start = parse_offset(snapshot.history.offset)
        task = asyncio.create_task(publish())
        try:
            await more(20, "publishes before the migration")
            await cli(target, "cluster", "setslot", str(slot), "importing", ids[source])
            await cli(source, "cluster", "setslot", str(slot), "migrating", ids[target])
            await more(20, "publishes while the slot is migrating")

            # the metadata moves first: a read of history and metadata spans two nodes now
            await cli(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys",
                      meta_key(CHANNEL))  # fmt: skip
            reader = RedisClusterBroker(cluster.url, op_timeout_s=3.0)
            await reader.start(lambda d: None)
            try:
                read = asyncio.create_task(reader.read(CHANNEL, None, 5, meta=True))
                await wait_until(lambda: reader.lanes.retried > 0, WAIT_S, message="TRYAGAIN")
                await cli(source, "migrate", "127.0.0.1", str(target), "", "0", "5000", "keys",
                          stream_key(CHANNEL))  # fmt: skip
                whole = await read
                assert whole.meta_json == '{"venue":"Old Mill"}'
                assert len(whole.history.messages) == 5
            finally:
                await reader.close()
            await wait_until(lambda: publisher.lanes.asked > 0, WAIT_S, message="ASK followed")
            await more(20, "publishes to the target before the slot is handed over")

            for port in primaries:  # the hand-over, as redis-cli does it
                await cli(port, "cluster", "setslot", str(slot), "node", ids[target])
            await wait_until(lambda: subscriber.fanout.moves > 0, WAIT_S, message="channel moved")
            await wait_until(lambda: publisher.fanout.moves > 0, WAIT_S, message="moved there too")
            # whether the publisher's next publish meets MOVED or its new topology comes first is
            # a race (the source drops the shard subscription as it gives the slot away); the
            # MOVED-first order is pinned by the test below
            await more(50, "publishes after the migration")
        finally:
            stop.set()
            with contextlib.suppress(BaseException):
                await task
        assert await asyncio.to_thread(cluster.owner, slot) == target
        last = max(acked, key=parse_offset)
        expected = [o for o in acked if parse_offset(o) > start]
        for pod in (got, own):
            await wait_until(
                lambda pod=pod: any(d.offset == last for d in pod), WAIT_S, message="the last"
            )
            offsets = [d.offset for d in pod if d.channel == CHANNEL]
            report = {**faults(expected, offsets), "acked": len(acked), "failed": len(failed)}
            print(f"\nmigration: {report}")
            assert report == {
                "lost": 0,
                "duplicated": 0,
                "out_of_order": 0,
                "acked": len(acked),
                "failed": 0,
            }
        # the history agrees: from the ring of the moved channel and from the stream
        history = await subscriber.history(CHANNEL, None, 20)
        assert [d.offset for d in history.messages] == sorted(acked, key=parse_offset)[-20:]
        fresh = await publisher.history(CHANNEL, snapshot.history.offset, 100_000)
        assert [d.offset for d in fresh.messages] == expected
    finally:
        subscriber.detach(CHANNEL)
        publisher.detach(CHANNEL)
        await subscriber.close()
        await publisher.close()


async def test_a_topology_already_patched_by_moved_is_still_announced(
    redis_cluster: RedisCluster,
) -> None:
    """A MOVED reply patches the lanes' slot map at once; the topology read it triggers then
    equals that map, and must still reach the listeners (the sharded fan-out moves its
    channels on it). A regression: listeners were told only of maps unlike the patched one,
    so a pod that published before its fan-out heard of the move never moved its channel."""
    cluster = redis_cluster
    key = "moved-before-topology"  # a slot no test writes: it changes hands empty
    slot = channel_slot(key)
    source = await asyncio.to_thread(cluster.owner, slot)
    primaries = [p for p, _ in await asyncio.to_thread(cluster.shards)]
    target = next(p for p in primaries if p != source)
    ids = {p: await asyncio.to_thread(node_id, cluster, p) for p in (source, target)}
    lanes = RedisClusterBroker(cluster.url).lanes  # no fan-out, no periodic topology reads
    told: list[int] = []

    def listener(slot_map: SlotMap) -> None:
        owner = slot_map.owner(slot)
        assert owner is not None
        told.append(owner[1])

    async def hand_over(owner: int, to: int) -> None:
        """As ``redis-cli --cluster reshard`` does it (the target's epoch is bumped)."""
        await asyncio.to_thread(
            cluster.cli, to, "cluster", "setslot", str(slot), "importing", ids[owner]
        )
        await asyncio.to_thread(
            cluster.cli, owner, "cluster", "setslot", str(slot), "migrating", ids[to]
        )
        for port in sorted(primaries, key=lambda p: (p != to, p != owner)):
            await asyncio.to_thread(
                cluster.cli, port, "cluster", "setslot", str(slot), "node", ids[to]
            )

        async def handed() -> bool:
            return await asyncio.to_thread(cluster.owner, slot) == to

        await wait_until(handed, WAIT_S, message="the slot handed over")

    lanes.listeners.append(listener)
    try:
        await lanes.topology()
        assert told == [source]
        await hand_over(source, target)
        assert await lanes.execute("EXISTS", key) == 0  # sent to the source: MOVED, followed
        assert lanes.moved == 1
        await wait_until(lambda: len(told) == 2, WAIT_S, message="the new topology announced")
        assert told == [source, target]
    finally:
        await lanes.close()
        await hand_over(target, source)
