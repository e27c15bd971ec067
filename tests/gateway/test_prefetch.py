"""Next-channel prefetch on real Redis, real gateways and real clients (issue 22).

- the model: the Lua script's decayed counts against a reference in Python, for any
  sequence of moves (hypothesis, on a real redis-server), its size cap and expiry,
  and the same step on a real Redis Cluster (one user's keys in one slot);
- a user who cycles through channels in a habit finds the next one held: the switch
  sends no SUBSCRIBE, and its history is current (a message published after the
  prefetch is in the reply);
- any pod can use the model: habits learned on one gateway make another gateway hold
  the user's likeliest first channel as soon as they connect;
- a channel the user's token no longer allows is never prefetched; anonymous
  connections learn nothing;
- Redis going away: switches are still answered, prefetch counts its failures, and
  learns again once Redis is back.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster as RedisClusterClient
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.backends.redis.cluster_broker import RedisClusterBroker
from wsfleet_gateway.backends.redis.habits import (
    HABIT_LUA,
    MAX_FROM,
    MAX_NEXT,
    connect_key,
    index_key,
    next_key,
    step_args,
)
from wsfleet_gateway.backends.redis.slots import key_slot
from wsfleet_gateway.prefetch import Prefetcher
from wsfleet_gateway.protection.jwt_auth import issue_token

from tests.gateway.conftest import GatewayFactory
from tests.support.waiting import wait_until
from wsfleet.client import Client, ServerError
from wsfleet.services import RedisCluster, RedisServer

SECRET = "prefetch-secret-0123456789abcdef-0123456789"
HALF_LIFE_S = 3600.0


def token(user: str, channels: list[str] | None = None) -> str:
    return issue_token(SECRET, user, channels=channels or ["*"], tier="paid", ttl_s=600)


# --- the model's script ---------------------------------------------------------------


def reference_score(times: list[float]) -> float:
    """log2 of the forward-decayed count of moves made at `times`."""
    return math.log2(sum(2.0 ** (t / HALF_LIFE_S - times[0] / HALF_LIFE_S) for t in times)) + (
        times[0] / HALF_LIFE_S
    )


def step(client: redis.Redis, *args: Any) -> list[str]:
    """One step of the model through plain EVAL (the gateway sends EVALSHA)."""
    reply = client.eval(HABIT_LUA, *step_args(*args))
    return [r.decode() for r in reply]


@given(
    moves=st.lists(
        st.tuples(st.sampled_from("bcdef"), st.floats(0, 10 * HALF_LIFE_S)),
        min_size=1,
        max_size=30,
    )
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_scores_are_the_decayed_counts_and_rank_the_same(
    shared_redis: RedisServer, moves: list[tuple[str, float]]
) -> None:
    client = redis.Redis.from_url(shared_redis.url)
    user = f"prop-{abs(hash(tuple(moves)))}"
    client.delete(next_key(user, "a"))
    moves = sorted(moves, key=lambda m: m[1])  # time goes forward
    for to, at in moves:
        step(client, user, "a", to, 1e9 + at, HALF_LIFE_S, 60_000, 0)
    stored = dict(client.zrange(next_key(user, "a"), 0, -1, withscores=True))
    times: dict[str, list[float]] = {}
    for to, at in moves:
        times.setdefault(to, []).append(1e9 + at)
    assert {k.decode() for k in stored} == set(times)
    for to, at_list in times.items():
        expected = reference_score(at_list) - 1e9 / HALF_LIFE_S
        got = stored[to.encode()] - 1e9 / HALF_LIFE_S
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-6), (to, got, expected)
    now = 1e9 + 11 * HALF_LIFE_S
    decayed = {to: sum(2.0 ** ((t - now) / HALF_LIFE_S) for t in ts) for to, ts in times.items()}
    ranked = step(client, user, "x", "a", now, HALF_LIFE_S, 60_000, len(times))
    for higher, lower in itertools.pairwise(ranked):  # the top read ranks as the counts do
        assert decayed[higher] >= decayed[lower] * (1 - 1e-9), (ranked, decayed)
    assert sorted(ranked) == sorted(times)
    client.close()


def test_recent_habits_outrank_old_ones(shared_redis: RedisServer) -> None:
    client = redis.Redis.from_url(shared_redis.url)
    user, t0 = "recent", 1e9
    client.delete(next_key(user, "a"))
    for _ in range(3):  # three moves to b two half-lives ago weigh 3/4 today
        step(client, user, "a", "b", t0, HALF_LIFE_S, 60_000, 0)
    step(client, user, "a", "c", t0 + 2 * HALF_LIFE_S, HALF_LIFE_S, 60_000, 0)  # weighs 1
    assert step(client, user, "x", "a", t0 + 2 * HALF_LIFE_S, HALF_LIFE_S, 60_000, 2) == [
        "c",
        "b",
    ]
    for _ in range(3):  # more of b now: b leads again
        step(client, user, "a", "b", t0 + 2 * HALF_LIFE_S, HALF_LIFE_S, 60_000, 0)
    assert step(client, user, "x", "a", t0 + 2 * HALF_LIFE_S, HALF_LIFE_S, 60_000, 1) == ["b"]
    client.close()


def test_a_set_keeps_its_strongest_members_and_expires(shared_redis: RedisServer) -> None:
    client = redis.Redis.from_url(shared_redis.url)
    user = "capped"
    client.delete(next_key(user, "a"), connect_key(user))
    for i in range(MAX_NEXT + 10):  # later moves weigh more: the first ten go
        step(client, user, "a", f"to-{i}", 1e9 + i * 60, HALF_LIFE_S, 5_000, 0)
    members = {m.decode() for m in client.zrange(next_key(user, "a"), 0, -1)}
    assert members == {f"to-{i}" for i in range(10, MAX_NEXT + 10)}
    assert 0 < client.pttl(next_key(user, "a")) <= 5_000
    step(client, user, "a", "a", 1e9, HALF_LIFE_S, 5_000, 0)  # not a move
    assert client.zscore(next_key(user, "a"), "a") is None
    step(client, user, None, "first", 1e9, HALF_LIFE_S, 5_000, 0)  # a connection's first
    assert step(client, user, None, None, 1e9, HALF_LIFE_S, 5_000, 3) == ["first"]
    client.close()


def test_a_user_keeps_a_bounded_number_of_sets_whatever_they_join(
    shared_redis: RedisServer,
) -> None:
    """An attacker joining endless channel names leaves at most MAX_FROM sets behind:
    the ones least recently left go, with their keys."""
    client = redis.Redis.from_url(shared_redis.url)
    user = "flooder"
    for i in range(MAX_FROM + 40):
        step(client, user, f"from-{i}", f"to-{i}", 1e9 + i, HALF_LIFE_S, 60_000, 0)
    sets = {k.decode() for k in client.scan_iter(match=next_key(user, "*"), count=1000)}
    assert sets == {next_key(user, f"from-{i}") for i in range(40, MAX_FROM + 40)}
    assert client.zcard(index_key(user)) == MAX_FROM
    assert 0 < client.pttl(index_key(user)) <= 60_000
    step(client, user, None, "first", 1e9, HALF_LIFE_S, 60_000, 0)  # the connect set: not
    assert client.zcard(index_key(user)) == MAX_FROM  # one of them, never dropped with them
    client.close()


def test_the_step_arguments_refuse_a_zero_half_life() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        step_args("ann", "a", "b", 1.0, 0.0, 1000, 1)


async def test_a_step_on_a_redis_cluster_reads_and_writes_one_slot(
    redis_cluster: RedisCluster,
) -> None:
    await asyncio.to_thread(redis_cluster.flushall)
    assert key_slot(next_key("ann", "a")) == key_slot(connect_key("ann"))
    assert key_slot(next_key("ann", "a")) == key_slot(next_key("ann", "zz-other"))
    broker = RedisClusterBroker(redis_cluster.url, op_timeout_s=2.0)
    await broker.start(lambda delivery: None)
    try:
        assert await broker.habit_step("ann", None, "a", 2) == []
        for _ in range(2):
            await broker.habit_step("ann", "a", "b", 0)
        await broker.habit_step("ann", "a", "c", 0)
        assert await broker.habit_step("ann", "z", "a", 2) == ["b", "c"]
        assert await broker.habit_step("ann", None, None, 2) == ["a"]
        for i in range(MAX_FROM + 3):  # the index drops sets by key, on the user's node
            await broker.habit_step("ann", f"from-{i}", "a", 0)
        assert await broker.habit_step("ann", "z", "a", 2) == []  # a's set went: left first
        cluster = RedisClusterClient.from_url(redis_cluster.url)
        left = list(cluster.scan_iter(match=next_key("ann", "*"), count=1000))
        cluster.close()
        assert len(left) == MAX_FROM
    finally:
        await broker.close()


# --- on real gateways -----------------------------------------------------------------


@pytest.fixture
def gateways(redis_gateways: GatewayFactory) -> GatewayFactory:
    """Gateways on one Redis with JWT auth, holding prefetched channels 60 s."""

    def factory(**overrides: Any) -> Awaitable[Gateway]:
        values = {"auth": "enabled", "jwt_secret": SECRET, "prefetch_hold_s": 60.0}
        return redis_gateways(**{**values, **overrides})

    return factory


def prefetcher(gateway: Gateway) -> Prefetcher:
    assert gateway.ctx.prefetch is not None
    return gateway.ctx.prefetch


def results(gateway: Gateway, result: str) -> int:
    return gateway.metrics.prefetch.value(result)


def subscribes(gateway: Gateway) -> int:
    assert isinstance(gateway.broker, RedisBroker)
    return gateway.broker.stats.subscribes


async def learn_cycle(gateway: Gateway, client: Client, channels: list[str], rounds: int) -> None:
    """`client` (on channels[0]) switches round the cycle `rounds` times; each switch's
    model step has answered before the next switch (so the order is the order learned)."""
    steps = results(gateway, "stepped")
    for _ in range(rounds):
        for came_from, to in zip(channels, [*channels[1:], channels[0]], strict=True):
            await client.switch(came_from, to)
            steps += 1
            await wait_until(lambda n=steps: results(gateway, "stepped") >= n)


async def test_the_next_channel_of_a_habit_is_held_and_the_switch_needs_no_subscribe(
    gateways: GatewayFactory, clients: list[Client]
) -> None:
    gateway = await gateways()
    ann = await Client.connect(gateway.ws_url, token=token("ann"))
    publisher = await Client.connect(gateway.ws_url, token=token("pub"))
    clients += [ann, publisher]
    cycle = ["wedding-a", "wedding-b", "wedding-c", "wedding-d"]
    await ann.subscribe(cycle[0])
    await learn_cycle(gateway, ann, cycle, rounds=2)
    # ann is on wedding-a again; the model says wedding-b comes next: it is held here
    await wait_until(lambda: "wedding-b" in prefetcher(gateway).held, message="b held")
    await publisher.publish("wedding-b", {"note": "after the prefetch"})
    before = subscribes(gateway)
    prefetched_before = gateway.metrics.prefetch_joins.value("prefetched")
    reply = await ann.switch("wedding-a", "wedding-b")
    assert subscribes(gateway) == before  # served from what the pod held
    assert reply.history[-1].data == {"note": "after the prefetch"}  # and current
    assert gateway.metrics.prefetch_joins.value("prefetched") == prefetched_before + 1


async def test_habits_learned_on_one_gateway_warm_another_at_connect(
    gateways: GatewayFactory, clients: list[Client]
) -> None:
    first, second = await gateways(), await gateways()
    for _ in range(3):  # ann starts her day on wedding-home
        client = await Client.connect(first.ws_url, token=token("ann"))
        await client.subscribe("wedding-home")
        await wait_until(lambda: results(first, "stepped") >= 1)
        await client.close()
    await wait_until(lambda: results(first, "stepped") >= 3)
    ann = await Client.connect(second.ws_url, token=token("ann"))
    clients.append(ann)
    await wait_until(lambda: "wedding-home" in prefetcher(second).held, message="held at connect")
    before = subscribes(second)
    await ann.subscribe("wedding-home")
    assert subscribes(second) == before
    assert second.metrics.prefetch_joins.value("prefetched") == 1


async def test_a_channel_the_token_does_not_allow_is_never_prefetched(
    gateways: GatewayFactory, clients: list[Client]
) -> None:
    gateway = await gateways()
    ann = await Client.connect(gateway.ws_url, token=token("ann"))
    clients.append(ann)
    await ann.subscribe("wedding-a")
    await learn_cycle(gateway, ann, ["wedding-a", "secret-b", "wedding-c"], rounds=2)
    await learn_cycle(gateway, ann, ["wedding-a", "wedding-d"], rounds=1)
    await ann.close()  # after wedding-a: secret-b (twice), then wedding-d (once)
    narrow = await Client.connect(gateway.ws_url, token=token("ann", ["wedding-*"]))
    clients.append(narrow)
    steps = results(gateway, "stepped")
    wide_hold = prefetcher(gateway).held.get("secret-b")  # held for the first connection
    await narrow.subscribe("wedding-c")
    await narrow.switch("wedding-c", "wedding-a")
    await wait_until(lambda: results(gateway, "stepped") >= steps + 3)  # connect + 2 joins
    (session,) = gateway.ctx.sessions
    assert session.habit == ("wedding-a", ("wedding-d",))
    assert prefetcher(gateway).held.get("secret-b") == wide_hold  # not asked for again
    with pytest.raises(ServerError):
        await narrow.subscribe("secret-b")


async def test_anonymous_connections_learn_nothing(
    gateways: GatewayFactory, clients: list[Client], redis_server: RedisServer
) -> None:
    gateway = await gateways(auth="disabled")
    anon = await Client.connect(gateway.ws_url)
    clients.append(anon)
    await anon.subscribe("wedding-a")
    await anon.switch("wedding-a", "wedding-b")
    await anon.ping()  # every request before it has been handled
    assert gateway.metrics.prefetch.counts == {}
    assert gateway.metrics.prefetch_joins.counts == {}
    probe = aioredis.Redis.from_url(redis_server.url)
    assert await probe.keys("wsf:{u:*") == []
    await probe.aclose()


async def test_prefetch_off_sends_no_model_step(
    gateways: GatewayFactory, clients: list[Client], redis_server: RedisServer
) -> None:
    gateway = await gateways(prefetch=False)
    assert gateway.ctx.prefetch is None
    ann = await Client.connect(gateway.ws_url, token=token("ann"))
    clients.append(ann)
    await ann.subscribe("wedding-a")
    await ann.switch("wedding-a", "wedding-b")
    probe = aioredis.Redis.from_url(redis_server.url)
    assert await probe.keys("wsf:{u:*") == []
    await probe.aclose()


async def test_redis_going_away_loses_no_switch_and_prefetch_comes_back(
    gateways: GatewayFactory, clients: list[Client], redis_server: RedisServer
) -> None:
    gateway = await gateways(redis_timeout_s=0.3, breaker_reset_s=0.2)
    ann = await Client.connect(gateway.ws_url, token=token("ann"))
    clients.append(ann)
    cycle = ["wedding-a", "wedding-b", "wedding-c"]
    await ann.subscribe(cycle[0])
    await learn_cycle(gateway, ann, cycle, rounds=1)
    redis_server.stop()
    codes: list[str] = []
    for came_from, to in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        try:
            await ann.switch(came_from, to)
            codes.append("ok")
        except ServerError as exc:  # unavailable is an answer too; a hang is not
            codes.append(exc.code)
            await ann.subscribe(to)  # degraded: served locally once the breaker opens
    assert set(codes) <= {"ok", "unavailable"}
    assert len(codes) == 3
    lost = results(gateway, "failed") + results(gateway, "paused")
    assert lost >= 1
    redis_server.start()
    steps = results(gateway, "stepped")

    async def learning_again() -> bool:
        await ann.switch("wedding-a", "wedding-b")
        await ann.switch("wedding-b", "wedding-a")
        return results(gateway, "stepped") > steps

    await wait_until(learning_again, timeout_s=20, interval_s=0.1, message="steps again")
