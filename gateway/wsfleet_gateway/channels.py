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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from wsfleet_gateway.broker import Broker, Delivery, History, parse_offset

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

    __slots__ = ("attached", "last", "pending", "send")

    def __init__(self, send: SendFrame) -> None:
        self.send = send
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

    def __init__(self, broker: Broker, metrics: HubMetrics) -> None:
        self.broker = broker
        self.metrics = metrics
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
    ) -> bool:
        """Subscribe `conn` and send the reply built by `encode_reply`.

        Returns False (nothing sent) when the connection closed meanwhile.
        Broker errors propagate with the subscription rolled back.
        """
        sub = conn.subscriptions.get(channel)
        if sub is not None:  # already subscribed: answer with history, keep the subscription
            snapshot = await self.broker.read(channel, since, limit)
            if conn.closed:
                return False
            conn.send(encode_reply(snapshot.history, snapshot.meta_json or "{}"))
            return True
        sub = Subscription(conn.send)
        conn.subscriptions[channel] = sub
        subs = self._channels.get(channel)
        if subs is None:
            subs = self._channels[channel] = {}
        subs[conn] = sub
        try:
            snapshot = await self.broker.join(channel, since, limit)
        except BaseException:
            self._forget(conn, channel, sub)
            raise
        sub.attached = True
        if conn.subscriptions.get(channel) is not sub:  # dropped while joining
            self.broker.detach(channel)
            return False
        conn.send(encode_reply(snapshot.history, snapshot.meta_json or "{}"))
        self._complete(sub, snapshot.history, conn.moved)
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

    def unsubscribe(self, conn: Subscriber, channel: str) -> bool:
        """Drop `conn` from `channel` at once; False when it was not subscribed."""
        sub = conn.subscriptions.get(channel)
        if sub is None:
            return False
        self._forget(conn, channel, sub)
        if sub.attached:
            self.broker.detach(channel)
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
