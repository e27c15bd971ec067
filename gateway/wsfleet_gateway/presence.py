"""Channel presence, the pure part: member records, who is alive, counts, event frames.

A connection on a channel is one *member*: its user, its connection id, its node and
when it joined. The store keeps each member as a compact JSON *record* (the member
of a Redis sorted set, scored by its expiry time; ``backends/redis/presence.py``)
that lives ``presence_ttl_s`` after it was last written. The gateway writes a record
when a connection joins, removes it when the connection leaves, and writes every
record it holds again every third of the TTL (the heartbeat), so a gateway that
dies takes its members with it within one TTL.

Wire shapes (docs/protocol.md): a member is ``{"user", "connection_id", "node",
"joined_at"}`` (``joined_at``: ms since the epoch); ``presence`` and
``presence_stats`` replies; ``join`` and ``leave`` events.

Nothing here does I/O.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from wsfleet_gateway.broker import encode_json
from wsfleet_gateway.protocol import RequestId


@dataclass(frozen=True, slots=True, order=True)
class Member:
    """One connection on one channel (ordered by join time, then connection id)."""

    joined_ms: int
    connection_id: str
    user: str
    node: str

    def wire(self) -> dict[str, Any]:
        """The member as replies and events show it."""
        return {
            "user": self.user,
            "connection_id": self.connection_id,
            "node": self.node,
            "joined_at": self.joined_ms,
        }


def encode_member(member: Member) -> str:
    """The record the store keeps: compact JSON, short keys (one per connection and
    channel, written again at every refresh: the bytes count)."""
    return encode_json(
        {"u": member.user, "c": member.connection_id, "n": member.node, "t": member.joined_ms}
    )


def decode_member(record: str) -> Member | None:
    """A record back into a `Member`; None for anything else (written by someone else)."""
    try:
        obj = json.loads(record)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    user, conn, node, joined = obj.get("u"), obj.get("c"), obj.get("n"), obj.get("t")
    if not (isinstance(user, str) and isinstance(conn, str) and isinstance(node, str)):
        return None
    if isinstance(joined, bool) or not isinstance(joined, int):
        return None
    return Member(joined, conn, user, node)


def live_members(records: Iterable[str]) -> list[Member]:
    """The members of a channel from its unexpired records: one per connection (the
    latest join when a stale record of an earlier one is still there), oldest first."""
    by_conn: dict[str, Member] = {}
    for record in records:
        member = decode_member(record)
        if member is None:
            continue
        known = by_conn.get(member.connection_id)
        if known is None or member.joined_ms > known.joined_ms:
            by_conn[member.connection_id] = member
    return sorted(by_conn.values())


def count_members(members: Sequence[Member]) -> tuple[int, int]:
    """``(connections, distinct users)``."""
    return len(members), len({member.user for member in members})


def alive(expiry_ms: float, now_ms: int) -> bool:
    """An entry scored `expiry_ms` is alive at `now_ms` (an entry expiring right now is
    gone: a read and an expiry at one millisecond agree)."""
    return expiry_ms > now_ms


def expiry_of(now_ms: int, ttl_ms: int) -> int:
    """The score of an entry written at `now_ms`."""
    return now_ms + ttl_ms


def refresh_interval_s(ttl_s: float) -> float:
    """How often a gateway writes its members again: three times per TTL, so one late
    or lost refresh never lets a live member expire."""
    return ttl_s / 3


# --- events ---------------------------------------------------------------------------


def event_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Channels whose members' ``join``/``leave`` events are sent: glob patterns
    (``fnmatchcase``, as the JWT ``channels`` claim); none: no channel."""
    if not patterns:
        return _never
    match = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match
    return lambda channel: match(channel) is not None


def _never(channel: str) -> bool:
    return False


JOIN = "join"
LEAVE = "leave"


def encode_event(kind: str, channel: str, member: Member) -> str:
    """A ``join`` or ``leave`` event frame (JSON text; sent to every subscriber as is)."""
    return encode_json({"type": kind, "channel": channel, "member": member.wire()})


def event_connection(frame_json: str) -> str | None:
    """The connection id an event frame is about (None: not an event frame)."""
    try:
        obj = json.loads(frame_json)
    except (ValueError, RecursionError):
        return None
    member = obj.get("member") if isinstance(obj, dict) else None
    conn = member.get("connection_id") if isinstance(member, dict) else None
    return conn if isinstance(conn, str) else None


# --- replies --------------------------------------------------------------------------


def encode_presence(rid: RequestId, channel: str, members: Sequence[Member]) -> bytes:
    """The ``presence`` reply."""
    return encode_json(
        {
            "type": "presence",
            "id": rid,
            "channel": channel,
            "members": [member.wire() for member in members],
        }
    ).encode()


def encode_presence_stats(rid: RequestId, channel: str, members: Sequence[Member]) -> bytes:
    """The ``presence_stats`` reply."""
    connections, users = count_members(members)
    return encode_json(
        {
            "type": "presence_stats",
            "id": rid,
            "channel": channel,
            "connections": connections,
            "users": users,
        }
    ).encode()
