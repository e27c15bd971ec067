"""`ProtectedBroker` and `RateLimiter` around a store that fails on demand, and on real Redis."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis
import redis.asyncio as aioredis
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.broker import (
    BrokerUnavailableError,
    Delivery,
    History,
    InvalidOffsetError,
    parse_offset,
)
from wsfleet_gateway.cache.broker import ProtectedBroker
from wsfleet_gateway.cache.l1 import META, L1Cache
from wsfleet_gateway.cache.layers import ChannelCache
from wsfleet_gateway.cache.prewarm import HOT_KEY, HotTracker
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.protection.breaker import CircuitBreaker
from wsfleet_gateway.protection.metrics import ProtectionMetrics
from wsfleet_gateway.protection.ratelimit import RATE_LUA, RateLimiter, decide

from tests.support.waiting import wait_until
from wsfleet.services import RedisServer


class FlakyBroker(MemoryBroker):
    """A MemoryBroker whose store can be 'down'."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.attached: dict[str, int] = {}

    @property
    def available(self) -> bool:
        return not self.down

    def _check(self) -> None:
        if self.down:
            raise BrokerUnavailableError("down")

    async def publish(self, channel: str, data_json: str) -> Delivery:
        self._check()
        return await super().publish(channel, data_json)

    async def attach(self, channel: str) -> None:
        self._check()
        self.attached[channel] = self.attached.get(channel, 0) + 1
        await super().attach(channel)

    def detach(self, channel: str) -> None:
        self.attached[channel] -= 1
        super().detach(channel)

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        self._check()
        return await super().history(channel, since, limit)


async def make() -> tuple[ProtectedBroker, FlakyBroker, CircuitBreaker, list[Delivery]]:
    inner = FlakyBroker()
    breaker = CircuitBreaker(2, 0.05)
    metrics = ProtectionMetrics(GatewayMetrics())
    cache = ChannelCache(L1Cache(), metrics, origin=inner.get_meta, origin_write=inner.set_meta)
    broker = ProtectedBroker(inner, cache, breaker)
    got: list[Delivery] = []
    await broker.start(got.append)
    return broker, inner, breaker, got


async def test_publish_fails_fast_once_open_and_recovers_half_open() -> None:
    broker, inner, breaker, _got = await make()
    try:
        await broker.publish("c", '"a"')
        inner.down = True
        for _ in range(2):
            with pytest.raises(BrokerUnavailableError, match="down"):
                await broker.publish("c", '"b"')
        assert breaker.state == "open"
        with pytest.raises(BrokerUnavailableError, match="breaker"):
            await broker.publish("c", '"c"')
        inner.down = False
        await wait_until(lambda: breaker.state == "half_open", timeout_s=5)
        await broker.publish("c", '"d"')
        assert breaker.state == "closed"
        assert broker.available
    finally:
        await broker.close()


async def test_publish_many_counts_toward_the_breaker_like_publish() -> None:
    broker, inner, breaker, _got = await make()
    try:
        ok = await broker.publish_many("c", ['"a"', '"b"'])
        assert [r.data for r in ok if isinstance(r, Delivery)] == ["a", "b"]
        inner.down = True
        for _ in range(2):
            failed = await broker.publish_many("c", ['"x"', '"y"'])
            assert all(isinstance(r, BrokerUnavailableError) for r in failed)
        assert breaker.state == "open"
        with pytest.raises(BrokerUnavailableError, match="breaker"):
            await broker.publish_many("c", ['"z"'])
        inner.down = False
        await wait_until(lambda: breaker.state == "half_open", timeout_s=5)
        back = await broker.publish_many("c", ['"d"', '"e"'])
        assert [r.data for r in back if isinstance(r, Delivery)] == ["d", "e"]
        assert breaker.state == "closed"
    finally:
        await broker.close()


async def test_local_attachments_are_reattached_with_catch_up() -> None:
    broker, inner, _breaker, got = await make()
    try:
        await broker.attach("c")
        first = await broker.publish("c", '"one"')
        await wait_until(lambda: len(got) == 1, timeout_s=5)
        inner.down = True
        await broker.attach("c")  # served locally: no wait on the store
        await broker.attach("other")
        broker.detach("other")  # a local attachment goes away locally
        assert broker.local_attachments == {"c": 1}
        history = await broker.history("c", None, 10)
        assert (history.messages, history.offset, history.recovered) == ([], first.offset, True)
        assert (await broker.history("c", first.offset, 10)).recovered
        assert not (await broker.history("c", "1-0", 10)).recovered
        with pytest.raises(InvalidOffsetError):
            await broker.history("c", "nope", 10)
        for _ in range(2):
            with pytest.raises(BrokerUnavailableError):
                await broker.publish("c", '"lost?"')
        inner.down = False
        # published while this pod still held "c" only locally (a publish on another pod)
        await inner.publish("c", '"two"')
        await wait_until(lambda: not broker.local_attachments, timeout_s=10)
        assert inner.attached["c"] == 2
        assert [d.data for d in got].count("two") >= 1
        await broker.publish("c", '"three"')
        await wait_until(lambda: got[-1].data == "three", timeout_s=5)
        broker.detach("c")
        broker.detach("c")
        assert inner.attached["c"] == 0
    finally:
        await broker.close()


class RacyBroker(FlakyBroker):
    """A live message arrives the moment an attach completes, before any catch-up read."""

    async def attach(self, channel: str) -> None:
        await super().attach(channel)
        await MemoryBroker.publish(self, channel, '"live"')


async def test_a_reattach_delivers_its_catch_up_before_live_messages() -> None:
    """Issue 20 (seen in the cluster failover test): a re-attached channel's catch-up
    went out after a newer live message, and subscriptions drop older offsets."""
    inner = RacyBroker()
    breaker = CircuitBreaker(2, 0.05)
    metrics = ProtectionMetrics(GatewayMetrics())
    cache = ChannelCache(L1Cache(), metrics, origin=inner.get_meta, origin_write=inner.set_meta)
    broker = ProtectedBroker(inner, cache, breaker)
    got: list[Delivery] = []
    await broker.start(got.append)
    try:
        await broker.attach("c")  # (a live "live" at once)
        await broker.publish("c", '"one"')
        await wait_until(lambda: len(got) == 2, timeout_s=5)
        broker.detach("c")
        inner.down = True
        await broker.attach("c")  # served locally
        assert broker.local_attachments == {"c": 1}
        await MemoryBroker.publish(inner, "c", '"missed"')  # another pod, while away
        inner.down = False
        await wait_until(lambda: not broker.local_attachments, timeout_s=10)
        await wait_until(lambda: len(got) == 4, timeout_s=5)
        assert [d.data for d in got] == ["live", "one", "missed", "live"]
        offsets = [parse_offset(d.offset) for d in got]
        assert offsets == sorted(offsets)
        broker.detach("c")
    finally:
        await broker.close()


async def test_join_and_read_take_metadata_along_and_fall_back_when_the_store_is_down() -> None:
    broker, inner, breaker, _got = await make()
    cache = broker.cache
    try:
        await broker.set_meta("c", {"couple": "Ana & Bo"})
        sent = await broker.publish("c", '"hi"')
        joined = await broker.join("c", None, 10)  # L1 miss: the store's read brings it
        assert joined.meta_json == '{"couple":"Ana & Bo"}'
        assert joined.meta_stored
        assert [d.offset for d in joined.history.messages] == [sent.offset]
        entry = cache.peek("c")
        assert entry is not None
        assert entry.value == {"couple": "Ana & Bo"}
        again = await broker.read("c", sent.offset, 10)  # L1 hit
        assert again.meta_json == joined.meta_json
        assert again.history.messages == []
        bare = await broker.read("c", None, 10, meta=False)
        assert bare.meta_json is None
        assert len(bare.history.messages) == 1

        inner.down = True
        local = await broker.join("d", None, 10)  # local attach, local history, origin meta
        assert local.meta_json == "{}"
        assert local.history.messages == []
        assert broker.local_attachments == {"d": 1}
        stale = await broker.read("c", None, 10)  # store down: local state, cached meta
        assert stale.meta_json == joined.meta_json
        assert (stale.history.messages, stale.history.offset) == ([], sent.offset)
        with pytest.raises(InvalidOffsetError):
            await broker.join("e", "nope", 10)
        assert "e" not in broker.local_attachments  # nothing left attached
        await wait_until(lambda: breaker.state == "open", timeout_s=5)
        shut = await broker.join("f", None, 10, meta=False)  # breaker open: no store call
        assert shut.meta_json is None
        assert broker.local_attachments["f"] == 1
        for channel in ("d", "f"):
            broker.detach(channel)
        broker.detach("c")
        assert broker.local_attachments == {}
        assert inner.attached == {"c": 0}
    finally:
        await broker.close()


async def test_detach_during_reattach_releases_the_store() -> None:
    broker, inner, _breaker, _got = await make()
    try:
        inner.down = True
        await broker.attach("gone")
        broker.detach("gone")
        assert not broker.local_attachments
        await broker.attach("gone")
        inner.down = False
        await wait_until(lambda: not broker.local_attachments, timeout_s=10)
        broker.detach("gone")
        assert inner.attached["gone"] == 0
    finally:
        await broker.close()


async def redis_calls(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_switch_back_to_a_held_channel_asks_redis_nothing(
    redis_server: RedisServer,
) -> None:
    """L1 hit + a channel this pod holds: history from the ring, nothing awaited."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    inner = RedisBroker(redis_server.url, linger_s=600)
    metrics = ProtectionMetrics(GatewayMetrics())
    cache = ChannelCache(L1Cache(), metrics, redis=client)
    broker = ProtectedBroker(inner, cache, CircuitBreaker())
    await broker.start(lambda delivery: None)
    ch = "held-switch"
    try:
        await broker.set_meta(ch, {"couple": "Ana & Bo"})
        sent = [await broker.publish(ch, str(i)) for i in range(3)]
        cold = await broker.join(ch, None, 2)  # new to the pod: SUBSCRIBE + one script
        broker.detach(ch)  # lingering: still subscribed, its ring kept
        await client.config_resetstat()
        warm = await broker.join(ch, None, 2)
        assert (warm.history, warm.meta_json) == (cold.history, cold.meta_json)
        assert [d.offset for d in warm.history.messages] == [d.offset for d in sent[1:]]
        assert warm.meta_json == '{"couple":"Ana & Bo"}'
        assert await redis_calls(client) == {"config|resetstat": 1}  # nothing since
        assert inner.attached_channels() == {ch: 1}
        assert broker.last_offsets[ch] == sent[-1].offset
        # a since older than the ring holds: the ring cannot vouch, the script answers
        broker.detach(ch)
        await client.config_resetstat()
        back = await broker.join(ch, "0-1", 10)
        assert [d.offset for d in back.history.messages] == [d.offset for d in sent]
        assert (await redis_calls(client)).get("evalsha") == 1
        assert inner.attached_channels() == {ch: 1}
        # an L1 miss: the metadata is read along (one GET), not served without Redis
        broker.detach(ch)
        cache.l1.invalidate(META, ch)
        await client.config_resetstat()
        missed = await broker.join(ch, None, 2)
        assert missed.meta_json == warm.meta_json
        assert (await redis_calls(client)).get("get") == 1
    finally:
        await broker.close()
        await cache.close()
        await client.aclose()


async def test_rate_limit_is_shared_through_redis_and_falls_back_to_memory(
    redis_server: RedisServer,
) -> None:
    clients = [aioredis.Redis.from_url(redis_server.url, socket_timeout=0.3) for _ in range(2)]
    breaker = CircuitBreaker(1, 60.0)
    pods = [RateLimiter(clients[0]), RateLimiter(clients[1], breaker)]
    try:
        decisions = [await pods[i % 2].hit("conn:ada", 5, 60.0) for i in range(7)]
        assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
        assert {d.source for d in decisions} == {"redis"}
        assert decisions[4].count == 5
        redis_server.stop()
        fallback = await pods[1].hit("conn:bo", 5, 60.0)
        assert (fallback.allowed, fallback.source) == (True, "memory")
        assert breaker.state == "open"
        assert (await pods[1].hit("conn:bo", 5, 60.0)).source == "memory"  # no wait on Redis
        assert (await RateLimiter(None).hit("x", 1, 1.0)).source == "memory"
    finally:
        for client in clients:
            await client.aclose()


async def test_hot_tracker_errors_keep_counts_and_decay(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=0.3)
    breaker = CircuitBreaker(5, 60.0)
    hot = HotTracker(client, breaker)
    try:
        for _ in range(4):
            hot.touch("a")
        hot.touch("b")
        hot._flushes = 719  # the next flush is a decay flush
        assert await hot.flush() == 2
        assert await client.zscore(HOT_KEY, "a") == 2.0  # halved
        assert await client.zscore(HOT_KEY, "b") is None  # below 1 after halving: dropped
        assert await hot.flush() == 0  # nothing pending
        hot.touch("c")
        redis_server.stop()
        assert await hot.flush() == 0
        assert hot.pending == {"c": 1}  # kept for the next flush
        assert await hot.top(3) == []
        flushes = hot._flushes
        task = asyncio.create_task(hot.run(0.01))
        await wait_until(lambda: hot._flushes >= flushes + 2, timeout_s=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # a stop lets the flush in progress finish and makes one last flush
        hot.touch("d")
        flushes = hot._flushes
        task = asyncio.create_task(hot.run(60.0))
        await asyncio.sleep(0)  # the task starts and waits for its interval
        hot.stop()
        await asyncio.wait_for(task, timeout=10)
        assert hot._flushes == flushes + 1
    finally:
        await client.aclose()


def test_the_lua_rule_matches_the_python_rule(shared_redis: RedisServer) -> None:
    client = redis.Redis.from_url(shared_redis.url)
    script = client.register_script(RATE_LUA)
    rng = random.Random(7)
    try:
        for case in range(300):
            prev, cur = rng.randint(0, 30), rng.randint(0, 30)
            weight, inc, limit = rng.randint(0, 1000), rng.randint(0, 2), rng.randint(1, 40)
            keys = [f"wsf:rl:{{lua-{case}}}:1", f"wsf:rl:{{lua-{case}}}:0"]
            client.set(keys[0], cur)
            client.set(keys[1], prev)
            allowed, count = script(keys=keys, args=[inc, limit, weight, 60000, 0])
            expected_allowed, estimate = decide(prev, cur, weight, inc, limit)
            assert (bool(allowed), count) == (expected_allowed, estimate + inc), case
    finally:
        client.close()
