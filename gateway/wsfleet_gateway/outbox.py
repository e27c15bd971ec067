"""Coalesced writes: what a connection is sent in one turn of the event loop goes out
in one socket write.

A fan-out of k messages in one turn (a publisher's burst read at once, a batch of
Redis pub/sub messages) costs each subscriber one write system call and one TCP
segment instead of k. On loopback the kernel's work per write is most of a
delivery's cost (the gateway spent 10.9 µs of CPU per delivery with a write per
frame, docs/benchmarks.md), so batching is where fan-out gets cheaper, not in Python.

Nothing changes on the wire but the segmenting: every message keeps its own WebSocket
frame, in the order it was sent. A live message (`Outbox.deliver`, the fan-out's path)
is queued; the first of a turn marks the connection and schedules one flush for the
whole gateway with ``call_soon``: no timer, no frame waits for a later one, the batch
leaves as soon as the loop gets to the flush. A reply (`Outbox.send`) is written at
once when nothing waits, as before, and queued behind the deliveries when some do, so
it never overtakes one sent before it. Control frames (ping, pong, close) go straight
through picows; the listener flushes the outbox before it sends a close (`flush`),
so a close never overtakes data either. A server frame is never masked, so a message
is framed once and the same bytes go to every subscriber (`Outboxes.framed`).

The slow-consumer cap still holds: the flush writes into the transport, whose buffer
limit calls `pause_writing` exactly as a direct send would.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Protocol

import structlog

from wsfleet_gateway.deflate import Deflater

log = structlog.get_logger("wsfleet_gateway.outbox")

FIN_TEXT = 0x81
"""First header byte of an unfragmented text frame."""
FIN_RSV1_TEXT = 0xC1
"""The same with RSV1 set: a permessage-deflate compressed message (RFC 7692)."""
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def text_frame(payload: bytes, first: int = FIN_TEXT) -> bytes:
    """`payload` as one unmasked server frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _LEN16.pack(first, 126, size) + payload
    return _LEN64.pack(first, 127, size) + payload


class Transport(Protocol):
    """What an outbox needs of picows' `WSTransport`."""

    @property
    def is_close_frame_sent(self) -> bool: ...

    @property
    def is_disconnected(self) -> bool: ...


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Outboxes:
    """The outboxes of one gateway with frames waiting, and their one flush per turn."""

    __slots__ = (
        "_loop",
        "_packed",
        "deflater",
        "dirty",
        "last_plain",
        "scheduled",
        "writes",
    )

    def __init__(
        self,
        deflater: Deflater | None = None,
        writes: Counter | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.deflater = deflater
        """Compresses for connections that negotiated permessage-deflate (None: off)."""
        self.writes = writes
        """Counts socket writes of data frames (``wsfleet_socket_writes_total``)."""
        self._loop = loop
        self.dirty: list[Outbox] = []
        """The outboxes sent something this turn (the fan-out appends to it directly)."""
        self.scheduled = False
        """A flush is scheduled for the end of this turn."""
        self.last_plain: tuple[bytes, bytes] = (b"", text_frame(b""))
        """The last payload framed and its frame: a fan-out frames each message once."""
        self._packed: tuple[bytes, bytes] = self.last_plain

    def outbox(self, transport: Transport, write: Callable[[bytes], None]) -> Outbox:
        """A connection's outbox; `write` puts bytes on its socket (the raw transport's)."""
        return Outbox(self, transport, write)

    def deflating_outbox(
        self, transport: Transport, write: Callable[[bytes], None], wbits: int
    ) -> Outbox:
        """The outbox of a connection that negotiated permessage-deflate with `wbits`."""
        assert self.deflater is not None, "compression is off"
        return DeflatingOutbox(self, transport, write, wbits)

    def framed(self, payload: bytes) -> bytes:
        """`payload`'s text frame; the same object for the same payload in a row."""
        last = self.last_plain
        if last[0] is payload:
            return last[1]
        frame = text_frame(payload)
        self.last_plain = (payload, frame)
        return frame

    def packed(self, compressed: bytes) -> bytes:
        """A compressed message's frame (RSV1), cached like `framed`."""
        last = self._packed
        if last[0] is compressed:
            return last[1]
        frame = text_frame(compressed, FIN_RSV1_TEXT)
        self._packed = (compressed, frame)
        return frame

    def mark(self, box: Outbox) -> None:
        """`box` has its first frame of this turn: flush it when the turn ends."""
        self.dirty.append(box)
        if not self.scheduled:
            self.schedule()

    def schedule(self) -> None:
        self.scheduled = True
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every waiting outbox: one write per connection (`Outbox.flush` inlined:
        this loop runs once per connection that was sent something this turn)."""
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        written = 0
        for box in dirty:
            frames = box.frames
            if frames is None:  # flushed early (before a close)
                continue
            box.frames = None
            transport = box.transport
            if transport.is_close_frame_sent or transport.is_disconnected:
                continue
            try:
                box.write(frames[0] if len(frames) == 1 else b"".join(frames))
            except Exception:  # one broken transport must not cost the others their frames
                log.exception("outbox_write_failed")
                continue
            written += 1
        writes = self.writes
        if written and writes is not None:
            writes.inc(written)

    def pending(self) -> int:
        """Outboxes with frames waiting."""
        return sum(1 for box in self.dirty if box.frames is not None)


class Outbox:
    """The frames one connection was sent in this turn of the loop."""

    __slots__ = ("boxes", "frames", "transport", "write")

    def __init__(
        self, boxes: Outboxes, transport: Transport, write: Callable[[bytes], None]
    ) -> None:
        self.boxes = boxes
        self.transport = transport
        self.write = write
        self.frames: list[bytes] | None = None

    def frame(self, payload: bytes) -> bytes:
        """`payload` as this connection's frame (framed once per message in a row)."""
        boxes = self.boxes
        last = boxes.last_plain
        return last[1] if last[0] is payload else boxes.framed(payload)

    def send(self, payload: bytes) -> None:
        """A reply or an event (the session's `send`): written now when nothing waits,
        else queued behind what does (so it never overtakes a delivery)."""
        frame = self.frame(payload)
        if self.frames is not None:
            self.frames.append(frame)
            return
        transport = self.transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            return
        self.write(frame)
        writes = self.boxes.writes
        if writes is not None:
            writes.inc()

    def deliver(self, payload: bytes) -> None:
        """A live message (the hub's fan-out): queued, written with the turn's others.

        Called once per subscriber per message, so `frame`, `queue` and `Outboxes.mark`
        are inlined (each Python call costs about as much as the rest of a delivery)."""
        boxes = self.boxes
        last = boxes.last_plain
        frame = last[1] if last[0] is payload else boxes.framed(payload)
        frames = self.frames
        if frames is None:
            self.frames = [frame]
            boxes.dirty.append(self)
            if not boxes.scheduled:
                boxes.schedule()
        else:
            frames.append(frame)

    def queue(self, frame: bytes) -> None:
        frames = self.frames
        if frames is None:
            self.frames = [frame]
            self.boxes.mark(self)
        else:
            frames.append(frame)

    def flush(self) -> int:
        """Write what waits (nothing once a close went out); 1 if it wrote, else 0."""
        frames, self.frames = self.frames, None
        if frames is None:
            return 0
        transport = self.transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            return 0
        self.write(frames[0] if len(frames) == 1 else b"".join(frames))
        return 1


class DeflatingOutbox(Outbox):
    """An outbox whose messages from the deflater's threshold up go compressed (RSV1),
    compressed once per message for every such subscriber (no context takeover)."""

    __slots__ = ("wbits",)

    def __init__(
        self,
        boxes: Outboxes,
        transport: Transport,
        write: Callable[[bytes], None],
        wbits: int,
    ) -> None:
        super().__init__(boxes, transport, write)
        self.wbits = wbits

    def deliver(self, payload: bytes) -> None:
        self.queue(self.frame(payload))

    def frame(self, payload: bytes) -> bytes:
        boxes = self.boxes
        deflater = boxes.deflater
        assert deflater is not None
        if len(payload) < deflater.min_bytes:
            return boxes.framed(payload)
        return boxes.packed(deflater.compress(payload, self.wbits))
