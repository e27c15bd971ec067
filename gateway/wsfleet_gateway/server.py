"""The public WebSocket listener on ``/ws`` (picows): parse, dispatch, send.

Thin by design: frames become `Session.receive` calls, the session writes
replies back through the transport. Text frames only (a binary frame gets a
``bad_request`` error); fragmented messages are reassembled up to
``max_message_bytes``; a bigger frame or message closes with 1009.
Heartbeat: one sweep task for all connections (no timer per connection):
after ``heartbeat_s`` without incoming data the server pings; a client that
stays silent (no pong either) for ``idle_timeout_s`` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from functools import partial
from typing import Any, cast

import structlog
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from wsfleet_gateway.auth import Authenticator, Principal, Unauthorized
from wsfleet_gateway.protocol import BAD_REQUEST, encode_welcome
from wsfleet_gateway.session import Session, SessionContext, next_connection_id

log = structlog.get_logger("wsfleet_gateway.server")

WS_PATH = "/ws"
CLOSE_UNAUTHORIZED = 4001
_TEXT = WSMsgType.TEXT
_monotonic = time.monotonic


class ConnectionListener(WSListener):
    """picows callbacks of one connection."""

    __slots__ = ("_fragments", "last_seen", "principal", "server", "session", "transport")

    def __init__(self, server: WsServer, principal: Principal | None) -> None:
        self.server = server
        self.last_seen = _monotonic()
        self.principal = principal
        self.session: Session | None = None
        self.transport: WSTransport | None = None
        self._fragments: bytearray | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        server = self.server
        if self.principal is None:
            server.ctx.hub.metrics.reject("unauthorized")
            transport.send_close(close_code(CLOSE_UNAUTHORIZED), b"unauthorized")
            transport.disconnect()
            return
        ctx = server.ctx
        session = Session(
            ctx,
            self.principal,
            partial(transport.send, _TEXT),
            next_connection_id(ctx.settings.node_name),
        )
        self.session = session
        server.listeners[transport] = self
        server.empty.clear()
        ctx.hub.metrics.connections.inc()
        session.send(server.welcome(session.id))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        session = self.session
        if session is None:
            return
        self.last_seen = _monotonic()
        msg_type = frame.msg_type
        if msg_type is _TEXT and frame.fin and self._fragments is None:
            session.receive(frame.get_payload_as_bytes())
        elif msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif msg_type is WSMsgType.BINARY and frame.fin and self._fragments is None:
            session.reject(None, BAD_REQUEST, "binary frames are not supported: send JSON text")
        elif msg_type in (_TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
            self._on_fragment(transport, session, frame)

    def _on_fragment(self, transport: WSTransport, session: Session, frame: WSFrame) -> None:
        fragments = self._fragments
        if frame.msg_type is WSMsgType.CONTINUATION:
            if fragments is None:
                session.reject(None, BAD_REQUEST, "continuation frame without a message")
                return
        elif fragments is not None:
            self._fragments = None
            session.reject(None, BAD_REQUEST, "new message inside a fragmented message")
            return
        else:  # first fragment: remember the type in the first byte
            fragments = self._fragments = bytearray(b"T" if frame.msg_type is _TEXT else b"B")
        fragments += frame.get_payload_as_memoryview()
        if len(fragments) - 1 > self.server.ctx.settings.max_message_bytes:
            self._fragments = None
            transport.send_close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
            transport.disconnect()
            return
        if frame.fin:
            self._fragments = None
            if fragments[0] == ord("T"):
                session.receive(bytes(fragments[1:]))
            else:
                session.reject(None, BAD_REQUEST, "binary frames are not supported: send JSON text")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        session = self.session
        if session is None:
            return
        self.session = None
        listeners = self.server.listeners
        listeners.pop(transport, None)
        if not listeners:
            self.server.empty.set()
        self.server.ctx.hub.metrics.connections.dec()
        session.close()


class WsServer:
    """The picows server of one gateway and its open connections."""

    def __init__(self, ctx: SessionContext, authenticator: Authenticator) -> None:
        self.ctx = ctx
        self.authenticator = authenticator
        self.listeners: dict[WSTransport, ConnectionListener] = {}
        """Open connections (transport → listener)."""
        self.empty = asyncio.Event()
        """Set while no connection is open."""
        self.empty.set()
        self.accepting = True
        self._server: asyncio.Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    def welcome(self, connection_id: str) -> bytes:
        return encode_welcome(connection_id, self.ctx.settings.node_name, self.ctx.limits())

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _listener_factory(self, request: WSUpgradeRequest) -> Any:
        path = request.path.decode("latin-1")
        if path.partition("?")[0] != WS_PATH:
            return None
        if not self.accepting:
            response = WSUpgradeResponse.create_error_response(
                503, b"draining: reconnect", extra_headers={"Retry-After": "1"}
            )
            return WSUpgradeResponseWithListener(response, None)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            principal: Principal | None = self.authenticator(path, headers)
        except Unauthorized:
            principal = None
        return ConnectionListener(self, principal)

    async def start(self) -> None:
        s = self.ctx.settings
        self._server = await ws_create_server(
            self._listener_factory,
            s.host,
            s.port,
            reuse_port=s.reuse_port or None,
            max_frame_size=s.max_message_bytes,
            read_buffer_init_size=s.read_buffer_bytes,
            websocket_handshake_timeout=10,
            logger_name="server",
        )
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_loop(), name="wsfleet-heartbeat"
        )

    async def _heartbeat_loop(self) -> None:
        s = self.ctx.settings
        interval = min(max(min(s.heartbeat_s, s.idle_timeout_s) / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            self.sweep(_monotonic())

    def sweep(self, now: float) -> None:
        """Ping connections quiet for ``heartbeat_s``; close those quiet for ``idle_timeout_s``."""
        s = self.ctx.settings
        ping_before = now - s.heartbeat_s
        drop_before = now - s.idle_timeout_s
        for transport, listener in list(self.listeners.items()):
            last_seen = listener.last_seen
            if last_seen >= ping_before:
                continue
            if last_seen < drop_before:
                self.ctx.hub.metrics.reject("idle_timeout")
                close_transport(transport, 1000, b"idle timeout")
            else:
                transport.send_ping()

    def stop_listening(self) -> None:
        """Accept no new connections (open ones stay)."""
        if self._server is not None:
            self._server.close()

    async def close_all(self, code: int = 1001, reason: bytes = b"going away") -> None:
        """Close every open connection with `code` and wait (bounded) until they are gone."""
        transports = list(self.listeners)
        for transport in transports:
            close_transport(transport, code, reason)
        if transports:
            waits = [transport.wait_disconnected() for transport in transports]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(*waits)

    async def stop(self, code: int = 1001, reason: bytes = b"going away") -> None:
        """Stop listening and close every connection with `code`."""
        self.stop_listening()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self.close_all(code, reason)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._server.wait_closed()
            self._server = None


def close_transport(transport: WSTransport, code: int, reason: bytes) -> None:
    """Send a close frame and drop the connection (idempotent)."""
    if not transport.is_close_frame_sent:
        transport.send_close(close_code(code), reason)
    transport.disconnect()


def close_code(code: int) -> WSCloseCode:
    """Any close code as picows' enum type (it takes application codes like 4001 too)."""
    return cast(WSCloseCode, code)
