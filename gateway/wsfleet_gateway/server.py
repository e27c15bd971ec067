"""The public WebSocket listener on ``/ws`` (picows): parse, dispatch, send.

Thin by design: frames become `Session.receive` calls, the session writes
replies back through the transport. Text frames only (a binary frame gets a
``bad_request`` error); fragmented messages are reassembled up to
``max_message_bytes``; a bigger frame or message closes with 1009.
Heartbeat: one sweep task for all connections (no timer per connection):
after ``heartbeat_s`` without incoming data the server pings; a client that
stays silent (no pong either) for ``idle_timeout_s`` is closed. The same task
writes every presence record of the open connections again, three times per
``presence_ttl_s`` (so members of a gateway that dies expire within one TTL).

Protection (`Protection`, when ``settings.protection``): a new connection is
*admitted* (``admission.py``: node cap 4009, failed auth 4001, auth flood and
per-user rate 4008) before it gets its `welcome`; frames that arrive while the
decision is pending are held (a few) and replayed. Each connection's write
buffer is capped at ``send_buffer_bytes``: picows calls `pause_writing` when
it is passed, and the connection is dropped at once with 4010 (slow
consumer; nothing more is queued for it, the socket is aborted after
`SLOW_CONSUMER_GRACE_S`) so fan-out never waits on it. Inbound bytes are
capped per connection (``bandwidth.py``, ``bandwidth_bytes_per_s``): a data
frame over the budget gets ``error rate_limited`` (a fragmented message is
dropped whole), a client that keeps pushing is closed with 4008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
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

from wsfleet_gateway.deflate import Agreement, Deflater, TooBigError, inflate, negotiate
from wsfleet_gateway.outbox import Counter, Outbox, Outboxes
from wsfleet_gateway.presence import refresh_interval_s
from wsfleet_gateway.protection.admission import (
    CLOSE_NODE_FULL,
    CLOSE_RATE_LIMITED,
    CLOSE_SLOW_CONSUMER,
    Admission,
    Decision,
    client_ip,
    node_full,
)
from wsfleet_gateway.protection.audit import AuditLog
from wsfleet_gateway.protection.auth import Authenticator, Principal, Unauthorized
from wsfleet_gateway.protection.bandwidth import CLOSE, TokenBucket, burst_bytes
from wsfleet_gateway.protection.metrics import ProtectionMetrics
from wsfleet_gateway.protocol import BAD_REQUEST, RATE_LIMITED, encode_welcome
from wsfleet_gateway.session import Session, SessionContext, next_connection_id
from wsfleet_gateway.tasks import cancel_and_wait

log = structlog.get_logger("wsfleet_gateway.server")

WS_PATH = "/ws"
CLOSE_IDLE = 1000
SWEEP_SLICE = 256
"""Connections one heartbeat slice checks before yielding to the event loop."""
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNAUTHORIZED = 4001
CLOSE_CODES = frozenset(
    {
        CLOSE_IDLE,
        CLOSE_GOING_AWAY,
        CLOSE_POLICY,
        CLOSE_TOO_BIG,
        CLOSE_PROTOCOL_ERROR,
        CLOSE_UNAUTHORIZED,
        CLOSE_RATE_LIMITED,
        CLOSE_NODE_FULL,
        CLOSE_SLOW_CONSUMER,
    }
)
"""Every close code the gateway sends (docs/protocol.md lists exactly these)."""
SLOW_CONSUMER_GRACE_S = 5.0
"""Seconds a dropped slow consumer has to read its backlog (and 4010) before the abort."""
MAX_HELD_FRAMES = 32
"""Frames a connection may send before its admission is decided."""
_TEXT = WSMsgType.TEXT
_DATA = frozenset((WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION))
_DISCARD = ord("D")
"""First byte of `_fragments` while a rate-limited fragmented message is skipped."""
BANDWIDTH = "bandwidth"
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""What a listener holds once its upgrade headers are no longer needed (shared)."""
_monotonic = time.monotonic
MAX_WELCOME_TEMPLATES = 64
"""Cached ``welcome`` templates (one per tier quota in practice)."""
_ID_MARK = "\u2063wsfleet-connection-id\u2063"
"""Placeholder of the connection id in a cached welcome template (JSON encodes it as is)."""
_PICOWS_LOGGER = logging.LoggerAdapter(logging.getLogger("picows.server"))
"""picows' logger for every connection. An adapter, not a `logging.Logger`: given a
Logger, picows makes a child Logger per connection (about 0.5 KB each)."""


@dataclass(frozen=True, slots=True)
class Protection:
    """What the listener needs for admission and back-pressure."""

    admission: Admission
    audit: AuditLog
    metrics: ProtectionMetrics


class ConnectionListener(WSListener):
    """picows callbacks of one connection."""

    __slots__ = (
        "_fragments",
        "auth_error",
        "bucket",
        "deflate",
        "headers",
        "held",
        "ip",
        "last_seen",
        "outbox",
        "principal",
        "server",
        "session",
        "transport",
    )

    def __init__(
        self,
        server: WsServer,
        principal: Principal | None,
        auth_error: str = "",
        headers: Mapping[str, str] | None = None,
        deflate: Agreement | None = None,
    ) -> None:
        self.server = server
        self.deflate = deflate
        """permessage-deflate, when negotiated."""
        self.last_seen = _monotonic()
        self.principal = principal
        self.auth_error = auth_error
        self.headers = headers or _NO_HEADERS
        """Upgrade headers until the connection is set up (then dropped)."""
        self.ip = ""
        self.session: Session | None = None
        self.outbox: Outbox | None = None
        """The session's frames: live messages wait for the end of the loop turn, replies
        go at once unless messages wait (`outbox.py`)."""
        self.transport: WSTransport | None = None
        self.bucket: TokenBucket | None = None
        """Inbound bandwidth budget (None: no cap)."""
        self.held: list[bytes] | None = None
        """Text frames received while admission is pending (None: not pending)."""
        self._fragments: bytearray | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        headers, self.headers = self.headers, _NO_HEADERS
        server = self.server
        protection = server.protection
        if protection is None:
            if self.principal is None:
                server.ctx.hub.metrics.reject("unauthorized")
                transport.send_close(close_code(CLOSE_UNAUTHORIZED), b"unauthorized")
                transport.disconnect()
                return
            self._open_session(transport)
            return
        s = server.ctx.settings
        underlying = transport.underlying_transport
        # interned: connections from one address (a load balancer, a NAT) share the string
        self.ip = sys.intern(
            client_ip(underlying.get_extra_info("peername"), headers, s.trust_forwarded_for)
        )
        if node_full(len(server.listeners), len(server.admitting), s.max_connections):
            user = self.principal.user if self.principal is not None else None
            self._refuse(transport, protection.admission.reject_full(self.ip, user))
            return
        underlying.set_write_buffer_limits(high=s.send_buffer_bytes)
        self.held = []
        server.admitting.add(transport)
        task = asyncio.get_running_loop().create_task(self._admit(transport, protection))
        server.ctx.workers.add(task)
        task.add_done_callback(server.ctx.workers.discard)

    async def _admit(self, transport: WSTransport, protection: Protection) -> None:
        try:
            decision = await protection.admission.admit(self.principal, self.auth_error, self.ip)
        finally:
            self.server.admitting.discard(transport)
        if transport.is_disconnected:
            return
        if not decision.accepted:
            self._refuse(transport, decision)
            return
        if not self.server.accepting:  # a drain began while we decided: go elsewhere
            self.held = None
            close_transport(transport, CLOSE_GOING_AWAY, b"going away")
            return
        self._open_session(transport)
        held, self.held = self.held, None
        session = self.session
        for payload in held or ():
            if session is None or session.closed:
                break
            session.receive(payload)

    def _refuse(self, transport: WSTransport, decision: Decision) -> None:
        self.held = None
        self.server.ctx.hub.metrics.reject(decision.reason)
        assert decision.close_code is not None
        close_transport(transport, decision.close_code, decision.message.encode()[:120])

    def _open_session(self, transport: WSTransport) -> None:
        server = self.server
        ctx = server.ctx
        assert self.principal is not None
        deflate = self.deflate
        boxes, write = server.outboxes, transport.underlying_transport.write
        outbox = self.outbox = (
            boxes.outbox(transport, write)
            if deflate is None
            else boxes.deflating_outbox(transport, write, deflate.server_max_window_bits)
        )
        node = ctx.settings.node_name
        session = Session(
            ctx, self.principal, outbox.send, next_connection_id(node), outbox.deliver
        )
        self.session = session
        bandwidth = server.bandwidth
        if bandwidth is not None:
            self.bucket = TokenBucket(*bandwidth, _monotonic())
        server.listeners[transport] = self
        server.empty.clear()
        ctx.hub.metrics.connections.inc()
        session.send(server.welcome(session.id, self.principal))

    def pause_writing(self) -> None:
        """The write buffer passed ``send_buffer_bytes``: a slow consumer, dropped with 4010."""
        transport = self.transport
        protection = self.server.protection
        if (
            transport is None
            or protection is None
            or transport.is_disconnected
            or transport.is_close_frame_sent
        ):
            return
        buffered = transport.underlying_transport.get_write_buffer_size()
        protection.metrics.slow_consumers.inc()
        self.server.ctx.hub.metrics.reject("slow_consumer")
        session = self.session
        protection.audit.slow_consumer(
            self.principal.user if self.principal is not None else "",
            session.id if session is not None else "",
            buffered,
        )
        # queued behind the backlog: a client that reads again sees 4010; later sends are
        # dropped by picows (close sent), so the buffer stops growing here
        transport.send_close(close_code(CLOSE_SLOW_CONSUMER), b"slow consumer")
        transport.disconnect(graceful=True)
        asyncio.get_running_loop().call_later(
            SLOW_CONSUMER_GRACE_S, partial(transport.disconnect, graceful=False)
        )

    def resume_writing(self) -> None:
        """Nothing to do: writes never wait (a connection over the cap is dropped)."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        session = self.session
        if session is None:
            self._on_frame_before_session(transport, frame)
            return
        now = self.last_seen = _monotonic()
        msg_type = frame.msg_type
        bucket = self.bucket
        if bucket is not None and msg_type in _DATA:
            verdict = bucket.take(frame.payload_size, now)
            if verdict:
                self._over_bandwidth(transport, session, frame, verdict)
                return
        if frame.rsv1:
            self._on_compressed(transport, session, frame)
        elif msg_type is _TEXT and frame.fin and self._fragments is None:
            session.receive(frame.get_payload_as_bytes())
        elif msg_type is WSMsgType.CLOSE:
            if self.outbox is not None:
                self.outbox.flush()
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif msg_type is WSMsgType.BINARY and frame.fin and self._fragments is None:
            session.reject(None, BAD_REQUEST, "binary frames are not supported: send JSON text")
        elif msg_type in (_TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
            self._on_fragment(transport, session, frame)

    def _on_compressed(self, transport: WSTransport, session: Session, frame: WSFrame) -> None:
        """RSV1: a compressed message (or its first fragment), if compression was agreed."""
        if self.deflate is None or frame.msg_type not in _DATA or self._fragments is not None:
            close_transport(transport, CLOSE_PROTOCOL_ERROR, b"unexpected RSV1", self.outbox)
            return
        if not frame.fin:  # the first fragment of a compressed message
            self._fragments = bytearray(b"Z" if frame.msg_type is _TEXT else b"B")
            self._fragments += frame.get_payload_as_memoryview()
            return
        if frame.msg_type is WSMsgType.BINARY:
            session.reject(None, BAD_REQUEST, "binary frames are not supported: send JSON text")
            return
        self._receive_compressed(transport, session, frame.get_payload_as_bytes())

    def _receive_compressed(self, transport: WSTransport, session: Session, data: bytes) -> None:
        try:
            payload = inflate(data, self.server.ctx.settings.max_message_bytes)
        except TooBigError:
            self.server.ctx.hub.metrics.reject("too_big")
            close_transport(transport, CLOSE_TOO_BIG, b"message too big", self.outbox)
            return
        except ValueError:
            close_transport(transport, CLOSE_PROTOCOL_ERROR, b"bad compressed data", self.outbox)
            return
        session.receive(payload)

    def _over_bandwidth(
        self, transport: WSTransport, session: Session, frame: WSFrame, verdict: int
    ) -> None:
        """A data frame the bandwidth budget cannot pay: refuse it, or close an abuser."""
        if transport.is_close_frame_sent:  # frames read in the same batch as the close
            return
        user = self.principal.user if self.principal is not None else ""
        audit = self.server.protection.audit if self.server.protection is not None else None
        if verdict == CLOSE:
            self.server.ctx.hub.metrics.reject(BANDWIDTH)
            if audit is not None:
                audit.bandwidth(user, session.id, "closed")
            self._fragments = None
            close_transport(transport, CLOSE_RATE_LIMITED, b"bandwidth exceeded", self.outbox)
            return
        bucket = self.bucket
        if audit is not None and bucket is not None and bucket.strikes <= 1.0:
            audit.bandwidth(user, session.id, "rejected")
        fragments = self._fragments
        payload: bytes | None = None
        if frame.msg_type is _TEXT and frame.fin and fragments is None:
            payload = frame.get_payload_as_bytes()
        elif not frame.fin:  # skip the rest of this fragmented message
            self._fragments = bytearray(b"D")
        else:
            self._fragments = None
        if fragments is not None and fragments[0] == _DISCARD:
            self.server.ctx.hub.metrics.reject(BANDWIDTH)
            return  # already answered when the message began to be skipped
        session.refuse(payload, RATE_LIMITED, "bandwidth exceeded: slow down", BANDWIDTH)

    def _on_fragment(self, transport: WSTransport, session: Session, frame: WSFrame) -> None:
        fragments = self._fragments
        if fragments is not None and fragments[0] == _DISCARD:
            if frame.msg_type is not WSMsgType.CONTINUATION:
                self._fragments = None  # a new message: handle it normally
            else:
                if frame.fin:
                    self._fragments = None
                return
            fragments = None
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
            close_transport(transport, CLOSE_TOO_BIG, b"message too big", self.outbox)
            return
        if frame.fin:
            self._fragments = None
            if fragments[0] == ord("T"):
                session.receive(bytes(fragments[1:]))
            elif fragments[0] == ord("Z"):
                self._receive_compressed(transport, session, bytes(fragments[1:]))
            else:
                session.reject(None, BAD_REQUEST, "binary frames are not supported: send JSON text")

    def _on_frame_before_session(self, transport: WSTransport, frame: WSFrame) -> None:
        held = self.held
        if held is None:
            return
        if frame.msg_type is WSMsgType.CLOSE:
            self.held = None
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif len(held) >= MAX_HELD_FRAMES:
            self.held = None
            close_transport(transport, CLOSE_POLICY, b"wait for the welcome frame")
        elif frame.msg_type is _TEXT and frame.fin:
            held.append(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.held = None
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

    def __init__(
        self,
        ctx: SessionContext,
        authenticator: Authenticator,
        protection: Protection | None = None,
        writes: Counter | None = None,
    ) -> None:
        """`writes`: counts socket writes of data frames (``wsfleet_socket_writes_total``)."""
        self.ctx = ctx
        self.authenticator = authenticator
        self.protection = protection
        self.admitting: set[WSTransport] = set()
        """Connections whose admission is being decided."""
        self.listeners: dict[WSTransport, ConnectionListener] = {}
        """Open connections (transport → listener)."""
        self.empty = asyncio.Event()
        """Set while no connection is open."""
        self.empty.set()
        self.accepting = True
        s = ctx.settings
        self.bandwidth: tuple[float, float, int] | None = None
        """``(rate, burst, max_strikes)`` of every connection's bucket (None: no cap)."""
        if protection is not None and s.bandwidth_bytes_per_s > 0:
            rate = float(s.bandwidth_bytes_per_s)
            burst = burst_bytes(rate, s.max_message_bytes, s.bandwidth_burst_s)
            self.bandwidth = (rate, burst, s.bandwidth_max_strikes)
        self._server: asyncio.Server | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.deflater: Deflater | None = (
            Deflater(s.compression_level, s.compression_min_bytes) if s.compression else None
        )
        """Compresses for every connection that negotiated permessage-deflate (None: off)."""
        self.outboxes = Outboxes(self.deflater, writes)
        """Every connection's outbox: one socket write per connection and loop turn."""
        self._welcomes: dict[tuple[object, ...], tuple[bytes, bytes]] = {}
        """``welcome`` templates by (node, limits): the frame around the connection id."""

    def welcome(self, connection_id: str, principal: Principal | None = None) -> bytes:
        """The `welcome` frame (``encode_welcome``'s bytes, built from a cached template)."""
        limits = self.ctx.limits()
        if principal is not None and principal.max_channels is not None:
            limits["max_channels"] = principal.max_channels
        node = self.ctx.settings.node_name
        key = (node, *limits.items())
        template = self._welcomes.get(key)
        if template is None:
            template = welcome_template(node, limits)
            if len(self._welcomes) < MAX_WELCOME_TEMPLATES:
                self._welcomes[key] = template
        prefix, suffix = template
        if _json_plain(connection_id):
            return b"".join((prefix, connection_id.encode(), suffix))
        return encode_welcome(connection_id, node, limits)

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
        # picows' case-insensitive multidict, used as is: no per-connection copy
        headers: Mapping[str, str] = request.headers
        auth_error = ""
        try:
            principal: Principal | None = self.authenticator(path, headers)
        except Unauthorized as exc:
            principal, auth_error = None, str(exc) or "unauthorized"
        offer = headers.get("sec-websocket-extensions") if self.deflater is not None else None
        deflate = negotiate(offer) if offer else None
        listener = ConnectionListener(self, principal, auth_error, headers, deflate)
        if deflate is None:
            return listener
        extension = {"Sec-WebSocket-Extensions": deflate.header}
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response(extra_headers=extension), listener
        )

    async def start(self) -> None:
        """Listen. On uvloop's own TCP transport, not aiofastnet's (picows' default when
        installed): that one costs 5.2 KB more per idle connection (15.4 against 10.2
        KB measured with every feature on, docs/benchmarks.md)."""
        s = self.ctx.settings
        self._server = await ws_create_server(
            self._listener_factory,
            s.host,
            s.port,
            reuse_port=s.reuse_port or None,
            backlog=s.effective_backlog,
            max_frame_size=s.max_message_bytes,
            read_buffer_init_size=s.read_buffer_bytes,
            websocket_handshake_timeout=10,
            logger_name=_PICOWS_LOGGER,
            use_aiofastnet=False,
        )
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_loop(), name="wsfleet-heartbeat"
        )

    async def _heartbeat_loop(self) -> None:
        s = self.ctx.settings
        interval = min(max(min(s.heartbeat_s, s.idle_timeout_s) / 4, 0.05), 5.0)
        refresh_s = refresh_interval_s(s.presence_ttl_s)
        presence = self.ctx.hub.presence is not None
        if presence:
            interval = min(interval, refresh_s)
        refresh_due = _monotonic() + refresh_s
        while True:
            await asyncio.sleep(interval)
            # In slices, yielding between them: with 10k quiet connections a
            # single pass (and its burst of pings) would stall every request.
            items = list(self.listeners.items())
            for start in range(0, len(items), SWEEP_SLICE):
                self._sweep_items(items[start : start + SWEEP_SLICE], _monotonic())
                await asyncio.sleep(0)
            if presence and _monotonic() >= refresh_due:
                refresh_due = _monotonic() + refresh_s
                try:
                    await self.refresh_presence()
                except Exception:  # never the end of the heartbeat: sweeps must go on
                    log.exception("presence_refresh_failed")

    async def refresh_presence(self) -> int:
        """Write every presence record of this gateway again (each lives one more TTL),
        `SWEEP_SLICE` channels per loop pass; the channels written."""
        hub = self.ctx.hub
        store = hub.presence
        if store is None:
            return 0
        written = 0
        for channel, records in hub.presence_records():
            store.presence_refresh(channel, records)
            written += 1
            if written % SWEEP_SLICE == 0:
                await asyncio.sleep(0)
        return written

    def sweep(self, now: float) -> None:
        """Ping connections quiet for ``heartbeat_s``; close those quiet for ``idle_timeout_s``."""
        self._sweep_items(list(self.listeners.items()), now)

    def _sweep_items(self, items: list[tuple[Any, ConnectionListener]], now: float) -> None:
        s = self.ctx.settings
        ping_before = now - s.heartbeat_s
        drop_before = now - s.idle_timeout_s
        for transport, listener in items:
            if transport not in self.listeners:
                continue  # closed while an earlier slice ran
            last_seen = listener.last_seen
            if last_seen >= ping_before:
                continue
            if last_seen < drop_before:
                self.ctx.hub.metrics.reject("idle_timeout")
                close_transport(transport, CLOSE_IDLE, b"idle timeout", listener.outbox)
            else:
                transport.send_ping()

    def stop_listening(self) -> None:
        """Accept no new connections (open ones stay)."""
        if self._server is not None:
            self._server.close()

    async def close_all(self, code: int = 1001, reason: bytes = b"going away") -> None:
        """Close every open connection with `code` and wait (bounded) until they are gone."""
        transports = [*self.listeners, *self.admitting]
        for transport in transports:
            listener = self.listeners.get(transport)
            close_transport(transport, code, reason, listener.outbox if listener else None)
        if transports:
            waits = [transport.wait_disconnected() for transport in transports]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(*waits)

    async def stop(self, code: int = 1001, reason: bytes = b"going away") -> None:
        """Stop listening and close every connection with `code`."""
        self.stop_listening()
        heartbeat, self._heartbeat = self._heartbeat, None
        await cancel_and_wait(heartbeat)
        await self.close_all(code, reason)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._server.wait_closed()
            self._server = None


def welcome_template(node: str, limits: Mapping[str, int | float]) -> tuple[bytes, bytes]:
    """``encode_welcome``'s bytes before and after the connection id (a JSON-plain id)."""
    encoded = encode_welcome(_ID_MARK, node, limits)
    prefix, found, suffix = encoded.partition(_ID_MARK.encode())
    assert found, "the welcome frame holds the connection id"
    return prefix, suffix


def _json_plain(text: str) -> bool:
    """JSON encodes `text` as itself between quotes (printable ASCII, no quote or backslash)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def close_transport(
    transport: WSTransport, code: int, reason: bytes, outbox: Outbox | None = None
) -> None:
    """Send a close frame and drop the connection (idempotent); what waits in `outbox`
    goes out first."""
    if outbox is not None:
        outbox.flush()
    if not transport.is_close_frame_sent:
        transport.send_close(close_code(code), reason)
    transport.disconnect()


def close_code(code: int) -> WSCloseCode:
    """Any close code as picows' enum type (it takes application codes like 4001 too)."""
    return cast(WSCloseCode, code)
