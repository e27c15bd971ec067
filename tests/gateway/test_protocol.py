"""The wire protocol's pure core: parsing client frames, encoding server frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.broker import Delivery, History
from wsfleet_gateway.protocol import (
    BAD_REQUEST,
    ERROR_CODES,
    Ping,
    ProtocolError,
    Publish,
    Subscribe,
    Switch,
    Unsubscribe,
    encode_error,
    encode_pong,
    encode_published,
    encode_reconnect,
    encode_subscribed,
    encode_unsubscribed,
    encode_welcome,
    is_server_only,
    parse_request,
    validate_channel,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
channels = st.from_regex(r"\$?[A-Za-z0-9._:@/=+\-]{1,40}", fullmatch=True)
ids = st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=64)
offsets = st.builds(lambda ms, seq: f"{ms}-{seq}", st.integers(0, 2**48), st.integers(0, 2**20))


def _not_json(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def _parse(obj: Any) -> Any:
    return parse_request(json.dumps(obj))


def test_parses_every_op() -> None:
    assert _parse({"id": 1, "op": "subscribe", "channel": "a"}) == Subscribe(1, "a", None)
    assert _parse({"id": "x", "op": "subscribe", "channel": "a", "since": "5-1"}) == Subscribe(
        "x", "a", "5-1"
    )
    assert _parse({"id": 2, "op": "unsubscribe", "channel": "a"}) == Unsubscribe(2, "a")
    assert _parse({"id": 3, "op": "switch", "from": "a", "to": "b"}) == Switch(3, "a", "b", None)
    assert _parse({"id": 4, "op": "publish", "channel": "a", "data": {"k": [1, "é"]}}) == Publish(
        4, "a", '{"k":[1,"é"]}'
    )
    assert _parse({"id": 5, "op": "ping"}) == Ping(5)


@pytest.mark.parametrize(
    ("frame", "fragment", "rid"),
    [
        ("{not json", "not valid JSON", None),
        ("[1, 2]", "JSON object", None),
        ('{"op": "ping"}', "`id`", None),
        ('{"id": true, "op": "ping"}', "`id`", None),
        ('{"id": 1.5, "op": "ping"}', "`id`", None),
        ('{"id": 9007199254740993, "op": "ping"}', "out of range", None),
        ('{"id": "' + "x" * 65 + '", "op": "ping"}', "longer", None),
        ('{"id": 1}', "missing field `op`", 1),
        ('{"id": 1, "op": "fly"}', "unknown op", 1),
        ('{"id": 1, "op": 7}', "unknown op", 1),
        ('{"id": 1, "op": "subscribe"}', "missing field `channel`", 1),
        ('{"id": 1, "op": "subscribe", "channel": 5}', "must be a string", 1),
        ('{"id": 1, "op": "subscribe", "channel": ""}', "1-128", 1),
        ('{"id": 1, "op": "subscribe", "channel": "a b"}', "1-128", 1),
        ('{"id": 1, "op": "subscribe", "channel": "{a}"}', "1-128", 1),
        ('{"id": 1, "op": "subscribe", "channel": "a*"}', "1-128", 1),
        ('{"id": 1, "op": "subscribe", "channel": "a", "since": 5}', "offset string", 1),
        ('{"id": 1, "op": "subscribe", "channel": "a", "since": "x-1"}', "not an offset", 1),
        ('{"id": 1, "op": "switch", "to": "b"}', "missing field `from`", 1),
        ('{"id": 1, "op": "switch", "from": "a"}', "missing field `to`", 1),
        ('{"id": 1, "op": "publish", "channel": "a"}', "missing field `data`", 1),
        ('{"id": 1, "op": "publish", "channel": "a", "data": NaN}', "not valid JSON", None),
        (b"\xff\xfe\x00", "not valid UTF-8", None),
        ("[" * 100_000, "nested too deeply", None),
        # issue 17: what has no UTF-8 or JSON form on the way out is refused on the way in
        (b'{"id": 1, "op": "ping", "x": "\xed\xa0\x80"}', "not valid UTF-8", None),
        (b'{"id": 1, "op": "ping"}\xc3', "not valid UTF-8", None),
        ('{"id": "\\ud800", "op": "ping"}', "lone surrogate", None),
        ('{"id": 1, "op": "publish", "channel": "a", "data": "\\ud800"}', "lone surrogate", 1),
        ('{"id": 1, "op": "publish", "channel": "a", "data": {"\\udfff": 1}}', "surrogate", 1),
        ('{"id": 1, "op": "publish", "channel": "a", "data": ["a\\udc00b"]}', "surrogate", 1),
        ('{"id": 1, "op": "publish", "channel": "a", "data": 1e999}', "not finite", 1),
        ('{"id": 1, "op": "publish", "channel": "a", "data": [-1e400]}', "not finite", 1),
        ('{"id": 1, "op": "publish", "channel": "a", "data": Infinity}', "not valid JSON", None),
        ('{"id": 1, "op": "publish", "channel": "a", "data": -Infinity}', "not valid JSON", None),
        (
            '{"id": 1, "op": "subscribe", "channel": "a", "since": "18446744073709551616-0"}',
            "not an offset",
            1,
        ),
        (
            '{"id": 1, "op": "subscribe", "channel": "a", "since": "0-18446744073709551616"}',
            "not an offset",
            1,
        ),
        (
            '{"id": 1, "op": "switch", "from": "a", "to": "b", "since": "9' + "9" * 22 + '-0"}',
            "not an offset",
            1,
        ),
        ('{"id": 1, "op": "subscribe", "channel": "a", "since": "\\u00b2-0"}', "not an offset", 1),
        ('{"id": 1, "op": "subscribe", "channel": "a", "since": "\\u0661-0"}', "not an offset", 1),
    ],
)
def test_rejects_bad_frames(frame: str | bytes, fragment: str, rid: int | None) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(frame)
    assert info.value.code == BAD_REQUEST
    assert fragment in info.value.message
    assert info.value.request_id == rid


def test_channel_names() -> None:
    assert validate_channel("wedding-42:photos/day1") == "wedding-42:photos/day1"
    assert validate_channel("$system") == "$system"
    assert validate_channel("a" * 128)
    for bad in ("a" * 129, "$", "a$b", "é", "a\n", "x{y}", "[a]"):
        with pytest.raises(ValueError, match="channel"):
            validate_channel(bad)
    assert is_server_only("$system")
    assert not is_server_only("system$")


@given(rid=ids, channel=channels, since=st.none() | offsets, data=json_values)
def test_valid_requests_round_trip(rid: Any, channel: str, since: str | None, data: Any) -> None:
    assert _parse({"id": rid, "op": "subscribe", "channel": channel, "since": since}) == Subscribe(
        rid, channel, since
    )
    published = _parse({"id": rid, "op": "publish", "channel": channel, "data": data})
    assert isinstance(published, Publish)
    assert json.loads(published.data_json) == data
    switch = _parse({"id": rid, "op": "switch", "from": channel, "to": channel, "since": since})
    assert switch == Switch(rid, channel, channel, since)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_parse_or_fail_cleanly(frame: bytes) -> None:
    error: ProtocolError | None = None
    try:
        request = parse_request(frame)
    except ProtocolError as exc:
        error = exc
    if error is not None:
        assert error.code in ERROR_CODES
        assert encode_error(error.request_id, error.code, error.message)
    else:
        assert isinstance(request, Subscribe | Unsubscribe | Switch | Publish | Ping)
        assert encode_pong(request.id, 1)  # whatever parses can be answered
        if isinstance(request, Publish):
            json.loads(request.data_json, parse_constant=_not_json)  # JSON: no NaN, Infinity
            request.data_json.encode()


@given(
    st.dictionaries(
        st.sampled_from(["id", "op", "channel", "from", "to", "since", "data", "x"]),
        json_values | st.sampled_from(["subscribe", "switch", "publish", "ping", "unsubscribe"]),
    )
)
def test_arbitrary_objects_parse_or_fail_cleanly(obj: dict[str, Any]) -> None:
    code = BAD_REQUEST
    try:
        _parse(obj)
    except ProtocolError as exc:
        code = exc.code
    assert code == BAD_REQUEST


@given(rid=st.none() | ids, message=st.text(max_size=50), channel=channels, data=json_values)
def test_server_frames_are_json(rid: Any, message: str, channel: str, data: Any) -> None:
    data_json = json.dumps(data)
    delivery = Delivery(channel, "17-3", data_json, 17)
    assert json.loads(encode_error(rid, "forbidden", message)) == {
        "type": "error",
        "id": rid,
        "code": "forbidden",
        "message": message,
    }
    assert json.loads(delivery.message_frame()) == {
        "type": "message",
        "channel": channel,
        "offset": "17-3",
        "ts": 17,
        "data": data,
    }
    if rid is None:
        return
    history = History([delivery], "17-3", False)
    subscribed = json.loads(encode_subscribed(rid, channel, history, '{"m":1}'))
    assert subscribed == {
        "type": "subscribed",
        "id": rid,
        "channel": channel,
        "offset": "17-3",
        "recovered": False,
        "meta": {"m": 1},
        "history": [{"channel": channel, "offset": "17-3", "ts": 17, "data": data}],
    }
    switched = json.loads(encode_subscribed(rid, channel, history, "{}", from_="old"))
    assert switched["type"] == "switched"
    assert switched["from"] == "old"
    assert json.loads(encode_published(rid, channel, "1-0")) == {
        "type": "published",
        "id": rid,
        "channel": channel,
        "offset": "1-0",
    }
    assert json.loads(encode_unsubscribed(rid, channel))["channel"] == channel
    assert json.loads(encode_pong(rid, 5)) == {"type": "pong", "id": rid, "ts": 5}


def test_welcome_and_reconnect_frames() -> None:
    welcome = json.loads(encode_welcome("n-1", "n", {"max_message_bytes": 10}))
    assert welcome == {
        "type": "welcome",
        "version": 1,
        "connection_id": "n-1",
        "node": "n",
        "limits": {"max_message_bytes": 10},
    }
    assert json.loads(encode_reconnect(250, {"a": "1-0"})) == {
        "type": "reconnect",
        "after_ms": 250,
        "resume": {"a": "1-0"},
    }
