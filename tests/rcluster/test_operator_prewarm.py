"""The operator's pre-warm reads the fleet's channel popularity from a Redis Cluster too
(a fleet whose gateways run with ``WSFLEET_REDIS_CLUSTER=true``)."""

from __future__ import annotations

import asyncio

from wsfleet_gateway.backends.redis.pool import make_client
from wsfleet_gateway.cache.prewarm import HotTracker
from wsfleet_operator.prewarm import hottest_from_redis

from wsfleet.services import RedisCluster


async def test_hottest_channels_from_a_cluster(redis_cluster: RedisCluster) -> None:
    await asyncio.to_thread(redis_cluster.flushall)
    client = make_client(redis_cluster.url, 2.0, 4, cluster=True)
    try:
        hot = HotTracker(client)
        for channel, uses in (("venue-1", 5), ("venue-2", 9), ("venue-3", 1)):
            for _ in range(uses):
                hot.touch(channel)
        assert await hot.flush() == 3
        assert await hot.top(2) == ["venue-2", "venue-1"]
    finally:
        await client.aclose()
    assert await hottest_from_redis(redis_cluster.url, 2, cluster=True) == ["venue-2", "venue-1"]
    # read as one Redis, a node that does not serve the key answers MOVED: nothing, logged
    seeds = [redis_cluster.node_url(p) for p, _ in redis_cluster.shards()]
    plain = [await hottest_from_redis(url, 2) for url in seeds]
    assert plain.count([]) == len(seeds) - 1
