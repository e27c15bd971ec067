"""A burst of 1,000 near-simultaneous protected connections, each subscribing, on a real Redis.

Every subscribe must succeed and the Redis circuit breaker must never open: local
congestion (a burst of requests queueing for Redis connections) is not a Redis failure.
"""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.backends.redis.pool import POOL_HEADROOM

from tests.protection.support import protected_settings, running, token
from wsfleet.client import Client, ServerError
from wsfleet.services import RedisServer

CONNECTIONS = 1000
CHANNELS = 50
CLIENT_CONCURRENCY = 200


async def test_burst_of_protected_subscribes_keeps_the_breaker_closed(
    redis_server: RedisServer,
) -> None:
    settings = protected_settings(
        redis_url=redis_server.url,
        redis_timeout_s=1.0,
        max_connections=CONNECTIONS * 2,
    )
    tokens = [token(f"burst-user-{i}") for i in range(CONNECTIONS)]
    async with running(settings) as gw:
        assert gw.protection is not None
        breaker = gw.protection.breaker
        opened_before = breaker.opened_total
        for k in range(CHANNELS):  # each channel: metadata in L2 and one message in history
            await gw.store.set_meta(f"burst-{k}", {"n": k})
            await gw.store.publish(f"burst-{k}", f'"hello {k}"')
        gw.protection.cache.l1.clear()  # every subscriber's metadata lookup starts cold
        gate = asyncio.Semaphore(CLIENT_CONCURRENCY)
        clients: list[Client] = []
        failures: list[str] = []

        async def one(i: int) -> None:
            async with gate:
                try:
                    client = await Client.connect(gw.ws_url, tokens[i], timeout_s=60.0)
                except Exception as exc:
                    failures.append(f"connect {i}: {type(exc).__name__}: {exc}")
                    return
                clients.append(client)
                k = i % CHANNELS
                try:
                    reply = await client.subscribe(f"burst-{k}")
                except ServerError as exc:
                    failures.append(f"subscribe {i}: {exc.code}: {exc.message}")
                    return
                # served from Redis, not degraded to local state (no metadata, no history)
                if reply.meta != {"n": k} or [m.data for m in reply.history] != [f"hello {k}"]:
                    failures.append(f"subscribe {i} degraded: {reply.meta} {reply.history}")

        try:
            async with asyncio.timeout(240):
                await asyncio.gather(*(one(i) for i in range(CONNECTIONS)))
            info = aioredis.Redis.from_url(redis_server.url)
            try:
                clients_info = await info.info("clients")
            finally:
                await info.aclose()
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.close()
        print(
            f"\nburst: {CONNECTIONS - len(failures)}/{CONNECTIONS} subscribed, "
            f"breaker opened {breaker.opened_total - opened_before} times, "
            f"redis connected_clients={clients_info['connected_clients']}"
        )
        assert failures == [], failures[:10]
        assert breaker.opened_total == opened_before
        assert breaker.state == "closed"
        # bounded pools (broker's and protection's, plus the broker's pub/sub link and this
        # test's INFO client): the burst must not open hundreds of Redis connections
        bound = 2 * (settings.redis_pool_size + POOL_HEADROOM) + 2
        assert clients_info["connected_clients"] <= bound
        # concurrent joins of one channel shared stream reads (metadata rides along)
        assert isinstance(gw.broker, RedisBroker)
        assert gw.broker.reads.shared > 0
