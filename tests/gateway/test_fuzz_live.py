"""Hypothesis throws a few hundred random frames at a live gateway: it stays up."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.memory_broker import MemoryBroker

from tests.gateway.helpers import make_settings
from tests.support.waiting import wait_until
from wsfleet.client import Client

# integer ids stay below the client's own request ids (see `_own_ids`)
scalars = (
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=12) | st.floats()
)
channel_like = st.sampled_from(["a", "b", "$sys", "", "x" * 200, "a b", "{c}"]) | st.text(
    max_size=10
)
request_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": scalars,
        "op": st.sampled_from(["subscribe", "unsubscribe", "switch", "publish", "ping", "nope"])
        | scalars,
        "channel": channel_like | scalars,
        "from": channel_like,
        "to": channel_like,
        "since": st.sampled_from(["0-0", "1-1", "x", "99999999999999-0"]) | scalars,
        "data": st.recursive(scalars, lambda c: st.lists(c, max_size=3), max_leaves=5),
    },
)
frames = st.one_of(
    st.binary(max_size=300).map(lambda b: (b, True)),
    st.text(max_size=300).map(lambda t: (t.encode(), False)),
    st.binary(max_size=100).map(lambda b: (b, False)),  # text frames, usually invalid UTF-8
    request_objects.map(lambda o: (json.dumps(o).encode(), False)),
)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(frames, min_size=40, max_size=80))
async def test_random_frames_never_break_the_server(batch: list[tuple[bytes, bool]]) -> None:
    gw = Gateway(make_settings(), broker=MemoryBroker())
    await gw.start()
    clients: list[Client] = []
    try:
        client = _own_ids(await Client.connect(gw.ws_url))
        clients.append(client)
        for payload, binary in batch:
            client.send_raw(payload, binary=binary)
        assert await client.ping() >= 0  # still answering, after every frame above
        assert client.connected
        # every frame got an answer: count replies by draining errors/messages is
        # not needed; a fresh connection and a full round trip must still work
        other = await Client.connect(gw.ws_url)
        clients.append(other)
        await other.subscribe("after-fuzz")
        offset = await client.publish("after-fuzz", {"ok": True})
        message = await other.next_message()
        assert (message.offset, message.data) == (offset, {"ok": True})
        await wait_until(lambda: gw.connections == 2)
    finally:
        for c in clients:
            await c.close()
        await gw.stop()


def _own_ids(client: Client) -> Client:
    """Request ids no fuzzed frame uses, so replies cannot be confused."""
    client._ids = itertools.count(10**9)
    return client


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


async def test_every_bad_frame_is_answered_with_an_error() -> None:
    gw = Gateway(make_settings(), broker=MemoryBroker())
    await gw.start()
    client = _own_ids(await Client.connect(gw.ws_url))
    try:
        bad = [
            (b"\xff\xfe", False),
            (b"binary", True),
            (b"", False),
            (_json([]), False),
            (_json({"id": None, "op": "ping"}), False),
            (_json({"id": 1, "op": "publish", "channel": "a"}), False),
        ] * 20
        for payload, binary in bad:
            client.send_raw(payload, binary=binary)
        await client.ping()
        assert client.errors.qsize() == len(bad)
        assert gw.metrics.rejections.labels(reason="bad_request")._value.get() == len(bad)
    finally:
        await client.close()
        await gw.stop()
