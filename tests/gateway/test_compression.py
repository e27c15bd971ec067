"""permessage-deflate: the negotiation, compressed fan-out (once per message, the same
bytes for every subscriber), inflating with a cap (zip bombs), and mixed connections."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.deflate import Agreement, Deflater, TooBigError, inflate, negotiate

from tests.gateway.helpers import make_settings
from tests.protection.support import RawClient
from tests.support.waiting import wait_until
from wsfleet.client import Client

OFFER = "permessage-deflate; client_max_window_bits"
"""What Chromium and Firefox send."""
BIG = {"timeline": [{"at": f"18:{m:02d}", "what": "first dance, then toasts"} for m in range(40)]}


# -- the negotiation (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "header"),
    [
        (OFFER, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ("permessage-deflate", "permessage-deflate; server_no_context_takeover; "
         "client_no_context_takeover"),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10",
        ),
        (  # 8 cannot be honoured: that offer is skipped, the next taken
            "permessage-deflate; server_max_window_bits=8, permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        ("x-webkit-deflate-frame, PerMessage-Deflate; client_no_context_takeover",
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ],
)  # fmt: skip
def test_acceptable_offers(offer: str, header: str) -> None:
    agreement = negotiate(offer)
    assert agreement is not None
    assert agreement.header == header


@pytest.mark.parametrize(
    "offer",
    [
        None,
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; some_future_param",
    ],
)
def test_offers_that_cannot_be_accepted(offer: str | None) -> None:
    assert negotiate(offer) is None


@given(st.binary(max_size=20_000), st.integers(9, 15))
def test_compressed_payloads_inflate_back(data: bytes, wbits: int) -> None:
    assert inflate(Deflater().compress(data, wbits), len(data)) == data


def test_inflate_caps_what_it_produces() -> None:
    bomb = Deflater().compress(b"\0" * 50_000_000)
    assert len(bomb) < 60_000
    with pytest.raises(TooBigError):
        inflate(bomb, 65_536)
    with pytest.raises(ValueError, match="not a deflate stream"):
        inflate(b"\xff\xff\xff\xff garbage", 65_536)


def test_a_frame_is_compressed_once_per_window() -> None:
    deflater = Deflater()
    frame = json.dumps(BIG).encode()
    first = deflater.compress(frame)
    assert deflater.compress(frame) is first  # the same bytes for the next subscriber
    assert deflater.compress(frame, 10) is not first
    again = bytes(bytearray(frame))  # equal, but another frame object: compressed anew
    assert deflater.compress(again) is not first
    assert deflater.compress(again) == first
    assert Agreement().header.startswith("permessage-deflate")


# -- against an in-process gateway --------------------------------------------------


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway(make_settings(user_connects_per_min=10_000), broker=MemoryBroker())
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def raw(gw: Gateway, offer: str | None = OFFER) -> tuple[RawClient, bytes]:
    client = RawClient("127.0.0.1", gw.port)
    head = client.handshake({"Sec-WebSocket-Extensions": offer} if offer else {})
    assert client.recv_json()["type"] == "welcome"
    return client, head


def read_message(client: RawClient) -> tuple[bool, dict[str, Any]]:
    """(was it compressed, the frame as JSON) of the next data frame."""
    rsv1, opcode, payload = client.recv_frame_bits()
    assert opcode == 0x1
    text = inflate(payload, 1 << 24) if rsv1 else payload
    value: dict[str, Any] = json.loads(text)
    return rsv1, value


async def test_the_client_negotiates_and_big_messages_arrive_intact(gateway: Gateway) -> None:
    reader = await Client.connect(gateway.ws_url)
    plain = await Client.connect(gateway.ws_url, compression=False)
    try:
        assert reader.compressed
        assert not plain.compressed
        for client in (reader, plain):
            await client.subscribe("venue-7")
        await plain.publish("venue-7", BIG)
        await plain.publish("venue-7", "short")
        for client in (reader, plain):
            messages = client.messages()
            assert (await asyncio.wait_for(anext(messages), 10)).data == BIG
            assert (await asyncio.wait_for(anext(messages), 10)).data == "short"
    finally:
        await reader.close()
        await plain.close()


async def test_fan_out_compresses_once_and_sends_the_same_bytes(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gateway.ws.deflater is not None
    calls: list[int] = []
    real = Deflater.compress

    def counting(self: Deflater, frame: bytes, wbits: int = 15) -> bytes:
        if frame is not (self._last.get(wbits) or (None,))[0]:
            calls.append(len(frame))  # a compression, not a reuse
        return real(self, frame, wbits)

    monkeypatch.setattr(Deflater, "compress", counting)
    subscribers = [await asyncio.to_thread(raw, gateway) for _ in range(5)]
    plain_client, head = await asyncio.to_thread(raw, gateway, None)
    assert b"sec-websocket-extensions" not in head.lower()
    for i, (client, _) in enumerate([*subscribers, (plain_client, b"")]):
        client.send_json({"op": "subscribe", "id": i, "channel": "fan"})
        reply = await asyncio.to_thread(client.recv_json)
        assert reply["type"] == "subscribed"
    calls.clear()
    publisher = await Client.connect(gateway.ws_url)
    await publisher.publish("fan", BIG)
    frames = [await asyncio.to_thread(client.recv_frame_bits) for client, _ in subscribers]
    assert len(calls) == 1, "compressed once for five subscribers"
    assert all(rsv1 for rsv1, _, _ in frames)
    assert len({payload for _, _, payload in frames}) == 1, "the same bytes to each"
    (payload,) = {payload for _, _, payload in frames}
    assert json.loads(inflate(payload, 1 << 20))["data"] == BIG
    assert len(payload) < len(json.dumps(BIG)) * 0.2
    plain_rsv1, plain_message = await asyncio.to_thread(read_message, plain_client)
    assert not plain_rsv1
    assert plain_message["data"] == BIG
    await publisher.close()
    for client, _ in [*subscribers, (plain_client, b"")]:
        client.close()


async def test_short_frames_stay_plain_on_a_compressing_connection(gateway: Gateway) -> None:
    client, head = await asyncio.to_thread(raw, gateway)
    assert b"permessage-deflate; server_no_context_takeover" in head
    client.send_json({"op": "ping", "id": 1})
    rsv1, pong = await asyncio.to_thread(read_message, client)
    assert not rsv1
    assert pong["type"] == "pong"
    client.close()


def compressed(obj: Any) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = c.compress(json.dumps(obj).encode()) + c.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


async def test_compressed_requests_are_read_whole_and_fragmented(gateway: Gateway) -> None:
    client, _ = await asyncio.to_thread(raw, gateway)
    client.send_frame(compressed({"op": "ping", "id": "z"}), rsv1=True)
    assert (await asyncio.to_thread(read_message, client))[1] == {
        "type": "pong", "id": "z", "ts": pytest.approx(0, abs=1e13),
    }  # fmt: skip
    data = compressed({"op": "publish", "id": 2, "channel": "frag", "data": BIG})
    half = len(data) // 2
    client.send_frame(data[:half], fin=False, rsv1=True)
    client.send_frame(data[half:], opcode=0x0)
    _, reply = await asyncio.to_thread(read_message, client)
    assert reply["type"] == "published"
    history = await gateway.store.history("frag", None, 10)
    assert history.messages[-1].data == BIG
    client.close()


async def test_a_zip_bomb_closes_1009_and_does_nothing_else(gateway: Gateway) -> None:
    bomb = {"op": "publish", "id": 1, "channel": "bomb", "data": "x" * 30_000_000}
    payload = compressed(bomb)
    assert len(payload) < gateway.settings.max_message_bytes  # passes the frame limit
    victim = await Client.connect(gateway.ws_url)
    await victim.subscribe("bomb")
    client, _ = await asyncio.to_thread(raw, gateway)
    client.send_frame(payload, rsv1=True)
    assert await asyncio.to_thread(client.close_code) == 1009
    assert (await gateway.store.history("bomb", None, 10)).messages == []
    assert await victim.ping() >= 0  # the others carry on
    await victim.close()


@pytest.mark.parametrize(
    ("offer", "payload", "code"),
    [
        (None, compressed({"op": "ping", "id": 1}), 1002),  # RSV1 never agreed
        (OFFER, b"\xff\xfe\xfd not deflate", 1002),
    ],
)
async def test_bad_compression_closes_1002(
    gateway: Gateway, offer: str | None, payload: bytes, code: int
) -> None:
    client, _ = await asyncio.to_thread(raw, gateway, offer)
    client.send_frame(payload, rsv1=True)
    assert await asyncio.to_thread(client.close_code) == code


async def test_compression_off_is_never_negotiated() -> None:
    gw = Gateway(make_settings(compression=False), broker=MemoryBroker())
    await gw.start()
    try:
        client = await Client.connect(gw.ws_url)
        assert not client.compressed
        await client.close()
        await wait_until(lambda: gw.connections == 0, message="closed")
    finally:
        await gw.stop()
