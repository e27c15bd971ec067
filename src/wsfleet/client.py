"""A small typed asyncio client for the wsfleet wire protocol v1 (picows).

    client = await Client.connect("ws://127.0.0.1:8080/ws")
    reply = await client.subscribe("wedding-42")        # SubscribeReply
    offset = await client.publish("wedding-42", {"text": "hi"})
    async for message in client.messages():             # Message
        ...
    await client.reconnect()   # resubscribes with since = last offsets, no duplicates
    members = await client.presence("wedding-42")       # [PresenceMember]
    stats = await client.presence_stats("wedding-42")   # PresenceStats
    event = await client.next_presence_event()          # PresenceEvent (join/leave)
    await client.close()

Every message is delivered once: the client remembers the last offset per
channel (`offsets`) and drops anything at or below it. A server `reconnect`
frame (gateway draining) makes the client reconnect after ``after_ms`` and
resume every channel from its last offset. Server errors raise `ServerError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from picows import WSFrame, WSHandshakeError, WSListener, WSMsgType, WSTransport, ws_connect
from wsfleet_gateway.broker import InvalidOffsetError, parse_offset
from wsfleet_gateway.deflate import EXTENSION, inflate

DEFAULT_TIMEOUT_S: Final = 10.0
RECONNECT_ATTEMPTS: Final = 10
"""Tries after a server `reconnect` frame (backoff 50 ms doubling, capped at 1 s)."""


class ServerError(Exception):
    """The server answered a request with an `error` frame."""

    def __init__(self, code: str, message: str, request_id: str | int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class ConnectionClosedError(ConnectionError):
    """The connection is gone (`code`/`reason`: the server's close frame, if any)."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class HandshakeRefusedError(ConnectionClosedError):
    """The server refused the WebSocket upgrade (`status`: 503 while draining, 404...)."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(None, reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Message:
    """One channel message."""

    channel: str
    offset: str
    data: Any
    ts: int
    """Publish time, milliseconds since the epoch."""


@dataclass(frozen=True, slots=True)
class Welcome:
    connection_id: str
    node: str
    limits: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class SubscribeReply:
    """The `subscribed` or `switched` reply."""

    channel: str
    offset: str
    """The channel's latest offset when the reply was made."""
    meta: dict[str, Any]
    history: list[Message]
    recovered: bool
    from_: str | None = None
    """The channel left by a switch (None for a subscribe)."""


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """One connection on a channel (a `presence` reply's member, or an event's)."""

    user: str
    connection_id: str
    node: str
    joined_at: int
    """Join time, milliseconds since the epoch."""


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """The `presence_stats` reply."""

    channel: str
    connections: int
    users: int
    """Distinct users."""


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A `join` or `leave` event (channels the server sends them for)."""

    kind: str
    """``join`` or ``leave``."""
    channel: str
    member: PresenceMember


def _member(obj: Mapping[str, Any]) -> PresenceMember:
    return PresenceMember(
        str(obj["user"]), str(obj["connection_id"]), str(obj["node"]), int(obj["joined_at"])
    )


def _message(obj: Mapping[str, Any]) -> Message:
    return Message(obj["channel"], obj["offset"], obj.get("data"), obj.get("ts", 0))


def _reply(obj: Mapping[str, Any]) -> SubscribeReply:
    return SubscribeReply(
        channel=obj["channel"],
        offset=obj["offset"],
        meta=obj.get("meta") or {},
        history=[_message(m) for m in obj.get("history", ())],
        recovered=bool(obj.get("recovered", True)),
        from_=obj.get("from"),
    )


def _key(offset: str) -> tuple[int, int]:
    try:
        return parse_offset(offset)
    except InvalidOffsetError:
        return (0, 0)


MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""Largest message the client reads (a frame, or a compressed one inflated)."""


class _Listener(WSListener):
    def __init__(self, client: Client, welcome: asyncio.Future[Welcome]) -> None:
        self.client = client
        self.welcome = welcome
        self.close_code: int | None = None
        self.close_reason = ""
        self.abandoned = False
        """The connect that made this listener was cancelled: hang up once connected."""
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        # picows shields its handshake: a cancelled connect still completes it, with no
        # one left to hold the connection unless it closes itself here
        self.transport = transport
        if self.abandoned:
            transport.disconnect(graceful=False)

    def abandon(self) -> None:
        """The connect was cancelled: hang up now if connected, else as soon as it is."""
        self.abandoned = True
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if frame.rsv1:  # permessage-deflate (only ever offered, never sent by us)
                payload = inflate(payload, MAX_MESSAGE_BYTES)
            self.client._on_text(self, payload)
        elif frame.msg_type is WSMsgType.CLOSE:
            code: Any = frame.get_close_code()
            self.close_code = int(getattr(code, "value", code))
            self.close_reason = frame.get_close_reason() or ""
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.client._on_disconnected(self)


@dataclass
class _Connection:
    transport: WSTransport
    listener: _Listener


class Client:
    """One logical client session, surviving reconnects (see the module docstring)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        follow_reconnect: bool = True,
        read_buffer_bytes: int = 4096,
        record_frames: bool = False,
        compression: bool = True,
    ) -> None:
        self.url = url
        self.compression = compression
        """Offer permessage-deflate (the gateway then compresses messages from 256 bytes)."""
        self.compressed = False
        """The current connection negotiated permessage-deflate."""
        self.token = token
        self.timeout_s = timeout_s
        self.follow_reconnect = follow_reconnect
        self.read_buffer_bytes = read_buffer_bytes
        self.offsets: dict[str, str] = {}
        """Channel → last offset received (the `since` of the next resume)."""
        self.channels: set[str] = set()
        """Channels currently subscribed."""
        self.welcome: Welcome | None = None
        self.reconnects = 0
        """Completed reconnects (manual or server-requested)."""
        self.errors: asyncio.Queue[ServerError] = asyncio.Queue()
        """`error` frames that answer no pending request (e.g. malformed frames)."""
        self.presence_events: asyncio.Queue[PresenceEvent] = asyncio.Queue()
        """`join` and `leave` events, in arrival order."""
        self._keys: dict[str, tuple[int, int]] = {}
        self._queue: asyncio.Queue[Message | ConnectionClosedError] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._resuming: set[int] = set()
        """Request ids of resubscribes whose reply history joins `messages()`."""
        self._ids = itertools.count(1)
        self._conn: _Connection | None = None
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.close_code: int | None = None
        """The close code of the last connection the server closed."""
        self.frame_log: list[dict[str, Any]] | None = [] if record_frames else None
        """Every server frame in arrival order (with ``record_frames=True``)."""

    # --- connection ----------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str, token: str | None = None, **kwargs: Any) -> Client:
        """Open a connection and wait for the server's `welcome`."""
        client = cls(url, token, **kwargs)
        await client._open(url)
        return client

    async def _open(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.compression:
            headers["Sec-WebSocket-Extensions"] = f"{EXTENSION}; client_max_window_bits"
        welcome: asyncio.Future[Welcome] = loop.create_future()
        listener_holder: list[_Listener] = []
        abandoned = False

        def factory() -> _Listener:
            listener = _Listener(self, welcome)
            listener.abandoned = abandoned
            listener_holder.append(listener)
            return listener

        try:
            transport, _ = await ws_connect(
                factory,
                url,
                extra_headers=headers,
                websocket_handshake_timeout=self.timeout_s,
                read_buffer_init_size=self.read_buffer_bytes,
                max_frame_size=MAX_MESSAGE_BYTES,
            )
        except asyncio.CancelledError:
            abandoned = True
            for listener in listener_holder:
                listener.abandon()
            raise
        except WSHandshakeError as exc:
            status = int(exc.response.status) if exc.response is not None else None
            raise HandshakeRefusedError(status, f"upgrade refused ({status}): {exc}") from exc
        if not listener_holder:  # the server hung up during the handshake
            transport.disconnect(graceful=False)
            raise ConnectionClosedError(None, "connection lost during the handshake")
        self._conn = _Connection(transport, listener_holder[0])
        self.url = url
        agreed = transport.response.headers.get("sec-websocket-extensions") or ""
        self.compressed = agreed.strip().lower().startswith(EXTENSION)
        try:
            async with asyncio.timeout(self.timeout_s):
                self.welcome = await welcome
        except BaseException:
            transport.disconnect(graceful=False)
            raise

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.transport.is_disconnected

    async def close(self) -> None:
        """Close the connection (1000) and end `messages()`."""
        self._closing = True
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])  # a cancel of close()'s caller is raised, not swallowed
        await self._drop_connection()
        self._queue.put_nowait(ConnectionClosedError(1000, "closed by client"))

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        transport = conn.transport
        if not transport.is_disconnected:
            transport.send_close()
            transport.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout_s):
                    await transport.wait_disconnected()
        self._fail_pending(ConnectionClosedError(1000, "closed by client"))

    async def reconnect(self, url: str | None = None, resume: Mapping[str, str] = {}) -> None:
        """Connect again and resubscribe every channel from its last offset.

        Messages missed in between arrive through `messages()`, none twice.
        `resume`: offsets to use for channels this client has none for.
        """
        async with self._lock:
            await self._drop_connection()
            await self._open(url or self.url)
            for channel in sorted(self.channels):
                since = self.offsets.get(channel) or resume.get(channel)
                payload = {"op": "subscribe", "channel": channel, "since": since}
                await self._request(payload, resuming=True)  # history: see `_joined`
            self.reconnects += 1

    def _schedule_reconnect(self, after_ms: int, resume: Mapping[str, str]) -> None:
        if self._closing or (self._reconnect_task is not None and not self._reconnect_task.done()):
            return

        async def later() -> None:
            await asyncio.sleep(after_ms / 1000)
            for attempt in range(RECONNECT_ATTEMPTS):
                try:
                    await self.reconnect(resume=resume)
                    return
                except Exception:  # refused (503 while draining), reset, timeout...
                    await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
            self._queue.put_nowait(ConnectionClosedError(None, "reconnect failed"))

        self._reconnect_task = asyncio.get_running_loop().create_task(later())

    # --- requests ------------------------------------------------------------------

    async def _request(self, payload: dict[str, Any], *, resuming: bool = False) -> dict[str, Any]:
        conn = self._conn
        if conn is None or conn.transport.is_disconnected:
            raise ConnectionClosedError(self.close_code, "not connected")
        rid = next(self._ids)
        payload["id"] = rid
        # NaN and Infinity are refused here (ValueError): the server would answer "not valid
        # JSON" without the request id, so the request would wait out its timeout
        frame = json.dumps(payload, allow_nan=False).encode()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        if resuming:
            self._resuming.add(rid)
        conn.transport.send(WSMsgType.TEXT, frame)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await future
        finally:
            self._pending.pop(rid, None)
            self._resuming.discard(rid)

    async def subscribe(self, channel: str, since: str | None = None) -> SubscribeReply:
        """Join `channel`; the reply carries meta, recent history (or all after `since`)."""
        payload: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if since is not None:
            payload["since"] = since
        reply = _reply(await self._request(payload))  # offsets: set by `_joined`
        self.channels.add(channel)
        return reply

    async def unsubscribe(self, channel: str) -> None:
        await self._request({"op": "unsubscribe", "channel": channel})
        self.channels.discard(channel)

    async def switch(self, from_: str, to: str, since: str | None = None) -> SubscribeReply:
        """Leave `from_` and join `to` in one round trip (no `from_` message after it)."""
        payload: dict[str, Any] = {"op": "switch", "from": from_, "to": to}
        if since is not None:
            payload["since"] = since
        self.channels.discard(from_)
        reply = _reply(await self._request(payload))  # offsets: set by `_joined`
        self.channels.add(to)
        return reply

    async def publish(self, channel: str, data: Any) -> str:
        """Publish `data` (any JSON value); returns the message's offset."""
        obj = await self._request({"op": "publish", "channel": channel, "data": data})
        offset: str = obj["offset"]
        return offset

    async def ping(self) -> float:
        """Application-level ping; returns the round trip in seconds."""
        started = time.perf_counter()
        await self._request({"op": "ping"})
        return time.perf_counter() - started

    async def presence(self, channel: str) -> list[PresenceMember]:
        """Who is on `channel` now (every gateway's connections), oldest join first."""
        obj = await self._request({"op": "presence", "channel": channel})
        return [_member(m) for m in obj.get("members", ())]

    async def presence_stats(self, channel: str) -> PresenceStats:
        """How many connections and distinct users are on `channel`."""
        obj = await self._request({"op": "presence_stats", "channel": channel})
        return PresenceStats(obj["channel"], int(obj["connections"]), int(obj["users"]))

    async def next_presence_event(self, timeout_s: float | None = None) -> PresenceEvent:
        """The next `join`/`leave` event (raises TimeoutError after `timeout_s`)."""
        async with asyncio.timeout(timeout_s if timeout_s is not None else self.timeout_s):
            return await self.presence_events.get()

    def send_raw(self, payload: bytes | str, binary: bool = False) -> None:
        """Send any frame as is (tests of malformed input)."""
        conn = self._conn
        if conn is None or conn.transport.is_disconnected:
            raise ConnectionClosedError(self.close_code, "not connected")
        data = payload.encode() if isinstance(payload, str) else payload
        conn.transport.send(WSMsgType.BINARY if binary else WSMsgType.TEXT, data)

    # --- messages ------------------------------------------------------------------

    async def messages(self) -> AsyncIterator[Message]:
        """Every message once, in order per channel, across reconnects.

        Ends after `close()`; raises `ConnectionClosedError` when the connection
        drops with no reconnect under way (call `reconnect()` and iterate again).
        """
        while True:
            item = await self._queue.get()
            if isinstance(item, ConnectionClosedError):
                if self._closing:
                    return
                raise item
            yield item

    async def next_message(self, timeout_s: float | None = None) -> Message:
        """The next message (raises TimeoutError after `timeout_s`)."""
        async with asyncio.timeout(timeout_s if timeout_s is not None else self.timeout_s):
            item = await self._queue.get()
        if isinstance(item, ConnectionClosedError):
            raise item
        return item

    def pending_messages(self) -> int:
        """Messages received and not yet consumed."""
        return self._queue.qsize()

    def _set_offset(self, channel: str, offset: str) -> None:
        self.offsets[channel] = offset
        self._keys[channel] = _key(offset)

    def _joined(self, obj: Mapping[str, Any], resuming: bool) -> None:
        """A `subscribed`/`switched` reply, as it arrives: before any frame after it.

        The server sends a channel's live messages right after the reply; they are
        read (and accepted) before the awaiting request resumes, so the reply's
        history (for a resume) and offset must be taken here, not there, or the
        history would look older than those messages and be dropped.
        """
        reply = _reply(obj)
        if resuming:
            for message in reply.history:
                self._accept(message)
        self._set_offset(reply.channel, reply.offset)

    def _accept(self, message: Message) -> None:
        key = _key(message.offset)
        last = self._keys.get(message.channel)
        if last is not None and key <= last:
            return
        self._keys[message.channel] = key
        self.offsets[message.channel] = message.offset
        self._queue.put_nowait(message)

    # --- frames (called by the listener) -------------------------------------------

    def _on_text(self, listener: _Listener, payload: bytes) -> None:
        obj = json.loads(payload)
        if self.frame_log is not None:
            self.frame_log.append(obj)
        kind = obj.get("type")
        if kind == "message":
            self._accept(_message(obj))
            return
        if kind == "welcome":
            if not listener.welcome.done():
                listener.welcome.set_result(
                    Welcome(obj["connection_id"], obj["node"], obj["limits"], obj["version"])
                )
            return
        if kind == "reconnect":
            if self.follow_reconnect:
                self._schedule_reconnect(int(obj.get("after_ms", 0)), obj.get("resume") or {})
            return
        if kind in ("join", "leave"):
            member = obj.get("member")
            if isinstance(member, dict):
                self.presence_events.put_nowait(
                    PresenceEvent(kind, str(obj.get("channel")), _member(member))
                )
            return
        rid = obj.get("id")
        future = self._pending.get(rid) if isinstance(rid, int) else None
        if kind in ("subscribed", "switched") and future is not None and not future.done():
            self._joined(obj, rid in self._resuming)
        if kind == "error":
            error = ServerError(obj.get("code", ""), obj.get("message", ""), obj.get("id"))
            if future is not None and not future.done():
                future.set_exception(error)
            else:
                self.errors.put_nowait(error)
        elif future is not None and not future.done():
            future.set_result(obj)

    def _on_disconnected(self, listener: _Listener) -> None:
        conn = self._conn
        self.close_code = listener.close_code
        error = ConnectionClosedError(listener.close_code, listener.close_reason)
        if not listener.welcome.done():
            listener.welcome.set_exception(error)
        if conn is None or conn.listener is not listener:
            return  # an old connection, or one still opening
        self._fail_pending(error)
        reconnecting = self._reconnect_task is not None and not self._reconnect_task.done()
        if not self._closing and not reconnecting:
            self._queue.put_nowait(error)

    def _fail_pending(self, error: ConnectionClosedError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
