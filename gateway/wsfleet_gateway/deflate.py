"""permessage-deflate (RFC 7692): the negotiation, one compression per fan-out message,
and inflating what a client sends with a cap.

The gateway accepts an offer only as ``server_no_context_takeover`` and
``client_no_context_takeover`` (RFC 7692 §7.1.1: a server may add the latter to any
offer). So no connection keeps a compressor or decompressor between messages: a
message is compressed on its own, which makes the compressed bytes of a fan-out message
the same for every subscriber that negotiated compression (`Deflater` compresses a
frame once and hands the same bytes to each), and an idle connection costs no zlib
memory at all (a window of 32 KiB plus tables per direction with context takeover).

- ``server_max_window_bits=N`` in an offer bounds the server's window: compressed with
  ``N`` (9-15). N = 8 is declined (zlib's raw deflate cannot use it): that offer is
  skipped, the next one (or none) is taken.
- ``client_max_window_bits`` (what browsers offer): accepted and honoured by inflating
  with a 15-bit window, which decodes whatever window the client chooses; the server
  never asks for a smaller one.
- Messages below `min_bytes` go uncompressed (RSV1 clear), which RFC 7692 allows on a
  connection that negotiated compression: under a few hundred bytes deflate saves
  little and costs a compressor's set-up.
- Inbound: a compressed message is inflated to at most the gateway's message limit; one
  that would inflate past it (a zip bomb) is refused whole, unread beyond the limit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"
_MIN_WBITS = 9
"""zlib's raw deflate takes 9-15 (a request for 8 cannot be honoured)."""


@dataclass(frozen=True, slots=True)
class Agreement:
    """What was negotiated for one connection."""

    server_max_window_bits: int = 15
    server_max_window_bits_asked: bool = False

    @property
    def header(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value of the 101 response."""
        parts = [EXTENSION, "server_no_context_takeover", "client_no_context_takeover"]
        if self.server_max_window_bits_asked:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        return "; ".join(parts)


def negotiate(offers: str | None) -> Agreement | None:
    """The first acceptable permessage-deflate offer of a ``Sec-WebSocket-Extensions``
    header, or None (no compression)."""
    if not offers:
        return None
    for offer in offers.split(","):
        name, *raw_params = (p.strip() for p in offer.split(";"))
        if name.lower() != EXTENSION:
            continue
        agreement = _accept(raw_params)
        if agreement is not None:
            return agreement
    return None


def _accept(raw_params: list[str]) -> Agreement | None:
    seen: set[str] = set()
    bits, asked = 15, False
    for raw in raw_params:
        if not raw:
            continue
        key, _, value = (s.strip().strip('"') for s in raw.partition("="))
        key = key.lower()
        if key in seen:
            return None  # a parameter twice: not a valid offer
        seen.add(key)
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if value:
                return None
        elif key == "server_max_window_bits":
            if not (value.isascii() and value.isdigit()) or not 8 <= int(value) <= 15:
                return None
            if int(value) < _MIN_WBITS:
                return None  # declined: skip to the next offer
            bits, asked = int(value), True
        elif key == "client_max_window_bits":
            if value and (not (value.isascii() and value.isdigit()) or not 8 <= int(value) <= 15):
                return None
        else:
            return None  # an unknown parameter: this offer cannot be accepted
    return Agreement(bits, asked)


class Deflater:
    """Compresses frames for every connection of one gateway, each frame once.

    The fan-out writes one frame object to many subscribers in a row: the first that
    negotiated compression compresses it, the others get the same bytes (the last frame
    per window size is kept, by identity).
    """

    __slots__ = ("_last", "level", "min_bytes")

    def __init__(self, level: int = 6, min_bytes: int = 256) -> None:
        self.level = level
        self.min_bytes = min_bytes
        self._last: dict[int, tuple[bytes, bytes]] = {}

    def compress(self, frame: bytes, wbits: int = 15) -> bytes:
        """The message's permessage-deflate payload (no context kept)."""
        last = self._last.get(wbits)
        if last is not None and last[0] is frame:
            return last[1]
        compressor = zlib.compressobj(self.level, zlib.DEFLATED, -wbits)
        data = compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH)
        out = data[:-4] if data.endswith(_TAIL) else data
        self._last[wbits] = (frame, out)
        return out


class TooBigError(ValueError):
    """A compressed message inflates past the limit."""


def inflate(payload: bytes | bytearray | memoryview, limit: int) -> bytes:
    """A compressed message's bytes; at most `limit` of them are ever produced."""
    decompressor = zlib.decompressobj(-15)
    try:
        out = decompressor.decompress(bytes(payload) + _TAIL, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"not a deflate stream: {exc}") from exc
    if len(out) > limit or decompressor.unconsumed_tail:
        raise TooBigError(f"inflates past {limit} bytes")
    return out
