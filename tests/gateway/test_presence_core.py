"""Presence, the pure parts (issue 22): records, who is alive, counts, event matching,
the Redis commands."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.backends.redis.presence import (
    event_command,
    parse_read,
    read_commands,
    refresh_commands,
    write_commands,
)
from wsfleet_gateway.backends.redis.slots import key_slot
from wsfleet_gateway.backends.redis.streams import EVENT_MARK, presence_key, stream_key
from wsfleet_gateway.broker import PresenceOp
from wsfleet_gateway.presence import (
    Member,
    count_members,
    decode_member,
    encode_event,
    encode_member,
    encode_presence,
    encode_presence_stats,
    event_connection,
    event_matcher,
    live_members,
    refresh_interval_s,
)

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
members = st.builds(
    Member,
    joined_ms=st.integers(0, 2**53),
    connection_id=texts,
    user=texts,
    node=texts,
)


@given(members)
def test_a_record_round_trips(member: Member) -> None:
    assert decode_member(encode_member(member)) == member


@pytest.mark.parametrize(
    "record",
    [
        "",
        "x",
        "[]",
        "{}",
        '{"u": 1, "c": "c", "n": "n", "t": 1}',
        '{"u":"u","c":"c","n":"n"}',
        '{"u":"u","c":"c","n":"n","t":true}',
        '{"u":"u","c":"c","n":"n","t":1.5}',
    ],
)
def test_anything_else_is_no_record(record: str) -> None:
    assert decode_member(record) is None


@given(st.lists(members, max_size=30), st.lists(st.text(max_size=5), max_size=3))
def test_live_members_keep_one_per_connection_latest_join_oldest_first(
    written: list[Member], junk: list[str]
) -> None:
    records = [encode_member(m) for m in written] + junk
    got = live_members(records)
    assert got == sorted(got)
    assert len({m.connection_id for m in got}) == len(got)
    latest: dict[str, int] = {}
    for m in written:
        latest[m.connection_id] = max(latest.get(m.connection_id, -1), m.joined_ms)
    assert {m.connection_id: m.joined_ms for m in got} == latest
    connections, users = count_members(got)
    assert connections == len(latest)
    assert users == len({m.user for m in got})
    assert users <= connections


def test_counts_distinct_users() -> None:
    ann = [Member(1, "gw-1", "ann", "gw"), Member(2, "gw-2", "ann", "gw")]
    bo = Member(3, "gw-3", "bo", "gx")
    assert count_members([*ann, bo]) == (3, 2)
    assert count_members([]) == (0, 0)


def test_event_patterns_are_globs_and_none_means_no_channel() -> None:
    assert not event_matcher([])("wedding-1")
    match = event_matcher(["wedding-*", "vip.?"])
    assert [match(c) for c in ("wedding-1", "vip.a")] == [True, True]
    assert [match(c) for c in ("x-wedding-1", "vip.ab", "Wedding-1")] == [False] * 3


@given(
    members, st.sampled_from(["join", "leave"]), st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True)
)
def test_an_event_frame_names_its_connection(member: Member, kind: str, channel: str) -> None:
    frame = encode_event(kind, channel, member)
    obj = json.loads(frame)
    assert obj == {"type": kind, "channel": channel, "member": member.wire()}
    assert event_connection(frame) == member.connection_id
    assert event_connection("not json") is None
    assert event_connection('{"type": "join"}') is None


def test_replies() -> None:
    ms = [Member(5, "gw-1", "ann", "gw"), Member(6, "gw-2", "ann", "gx")]
    reply = json.loads(encode_presence(7, "c", ms))
    assert reply == {
        "type": "presence",
        "id": 7,
        "channel": "c",
        "members": [
            {"user": "ann", "connection_id": "gw-1", "node": "gw", "joined_at": 5},
            {"user": "ann", "connection_id": "gw-2", "node": "gx", "joined_at": 6},
        ],
    }
    stats = json.loads(encode_presence_stats("s", "c", ms))
    assert stats == {
        "type": "presence_stats",
        "id": "s",
        "channel": "c",
        "connections": 2,
        "users": 1,
    }


def test_refresh_runs_three_times_per_ttl() -> None:
    assert refresh_interval_s(60.0) == 20.0


# --- the Redis commands ----------------------------------------------------------------


def test_writes_keep_their_order_and_share_zadds_per_channel() -> None:
    ops = [
        PresenceOp("a", "r1", False),
        PresenceOp("b", "r2", True),
        PresenceOp("b", "r3", True),
        PresenceOp("b", "r2", False),
        PresenceOp("b", "r2", True),
    ]
    b = presence_key("b")
    assert write_commands(ops, 1000, 60) == [
        ("ZREM", presence_key("a"), "r1"),
        ("ZADD", b, 1060, "r2", 1060, "r3"),
        ("PEXPIRE", b, 120),
        ("ZREM", b, "r2"),
        ("ZADD", b, 1060, "r2"),
        ("PEXPIRE", b, 120),
    ]
    assert write_commands([], 1, 1) == []


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["r1", "r2"]), st.booleans())))
def test_writes_applied_in_order_leave_what_the_ops_say(
    ops_spec: list[tuple[str, str, bool]],
) -> None:
    """Replaying the commands on a model sorted set gives what applying the ops does."""
    ops = [PresenceOp(ch, rec, add) for ch, rec, add in ops_spec]
    want: dict[str, set[str]] = {}
    for op in ops:
        held = want.setdefault(op.channel, set())
        if op.add:
            held.add(op.record)
        else:
            held.discard(op.record)
    got: dict[str, set[str]] = {}
    for command in write_commands(ops, 0, 10):
        name, key, *args = command
        members = got.setdefault(str(key), set())
        if name == "ZADD":
            members.update(str(a) for a in args[1::2])
        elif name == "ZREM":
            members.discard(str(args[0]))
    assert {k: v for k, v in got.items() if v} == {
        presence_key(ch): v for ch, v in want.items() if v
    }


def test_refresh_and_read_commands() -> None:
    key = presence_key("c")
    assert refresh_commands("c", ["r1", "r2"], 100, 30) == [
        ("ZADD", key, 130, "r1", 130, "r2"),
        ("PEXPIRE", key, 60),
    ]
    assert refresh_commands("c", [], 100, 30) == []
    assert read_commands("c", 100, 30) == [
        ("ZRANGEBYSCORE", key, "(100", "+inf"),
        ("ZREMRANGEBYSCORE", key, "-inf", "(70"),
    ]
    assert parse_read([["r1", b"r2"], 0]) == ["r1", "r2"]
    assert parse_read([None, 0]) == []
    with pytest.raises(ValueError, match="WRONGTYPE"):
        parse_read([ValueError("WRONGTYPE"), 0])


@given(st.from_regex(r"[A-Za-z0-9._:@/=+\-]{1,128}", fullmatch=True))
def test_the_presence_key_sits_in_the_slot_of_the_channel_stream(channel: str) -> None:
    assert key_slot(presence_key(channel)) == key_slot(stream_key(channel))


def test_an_event_is_published_with_its_mark() -> None:
    frame = '{"type":"join"}'
    assert event_command("SPUBLISH", "c", frame) == ("SPUBLISH", "wsf:{c}:p", EVENT_MARK + frame)
    assert not EVENT_MARK.isdigit()  # a message's payload starts with its offset
