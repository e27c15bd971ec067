"""The cheap connect path: one batched Redis call per connect pass, same rules as before.

`RateLimiter.connect` (address read + user count in one `CONNECT_LUA` call, batched
across concurrent connects), the prepared HS256 key and the cached welcome template.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
import redis
import redis.asyncio as aioredis
import structlog
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.backends.redis.pool import RedisGate
from wsfleet_gateway.protection.admission import client_ip
from wsfleet_gateway.protection.auth import Principal
from wsfleet_gateway.protection.breaker import CircuitBreaker
from wsfleet_gateway.protection.ratelimit import (
    CONNECT_LUA,
    MAX_BATCH,
    MemoryCounter,
    RateLimiter,
    decide,
)
from wsfleet_gateway.protocol import encode_welcome
from wsfleet_gateway.server import _json_plain, welcome_template

from tests.protection.support import close_code_of, protected_settings, running, token
from wsfleet.services import RedisServer

WINDOW = 60.0


def test_the_connect_lua_matches_two_python_decisions(shared_redis: RedisServer) -> None:
    """Address look (inc 0) then, only when it passes, the user's counted hit."""
    client = redis.Redis.from_url(shared_redis.url)
    script = client.register_script(CONNECT_LUA)
    rng = random.Random(11)
    try:
        for case in range(60):
            items, keys, args, expected, ip_counts = [], [], [], [], []
            for j in range(rng.randint(1, 5)):
                ip = [rng.randint(0, 8) for _ in range(2)]  # current, previous window
                user = [rng.randint(0, 8) for _ in range(2)]
                weight = rng.randint(0, 1000)
                ip_limit, user_limit = rng.randint(1, 10), rng.randint(1, 10)
                names = [f"wsf:rl:{{c{case}-{j}-{w}}}:{i}" for w in ("ip", "u") for i in (1, 0)]
                for name, value in zip(names, ip + user, strict=True):
                    client.set(name, value)
                keys += names
                args += [ip_limit, weight, user_limit, weight, 60_000]
                items.append(names)
                ip_counts.append(ip[0])
                ip_ok, ip_est = decide(ip[1], ip[0], weight, 0, ip_limit)
                if not ip_ok:
                    expected.append(([0, ip_est, 0, 0], user[0]))
                    continue
                user_ok, user_est = decide(user[1], user[0], weight, 1, user_limit)
                counted = user[0] + 1 if user_ok else user[0]
                expected.append(([1, ip_est, int(user_ok), user_est + 1], counted))
            flat = [int(v) for v in script(keys=keys, args=args)]
            for j, (reply, user_count) in enumerate(expected):
                assert flat[4 * j : 4 * j + 4] == reply, (case, j)
                assert int(client.get(items[j][2]) or 0) == user_count
                assert int(client.get(items[j][0]) or 0) == ip_counts[j]  # only read
    finally:
        client.close()


@given(
    st.lists(st.tuples(st.booleans(), st.floats(0, 200)), max_size=40),
    st.integers(1, 6),
    st.integers(1, 6),
)
async def test_memory_connect_is_the_two_old_hits(
    events: list[tuple[bool, float]], ip_limit: int, user_limit: int
) -> None:
    """Without Redis, `connect` decides exactly as ``hit(ip, inc=0)`` then ``hit(user)``."""
    now = [1000.0]
    limiter = RateLimiter(None, clock=lambda: now[0])
    reference = MemoryCounter()
    for failed, dt in events:
        now[0] += dt
        if failed:
            await limiter.hit("ip", ip_limit, WINDOW, count_rejected=True)
            reference.hit("ip", ip_limit, WINDOW, now[0], 1, True)
            continue
        ip, user = await limiter.connect("ip", ip_limit, "user", user_limit, WINDOW)
        ref_ip = reference.hit("ip", ip_limit, WINDOW, now[0], 0, False)
        assert (ip.allowed, ip.count, ip.source) == (ref_ip.allowed, ref_ip.count, "memory")
        if not ref_ip.allowed:
            assert user is None
            continue
        ref_user = reference.hit("user", user_limit, WINDOW, now[0], 1, False)
        assert user is not None
        assert (user.allowed, user.count) == (ref_user.allowed, ref_user.count)


async def test_two_pods_batched_connects_share_the_user_limit(redis_server: RedisServer) -> None:
    clients = [aioredis.Redis.from_url(redis_server.url, decode_responses=True) for _ in range(2)]
    pods = [RateLimiter(clients[0]), RateLimiter(clients[1])]
    try:
        # 30 connects of one user at once, alternating pods: one batch per pod, 10 allowed
        results = await asyncio.gather(
            *(pods[i % 2].connect("authfail:ip", 20, "conn:ada", 10, WINDOW) for i in range(30))
        )
        users = [user for _ip, user in results]
        assert all(user is not None and user.source == "redis" for user in users)
        assert sum(1 for user in users if user is not None and user.allowed) == 10
        assert [pod.batches_total for pod in pods] == [1, 1]
        counts = sorted(user.count for user in users if user is not None)
        assert counts[:10] == list(range(1, 11))  # each allowed connect counted once
        # a bigger burst than one batch holds: split into several calls, still exact
        burst = await asyncio.gather(
            *(pods[0].connect("authfail:ip", 20, f"conn:u{i % 7}", 3, WINDOW) for i in range(600))
        )
        assert pods[0].batches_total >= 1 + 600 // MAX_BATCH
        allowed = sum(1 for _ip, user in burst if user is not None and user.allowed)
        assert allowed == 7 * 3
    finally:
        for client in clients:
            await client.aclose()


async def test_a_flooded_address_is_refused_without_counting_the_user(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    other = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    limiter, pod_b = RateLimiter(client), RateLimiter(other)
    try:
        for _ in range(4):  # failures seen by another pod
            await pod_b.hit("authfail:1.2.3.4", 3, WINDOW, count_rejected=True)
        ip, user = await limiter.connect("authfail:1.2.3.4", 3, "conn:eve", 10, WINDOW)
        assert (ip.allowed, ip.count, ip.source, user) == (False, 4, "redis", None)
        look = await limiter.hit("conn:eve", 10, WINDOW, inc=0)
        assert look.count == 0  # the refused connect was not counted for the user
        ip, user = await limiter.connect("authfail:5.6.7.8", 3, "conn:eve", 10, WINDOW)
        assert ip.allowed
        assert user is not None
        assert (user.allowed, user.count) == (True, 1)
    finally:
        await client.aclose()
        await other.aclose()


async def test_connect_falls_back_to_memory_and_skips_redis_while_open(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    breaker = CircuitBreaker(1, 60.0)
    limiter = RateLimiter(client, breaker)
    try:
        ip, user = await limiter.connect("authfail:ip", 5, "conn:bo", 2, WINDOW)
        assert user is not None
        assert (ip.source, user.source) == ("redis", "redis")
        redis_server.stop()
        ip, user = await limiter.connect("authfail:ip", 5, "conn:bo", 2, WINDOW)
        # the pod's own view: one connect already counted, one more allowed
        assert user is not None
        assert (user.source, user.allowed, user.count) == ("memory", True, 2)
        assert breaker.state == "open"
        calls = limiter.batches_total
        ip, user = await limiter.connect("authfail:ip", 5, "conn:bo", 2, WINDOW)
        assert user is not None
        assert (user.source, user.allowed) == ("memory", False)
        assert limiter.batches_total == calls  # an open breaker: no Redis call at all
    finally:
        await client.aclose()


async def test_a_cancelled_connect_leaves_the_batch_answering_the_others(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    limiter = RateLimiter(client)
    try:
        tasks = [
            asyncio.create_task(limiter.connect("authfail:ip", 5, f"conn:c{i}", 2, WINDOW))
            for i in range(5)
        ]
        await asyncio.sleep(0)  # every connect is queued for the same batch
        tasks[2].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[2], asyncio.CancelledError)
        for i in (0, 1, 3, 4):
            result = done[i]
            assert isinstance(result, tuple)
            assert result[1] is not None
            assert result[1].source == "redis"
        assert limiter.batches_total == 1
    finally:
        await client.aclose()


async def test_burst_of_connects_across_two_live_pods_holds_the_limit(
    shared_redis: RedisServer,
) -> None:
    """30 simultaneous connects of one user over two gateways: 10 in, 20 closed 4008."""
    user = f"burst-photographer-{time.time_ns()}"
    async with (
        running(protected_settings(redis_url=shared_redis.url, node_name="pod-a")) as a,
        running(protected_settings(redis_url=shared_redis.url, node_name="pod-b")) as b,
    ):
        with structlog.testing.capture_logs() as events:
            codes = await asyncio.gather(
                *(close_code_of((a, b)[i % 2].ws_url, token(user)) for i in range(30))
            )
        assert sorted(codes, key=lambda c: c or 0) == [None] * 10 + [4008] * 20
        audit = [e for e in events if e.get("audit") and e.get("user") == user]
        assert sorted(e["event"] for e in audit) == (
            ["admission_accepted"] * 10 + ["admission_rejected"] * 20
        )
        assert {e["reason"] for e in audit if e["event"] == "admission_rejected"} == {
            "rate_limited"
        }


async def test_a_good_token_from_a_flooding_address_is_refused_and_audited(
    redis_server: RedisServer,
) -> None:
    settings = protected_settings(redis_url=redis_server.url, auth_failures_per_ip_per_min=2)
    async with running(settings) as gw:
        codes = [await close_code_of(gw.ws_url, "bad-token") for _ in range(3)]
        assert codes == [4001, 4001, 4008]
        with structlog.testing.capture_logs() as events:
            assert await close_code_of(gw.ws_url, token("innocent")) == 4008
        rejected = [e for e in events if e.get("event") == "admission_rejected"]
        assert [(e["reason"], e["user"], e["detail"]) for e in rejected] == [
            ("auth_flood", "innocent", "address blocked")
        ]
        assert gw.protection is not None
        look = await gw.protection.limiter.hit("conn:innocent", 10, 60.0, inc=0)
        assert look.count == 0  # the refused connect was not counted for the user


def test_gateway_welcome_uses_the_template_and_escapes_odd_ids() -> None:
    gw = Gateway(protected_settings(node_name="pod-w"), broker=MemoryBroker())
    limits = gw.ws.ctx.limits()
    for connection_id in ("pod-w-1", "pod-w-2", 'odd"id', "naïve-1"):
        assert gw.ws.welcome(connection_id) == encode_welcome(connection_id, "pod-w", limits)
    paid = Principal("ada", "paid", ("*",), max_channels=10)
    expected = encode_welcome("pod-w-3", "pod-w", {**limits, "max_channels": 10})
    assert gw.ws.welcome("pod-w-3", paid) == expected


@pytest.mark.parametrize("max_channels", [None, 3, 25])
def test_welcome_template_gives_encode_welcomes_bytes(max_channels: int | None) -> None:
    limits: dict[str, int | float] = {"max_message_bytes": 65536, "heartbeat_s": 30.0}
    if max_channels is not None:
        limits["max_channels"] = max_channels
    prefix, suffix = welcome_template("node-ä", limits)
    for connection_id in ("node-ä-1", "n-1", "pod-7-123456"):
        if _json_plain(connection_id):
            built = prefix + connection_id.encode() + suffix
            assert built == encode_welcome(connection_id, "node-ä", limits)
    assert not _json_plain('a"b')
    assert not _json_plain("a\\b")
    assert not _json_plain("ä")
    assert json.loads(prefix + b"x" + suffix)["connection_id"] == "x"


async def test_a_breaker_opened_before_the_batch_leaves_or_a_busy_gate_means_memory(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    breaker = CircuitBreaker(1, 60.0)
    gate = RedisGate(1, 0.05)
    limiter = RateLimiter(client, breaker, gate=gate)
    try:
        task = asyncio.create_task(limiter.connect("authfail:ip", 5, "conn:x", 2, WINDOW))
        await asyncio.sleep(0)  # queued; its batch leaves on the next pass
        breaker.record_failure()  # opens before the batch leaves
        ip, user = await task
        assert user is not None
        assert (ip.source, user.source, limiter.batches_total) == ("memory", "memory", 0)
        breaker.record_success()
        async with gate.slot():  # Redis connections all busy: local congestion
            ip, user = await limiter.connect("authfail:ip", 5, "conn:x", 2, WINDOW)
        assert user is not None
        assert (user.source, user.allowed, user.count) == ("memory", True, 2)
        assert breaker.state == "closed"  # congestion is not a Redis failure
    finally:
        await client.aclose()


async def test_a_name_with_no_utf8_form_never_fails_the_batch(shared_redis: RedisServer) -> None:
    """Issue 17 §2: a user or address with a lone surrogate (a forwarded-for header arrives
    surrogate-escaped) is decided by the memory counter alone; the connects batched with it
    are decided by Redis, and the breaker hears of no failure."""
    client = aioredis.Redis.from_url(shared_redis.url, decode_responses=True)
    breaker = CircuitBreaker(1, 60.0)
    limiter = RateLimiter(client, breaker)
    try:
        results = await asyncio.gather(
            *(limiter.connect("authfail:iso", 20, f"conn:iso-{i}", 10, WINDOW) for i in range(5)),
            limiter.connect("authfail:iso", 20, "conn:\ud800", 10, WINDOW),
            limiter.connect("authfail:\udced", 20, "conn:iso-x", 10, WINDOW),
        )
        sources = [(ip.source, user.source if user else None) for ip, user in results]
        assert sources == [("redis", "redis")] * 5 + [("memory", "memory")] * 2
        assert (await limiter.hit("conn:\udfff", 3, WINDOW)).source == "memory"
        assert (await limiter.hit("conn:iso-y", 3, WINDOW)).source == "redis"
        assert breaker.state == "closed"
    finally:
        await client.aclose()


def test_a_forwarded_address_that_is_no_address_is_not_used() -> None:
    for forwarded in ("\udced\udca0\udc80, 1.2.3.4", "caf\u00e9", "a\tb"):
        assert client_ip(("10.0.0.1", 5), {"x-forwarded-for": forwarded}, True) == "10.0.0.1"
