"""`ClusterLanes`: the broker's commands on a Redis Cluster, one `CommandLane` per primary.

The same interface as one `CommandLane` (`execute`, `evalsha`, `execute_many`, `warm`,
`close`), so `RedisBroker` runs on either; each command goes to the lane of the primary
serving its key's slot (`slots.command_key`, `slots.key_slot`).

- **Topology**: ``CLUSTER SLOTS``, asked of the seed node (the URL given) and then of
  every node known, in turn, until one answers: at start, every `refresh_s`, and at
  once (single flight) after a ``MOVED``, a lost or refused connection, or a
  ``CLUSTERDOWN``. Node connections take the seed's credentials, database 0 and TLS
  options; only host and port come from the topology.
- **Redirections**: a ``MOVED`` patches the slot's owner and sends the command there; an
  ``ASK`` sends ``ASKING`` and the command, back to back on one connection of the node
  named, once. ``TRYAGAIN`` (a slot mid-migration with its keys split between two
  nodes), ``CLUSTERDOWN``, ``LOADING`` and ``MASTERDOWN`` wait a little and try again.
  Each of these replies means the command did not run, so a publish follows them too;
  all within the command's `timeout_s`, at most `MAX_REDIRECTS` times.
- **A node that fails** (refused, reset, silent): its lane's commands fail as on one
  node (a read is sent again once on another connection; a publish fails with
  `RedisConnectionError`, as it may have run) and the topology is read again; reads
  (``repeatable``) are tried again once the topology changed, within `timeout_s`. A
  lane whose node no longer serves any slot is closed.
- Keyless commands (``PING``, ``SCRIPT LOAD``) go to every primary; the first reply
  is returned once all answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Callable, Sequence
from functools import partial
from operator import ne
from typing import Any, Final

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from wsfleet_gateway.backends.redis.lane import CommandLane
from wsfleet_gateway.backends.redis.resp import Arg, Endpoint, open_connection
from wsfleet_gateway.backends.redis.slots import (
    SLOTS,
    Address,
    SlotMap,
    command_key,
    is_retryable,
    key_slot,
    parse_redirect,
)
from wsfleet_gateway.tasks import cancel_and_wait

log = structlog.get_logger("wsfleet_gateway.backends.redis.cluster")

MAX_REDIRECTS: Final = 16
"""Redirections and retries one command may follow (a migration moves slots one by one)."""
RETRY_PAUSE_S: Final = 0.02
"""First pause before a command answered TRYAGAIN or CLUSTERDOWN is tried again (doubling)."""

_NODE_ERRORS = (RedisConnectionError, TimeoutError, OSError)
OnTopology = Callable[[SlotMap], None]


class ClusterUnavailableError(RedisConnectionError):
    """No node of the cluster answered, or a slot has no primary."""


class ClusterLanes:
    """Commands routed to the primary of their slot (see the module docstring)."""

    def __init__(
        self,
        seed: Endpoint,
        max_conns: int,
        timeout_s: float = 5.0,
        *,
        refresh_s: float = 5.0,
    ) -> None:
        if seed.path is not None:
            raise ValueError("a Redis Cluster is reached over TCP: no unix:// seed")
        if seed.db:
            raise ValueError("a Redis Cluster has database 0 only: drop the /N of the URL")
        self.seed = seed
        self.max_conns = max_conns
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self.map: SlotMap | None = None
        self._announced: list[Address | None] | None = None
        """The owners `listeners` were last told of (`map` is patched by MOVED replies)."""
        self._lanes: dict[Address, CommandLane] = {}
        self._refreshing: asyncio.Task[SlotMap] | None = None
        self._periodic: asyncio.Task[None] | None = None
        self._closing = False
        self.listeners: list[OnTopology] = []
        """Told of every new topology (the sharded fan-out moves its channels)."""
        self.refreshes = 0
        self.moved = 0
        self.asked = 0
        self.retried = 0

    # -- lanes ---------------------------------------------------------------

    def endpoint(self, address: Address) -> Endpoint:
        """The seed's credentials and TLS options at `address`."""
        return dataclasses.replace(self.seed, host=address[0], port=address[1])

    def lane(self, address: Address) -> CommandLane:
        lane = self._lanes.get(address)
        if lane is None:
            lane = self._lanes[address] = CommandLane(
                self.endpoint(address), self.max_conns, self.timeout_s
            )
        return lane

    @property
    def connections(self) -> int:
        return sum(lane.connections for lane in self._lanes.values())

    @property
    def lanes(self) -> dict[Address, CommandLane]:
        return dict(self._lanes)

    async def warm(self, count: int) -> None:
        """Read the topology; open `count` connections to every primary."""
        slot_map = await self.topology()
        await asyncio.gather(*(self.lane(a).warm(count) for a in slot_map.primaries))

    async def close(self) -> None:
        self._closing = True
        await cancel_and_wait(self._refreshing, self._periodic)
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            await lane.close()

    # -- topology ------------------------------------------------------------

    async def topology(self) -> SlotMap:
        """The slot map, read first if none was yet."""
        if self.map is not None:
            return self.map
        return await self.refresh()

    def start_refreshing(self) -> None:
        """Read the topology every `refresh_s` from now on (until `close`)."""
        if self._periodic is None and not self._closing:
            self._periodic = asyncio.get_running_loop().create_task(
                self._refresh_every(), name="wsfleet-cluster-topology"
            )

    async def _refresh_every(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s * (0.8 + random.random() * 0.4))
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self.refresh()

    async def refresh(self) -> SlotMap:
        """Read ``CLUSTER SLOTS`` again (one read at a time: callers share it)."""
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.get_running_loop().create_task(
                self._read_topology(), name="wsfleet-cluster-refresh"
            )
        return await asyncio.shield(task)

    def refresh_soon(self) -> None:
        """Ask for a refresh without waiting for it."""
        if self._closing:
            return
        task = self._refreshing
        if task is None or task.done():
            self._refreshing = asyncio.get_running_loop().create_task(
                self._read_topology(), name="wsfleet-cluster-refresh"
            )
            self._refreshing.add_done_callback(_retrieve)

    async def _read_topology(self) -> SlotMap:
        candidates: list[Address] = []
        seed = (self.seed.host, self.seed.port)
        for address in [seed, *(self.map.nodes() if self.map is not None else [])]:
            if address not in candidates:
                candidates.append(address)
        errors: list[str] = []
        for address in candidates:
            try:
                async with asyncio.timeout(self.timeout_s):
                    conn = await open_connection(self.endpoint(address))
                    try:
                        reply = await conn.call("CLUSTER", "SLOTS")
                    finally:
                        conn.abort()
            except (RedisError, OSError, TimeoutError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {type(exc).__name__}: {exc}")
                continue
            slot_map = SlotMap.from_cluster_slots(reply, address)
            if not slot_map.primaries:
                errors.append(f"{address[0]}:{address[1]}: serves no slot yet")
                continue
            self._adopt(slot_map)
            return slot_map
        raise ClusterUnavailableError("no Redis Cluster node answered: " + "; ".join(errors))

    def _adopt(self, slot_map: SlotMap) -> None:
        old = self._announced
        self.map = slot_map
        self.refreshes += 1
        if old is not None and old == slot_map.owners:
            return
        self._announced = list(slot_map.owners)  # `map` itself is patched by MOVED replies
        log.info(
            "redis_cluster_topology",
            primaries=[f"{h}:{p}" for h, p in slot_map.primaries],
            covered=slot_map.covered,
            slots_changed=SLOTS if old is None else sum(map(ne, old, slot_map.owners)),
        )
        serving = set(slot_map.primaries)
        for address in [a for a in self._lanes if a not in serving]:
            lane = self._lanes.pop(address)
            task = asyncio.get_running_loop().create_task(lane.close(), name="wsfleet-lane-close")
            task.add_done_callback(_retrieve)
        for listener in self.listeners:
            listener(slot_map)

    # -- commands ------------------------------------------------------------

    async def execute(self, *args: Arg, repeatable: bool = True) -> Any:
        """One command's reply on the primary of its key's slot (every primary when it has
        no key); error replies raise."""
        key = command_key(args)
        if key is None:
            return await self._everywhere(args, repeatable)
        return await self._routed(key_slot(key), [args], repeatable, single=True)

    def submit(self, *args: Arg, repeatable: bool = True) -> asyncio.Future[Any]:
        """`execute` without awaiting (`CommandLane.submit`): queued now on the lane of
        the slot's primary when the topology is known, so it joins that lane's write of
        this loop pass; a redirection, a retryable refusal or (`repeatable`) a node
        failure sends it again through `execute`. Otherwise `execute` in a task."""
        key = command_key(args)
        slot_map = self.map
        owner = None
        if key is not None and slot_map is not None and not self._closing:
            owner = slot_map.owner(key_slot(key))
        if owner is None:
            return asyncio.ensure_future(self.execute(*args, repeatable=repeatable))
        first = self.lane(owner).submit(*args, repeatable=repeatable)
        outer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(done: asyncio.Future[Any]) -> None:
            if outer.done():
                return
            if done.cancelled():
                outer.cancel()
                return
            exc = done.exception()
            if exc is None:
                outer.set_result(done.result())
                return
            again = isinstance(exc, ResponseError) and (
                parse_redirect(str(exc)) is not None or is_retryable(str(exc))
            )
            if (again or (repeatable and isinstance(exc, _NODE_ERRORS))) and not self._closing:
                retry = asyncio.ensure_future(self.execute(*args, repeatable=repeatable))
                retry.add_done_callback(partial(_chain, outer))
                return
            outer.set_exception(exc)

        first.add_done_callback(settle)
        return outer

    async def evalsha(self, sha: str, script: str, *args: Arg, repeatable: bool = True) -> Any:
        """``EVALSHA`` on the slot of its first key, loading `script` there when the node
        does not know it yet."""
        try:
            return await self.execute("EVALSHA", sha, *args, repeatable=repeatable)
        except NoScriptError:
            key = command_key(("EVALSHA", sha, *args))
            assert key is not None  # keyless scripts go everywhere and load nowhere
            await self._routed(key_slot(key), [("SCRIPT", "LOAD", script)], True, single=True)
            return await self.execute("EVALSHA", sha, *args, repeatable=repeatable)

    async def execute_many(
        self, commands: Sequence[tuple[Arg, ...]], *, repeatable: bool = False
    ) -> list[Any]:
        """`commands` back to back on one connection of the primary of the first one's
        key (`CommandLane.execute_many`); a redirection of the first sends them all
        again there."""
        key = command_key(commands[0])
        if key is None:
            raise ValueError("execute_many routes by the first command's key")
        replies: list[Any] = await self._routed(
            key_slot(key), list(commands), repeatable, single=False
        )
        return replies

    async def _everywhere(self, args: tuple[Arg, ...], repeatable: bool) -> Any:
        slot_map = await self.topology()
        replies = await asyncio.gather(
            *(self.lane(a).execute(*args, repeatable=repeatable) for a in slot_map.primaries)
        )
        return replies[0]

    async def _routed(
        self,
        slot: int,
        commands: list[tuple[Arg, ...]],
        repeatable: bool,
        *,
        single: bool,
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        asking: Address | None = None
        pause = RETRY_PAUSE_S
        for _ in range(MAX_REDIRECTS):
            if self._closing:
                raise RedisConnectionError("cluster lanes closed")
            slot_map = self.map if self.map is not None else await self.topology()
            address = asking or slot_map.owner(slot)
            if address is None:
                raise ClusterUnavailableError(f"no primary serves slot {slot}")
            lane = self.lane(address)
            try:
                if asking is not None:
                    replies = await lane.execute_many([("ASKING",), *commands])
                    replies = replies[1:]
                elif single:
                    replies = [await lane.execute(*commands[0], repeatable=repeatable)]
                else:
                    replies = await lane.execute_many(commands, repeatable=repeatable)
            except ResponseError as exc:  # the one command's error reply (single)
                replies = [exc]
            except _NODE_ERRORS:
                self.refresh_soon()
                if not repeatable or loop.time() >= deadline:
                    raise
                await self._await_change(slot_map, deadline)
                asking = None
                continue
            first = replies[0]
            asking = None
            if isinstance(first, ResponseError):
                message = str(first)
                redirect = parse_redirect(message)
                if redirect is not None:
                    target = (redirect.address[0] or address[0], redirect.address[1])
                    if redirect.kind == "MOVED":
                        self.moved += 1
                        slot_map.assign(redirect.slot, target)
                        self.refresh_soon()
                    else:
                        self.asked += 1
                        asking = target
                    continue
                if is_retryable(message) and loop.time() < deadline:
                    self.retried += 1
                    if message.startswith("CLUSTERDOWN"):
                        self.refresh_soon()
                    await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                    pause = min(pause * 2, 0.25)
                    continue
                if single:
                    raise first
            return replies[0] if single else replies
        raise ClusterUnavailableError(f"slot {slot}: more than {MAX_REDIRECTS} redirections")

    async def _await_change(self, seen: SlotMap, deadline: float) -> None:
        """Wait (until `deadline`) for a topology other than `seen`, reading it again
        every so often: a dead primary's replica takes over after the node timeout."""
        loop = asyncio.get_running_loop()
        pause = 0.05
        while loop.time() < deadline:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(max(0.01, deadline - loop.time())):
                    current = await self.refresh()
                if current is not seen and not current.same_owners(seen):
                    return
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.5)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _chain(outer: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    """Settle `outer` as `done` settled."""
    if outer.done():
        if not done.cancelled():
            done.exception()  # retrieved
        return
    if done.cancelled():
        outer.cancel()
        return
    exc = done.exception()
    if exc is not None:
        outer.set_exception(exc)
    else:
        outer.set_result(done.result())
