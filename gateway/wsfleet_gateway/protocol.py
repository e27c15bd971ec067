"""Wire protocol v1: parse client frames, encode server frames. Pure, no I/O.

Client → server: JSON text frames, each an object with ``id`` (string or
integer, echoed in the reply) and ``op``: ``subscribe``, ``unsubscribe``,
``switch``, ``publish``, ``ping``, ``presence``, ``presence_stats``. Server → client
frames carry ``type``: ``welcome``, ``subscribed``, ``unsubscribed``, ``switched``,
``published``, ``pong``, ``presence``, ``presence_stats``, ``message``, ``join``,
``leave``, ``error``, ``reconnect`` (the presence frames are encoded in
``presence.py``). See ``docs/protocol.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from wsfleet_gateway.broker import (
    BadRequestError,
    Delivery,
    History,
    InvalidOffsetError,
    JSONValue,
    check_text,
    encode_data,
    encode_json,
    parse_offset,
)

PROTOCOL_VERSION: Final = 1

# Error codes (the `code` of an `error` frame).
BAD_REQUEST: Final = "bad_request"
FORBIDDEN: Final = "forbidden"
QUOTA_EXCEEDED: Final = "quota_exceeded"
RATE_LIMITED: Final = "rate_limited"
NOT_SUBSCRIBED: Final = "not_subscribed"
UNAVAILABLE: Final = "unavailable"
TOO_LARGE: Final = "too_large"
ERROR_CODES: Final = frozenset(
    {BAD_REQUEST, FORBIDDEN, QUOTA_EXCEEDED, RATE_LIMITED, NOT_SUBSCRIBED, UNAVAILABLE, TOO_LARGE}
)

MAX_CHANNEL_LEN: Final = 128
MAX_ID_LEN: Final = 64
# A channel: letters, digits and ``. _ - : @ / = +``; a leading ``$`` marks a
# server-only channel. No braces (keys use ``{channel}`` as a Redis hash tag),
# no glob characters (JWT ``channels`` claims are glob patterns).
CHANNEL_RE: Final = re.compile(r"\$?[A-Za-z0-9._:@/=+\-]{1,128}")

RequestId = str | int

_DUMPS = encode_json


class ProtocolError(Exception):
    """A request the server answers with an `error` frame."""

    def __init__(self, code: str, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: RequestId
    channel: str
    since: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: RequestId
    channel: str


@dataclass(frozen=True, slots=True)
class Switch:
    id: RequestId
    from_: str
    to: str
    since: str | None


@dataclass(frozen=True, slots=True)
class Publish:
    id: RequestId
    channel: str
    data_json: str
    """The message data re-encoded as compact JSON text."""


@dataclass(frozen=True, slots=True)
class Ping:
    id: RequestId


@dataclass(frozen=True, slots=True)
class Presence:
    """``presence``: the channel's members (``presence_stats``: `stats`, their counts)."""

    id: RequestId
    channel: str
    stats: bool = False


Request = Subscribe | Unsubscribe | Switch | Publish | Ping | Presence


def is_server_only(channel: str) -> bool:
    """Channels starting with ``$`` accept subscribers but no client publishes."""
    return channel.startswith("$")


def validate_channel(value: object, field: str = "channel") -> str:
    """A valid channel name or `ValueError` with a message for the client."""
    if not isinstance(value, str):
        raise ValueError(f"`{field}` must be a string")
    if CHANNEL_RE.fullmatch(value) is None:
        raise ValueError(
            f"`{field}` must be 1-{MAX_CHANNEL_LEN} characters of A-Z a-z 0-9 . _ - : @ / = +"
            " (optionally after a leading $)"
        )
    return value


def _request_id(obj: Mapping[str, Any]) -> RequestId:
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise ProtocolError(BAD_REQUEST, "every request needs an `id` (string or integer)")
    if isinstance(rid, str):
        if len(rid) > MAX_ID_LEN:
            raise ProtocolError(BAD_REQUEST, f"`id` longer than {MAX_ID_LEN} characters")
        try:
            check_text(rid, "`id`")  # echoed in the reply: it must have a UTF-8 form
        except BadRequestError as exc:
            raise ProtocolError(BAD_REQUEST, str(exc)) from None
    if isinstance(rid, int) and not -(2**53) < rid < 2**53:
        raise ProtocolError(BAD_REQUEST, "integer `id` out of range (|id| < 2**53)")
    return rid


def _channel(obj: Mapping[str, Any], field: str, rid: RequestId) -> str:
    if field not in obj:
        raise ProtocolError(BAD_REQUEST, f"missing field `{field}`", rid)
    try:
        return validate_channel(obj[field], field)
    except ValueError as exc:
        raise ProtocolError(BAD_REQUEST, str(exc), rid) from None


def _since(obj: Mapping[str, Any], rid: RequestId) -> str | None:
    since = obj.get("since")
    if since is None:
        return None
    if not isinstance(since, str):
        raise ProtocolError(BAD_REQUEST, "`since` must be an offset string", rid)
    try:
        parse_offset(since)
    except InvalidOffsetError:
        raise ProtocolError(BAD_REQUEST, f"`since` is not an offset: {since[:50]!r}", rid) from None
    return since


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


decode_strict_json: Callable[[str], Any] = json.JSONDecoder(parse_constant=_reject_constant).decode
"""`json.loads` refusing ``NaN`` and ``Infinity``, built once: ``json.loads`` with any
keyword builds a decoder and its scanner per call (most of a request's parse cost)."""


def parse_request(text: str | bytes) -> Request:
    """One client frame → a typed request, or `ProtocolError` (with the id when known).

    Refused with `bad_request` before anything else sees it: a frame that is not UTF-8
    (strictly: no encoded surrogates either), not JSON (``NaN``, ``Infinity`` included),
    nested too deeply to parse; a string `id` or any part of a publish's `data` holding
    a lone surrogate (``"\\ud800"`` parses to one: it has no UTF-8 form, so no frame and
    no Redis command could carry it); a number in `data` that is not finite (``1e999``);
    a `since` that is no offset (both parts ASCII digits below 2^64).
    """
    try:
        if not isinstance(text, str):
            text = text.decode()  # strict: json.loads(bytes) would pass surrogates through
        obj = decode_strict_json(text)
    except UnicodeDecodeError:
        raise ProtocolError(BAD_REQUEST, "frame is not valid UTF-8") from None
    except RecursionError:
        raise ProtocolError(BAD_REQUEST, "frame is nested too deeply") from None
    except ValueError:
        raise ProtocolError(BAD_REQUEST, "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_REQUEST, "a request must be a JSON object")
    rid = _request_id(obj)
    op = obj.get("op")
    if op == "subscribe":
        return Subscribe(rid, _channel(obj, "channel", rid), _since(obj, rid))
    if op == "unsubscribe":
        return Unsubscribe(rid, _channel(obj, "channel", rid))
    if op == "switch":
        return Switch(rid, _channel(obj, "from", rid), _channel(obj, "to", rid), _since(obj, rid))
    if op == "publish":
        channel = _channel(obj, "channel", rid)
        if "data" not in obj:
            raise ProtocolError(BAD_REQUEST, "missing field `data`", rid)
        try:
            data_json = encode_data(obj["data"])
        except BadRequestError as exc:
            raise ProtocolError(BAD_REQUEST, str(exc), rid) from None
        return Publish(rid, channel, data_json)
    if op == "ping":
        return Ping(rid)
    if op == "presence" or op == "presence_stats":
        return Presence(rid, _channel(obj, "channel", rid), stats=op == "presence_stats")
    if op is None:
        raise ProtocolError(BAD_REQUEST, "missing field `op`", rid)
    shown = op[:40] if isinstance(op, str) else type(op).__name__
    raise ProtocolError(BAD_REQUEST, f"unknown op {shown!r}", rid)


# --- server frames -------------------------------------------------------------


def _id_json(rid: RequestId | None) -> str:
    return "null" if rid is None else _DUMPS(rid)


def encode_error(rid: RequestId | None, code: str, message: str) -> bytes:
    return (
        f'{{"type":"error","id":{_id_json(rid)},"code":"{code}","message":{_DUMPS(message)}}}'
    ).encode()


def encode_welcome(connection_id: str, node: str, limits: Mapping[str, JSONValue]) -> bytes:
    return _DUMPS(
        {
            "type": "welcome",
            "version": PROTOCOL_VERSION,
            "connection_id": connection_id,
            "node": node,
            "limits": dict(limits),
        }
    ).encode()


def encode_history_entry(d: Delivery) -> str:
    """One history entry: the `message` frame's fields without ``type``."""
    return (
        f'{{"channel":{_DUMPS(d.channel)},"offset":"{d.offset}","ts":{d.ts_ms},'
        f'"data":{d.data_json}}}'
    )


def _encode_history(messages: Iterable[Delivery]) -> str:
    return "[" + ",".join(encode_history_entry(d) for d in messages) + "]"


def encode_subscribed(
    rid: RequestId,
    channel: str,
    history: History,
    meta_json: str,
    from_: str | None = None,
) -> bytes:
    """`subscribed` (or `switched` when `from_` is given) with history and meta."""
    head = '{"type":"subscribed"' if from_ is None else '{"type":"switched"'
    from_part = "" if from_ is None else f',"from":{_DUMPS(from_)}'
    return (
        f'{head},"id":{_id_json(rid)}{from_part},"channel":{_DUMPS(channel)},'
        f'"offset":"{history.offset}","recovered":{"true" if history.recovered else "false"},'
        f'"meta":{meta_json},"history":{_encode_history(history.messages)}}}'
    ).encode()


def encode_unsubscribed(rid: RequestId, channel: str) -> bytes:
    return f'{{"type":"unsubscribed","id":{_id_json(rid)},"channel":{_DUMPS(channel)}}}'.encode()


def encode_published(rid: RequestId, channel: str, offset: str) -> bytes:
    return (
        f'{{"type":"published","id":{_id_json(rid)},"channel":{_DUMPS(channel)},'
        f'"offset":"{offset}"}}'
    ).encode()


def encode_pong(rid: RequestId, ts_ms: int) -> bytes:
    return f'{{"type":"pong","id":{_id_json(rid)},"ts":{ts_ms}}}'.encode()


def encode_reconnect(after_ms: int, resume: Mapping[str, str]) -> bytes:
    return _DUMPS({"type": "reconnect", "after_ms": after_ms, "resume": dict(resume)}).encode()
