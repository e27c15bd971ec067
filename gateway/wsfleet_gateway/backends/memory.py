"""`MemoryBroker`: the embedded broker (one process, no Redis).

In-process fan-out and per-channel history bounded by length and age.
Offsets are ``"<ms>-<seq>"`` exactly like Redis stream IDs: the wall-clock
millisecond (never going backwards per channel) and a sequence within it.

Presence: per channel, record → expiry ms (the Redis broker's sorted set, in a
dict); expired records are dropped when the channel is read. Events go to the
handler on the next loop pass, as they would arrive from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wsfleet_gateway.broker import (
    ZERO_OFFSET,
    Delivery,
    History,
    JoinByParts,
    JSONValue,
    OnDelivery,
    OnPresenceEvent,
    PresenceOp,
    encode_data,
    format_offset,
    parse_offset,
    publish_each,
)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Stream:
    entries: deque[Delivery] = field(default_factory=deque)
    keys: deque[tuple[int, int]] = field(default_factory=deque)
    last: tuple[int, int] = (0, 0)
    trimmed: tuple[int, int] = (0, 0)
    """Offset of the newest entry ever trimmed away (0-0: none)."""


class MemoryBroker(JoinByParts):
    """The `Broker` protocol in memory: history per channel, fan-out in process."""

    def __init__(
        self,
        history_max_len: int = 1000,
        history_max_age_s: float = 86400.0,
        clock_ms: Callable[[], int] = _wall_ms,
        presence_ttl_s: float = 60.0,
    ) -> None:
        self.history_max_len = history_max_len
        self.history_max_age_ms = int(history_max_age_s * 1000)
        self._clock_ms = clock_ms
        self._streams: dict[str, _Stream] = {}
        self._meta: dict[str, dict[str, JSONValue]] = {}
        self._attached: dict[str, int] = {}
        self._on_delivery: OnDelivery | None = None
        self.presence_ttl_ms = max(1, int(presence_ttl_s * 1000))
        self._presence: dict[str, dict[str, int]] = {}
        """Channel → record → expiry ms."""
        self._on_presence_event: OnPresenceEvent | None = None

    async def start(self, on_delivery: OnDelivery) -> None:
        self._on_delivery = on_delivery

    async def close(self) -> None:
        self._on_delivery = None

    @property
    def available(self) -> bool:
        return True

    def attached_channels(self) -> dict[str, int]:
        """Channel → reference count (for tests and introspection)."""
        return dict(self._attached)

    def _trim(self, stream: _Stream, now_ms: int) -> None:
        entries, keys = stream.entries, stream.keys
        oldest_ms = now_ms - self.history_max_age_ms
        while entries and (len(entries) > self.history_max_len or keys[0][0] < oldest_ms):
            entries.popleft()
            stream.trimmed = keys.popleft()

    def publish_now(self, channel: str, data_json: str) -> Delivery:
        """`publish` without the coroutine: append, trim, fan out."""
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream()
        now_ms = self._clock_ms()
        last_ms, last_seq = stream.last
        key = (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)
        stream.last = key
        delivery = Delivery(channel, format_offset(*key), data_json, key[0])
        stream.entries.append(delivery)
        stream.keys.append(key)
        self._trim(stream, now_ms)
        if self._on_delivery is not None and self._attached.get(channel):
            self._on_delivery(delivery)
        return delivery

    async def publish(self, channel: str, data_json: str) -> Delivery:
        return self.publish_now(channel, data_json)

    async def publish_many(
        self, channel: str, data_jsons: Sequence[str]
    ) -> list[Delivery | Exception]:
        return await publish_each(self, channel, data_jsons)

    async def attach(self, channel: str) -> None:
        self._attached[channel] = self._attached.get(channel, 0) + 1

    def detach(self, channel: str) -> None:
        count = self._attached.get(channel, 0) - 1
        if count > 0:
            self._attached[channel] = count
        else:
            self._attached.pop(channel, None)

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        stream = self._streams.get(channel)
        if stream is None:
            if since is None:
                return History([], ZERO_OFFSET, True)
            return History([], ZERO_OFFSET, parse_offset(since) <= (0, 0))
        self._trim(stream, self._clock_ms())
        latest = format_offset(*stream.last)
        entries = stream.entries
        if since is None:
            start = max(0, len(entries) - limit)
            return History([entries[i] for i in range(start, len(entries))], latest, True)
        since_key = parse_offset(since)
        keys = stream.keys
        # entries are ordered: walk back from the newest to the first after `since`
        first = len(keys)
        while first > 0 and keys[first - 1] > since_key:
            first -= 1
        missed = len(keys) - first
        start = max(first, len(keys) - limit)
        recovered = since_key >= stream.trimmed and missed <= limit and since_key <= stream.last
        return History([entries[i] for i in range(start, len(entries))], latest, recovered)

    async def get_meta(self, channel: str) -> dict[str, JSONValue]:
        return dict(self._meta.get(channel, {}))

    async def set_meta(self, channel: str, meta: dict[str, JSONValue]) -> None:
        encode_data(meta, "the metadata")  # BadRequestError, as the Redis broker
        self._meta[channel] = dict(meta)

    # --- presence (the PresenceStore protocol) ---------------------------------------

    def presence_write(self, ops: Sequence[PresenceOp]) -> None:
        expiry = self._clock_ms() + self.presence_ttl_ms
        for op in ops:
            members = self._presence.get(op.channel)
            if op.add:
                if members is None:
                    members = self._presence[op.channel] = {}
                members[op.record] = expiry
            elif members is not None:
                members.pop(op.record, None)
                if not members:
                    del self._presence[op.channel]

    def presence_refresh(self, channel: str, records: Sequence[str]) -> None:
        self.presence_write([PresenceOp(channel, record, True) for record in records])

    async def presence_read(self, channel: str) -> list[str]:
        members = self._presence.get(channel)
        if not members:
            return []
        now_ms = self._clock_ms()
        for record in [r for r, expiry in members.items() if expiry <= now_ms]:
            del members[record]
        if not members:
            del self._presence[channel]
        return list(members)

    def presence_event(self, channel: str, frame_json: str) -> None:
        handler = self._on_presence_event
        if handler is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: nobody to tell
                asyncio.get_running_loop().call_soon(handler, channel, frame_json)

    def on_presence_event(self, handler: OnPresenceEvent) -> None:
        self._on_presence_event = handler
