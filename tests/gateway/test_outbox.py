"""Coalesced writes (`outbox.py`): frames of one turn go out in one write, in order, as
valid WebSocket frames; nothing goes out after a close."""

from __future__ import annotations

import asyncio
import struct
import zlib

from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.deflate import Deflater
from wsfleet_gateway.outbox import FIN_RSV1_TEXT, FIN_TEXT, Outboxes, text_frame


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """RFC 6455 §5.2 read independently: (first byte, payload) of each unmasked frame."""
    frames = []
    at = 0
    while at < len(data):
        first, second = data[at], data[at + 1]
        assert not second & 0x80, "a server frame is never masked"
        size, at = second & 0x7F, at + 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, at)
            at += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, at)
            at += 8
        frames.append((first, data[at : at + size]))
        at += size
    assert at == len(data)
    return frames


class FakeTransport:
    def __init__(self) -> None:
        self.is_close_frame_sent = False
        self.is_disconnected = False
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class Count:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


@given(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]) | st.integers(0, 3000))
def test_a_text_frame_parses_back_to_its_payload(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    assert parse_frames(text_frame(payload)) == [(FIN_TEXT, payload)]
    assert parse_frames(text_frame(payload, FIN_RSV1_TEXT)) == [(FIN_RSV1_TEXT, payload)]


async def test_one_turn_is_one_write_per_connection_in_order() -> None:
    writes = Count()
    boxes = Outboxes(writes=writes)
    a, b = FakeTransport(), FakeTransport()
    box_a, box_b = boxes.outbox(a, a.write), boxes.outbox(b, b.write)
    payloads = [f'{{"n":{i}}}'.encode() for i in range(20)]
    for payload in payloads:
        box_a.deliver(payload)
        box_b.deliver(payload)
    assert a.writes == []  # nothing before the turn ends
    assert boxes.pending() == 2
    await asyncio.sleep(0)
    assert len(a.writes) == len(b.writes) == 1
    assert [p for _, p in parse_frames(a.writes[0])] == payloads
    assert a.writes == b.writes
    assert writes.value == 2
    box_a.deliver(b"next turn")
    await asyncio.sleep(0)
    assert parse_frames(a.writes[1]) == [(FIN_TEXT, b"next turn")]
    assert len(b.writes) == 1
    assert writes.value == 3


async def test_a_message_is_framed_once_for_every_subscriber() -> None:
    boxes = Outboxes()
    payload = b'{"type":"message"}'
    assert boxes.framed(payload) is boxes.framed(payload)
    assert boxes.framed(b'{"other":1}') is not boxes.framed(payload)


async def test_nothing_is_written_after_a_close_and_flush_is_idempotent() -> None:
    boxes = Outboxes()
    closed, gone, open_ = FakeTransport(), FakeTransport(), FakeTransport()
    closed.is_close_frame_sent = True
    gone.is_disconnected = True
    for transport in (closed, gone, open_):
        boxes.outbox(transport, transport.write).deliver(b"x")
        boxes.outbox(transport, transport.write).send(b"y")
    boxes.flush()
    boxes.flush()
    assert closed.writes == gone.writes == []
    assert open_.writes == [text_frame(b"y"), text_frame(b"x")]  # a reply goes at once
    for transport in (closed, gone):  # an early flush (before a close) writes nothing either
        box = boxes.outbox(transport, transport.write)
        box.deliver(b"z")
        assert box.flush() == 0
        assert transport.writes == []


async def test_flushing_one_outbox_early_keeps_order_with_the_turn() -> None:
    """A close flushes its connection's outbox at once: what was queued goes out
    first, and the turn's flush does not write it twice."""
    boxes = Outboxes()
    t = FakeTransport()
    box = boxes.outbox(t, t.write)
    box.deliver(b"message")
    box.send(b"reconnect")
    assert box.flush() == 1
    assert box.flush() == 0
    await asyncio.sleep(0)
    assert t.writes == [text_frame(b"message") + text_frame(b"reconnect")]


async def test_a_deflating_outbox_compresses_from_the_threshold_once_per_message() -> None:
    deflater = Deflater(min_bytes=64)
    boxes = Outboxes(deflater)
    t1, t2, plain = FakeTransport(), FakeTransport(), FakeTransport()
    boxes_ = [
        boxes.deflating_outbox(t1, t1.write, 15),
        boxes.deflating_outbox(t2, t2.write, 15),
        boxes.outbox(plain, plain.write),
    ]
    small, big = b'{"n":1}', b'{"text":"' + b"first dance at nine " * 20 + b'"}'
    for box in boxes_:
        box.deliver(small)
        box.deliver(big)
    await asyncio.sleep(0)
    assert t1.writes == t2.writes  # the same compressed bytes for both
    (first_small, got_small), (first_big, packed) = parse_frames(t1.writes[0])
    assert (first_small, got_small) == (FIN_TEXT, small)
    assert first_big == FIN_RSV1_TEXT
    assert zlib.decompressobj(-15).decompress(packed + b"\x00\x00\xff\xff") == big
    assert parse_frames(plain.writes[0]) == [(FIN_TEXT, small), (FIN_TEXT, big)]


async def test_a_transport_that_raises_costs_the_others_nothing() -> None:
    boxes = Outboxes()
    broken, fine = FakeTransport(), FakeTransport()

    def refuse(data: bytes) -> None:
        raise RuntimeError("transport gone")

    boxes.outbox(broken, refuse).deliver(b"lost")
    boxes.outbox(fine, fine.write).deliver(b"kept")
    await asyncio.sleep(0)
    assert fine.writes == [text_frame(b"kept")]


async def test_a_reply_goes_at_once_unless_deliveries_wait_then_behind_them() -> None:
    writes = Count()
    boxes = Outboxes(writes=writes)
    t = FakeTransport()
    box = boxes.outbox(t, t.write)
    box.send(b"pong")
    assert t.writes == [text_frame(b"pong")]  # nothing waited: no extra loop turn
    box.deliver(b"m1")
    box.send(b"unsubscribed")  # must not overtake m1
    box.deliver(b"m2")
    assert len(t.writes) == 1
    await asyncio.sleep(0)
    assert [p for _, p in parse_frames(t.writes[1])] == [b"m1", b"unsubscribed", b"m2"]
    assert writes.value == 2
