"""Helpers of the protection and cache tests: protected gateways, tokens, a raw client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

from wsfleet_gateway.app import Gateway
from wsfleet_gateway.protection.jwt_auth import issue_token
from wsfleet_gateway.settings import GatewaySettings

from wsfleet.client import Client, ConnectionClosedError

SECRET = "test-secret-0123456789abcdef-0123456789"
API_KEY = "test-api-key"


def protected_settings(**overrides: Any) -> GatewaySettings:
    """A JWT-protected gateway on free ports (HS256 `SECRET`)."""
    values: dict[str, Any] = {
        "port": 0,
        "admin_port": 0,
        "node_name": "prot-node",
        "api_key": API_KEY,
        "jwt_secret": SECRET,
        "redis_timeout_s": 0.5,
    }
    values.update(overrides)
    return GatewaySettings(**values)


def token(
    sub: str,
    channels: list[str] | None = None,
    tier: str | None = "paid",
    ttl_s: float = 600.0,
    key: str = SECRET,
) -> str:
    return issue_token(key, sub, channels=channels or ["*"], tier=tier, ttl_s=ttl_s)


@contextlib.asynccontextmanager
async def running(settings: GatewaySettings) -> AsyncIterator[Gateway]:
    gw = Gateway(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def close_code_of(url: str, tok: str | None = None) -> int | None:
    """Connect and return the close code the server answers with (None: it let us in)."""
    try:
        client = await Client.connect(url, tok, timeout_s=10.0)
    except ConnectionClosedError as exc:
        return exc.code
    await client.close()
    return None


def frame_bytes(payload: bytes, opcode: int = 0x1, fin: bool = True, rsv1: bool = False) -> bytes:
    """One masked client frame (`rsv1`: the permessage-deflate bit)."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawClient:
    """A blocking WebSocket client on a plain socket: a small receive buffer, no reading
    unless asked (a slow consumer), and any bytes on the wire (fuzzing)."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/ws",
        rcvbuf: int | None = None,
        source: str | None = None,
    ):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:  # another loopback address (127.0.0.0/8): another client IP
            self.sock.bind((source, 0))
        self.sock.settimeout(15.0)
        self.sock.connect((host, port))
        self.host, self.port, self.path = host, port, path
        self.buffer = b""

    def handshake(self, headers: dict[str, str] | None = None, then: bytes = b"") -> bytes:
        """Upgrade (with `then`, e.g. frames, in the same write: before any answer)."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
            "",
            "",
        ]
        self.sock.sendall("\r\n".join(lines).encode() + then)
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def send_frame(
        self, payload: bytes, opcode: int = 0x1, fin: bool = True, rsv1: bool = False
    ) -> None:
        self.sock.sendall(frame_bytes(payload, opcode, fin, rsv1))

    def send_json(self, obj: Any) -> None:
        self.send_frame(json.dumps(obj).encode())

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        return self.recv_frame_bits()[1:]

    def recv_frame_bits(self) -> tuple[bool, int, bytes]:
        """(RSV1, opcode, payload) of the next frame."""
        first, second = self._read(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        return bool(first & 0x40), first & 0x0F, self._read(n)

    def recv_json(self) -> dict[str, Any]:
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x1:
                value: dict[str, Any] = json.loads(payload)
                return value
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise ConnectionError(f"closed by the server: {code}")

    def close_code(self) -> int | None:
        """Read until the close frame (or EOF); its code."""
        try:
            while True:
                opcode, payload = self.recv_frame()
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        except (ConnectionError, OSError):
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


async def raw_client(
    host: str, port: int, headers: dict[str, str] | None = None, rcvbuf: int | None = None
) -> RawClient:
    def make() -> RawClient:
        client = RawClient(host, port, rcvbuf=rcvbuf)
        client.handshake(headers)
        return client

    return await asyncio.to_thread(make)
