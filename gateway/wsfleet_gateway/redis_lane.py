"""`CommandLane`: the hot path's Redis commands, pipelined on connections kept here.

The subscribe/switch path reads a channel's history with one script call. A
burst of clients reaching channels new to the pod makes many such calls at
once; through the client (pool lock, retry wrapper, response callbacks, a
``wait_for`` per write for the socket timeout, the general argument encoder)
each cost several times the round trip itself, and each was a write of its
own, which on a shared core also means a switch to Redis and back.

- Commands asked for in one pass of the event loop go out in one write on one
  connection, replies read back in order (Redis answers a pipeline in order).
- An error reply fails its own command only: the connection stays in step.
- A kept connection the server closed while it sat idle (a restart, ``CLIENT
  KILL``, an idle timeout) is found out before use when its end of stream has
  arrived (as the client's own pool does), or by using it: a batch of
  commands safe to run twice (reads, ``SCRIPT LOAD``; `execute`'s
  ``repeatable``) is then sent again on another connection, once per stale
  connection. A batch holding any other command (a publish) fails instead:
  it may have run.
- Any other failure (I/O error, `timeout_s` passing, every caller of a batch
  cancelled before its reply) drops the connection: its position in the reply
  stream is unknown. A caller cancelled alone leaves the others answered.
- At most `max_idle` connections are kept between batches. Callers bound each
  command with a `redis_pool.RedisGate` slot and a timeout like any other, and
  `timeout_s` bounds a batch too, so the connections need no socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

Arg = str | int


def pack_resp(args: tuple[Arg, ...]) -> bytes:
    """One command in the Redis protocol (RESP2 array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass(slots=True, eq=False)
class _Request:
    args: tuple[Arg, ...]
    reply: asyncio.Future[Any]
    repeatable: bool


class CommandLane:
    """Pipelined request/reply on connections kept here (see the module docstring)."""

    def __init__(
        self, make: Callable[[], AbstractConnection], max_idle: int, timeout_s: float = 5.0
    ) -> None:
        self._make = make
        self.max_idle = max_idle
        self.timeout_s = timeout_s
        self._idle: list[AbstractConnection] = []
        self._queued: list[_Request] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self.opened = 0
        """Connections made so far (reused ones are not counted again)."""
        self.stale = 0
        """Kept connections found closed by the server when next used."""
        self.writes = 0
        """Batches written (each carries every command asked for in one loop pass)."""
        self.commands = 0
        """Commands sent (a batch sent again counts again)."""

    async def execute(self, *args: Arg, repeatable: bool = True) -> Any:
        """One command's reply; error replies raise as `ResponseError`.

        `repeatable`: the command may run twice (see the module docstring).
        """
        loop = asyncio.get_running_loop()
        queued = self._queued
        if queued is None:
            queued = self._queued = []
            loop.call_soon(self._flush)
        request = _Request(args, loop.create_future(), repeatable)
        queued.append(request)
        return await request.reply

    async def evalsha(
        self,
        sha: str,
        script: str,
        keys: list[str],
        args: list[Arg],
        *,
        repeatable: bool = True,
    ) -> Any:
        """EVALSHA, loading the script once when the server does not know it yet (a
        NOSCRIPT reply means it did not run: sent again either way)."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return await self.execute(*command, repeatable=repeatable)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            return await self.execute(*command, repeatable=repeatable)

    async def warm(self, count: int) -> None:
        """Open connections until `count` (at most `max_idle`) are kept idle."""
        wanted = min(count, self.max_idle) - len(self._idle)
        if wanted <= 0:
            return
        fresh = [self._new() for _ in range(wanted)]
        openers: list[Callable[[], Awaitable[None]]] = [c.connect for c in fresh]  # untyped
        try:
            await asyncio.gather(*(opener() for opener in openers))
        except BaseException:
            for conn in fresh:
                await conn.disconnect(nowait=True)
            raise
        self._idle.extend(fresh)

    async def close(self) -> None:
        queued, self._queued = self._queued or [], None
        for request in queued:
            request.reply.cancel()
        batches = list(self._batches)
        for task in batches:
            task.cancel()
        for task in batches:
            with contextlib.suppress(BaseException):
                await task
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)

    # -- batches -------------------------------------------------------------

    def _flush(self) -> None:
        batch, self._queued = self._queued or [], None
        live = [request for request in batch if not request.reply.done()]  # not cancelled
        if not live:
            return
        task = asyncio.get_running_loop().create_task(self._run(live), name="wsfleet-redis-lane")
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        for request in live:
            request.reply.add_done_callback(partial(_abandon_if_unwanted, live, task))

    async def _run(self, batch: list[_Request]) -> None:
        packed = b"".join(pack_resp(request.args) for request in batch)
        repeatable = all(request.repeatable for request in batch)
        while True:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else self._new()
            answered = 0
            sent = False
            try:
                if reused and await conn.can_read():  # closed while idle (or out of step)
                    raise RedisConnectionError("kept connection closed while idle")
                async with asyncio.timeout(self.timeout_s):
                    if not conn.is_connected:
                        opener: Callable[[], Awaitable[None]] = conn.connect  # untyped
                        await opener()
                    sent = True  # from here on the commands may have run
                    await conn.send_packed_command(packed, check_health=False)
                    self.writes += 1
                    self.commands += len(batch)
                    for request in batch:
                        try:
                            value = await conn.read_response()
                        except ResponseError as exc:  # an error reply: still in step
                            _settle(request.reply, error=exc)
                        else:
                            _settle(request.reply, value)
                        answered += 1
            except RedisConnectionError as exc:
                await conn.disconnect(nowait=True)
                if reused and not answered and (repeatable or not sent):
                    self.stale += 1
                    continue
                _fail(batch, exc)
                return
            except BaseException as exc:
                await conn.disconnect(nowait=True)
                _fail(batch, exc)
                raise
            await self._release(conn)
            return

    def _new(self) -> AbstractConnection:
        self.opened += 1
        return self._make()

    async def _release(self, conn: AbstractConnection) -> None:
        if len(self._idle) < self.max_idle and conn.is_connected:
            self._idle.append(conn)
        else:
            await conn.disconnect(nowait=True)


def _settle(reply: asyncio.Future[Any], value: Any = None, error: Exception | None = None) -> None:
    if reply.done():  # its caller was cancelled: the reply is read and dropped
        return
    if error is not None:
        reply.set_exception(error)
    else:
        reply.set_result(value)


def _fail(batch: list[_Request], exc: BaseException) -> None:
    """Every unanswered request of `batch` fails with `exc` (cancelled with a cancel)."""
    for request in batch:
        if request.reply.done():
            continue
        if isinstance(exc, Exception):
            request.reply.set_exception(exc)
            request.reply.exception()  # retrieved: its caller may be gone
        else:
            request.reply.cancel()


def _abandon_if_unwanted(
    batch: list[_Request], task: asyncio.Task[None], reply: asyncio.Future[Any]
) -> None:
    """A caller was cancelled: once no request of the batch waits any more, stop it."""
    if reply.cancelled() and not task.done() and all(r.reply.done() for r in batch):
        task.cancel()
