"""Fan-out on a Redis Cluster: sharded pub/sub, one connection per primary.

A channel's shard pub/sub channel ``wsf:{<channel>}:p`` lives in the slot of its stream
(one hash tag), so ``SPUBLISH`` from the publish script reaches the subscribers of that
shard only, and its order is the stream's order, as on one Redis.

- `ShardPubSub`: a `PubSubFanout` on one primary with ``SSUBSCRIBE``/``SUNSUBSCRIBE``
  (one command per channel: a command's channels must share a slot). A ``sunsubscribe``
  the node sends on its own (the slot moved away: a migration, a failover) or a
  ``MOVED`` answering an ``SSUBSCRIBE`` makes the channel not ready at once and asks
  `ShardedFanout` to place it again. `adopt` takes a channel moving in: it subscribes it,
  reads the stream from the channel's last dispatched offset and only then dispatches
  the live messages held back meanwhile (duplicates dropped), so nothing published
  while the channel moved is lost or repeated, and the order holds.
- `ShardedFanout`: the interface `RedisBroker` uses (`attach`, `attach_held`, `detach`,
  `is_ready`, `note_offset`, `mark`...) over one `ShardPubSub` per primary. A channel
  lives on the fan-out of the primary serving its slot in the last topology read
  (`ClusterLanes`); every new topology moves the channels whose slot changed hands
  (lingering ones are dropped instead). A repair task reads the topology again while a
  node is down or a channel is misplaced, until every channel is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any, Final

import structlog
from redis.exceptions import RedisError, ResponseError

from wsfleet_gateway.backends.redis.cluster import ClusterLanes
from wsfleet_gateway.backends.redis.pubsub import (
    FanoutStats,
    PubSubFanout,
    StreamReader,
    _Sub,
)
from wsfleet_gateway.backends.redis.resp import Endpoint, RespConnection
from wsfleet_gateway.backends.redis.slots import Address, SlotMap, channel_slot, parse_redirect
from wsfleet_gateway.broker import BrokerUnavailableError, OnDelivery, OnPresenceEvent
from wsfleet_gateway.tasks import cancel_and_wait

log = structlog.get_logger("wsfleet_gateway.backends.redis.shards")

REPAIR_PAUSE_S: Final = 0.1
"""Pause between topology reads while a node is down or a channel is misplaced."""

slot_of = functools.lru_cache(maxsize=1 << 16)(channel_slot)


class ChannelMovedError(BrokerUnavailableError):
    """The node no longer serves the channel's slot: subscribe it where it went."""


class ShardPubSub(PubSubFanout):
    """One primary's shard pub/sub connection (see the module docstring)."""

    SUBSCRIBE = "SSUBSCRIBE"
    UNSUBSCRIBE = "SUNSUBSCRIBE"
    MERGE = False

    def __init__(
        self,
        endpoint: Endpoint,
        streams: StreamReader,
        *,
        on_trouble: Callable[[], None],
        **options: Any,
    ) -> None:
        super().__init__(endpoint, streams, **options)
        self.address: Address = (endpoint.host, endpoint.port)
        self._on_trouble = on_trouble
        self._own_unsubscribes: dict[str, int] = {}
        self._adopting: set[str] = set()
        self.moved_out = 0
        """Channels the node unsubscribed on its own or refused with MOVED."""

    def _subscribe_commands(self, names: list[str]) -> list[list[str]]:
        return [[self.SUBSCRIBE, name] for name in names]

    def _queue(self, conn: RespConnection, command: str, name: str) -> None:
        if command == self.UNSUBSCRIBE:
            self._own_unsubscribes[name] = self._own_unsubscribes.get(name, 0) + 1
        super()._queue(conn, command, name)

    def _drop_connection(self) -> None:
        was_live = self._live
        super()._drop_connection()
        self._own_unsubscribes.clear()
        if was_live and not self._closing:
            self._on_trouble()

    def _confirmed(self, name: str) -> None:
        super()._confirmed(name)
        sub = self._by_name.get(name)
        if sub is not None and sub.buffer is not None:
            sub.ready = False  # still catching up (`_adopt_live`)

    def _on_reply(self, reply: Any) -> None:
        if isinstance(reply, ResponseError):
            self._refused(str(reply))
            return
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind = reply[0]
        syncing = self._syncing
        if kind == "smessage":
            if syncing is not None:
                syncing.buffered.append(reply)
                return
            sub = self._by_name.get(reply[1])
            if sub is not None and sub.buffer is not None:
                sub.buffer.append(reply[2])
            else:
                self._on_message(reply[1], reply[2])
        elif kind == "ssubscribe":
            if syncing is not None:
                syncing.pending.discard(reply[1])
                self._settle_sync()
            self._confirmed(reply[1])
        elif kind == "sunsubscribe":
            self._unsubscribed(reply[1])

    def _settle_sync(self) -> None:
        syncing = self._syncing
        if syncing is not None and not syncing.pending and not syncing.confirmed.done():
            syncing.confirmed.set_result(None)

    def _unsubscribed(self, name: str) -> None:
        own = self._own_unsubscribes.get(name, 0)
        if own:
            if own == 1:
                del self._own_unsubscribes[name]
            else:
                self._own_unsubscribes[name] = own - 1
            return
        sub = self._by_name.get(name)
        if sub is None:
            return
        # the node dropped the channel: its slot moved away
        sub.confirmed = sub.ready = False
        self.moved_out += 1
        self._on_trouble()

    def _refused(self, message: str) -> None:
        """An error reply on the pub/sub connection: an SSUBSCRIBE the node refused."""
        redirect = parse_redirect(message)
        if redirect is None:
            log.warning("redis_shard_pubsub_error", node=self.address, error=message)
            return
        moved = [s for s in self._subs.values() if slot_of(s.channel) == redirect.slot]
        log.info(
            "redis_shard_moved",
            node=f"{self.address[0]}:{self.address[1]}",
            slot=redirect.slot,
            to=f"{redirect.address[0]}:{redirect.address[1]}",
            channels=len(moved),
        )
        syncing = self._syncing
        for sub in moved:
            if sub.confirmed:
                continue
            self.moved_out += 1
            if syncing is not None:
                syncing.pending.discard(sub.name)
            if sub.confirm is not None and not sub.confirm.done():
                sub.confirm.set_exception(ChannelMovedError(f"{sub.channel!r} moved"))
                sub.confirm.exception()
        self._settle_sync()
        self._on_trouble()

    # -- channels moving between nodes ---------------------------------------

    def release(self, channel: str) -> _Sub | None:
        """Take `channel` off this node (its slot moved): its state, for `adopt`."""
        sub = self._subs.pop(channel, None)
        if sub is None:
            return None
        del self._by_name[sub.name]
        self._idle.pop(channel, None)
        self._adopting.discard(channel)
        if sub.confirm is not None and not sub.confirm.done():
            sub.confirm.set_exception(ChannelMovedError(f"{channel!r} moved"))
            sub.confirm.exception()
        conn = self._conn
        if conn is not None and conn.is_open and self._live:
            if sub.confirmed:
                self._queue(conn, self.UNSUBSCRIBE, sub.name)
            elif sub.sent_on is conn:
                self._stale_confirms[sub.name] = self._stale_confirms.get(sub.name, 0) + 1
        return sub

    def adopt(self, moved: _Sub) -> None:
        """Serve a channel that moved here with its references and last offset: it is
        subscribed and caught up from the stream before live messages are dispatched."""
        sub = _Sub(moved.channel, moved.name, refs=moved.refs, last=moved.last, start=moved.start)
        self._subs[sub.channel] = sub
        self._by_name[sub.name] = sub
        if self._live:
            self.resubscribe(sub.channel)
        # not live: the next connection's `_sync` subscribes and catches up every channel

    def orphans(self) -> list[str]:
        """Referenced channels not subscribed on the live connection, none under way."""
        if not self._live:
            return []
        return [
            s.channel
            for s in self._subs.values()
            if s.refs > 0 and not s.confirmed and s.channel not in self._adopting
        ]

    def resubscribe(self, channel: str) -> None:
        if channel not in self._adopting and not self._closing:
            self._adopting.add(channel)
            self._spawn(self._adopt_live(channel), "wsfleet-shard-adopt")

    async def _adopt_live(self, channel: str) -> None:
        sub = self._subs.get(channel)
        try:
            if sub is None or not self._live:
                return
            sub.buffer = []
            sub.ready = False
            async with asyncio.timeout(self.op_timeout_s):
                await asyncio.shield(self._subscribe(sub))
            await self._catch_up(sub)
            if self._subs.get(channel) is not sub or not sub.confirmed:
                return
            held, sub.buffer = sub.buffer, None
            for payload in held or []:
                self._on_message(sub.name, payload)
            sub.ready = self._live
        except (RedisError, OSError, TimeoutError, BrokerUnavailableError) as exc:
            log.info(
                "redis_shard_adopt_failed",
                node=f"{self.address[0]}:{self.address[1]}",
                channel=channel,
                error=repr(exc),
            )
            self._on_trouble()
        finally:
            self._adopting.discard(channel)
            if sub is not None:
                sub.buffer = None


class ShardedFanout:
    """`PubSubFanout`'s interface over one `ShardPubSub` per primary."""

    def __init__(
        self,
        lanes: ClusterLanes,
        streams: StreamReader,
        *,
        linger_s: float = 5.0,
        op_timeout_s: float = 1.0,
        ping_interval_s: float = 5.0,
        backoff_max_s: float = 1.0,
        on_discontinuity: Callable[[str], None] | None = None,
        on_event: OnPresenceEvent | None = None,
    ) -> None:
        self._lanes = lanes
        self._streams = streams
        self._options: dict[str, Any] = {
            "linger_s": linger_s,
            "op_timeout_s": op_timeout_s,
            "ping_interval_s": ping_interval_s,
            "backoff_max_s": backoff_max_s,
            "on_discontinuity": on_discontinuity,
            "on_event": on_event,
        }
        self._on_discontinuity = on_discontinuity
        self.op_timeout_s = op_timeout_s
        self.backoff_max_s = backoff_max_s
        self._nodes: dict[Address, ShardPubSub] = {}
        self._placement: list[Address | None] | None = None
        self._on_delivery: OnDelivery | None = None
        self._trouble = asyncio.Event()
        self._repair: asyncio.Task[None] | None = None
        self._closing = False
        self.moves = 0
        """Channels moved to another node's fan-out."""
        lanes.listeners.append(self._on_topology)

    # -- lifecycle -----------------------------------------------------------

    async def start(self, on_delivery: OnDelivery) -> None:
        """Read the topology; connect to every primary (each waits `op_timeout_s` at most)."""
        self._on_delivery = on_delivery
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.op_timeout_s * 2):
                await self._lanes.topology()
        slot_map = self._lanes.map
        if slot_map is not None and self._placement is None:
            self._on_topology(slot_map)
        await asyncio.gather(*(node.start(on_delivery) for node in list(self._nodes.values())))
        self._repair = asyncio.get_running_loop().create_task(
            self._repair_loop(), name="wsfleet-shard-repair"
        )
        self._lanes.start_refreshing()

    async def close(self) -> None:
        self._closing = True
        await cancel_and_wait(self._repair)
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.close()

    # -- state ---------------------------------------------------------------

    @property
    def live(self) -> bool:
        """Every primary's pub/sub connection is up (and the topology known)."""
        slot_map = self._lanes.map
        if slot_map is None or not slot_map.covered:
            return False
        nodes = self._nodes
        return all(a in nodes and nodes[a].live for a in slot_map.primaries)

    @property
    def stats(self) -> FanoutStats:
        total = FanoutStats()
        for node in self._nodes.values():
            for name, value in vars(node.stats).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    @property
    def nodes(self) -> dict[Address, ShardPubSub]:
        return dict(self._nodes)

    def channels(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for node in self._nodes.values():
            merged.update(node.channels())
        return merged

    def _home(self, channel: str) -> ShardPubSub | None:
        placement = self._placement
        if placement is None:
            return None
        address = placement[slot_of(channel)]
        return None if address is None else self._nodes.get(address)

    def is_ready(self, channel: str) -> bool:
        node = self._home(channel)
        return node is not None and node.is_ready(channel)

    def mark(self, channel: str) -> object:
        node = self._home(channel)
        return None if node is None else node.mark(channel)

    def note_offset(self, channel: str, offset: str) -> None:
        node = self._home(channel)
        if node is not None:
            node.note_offset(channel, offset)

    # -- attach / detach -----------------------------------------------------

    def attach_held(self, channel: str) -> bool:
        node = self._home(channel)
        return node is not None and node.attach_held(channel)

    async def attach(self, channel: str, *, baseline: bool = True) -> None:
        if self._closing:
            raise BrokerUnavailableError("broker closed")
        for _ in range(3):
            node = self._home(channel)
            if node is None:
                raise BrokerUnavailableError(f"no Redis Cluster node serves {channel!r} yet")
            try:
                await node.attach(channel, baseline=baseline)
                return
            except ChannelMovedError:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(self.op_timeout_s):
                        await self._lanes.refresh()
        raise BrokerUnavailableError(f"{channel!r} kept moving between Redis Cluster nodes")

    def detach(self, channel: str) -> None:
        node = self._home(channel)
        if node is not None:
            node.detach(channel)

    # -- topology ------------------------------------------------------------

    def _node(self, address: Address) -> ShardPubSub:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = ShardPubSub(
                self._lanes.endpoint(address),
                self._streams,
                on_trouble=self._trouble.set,
                **self._options,
            )
            if self._on_delivery is not None:  # started: connect it now
                task = asyncio.get_running_loop().create_task(node.start(self._on_delivery))
                task.add_done_callback(_retrieve)
        return node

    def _on_topology(self, slot_map: SlotMap) -> None:
        """A new topology: every primary gets a fan-out; channels whose slot changed hands
        move to their new node's, with their references and last offset."""
        if self._closing:
            return
        placement = list(slot_map.owners)
        self._placement = placement
        for address in slot_map.primaries:
            self._node(address)
        for address, node in list(self._nodes.items()):
            for channel in list(node.channels()):
                owner = placement[slot_of(channel)]
                if owner is None or owner == address:
                    continue
                sub = node.release(channel)
                if sub is None:
                    continue
                if sub.refs > 0:
                    self.moves += 1
                    self._node(owner).adopt(sub)
                elif self._on_discontinuity is not None:
                    self._on_discontinuity(channel)  # lingering: dropped, not moved
            if address not in slot_map.primaries and not node.channels():
                del self._nodes[address]
                task = asyncio.get_running_loop().create_task(node.close())
                task.add_done_callback(_retrieve)
        self._trouble.set()

    def _healthy(self) -> bool:
        return self.live and not any(node.orphans() for node in self._nodes.values())

    async def _repair_loop(self) -> None:
        """While a node is down or a channel misplaced: read the topology again (moving
        channels), subscribe orphaned channels again, pause, repeat."""
        while True:
            await self._trouble.wait()
            self._trouble.clear()
            pause = REPAIR_PAUSE_S
            while True:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(self.op_timeout_s * 2):
                        await self._lanes.refresh()
                for node in list(self._nodes.values()):
                    for channel in node.orphans():
                        node.resubscribe(channel)
                if self._healthy():
                    break
                await asyncio.sleep(pause)
                self._trouble.clear()
                pause = min(pause * 1.5, self.backoff_max_s)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
