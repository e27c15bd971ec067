"""One load-tool WebSocket connection: a raw picows listener, cheap per frame.

`message` frames are counted on a bytes-prefix fast path (the gateway writes
``{"type":"message"`` first); JSON is decoded only for replies and, when a
scenario asks for delivery latency, for messages. Request latency is taken
from the send to the `on_ws_frame` callback of its reply, on one clock.

With ``compression`` the connection offers permessage-deflate (as browsers do)
and inflates compressed frames (RSV1), counting wire and inflated bytes.
`SocketIOConnection` is the same client speaking socket.io (Engine.IO 4 over a
WebSocket) to the benchmark's socket.io peers: the same requests as events with
acks, deliveries as ``message`` events.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable
from typing import Any, ClassVar

from picows import WSFrame, WSListener, WSMsgType, WSTransport

from wsfleet.loadtest.stats import RunStats

MESSAGE_PREFIX = b'{"type":"message"'
SOCKETIO_MESSAGE_PREFIX = b'42["message"'
"""A socket.io ``message`` event (Socket.IO EVENT packet inside an Engine.IO MESSAGE)."""
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
"""What the load tool offers with ``compression`` (what Chromium and Firefox send)."""
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_TEXT = WSMsgType.TEXT

JSONDict = dict[str, Any]
OnMessage = Callable[["LoadConnection", bytes], None]


class RequestError(Exception):
    """The server answered a request with an `error` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def now_ns() -> int:
    """Wall-clock nanoseconds: the timestamp embedded in published data (`t`)."""
    return time.time_ns()


def delivery_latency_s(payload: bytes, received_ns: int) -> float | None:
    """Publish-to-delivery seconds of a `message` frame.

    Uses the send timestamp the load tool embedded in the data (``data.t``, ns)
    when present, else the server's ``ts`` (ms); None when neither is usable.
    """
    try:
        msg = json.loads(payload)
    except ValueError:
        return None
    data = msg.get("data")
    if isinstance(data, dict):
        sent_ns = data.get("t")
        if isinstance(sent_ns, int):
            return (received_ns - sent_ns) / 1e9
    ts = msg.get("ts")
    if isinstance(ts, int | float):
        return (received_ns / 1e6 - float(ts)) / 1e3
    return None


class LoadConnection(WSListener):
    """A client connection that tracks its requests by id and counts deliveries."""

    message_prefix: ClassVar[bytes] = MESSAGE_PREFIX
    """How a delivery's payload starts (every other frame is a reply or an event)."""

    def __init__(self, stats: RunStats) -> None:
        super().__init__()
        self.stats = stats
        self.transport: WSTransport | None = None
        self.welcome: asyncio.Future[JSONDict] = asyncio.get_running_loop().create_future()
        self.on_message: OnMessage | None = None
        self.delivered = 0
        self.counted = False
        """True once the engine counted this connection as opened."""
        self.closing = False
        """True once the load tool itself decided to close it."""
        self.disconnected = False
        self.moved = False
        """True once the server asked it to move (a `reconnect` frame: the gateway drains).
        Send nothing new on it: it closes as soon as the replies still owed are in."""
        self.move_after_s = 0.0
        """The `reconnect` frame's ``after_ms``, in seconds: when to connect again."""
        self._pending: dict[int, tuple[str, float, asyncio.Future[JSONDict]]] = {}
        self._next_id = 1
        self.wire_bytes = 0
        """Payload bytes of compressed frames as they came off the wire (before inflating)."""
        self.inflated_bytes = 0
        """The same frames' bytes once inflated."""

    # picows callbacks -------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.closing:  # the load tool gave up on it during the handshake
            transport.disconnect(graceful=False)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # the hot path of fan-out figures: keep it to a prefix test and two increments
        if frame.msg_type is not _TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if frame.rsv1:
            payload = self._inflate(payload)
        if payload.startswith(self.message_prefix):
            self.delivered += 1
            self.stats.delivered += 1
            if self.on_message is not None:
                self.on_message(self, payload)
            return
        self._on_reply_frame(payload)

    def _inflate(self, payload: bytes) -> bytes:
        """A permessage-deflate message (no context takeover: each on its own)."""
        out = zlib.decompressobj(-15).decompress(payload + _DEFLATE_TAIL)
        self.wire_bytes += len(payload)
        self.inflated_bytes += len(out)
        return out

    def _on_reply_frame(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            self.stats.errors["bad_frame"] += 1
            return
        self._on_reply(msg, payload)

    def _on_reply(self, msg: object, payload: bytes) -> None:
        """A decoded frame other than a fast-path delivery: replies, welcome, errors."""
        if not isinstance(msg, dict):
            self.stats.errors["bad_frame"] += 1
            return
        kind = msg.get("type")
        if kind == "message":
            self._delivered(payload)
            return
        if kind == "welcome":
            if not self.welcome.done():
                self.welcome.set_result(msg)
            return
        if kind == "reconnect":  # its gateway drains: leave, as a real client does
            self.moved = True
            after_ms = msg.get("after_ms")
            self.move_after_s = after_ms / 1000.0 if isinstance(after_ms, int | float) else 0.0
            self._leave_when_answered()
            return
        req_id = msg.get("id")
        entry = self._pending.pop(req_id, None) if isinstance(req_id, int) else None
        if entry is None:
            if kind == "error":
                self.stats.errors[str(msg.get("code", "unknown"))] += 1
            return
        op, sent_at, future = entry
        self.stats.replies += 1
        if kind == "error":
            code = str(msg.get("code", "unknown"))
            self.stats.errors[code] += 1
            if not future.done():
                future.set_exception(RequestError(code, str(msg.get("message", ""))))
            if self.moved:
                self._leave_when_answered()
            return
        self.stats.latency(op).record(time.perf_counter() - sent_at)
        if kind == "published":
            self.stats.published += 1
        if not future.done():
            future.set_result(msg)
        if self.moved:
            self._leave_when_answered()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        if self.counted:
            self.stats.connection_closed(by_server=not self.closing)
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError("disconnected before welcome"))
        pending, self._pending = self._pending, {}
        for _op, _sent_at, future in pending.values():
            if not future.done():
                future.set_exception(ConnectionError("disconnected"))

    def _leave_when_answered(self) -> None:
        """After a `reconnect` frame: disconnect once no reply is owed any more (the users
        send nothing new on a moved connection, see `moved`)."""
        if not self._pending and self.transport is not None and not self.disconnected:
            self.transport.disconnect(graceful=False)

    # requests ----------------------------------------------------------------

    def _delivered(self, payload: bytes) -> None:
        self.delivered += 1
        self.stats.delivered += 1
        if self.on_message is not None:
            self.on_message(self, payload)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def request(self, op: str, fields: JSONDict) -> asyncio.Future[JSONDict]:
        """Send one request; the future resolves with its reply (or RequestError)."""
        future: asyncio.Future[JSONDict] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.disconnected:
            future.set_exception(ConnectionError("not connected"))
            return future
        req_id = self._next_id
        self._next_id += 1
        self._pending[req_id] = (op, time.perf_counter(), future)
        self.stats.sent += 1
        self.transport.send(WSMsgType.TEXT, self._encode_request(req_id, op, fields))
        return future

    def _encode_request(self, req_id: int, op: str, fields: JSONDict) -> bytes:
        frame = json.dumps({"id": req_id, "op": op, **fields}, separators=(",", ":"))
        return frame.encode()

    def forget(self, future: asyncio.Future[JSONDict]) -> None:
        """Drop a request that timed out, so a late reply is not timed."""
        for req_id, (_op, _sent_at, pending) in list(self._pending.items()):
            if pending is future:
                del self._pending[req_id]
                return

    def close(self) -> None:
        """Close from our side (not counted as a server-side close)."""
        self.closing = True
        if self.transport is not None and not self.disconnected:
            self.transport.disconnect(graceful=False)


class SocketIOConnection(LoadConnection):
    """The load tool's connection speaking socket.io to the benchmark's socket.io peers.

    Engine.IO 4 over a WebSocket (``/socket.io/?EIO=4&transport=websocket``): the
    server's open packet (``0{...}``) is answered with a namespace connect (``40``),
    whose reply (``40{...}``) counts as the `welcome`; pings (``2``) get pongs (``3``).
    A request is an event with an ack (``42<id>["<op>",{request}]``), its reply the ack
    (``43<id>[{reply}]``, the peer answers with wire protocol v1 objects); a delivery is
    a ``message`` event, counted on a prefix test as `LoadConnection` counts its own.
    """

    message_prefix = SOCKETIO_MESSAGE_PREFIX

    def _on_reply_frame(self, payload: bytes) -> None:
        transport = self.transport
        assert transport is not None
        head = payload[:2]
        if head == b"43":  # an ack: 43<id>[reply]
            start = payload.index(b"[")
            try:
                args = json.loads(payload[start:])
            except ValueError:
                self.stats.errors["bad_frame"] += 1
                return
            reply = args[0] if isinstance(args, list) and args else None
            if isinstance(reply, dict) and "id" not in reply:
                reply["id"] = int(payload[2:start])
            self._on_reply(reply, payload)
        elif head == b"40":
            if not self.welcome.done():
                self.welcome.set_result({"type": "welcome", "socketio": payload[2:].decode()})
        elif head[:1] == b"0":  # Engine.IO open: join the default namespace
            transport.send(_TEXT, b"40")
        elif head[:1] == b"2":  # Engine.IO ping
            transport.send(_TEXT, b"3")
        elif head == b"44":
            self.stats.errors["socketio_connect_error"] += 1
        elif head == b"41":
            transport.disconnect(graceful=False)

    def _encode_request(self, req_id: int, op: str, fields: JSONDict) -> bytes:
        body = json.dumps([op, {"id": req_id, "op": op, **fields}], separators=(",", ":"))
        return b"42%d%s" % (req_id, body.encode())


def connection_class(url: str) -> type[LoadConnection]:
    """The connection for `url`: socket.io for a ``/socket.io/`` path, else wire protocol v1."""
    return SocketIOConnection if "/socket.io/" in url else LoadConnection
