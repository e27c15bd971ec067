"""Hypothesis throws a few hundred random frames at a live gateway: it stays up.

The issue-17 corpus (``fuzz_corpus.py``: lone surrogates, non-finite numbers, 2^64
offsets, deep nesting, invalid UTF-8) is mixed into the random frames, and replayed on
its own against gateways with either broker: each case gets `bad_request` saying why."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker

from tests.gateway.fuzz_corpus import CORPUS
from tests.gateway.helpers import make_settings
from tests.support.waiting import wait_until
from wsfleet.client import Client, ServerError
from wsfleet.services import RedisServer

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
    st.sampled_from(CORPUS).map(lambda case: (case.frame, False)),
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


@pytest.fixture(params=["memory", "redis"])
async def any_gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    if request.param == "memory":
        gw = Gateway(make_settings(), broker=MemoryBroker())
    else:
        redis: RedisServer = request.getfixturevalue("shared_redis")
        gw = Gateway(make_settings(redis_url=redis.url, user_connects_per_min=100_000))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def test_the_issue_17_corpus_is_answered_with_bad_request(any_gateway: Gateway) -> None:
    """Every case at once (so the stores batch them with the good publishes around them),
    then each answer: `bad_request`, why, the id when usable; the good publishes stored."""
    gw = any_gateway
    client = _own_ids(await Client.connect(gw.ws_url, record_frames=True))
    good = await Client.connect(gw.ws_url)
    try:
        for case in CORPUS:
            client.send_raw(case.frame)
            good.send_raw(_json({"id": 10**8, "op": "publish", "channel": "fuzz-ok", "data": 1}))
        await client.ping()  # answered in order: every corpus frame was answered before it
        errors = [f for f in client.frame_log or [] if f["type"] == "error"]
        assert len(errors) == len(CORPUS)
        for case, error in zip(CORPUS, errors, strict=True):
            assert (error["code"], error["id"]) == ("bad_request", case.rid), case.name
            assert case.fragment in error["message"], (case.name, error["message"])
        reply = await good.subscribe("fuzz-ok", since="0-0")
        assert [m.data for m in reply.history] == [1] * len(CORPUS)
        assert (await client.subscribe("fuzz-corpus", since="0-0")).history == []
        assert client.connected
        assert await client.publish("fuzz-corpus", "ok")
        try:
            await client.subscribe("fuzz-corpus", since="18446744073709551615-0")  # the max
        except ServerError as exc:  # pragma: no cover - shown if it ever regresses
            raise AssertionError(f"the largest offset is an offset: {exc}") from exc
    finally:
        await client.close()
        await good.close()
