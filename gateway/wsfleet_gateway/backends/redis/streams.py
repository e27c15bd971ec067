"""The Redis data layout of a channel and the pure logic around it.

Every key of a channel sits under one hash tag, ``{<channel>}``:

- ``wsf:{<channel>}:s`` — the history, a Redis Stream; entry IDs are the offsets,
  one field ``d`` holds the message's data as JSON text.
- ``wsf:{<channel>}:m`` — the metadata, a string holding a JSON object.
- ``wsf:{<channel>}:p`` — the pub/sub channel; each message is
  ``"<offset> <data_json>"``, or ``"~<frame_json>"`` for a presence event
  (``presence.py``: a ``join``/``leave`` frame, no offset, not in the history).
- ``wsf:{<channel>}:u`` — the presence: a sorted set of member records scored by
  their expiry time (``presence.py``).

The publish script (`PUBLISH_LUA`) appends, trims by length and age and
publishes in one atomic step (the stream key expires twice the maximum age
after the last publish), so the pub/sub order of a channel *is* its stream
order on every pod. The history script (`HISTORY_LUA`) trims by age, then
reads the stream's bookkeeping and the entries after ``since`` atomically (and,
when asked, the channel's metadata: a subscribe to a channel not in the
cache costs one round trip, not two); `assess_recovery` decides from them
whether a reader missed anything.

Nothing here does I/O: these are the pieces `RedisBroker` wires to a
connection, kept pure so they can be tested on their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from wsfleet_gateway.broker import (
    ZERO_OFFSET,
    Delivery,
    JSONValue,
    encode_data,
    parse_offset,
)

KEY_PREFIX = "wsf"
DATA_FIELD = "d"


def stream_key(channel: str) -> str:
    """The channel's history stream."""
    return f"{KEY_PREFIX}:{{{channel}}}:s"


def meta_key(channel: str) -> str:
    """The channel's metadata (JSON object in a string)."""
    return f"{KEY_PREFIX}:{{{channel}}}:m"


def pubsub_name(channel: str) -> str:
    """The channel's Redis pub/sub channel (a shard channel in a cluster)."""
    return f"{KEY_PREFIX}:{{{channel}}}:p"


def presence_key(channel: str) -> str:
    """The channel's members (a sorted set: record → expiry ms)."""
    return f"{KEY_PREFIX}:{{{channel}}}:u"


EVENT_MARK = "~"
"""First character of a pub/sub payload that is a presence event, not a message (a
message's payload starts with its offset: a digit)."""


PUBLISH_LUA = """
-- KEYS[1] stream, KEYS[2] pub/sub channel (declared as a key: same slot)
-- ARGV[1] data_json, ARGV[2] max length (approximate), ARGV[3] max age ms
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1])
local max_age = tonumber(ARGV[3])
local min_ms = now_ms - max_age
if min_ms > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', min_ms))
end
-- the key outlives its entries, so an emptied history still tells readers
-- that messages were trimmed (see assess_recovery)
redis.call('PEXPIRE', KEYS[1], string.format('%d', max_age * 2))
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[1])
return id
"""

PUBLISH_SHARDED_LUA = """
-- Redis Cluster: KEYS[1] stream; ARGV[1] data_json, ARGV[2] max length (approximate),
-- ARGV[3] max age ms, ARGV[4] the shard pub/sub channel (the stream's slot: one hash
-- tag). Not declared as a key: during a slot migration a declared key that is not
-- stored (a pub/sub channel never is) makes Redis answer TRYAGAIN until the stream
-- itself has moved.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1])
local max_age = tonumber(ARGV[3])
local min_ms = now_ms - max_age
if min_ms > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', min_ms))
end
redis.call('PEXPIRE', KEYS[1], string.format('%d', max_age * 2))
redis.call('SPUBLISH', ARGV[4], id .. ' ' .. ARGV[1])
return id
"""

HISTORY_LUA = """
-- KEYS[1] stream, KEYS[2] (optional) metadata key; ARGV[1] since ('' = latest),
-- ARGV[2] how many entries to read, ARGV[3] max age ms (entries older are
-- trimmed first, as a publish would)
-- returns {exists, length, entries-added, first id, last id, max deleted id, entries}
-- and, with KEYS[2], the metadata string (false when never set) as an 8th item
local key = KEYS[1]
local meta = false
if KEYS[2] then meta = redis.call('GET', KEYS[2]) end
if redis.call('EXISTS', key) == 0 then
  return {0, 0, 0, '0-0', '0-0', '0-0', {}, meta}
end
local t = redis.call('TIME')
local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
if min_ms > 0 then
  redis.call('XTRIM', key, 'MINID', string.format('%d', min_ms))
end
local info = redis.call('XINFO', 'STREAM', key)
local f = {}
for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
local count = tonumber(ARGV[2])
local entries = {}
if count > 0 then
  if ARGV[1] == '' then
    entries = redis.call('XREVRANGE', key, '+', '-', 'COUNT', count)
  else
    entries = redis.call('XREVRANGE', key, '+', '(' .. ARGV[1], 'COUNT', count)
  end
end
return {1, f['length'], f['entries-added'], f['recorded-first-entry-id'],
        f['last-generated-id'], f['max-deleted-entry-id'], entries, meta}
"""


def decode_meta(raw: str | None) -> dict[str, JSONValue]:
    """A stored metadata string as an object: {} when unset, not a JSON object, or not
    sendable as JSON (a non-finite number or a lone surrogate written by another client)."""
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
        if not isinstance(value, dict):
            return {}
        encode_data(value)
    except (ValueError, RecursionError):  # BadRequestError included
        return {}
    return value


def check_since(since: str) -> tuple[int, int]:
    """Parse a client's ``since``; reject what is no Redis stream ID (`parse_offset`
    refuses parts above 2^64-1, as Redis does)."""
    return parse_offset(since)


def ts_of(offset: str) -> int:
    """The millisecond part of an offset: when Redis appended the message."""
    return parse_offset(offset)[0]


def encode_payload(offset: str, data_json: str) -> str:
    """What goes over pub/sub (the Lua script builds the same string)."""
    return f"{offset} {data_json}"


def decode_payload(channel: str, payload: str) -> Delivery:
    """A pub/sub message back into a `Delivery`."""
    offset, sep, data_json = payload.partition(" ")
    if not sep:
        raise ValueError(f"malformed pub/sub payload on {channel!r}")
    return Delivery(channel, offset, data_json, ts_of(offset))


def delivery_from_entry(channel: str, entry: Sequence[object]) -> Delivery:
    """One stream entry ``[id, [field, value, ...]]`` as a `Delivery`."""
    entry_id = str(entry[0])
    fields = entry[1]
    data_json = "null"
    if isinstance(fields, dict):
        data_json = str(fields.get(DATA_FIELD, "null"))
    elif isinstance(fields, (list, tuple)):
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        data_json = str(pairs.get(DATA_FIELD, "null"))
    return Delivery(channel, entry_id, data_json, ts_of(entry_id))


@dataclass(frozen=True, slots=True)
class StreamState:
    """A stream's bookkeeping as `HISTORY_LUA` reports it."""

    exists: bool
    length: int
    entries_added: int
    first_id: str
    last_id: str
    max_deleted_id: str

    @property
    def ever_deleted(self) -> bool:
        """True when some entry was trimmed or deleted since the stream was created."""
        return self.entries_added > self.length


MISSING_STREAM = StreamState(False, 0, 0, ZERO_OFFSET, ZERO_OFFSET, ZERO_OFFSET)


def parse_history_reply(reply: Sequence[object]) -> tuple[StreamState, list[Sequence[object]]]:
    """`HISTORY_LUA`'s reply → (state, entries newest first)."""
    exists, length, added, first, last, max_deleted, entries = reply[:7]
    state = StreamState(
        exists=bool(int(str(exists))),
        length=int(str(length)),
        entries_added=int(str(added)),
        first_id=str(first or ZERO_OFFSET),
        last_id=str(last or ZERO_OFFSET),
        max_deleted_id=str(max_deleted or ZERO_OFFSET),
    )
    rows = list(entries) if isinstance(entries, (list, tuple)) else []
    return state, rows


def history_reply_meta(reply: Sequence[object]) -> str | None:
    """The metadata string `HISTORY_LUA` read with its second key (None: never set).

    Lua's false arrives as None (RESP null): a key that was never set.
    """
    raw = reply[7] if len(reply) > 7 else None
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def assess_recovery(state: StreamState, since: str, missed: int, limit: int) -> bool:
    """Whether a reader at `since` can get every message after it.

    `missed`: how many entries after `since` the stream still holds (capped at
    ``limit + 1`` by the caller). False when more than `limit` were missed,
    when entries after `since` may have been trimmed (trimming removes a
    prefix: it is safe exactly when `since` is at or after the first entry
    left), when `since` lies beyond the stream (an offset of a stream that
    was since lost, e.g. a Redis restart without persistence), or when the
    stream is gone altogether. Conservative: a reader whose `since` was the
    very last entry trimmed is told False although it missed nothing.
    """
    if missed > limit:
        return False
    since_key = check_since(since)
    if not state.exists:
        return since_key == (0, 0)
    if since_key > parse_offset(state.last_id):
        return False
    if parse_offset(state.max_deleted_id) > since_key:
        return False
    if not state.ever_deleted:
        # nothing ever removed: every entry of this stream is still here, so
        # only a reader of a stream that existed before this one missed some
        return since_key >= parse_offset(state.first_id) or since_key == (0, 0)
    if state.length == 0:
        return since_key >= parse_offset(state.last_id)
    return since_key >= parse_offset(state.first_id)
