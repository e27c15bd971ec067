"""Reference servers speaking the minimum of wire protocol v1 on plain picows.

- The *baseline*: a plain picows broadcast server (channel → set of sockets,
  one encoded frame sent to each subscriber), the floor every gateway figure
  is compared with. No history, metadata, auth, metrics or broker.
- The *delay server*: the same, but every reply leaves `reply_delay_s` after
  its request arrived; the load tool's latency figures are validated against
  it (issue 7: it must report the delay within 1 ms at p50).

``python -m wsfleet.bench.reference_server --port 0 [--reply-delay-ms 20]``
prints one JSON line ``{"event": "reference_server_ready", "port": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import heapq
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

READ_BUFFER_BYTES = 2048


class PreciseTimer:
    """Runs callbacks on the loop at `perf_counter` instants, to ~0.1 ms.

    Event-loop timers round to whole milliseconds (libuv), which would make
    the delay server's "known delay" up to a millisecond wrong; a thread
    sleeping on a condition with a float timeout does not.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="precise-timer", daemon=True)
        self._thread.start()

    def call_at(self, due: float, callback: Callable[[], None]) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, callback))
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()

    def _run(self) -> None:
        with self._cv:
            while not self._closed:
                if not self._heap:
                    self._cv.wait()
                    continue
                due, _seq, callback = self._heap[0]
                wait = due - time.perf_counter()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                with contextlib.suppress(RuntimeError):  # loop closed
                    self._loop.call_soon_threadsafe(callback)


class Hub:
    """Channels and their subscribers; offsets count publishes per channel."""

    def __init__(self, reply_delay_s: float = 0.0) -> None:
        self.reply_delay_s = reply_delay_s
        self.timer: PreciseTimer | None = None
        self.channels: dict[str, set[ReferenceListener]] = {}
        self.seq = 0
        self.connections = 0
        self.listeners: set[ReferenceListener] = set()

    def join(self, channel: str, listener: ReferenceListener) -> None:
        self.channels.setdefault(channel, set()).add(listener)

    def leave(self, channel: str, listener: ReferenceListener) -> None:
        members = self.channels.get(channel)
        if members is not None:
            members.discard(listener)
            if not members:
                del self.channels[channel]

    def publish(self, channel: str, data: Any) -> str:
        self.seq += 1
        now_ms = int(time.time() * 1000)
        offset = f"{now_ms}-{self.seq}"
        frame = (
            f'{{"type":"message","channel":{json.dumps(channel)},"offset":"{offset}",'
            f'"ts":{now_ms},"data":{json.dumps(data, separators=(",", ":"))}}}'
        ).encode()
        for member in self.channels.get(channel, ()):
            transport = member.transport
            if transport is not None:
                transport.send(WSMsgType.TEXT, frame)
        return offset


class ReferenceListener(WSListener):
    """One client connection of a reference server."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.transport: WSTransport | None = None
        self.channels: set[str] = set()
        self._arrived = 0.0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.hub.connections += 1
        self.hub.listeners.add(self)
        welcome = {"type": "welcome", "connection": id(self), "node": "reference", "limits": {}}
        transport.send(WSMsgType.TEXT, json.dumps(welcome).encode())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.hub.connections -= 1
        self.hub.listeners.discard(self)
        for channel in self.channels:
            self.hub.leave(channel, self)
        self.channels.clear()
        self.transport = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type is not WSMsgType.TEXT:
            return
        self._arrived = time.perf_counter()
        try:
            msg = json.loads(frame.get_payload_as_bytes())
        except ValueError:
            self._reply({"type": "error", "code": "bad_request", "message": "not JSON"})
            return
        if not isinstance(msg, dict):
            self._reply({"type": "error", "code": "bad_request", "message": "not an object"})
            return
        self._reply(self._handle(msg))

    def _handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op, rid = msg.get("op"), msg.get("id")
        hub = self.hub
        if op == "subscribe":
            channel = str(msg.get("channel"))
            hub.join(channel, self)
            self.channels.add(channel)
            return _joined("subscribed", rid, channel)
        if op == "switch":
            old, new = str(msg.get("from")), str(msg.get("to"))
            hub.leave(old, self)
            self.channels.discard(old)
            hub.join(new, self)
            self.channels.add(new)
            return _joined("switched", rid, new)
        if op == "unsubscribe":
            channel = str(msg.get("channel"))
            hub.leave(channel, self)
            self.channels.discard(channel)
            return {"type": "unsubscribed", "id": rid, "channel": channel}
        if op == "publish":
            offset = hub.publish(str(msg.get("channel")), msg.get("data"))
            return {"type": "published", "id": rid, "offset": offset}
        if op == "ping":
            return {"type": "pong", "id": rid}
        return {"type": "error", "id": rid, "code": "bad_request", "message": f"unknown op {op!r}"}

    def _reply(self, reply: dict[str, Any]) -> None:
        frame = json.dumps(reply, separators=(",", ":")).encode()
        hub = self.hub
        if hub.reply_delay_s > 0:
            if hub.timer is None:
                hub.timer = PreciseTimer(asyncio.get_running_loop())
            hub.timer.call_at(
                self._arrived + hub.reply_delay_s, functools.partial(self._send, frame)
            )
        else:
            self._send(frame)

    def _send(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.send(WSMsgType.TEXT, frame)


def _joined(kind: str, rid: Any, channel: str) -> dict[str, Any]:
    return {
        "type": kind,
        "id": rid,
        "channel": channel,
        "offset": "0-0",
        "meta": {},
        "history": [],
        "recovered": True,
    }


async def start_reference_server(
    host: str = "127.0.0.1", port: int = 0, reply_delay_s: float = 0.0
) -> tuple[asyncio.Server, Hub]:
    """Start a reference server on this loop; the server (its port: `server_port`) and hub."""
    hub = Hub(reply_delay_s)

    def factory(request: Any) -> WSListener | None:
        return ReferenceListener(hub)

    server = await ws_create_server(
        factory,
        host,
        port,
        read_buffer_init_size=READ_BUFFER_BYTES,
        websocket_handshake_timeout=10,
    )
    return server, hub


def server_port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


async def _serve(host: str, port: int, reply_delay_s: float) -> None:
    server, _hub = await start_reference_server(host, port, reply_delay_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready = {
        "event": "reference_server_ready",
        "host": host,
        "port": server_port(server),
        "pid": os.getpid(),
        "reply_delay_ms": reply_delay_s * 1000,
    }
    print(json.dumps(ready), flush=True)
    await stop.wait()
    server.close()
    if _hub.timer is not None:
        _hub.timer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsfleet.bench.reference_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_serve(args.host, args.port, args.reply_delay_ms / 1000.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
