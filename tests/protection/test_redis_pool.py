"""`RedisGate`, `SingleFlight` and failure classification; local congestion never opens the
breaker (real Redis)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.backends.redis.pool import (
    RedisBusyError,
    RedisGate,
    SingleFlight,
    is_redis_failure,
    make_client,
)
from wsfleet_gateway.broker import BrokerUnavailableError
from wsfleet_gateway.cache.broker import ProtectedBroker
from wsfleet_gateway.cache.l1 import L1Cache
from wsfleet_gateway.cache.layers import ChannelCache
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.protection.breaker import CircuitBreaker
from wsfleet_gateway.protection.metrics import ProtectionMetrics
from wsfleet_gateway.protection.ratelimit import RateLimiter

from tests.support.waiting import wait_until
from wsfleet.services import RedisServer


def test_failure_classification() -> None:
    assert not is_redis_failure(RedisBusyError("queued too long"))
    assert not is_redis_failure(MaxConnectionsError("Too many connections"))
    wrapped = BrokerUnavailableError("during history")
    wrapped.__cause__ = MaxConnectionsError("Too many connections")
    assert not is_redis_failure(wrapped)
    assert is_redis_failure(RedisConnectionError("connection refused"))
    assert is_redis_failure(TimeoutError())
    assert is_redis_failure(BrokerUnavailableError("redis unavailable during publish"))
    with pytest.raises(ValueError, match="size >= 1"):
        RedisGate(0, 1.0)


async def test_gate_bounds_in_flight_and_queue_wait_raises_busy() -> None:
    gate = RedisGate(2, 0.05)
    release = asyncio.Event()
    entered = [asyncio.Event(), asyncio.Event()]

    async def hold(i: int) -> None:
        async with gate.slot():
            entered[i].set()
            await release.wait()

    holders = [asyncio.create_task(hold(i)) for i in range(2)]
    for event in entered:
        await event.wait()
    assert gate.in_flight == 2
    with pytest.raises(RedisBusyError):
        async with gate.slot():
            pass
    assert gate.busy_total == 1
    assert gate.waiting == 0
    release.set()
    await asyncio.gather(*holders)
    assert (gate.in_flight, gate.peak_in_flight, gate.peak_waiting) == (0, 2, 1)
    async with gate.slot():  # free again
        assert gate.in_flight == 1


async def test_gate_takes_a_free_slot_at_once_and_queues_in_order() -> None:
    gate = RedisGate(1, 5.0)
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def user(name: str, hold: bool) -> None:
        async with gate.slot():
            order.append(name)
            if hold:
                first_in.set()
                await release.wait()

    first = asyncio.create_task(user("first", hold=True))
    await first_in.wait()
    assert gate.peak_waiting == 0  # a free slot is taken without queueing
    queued = [asyncio.create_task(user(name, hold=False)) for name in ("second", "third")]
    await wait_until(lambda: gate.waiting == 2)
    release.set()
    await asyncio.gather(first, *queued)
    assert order == ["first", "second", "third"]
    assert (gate.waiting, gate.peak_waiting, gate.in_flight) == (0, 2, 0)


async def test_single_flight_shares_runs_forgets_and_cancels() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    runs = 0
    go = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        mine = runs
        await go.wait()
        return mine

    first = [asyncio.create_task(flight.run("a", work)) for _ in range(5)]
    await asyncio.sleep(0)
    assert len(flight) == 1
    flight.forget("a")  # data changed: new callers start a fresh run
    later = asyncio.create_task(flight.run("a", work))
    await asyncio.sleep(0)
    go.set()
    assert await asyncio.gather(*first) == [1] * 5
    assert await later == 2
    assert (runs, flight.shared, len(flight)) == (2, 4, 0)

    async def boom() -> int:
        raise BrokerUnavailableError("down")

    with pytest.raises(BrokerUnavailableError):
        await flight.run("b", boom)

    async def forever() -> int:
        await asyncio.Event().wait()
        return 0

    done = asyncio.Event()

    async def slow() -> int:
        await done.wait()
        return 7

    waiter = asyncio.create_task(flight.run("c", slow))
    await asyncio.sleep(0)
    flight.forget_all()
    assert len(flight) == 0
    done.set()
    assert await waiter == 7

    other = asyncio.create_task(flight.run("d", forever))
    await asyncio.sleep(0)
    flight.cancel_all()
    with pytest.raises(asyncio.CancelledError):
        await other


async def test_congestion_is_not_a_redis_failure(redis_server: RedisServer) -> None:
    """Every path queues on a full gate: callers get `unavailable` or a local answer, the
    breaker stays closed; real failures still count."""
    client = make_client(redis_server.url, 1.0, 1)
    gate = RedisGate(1, 0.05)
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=30)
    broker = RedisBroker(redis_server.url, pool_size=1, queue_timeout_s=0.05)
    cache = ChannelCache(
        L1Cache({}, 1 << 20),
        ProtectionMetrics(GatewayMetrics()),
        redis=client,
        breaker=breaker,
        gate=gate,
    )
    limiter = RateLimiter(client, breaker, gate=gate)
    protected = ProtectedBroker(broker, cache, breaker)
    await protected.start(lambda delivery: None)
    try:
        await cache.set_meta("c", {"t": 1})
        assert await cache.get_meta("c") == {"t": 1}
        async with gate.slot(), broker.gate.slot():  # everything else must queue
            cache.l1.clear()
            assert await cache.get_meta("c") == {}  # degraded: nothing cached
            with pytest.raises(RedisBusyError):
                await cache.set_meta("c", {"t": 2})
            assert (await limiter.hit("u", 5, 60)).source == "memory"
            assert await cache.prewarm(["c"]) == 0
            with pytest.raises(BrokerUnavailableError):
                await protected.publish("c", '"x"')
            history = await protected.history("c", None, 10)
            assert history.messages == []
        assert breaker.state == "closed"
        assert breaker.opened_total == 0
        assert gate.busy_total >= 3
        assert broker.gate.busy_total >= 2
        # the pool's own cap (MaxConnectionsError) is congestion too
        busy = make_client(redis_server.url, 1.0, 1)
        held = [await busy.connection_pool.get_connection() for _ in range(9)]
        try:
            assert (await RateLimiter(busy, breaker).hit("v", 5, 60)).source == "memory"
        finally:
            for conn in held:
                await busy.connection_pool.release(conn)
            await busy.aclose()
        assert breaker.opened_total == 0
        # a real failure still opens it
        redis_server.stop()
        with pytest.raises(BrokerUnavailableError):
            await protected.publish("c", '"y"')
        assert breaker.opened_total == 1
    finally:
        await protected.close()
        await cache.close()
        await client.aclose()
