"""Local channel subscriptions and fan-out: the `Hub`.

The hub maps each channel to the local subscriptions on it and each
subscriber to its channels. Every subscription remembers the last offset it
delivered, so a connection never receives an offset at or below one it
already got (exactly once across history replies, live fan-out and brokers
that redeliver).

Subscribing cannot lose or duplicate a message: the subscription is
registered *pending* (live deliveries are buffered), the broker joins the
channel (attaches it, then reads history and metadata, in one round trip
when the channel is new to this pod), the reply goes out with the channel's
offset, and only then are buffered deliveries after that offset flushed.

Fan-out encodes a message frame once and writes the same bytes to every
local subscriber.

A drain `move`s a connection: it returns the offsets the connection resumes
from elsewhere and from then on the connection gets no more live messages (its
subscriptions' last offset is set past every offset, which costs the fan-out
nothing), so a client resuming from those offsets gets no message twice.
Requests are still answered; a subscribe completed afterwards sends its reply
(whose offset is then exact too) and no live message either.

Presence (with a `PresenceStore`): a subscription carries its member record; the
join's write goes to the broker with the join (one batch with its read), a leave's
on its own, or, in a switch, with the join that follows. `presence_records` lists
what the heartbeat writes again. For channels the event matcher accepts, a completed
join and the leave of a completed subscription are sent as ``join``/``leave`` events
to every pod; each sends them to its subscribers of the channel other than the
member's own connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from wsfleet_gateway.broker import (
    Broker,
    Delivery,
    History,
    PresenceOp,
    PresenceStore,
    parse_offset,
)
from wsfleet_gateway.presence import (
    JOIN,
    LEAVE,
    decode_member,
    encode_event,
    event_connection,
)

MOVED = (2**64, 0)
"""A moved connection's subscriptions' last offset: above every offset, so nothing is sent."""

SendFrame = Callable[[bytes], None]
EncodeReply = Callable[[History, str], bytes]
"""``(history, meta as JSON text) -> reply frame``."""


class Subscriber(Protocol):
    """What the hub needs from a connection."""

    @property
    def send(self) -> SendFrame:
        """Write one text frame to the socket (never blocks)."""

    @property
    def deliver(self) -> SendFrame:
        """Queue one live message frame, written with the others of this loop turn (never
        blocks; never before a frame `send` wrote earlier)."""

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """Channel → subscription: owned by the hub, stored on the connection."""

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""

    @property
    def moved(self) -> bool:
        """True once told to reconnect elsewhere (`Hub.move`): no more live messages."""


class Subscription:
    """One connection on one channel."""

    __slots__ = ("attached", "last", "member", "pending", "send")

    def __init__(self, send: SendFrame, member: str | None = None) -> None:
        self.send = send
        self.member = member
        """The presence record of this connection on this channel (None: presence off)."""
        self.last: tuple[int, int] = (0, 0)
        """The highest offset this connection got on this channel."""
        self.pending: list[Delivery] | None = []
        """Live deliveries held back until the subscribe reply is out."""
        self.attached = False
        """True once `Broker.attach` returned (so `detach` is owed)."""


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Counter, Protocol):
    def dec(self, amount: float = 1) -> None: ...


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class HubMetrics(Protocol):
    """The gateway's metrics as the hub, the sessions and the server count into them
    (`metrics.GatewayMetrics`; a Protocol, so the pure core imports no Prometheus)."""

    @property
    def deliveries(self) -> Counter: ...

    @property
    def messages(self) -> Counter: ...

    @property
    def connections(self) -> Gauge: ...

    @property
    def message_delivery_seconds(self) -> Observer: ...

    @property
    def subscribe_seconds(self) -> Observer: ...

    @property
    def channel_switch_seconds(self) -> Observer: ...

    def reject(self, reason: str) -> None: ...


class Hub:
    """Local subscriptions of one gateway and the fan-out to them."""

    def __init__(
        self,
        broker: Broker,
        metrics: HubMetrics,
        presence: PresenceStore | None = None,
        events: Callable[[str], bool] | None = None,
    ) -> None:
        self.broker = broker
        self.metrics = metrics
        self.presence = presence
        """Where members are kept (None: presence off)."""
        self.events = events
        """Channels whose joins and leaves are sent as events (None: none)."""
        self._channels: dict[str, dict[Subscriber, Subscription]] = {}
        self._deliveries = metrics.deliveries
        self._delivery_seconds = metrics.message_delivery_seconds

    # --- fan-out (hot path) ----------------------------------------------------

    def on_delivery(self, delivery: Delivery) -> None:
        """Write one broker delivery to every local subscriber of its channel."""
        subs = self._channels.get(delivery.channel)
        if not subs:
            return
        key = parse_offset(delivery.offset)
        frame: bytes | None = None
        sent = 0
        for sub in subs.values():
            pending = sub.pending
            if pending is not None:
                pending.append(delivery)
            elif key > sub.last:
                if frame is None:
                    frame = delivery.message_frame()
                sub.last = key
                sub.send(frame)
                sent += 1
        if sent:
            self._deliveries.inc(sent)
            lag_s = time.time() - delivery.ts_ms / 1000.0
            self._delivery_seconds.observe(lag_s if lag_s > 0.0 else 0.0)

    # --- subscriptions -----------------------------------------------------------

    def channel_count(self) -> int:
        """Channels with at least one local subscriber."""
        return len(self._channels)

    def subscriber_count(self, channel: str) -> int:
        subs = self._channels.get(channel)
        return len(subs) if subs else 0

    async def subscribe(
        self,
        conn: Subscriber,
        channel: str,
        since: str | None,
        limit: int,
        encode_reply: EncodeReply,
        member: str | None = None,
        leaving: Sequence[PresenceOp] = (),
    ) -> bool:
        """Subscribe `conn` and send the reply built by `encode_reply`.

        Returns False (nothing sent) when the connection closed meanwhile.
        Broker errors propagate with the subscription rolled back.
        `member`: the connection's presence record on `channel` (with presence on);
        `leaving`: presence writes of a switch's leave, sent in the join's batch.
        """
        presence = self.presence
        sub = conn.subscriptions.get(channel)
        if sub is not None:  # already subscribed: answer with history, keep the subscription
            if leaving and presence is not None:
                presence.presence_write(leaving)
            snapshot = await self.broker.read(channel, since, limit)
            if conn.closed:
                return False
            conn.send(encode_reply(snapshot.history, snapshot.meta_json or "{}"))
            return True
        if presence is None:
            member = None
        sub = Subscription(conn.deliver, member)
        conn.subscriptions[channel] = sub
        subs = self._channels.get(channel)
        if subs is None:
            subs = self._channels[channel] = {}
        subs[conn] = sub
        try:
            if member is not None:
                ops = [*leaving, PresenceOp(channel, member, True)]
                snapshot = await self.broker.join(channel, since, limit, presence=ops)
            else:
                snapshot = await self.broker.join(channel, since, limit)
        except BaseException:
            self._forget(conn, channel, sub)
            self._left(channel, member)
            raise
        sub.attached = True
        if conn.subscriptions.get(channel) is not sub:  # dropped while joining
            self.broker.detach(channel)
            self._left(channel, member)  # after the join's write, which may have been later
            return False
        conn.send(encode_reply(snapshot.history, snapshot.meta_json or "{}"))
        self._complete(sub, snapshot.history, conn.moved)
        if member is not None and self.events is not None and self.events(channel):
            self._emit(JOIN, channel, member)
        return True

    def _complete(self, sub: Subscription, history: History, moved: bool) -> None:
        last = parse_offset(history.offset)
        if history.messages:
            last = max(last, parse_offset(history.messages[-1].offset))
        sub.last = MOVED if moved else last
        pending, sub.pending = sub.pending, None
        if not pending:
            return
        for delivery in pending:
            key = parse_offset(delivery.offset)
            if key > sub.last:
                sub.last = key
                sub.send(delivery.message_frame())
                self._deliveries.inc()

    def unsubscribe(
        self, conn: Subscriber, channel: str, leaving: list[PresenceOp] | None = None
    ) -> bool:
        """Drop `conn` from `channel` at once; False when it was not subscribed.

        `leaving`: where the presence write goes, to be sent with a join that follows
        (a switch); without it the write is sent now.
        """
        sub = conn.subscriptions.get(channel)
        if sub is None:
            return False
        completed = sub.pending is None
        self._forget(conn, channel, sub)
        if sub.attached:
            self.broker.detach(channel)
        member = sub.member
        if member is not None:
            if leaving is not None:
                leaving.append(PresenceOp(channel, member, False))
            else:
                self._left(channel, member)
            if completed and self.events is not None and self.events(channel):
                self._emit(LEAVE, channel, member)
        return True

    def _forget(self, conn: Subscriber, channel: str, sub: Subscription) -> None:
        if conn.subscriptions.get(channel) is sub:
            del conn.subscriptions[channel]
        subs = self._channels.get(channel)
        if subs is not None and subs.get(conn) is sub:
            del subs[conn]
            if not subs:
                del self._channels[channel]
        sub.pending = None

    def drop(self, conn: Subscriber) -> None:
        """Remove every subscription of a closed connection."""
        for channel in list(conn.subscriptions):
            self.unsubscribe(conn, channel)

    # --- presence ------------------------------------------------------------------------

    def _left(self, channel: str, member: str | None) -> None:
        presence = self.presence
        if member is not None and presence is not None:
            presence.presence_write([PresenceOp(channel, member, False)])

    def _emit(self, kind: str, channel: str, record: str) -> None:
        presence, decoded = self.presence, decode_member(record)
        if presence is not None and decoded is not None:
            presence.presence_event(channel, encode_event(kind, channel, decoded))

    def on_presence_event(self, channel: str, frame_json: str) -> None:
        """A ``join``/``leave`` event from any pod: to every completed subscription of
        `channel` here but the member's own connection (and none told to move)."""
        subs = self._channels.get(channel)
        if not subs:
            return
        own = event_connection(frame_json)
        frame = frame_json.encode()
        for conn, sub in subs.items():
            if sub.pending is None and not conn.moved and getattr(conn, "id", None) != own:
                sub.send(frame)

    def presence_records(self) -> Iterator[tuple[str, list[str]]]:
        """``(channel, records)`` of every channel held here: what a refresh writes."""
        for channel, subs in list(self._channels.items()):
            records = [sub.member for sub in subs.values() if sub.member is not None]
            if records:
                yield channel, records

    def offsets(self, conn: Subscriber) -> dict[str, str]:
        """Channel → last offset delivered to `conn` (completed subscriptions only)."""
        return {
            channel: f"{sub.last[0]}-{sub.last[1]}"
            for channel, sub in conn.subscriptions.items()
            if sub.pending is None and sub.last != MOVED
        }

    def move(self, conn: Subscriber) -> dict[str, str]:
        """The drain's `resume` for `conn` (`offsets`), after which `conn` gets no live
        message (its caller marks it `moved` and sends the `reconnect` frame at once):
        every message after those offsets is left for the connection it moves to.

        A subscribe still joining is left out: its reply, when it comes, carries the
        channel's offset to resume from.
        """
        resume = self.offsets(conn)
        for sub in conn.subscriptions.values():
            if sub.pending is None:
                sub.last = MOVED
        return resume
