"""`backends/redis/slots.py`, pure: key slots as Redis computes them, the slot map,
redirections, the key a command routes by."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from wsfleet_gateway.backends.redis.resp import Endpoint, open_connection
from wsfleet_gateway.backends.redis.slots import (
    SLOTS,
    Redirect,
    SlotMap,
    channel_slot,
    command_key,
    crc16,
    hash_tag,
    is_retryable,
    key_slot,
    parse_redirect,
    slots_of,
)
from wsfleet_gateway.backends.redis.streams import meta_key, pubsub_name, stream_key
from wsfleet_gateway.broker import is_text

from wsfleet.services import RedisCluster


def test_crc16_and_known_slots() -> None:
    assert crc16(b"123456789") == 0x31C3  # the XMODEM check value Redis's spec gives
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert hash_tag(b"foo{}{bar}") == b"foo{}{bar}"  # an empty tag: the whole key
    assert hash_tag(b"foo{{bar}}zap") == b"{bar"
    assert hash_tag(b"foo{bar}{zap}") == b"bar"


@given(st.from_regex(r"\$?[A-Za-z0-9._:@/=+\-]{1,40}", fullmatch=True))
def test_every_key_of_a_channel_shares_its_slot(channel: str) -> None:
    slot = channel_slot(channel)
    assert 0 <= slot < SLOTS
    assert {key_slot(k(channel)) for k in (stream_key, meta_key, pubsub_name)} == {slot}


@settings(max_examples=5, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=50, max_size=50))
def test_key_slot_agrees_with_redis(redis_cluster: RedisCluster, keys: list[str]) -> None:
    async def ask() -> list[int]:
        conn = await open_connection(Endpoint.from_url(redis_cluster.url))
        try:
            return [int(await conn.call("CLUSTER", "KEYSLOT", key)) for key in keys]
        finally:
            conn.abort()

    keys = [k for k in keys if is_text(k)]  # no UTF-8 form: no Redis key either
    assert asyncio.run(ask()) == [key_slot(k) for k in keys]


def test_redirects_and_retryable_errors() -> None:
    assert parse_redirect("MOVED 3999 127.0.0.1:6381") == Redirect(
        "MOVED", 3999, ("127.0.0.1", 6381)
    )
    assert parse_redirect("ASK 1 ::1:7000") == Redirect("ASK", 1, ("::1", 7000))
    assert parse_redirect("ASK 1 [::1]:7000") == Redirect("ASK", 1, ("::1", 7000))
    assert parse_redirect("MOVED 12 :7000") == Redirect("MOVED", 12, ("", 7000))
    for other in ("ERR wrong", "MOVED x 1:2", "MOVED 1", "MOVED 99999 a:1", "ASK 1 host"):
        assert parse_redirect(other) is None
    assert is_retryable("TRYAGAIN Multiple keys request during rehashing of slot")
    assert is_retryable("CLUSTERDOWN The cluster is down")
    assert not is_retryable("ERR unknown command")


def test_slot_map_from_cluster_slots() -> None:
    reply = [
        [0, 5460, ["127.0.0.1", 7000, "id0", []], ["127.0.0.1", 7003, "id3", []]],
        [5461, 10922, ["", 7001, "id1"], ["?", 7004, "id4"]],
        [10923, 16383, ["10.0.0.2", 7002, "id2"]],
        ["bad"],
        [1, 2, "not a node"],
    ]
    slot_map = SlotMap.from_cluster_slots(reply, ("10.0.0.9", 7009))
    assert slot_map.covered
    assert slot_map.owner(0) == ("127.0.0.1", 7000)
    assert slot_map.owner(5461) == ("10.0.0.9", 7001)  # empty host: the node asked
    assert slot_map.primaries == [("127.0.0.1", 7000), ("10.0.0.9", 7001), ("10.0.0.2", 7002)]
    assert slot_map.nodes()[3:] == [("127.0.0.1", 7003), ("10.0.0.9", 7004)]
    other = SlotMap.from_cluster_slots(reply, ("10.0.0.9", 7009))
    assert slot_map.same_owners(other)
    other.assign(5461, ("127.0.0.1", 7000))
    assert not slot_map.same_owners(other)
    assert not SlotMap.from_cluster_slots(reply[:1], ("h", 1)).covered


def test_command_keys() -> None:
    assert command_key(("GET", "k")) == "k"
    assert command_key(("XINFO", "STREAM", "s")) == "s"
    assert command_key(("EVALSHA", "sha", 2, "a", "b", "x")) == "a"
    assert command_key(("EVALSHA", "sha", 0, "x")) is None
    assert command_key(("PING",)) is None
    assert command_key(("SCRIPT", "LOAD", "return 1")) is None
    assert command_key(()) is None
    assert command_key(("GET",)) is None
    assert command_key(("XINFO", "STREAM")) is None
    grouped = slots_of(["a", "b", "a"])
    assert grouped[channel_slot("a")] == ["a", "a"]
