"""`RedisBroker` against a real redis-server: two brokers on one Redis are two pods."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsfleet_gateway.backends.redis.broker import LANE_WARM
from wsfleet_gateway.backends.redis.streams import (
    HISTORY_LUA,
    MISSING_STREAM,
    StreamState,
    assess_recovery,
    decode_payload,
    delivery_from_entry,
    encode_payload,
    pubsub_name,
    stream_key,
)
from wsfleet_gateway.broker import (
    ZERO_OFFSET,
    BadRequestError,
    BrokerUnavailableError,
    Delivery,
    InvalidOffsetError,
    format_offset,
    parse_offset,
)

from tests.gateway.helpers import Pod, PodFactory
from tests.support.waiting import wait_until
from wsfleet.services import RedisServer, free_port

WAIT_S = 20.0  # generous: the machine is shared and busy


def new_channel() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[RedisServer], aioredis.Redis]]:
    """Plain redis clients to observe and steer the server."""
    clients: list[aioredis.Redis] = []

    def factory(server: RedisServer) -> aioredis.Redis:
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


async def numsub(client: aioredis.Redis, channel: str) -> int:
    reply = await client.pubsub_numsub(pubsub_name(channel))
    return int(reply[0][1])


# -- fan-out across pods -----------------------------------------------------------


async def test_two_pods_get_every_message_once_in_offset_order(
    shared_redis: RedisServer, make_pod: PodFactory
) -> None:
    a, b = await make_pod(shared_redis.url), await make_pod(shared_redis.url)
    channels = [new_channel(), new_channel()]
    for pod in (a, b):
        for channel in channels:
            await pod.broker.attach(channel)
    published: dict[str, list[Delivery]] = defaultdict(list)

    async def publisher(pod: Pod, channel: str, tag: str) -> None:
        for i in range(25):
            delivery = await pod.broker.publish(channel, json.dumps({"from": tag, "i": i}))
            published[channel].append(delivery)

    await asyncio.gather(
        *(publisher(p, ch, f"{name}{ch}") for p, name in ((a, "a"), (b, "b")) for ch in channels)
    )
    for pod in (a, b):
        for channel in channels:
            await wait_until(
                lambda p=pod, c=channel: len(p.got[c]) >= 50, WAIT_S, message="all deliveries"
            )
    for channel in channels:
        expected = sorted(published[channel], key=lambda d: parse_offset(d.offset))
        history = await a.broker.history(channel, None, 1000)
        assert [d.offset for d in history.messages] == [d.offset for d in expected]
        for pod in (a, b):
            # exactly once, and in stream (offset) order, on every pod
            assert pod.got[channel] == expected
        per_publisher = defaultdict(list)
        for delivery in a.got[channel]:
            per_publisher[delivery.data["from"]].append(delivery.data["i"])
        assert all(seq == list(range(25)) for seq in per_publisher.values())
    assert a.broker.stats.duplicates_dropped == 0


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2)), min_size=1, max_size=6),
        min_size=1,
        max_size=5,
    )
)
async def test_any_interleaving_of_publishers_is_seen_in_offset_order_by_every_pod(
    shared_redis: RedisServer, make_pod: PodFactory, batches: list[list[tuple[int, int]]]
) -> None:
    """Batches of concurrent publishes from either pod to any of three channels."""
    pods = [await make_pod(shared_redis.url), await make_pod(shared_redis.url)]
    channels = [new_channel() for _ in range(3)]
    for pod in pods:
        for channel in channels:
            await pod.broker.attach(channel)
    published: dict[str, list[str]] = defaultdict(list)
    for batch in batches:
        sent = await asyncio.gather(
            *(pods[p].broker.publish(channels[c], str(i)) for i, (p, c) in enumerate(batch))
        )
        for delivery in sent:
            published[delivery.channel].append(delivery.offset)
    total = sum(len(batch) for batch in batches)
    for pod in pods:
        await wait_until(
            lambda p=pod: sum(len(v) for v in p.got.values()) >= total, WAIT_S, message="all"
        )
        for channel in channels:
            assert pod.offsets(channel) == sorted(published[channel], key=parse_offset)


async def test_publish_returns_the_delivery_and_meta_is_shared(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    a, b = await make_pod(redis_server.url), await make_pod(redis_server.url)
    channel = new_channel()
    await a.broker.publish(channel, "0")  # loads the script
    await raw(redis_server).script_flush()  # NOSCRIPT next time: reloaded, not an error
    delivery = await a.broker.publish(channel, '{"x":1}')
    assert delivery.channel == channel
    assert delivery.data == {"x": 1}
    assert delivery.ts_ms == parse_offset(delivery.offset)[0] > 0
    history = await b.broker.history(channel, None, 1)
    assert history.messages == [delivery]
    assert history.offset == delivery.offset
    assert await b.broker.get_meta(channel) == {}
    await a.broker.set_meta(channel, {"title": "Ada & Bo", "n": [1, 2]})
    assert await b.broker.get_meta(channel) == {"title": "Ada & Bo", "n": [1, 2]}


async def test_publish_many_survives_a_script_flush_and_refuses_alone(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    pod = await make_pod(redis_server.url)
    channel = new_channel()
    await pod.broker.publish(channel, "0")  # loads the script
    await raw(redis_server).script_flush()  # every script of the pipeline: NOSCRIPT
    results = await pod.broker.publish_many(channel, [str(i) for i in range(1, 11)])
    assert [r.data for r in results if isinstance(r, Delivery)] == list(range(1, 11))
    history = await pod.broker.history(channel, None, 100)
    assert [d.data for d in history.messages] == list(range(11))  # each ran once
    # no UTF-8 form: that one publish is refused, the others go in order
    mixed = await pod.broker.publish_many(channel, ['"a"', '"\ud800"', '"b"'])
    assert isinstance(mixed[1], BadRequestError)
    assert [r.data for r in mixed if isinstance(r, Delivery)] == ["a", "b"]
    await asyncio.to_thread(redis_server.stop)
    with pytest.raises(BrokerUnavailableError):  # each may have run: the batch fails
        await pod.broker.publish_many(channel, ["1", "2"])


# -- history and recovery ----------------------------------------------------------


async def test_history_latest_since_and_limits(
    shared_redis: RedisServer, make_pod: PodFactory
) -> None:
    pod = await make_pod(shared_redis.url)
    broker = pod.broker
    channel = new_channel()
    empty = await broker.history(channel, None, 10)
    assert (empty.messages, empty.offset, empty.recovered) == ([], ZERO_OFFSET, True)
    assert (await broker.history(channel, ZERO_OFFSET, 10)).recovered
    assert not (await broker.history(channel, "12345-0", 10)).recovered  # a lost stream
    sent = [await broker.publish(channel, str(i)) for i in range(5)]
    offsets = [d.offset for d in sent]

    latest = await broker.history(channel, None, 3)
    assert [d.data for d in latest.messages] == [2, 3, 4]
    assert latest.offset == offsets[-1]
    assert latest.recovered
    since = await broker.history(channel, offsets[1], 10)
    assert [d.offset for d in since.messages] == offsets[2:]
    assert since.recovered
    too_many = await broker.history(channel, offsets[1], 2)
    assert [d.offset for d in too_many.messages] == offsets[3:]
    assert not too_many.recovered
    up_to_date = await broker.history(channel, offsets[-1], 10)
    assert up_to_date.messages == []
    assert up_to_date.recovered
    from_start = await broker.history(channel, ZERO_OFFSET, 10)
    assert [d.offset for d in from_start.messages] == offsets
    assert from_start.recovered
    none = await broker.history(channel, None, 0)
    assert none.messages == []
    assert none.offset == offsets[-1]
    beyond = await broker.history(channel, "99999999999999-0", 10)
    assert beyond.messages == []
    assert not beyond.recovered
    for bad in ("abc", "1-x", "-1", f"{2**64}-0", "1-" + "9" * 30):
        with pytest.raises(InvalidOffsetError):
            await broker.history(channel, bad, 10)


async def test_trimmed_history_is_bounded_and_not_recovered(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(redis_server)
    await client.config_set("stream-node-max-entries", 4)  # so MAXLEN ~ trims small streams
    pod = await make_pod(redis_server.url, history_max_len=5)
    channel = new_channel()
    offsets = [(await pod.broker.publish(channel, str(i))).offset for i in range(40)]
    length = await client.xlen(stream_key(channel))
    assert 5 <= length < 40
    gone = await pod.broker.history(channel, offsets[0], 100)
    assert not gone.recovered
    assert [d.offset for d in gone.messages] == offsets[-length:]
    assert not (await pod.broker.history(channel, ZERO_OFFSET, 100)).recovered
    recent = await pod.broker.history(channel, offsets[-3], 100)
    assert recent.recovered
    assert [d.offset for d in recent.messages] == offsets[-2:]


async def test_history_is_trimmed_by_age(
    shared_redis: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(shared_redis)
    pod = await make_pod(shared_redis.url, history_max_age_s=0.3)
    channel = new_channel()
    old = await pod.broker.publish(channel, '"old"')
    assert 300 < await client.pttl(stream_key(channel)) <= 600  # outlives its entries

    async def redis_ms() -> int:
        seconds, micros = await client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    await wait_until(lambda: _later(redis_ms(), old.ts_ms + 310), WAIT_S, message="age passes")
    aged = await pod.broker.history(channel, old.offset, 10)  # trimmed on read too
    assert aged.messages == []
    assert aged.recovered
    assert aged.offset == old.offset
    assert not (await pod.broker.history(channel, ZERO_OFFSET, 10)).recovered
    new = await pod.broker.publish(channel, '"new"')
    history = await pod.broker.history(channel, None, 10)
    assert history.messages == [new]
    assert not (await pod.broker.history(channel, ZERO_OFFSET, 10)).recovered


async def _later(now: Awaitable[int], than_ms: int) -> bool:
    return await now > than_ms


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    count=st.integers(min_value=0, max_value=24),
    pick=st.integers(min_value=0, max_value=25),
    limit=st.integers(min_value=0, max_value=10),
)
async def test_history_recovery_is_sound_against_real_trimming(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any, count: int, pick: int, limit: int
) -> None:
    """recovered=True only when every message after `since` is returned, in order."""
    client = raw(redis_server)
    await client.config_set("stream-node-max-entries", 3)
    pod = await make_pod(redis_server.url, history_max_len=4)
    channel = new_channel()
    offsets = [(await pod.broker.publish(channel, str(i))).offset for i in range(count)]
    since = offsets[pick - 1] if 0 < pick <= count else ZERO_OFFSET
    after = [o for o in offsets if parse_offset(o) > parse_offset(since)]
    present = [row[0] for row in await client.xrange(stream_key(channel))]
    history = await pod.broker.history(channel, since, limit)
    got = [d.offset for d in history.messages]
    assert got == after[len(after) - len(got) :]  # a suffix of what came after `since`
    assert len(got) <= limit
    assert history.offset == (offsets[-1] if offsets else ZERO_OFFSET)
    if history.recovered:
        assert got == after
    trimmed_after_since = any(o not in present for o in after)
    since_kept = since in present or (since == ZERO_OFFSET and present == offsets)
    if since_kept and not trimmed_after_since and len(after) <= limit:
        assert history.recovered


# -- the pure recovery rule --------------------------------------------------------


@given(
    total=st.integers(min_value=0, max_value=30),
    trimmed=st.integers(min_value=0, max_value=30),
    pick=st.integers(min_value=0, max_value=31),
    limit=st.integers(min_value=0, max_value=40),
)
def test_assess_recovery_never_claims_a_trimmed_gap(
    total: int, trimmed: int, pick: int, limit: int
) -> None:
    ids = [(1000 + i // 3, i % 3) for i in range(total)]
    trimmed = min(trimmed, total)
    kept = ids[trimmed:]
    since = ids[pick - 1] if 0 < pick <= total else (0, 0)
    state = (
        StreamState(
            exists=True,
            length=len(kept),
            entries_added=total,
            first_id=format_offset(*kept[0]) if kept else ZERO_OFFSET,
            last_id=format_offset(*ids[-1]),
            max_deleted_id=ZERO_OFFSET,
        )
        if total
        else MISSING_STREAM
    )
    missed = min(limit + 1, len([i for i in kept if i > since]))
    verdict = assess_recovery(state, format_offset(*since), missed, limit)
    lost = [i for i in ids[:trimmed] if i > since]
    if verdict:
        assert not lost
        assert missed <= limit
    elif not lost and missed <= limit:
        # the one conservative case: `since` itself was the newest entry trimmed
        assert trimmed
        assert since == ids[trimmed - 1]


def test_assess_recovery_edge_cases() -> None:
    assert assess_recovery(MISSING_STREAM, ZERO_OFFSET, 0, 10)
    assert not assess_recovery(MISSING_STREAM, "5-0", 0, 10)
    xdel = StreamState(True, 2, 3, "1-0", "3-0", "2-0")
    assert not assess_recovery(xdel, "1-0", 1, 10)
    assert assess_recovery(xdel, "2-0", 1, 10)
    emptied = StreamState(True, 0, 3, ZERO_OFFSET, "3-0", ZERO_OFFSET)
    assert assess_recovery(emptied, "3-0", 0, 10)
    assert not assess_recovery(emptied, "2-0", 0, 10)
    reborn = StreamState(True, 2, 2, "50-0", "51-0", ZERO_OFFSET)
    assert not assess_recovery(reborn, "7-0", 2, 10)  # an offset from a lost stream
    with pytest.raises(InvalidOffsetError):
        assess_recovery(reborn, "x", 0, 10)


@given(
    channel=st.text(min_size=1, max_size=20),
    ms=st.integers(min_value=0, max_value=2**48),
    seq=st.integers(min_value=0, max_value=2**32),
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    ),
)
def test_payload_and_entry_round_trip(channel: str, ms: int, seq: int, data: Any) -> None:
    offset = format_offset(ms, seq)
    data_json = json.dumps(data)
    delivery = Delivery(channel, offset, data_json, ms)
    assert decode_payload(channel, encode_payload(offset, data_json)) == delivery
    assert delivery_from_entry(channel, [offset, ["d", data_json]]) == delivery
    assert delivery_from_entry(channel, (offset, {"d": data_json})) == delivery
    assert delivery_from_entry(channel, [offset, None]).data is None
    with pytest.raises(ValueError, match="malformed"):
        decode_payload(channel, offset)


# -- subscriptions: sharing and linger ---------------------------------------------


async def test_one_redis_subscription_per_channel_lingers_after_last_detach(
    shared_redis: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(shared_redis)
    pod = await make_pod(shared_redis.url, linger_s=600)
    channel = new_channel()
    await asyncio.gather(*(pod.broker.attach(channel) for _ in range(3)))
    assert pod.broker.stats.subscribes == 1
    assert await numsub(client, channel) == 1
    for _ in range(3):
        pod.broker.detach(channel)
    pod.broker.detach(channel)  # one too many: ignored
    assert pod.broker.attached_channels() == {channel: 0}
    assert await numsub(client, channel) == 1  # lingering
    await pod.broker.attach(channel)  # inside the linger: no new SUBSCRIBE
    assert pod.broker.stats.subscribes == 1
    assert pod.broker.attached_channels() == {channel: 1}
    delivery = await pod.broker.publish(channel, "1")
    await wait_until(lambda: pod.got[channel] == [delivery], WAIT_S, message="delivery")

    short = await make_pod(shared_redis.url, linger_s=0.05)
    other = new_channel()
    await short.broker.attach(other)
    assert await numsub(client, other) == 1
    short.broker.detach(other)
    await wait_until(lambda: _is_zero(numsub(client, other)), WAIT_S, message="unsubscribed")
    assert short.broker.attached_channels() == {}
    assert short.broker.stats.unsubscribes == 1


async def test_subscribes_of_one_loop_pass_go_to_redis_in_one_write(
    shared_redis: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    """A burst of clients reaching channels new to the pod: one write, every one confirmed."""
    client = raw(shared_redis)
    pod = await make_pod(shared_redis.url, linger_s=0)
    channels = [new_channel() for _ in range(12)]
    writes = pod.broker.stats.writes
    await asyncio.gather(*(pod.broker.attach(channel) for channel in channels))
    assert pod.broker.stats.writes == writes + 1
    for channel in channels:
        assert await numsub(client, channel) == 1
    for channel in channels:
        pod.broker.detach(channel)  # UNSUBSCRIBEs, batched the same way
    for channel in channels:
        await wait_until(lambda c=channel: _is_zero(numsub(client, c)), WAIT_S, message=channel)
    again = channels[0]
    await pod.broker.attach(again)  # subscribed again after its UNSUBSCRIBE went out
    sent = await pod.broker.publish(again, "1")
    await wait_until(lambda: pod.got[again] == [sent], WAIT_S, message="delivery")


async def _is_zero(value: Awaitable[int]) -> bool:
    return await value == 0


async def test_rapid_attach_detach_without_linger_keeps_delivering(
    shared_redis: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(shared_redis)
    pod = await make_pod(shared_redis.url, linger_s=0)
    publisher = await make_pod(shared_redis.url)
    channel = new_channel()
    for _ in range(20):
        await pod.broker.attach(channel)
        pod.broker.detach(channel)
        await asyncio.sleep(0)  # let the zero linger expire in between
    await pod.broker.attach(channel)
    assert await numsub(client, channel) == 1
    sent = [await publisher.broker.publish(channel, str(i)) for i in range(5)]
    await wait_until(lambda: len(pod.got[channel]) >= 5, WAIT_S, message="deliveries")
    assert pod.got[channel] == sent


async def test_attach_cancelled_before_confirmation_then_reattached(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    """A SUBSCRIBE dropped before Redis confirmed it must not confirm its successor."""
    client = raw(redis_server)
    pod = await make_pod(redis_server.url, linger_s=0)
    channel = new_channel()
    await client.execute_command("CLIENT", "PAUSE", "300", "ALL")  # no confirmation yet
    for _ in range(3):
        attaching = asyncio.create_task(pod.broker.attach(channel))
        await wait_until(lambda: pod.broker.stats.subscribes > 0, WAIT_S, message="SUBSCRIBE")
        attaching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attaching
        await wait_until(lambda: not pod.broker.attached_channels(), WAIT_S, message="expiry")
    await pod.broker.attach(channel)
    assert await numsub(client, channel) == 1
    sent = await pod.broker.publish(channel, "1")
    await wait_until(lambda: pod.got[channel] == [sent], WAIT_S, message="delivery")
    assert pod.broker.attached_channels() == {channel: 1}


async def test_server_errors_are_unavailable_but_not_an_outage(
    shared_redis: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(shared_redis)
    pod = await make_pod(shared_redis.url)
    channel = new_channel()
    await client.set(stream_key(channel), "not a stream")
    with pytest.raises(BrokerUnavailableError, match="WRONGTYPE"):
        await pod.broker.publish(channel, "1")
    assert pod.broker.available


async def test_reader_survives_bad_payloads_and_failing_subscribers(
    shared_redis: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(shared_redis)
    pod = await make_pod(shared_redis.url)
    channel = new_channel()
    await pod.broker.attach(channel)
    await client.publish(pubsub_name(channel), "no-offset-here")
    pod.fail_next = 1
    await pod.broker.publish(channel, '"lost to the failing subscriber"')
    kept = await pod.broker.publish(channel, '"kept"')
    await wait_until(lambda: pod.got[channel] == [kept], WAIT_S, message="later delivery")
    assert pod.broker.available


# -- outages -----------------------------------------------------------------------


async def test_redis_outage_fails_fast_and_recovers_without_restart(
    redis_server: RedisServer, make_pod: PodFactory
) -> None:
    a = await make_pod(redis_server.url, op_timeout_s=0.5, linger_s=0.05)
    b = await make_pod(redis_server.url, op_timeout_s=0.5)
    channel = new_channel()
    await a.broker.attach(channel)
    await b.broker.attach(channel)
    first = await b.broker.publish(channel, '"before"')
    await wait_until(lambda: a.got[channel] == [first], WAIT_S, message="delivery")
    assert a.broker.available

    redis_server.stop()
    await wait_until(lambda: not a.broker.available, WAIT_S, message="outage noticed")
    async with asyncio.timeout(10):  # a hang fails here, not as a BrokerUnavailableError
        for call in (
            lambda: a.broker.publish(channel, '"during"'),
            lambda: a.broker.history(channel, None, 10),
            lambda: a.broker.get_meta(channel),
            lambda: a.broker.set_meta(channel, {}),
            lambda: a.broker.attach(new_channel()),
        ):
            with pytest.raises(BrokerUnavailableError):
                await call()
    assert not a.broker.available
    assert a.broker.attached_channels().get(channel) == 1

    redis_server.start()  # same port, empty (no persistence)
    await wait_until(lambda: a.broker.available and b.broker.available, WAIT_S, message="recovery")
    after = await a.broker.publish(channel, '"after"')
    for pod in (a, b):
        await wait_until(lambda p=pod: after in p.got[channel], WAIT_S, message="live again")
        assert pod.got[channel] == [first, after]
    fresh = new_channel()
    await a.broker.attach(fresh)
    assert (await a.broker.history(fresh, None, 10)).recovered


@pytest.mark.parametrize("how", ["attach", "join"])
async def test_catch_up_after_pubsub_reconnect_delivers_the_gap_once(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any, how: str
) -> None:
    """Pod A's connections are cut while pod B publishes; A catches up from the stream.

    `join` (the hub's path) reads no separate baseline offset: its history read gives
    the fan-out the offset a catch-up starts from, even on a channel with no messages.
    """
    client = raw(redis_server)
    await client.acl_setuser("poda", enabled=True, passwords=["+pw"], keys=["*"])
    await client.execute_command("ACL", "SETUSER", "poda", "&*", "+@all")
    url_a = f"redis://poda:pw@{redis_server.host}:{redis_server.port}/0"
    a = await make_pod(url_a, op_timeout_s=0.5, reconnect_max_s=0.2)
    b = await make_pod(redis_server.url)
    busy, quiet = new_channel(), new_channel()
    for channel in (busy, quiet):
        if how == "attach":
            await a.broker.attach(channel)
        else:
            joined = await a.broker.join(channel, None, 10)
            assert joined.history.messages == []
            assert joined.meta_json == "{}"
    before = [await b.broker.publish(busy, str(i)) for i in range(3)]
    await wait_until(lambda: a.got[busy] == before, WAIT_S, message="live deliveries")

    await client.execute_command("ACL", "SETUSER", "poda", "off")
    await client.execute_command("CLIENT", "KILL", "USER", "poda")
    await wait_until(lambda: not a.broker.available, WAIT_S, message="pod A cut off")
    gap = [await b.broker.publish(busy, str(i)) for i in range(3, 8)]
    quiet_gap = [await b.broker.publish(quiet, str(i)) for i in range(2)]
    assert a.broker.stats.caught_up == 0

    await client.execute_command("ACL", "SETUSER", "poda", "on")
    # keep publishing while A reconnects, re-subscribes and catches up
    during: list[Delivery] = []
    async with asyncio.timeout(WAIT_S):
        while not a.broker.available or len(during) < 20:
            during.append(await b.broker.publish(busy, str(8 + len(during))))
    await wait_until(lambda: len(a.got[busy]) >= 8 + len(during), WAIT_S, message="gap and live")
    assert a.got[busy] == [*before, *gap, *during]
    await wait_until(lambda: a.got[quiet] == quiet_gap, WAIT_S, message="quiet channel gap")
    assert a.broker.stats.caught_up >= 7
    assert a.broker.stats.connects == 2


async def command_calls(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_join_is_one_subscribe_and_one_read_with_metadata(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    """A channel new to the pod: SUBSCRIBE plus one script reading history and metadata."""
    client = raw(redis_server)
    writer, pod = await make_pod(redis_server.url), await make_pod(redis_server.url)
    with_meta, bare = new_channel(), new_channel()
    await writer.broker.set_meta(with_meta, {"couple": "Ana & Bo", "n": 1})
    sent = [await writer.broker.publish(with_meta, str(i)) for i in range(3)]
    await client.config_resetstat()
    joined = await pod.broker.join(with_meta, None, 2)
    calls = await command_calls(client)
    assert [d.offset for d in joined.history.messages] == [d.offset for d in sent[1:]]
    assert joined.history.offset == sent[-1].offset
    assert joined.history.recovered
    assert json.loads(joined.meta_json or "") == {"couple": "Ana & Bo", "n": 1}
    assert joined.meta_stored
    assert calls.get("subscribe") == 1
    assert calls.get("evalsha") == 1
    # the script's own XREVRANGE and GET; no separate offset read, no separate GET
    assert (calls.get("xrevrange"), calls.get("get")) == (1, 1), calls

    empty = await pod.broker.join(bare, None, 10, meta=True)
    assert empty.meta_json == "{}"
    assert not empty.meta_stored
    assert empty.history.messages == []
    assert empty.history.offset == "0-0"
    # attached and caught up: a second read is served by the ring, metadata by one GET
    await client.config_resetstat()
    again = await pod.broker.read(with_meta, None, 2)
    assert again.history == joined.history
    assert again.meta_json == joined.meta_json
    calls = await command_calls(client)
    assert (calls.get("evalsha"), calls.get("get")) == (None, 1), calls
    no_meta = await pod.broker.read(with_meta, sent[0].offset, 10, meta=False)
    assert no_meta.meta_json is None
    assert len(no_meta.history.messages) == 2


async def test_start_opens_the_read_lane_and_loads_the_history_script(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(redis_server)
    await client.script_flush()
    before = len(await client.client_list())
    pod = await make_pod(redis_server.url, pool_size=16)
    assert await client.script_exists(hashlib.sha1(HISTORY_LUA.encode()).hexdigest()) == [True]
    assert pod.broker._lane.opened == LANE_WARM  # a few: the lane pipelines, pool size or not
    assert len(await client.client_list()) - before >= LANE_WARM + 1  # and the pub/sub link
    await client.config_resetstat()
    await pod.broker.join(new_channel(), None, 5)
    calls = await command_calls(client)
    assert (calls.get("evalsha"), calls.get("script|load"), calls.get("client|setinfo")) == (
        1,
        None,
        None,
    ), calls  # no NOSCRIPT retry, no connection opened on the way


async def test_join_that_fails_to_read_leaves_nothing_attached(
    redis_server: RedisServer, make_pod: PodFactory
) -> None:
    pod = await make_pod(redis_server.url)
    channel = new_channel()
    with pytest.raises(InvalidOffsetError):
        await pod.broker.join(channel, "not-an-offset", 10)
    assert pod.broker.attached_channels() == {channel: 0}  # lingering, no reference held


async def test_idle_pubsub_connection_stays_up_on_pings(
    shared_redis: RedisServer, make_pod: PodFactory
) -> None:
    """Without any channel the connection is not in pub/sub mode: PONG is a plain reply."""
    pod = await make_pod(shared_redis.url, ping_interval_s=0.05)
    await wait_until(lambda: pod.broker.stats.pings >= 6, WAIT_S, message="pings")
    channel = new_channel()
    await pod.broker.attach(channel)
    pod.broker.detach(channel)
    pings = pod.broker.stats.pings
    await wait_until(lambda: pod.broker.stats.pings >= pings + 6, WAIT_S, message="more pings")
    assert pod.broker.stats.connects == 1
    assert pod.broker.available


async def test_silent_pubsub_connection_is_detected_by_ping(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(redis_server)
    pod = await make_pod(redis_server.url, ping_interval_s=0.1, op_timeout_s=0.3)
    slow_pinger = await make_pod(redis_server.url, op_timeout_s=0.2)
    channel = new_channel()
    await pod.broker.attach(channel)
    await client.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # PONGs stop coming
    with pytest.raises(BrokerUnavailableError):
        await pod.broker.attach(new_channel())  # no confirmation comes either
    with pytest.raises(BrokerUnavailableError):
        await slow_pinger.broker.attach(new_channel())  # times out, stays connected
    await wait_until(lambda: not pod.broker.available, WAIT_S, message="silence noticed")
    await wait_until(lambda: pod.broker.available, WAIT_S, message="reconnected")
    assert pod.broker.stats.connects >= 2
    sent = await pod.broker.publish(channel, '"still here"')
    await wait_until(lambda: pod.got[channel] == [sent], WAIT_S, message="delivery")


async def test_a_timed_out_command_marks_unavailable_until_redis_answers_again(
    redis_server: RedisServer, make_pod: PodFactory, raw: Any
) -> None:
    client = raw(redis_server)
    pod = await make_pod(redis_server.url, op_timeout_s=0.3)
    await client.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # scripts wait, PING not
    with pytest.raises(BrokerUnavailableError, match="publish"):
        await pod.broker.publish(new_channel(), "1")
    assert not pod.broker.available
    # no further calls: a background probe notices Redis answering again
    await wait_until(lambda: pod.broker.available, WAIT_S, message="probe recovery")


async def test_start_without_redis_then_redis_appears(make_pod: PodFactory) -> None:
    server = RedisServer(port=free_port())
    try:
        pod = await make_pod(server.url, op_timeout_s=0.3)
        assert not pod.broker.available
        with pytest.raises(BrokerUnavailableError):
            await pod.broker.attach(new_channel())
        server.start()
        await wait_until(lambda: pod.broker.available, WAIT_S, message="first connection")
        channel = new_channel()
        await pod.broker.attach(channel)
        sent = await pod.broker.publish(channel, "1")
        await wait_until(lambda: pod.got[channel] == [sent], WAIT_S, message="delivery")
    finally:
        server.stop()


async def test_close_without_start_and_attach_after_close(
    shared_redis: RedisServer, make_pod: PodFactory
) -> None:
    pod = await make_pod(shared_redis.url, start=False)
    assert not pod.broker.available
    await pod.broker.close()
    with pytest.raises(BrokerUnavailableError):
        await pod.broker.attach(new_channel())


# -- issue 17: a read racing the live path -------------------------------------------


def pause_reading(conns: list[Any]) -> None:
    for conn in conns:
        conn._transport.pause_reading()


def resume_reading(conns: list[Any]) -> None:
    for conn in conns:
        conn._transport.resume_reading()


async def test_a_read_that_overtakes_live_messages_never_makes_them_duplicates(
    shared_redis: RedisServer, make_pod: PodFactory
) -> None:
    """A history read's reply can arrive before messages Redis published just before the
    read ran (another connection). The fan-out must still dispatch them: local subscribers
    whose own reads are older need them. Here the pub/sub connection is made to lag."""
    a, b = await make_pod(shared_redis.url), await make_pod(shared_redis.url)
    channel = new_channel()
    await a.broker._fanout.attach(channel, baseline=False)  # as `join` does, before its read
    pubsub = [a.broker._fanout._conn]
    pause_reading(pubsub)
    sent = [await b.broker.publish(channel, str(i)) for i in range(3)]
    seen = await a.broker.history(channel, None, 10)  # the read overtakes the live path
    assert [d.offset for d in seen.messages] == [d.offset for d in sent]
    resume_reading(pubsub)
    stats = a.broker.stats
    await wait_until(
        lambda: len(a.got[channel]) + stats.duplicates_dropped >= 3, WAIT_S, message="arrivals"
    )
    assert stats.duplicates_dropped == 0
    assert a.got[channel] == sent


async def test_a_read_started_after_a_dispatch_is_not_answered_by_an_older_read(
    shared_redis: RedisServer, make_pod: PodFactory
) -> None:
    """Identical concurrent reads share one script only while no message of the channel was
    dispatched since it started: a joiner that registered after that dispatch would find
    the message neither in the shared (older) reply nor in its buffer of live messages."""
    a, b = await make_pod(shared_redis.url), await make_pod(shared_redis.url)
    channel = new_channel()
    first = await b.broker.publish(channel, "first")
    await a.broker._fanout.attach(channel, baseline=False)
    lane = list(a.broker._lane._conns)
    pause_reading(lane)  # replies wait in the socket: the first read stays in flight
    older = asyncio.create_task(a.broker.history(channel, first.offset, 100))
    await wait_until(lambda: any(c.pending for c in lane), WAIT_S, message="the read is sent")
    racing = await b.broker.publish(channel, "racing")
    await wait_until(lambda: a.got[channel] == [racing], WAIT_S, message="dispatched here")
    newer = asyncio.create_task(a.broker.history(channel, first.offset, 100))
    reads = a.broker.reads
    await wait_until(
        lambda: reads.shared or sum(c.pending for c in lane) >= 2, WAIT_S, message="2nd read"
    )
    resume_reading(lane)
    assert reads.shared == 0
    assert [d.offset for d in (await older).messages] == []
    assert [d.offset for d in (await newer).messages] == [racing.offset]


async def test_a_request_with_no_utf8_form_fails_alone_in_every_batch(
    shared_redis: RedisServer, make_pod: PodFactory
) -> None:
    """Issue 17 §2: SUBSCRIBEs, history scripts, publishes and metadata writes of one loop
    pass are batched; a channel name or data with a lone surrogate (the protocol refuses
    them before; this is the store's own guard) is refused alone, the rest go through."""
    a, b = await make_pod(shared_redis.url), await make_pod(shared_redis.url)
    good = [new_channel() for _ in range(4)]
    bad = "bad-\ud800"
    attached = await asyncio.gather(
        *(a.broker.attach(ch) for ch in good[:2]),
        a.broker.attach(bad),
        *(a.broker.join(ch, None, 10) for ch in good[2:]),
        a.broker.join(bad, None, 10),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in attached] == [
        "NoneType",
        "NoneType",
        "BadRequestError",
        "Snapshot",
        "Snapshot",
        "BadRequestError",
    ]
    assert bad not in a.broker.attached_channels()
    published = await asyncio.gather(
        *(b.broker.publish(ch, json.dumps(i)) for i, ch in enumerate(good)),
        b.broker.publish(good[0], '"\ud800"'),
        b.broker.history(bad, None, 10),
        b.broker.set_meta(good[1], {"x": "\udfff"}),
        b.broker.set_meta(good[2], {"x": float("inf")}),
        b.broker.set_meta(good[3], {"x": 1}),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in published] == [
        *["Delivery"] * 4,
        *["BadRequestError"] * 4,
        "NoneType",
    ]
    for i, ch in enumerate(good):
        await wait_until(lambda c=ch: len(a.got[c]) == 1, WAIT_S, message="each good publish")
        assert a.got[ch][0].data == i
    assert a.broker.available
    assert b.broker.available
    assert (await b.broker.get_meta(good[3])) == {"x": 1}
