"""Issue 20's acceptance with gateway processes on a real Redis Cluster (3 primaries, 3
replicas): two gateways deliver exactly once and in order on 100 channels spread over
every shard; a busy channel's slot moved by ``redis-cli --cluster reshard`` in the
middle of its traffic loses nothing."""

from __future__ import annotations

import asyncio
import time

import pytest
from wsfleet_gateway.backends.redis.slots import channel_slot

from tests.chaos.follower import Follower, stop_all
from tests.rcluster.fleet import (
    WAIT_S,
    TimedPublisher,
    channels_on_every_shard,
    cluster_gateways,
    count_faults,
    merged,
)
from tests.support.waiting import wait_until
from wsfleet.services import RedisCluster

pytestmark = pytest.mark.timeout(240)


async def run_traffic(
    followers: list[Follower],
    publishers: list[TimedPublisher],
    acked_per_channel: int,
    channels: list[str],
    during: object = None,
) -> dict[str, list[str]]:
    """Subscribe the followers, publish until every channel has `acked_per_channel`
    acknowledged publishes (running `during`, a coroutine function, meanwhile), then wait
    until every follower has the last publish of each of its channels."""
    stop = asyncio.Event()
    following = [asyncio.create_task(f.run()) for f in followers]
    publishing: list[asyncio.Task[None]] = []
    try:
        await wait_until(
            lambda: all(f.ready.is_set() for f in followers), WAIT_S, message="subscribed"
        )
        publishing = [asyncio.create_task(p.run(stop)) for p in publishers]
        if during is not None:
            await during()  # type: ignore[operator]

        def enough() -> bool:
            acked = merged(publishers, channels)  # type: ignore[arg-type]
            return all(len(acked[ch]) >= acked_per_channel for ch in channels)

        await wait_until(enough, WAIT_S * 2, interval_s=0.1, message="publishes")
    finally:
        stop.set()
        await asyncio.gather(*publishing, return_exceptions=True)
    try:
        acked = merged(publishers, channels)  # type: ignore[arg-type]
        last = {ch: o[-1] for ch, o in acked.items() if o}

        def missing() -> list[tuple[int, str, int]]:
            return [
                (i, ch, len(set(acked[ch]) - set(f.got.get(ch, ()))))
                for i, f in enumerate(followers)
                for ch in f.channels
                if ch in last and last[ch] not in f.got.get(ch, ())
            ]

        await wait_until(
            lambda: not missing(),
            WAIT_S,
            interval_s=0.05,
            message=f"every follower has the last publish of its channels ({missing()[:5]})",
        )
        return acked
    finally:
        await stop_all(following)
        for client in [*followers, *publishers]:
            client.close()


async def test_two_gateways_deliver_exactly_once_in_order_on_100_channels(
    redis_cluster: RedisCluster,
) -> None:
    started = time.monotonic()
    channels = await asyncio.to_thread(channels_on_every_shard, redis_cluster, 100, "wed")
    owners = {await asyncio.to_thread(redis_cluster.owner, channel_slot(c)) for c in channels}
    assert len(owners) == 3  # every shard carries some of them
    with cluster_gateways(redis_cluster) as (a, b):
        # subscribers on B, two per channel; publishers on A: every message crosses pods
        followers = [Follower(b.ws_url, channels[i::20]) for i in range(20)]
        followers += [Follower(b.ws_url, channels[i::20]) for i in range(20)]
        publishers = [TimedPublisher(a.ws_url, channels[i::2], 0.004, 4) for i in range(2)]
        acked = await run_traffic(followers, publishers, 10, channels)
    totals, deliveries = count_faults(followers, acked)
    report = {
        "seconds": round(time.monotonic() - started, 1),
        "acknowledged": sum(len(o) for o in acked.values()),
        "not_acknowledged": sum(p.failed for p in publishers),
        "deliveries": deliveries,
        **totals,
    }
    print(f"\ntwo gateways, 100 channels: {report}")
    assert totals == {"lost": 0, "duplicated": 0, "out_of_order": 0}, report
    assert report["not_acknowledged"] == 0, report


def reshard_one_slot(cluster: RedisCluster, source: int, target: int) -> None:
    """``redis-cli --cluster reshard``: one slot (the source's lowest) to `target`."""
    ids = {p: cluster.cli(p, "cluster", "myid").strip() for p in (source, target)}
    cluster.cli(
        source,
        "--cluster",
        "reshard",
        f"127.0.0.1:{source}",
        "--cluster-from",
        ids[source],
        "--cluster-to",
        ids[target],
        "--cluster-slots",
        "1",
        "--cluster-yes",
        timeout_s=60,
    )


def lowest_slot(cluster: RedisCluster, port: int) -> int:
    import json

    rows = json.loads(cluster.cli(port, "--json", "cluster", "slots"))
    return min(int(r[0]) for r in rows if int(r[2][1]) == port)


async def test_a_busy_channel_resharded_mid_traffic_loses_nothing(
    redis_cluster: RedisCluster,
) -> None:
    primaries = [p for p, _ in await asyncio.to_thread(redis_cluster.shards)]
    source, target = primaries[0], primaries[1]
    slot = await asyncio.to_thread(lowest_slot, redis_cluster, source)
    busy = next(f"busy-{i}" for i in range(10**6) if channel_slot(f"busy-{i}") == slot)
    channels = [busy, "quiet-a", "quiet-b"]
    with cluster_gateways(redis_cluster) as (a, b):
        followers = [Follower(gw.ws_url, channels) for gw in (a, b) for _ in range(5)]
        publishers = [TimedPublisher(gw.ws_url, [busy], 0.003, 2) for gw in (a, b)]
        moved_at: list[float] = []

        async def reshard() -> None:
            await wait_until(
                lambda: sum(len(p.acked_at) for p in publishers) > 200, WAIT_S, message="busy"
            )
            await asyncio.to_thread(reshard_one_slot, redis_cluster, source, target)
            moved_at.append(time.monotonic())

        try:
            acked = await run_traffic(followers, publishers, 600, [busy], during=reshard)
        except TimeoutError:
            for gw in (a, b):
                print("\n".join(x for x in gw.log_tail(3000) if "adopt_failed" not in x)[-6000:])
            raise
    assert await asyncio.to_thread(redis_cluster.owner, slot) == target
    totals, deliveries = count_faults(followers, {**acked, "quiet-a": [], "quiet-b": []})
    after = sum(1 for p in publishers for t, _, _ in p.acked_at if t > moved_at[0])
    report = {
        "acknowledged": len(acked[busy]),
        "acknowledged_after_the_move": after,
        "not_acknowledged": sum(p.failed for p in publishers),
        "deliveries": deliveries,
        **totals,
    }
    print(f"\nreshard mid-traffic: {report}")
    assert after > 0, report
    assert totals == {"lost": 0, "duplicated": 0, "out_of_order": 0}, report
