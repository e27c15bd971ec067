"""The broker contract: where published messages, history and metadata live.

Two implementations share it:

- `MemoryBroker` (``backends/memory.py``): the embedded default, one process,
  in-process fan-out and bounded in-memory history.
- `RedisBroker` (``backends/redis/broker.py``): cross-pod fan-out by Redis pub/sub
  (one Redis subscription per channel per pod, shared by every local
  subscriber and kept for ``linger_s`` after the last one leaves) and
  per-channel history in a Redis Stream bounded by length and age. Every key
  of a channel sits under one hash tag, ``{channel}``.

Offsets are opaque to clients but ordered here: ``"<ms>-<seq>"`` exactly as
Redis stream IDs, so both brokers speak the same offsets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

JSONValue = Any  # any JSON-serialisable value

encode_json: Callable[[JSONValue], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode
"""Compact JSON text (UTF-8 kept as is): metadata, message data, every wire frame.

Raises `ValueError` for a non-finite float (``NaN``, ``Infinity`` are not JSON): the
gateway never writes them. Client input goes through `encode_data`, which says why."""

MAX_OFFSET_PART: Final = 2**64 - 1
"""Each half of an offset is a Redis stream ID part: an unsigned 64-bit integer."""


class BrokerUnavailableError(Exception):
    """The backing store cannot serve the request right now (maps to `unavailable`)."""


class BadRequestError(ValueError):
    """A request the store refuses on its own, whatever the state of Redis (maps to
    `bad_request`); refused before it joins any batch, so it fails alone."""


class InvalidOffsetError(BadRequestError):
    """A `since` value that is not an offset this server gave."""


def parse_offset(offset: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` (ASCII digits, each part below 2^64) → ``(ms, seq)``; raises
    `InvalidOffsetError`."""
    ms, sep, seq = offset.partition("-")
    if not sep or len(offset) > 41 or not offset.isascii() or not ms.isdigit() or not seq.isdigit():
        raise InvalidOffsetError(f"invalid offset {offset!r}")
    key = int(ms), int(seq)
    if key[0] > MAX_OFFSET_PART or key[1] > MAX_OFFSET_PART:
        raise InvalidOffsetError(f"invalid offset {offset!r}: a part above 2^64-1")
    return key


def check_text(text: str, what: str) -> str:
    """`text` unless it holds a lone surrogate (``"\\ud800"`` in JSON parses to one; it
    has no UTF-8 form, so no frame or Redis command can carry it): `BadRequestError`."""
    if not text.isascii():  # O(1): the common case costs nothing more
        try:
            text.encode()
        except UnicodeEncodeError:
            raise BadRequestError(
                f"{what} holds a lone surrogate (\\ud800-\\udfff without its pair):"
                " not valid Unicode"
            ) from None
    return text


def is_text(text: str) -> bool:
    """`check_text` as a test: False for a string holding a lone surrogate."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def encode_data(value: JSONValue, what: str = "`data`") -> str:
    """Client-given JSON (message data, metadata) as compact JSON text, or
    `BadRequestError` when it cannot be sent on as JSON: a non-finite number (``1e999``
    parses to infinity), a lone surrogate, nesting too deep to encode."""
    try:
        text = encode_json(value)
    except ValueError:
        raise BadRequestError(
            f"{what} holds a number that is not finite (NaN and Infinity are not JSON)"
        ) from None
    except RecursionError:
        raise BadRequestError(f"{what} is nested too deeply") from None
    return check_text(text, what)


def format_offset(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


ZERO_OFFSET = "0-0"


def offset_after(a: str, b: str) -> bool:
    """True when offset `a` is strictly later than offset `b`."""
    return parse_offset(a) > parse_offset(b)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One published message as every subscriber sees it.

    `data_json` is the message's data already encoded as JSON text, so a
    fan-out to N sockets encodes once (see `message_frame`).
    """

    channel: str
    offset: str
    data_json: str
    ts_ms: int

    @property
    def data(self) -> JSONValue:
        return json.loads(self.data_json)

    def message_frame(self) -> bytes:
        """The wire `message` frame, encoded once per delivery."""
        channel = json.dumps(self.channel)
        return (
            f'{{"type":"message","channel":{channel},"offset":"{self.offset}",'
            f'"ts":{self.ts_ms},"data":{self.data_json}}}'
        ).encode()


@dataclass(frozen=True, slots=True)
class History:
    """The answer to a history read.

    `messages`: oldest first, every message after `since` (or the most
    recent `limit` when `since` is None). `offset`: the channel's latest
    offset (a client that got this reply is up to date at it).
    `recovered`: with `since`, True when nothing after it was trimmed away
    and no more than `limit` messages were missed; always True without it.
    """

    messages: list[Delivery]
    offset: str
    recovered: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a subscriber is sent on joining a channel: history and metadata.

    `meta_json`: the metadata object as compact JSON text (``"{}"`` when never
    set), or None when the caller did not ask for it. `meta_stored`: the store
    held metadata for the channel (an L2 hit, for the cache's counters).
    """

    history: History
    meta_json: str | None
    meta_stored: bool = False


OnDelivery = Callable[[Delivery], None]


@dataclass(frozen=True, slots=True)
class PresenceOp:
    """One presence change: `record` (a member as `presence.encode_member` writes it)
    joins (`add`) or leaves `channel`."""

    channel: str
    record: str
    add: bool


OnPresenceEvent = Callable[[str, str], None]
"""``(channel, frame JSON)``: a ``join`` or ``leave`` event, from any pod."""


@runtime_checkable
class PresenceStore(Protocol):
    """Who is on a channel, kept by the store with expiring entries (``presence.py``).

    Writes never wait: they go with the next batch of commands (a subscribe's read
    when there is one, `Broker.join`'s ``presence``) and a failed one is counted, not
    raised (the next refresh writes every member again). An entry lives
    ``presence_ttl_s`` after its last write, so a gateway that dies takes its members
    along within one TTL, with no cleanup job.
    """

    def presence_write(self, ops: Sequence[PresenceOp]) -> None:
        """Apply `ops` in order (fire and forget)."""

    def presence_refresh(self, channel: str, records: Sequence[str]) -> None:
        """Write `records` of `channel` again: each lives one more TTL (fire and forget)."""

    async def presence_read(self, channel: str) -> list[str]:
        """The records of `channel` not expired (any order; may hold stale duplicates
        of one connection: `presence.live_members` sorts that out)."""

    def presence_event(self, channel: str, frame_json: str) -> None:
        """Send a ``join``/``leave`` frame to every pod holding `channel` (fire and forget)."""

    def on_presence_event(self, handler: OnPresenceEvent) -> None:
        """Where events of channels attached here go (one handler)."""


@runtime_checkable
class HabitStore(Protocol):
    """Each user's next-channel habits, kept by the store so any pod can use them
    (``backends/redis/habits.py``; the prefetcher in ``prefetch.py`` asks it)."""

    async def habit_step(
        self, user: str, came_from: str | None, to: str | None, n: int
    ) -> list[str]:
        """Learn the move ``came_from → to`` (`came_from` None: `to` is the connection's
        first channel) and return the `n` channels `user` most likely goes to after
        `to`, likeliest first; `to` None (a connection just opened): learn nothing and
        return the likeliest first channels. `BrokerUnavailableError` on failure."""


class Broker(Protocol):
    """What the gateway needs from its message store."""

    async def start(self, on_delivery: OnDelivery) -> None:
        """Begin delivering live messages of attached channels to `on_delivery`.

        `on_delivery` is called on the event loop, once per message per pod,
        in channel order; it must not block.
        """

    async def close(self) -> None:
        """Release connections and background tasks."""

    @property
    def available(self) -> bool:
        """False while the backing store is known to be unreachable."""

    async def publish(self, channel: str, data_json: str) -> Delivery:
        """Append to the channel's history and fan out to every pod.

        Raises `BrokerUnavailableError` fast when the store is unreachable.
        """

    async def publish_many(
        self, channel: str, data_jsons: Sequence[str]
    ) -> list[Delivery | Exception]:
        """`publish` of each, in this order (their offsets follow the list), as few round
        trips as the store allows. Each entry: the `Delivery`, or the error that
        publish alone would have raised (`BrokerUnavailableError`, `BadRequestError`,
        `TimeoutError`). Raises when the whole batch failed (each may have run)."""

    async def attach(self, channel: str) -> None:
        """Make sure live messages of `channel` reach this pod (ref-counted).

        Returns once the subscription is active, so a history read made
        after it cannot miss a message that is then published.
        """

    def detach(self, channel: str) -> None:
        """Drop one reference; the live subscription lingers briefly."""

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        """Messages after `since` (or the latest `limit`), and recovery status."""

    async def join(
        self,
        channel: str,
        since: str | None,
        limit: int,
        *,
        meta: bool = True,
        presence: Sequence[PresenceOp] = (),
    ) -> Snapshot:
        """`attach`, then `read`, in as few round trips as the store allows.

        On failure nothing stays attached. A subscribe or switch to a channel
        this pod does not hold yet costs one subscription and one read.
        `presence`: writes (a `PresenceStore`'s) sent in the read's batch, never awaited
        on their own; given only to a store that is a `PresenceStore`.
        """

    async def read(
        self, channel: str, since: str | None, limit: int, *, meta: bool = True
    ) -> Snapshot:
        """History (as `history`) and, with `meta`, metadata in one round trip."""

    async def get_meta(self, channel: str) -> dict[str, JSONValue]:
        """The channel's metadata object ({} when never set)."""

    async def set_meta(self, channel: str, meta: dict[str, JSONValue]) -> None:
        """Replace the channel's metadata object."""


class JoinByParts:
    """`Broker.join` and `Broker.read` from `attach`, `history` and `get_meta`: for a store
    where those cost nothing (the memory broker, test stores)."""

    async def join(
        self: Broker,
        channel: str,
        since: str | None,
        limit: int,
        *,
        meta: bool = True,
        presence: Sequence[PresenceOp] = (),
    ) -> Snapshot:
        if presence and isinstance(self, PresenceStore):
            self.presence_write(presence)
        await self.attach(channel)
        try:
            return await self.read(channel, since, limit, meta=meta)
        except BaseException:
            self.detach(channel)
            raise

    async def read(
        self: Broker, channel: str, since: str | None, limit: int, *, meta: bool = True
    ) -> Snapshot:
        history = await self.history(channel, since, limit)
        if not meta:
            return Snapshot(history, None)
        value = await self.get_meta(channel)
        return Snapshot(history, encode_json(value), bool(value))


async def publish_each(
    broker: Broker, channel: str, data_jsons: Sequence[str]
) -> list[Delivery | Exception]:
    """`Broker.publish_many` one publish after the other: for a store with nothing to
    pipeline (in memory), or a publish that must be confirmed on its own."""
    out: list[Delivery | Exception] = []
    for data_json in data_jsons:
        try:
            out.append(await broker.publish(channel, data_json))
        except (BrokerUnavailableError, BadRequestError, TimeoutError) as exc:
            out.append(exc)
    return out
