"""Channel presence on Redis: the commands, kept pure (`RedisBroker` sends them).

Per channel one sorted set, ``wsf:{<channel>}:u`` (``streams.presence_key``: the
channel's hash tag, so it sits in the slot of the channel's stream on a Redis
Cluster and a subscribe's read and its presence write go to one node):

- member: a record (``wsfleet_gateway.presence.encode_member``), score: its expiry,
  the writing gateway's wall clock plus the TTL, in ms;
- a join or a refresh is ``ZADD key expiry record...`` and ``PEXPIRE key 2*ttl``
  (the key goes once nobody writes it; twice the TTL so a slightly slow clock never
  drops a live member with it); a leave is ``ZREM key record``;
- a read is ``ZRANGEBYSCORE key (now +inf`` (live records only) and, in the same
  write, ``ZREMRANGEBYSCORE key -inf (now-ttl``: entries expired for a whole TTL are
  deleted lazily (a TTL of grace covers clock skew between gateways: a record whose
  writer's clock runs ahead is never deleted early by a reader whose clock lags).

No cleanup job: a killed gateway's records simply stop being refreshed and expire.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wsfleet_gateway.backends.redis.streams import EVENT_MARK, presence_key, pubsub_name
from wsfleet_gateway.broker import PresenceOp

Arg = str | int
"""A command argument (``resp.Arg``; not imported: this module stays free of I/O)."""
Command = tuple[Arg, ...]


def write_commands(ops: Sequence[PresenceOp], now_ms: int, ttl_ms: int) -> list[Command]:
    """`ops` as commands, in order; consecutive adds to one channel share a ``ZADD``."""
    expiry = now_ms + ttl_ms
    commands: list[Command] = []
    adding: list[Arg] | None = None
    adding_channel = ""
    for op in ops:
        if op.add and adding is not None and op.channel == adding_channel:
            adding += [expiry, op.record]
            continue
        if adding is not None:
            commands += _add(adding_channel, adding, ttl_ms)
            adding = None
        if op.add:
            adding, adding_channel = [expiry, op.record], op.channel
        else:
            commands.append(("ZREM", presence_key(op.channel), op.record))
    if adding is not None:
        commands += _add(adding_channel, adding, ttl_ms)
    return commands


def refresh_commands(
    channel: str, records: Sequence[str], now_ms: int, ttl_ms: int
) -> list[Command]:
    """Every record of `channel` held here, written again with a new expiry."""
    if not records:
        return []
    expiry = now_ms + ttl_ms
    pairs: list[Arg] = []
    for record in records:
        pairs += [expiry, record]
    return _add(channel, pairs, ttl_ms)


def _add(channel: str, pairs: list[Arg], ttl_ms: int) -> list[Command]:
    key = presence_key(channel)
    return [("ZADD", key, *pairs), ("PEXPIRE", key, 2 * ttl_ms)]


def read_commands(channel: str, now_ms: int, ttl_ms: int) -> list[Command]:
    """The live records of `channel`, and the lazy delete of long-expired ones."""
    key = presence_key(channel)
    return [
        ("ZRANGEBYSCORE", key, f"({now_ms}", "+inf"),
        ("ZREMRANGEBYSCORE", key, "-inf", f"({now_ms - ttl_ms}"),
    ]


def parse_read(replies: Sequence[Any]) -> list[str]:
    """`read_commands`' replies → the live records (an error reply raises it)."""
    records = replies[0]
    if isinstance(records, BaseException):
        raise records
    return [r.decode() if isinstance(r, bytes) else str(r) for r in records or ()]


def event_command(publish: str, channel: str, frame_json: str) -> Command:
    """``PUBLISH`` (``SPUBLISH`` on a cluster) of an event to the channel's pods."""
    return (publish, pubsub_name(channel), EVENT_MARK + frame_json)
