"""Counted traffic for the zero-loss tests: subscribers, publishers, the truth.

Every subscriber records each message it is handed; the truth is what Redis
holds in each channel's stream at the end (every message ever published,
nothing trimmed at these counts). A subscriber must have got exactly the
messages published after its subscription's offset: none missing, none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from wsfleet_gateway.backends.redis.streams import stream_key
from wsfleet_gateway.broker import parse_offset

from wsfleet.client import Client, ConnectionClosedError, ServerError

RETRYABLE = (OSError, ConnectionError, TimeoutError, ServerError)


async def connect(url: str, token: str | None = None, attempts: int = 60) -> Client:
    """Connect, retrying while gateways come and go (draining ones refuse)."""
    for attempt in range(attempts):
        try:
            return await Client.connect(url, token, timeout_s=15.0)
        except RETRYABLE:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1 + 0.05 * attempt)
    raise AssertionError("unreachable")


async def reconnect(client: Client, attempts: int = 100) -> None:
    """Reconnect with resume from the client's offsets, retrying."""
    for attempt in range(attempts):
        try:
            await client.reconnect()
            return
        except RETRYABLE:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1 + 0.02 * attempt)


@dataclass
class Subscriber:
    """A client subscribed to some channels, counting what it receives."""

    client: Client
    since: dict[str, str] = field(default_factory=dict)
    """Channel → the channel's offset when the subscription was made."""
    received: list[tuple[str, str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, url: str, channels: list[str], token: str | None = None) -> Subscriber:
        sub = cls(await connect(url, token))
        for channel in channels:
            reply = await sub.client.subscribe(channel)
            sub.since[channel] = reply.offset
        sub.task = asyncio.create_task(sub._consume(), name="subscriber")
        return sub

    async def _consume(self) -> None:
        while True:
            try:
                async for message in self.client.messages():
                    self.received.append((message.channel, message.offset))
                return  # closed by us
            except ConnectionClosedError:
                await reconnect(self.client)

    def expected(self, truth: dict[str, list[str]]) -> set[tuple[str, str]]:
        return {
            (channel, offset)
            for channel, since in self.since.items()
            for offset in truth.get(channel, [])
            if parse_offset(offset) > parse_offset(since)
        }

    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(self.received).values() if n > 1)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.client.close()


@dataclass
class Publisher:
    """Publishes `{"seq": n}` round-robin to channels, keeping acknowledged offsets."""

    url: str
    channels: list[str]
    pause_s: float = 0.05
    token: str | None = None
    acked: list[tuple[str, str]] = field(default_factory=list)
    unknown: int = 0
    """Publishes whose fate is unknown (connection lost before the reply)."""
    task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="publisher")

    async def _run(self) -> None:
        client = await connect(self.url, self.token)
        seq = 0
        try:
            while not self._stop.is_set():
                channel = self.channels[seq % len(self.channels)]
                try:
                    offset = await client.publish(channel, {"seq": seq})
                    self.acked.append((channel, offset))
                except RETRYABLE:
                    self.unknown += 1
                    await reconnect(client)
                seq += 1
                await asyncio.sleep(self.pause_s)  # pacing, not waiting for a condition
        finally:
            await client.close()

    def check(self) -> None:
        """Raise the publisher's own failure, if it failed."""
        if self.task is not None and self.task.done() and not self.task.cancelled():
            error = self.task.exception()
            if error is not None:
                raise AssertionError(f"publisher failed: {error!r}") from error

    def published_at_least(self, count: int) -> bool:
        self.check()
        return len(self.acked) >= count

    async def stop(self) -> None:
        """Stop publishing (idempotent); `check()` reports a failure."""
        self._stop.set()
        if self.task is not None:
            with contextlib.suppress(Exception):  # asyncio.timeout: see loadtest/engine.py
                async with asyncio.timeout(60.0):
                    await asyncio.shield(self.task)


async def stream_truth(redis_url: str, channels: list[str]) -> dict[str, list[str]]:
    """Every offset in each channel's Redis stream, oldest first."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        truth: dict[str, list[str]] = {}
        for channel in channels:
            entries = await client.xrange(stream_key(channel), "-", "+")
            truth[channel] = [entry_id for entry_id, _ in entries]
        return truth
    finally:
        await client.aclose()


@dataclass
class Tally:
    published: int
    expected: int
    delivered: int
    lost: int
    duplicated: int
    extra: int


def tally(subscribers: list[Subscriber], truth: dict[str, list[str]]) -> Tally:
    expected = delivered = lost = duplicated = extra = 0
    for sub in subscribers:
        want = sub.expected(truth)
        got = set(sub.received)
        expected += len(want)
        delivered += len(sub.received)
        lost += len(want - got)
        extra += len(got - want)
        duplicated += sub.duplicates()
    published = sum(len(v) for v in truth.values())
    return Tally(published, expected, delivered, lost, duplicated, extra)


def caught_up(subscribers: list[Subscriber], truth: dict[str, list[str]]) -> bool:
    return all(sub.expected(truth) <= set(sub.received) for sub in subscribers)
