"""Outside-style protocol clients for the chaos test: they speak the wire protocol as a
third party would (no `wsfleet.client`), keep every frame's offsets as the server sent
them, and count what a client would see.

- `Follower`: subscribes to its channels; on a `reconnect` frame it waits `after_ms`,
  opens a new connection (the old one stays open meanwhile, as a real client's does) and
  resumes each channel from the frame's `resume` offset; on a connection lost without
  one (a SIGKILL, a forced close) it resumes from the last offset it got. It records, per
  channel, every offset received (a reply's `history`, then live `message` frames) in
  arrival order, across all its connections.
- `Publisher`: publishes round-robin to the channels and keeps the offsets of the
  publishes the server acknowledged; it reconnects when its connection goes.
- `faults`: lost, duplicated and out-of-order counts of one channel's offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from wsfleet_gateway.broker import parse_offset

REQUEST_TIMEOUT_S = 10.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0


class RequestFailedError(Exception):
    """An `error` reply, or the connection went before the reply."""


class _Link(WSListener):
    """One WebSocket connection of a client."""

    def __init__(self, owner: _Speaker) -> None:
        self.owner = owner
        self.transport: WSTransport | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.lost = asyncio.get_running_loop().create_future()
        self.welcome = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            obj = json.loads(frame.get_payload_as_bytes())
            if obj.get("type") == "welcome":
                if not self.welcome.done():
                    self.welcome.set_result(obj)
                return
            self.owner.on_frame(self, obj)
            future = self.pending.pop(obj["id"], None) if isinstance(obj.get("id"), int) else None
            if future is not None and not future.done():
                future.set_result(obj)
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(RequestFailedError("connection lost"))
        self.pending.clear()
        if not self.welcome.done():
            self.welcome.set_exception(RequestFailedError("connection lost before welcome"))
            self.welcome.exception()
        if not self.lost.done():
            self.lost.set_result(None)

    async def request(self, ids: itertools.count[int], payload: dict[str, Any]) -> dict[str, Any]:
        transport = self.transport
        if transport is None or transport.is_disconnected:
            raise RequestFailedError("not connected")
        rid = next(ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        transport.send(WSMsgType.TEXT, json.dumps({**payload, "id": rid}).encode())
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            reply = await future
        if reply["type"] == "error":
            raise RequestFailedError(f"{reply['code']}: {reply['message']}")
        return reply

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close()
            self.transport.disconnect()


class _Speaker:
    """What `Follower` and `Publisher` share: opening links."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ids = itertools.count(1)

    def on_frame(self, link: _Link, obj: dict[str, Any]) -> None:
        """Every frame but `welcome`, before its request (if any) is answered."""

    async def open_link(self) -> _Link:
        """A new connection that got its `welcome` (raises when refused or lost)."""
        holder: list[_Link] = []

        def factory() -> _Link:
            holder.append(_Link(self))
            return holder[-1]

        transport, _ = await ws_connect(factory, self.url, websocket_handshake_timeout=10)
        link = holder[0]
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await link.welcome
        except BaseException:
            transport.disconnect(graceful=False)
            raise
        return link


@dataclass
class Follower(_Speaker):
    """See the module docstring."""

    url: str
    channels: Sequence[str]
    got: dict[str, list[str]] = field(default_factory=dict)
    """Channel → offsets as received (history and live, every connection)."""
    start: dict[str, str] = field(default_factory=dict)
    """Channel → the first subscribe reply's offset (what comes after it is expected)."""
    unrecovered: int = 0
    """Replies to a resume that said `recovered: false`."""
    moves: int = 0
    """Resumes after a `reconnect` frame."""
    recoveries: int = 0
    """Resumes after a connection lost without one."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while subscribed to every channel on a live connection."""

    def __post_init__(self) -> None:
        super().__init__(self.url)
        self._keys: dict[str, tuple[int, int]] = {}
        self._hint: dict[str, Any] | None = None
        self._link: _Link | None = None
        self._opening: _Link | None = None
        """The link `_resume` is subscribing on (a reconnect frame may come on it early)."""
        self._wake = asyncio.Event()

    def on_frame(self, link: _Link, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "message":
            self._record(obj["channel"], [obj["offset"]])
        elif kind == "subscribed":
            channel = obj["channel"]
            self._record(channel, [m["offset"] for m in obj["history"]])
            self.start.setdefault(channel, obj["offset"])
            key = parse_offset(obj["offset"])
            if key > self._keys.get(channel, (-1, -1)):
                self._keys[channel] = key
            if not obj["recovered"]:
                self.unrecovered += 1
        elif kind == "reconnect" and link in (self._link, self._opening) and self._hint is None:
            self._hint = obj
            self._wake.set()

    def _record(self, channel: str, offsets: list[str]) -> None:
        got = self.got.setdefault(channel, [])
        for offset in offsets:
            got.append(offset)
            key = parse_offset(offset)
            if key > self._keys.get(channel, (-1, -1)):
                self._keys[channel] = key

    def since(self, channel: str) -> str | None:
        key = self._keys.get(channel)
        return None if key is None else f"{key[0]}-{key[1]}"

    async def run(self) -> None:
        """Connect, subscribe, then follow reconnect frames and recover lost connections."""
        await self._resume(None)
        while True:
            link = self._link
            assert link is not None
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter, link.lost], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            self._wake.clear()
            hint, self._hint = self._hint, None
            self.ready.clear()
            if hint is not None:
                await asyncio.sleep(int(hint.get("after_ms", 0)) / 1000)  # as the frame asks
                await self._resume(hint.get("resume") or {})
                self.moves += 1
                link.close()  # the old link stayed open while moving
            else:
                await self._resume(None)
                self.recoveries += 1

    async def _resume(self, resume: dict[str, str] | None) -> None:
        """Open a link and subscribe every channel (from `resume`, else from the last offset
        received); retried with backoff until it works."""
        backoff = BACKOFF_MIN_S
        while True:
            link: _Link | None = None
            try:
                link = self._opening = await self.open_link()
                for channel in self.channels:
                    since = (resume or {}).get(channel) or self.since(channel)
                    payload: dict[str, Any] = {"op": "subscribe", "channel": channel}
                    if since is not None:
                        payload["since"] = since
                    await link.request(self.ids, payload)
                self._link = link
                self._opening = None
                if self._hint is None:
                    self.ready.set()
                return
            except Exception:  # refused (503 while draining), lost, unavailable: again
                if link is not None:
                    link.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()


@dataclass
class Publisher(_Speaker):
    """See the module docstring."""

    url: str
    channels: Sequence[str]
    pause_s: float
    lanes: int = 1
    """Publishes kept in flight at once (each lane waits for its reply)."""
    acked: dict[str, list[str]] = field(default_factory=dict)
    failed: int = 0
    """Publishes not acknowledged (refused, or the connection went first)."""

    def __post_init__(self) -> None:
        super().__init__(self.url)
        self._link: _Link | None = None
        self._opening = asyncio.Lock()

    async def _current(self) -> _Link:
        async with self._opening:  # lanes share one link: one of them opens it
            if self._link is None or self._link.lost.done():
                self._link = await self.open_link()
            return self._link

    async def publish(self, channel: str, data: Any) -> str | None:
        """One publish; its offset when acknowledged, else None (and the link is renewed)."""
        try:
            link = await self._current()
            reply = await link.request(
                self.ids, {"op": "publish", "channel": channel, "data": data}
            )
        except Exception:  # unavailable, lost, refused: not acknowledged
            self.failed += 1
            return None
        offset: str = reply["offset"]
        self.acked.setdefault(channel, []).append(offset)
        return offset

    async def run(self, stop: asyncio.Event) -> None:
        counter = itertools.count()

        async def lane() -> None:
            while not stop.is_set():
                n = next(counter)
                if await self.publish(self.channels[n % len(self.channels)], {"n": n}) is None:
                    await asyncio.sleep(BACKOFF_MIN_S)
                await asyncio.sleep(self.pause_s)  # a paced load, not a wait for a condition

        await asyncio.gather(*(lane() for _ in range(self.lanes)))

    def close(self) -> None:
        if self._link is not None:
            self._link.close()


def faults(expected: Sequence[str], got: Sequence[str]) -> dict[str, int]:
    """`got` (offsets as received) against `expected` (the acknowledged ones after the
    client's start): lost, duplicated, out of order."""
    seen: set[str] = set()
    top = (-1, -1)
    duplicated = disordered = 0
    for offset in got:
        if offset in seen:
            duplicated += 1
            continue
        seen.add(offset)
        key = parse_offset(offset)
        if key < top:
            disordered += 1
        top = max(top, key)
    return {
        "lost": len(set(expected) - seen),
        "duplicated": duplicated,
        "out_of_order": disordered,
    }


async def stop_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task
