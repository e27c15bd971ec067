"""One load-tool WebSocket connection: a raw picows listener, cheap per frame.

`message` frames are counted on a bytes-prefix fast path (the gateway writes
``{"type":"message"`` first); JSON is decoded only for replies and, when a
scenario asks for delivery latency, for messages. Request latency is taken
from the send to the `on_ws_frame` callback of its reply, on one clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport

from wsfleet.loadtest.stats import RunStats

MESSAGE_PREFIX = b'{"type":"message"'
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
        if payload.startswith(MESSAGE_PREFIX):
            self.delivered += 1
            self.stats.delivered += 1
            if self.on_message is not None:
                self.on_message(self, payload)
            return
        try:
            msg = json.loads(payload)
        except ValueError:
            self.stats.errors["bad_frame"] += 1
            return
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
        frame = json.dumps({"id": req_id, "op": op, **fields}, separators=(",", ":"))
        self._pending[req_id] = (op, time.perf_counter(), future)
        self.stats.sent += 1
        self.transport.send(WSMsgType.TEXT, frame.encode())
        return future

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
