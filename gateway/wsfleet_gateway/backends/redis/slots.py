"""Redis Cluster's key space, pure: hash slots, the slot map, redirections.

- `key_slot`: the slot of a key, as Redis computes it: CRC16 (XMODEM) of the key, or of
  its hash tag (the part between the first ``{`` and the first ``}`` after it, when not
  empty), modulo 16384. Every key of a channel is ``wsf:{<channel>}:...`` and a channel
  name holds no brace (`protocol.CHANNEL_RE`), so `channel_slot` is the slot of all of
  them: its stream, its metadata and its shard pub/sub channel.
- `SlotMap`: which primary serves each slot, read from ``CLUSTER SLOTS``; patched by a
  ``MOVED`` reply until the next full read.
- `parse_redirect`: a ``MOVED`` or ``ASK`` error reply as a `Redirect`.
- `command_key`: the key a command of the broker routes by (the first key).

Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

SLOTS: Final = 16384


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE: Final = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM): Redis Cluster's key hash."""
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of `key` that is hashed: its hash tag when it has a non-empty one."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str | bytes) -> int:
    """The cluster slot of `key` (UTF-8 for a str)."""
    data = key.encode() if isinstance(key, str) else key
    return crc16(hash_tag(data)) % SLOTS


def channel_slot(channel: str) -> int:
    """The slot of every key of `channel` (``wsf:{<channel>}:s``, ``:m``, ``:p``)."""
    return crc16(channel.encode()) % SLOTS


Address = tuple[str, int]
"""A node's (host, port)."""


@dataclass(frozen=True, slots=True)
class Redirect:
    """A ``MOVED`` (the slot lives there now) or ``ASK`` (this once, ask there) reply."""

    kind: str
    slot: int
    address: Address


def parse_redirect(message: str) -> Redirect | None:
    """``MOVED 3999 127.0.0.1:6381`` / ``ASK ...`` as a `Redirect`; None for any other
    error. An empty host (``:6381``: the node does not know its own address) is left
    empty: the caller substitutes the host it asked."""
    parts = message.split()
    if len(parts) < 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, sep, port = parts[2].rpartition(":")
    if not sep or not port.isdigit() or not parts[1].isdigit():
        return None
    slot = int(parts[1])
    if not 0 <= slot < SLOTS:
        return None
    return Redirect(parts[0], slot, (host.strip("[]"), int(port)))


RETRYABLE_CODES: Final = ("TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN")
"""Error replies of a command that did not run and may run once the cluster settles
(a slot mid-migration with its keys split, no quorum yet, a node loading its data)."""


def is_retryable(message: str) -> bool:
    return message.split(" ", 1)[0] in RETRYABLE_CODES


@dataclass
class SlotMap:
    """The primary serving each slot, and each primary's replicas."""

    owners: list[Address | None] = field(default_factory=lambda: [None] * SLOTS)
    replicas: dict[Address, list[Address]] = field(default_factory=dict)

    @classmethod
    def from_cluster_slots(cls, reply: Sequence[object], asked: Address) -> SlotMap:
        """From a ``CLUSTER SLOTS`` reply (``[[start, end, [host, port, id, ...], replica
        ...], ...]``), asked of the node at `asked` (an empty host or ``?`` means its
        host)."""
        made = cls()
        for row in reply:
            if not isinstance(row, list | tuple) or len(row) < 3:
                continue
            start, end = int(str(row[0])), int(str(row[1]))
            primary = _node_address(row[2], asked)
            if primary is None:
                continue
            made.owners[start : end + 1] = [primary] * (end - start + 1)
            replicas = made.replicas.setdefault(primary, [])
            for node in row[3:]:
                address = _node_address(node, asked)
                if address is not None and address not in replicas:
                    replicas.append(address)
        return made

    def owner(self, slot: int) -> Address | None:
        return self.owners[slot]

    def assign(self, slot: int, address: Address) -> None:
        """A ``MOVED`` said `slot` lives at `address` now."""
        self.owners[slot] = address

    @property
    def primaries(self) -> list[Address]:
        """Every primary serving at least one slot, in slot order."""
        return list(dict.fromkeys(a for a in self.owners if a is not None))

    @property
    def covered(self) -> bool:
        """Every slot has a primary."""
        return all(a is not None for a in self.owners)

    def nodes(self) -> list[Address]:
        """Every known node, primaries first (topology refreshes ask them in turn)."""
        known = self.primaries
        for replicas in self.replicas.values():
            known += [a for a in replicas if a not in known]
        return known

    def same_owners(self, other: SlotMap) -> bool:
        return self.owners == other.owners


def _node_address(node: object, asked: Address) -> Address | None:
    if not isinstance(node, list | tuple) or len(node) < 2:
        return None
    host = str(node[0]) if node[0] is not None else ""
    if host in ("", "?"):
        host = asked[0]
    return host, int(str(node[1]))


_KEY_AT_2: Final = frozenset({"XINFO", "OBJECT", "MEMORY"})


def command_key(args: Sequence[object]) -> str | None:
    """The key a command routes by: its first key, None for a keyless command (``PING``,
    ``SCRIPT LOAD``). Covers the commands the broker sends: ``EVALSHA sha numkeys
    key...``, ``XINFO STREAM key``, and ``CMD key ...`` (GET, SET, XRANGE, XREVRANGE...)."""
    if not args:
        return None
    name = str(args[0]).upper()
    if name in ("EVALSHA", "EVAL", "FCALL"):
        if len(args) > 3 and str(args[2]) != "0":
            return str(args[3])
        return None
    if name in ("PING", "SCRIPT", "WAIT", "CLUSTER", "INFO", "ASKING", "READONLY"):
        return None
    if name in _KEY_AT_2:
        return str(args[2]) if len(args) > 2 else None
    return str(args[1]) if len(args) > 1 else None


def slots_of(channels: Iterable[str]) -> dict[int, list[str]]:
    """Channels grouped by slot."""
    grouped: dict[int, list[str]] = {}
    for channel in channels:
        grouped.setdefault(channel_slot(channel), []).append(channel)
    return grouped
