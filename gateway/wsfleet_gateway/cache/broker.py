"""`ProtectedBroker`: the circuit breaker and the channel cache in front of a `Broker`.

- ``publish``: fails fast with `BrokerUnavailableError` (``unavailable``) while
  the breaker is open, so a publisher learns at once and can retry; nothing is
  half-delivered (the broker's publish is one atomic script).
- ``get_meta`` / ``set_meta``: through the two-layer `ChannelCache`.
- ``attach`` / ``history`` with the breaker open (or Redis failing): served
  from local state, without waiting on Redis. The subscription is registered
  locally and re-attached in the background once Redis answers again (with a
  catch-up from the stream after the last offset this pod saw, when it saw
  one); ``history`` answers with no
  messages at the last offset this pod saw (``recovered`` false when a
  ``since`` cannot be vouched for).
- presence (when the inner broker is a `PresenceStore`): writes pass through while
  the breaker lets calls through, dropped while it is open (the gateway's next
  refresh writes every member again); a read fails fast with ``unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence

import structlog

from wsfleet_gateway.backends.redis.pool import is_redis_failure
from wsfleet_gateway.broker import (
    ZERO_OFFSET,
    Broker,
    BrokerUnavailableError,
    Delivery,
    History,
    JSONValue,
    OnDelivery,
    OnPresenceEvent,
    PresenceOp,
    PresenceStore,
    Snapshot,
    parse_offset,
)
from wsfleet_gateway.cache.layers import ChannelCache
from wsfleet_gateway.protection.breaker import CLOSED, CircuitBreaker
from wsfleet_gateway.tasks import cancel_and_wait

log = structlog.get_logger("wsfleet_gateway.cache.broker")

JoinHeld = Callable[[str, str | None, int], History | None]
"""`join_held(channel, since, limit)`: a reference and the history at once, or None."""

MAX_TRACKED_OFFSETS = 100_000
REATTACH_MIN_S = 0.05
REATTACH_MAX_S = 1.0
CATCH_UP_LIMIT = 1000


class ProtectedBroker:
    """A `Broker` wrapping another one (see the module docstring)."""

    def __init__(self, inner: Broker, cache: ChannelCache, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.cache = cache
        self.breaker = breaker
        self.last_offsets: dict[str, str] = {}
        """Channel → last offset this pod delivered (the degraded history's offset)."""
        self.local_attachments: Counter[str] = Counter()
        """Channels attached locally only (Redis was out), awaiting re-attachment."""
        self._reattach: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._on_delivery: OnDelivery | None = None
        self._holding: dict[str, list[Delivery]] = {}
        """Live deliveries of channels being re-attached, held until their catch-up is out:
        a subscription drops any offset at or below one it got, so a catch-up delivered
        after a newer live message would be lost to it."""
        self._join_held: JoinHeld | None = getattr(inner, "join_held", None)
        """The inner broker's join without awaiting, where it has one (`RedisBroker`)."""
        self._held_history: JoinHeld | None = getattr(inner, "held_history", None)
        """The inner broker's history from what it delivered (`RedisBroker.held_history`)."""
        self._presence: PresenceStore | None = inner if isinstance(inner, PresenceStore) else None
        breaker.on_change(self._on_breaker_change)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, on_delivery: OnDelivery) -> None:
        offsets = self.last_offsets
        holding = self._holding

        def remember(delivery: Delivery) -> None:
            if len(offsets) >= MAX_TRACKED_OFFSETS and delivery.channel not in offsets:
                offsets.clear()
            offsets[delivery.channel] = delivery.offset
            on_delivery(delivery)

        def live(delivery: Delivery) -> None:  # `remember`, inline: one call per delivery
            if holding and delivery.channel in holding:  # re-attaching: after its catch-up
                holding[delivery.channel].append(delivery)
                return
            if len(offsets) >= MAX_TRACKED_OFFSETS and delivery.channel not in offsets:
                offsets.clear()
            offsets[delivery.channel] = delivery.offset
            on_delivery(delivery)

        self._on_delivery = remember
        await self.inner.start(live)

    async def close(self) -> None:
        reattach, self._reattach = self._reattach, None
        await cancel_and_wait(reattach)
        await self.inner.close()

    @property
    def available(self) -> bool:
        return self.inner.available

    # --- publish -----------------------------------------------------------------------

    async def publish(self, channel: str, data_json: str) -> Delivery:
        if not self.breaker.allow():
            raise BrokerUnavailableError("redis circuit breaker is open: retry later")
        try:
            delivery = await self.inner.publish(channel, data_json)
        except (BrokerUnavailableError, TimeoutError) as exc:
            self._failed(exc)
            raise
        self.breaker.record_success()
        return delivery

    async def publish_many(
        self, channel: str, data_jsons: Sequence[str]
    ) -> list[Delivery | Exception]:
        if not self.breaker.allow():
            raise BrokerUnavailableError("redis circuit breaker is open: retry later")
        try:
            results = await self.inner.publish_many(channel, data_jsons)
        except (BrokerUnavailableError, TimeoutError) as exc:
            self._failed(exc)
            raise
        failed = [r for r in results if isinstance(r, BrokerUnavailableError | TimeoutError)]
        if failed:
            self._failed(failed[0])
        else:
            self.breaker.record_success()
        return results

    # --- subscriptions -------------------------------------------------------------------

    async def attach(self, channel: str) -> None:
        if not self.breaker.allow(probe=False) or not self.inner.available:
            self._local_attach(channel)
            return
        try:
            await self.inner.attach(channel)
        except (BrokerUnavailableError, TimeoutError) as exc:
            self._failed(exc)
            self._local_attach(channel)
            return
        self.breaker.record_success()

    def _failed(self, exc: BaseException) -> None:
        """Count a Redis failure; local congestion (a queue wait that ran out) is none."""
        if is_redis_failure(exc):
            self.breaker.record_failure()

    def detach(self, channel: str) -> None:
        if self.local_attachments.get(channel, 0) > 0:
            self.local_attachments[channel] -= 1
            if not self.local_attachments[channel]:
                del self.local_attachments[channel]
            return
        self.inner.detach(channel)

    def _local_attach(self, channel: str) -> None:
        self.local_attachments[channel] += 1
        if self._reattach is None or self._reattach.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to re-attach
                self._reattach = asyncio.get_running_loop().create_task(
                    self._reattach_loop(), name="wsfleet-reattach"
                )

    def _on_breaker_change(self, old: str, new: str) -> None:
        if new == CLOSED:
            self._wake.set()

    async def _reattach_loop(self) -> None:
        """Attach locally-held channels to Redis again once it answers; catch up from history."""
        delay = REATTACH_MIN_S
        while self.local_attachments:
            self._wake.clear()
            if self.breaker.allow(probe=False) and self.inner.available:
                for channel in list(self.local_attachments):
                    if not await self._reattach_one(channel):
                        break
                else:
                    delay = REATTACH_MIN_S
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            delay = min(delay * 2, REATTACH_MAX_S)

    async def _reattach_one(self, channel: str) -> bool:
        if self.local_attachments.get(channel, 0) <= 0:
            return True
        held = self._holding.setdefault(channel, [])
        try:
            try:
                await self.inner.attach(channel)
            except (BrokerUnavailableError, TimeoutError):
                return False
            if self.local_attachments.get(channel, 0) <= 0:  # detached while we attached
                self.inner.detach(channel)
                return True
            self.local_attachments[channel] -= 1
            if not self.local_attachments[channel]:
                del self.local_attachments[channel]
            since = self.last_offsets.get(channel)
            if since is not None and self._on_delivery is not None:
                # messages published between Redis coming back and this attach, first
                with contextlib.suppress(BrokerUnavailableError, TimeoutError):
                    history = await self.inner.history(channel, since, CATCH_UP_LIMIT)
                    for delivery in history.messages:
                        self._on_delivery(delivery)
            return True
        finally:
            if self._holding.get(channel) is held:
                del self._holding[channel]
            deliver = self._on_delivery
            top = self.last_offsets.get(channel)
            for delivery in held:  # then the live ones that arrived meanwhile
                if deliver is not None and (
                    top is None or parse_offset(delivery.offset) > parse_offset(top)
                ):
                    deliver(delivery)

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        # commands may work while only the pub/sub link reconnects: ask the breaker alone
        if self.breaker.allow(probe=False):
            try:
                history = await self.inner.history(channel, since, limit)
            except (BrokerUnavailableError, TimeoutError) as exc:
                self._failed(exc)
            else:
                self.breaker.record_success()
                return history
        if since is not None:
            parse_offset(since)  # a malformed since is still a bad request
            held = self._held_history(channel, since, limit) if self._held_history else None
            if held is not None:  # what this pod delivered after `since`: nothing skipped
                known = self.last_offsets.get(channel)
                if known is not None and parse_offset(held.offset) < parse_offset(known):
                    self.last_offsets[channel] = held.offset  # catch up from there
                return held
        offset = self.last_offsets.get(channel, since or ZERO_OFFSET)
        return History([], offset, since is None or since == offset)

    # --- join / read: history and metadata together ------------------------------------

    async def join(
        self,
        channel: str,
        since: str | None,
        limit: int,
        *,
        meta: bool = True,
        presence: Sequence[PresenceOp] = (),
    ) -> Snapshot:
        return await self._fetch(channel, since, limit, meta, attach=True, presence=presence)

    async def read(
        self, channel: str, since: str | None, limit: int, *, meta: bool = True
    ) -> Snapshot:
        return await self._fetch(channel, since, limit, meta, attach=False)

    async def _fetch(
        self,
        channel: str,
        since: str | None,
        limit: int,
        meta: bool,
        attach: bool,
        presence: Sequence[PresenceOp] = (),
    ) -> Snapshot:
        """L1 first; on a miss the inner broker reads the metadata in its history read.

        With Redis out (breaker open, pub/sub down, or the read failing) this
        falls back to what `attach`, `history` and the cache do on their own.
        `presence` goes with the inner join's read, or on its own (never awaited).
        """
        cached = self.cache.peek(channel) if meta else None
        if attach and cached is not None and self._join_held is not None:
            held = self._join_held(channel, since, limit)  # the common switch: nothing to await
            if held is not None:
                self.presence_write(presence)  # not awaited: the switch still waits on nothing
                self._saw(channel, held.offset)
                return Snapshot(held, cached.text)
        ask = meta and cached is None
        token = self.cache.load_token() if ask else 0
        snapshot: Snapshot | None = None
        attached = False
        try:
            if self.breaker.allow(probe=False) and (self.inner.available or not attach):
                try:
                    if attach and presence and self._presence is not None:
                        sending, presence = presence, ()  # the join sends them, even failing
                        snapshot = await self.inner.join(
                            channel, since, limit, meta=ask, presence=sending
                        )
                        attached = True
                    elif attach:
                        snapshot = await self.inner.join(channel, since, limit, meta=ask)
                        attached = True
                    else:
                        snapshot = await self.inner.read(channel, since, limit, meta=ask)
                except (BrokerUnavailableError, TimeoutError) as exc:
                    self._failed(exc)
                else:
                    self.breaker.record_success()
                    self._saw(channel, snapshot.history.offset)
            if snapshot is None:
                if attach:
                    self._local_attach(channel)
                    attached = True
                    self.presence_write(presence)  # dropped while the breaker is open
                snapshot = Snapshot(await self.history(channel, since, limit), None)
            if cached is not None:
                return Snapshot(snapshot.history, cached.text)
            if not meta:
                return snapshot
            if snapshot.meta_json is not None:
                entry = self.cache.fill(channel, snapshot.meta_json, snapshot.meta_stored, token)
            else:
                entry = await self.cache.load(channel)
            return Snapshot(snapshot.history, entry.text, snapshot.meta_stored)
        except BaseException:
            if attached:
                self.detach(channel)
            raise

    def _saw(self, channel: str, offset: str) -> None:
        """A read saw `offset` as the channel's newest: the degraded history's offset."""
        known = self.last_offsets.get(channel)
        if known == offset:
            return
        if known is None or parse_offset(offset) > parse_offset(known):
            if len(self.last_offsets) >= MAX_TRACKED_OFFSETS and known is None:
                self.last_offsets.clear()
            self.last_offsets[channel] = offset

    # --- metadata ------------------------------------------------------------------------

    async def get_meta(self, channel: str) -> dict[str, JSONValue]:
        return await self.cache.get_meta(channel)

    async def set_meta(self, channel: str, meta: dict[str, JSONValue]) -> None:
        await self.cache.set_meta(channel, meta)

    # --- presence ----------------------------------------------------------------------

    def presence_write(self, ops: Sequence[PresenceOp]) -> None:
        store = self._presence
        if ops and store is not None and self.breaker.allow(probe=False):
            store.presence_write(ops)

    def presence_refresh(self, channel: str, records: Sequence[str]) -> None:
        store = self._presence
        if store is not None and self.breaker.allow(probe=False):
            store.presence_refresh(channel, records)

    async def presence_read(self, channel: str) -> list[str]:
        store = self._presence
        if store is None:
            return []
        if not self.breaker.allow(probe=False):
            raise BrokerUnavailableError("redis circuit breaker is open: retry later")
        try:
            records = await store.presence_read(channel)
        except (BrokerUnavailableError, TimeoutError) as exc:
            self._failed(exc)
            raise
        self.breaker.record_success()
        return records

    def presence_event(self, channel: str, frame_json: str) -> None:
        store = self._presence
        if store is not None and self.breaker.allow(probe=False):
            store.presence_event(channel, frame_json)

    def on_presence_event(self, handler: OnPresenceEvent) -> None:
        if self._presence is not None:
            self._presence.on_presence_event(handler)
