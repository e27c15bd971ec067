"""The two-layer cache on a real Redis: fill, cross-pod invalidation, consistency, pre-warm,
outage behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from wsfleet_gateway.backends.redis.streams import meta_key
from wsfleet_gateway.broker import BrokerUnavailableError
from wsfleet_gateway.cache.l1 import META, L1Cache
from wsfleet_gateway.cache.layers import L1_TIMING_EVERY, ChannelCache
from wsfleet_gateway.cache.prewarm import HOT_KEY, HotTracker
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.protection.breaker import CircuitBreaker
from wsfleet_gateway.protection.metrics import ProtectionMetrics

from tests.support.waiting import wait_until
from wsfleet.services import RedisServer


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class Pod:
    """One pod's cache: its own L1, Redis client, breaker and metrics registry."""

    def __init__(self, url: str) -> None:
        self.clock = Clock()
        gateway_metrics = GatewayMetrics()
        self.registry = gateway_metrics.registry
        self.metrics = ProtectionMetrics(gateway_metrics)
        self.redis = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=0.5)
        self.breaker = CircuitBreaker(2, 0.3)
        self.hot = HotTracker(self.redis, self.breaker)
        self.cache = ChannelCache(
            L1Cache(clock=self.clock),
            self.metrics,
            redis=self.redis,
            breaker=self.breaker,
            hot=self.hot,
            op_timeout_s=0.5,
        )

    def count(self, layer: str, result: str) -> float:
        value = self.registry.get_sample_value(
            "wsfleet_cache_requests_total", {"layer": layer, "result": result}
        )
        return value or 0.0

    async def close(self) -> None:
        await self.cache.close()
        await self.redis.aclose()


@contextlib.asynccontextmanager
async def pods(url: str, n: int = 2) -> AsyncIterator[list[Pod]]:
    made = [Pod(url) for _ in range(n)]
    try:
        for pod in made:
            await pod.cache.start(cleanup_s=60.0, hot_flush_s=60.0)
            await asyncio.wait_for(pod.cache.listening.wait(), 10.0)
        yield made
    finally:
        for pod in made:
            await pod.close()


async def test_l1_l2_fill_and_cross_pod_invalidation(shared_redis: RedisServer) -> None:
    async with pods(shared_redis.url) as (a, b):
        ch = "inv-basic"
        assert await b.cache.get_meta(ch) == {}
        assert (b.count("l1", "miss"), b.count("l2", "miss")) == (1, 1)
        assert await b.cache.get_meta(ch) == {}  # a missing key is cached too
        assert b.count("l1", "hit") == 1
        await a.cache.set_meta(ch, {"title": "Ada & Bo"})
        await wait_until(
            lambda: ch not in b.cache.l1.keys(META), timeout_s=10, message="pod B invalidated"
        )
        assert await b.cache.get_meta(ch) == {"title": "Ada & Bo"}
        assert b.count("l2", "hit") == 1
        assert await a.cache.get_meta(ch) == {"title": "Ada & Bo"}


async def test_every_l1_lookup_is_counted_and_one_in_n_hits_is_timed(
    shared_redis: RedisServer,
) -> None:
    async with pods(shared_redis.url, n=1) as (pod,):
        ch = "timed-hits"
        assert await pod.cache.get_meta(ch) == {}  # lookup 1: a miss, filled from L2
        for _ in range(2 * L1_TIMING_EVERY + 8):  # lookups 2..: hits
            assert await pod.cache.get_meta(ch) == {}
        assert pod.count("l1", "miss") == 1
        assert pod.count("l1", "hit") == 2 * L1_TIMING_EVERY + 8
        timed = pod.registry.get_sample_value("wsfleet_cache_lookup_seconds_count", {"layer": "l1"})
        assert timed == 2  # lookups N + 1 and 2N + 1
        l2 = pod.registry.get_sample_value("wsfleet_cache_lookup_seconds_count", {"layer": "l2"})
        assert l2 == 1  # every L2 lookup is timed


async def test_readers_never_see_metadata_older_than_the_invalidation_delay(
    shared_redis: RedisServer,
) -> None:
    """Pod A writes versions 1..N; readers on pod B never return version r once the
    invalidation of r+1 reached B. Measures and prints the invalidation delay."""
    ch = "consistency"
    writes = 150
    async with pods(shared_redis.url) as (a, b):
        done_at: dict[int, float] = {}
        invalidated_at: list[float] = []
        write_to_inval_ms: list[float] = []

        def on_invalidate(kind: str, key: str, delay_s: float) -> None:
            invalidated_at.append(time.monotonic())
            write_to_inval_ms.append(delay_s * 1000)

        b.cache.invalidation_listeners.append(on_invalidate)
        await a.cache.set_meta(ch, {"v": 0})
        await wait_until(lambda: len(invalidated_at) == 1, timeout_s=10)
        reads: list[tuple[float, int]] = []
        stop = asyncio.Event()

        async def reader() -> None:
            while not stop.is_set():
                started = time.monotonic()
                meta = await b.cache.get_meta(ch)
                reads.append((started, int(meta["v"])))
                await asyncio.sleep(0)

        async def writer() -> None:
            for v in range(1, writes + 1):
                await a.cache.set_meta(ch, {"v": v})
                done_at[v] = time.monotonic()
                await asyncio.sleep(0.002)

        base = len(invalidated_at)
        readers = [asyncio.create_task(reader()) for _ in range(4)]
        await writer()
        await wait_until(lambda: len(invalidated_at) >= base + writes, timeout_s=15)
        stop.set()
        await asyncio.gather(*readers)
    # the k-th invalidation B received after `base` belongs to version k (pub/sub is ordered)
    inval = {v: invalidated_at[base + v - 1] for v in range(1, writes + 1)}
    after_done_ms = [max(0.0, inval[v] - done_at[v]) * 1000 for v in inval]
    delays_ms = write_to_inval_ms[1:]
    stale_reads = 0
    for started, version in reads:
        newer = version + 1
        if newer in done_at and done_at[newer] <= started:
            stale_reads += 1
            # a stale read started before B applied the newer version's invalidation
            assert inval[newer] > started, (version, started, inval[newer])
    assert reads
    assert max(v for _, v in reads) == writes
    print(
        f"\ninvalidation delay (write sent → pod B's L1 dropped it) over {writes} writes: "
        f"p50 {statistics.median(delays_ms):.3f} ms, max {max(delays_ms):.3f} ms; after the "
        f"write completed: max {max(after_done_ms):.3f} ms; {len(reads)} reads on pod B, "
        f"{stale_reads} stale, all within the delay"
    )


async def test_prewarm_loads_the_hottest_channels(shared_redis: RedisServer) -> None:
    async with pods(shared_redis.url, n=1) as (writer,):
        await writer.redis.delete(HOT_KEY)
        for i in range(30):
            await writer.cache.set_meta(f"pw-{i}", {"i": i})
        for i in range(30):
            for _ in range(30 - i):  # pw-0 hottest
                await writer.cache.get_meta(f"pw-{i}")
        assert await writer.hot.flush() == 30
        assert writer.hot.pending == {}
        assert await writer.hot.top(3) == ["pw-0", "pw-1", "pw-2"]
        async with pods(shared_redis.url, n=1) as (fresh,):
            assert await fresh.cache.prewarm_hottest(10) == 10
            assert sorted(fresh.cache.l1.keys(META), key=lambda c: int(c[3:])) == [
                f"pw-{i}" for i in range(10)
            ]
            assert await fresh.cache.get_meta("pw-3") == {"i": 3}
            assert fresh.count("l1", "hit") == 1
            assert fresh.count("l2", "hit") == 0
            assert await fresh.cache.prewarm(["pw-20", "never-set"]) == 2
            assert await fresh.cache.get_meta("never-set") == {}


async def test_outage_serves_stale_l1_fails_writes_fast_and_recovers(
    redis_server: RedisServer,
) -> None:
    async with pods(redis_server.url, n=1) as (pod,):
        await pod.cache.set_meta("o-1", {"x": 1})
        assert await pod.cache.get_meta("o-1") == {"x": 1}
        pod.clock.offset = 1000.0  # every entry is expired: lookups need L2
        redis_server.stop()
        assert await pod.cache.get_meta("o-1") == {"x": 1}  # stale from L1
        assert await pod.cache.get_meta("o-unknown") == {}
        await wait_until(lambda: pod.breaker.state == "open", timeout_s=10)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match="breaker"):
            await pod.cache.set_meta("o-1", {"x": 2})
        fail_fast_s = time.monotonic() - started
        assert pod.count("l1", "stale") >= 1
        assert pod.count("l2", "unavailable") >= 1
        assert await pod.cache.prewarm(["o-1"]) == 0
        assert await pod.hot.flush() == 0
        redis_server.start()

        async def recovered() -> bool:
            with contextlib.suppress(BrokerUnavailableError):
                await pod.cache.set_meta("o-1", {"x": 3})
                return True
            return False

        await wait_until(recovered, timeout_s=15, interval_s=0.1)
        await wait_until(pod.cache.listening.is_set, timeout_s=15)
        assert pod.breaker.state == "closed"
        assert await pod.cache.get_meta("o-1") == {"x": 3}
        print(f"\nmetadata write with the breaker open failed in {fail_fast_s * 1000:.2f} ms")


async def test_without_redis_l1_fronts_the_origin() -> None:
    store: dict[str, dict[str, Any]] = {}

    async def origin(channel: str) -> dict[str, Any]:
        return store.get(channel, {})

    async def origin_write(channel: str, meta: dict[str, Any]) -> None:
        store[channel] = meta

    metrics = ProtectionMetrics(GatewayMetrics())
    cache = ChannelCache(L1Cache(), metrics, origin=origin, origin_write=origin_write)
    await cache.start()
    try:
        assert await cache.get_meta("m") == {}
        await cache.set_meta("m", {"a": 1})
        assert await cache.get_meta("m") == {"a": 1}
        assert await cache.get_meta("m") == {"a": 1}
        assert await cache.prewarm(["n"]) == 1
    finally:
        await cache.close()


async def test_a_write_that_is_no_json_is_refused_alone(shared_redis: RedisServer) -> None:
    """Issue 17 §2/§3: metadata with a non-finite number or a lone surrogate is refused
    (`BadRequestError`, nothing sent); the writes beside it land, and a lone surrogate in the
    popularity counts does not fail the flush of the others."""
    async with pods(shared_redis.url, 1) as (pod,):
        bad = [{"capacity": float("inf")}, {"x": [float("nan")]}, {"name": "\ud800"}]
        results = await asyncio.gather(
            *(pod.cache.set_meta(f"iso-{i}", meta) for i, meta in enumerate(bad)),
            pod.cache.set_meta("iso-good", {"ok": True}),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results[:3]] == ["BadRequestError"] * 3
        assert results[3] is None
        assert pod.breaker.state == "closed"
        assert await pod.redis.get(meta_key("iso-good")) == '{"ok":true}'
        assert all([await pod.redis.get(meta_key(f"iso-{i}")) is None for i in range(3)])
        pod.hot.touch("iso-good")
        pod.hot.touch("bad-\udc80")
        assert await pod.hot.flush() == 1
        assert await pod.redis.zscore(HOT_KEY, "iso-good") == 1.0


async def test_stored_metadata_that_is_no_json_reads_as_none(shared_redis: RedisServer) -> None:
    """Written by another client (not through the gateway): not sent on."""
    async with pods(shared_redis.url, 1) as (pod,):
        for i, raw in enumerate(['{"v": Infinity}', '{"v": 1e999}', '{"v": "\\ud800"}']):
            await pod.redis.set(meta_key(f"iso-raw-{i}"), raw)
            assert await pod.cache.get_meta(f"iso-raw-{i}") == {}
