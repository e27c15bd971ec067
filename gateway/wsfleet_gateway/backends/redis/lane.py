"""`CommandLane`: the hot path's Redis commands, pipelined on connections kept here.

A publish and the history read of a first visit each cost one Redis round
trip. Through a client library each also cost a pool checkout, a timeout
context, a stream read and a task wakeup; here a command is a future, and its
reply settles it straight from the connection's `data_received`
(``resp.py``).

- Commands asked for in one pass of the event loop go out in one write, on
  the kept connection with the fewest replies outstanding; replies come back
  in order (Redis answers a pipeline in order) and settle their futures.
  Connections are multiplexed: a write does not wait for the replies of
  earlier ones. While every kept connection has replies outstanding another
  is opened, up to `max_conns`. (So this lane is for commands Redis answers
  at once, never for blocking ones such as ``BLPOP``: they would hold up the
  replies behind them.)
- Each command is encoded (RESP) when it is asked for, before it joins a batch: one
  that cannot be (an argument with no UTF-8 form, such as a lone surrogate) raises in
  its caller alone, and a batch never fails for a command it could have refused alone.
- An error reply fails its own command only: the connection stays in step.
  A caller that gives up (cancelled, or its own timeout) leaves it in step
  too: its reply is read and dropped.
- A connection the server closes (a restart, ``CLIENT KILL``, an idle
  timeout) is dropped the moment its end of stream arrives, and counted in
  `stale`. Its unanswered commands that are safe to run twice (reads,
  ``SCRIPT LOAD``; `execute`'s ``repeatable``) are sent once more on another
  connection; any other (a publish) fails with `RedisConnectionError`, as it
  may have run.
- A connection whose oldest unanswered command waited `timeout_s` is aborted:
  its commands fail with `TimeoutError` (the server, or the path to it, is
  stuck). Opening a connection is bounded by `timeout_s` too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from wsfleet_gateway.backends.redis.resp import (
    Arg,
    Endpoint,
    Request,
    RespConnection,
    fail_requests,
    open_connection,
    pack_resp,
)
from wsfleet_gateway.tasks import cancel_and_wait


class CommandLane:
    """Pipelined request/reply on connections kept here (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, max_conns: int, timeout_s: float = 5.0) -> None:
        if max_conns < 1 or timeout_s <= 0:
            raise ValueError("max_conns >= 1 and timeout_s > 0 are required")
        self.endpoint = endpoint
        self.max_conns = max_conns
        self.timeout_s = timeout_s
        self._conns: list[RespConnection] = []
        self._queued: list[Request] | None = None
        self._awaiting: list[Request] = []
        """Requests flushed while no connection was open: written once one is."""
        self._opening: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing = False
        self.opened = 0
        """Connections opened so far."""
        self.stale = 0
        """Connections the server closed while kept here."""
        self.writes = 0
        """Writes (each carries every command asked for in one loop pass)."""
        self.commands = 0
        """Commands sent (a command sent again counts again)."""

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    async def execute(self, *args: Arg, repeatable: bool = True) -> Any:
        """One command's reply; error replies raise (`ResponseError` and its kinds).

        `repeatable`: the command may run twice (see the module docstring).
        """
        return await self.submit(*args, repeatable=repeatable)

    def submit(self, *args: Arg, repeatable: bool = True) -> asyncio.Future[Any]:
        """`execute` without awaiting: the command joins this loop pass's write now (in
        the order asked) and the future settles with its reply. For writes nobody waits
        on (presence): the caller retrieves the future's exception."""
        if self._closing:
            raise RedisConnectionError("command lane closed")
        packed = pack_resp(args)  # UnicodeEncodeError here: this command alone
        loop = asyncio.get_running_loop()
        queued = self._queued
        if queued is None:
            queued = self._queued = []
            loop.call_soon(self._flush)
        request = Request(args, loop.create_future(), repeatable, packed)
        queued.append(request)
        return request.reply

    async def execute_many(
        self, commands: Sequence[tuple[Arg, ...]], *, repeatable: bool = False
    ) -> list[Any]:
        """`commands` back to back in one write on one connection (an ``ASKING`` and the
        command it is for; a write and the ``WAIT`` for its replication). Each reply in
        order, an error reply as its exception (returned, not raised); a lost connection
        raises. Not `repeatable` by default: none is sent again on another connection."""
        if self._closing:
            raise RedisConnectionError("command lane closed")
        packed = [pack_resp(command) for command in commands]  # refused here, alone
        loop = asyncio.get_running_loop()
        queued = self._queued
        if queued is None:
            queued = self._queued = []
            loop.call_soon(self._flush)
        requests = [
            Request(command, loop.create_future(), repeatable, data)
            for command, data in zip(commands, packed, strict=True)
        ]
        queued.extend(requests)
        replies: list[Any] = []
        try:
            for request in requests:
                try:
                    replies.append(await request.reply)
                except ResponseError as exc:
                    replies.append(exc)
        finally:
            for request in requests:  # the caller gave up, or a connection error
                if not request.reply.done():
                    request.reply.cancel()
                elif not request.reply.cancelled():
                    request.reply.exception()  # retrieved
        return replies

    async def evalsha(self, sha: str, script: str, *args: Arg, repeatable: bool = True) -> Any:
        """``EVALSHA sha *args`` (`args`: the number of keys, the keys, the arguments),
        loading `script` once when the server does not know it yet (a NOSCRIPT reply
        means it did not run: sent again either way)."""
        try:
            return await self.execute("EVALSHA", sha, *args, repeatable=repeatable)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            return await self.execute("EVALSHA", sha, *args, repeatable=repeatable)

    async def warm(self, count: int) -> None:
        """Open connections until `count` (at most `max_conns`) are kept."""
        wanted = min(count, self.max_conns) - len(self._conns) - len(self._opening)
        if wanted > 0:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.gather(*(self._open() for _ in range(wanted)))

    async def close(self) -> None:
        self._closing = True
        queued, self._queued = self._queued or [], None
        awaiting, self._awaiting = self._awaiting, []
        fail_requests(queued + awaiting, asyncio.CancelledError())
        await cancel_and_wait(*self._opening)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.abort(asyncio.CancelledError())
        for conn in conns:
            await conn.lost

    # -- writes --------------------------------------------------------------

    def _flush(self) -> None:
        batch, self._queued = self._queued or [], None
        live = [request for request in batch if not request.reply.done()]  # not cancelled
        if live:
            self._write(live)

    def _write(self, batch: list[Request]) -> None:
        conn = self._pick()
        if conn is None:
            self._awaiting.extend(batch)
            if not self._opening:
                self._spawn_open()
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for request in batch:
            request.sends += 1
            request.sent_at = now
        try:
            conn.send(b"".join([request.packed for request in batch]), batch)
        except RedisConnectionError as exc:  # `_pick` takes open ones only: never expected
            fail_requests(batch, exc)
            return
        self.writes += 1
        self.commands += len(batch)
        if self._watchdog is None:
            self._watchdog = loop.call_at(now + self.timeout_s, self._watch)

    def _pick(self) -> RespConnection | None:
        """The open connection with the fewest replies outstanding; another is opened
        in the background when even that one has some (up to `max_conns`)."""
        best: RespConnection | None = None
        for conn in self._conns:
            if not conn.is_open:  # closing here (aborted): its loss is reported next pass
                continue
            if best is None or conn.pending < best.pending:
                best = conn
                if not best.pending:
                    return best
        if len(self._conns) + len(self._opening) < self.max_conns:
            self._spawn_open()
        return best

    # -- connections ---------------------------------------------------------

    def _spawn_open(self) -> None:
        task = asyncio.get_running_loop().create_task(self._open_for_awaiting())
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open_for_awaiting(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._open()
        except Exception as exc:  # the requests waiting for it learn; nothing else does
            awaiting, self._awaiting = self._awaiting, []
            fail_requests(awaiting, exc)
            return
        awaiting, self._awaiting = self._awaiting, []
        live = [request for request in awaiting if not request.reply.done()]
        if live:
            self._write(live)

    async def _open(self) -> None:
        conn = await open_connection(self.endpoint, on_lost=self._lost)
        self.opened += 1
        if not conn.is_open:  # closed by the server right after the handshake
            raise RedisConnectionError("redis closed a new connection")
        self._conns.append(conn)

    def _lost(
        self,
        conn: RespConnection,
        unanswered: list[Request],
        error: BaseException,
        by_peer: bool,
    ) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
        if self._closing:
            fail_requests(unanswered, asyncio.CancelledError())
            return
        if by_peer:
            self.stale += 1
            again = [r for r in unanswered if r.repeatable and r.sends == 1]
            if again:
                self._write(again)
                unanswered = [r for r in unanswered if not (r.repeatable and r.sends == 1)]
        fail_requests(unanswered, error)

    def _watch(self) -> None:
        """Abort connections whose oldest unanswered command waited `timeout_s`."""
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_due: float | None = None
        for conn in list(self._conns):
            oldest = conn.oldest
            if oldest is None:
                continue
            due = oldest.sent_at + self.timeout_s
            if due <= now:
                what = oldest.args[0] if oldest.args else "?"
                conn.abort(TimeoutError(f"redis did not answer {what} within {self.timeout_s}s"))
            elif next_due is None or due < next_due:
                next_due = due
        if next_due is not None:
            self._watchdog = loop.call_at(next_due, self._watch)
