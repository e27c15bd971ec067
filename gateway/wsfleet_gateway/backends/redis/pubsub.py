"""`PubSubFanout`: one Redis pub/sub connection per pod, shared by every channel.

- One ``SUBSCRIBE`` per channel per pod, reference-counted across local
  subscribers; after the last reference goes the subscription lingers
  ``linger_s`` before ``UNSUBSCRIBE`` (a re-attach inside the linger reuses it,
  so rapid switching does not churn Redis).
- SUBSCRIBEs and UNSUBSCRIBEs asked for in one pass of the event loop go out
  in one write, in the order asked (a burst of clients reaching new channels
  costs one write, not one per channel). A channel whose name has no UTF-8 form
  is refused by `attach` (`BadRequestError`) before it joins that write.
- `attach` returns once Redis confirmed the subscription, so a history read
  made after it cannot miss a message published afterwards. The channel's
  offset at that point (where a reconnect's catch-up starts) comes from the
  history read the subscriber makes next (`note_offset`), or, for an attach
  with ``baseline=True``, from a read of the stream's newest entry.
- Messages are dispatched straight from the connection's `data_received`
  (``resp.py``: no reader task, no wakeup per message), in connection order,
  which is each channel's offset order (the publish script is atomic); an
  offset at or below the last one dispatched on its channel is dropped.
- When the connection drops, a supervising task reconnects with backoff, subscribes
  every channel again and, before any live message, catches each channel up
  from the last offset it dispatched by reading the stream, so messages
  published by other pods during the gap arrive exactly once, in order.
- A ``PING`` every ``ping_interval_s`` detects a silently dead connection
  (nothing received for two intervals plus ``op_timeout_s``).

On a Redis Cluster `shards.ShardPubSub` is this class with ``SSUBSCRIBE``, one per
primary (`SUBSCRIBE`, `UNSUBSCRIBE`, `MERGE` and `_subscribe_commands` are what it
changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError

from wsfleet_gateway.backends.redis.resp import Endpoint, RespConnection, open_connection, pack_resp
from wsfleet_gateway.backends.redis.streams import EVENT_MARK, decode_payload, pubsub_name
from wsfleet_gateway.broker import (
    BrokerUnavailableError,
    Delivery,
    OnDelivery,
    OnPresenceEvent,
    check_text,
    parse_offset,
)
from wsfleet_gateway.tasks import cancel_and_wait

log = structlog.get_logger("wsfleet_gateway.backends.redis.pubsub")

CATCH_UP_PAGE = 500


class StreamReader(Protocol):
    """How the fan-out reads the streams it catches up from."""

    async def read_after(self, channel: str, offset: str, count: int) -> list[Delivery]:
        """Up to `count` entries after `offset`, oldest first."""

    async def latest_offset(self, channel: str) -> str:
        """The channel's newest offset (``0-0`` for an empty channel)."""


@dataclass(slots=True, eq=False)
class _Sub:
    channel: str
    name: str
    refs: int = 0
    confirmed: bool = False
    """Redis confirmed the SUBSCRIBE on the current connection."""
    ready: bool = False
    """Confirmed on the current connection: `attach` may return at once."""
    last: tuple[int, int] | None = None
    """The last offset dispatched: later arrivals at or below it are duplicates."""
    start: tuple[int, int] | None = None
    """Where a reconnect's catch-up starts while nothing was dispatched yet (an offset a
    stream read saw). Never a reason to drop a message: a read may run ahead of the
    messages still on their way here, which local subscribers with older replies need."""
    dispatched: int = 0
    """Messages dispatched so far (see `PubSubFanout.mark`)."""
    confirm: asyncio.Future[None] | None = None
    sent_on: RespConnection | None = None
    """The connection a SUBSCRIBE was last sent on."""
    idle_since: float | None = None
    """Loop time the last reference went (None while referenced)."""
    buffer: list[str] | None = None
    """Live payloads held back while a moved channel catches up (`shards.ShardPubSub`)."""


@dataclass(slots=True, eq=False)
class _Outbox:
    """(UN)SUBSCRIBEs for one connection asked for in one loop pass, written together."""

    conn: RespConnection
    commands: list[list[str]] = field(default_factory=list)
    """Each ``[command, name, ...]``: consecutive requests of one command share one."""


@dataclass(slots=True, eq=False)
class _Syncing:
    """A (re)connection's subscribe-and-catch-up, before messages are dispatched live."""

    pending: set[str]
    """Pub/sub names whose SUBSCRIBE is not confirmed yet."""
    confirmed: asyncio.Future[None]
    buffered: list[list[Any]] = field(default_factory=list)
    """Messages that arrived meanwhile, dispatched (duplicates dropped) once caught up."""


@dataclass(slots=True)
class FanoutStats:
    """Counters for metrics and tests."""

    subscribes: int = 0
    unsubscribes: int = 0
    connects: int = 0
    caught_up: int = 0
    duplicates_dropped: int = 0
    pings: int = 0
    writes: int = 0
    """Writes of queued (UN)SUBSCRIBEs (each may carry many)."""


class PubSubFanout:
    """Live messages of attached channels, from one pub/sub connection."""

    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    MERGE = True
    """Consecutive (UN)SUBSCRIBEs of one loop pass share one command (many channels)."""

    def __init__(
        self,
        endpoint: Endpoint,
        streams: StreamReader,
        *,
        linger_s: float = 5.0,
        op_timeout_s: float = 1.0,
        ping_interval_s: float = 5.0,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 1.0,
        on_discontinuity: Callable[[str], None] | None = None,
        on_event: OnPresenceEvent | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._on_discontinuity = on_discontinuity
        """Called with a channel whose dispatched sequence stops being continuous."""
        self._on_event = on_event
        """Called with ``(channel, frame JSON)`` for a presence event (``~`` payload)."""
        self._streams = streams
        self.linger_s = linger_s
        self.op_timeout_s = op_timeout_s
        self.ping_interval_s = ping_interval_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.stats = FanoutStats()
        self._subs: dict[str, _Sub] = {}
        self._by_name: dict[str, _Sub] = {}
        self._on_delivery: OnDelivery | None = None
        self._conn: RespConnection | None = None
        self._syncing: _Syncing | None = None
        self._live = False
        self._live_event = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._idle: dict[str, _Sub] = {}
        """Lingering subscriptions, oldest first (one sweeper task, no timer per detach)."""
        self._sweeper: asyncio.Task[None] | None = None
        self._stale_confirms: dict[str, int] = {}
        """Per pub/sub name: confirmations still due for subscriptions already dropped."""
        self._outbox: _Outbox | None = None
        """(UN)SUBSCRIBEs of the current loop pass, not yet written."""

    # -- lifecycle ---------------------------------------------------------

    @property
    def live(self) -> bool:
        """True while the connection is up and every channel is subscribed."""
        return self._live

    def is_ready(self, channel: str) -> bool:
        """True while `channel` is subscribed on the live connection and caught up."""
        sub = self._subs.get(channel)
        return sub is not None and sub.ready and self._live

    def channels(self) -> dict[str, int]:
        """Subscribed (or lingering) channel → local reference count."""
        return {ch: sub.refs for ch, sub in self._subs.items()}

    async def start(self, on_delivery: OnDelivery) -> None:
        """Start the reader; wait (at most `op_timeout_s`) for the first connection."""
        self._on_delivery = on_delivery
        if self._reader is None:
            self._reader = asyncio.create_task(self._run(), name="wsfleet-redis-pubsub")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.op_timeout_s):
                await self._live_event.wait()

    async def close(self) -> None:
        self._closing = True
        await cancel_and_wait(self._reader, *self._tasks)
        self._reader = None
        self._tasks.clear()
        self._subs.clear()
        self._by_name.clear()
        self._idle.clear()

    # -- attach / detach ---------------------------------------------------

    def attach_held(self, channel: str) -> bool:
        """Take a reference at once when `channel` is subscribed and ready (the common
        switch back to a channel this pod holds); False: call `attach`."""
        sub = self._subs.get(channel)
        if sub is None or not sub.ready or self._closing:
            return False
        sub.refs += 1
        if sub.idle_since is not None:
            sub.idle_since = None
            del self._idle[channel]
        return True

    async def attach(self, channel: str, *, baseline: bool = True) -> None:
        """Take a reference; return once Redis confirmed the subscription.

        With `baseline` the channel's newest offset is read too (unless known),
        so a reconnect can catch up from it; a caller that reads the channel's
        history right after passes False and hands the offset to `note_offset`.
        """
        if self._closing:
            raise BrokerUnavailableError("broker closed")
        sub = self._subs.get(channel)
        if sub is None:
            sub = _Sub(channel, check_text(pubsub_name(channel), "the channel name"))
            self._subs[channel] = sub
            self._by_name[sub.name] = sub
        sub.refs += 1
        if sub.idle_since is not None:
            sub.idle_since = None
            del self._idle[channel]
        if sub.ready and (sub.last is not None or sub.start is not None or not baseline):
            return
        try:
            if not sub.ready:
                if not self._live:
                    raise BrokerUnavailableError("redis pub/sub is not connected")
                confirm = self._subscribe(sub)
                async with asyncio.timeout(self.op_timeout_s):
                    await asyncio.shield(confirm)  # shared: one caller giving up ends no other
            if baseline and sub.last is None and sub.start is None:
                self.note_offset(channel, await self._streams.latest_offset(channel))
        except BaseException as exc:
            self._release(sub)
            if isinstance(exc, BrokerUnavailableError | asyncio.CancelledError):
                raise
            if isinstance(exc, Exception):
                raise BrokerUnavailableError(f"subscribe {channel!r} failed: {exc!r}") from exc
            raise

    def detach(self, channel: str) -> None:
        """Drop a reference; the subscription lingers `linger_s` after the last."""
        sub = self._subs.get(channel)
        if sub is not None and sub.refs > 0:
            self._release(sub)

    def _release(self, sub: _Sub) -> None:
        sub.refs -= 1
        if sub.refs == 0 and not self._closing:
            sub.idle_since = asyncio.get_running_loop().time()
            self._idle[sub.channel] = sub  # re-inserted last: the dict stays oldest first
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = self._spawn(self._sweep_idle(), "wsfleet-pubsub-linger")

    async def _sweep_idle(self) -> None:
        """Expire subscriptions idle for `linger_s`, sleeping until the oldest is due."""
        loop = asyncio.get_running_loop()
        while self._idle:
            oldest = next(iter(self._idle.values()))
            due = (oldest.idle_since or 0.0) + self.linger_s
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            self._expire(oldest)

    def _expire(self, sub: _Sub) -> None:
        if self._idle.get(sub.channel) is sub:
            del self._idle[sub.channel]
        sub.idle_since = None
        if sub.refs > 0 or self._subs.get(sub.channel) is not sub:
            return
        del self._subs[sub.channel]
        del self._by_name[sub.name]
        self._discontinuity(sub.channel)
        conn = self._conn
        if conn is not None:
            if sub.sent_on is conn and not sub.confirmed:
                self._stale_confirms[sub.name] = self._stale_confirms.get(sub.name, 0) + 1
            self.stats.unsubscribes += 1
            self._queue(conn, self.UNSUBSCRIBE, sub.name)

    def _subscribe(self, sub: _Sub) -> asyncio.Future[None]:
        """The confirmation of `sub`'s SUBSCRIBE on the live connection, sent now unless
        one is on its way (it fails when the connection is lost first)."""
        conn = self._conn
        assert conn is not None  # live
        confirm = sub.confirm
        if confirm is None or confirm.done() or sub.sent_on is not conn:
            confirm = sub.confirm = asyncio.get_running_loop().create_future()
            self.stats.subscribes += 1
            sub.sent_on = conn
            self._queue(conn, self.SUBSCRIBE, sub.name)  # a failed write: the connection is gone
        return confirm

    def _queue(self, conn: RespConnection, command: str, name: str) -> None:
        """Ask for `command name` on `conn`; the loop pass's requests go in one write.

        Order is kept: a channel unsubscribed and subscribed again in one pass is
        sent UNSUBSCRIBE then SUBSCRIBE, as asked.
        """
        box = self._outbox
        if box is None or box.conn is not conn:
            loop = asyncio.get_running_loop()
            box = self._outbox = _Outbox(conn)
            loop.call_soon(self._flush, box)
        if box.commands and box.commands[-1][0] == command and self.MERGE:
            box.commands[-1].append(name)
        else:
            box.commands.append([command, name])

    def _flush(self, box: _Outbox) -> None:
        if self._outbox is box:
            self._outbox = None
        if self._closing or box.conn is not self._conn or not box.conn.is_open:
            return  # the connection is gone: its pending confirmations failed with it
        self._send_many(box.conn, box.commands)
        self.stats.writes += 1

    def _subscribe_commands(self, names: list[str]) -> list[list[str]]:
        """The commands that subscribe `names` on a new connection."""
        return [[self.SUBSCRIBE, *names]]

    def note_offset(self, channel: str, offset: str) -> None:
        """A stream read of an attached `channel` saw `offset` as its newest.

        Becomes the catch-up start while nothing was dispatched yet. An offset
        read before the subscription was confirmed is earlier than the true
        start, which only makes a catch-up re-read messages every subscriber
        drops as already seen; so any read will do, and a later one never
        overrides a known offset. It is not a de-duplication bound: the read's
        reply may arrive before messages published just before it (another
        connection), and those must still be dispatched to the subscribers
        whose own reads were older.
        """
        sub = self._subs.get(channel)
        if sub is not None and sub.last is None and sub.start is None:
            sub.start = parse_offset(offset)

    def mark(self, channel: str) -> object:
        """Changes whenever a message of `channel` is dispatched (or its subscription is
        replaced): a history read started under one mark may answer a joiner that
        registered later only while the mark is unchanged, since a message dispatched
        in between reached neither that read nor the joiner's buffer."""
        sub = self._subs.get(channel)
        return None if sub is None else (sub, sub.dispatched)

    # -- the connection ----------------------------------------------------

    async def _run(self) -> None:
        backoff = self.backoff_min_s
        while not self._closing:
            conn: RespConnection | None = None
            try:
                async with asyncio.timeout(self.op_timeout_s):
                    conn = await open_connection(self._endpoint, on_push=self._on_push)
                self._conn = conn
                async with asyncio.timeout(self.op_timeout_s * 4 + len(self._subs) * 0.01):
                    await self._sync(conn)
                self._live = True
                self._live_event.set()
                self.stats.connects += 1
                backoff = self.backoff_min_s
                log.info("redis_pubsub_connected", channels=len(self._subs))
                await self._serve(conn)
            except Exception as exc:
                log.warning(
                    "redis_pubsub_lost", error=f"{type(exc).__name__}: {exc}", retry_in_s=backoff
                )
            finally:
                self._drop_connection()
                if conn is not None:
                    conn.abort()
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self.backoff_max_s)

    def _drop_connection(self) -> None:
        self._live = False
        self._live_event.clear()
        self._conn = None
        self._syncing = None
        self._stale_confirms.clear()
        for sub in self._subs.values():
            sub.confirmed = False
            sub.ready = False
            if sub.confirm is not None and not sub.confirm.done():
                sub.confirm.set_exception(BrokerUnavailableError("redis pub/sub lost"))
                sub.confirm.exception()  # mark retrieved: the attacher may be gone

    async def _sync(self, conn: RespConnection) -> None:
        """Subscribe every known channel, then catch each up before live messages."""
        syncing = _Syncing(set(self._by_name), asyncio.get_running_loop().create_future())
        self._syncing = syncing
        for sub in self._subs.values():
            sub.sent_on = conn
        if syncing.pending:
            self.stats.subscribes += len(syncing.pending)
            self._send_many(conn, self._subscribe_commands(sorted(syncing.pending)))
            await asyncio.wait([syncing.confirmed, conn.lost], return_when=asyncio.FIRST_COMPLETED)
            if not syncing.confirmed.done():
                raise conn.error or RedisConnectionError("redis pub/sub lost while subscribing")
        for sub in list(self._subs.values()):
            if not sub.confirmed:
                continue
            await self._catch_up(sub)
            sub.ready = True
        self._syncing = None  # from here on messages are dispatched as they arrive
        for reply in syncing.buffered:
            self._on_message(reply[1], reply[2])

    async def _catch_up(self, sub: _Sub) -> None:
        start = sub.last or sub.start
        if start is None:
            self._discontinuity(sub.channel)
            sub.start = parse_offset(await self._streams.latest_offset(sub.channel))
            return
        while True:
            offset = "{}-{}".format(*(sub.last or start))
            page = await self._streams.read_after(sub.channel, offset, CATCH_UP_PAGE)
            for delivery in page:
                self.stats.caught_up += 1
                self._dispatch(sub, delivery)
            if len(page) < CATCH_UP_PAGE or self._subs.get(sub.channel) is not sub:
                return

    async def _serve(self, conn: RespConnection) -> None:
        """Keep the connection until it fails or goes silent (messages arrive meanwhile
        through `_on_push`)."""
        pinger = self._spawn(self._ping(conn), "wsfleet-redis-ping")
        try:
            await conn.lost
        finally:
            pinger.cancel()
        raise conn.error or RedisConnectionError("redis pub/sub connection closed")

    async def _ping(self, conn: RespConnection) -> None:
        """PING every `ping_interval_s`; abort the connection when it went silent.

        Silent means nothing at all received for two intervals plus `op_timeout_s`
        (the time a PONG may take), as seen at the interval ticks.
        """
        loop = asyncio.get_running_loop()
        silent_s = 2 * self.ping_interval_s + self.op_timeout_s
        seen, heard_at = conn.reads, loop.time()
        while True:
            await asyncio.sleep(self.ping_interval_s)
            now = loop.time()
            if conn.reads != seen:
                seen, heard_at = conn.reads, now
            elif now - heard_at > silent_s:
                log.warning("redis_pubsub_silent", silent_s=round(now - heard_at, 3))
                conn.abort(RedisConnectionError("redis pub/sub went silent"))
                return
            self._send(conn, "PING")
            self.stats.pings += 1

    def _on_push(self, reply: Any) -> None:
        """Every reply of the pub/sub connection, in order, as it is parsed."""
        try:
            self._on_reply(reply)
        except Exception:  # never into the connection's parser loop: the next replies wait
            log.exception("redis_pubsub_reply_failed")

    def _on_reply(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return  # a PONG, or an (un)subscribe's count only
        kind = reply[0]
        syncing = self._syncing
        if kind == "message":
            if syncing is None:
                self._on_message(reply[1], reply[2])
            else:
                syncing.buffered.append(reply)
        elif kind == "subscribe":
            if syncing is not None:
                syncing.pending.discard(reply[1])
                if not syncing.pending and not syncing.confirmed.done():
                    syncing.confirmed.set_result(None)
            self._confirmed(reply[1])

    def _confirmed(self, name: str) -> None:
        stale = self._stale_confirms.get(name, 0)
        if stale:
            if stale == 1:
                del self._stale_confirms[name]
            else:
                self._stale_confirms[name] = stale - 1
            return
        sub = self._by_name.get(name)
        if sub is None:
            return
        sub.confirmed = True
        if self._syncing is None:  # live: confirmed on the current connection
            sub.ready = True
        if sub.confirm is not None and not sub.confirm.done():
            sub.confirm.set_result(None)

    def _on_message(self, name: str, payload: str) -> None:
        sub = self._by_name.get(name)
        if sub is None or not sub.confirmed:
            return  # a leftover from before an UNSUBSCRIBE/SUBSCRIBE pair
        if payload[:1] == EVENT_MARK:  # a presence event: no offset, not a message
            on_event = self._on_event
            if on_event is not None:
                try:
                    on_event(sub.channel, payload[1:])
                except Exception:
                    log.exception("redis_on_event_failed", channel=sub.channel)
            return
        try:
            delivery = decode_payload(sub.channel, payload)
        except ValueError:
            log.warning("redis_pubsub_bad_payload", channel=sub.channel)
            return
        self._dispatch(sub, delivery)

    def _dispatch(self, sub: _Sub, delivery: Delivery) -> None:
        key = parse_offset(delivery.offset)
        if sub.last is not None and key <= sub.last:
            self.stats.duplicates_dropped += 1
            return
        sub.last = key
        sub.dispatched += 1
        if self._on_delivery is None:
            return
        try:
            self._on_delivery(delivery)
        except Exception:
            log.exception("redis_on_delivery_failed", channel=sub.channel)

    # -- helpers -----------------------------------------------------------

    def _discontinuity(self, channel: str) -> None:
        if self._on_discontinuity is not None:
            self._on_discontinuity(channel)

    def _send(self, conn: RespConnection, *args: str) -> None:
        self._send_many(conn, [list(args)])

    def _send_many(self, conn: RespConnection, commands: list[list[str]]) -> None:
        if conn is not self._conn or not conn.is_open:
            raise BrokerUnavailableError("redis pub/sub connection is gone")
        conn.send(b"".join([pack_resp(tuple(command)) for command in commands]))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug(
                "redis_pubsub_task_failed", task=task.get_name(), error=repr(task.exception())
            )
