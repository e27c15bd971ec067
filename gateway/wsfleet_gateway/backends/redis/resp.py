"""`RespConnection`: one Redis connection as an `asyncio.Protocol`, replies parsed by hiredis.

The gateway's hot path talks to Redis on connections of its own rather than
through redis-py's: a publish, its delivery back through pub/sub and a history
read are each one write and one read here, with no reader task, no stream
buffer and no timeout context per command.

- Replies are parsed in `data_received` by a ``hiredis.Reader`` and handed out
  in order: to the oldest waiting request's future when one waits, otherwise
  to `on_push` (the pub/sub connection, where every reply is a push). Error
  replies settle their own request with a `ResponseError` (`NoScriptError`,
  `AuthenticationError` for their codes) and leave the connection in step.
- A future whose caller gave up (cancelled) is skipped: its reply is read and
  dropped, so the connection stays in step.
- When the connection is lost every waiting request fails with
  `RedisConnectionError` (or the error `abort` was given); `lost` is then done.
- `open_connection` connects (TCP, TLS or a Unix socket, from a ``redis://``,
  ``rediss://`` or ``unix://`` URL) and sends ``AUTH`` and ``SELECT`` as the
  URL asks. The caller bounds it with its own timeout.

Bulk strings are decoded as UTF-8 (bytes that are not become U+FFFD: a stray
binary value written by another client must not kill the connection), so
replies look like redis-py's with ``decode_responses=True``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from wsfleet_gateway.backends.redis.url import parse_url

Arg = str | int
OnPush = Callable[[Any], None]

_ERRORS: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
}


def reply_error(message: str) -> RedisError:
    """An error reply as an exception, by its code (the reply's first word)."""
    code = message.split(" ", 1)[0]
    return _ERRORS.get(code, ResponseError)(message)


def pack_resp(args: tuple[Arg, ...]) -> bytes:
    """One command in the Redis protocol (RESP2 array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, from a Redis URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    """A Unix socket (``unix://``): host and port are then unused."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:  # never show the password
        where = self.path or f"{self.host}:{self.port}"
        return f"Endpoint({where}, db={self.db}, tls={self.tls is not None})"

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """From a Redis URL, read by `url.parse_url` (the forms it lists)."""
        target = parse_url(url)
        tls = target.tls.context() if target.tls is not None else None
        return cls(
            target.host,
            target.port,
            target.path,
            target.db,
            target.username,
            target.password,
            tls,
        )


@dataclass(slots=True, eq=False)
class Request:
    """One command and the future its reply settles."""

    args: tuple[Arg, ...]
    reply: asyncio.Future[Any]
    repeatable: bool = True
    packed: bytes = b""
    """The command in RESP (`pack_resp`), encoded when asked for: an argument with no
    UTF-8 form fails its own command there, never a batch written with others."""
    """The command may run twice (a read): `CommandLane` may send it again."""
    sends: int = 0
    sent_at: float = 0.0


OnLost = Callable[["RespConnection", list[Request], BaseException, bool], None]
"""Told, before anything else happens, that a connection closed: its unanswered
requests (then the callee's to settle), the error they would fail with, and
whether the peer closed it (rather than `abort` here)."""


def fail_requests(requests: list[Request], error: BaseException) -> None:
    """Settle every request not done yet with `error` (a cancel for a cancel)."""
    for request in requests:
        reply = request.reply
        if reply.done():
            continue
        if isinstance(error, asyncio.CancelledError):
            reply.cancel()
        else:
            reply.set_exception(error)
            reply.exception()  # retrieved: its caller may be gone


class RespConnection(asyncio.Protocol):
    """One Redis connection (see the module docstring)."""

    def __init__(self, on_push: OnPush | None = None, on_lost: OnLost | None = None) -> None:
        self._on_push = on_push
        self._on_lost = on_lost
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace", replyError=reply_error)
        self._waiting: deque[Request] = deque()
        self._transport: asyncio.Transport | None = None
        self._error: BaseException | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done (with None) once the connection is closed, by either side."""
        self.reads = 0
        """Reads from the socket so far (anything received proves the peer alive)."""

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if waiting:
                future = waiting.popleft().reply
                if future.done():  # its caller gave up: read and dropped
                    continue
                if isinstance(reply, RedisError):  # an error reply (see reply_error)
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
            elif self._on_push is not None:
                self._on_push(reply)
            else:
                self.abort(RedisConnectionError(f"redis sent a reply nobody asked for: {reply!r}"))
                return

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        by_peer = self._error is None
        if self._error is None:
            self._error = RedisConnectionError(
                "redis closed the connection" if exc is None else f"redis connection lost: {exc}"
            )
        unanswered = list(self._waiting)
        self._waiting.clear()
        if self._on_lost is not None:
            self._on_lost(self, unanswered, self._error, by_peer)
        else:
            fail_requests(unanswered, self._error)
        if not self.lost.done():
            self.lost.set_result(None)

    # -- use ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def error(self) -> BaseException | None:
        """Why the connection closed (None while open)."""
        return self._error if self._transport is None else None

    @property
    def oldest(self) -> Request | None:
        """The request written longest ago and not answered yet."""
        return self._waiting[0] if self._waiting else None

    @property
    def pending(self) -> int:
        """Requests written and not answered yet."""
        return len(self._waiting)

    def send(self, packed: bytes, requests: list[Request] | None = None) -> None:
        """Write `packed`; `requests` (one per command in it, in order) get the replies.

        Raises `RedisConnectionError` when the connection is closed.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise RedisConnectionError("redis connection is closed")
        if requests:
            self._waiting.extend(requests)
        transport.write(packed)

    async def call(self, *args: Arg) -> Any:
        """One command's reply (error replies raise)."""
        packed = pack_resp(args)
        request = Request(args, asyncio.get_running_loop().create_future(), packed=packed)
        self.send(packed, [request])
        return await request.reply

    def abort(self, error: BaseException | None = None) -> None:
        """Close at once; unanswered requests fail with `error` (a connection error if None)."""
        if self._error is None:
            self._error = error or RedisConnectionError("redis connection closed here")
        if self._transport is not None:
            self._transport.abort()


async def open_connection(
    endpoint: Endpoint, on_push: OnPush | None = None, on_lost: OnLost | None = None
) -> RespConnection:
    """A connection to `endpoint`, authenticated and on its database (bound it by a timeout)."""
    loop = asyncio.get_running_loop()

    def protocol() -> RespConnection:
        return RespConnection()  # the handlers are set once the handshake is done

    try:
        if endpoint.path is not None:
            _, conn = await loop.create_unix_connection(protocol, endpoint.path)
        else:
            _, conn = await loop.create_connection(
                protocol,
                endpoint.host,
                endpoint.port,
                ssl=endpoint.tls,
                server_hostname=endpoint.host if endpoint.tls is not None else None,
            )
    except OSError as exc:
        raise RedisConnectionError(f"cannot connect to redis at {endpoint!r}: {exc}") from exc
    try:
        if endpoint.password is not None:
            if endpoint.username is not None:
                await conn.call("AUTH", endpoint.username, endpoint.password)
            else:
                await conn.call("AUTH", endpoint.password)
        if endpoint.db:
            await conn.call("SELECT", endpoint.db)
    except BaseException:
        conn.abort()
        raise
    conn._on_push, conn._on_lost = on_push, on_lost
    return conn
