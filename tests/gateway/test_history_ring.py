"""`HistoryRings`: the pure ring logic, and `RedisBroker` serving history from it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.broker import Delivery, History, format_offset, parse_offset
from wsfleet_gateway.channels import Hub
from wsfleet_gateway.history_ring import HistoryRings
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.protocol import encode_subscribed

from tests.gateway.helpers import HubConn, Pod, PodFactory
from tests.support.waiting import wait_until
from wsfleet.services import RedisServer

WAIT_S = 20.0
HISTORY_COMMANDS = ("xrevrange", "xrange")  # a history script runs one XREVRANGE


def new_channel() -> str:
    return f"r-{uuid.uuid4().hex[:10]}"


def msg(channel: str, n: int) -> Delivery:
    return Delivery(channel, format_offset(1000 + n // 3, n % 3), f'"m{n}"', 1000 + n // 3)


def expected(
    stream: list[Delivery], since: tuple[int, int] | None, limit: int
) -> tuple[list[str], str, bool]:
    """What a full, untrimmed stream answers."""
    latest = stream[-1].offset if stream else "0-0"
    after = [d for d in stream if since is None or parse_offset(d.offset) > since]
    tail = after[max(0, len(after) - limit) :] if limit else []
    return [d.offset for d in tail], latest, since is None or len(after) <= limit


# -- the pure core -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    seeded_at=st.integers(0, 40),
    total=st.integers(0, 80),
    capacity=st.integers(1, 20),
    seed_limit=st.integers(0, 30),
    during_seed=st.integers(0, 5),
    reads=st.lists(st.tuples(st.integers(-1, 90), st.integers(0, 40)), max_size=12),
)
def test_ring_answers_exactly_what_the_stream_would_or_nothing(
    seeded_at: int,
    total: int,
    capacity: int,
    seed_limit: int,
    during_seed: int,
    reads: list[tuple[int, int]],
) -> None:
    channel = "c"
    stream = [msg(channel, n) for n in range(total)]
    seeded_at = min(seeded_at, total)
    rings = HistoryRings(capacity=capacity)
    token = rings.begin_seed(channel)
    assert rings.read(channel, None, 1, 0) is None  # no answer while a seed is in flight
    # deliveries dispatched while the read is in flight: some before its snapshot
    # (already in it), the rest after
    for d in stream[max(0, seeded_at - during_seed) : min(total, seeded_at + during_seed)]:
        rings.append(d)
    read = max(seed_limit, rings.capacity)
    snapshot = stream[:seeded_at][-read:] if read else []
    latest = stream[seeded_at - 1].offset if seeded_at else "0-0"
    rings.seed(channel, History(snapshot, latest, True), seed_limit, read, token)
    for d in stream[seeded_at + during_seed :]:  # dispatched once: not again after the seed
        rings.append(d)
    for since_n, limit in reads:
        since = None if since_n < 0 else parse_offset(msg(channel, since_n).offset)
        if since_n == 0:
            since = (0, 0)
        got = rings.read(channel, since, limit, 0)
        if got is None:
            continue
        assert ([d.offset for d in got.messages], got.offset, got.recovered) == expected(
            stream, since, limit
        )
    ring = rings.ring(channel)
    assert ring is not None
    assert len(ring.entries) <= max(rings.capacity, seed_limit)
    assert rings.read(channel, None, 0, 0) is not None  # the latest offset is always known


def test_ring_byte_bound_drops_least_recently_used_rings() -> None:
    rings = HistoryRings(capacity=8, max_bytes=2_000)
    for c in range(10):
        channel = f"ch{c}"
        token = rings.begin_seed(channel)
        rings.seed(channel, History([], "0-0", True), 4, 8, token)
        for n in range(8):
            rings.append(msg(channel, n))
        assert rings.nbytes <= rings.max_bytes
    assert rings.stats.evictions > 0
    assert "ch9" in rings
    assert "ch0" not in rings
    # the ring being fed is kept even when it was the least recently used one
    pair = HistoryRings(capacity=8, max_bytes=500)
    for channel in ("old", "new"):
        token = pair.begin_seed(channel)
        pair.seed(channel, History([], "0-0", True), 4, 8, token)
    for n in range(8):
        pair.append(msg("old", n))
    assert "old" in pair
    assert "new" not in pair
    # one ring alone above the bound trims its oldest entries instead
    solo = HistoryRings(capacity=100, max_bytes=500)
    token = solo.begin_seed("s")
    solo.seed("s", History([], "0-0", True), 1, 100, token)
    for n in range(50):
        solo.append(Delivery("s", format_offset(1, n), '"' + "x" * 50 + '"', 1))
    ring = solo.ring("s")
    assert ring is not None
    assert solo.nbytes <= 500
    assert not ring.whole
    assert solo.read("s", None, 1, 0) is not None
    assert solo.read("s", None, 50, 0) is None  # cannot vouch for 50 any more


def test_ring_age_expiry_own_publishes_and_invalidation() -> None:
    rings = HistoryRings(capacity=8, max_age_ms=1000)
    token = rings.begin_seed("c")
    rings.seed("c", History([msg("c", 0)], msg("c", 0).offset, True), 4, 8, token)
    rings.append(msg("c", 6))  # ms 1002
    got = rings.read("c", None, 10, 2001)  # message 0 (ms 1000) aged out
    assert got is not None
    assert [d.offset for d in got.messages] == ["1002-0"]
    rings.published("c", (1003, 0))  # this pod published ahead of the ring: ask Redis
    assert rings.read("c", None, 1, 2001) is None
    rings.append(msg("c", 9))
    assert rings.read("c", None, 1, 2001) is not None
    assert rings.read("c", None, 1, 1003 + 2000) is None  # the stream key expired by now
    assert "c" not in rings
    token = rings.begin_seed("d")
    rings.published("d", (5, 0))  # a publish during the seed read cancels the seed
    rings.seed("d", History([], "0-0", True), 1, 8, token)
    assert "d" not in rings
    # a seed overtaken by an invalidation (and a newer seed) does nothing
    stale = rings.begin_seed("d")
    rings.invalidate("d")
    fresh = rings.begin_seed("d")
    rings.seed("d", History([], "0-0", True), 1, 8, stale)
    assert "d" not in rings
    rings.abort_seed("d", stale)  # not the seed in flight: no effect
    rings.seed("d", History([], "0-0", True), 1, 8, fresh)
    assert "d" in rings
    rings.invalidate("d")
    token = rings.begin_seed("d")
    rings.abort_seed("d", token)
    rings.seed("d", History([], "0-0", True), 1, 8, token)
    assert "d" not in rings
    token = rings.begin_seed("e")
    rings.seed("e", History([], "0-0", True), 1, 8, token)
    assert rings.read("e", None, 5, 10**12) == History([], "0-0", True)  # empty: no expiry
    rings.invalidate("e")
    assert "e" not in rings
    assert rings.stats.invalidations == 3
    rings.clear()
    assert rings.nbytes == 0


# -- against a real Redis --------------------------------------------------------------------


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def history_reads(client: aioredis.Redis) -> int:
    """Redis commands that read a stream, from ``INFO commandstats``."""
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in HISTORY_COMMANDS)


def offsets(history: History) -> list[str]:
    return [d.offset for d in history.messages]


async def test_switching_between_attached_channels_reads_no_history_from_redis(
    redis_server: RedisServer, make_pod: PodFactory, admin: aioredis.Redis
) -> None:
    a = await make_pod(redis_server.url)
    b = await make_pod(redis_server.url)
    channels = [new_channel() for _ in range(3)]
    for channel in channels:
        for i in range(5):
            await b.broker.publish(channel, str(i))
        await a.broker.attach(channel)
        await a.broker.history(channel, None, 10)  # seeds the ring: one read
    published = [await b.broker.publish(channels[0], '"live"')]
    await wait_until(lambda: a.got[channels[0]] == published, WAIT_S, message="live")
    before = await history_reads(admin)
    for _ in range(20):  # switching: detach one, attach and read the next
        for channel in channels:
            await a.broker.attach(channel)
            got = await a.broker.history(channel, None, 10)
            truth = await b.broker.history(channel, None, 10)  # b is not attached: Redis
            assert got == truth
            a.broker.detach(channel)
    reads = await history_reads(admin) - before
    assert reads == 20 * 3  # b's 60 reads only: a made none
    assert a.broker.rings.stats.hits >= 60
    assert a.broker.rings.stats.seeds == 3
    # `since` inside the ring is served there too
    since = published[0].offset
    first = (await b.broker.history(channels[0], None, 10)).messages[2].offset
    before = await history_reads(admin)
    for s in (since, first):
        await a.broker.attach(channels[0])
        assert await a.broker.history(channels[0], s, 10) == await b.broker.history(
            channels[0], s, 10
        )
        a.broker.detach(channels[0])
    assert await history_reads(admin) - before == 2


async def test_own_publish_is_read_back_at_once(
    redis_server: RedisServer, make_pod: PodFactory
) -> None:
    a = await make_pod(redis_server.url)
    channel = new_channel()
    await a.broker.attach(channel)
    await a.broker.history(channel, None, 10)
    for i in range(5):
        sent = await a.broker.publish(channel, str(i))
        assert (await a.broker.history(channel, None, 10)).offset == sent.offset


async def test_ring_stays_continuous_across_a_pubsub_reconnect_with_catch_up(
    redis_server: RedisServer, make_pod: PodFactory, admin: aioredis.Redis
) -> None:
    """Pod A is cut off (ACL) while B publishes; after catch-up A's ring is still exact."""
    await admin.acl_setuser("poda", enabled=True, passwords=["+pw"], keys=["*"])
    await admin.execute_command("ACL", "SETUSER", "poda", "&*", "+@all")
    url_a = f"redis://poda:pw@{redis_server.host}:{redis_server.port}/0"
    a = await make_pod(url_a, op_timeout_s=0.5, reconnect_max_s=0.2)
    b = await make_pod(redis_server.url)
    channel = new_channel()
    await a.broker.attach(channel)
    sent = [await b.broker.publish(channel, str(i)) for i in range(3)]
    await a.broker.history(channel, None, 10)
    await wait_until(lambda: a.got[channel] == sent, WAIT_S, message="live")

    await admin.execute_command("ACL", "SETUSER", "poda", "off")
    await admin.execute_command("CLIENT", "KILL", "USER", "poda")
    await wait_until(lambda: not a.broker.available, WAIT_S, message="pod A cut off")
    sent += [await b.broker.publish(channel, str(i)) for i in range(3, 30)]
    await admin.execute_command("ACL", "SETUSER", "poda", "on")
    async with asyncio.timeout(WAIT_S):
        while not a.broker.available or len(sent) < 50:
            sent.append(await b.broker.publish(channel, str(len(sent))))
    await wait_until(lambda: a.got[channel] == sent, WAIT_S, message="gap and live")
    assert a.broker.stats.caught_up >= 27
    assert a.broker.stats.connects == 2
    assert channel in a.broker.rings
    assert a.broker.rings.stats.seeds == 1
    before = await history_reads(admin)
    hits = a.broker.rings.stats.hits
    got = await a.broker.history(channel, None, 40)
    assert got == await b.broker.history(channel, None, 40)
    assert offsets(got) == [d.offset for d in sent[-40:]]
    assert a.broker.rings.stats.hits == hits + 1
    assert await history_reads(admin) - before == 1  # b's read only


async def test_invalid_ring_falls_back_to_redis_and_is_seeded_again(
    redis_server: RedisServer, make_pod: PodFactory, admin: aioredis.Redis
) -> None:
    a = await make_pod(redis_server.url, linger_s=0.0)
    channel = new_channel()
    await a.broker.attach(channel)
    await a.broker.history(channel, None, 5)
    sent = [await a.broker.publish(channel, str(i)) for i in range(4)]
    await wait_until(lambda: a.got[channel] == sent, WAIT_S, message="live")
    a.broker.rings.invalidate(channel)
    before = await history_reads(admin)
    got = await a.broker.history(channel, None, 5)
    assert offsets(got) == [d.offset for d in sent]
    assert got.offset == sent[-1].offset
    assert await history_reads(admin) - before == 1  # fell back and seeded again
    assert a.broker.rings.stats.seeds == 2
    assert channel in a.broker.rings
    # an expired subscription takes its ring along: nothing vouches for continuity
    a.broker.detach(channel)
    await wait_until(lambda: channel not in a.broker.rings, WAIT_S, message="ring dropped")
    assert not a.broker.attached_channels()


async def test_catch_up_past_a_trimmed_gap_invalidates_the_ring(
    redis_server: RedisServer, make_pod: PodFactory, admin: aioredis.Redis
) -> None:
    await admin.config_set("stream-node-max-entries", "1")  # so MAXLEN ~ trims exactly
    await admin.acl_setuser("poda", enabled=True, passwords=["+pw"], keys=["*"])
    await admin.execute_command("ACL", "SETUSER", "poda", "&*", "+@all")
    url_a = f"redis://poda:pw@{redis_server.host}:{redis_server.port}/0"
    a = await make_pod(url_a, op_timeout_s=0.5, reconnect_max_s=0.2, history_max_len=5)
    b = await make_pod(redis_server.url, history_max_len=5)
    channel, empty = new_channel(), new_channel()
    for name in (channel, empty):
        await a.broker.attach(name)
        await a.broker.history(name, None, 5)
        assert name in a.broker.rings
    await admin.execute_command("ACL", "SETUSER", "poda", "off")
    await admin.execute_command("CLIENT", "KILL", "USER", "poda")
    await wait_until(lambda: not a.broker.available, WAIT_S, message="pod A cut off")
    sent = [await b.broker.publish(channel, str(i)) for i in range(20)]
    await admin.execute_command("ACL", "SETUSER", "poda", "on")
    await wait_until(lambda: a.broker.available, WAIT_S, message="reconnected")
    await wait_until(lambda: channel not in a.broker.rings, WAIT_S, message="ring invalidated")
    # a stream that does not exist (never published, or expired) vouches for nothing either
    await wait_until(lambda: empty not in a.broker.rings, WAIT_S, message="empty invalidated")
    got = await a.broker.history(channel, None, 5)  # from Redis, seeding again
    assert offsets(got) == [d.offset for d in sent[-5:]]
    assert a.broker.rings.stats.invalidations >= 2
    assert a.broker.rings.stats.seeds == 3


async def test_hub_subscribes_served_by_the_ring_never_lose_or_duplicate(
    redis_server: RedisServer, make_pod: PodFactory
) -> None:
    """Pod A subscribes again and again while pod B publishes: every reply + live is exact."""
    a = RedisBroker(redis_server.url, op_timeout_s=2.0)
    b = await make_pod(redis_server.url)
    hub = Hub(a, GatewayMetrics())
    await a.start(hub.on_delivery)
    try:
        await _subscribe_while_publishing(a, b, hub)
    finally:
        await a.close()


async def _subscribe_while_publishing(a: RedisBroker, b: Pod, hub: Hub) -> None:
    channel = new_channel()

    def encode(history: History, meta_json: str) -> bytes:
        return encode_subscribed(1, channel, history, meta_json)

    holder = HubConn()  # keeps the channel attached, like other users on this pod
    assert await hub.subscribe(holder, channel, None, 500, encode)
    total = 200

    async def publisher() -> None:
        for i in range(total):
            await b.broker.publish(channel, str(i))
            if i % 4 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(publisher())
    conns: list[HubConn] = []
    while not task.done():
        conn = HubConn()
        conns.append(conn)
        assert await hub.subscribe(conn, channel, None, 500, encode)
    await task
    everything = list(range(total))
    await wait_until(
        lambda: all(c.seen(channel) == everything for c in conns), WAIT_S, message="exact"
    )
    assert holder.seen(channel) == everything
    assert len(conns) > 1
    assert a.rings.stats.hits >= len(conns)  # the switches were served by the ring
