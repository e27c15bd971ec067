"""`RedisBroker`: the `Broker` across pods, on one Redis.

- **publish** runs one Lua script (EVALSHA; reloaded on NOSCRIPT): ``XADD``
  with ``MAXLEN ~ history_max_len``, ``XTRIM MINID`` at Redis ``TIME`` minus
  ``history_max_age_s``, ``PEXPIRE`` of the whole stream after twice that
  age, and ``PUBLISH`` of ``"<offset> <data_json>"``. Atomic, so every pod sees a
  channel's messages in offset order.
- **live fan-out**: `PubSubFanout` (``redis_pubsub.py``) — one pub/sub
  connection per pod, one ref-counted, lingering subscription per channel,
  reconnect with catch-up from the stream.
- **history ring** (``history_ring.py``): for a channel attached on this pod
  (subscribed and caught up), the most recent messages are kept in process,
  seeded by the first history read without ``since`` and then fed by the
  pub/sub reader's ordered dispatch (its reconnect catch-up included). A
  history read the ring can vouch for makes no Redis round trip, so a switch
  between attached channels costs none. The ring is dropped when the
  subscription expires or continuity is in doubt (a catch-up that finds the
  stream trimmed past the last dispatched offset), and re-seeded later.
- **history**: one Lua script trims by age (as a publish would), then reads
  the stream's bookkeeping (``XINFO STREAM``: entries-added,
  recorded-first-entry-id, max-deleted-entry-id) and the entries after
  ``since`` atomically; `assess_recovery` decides `recovered`.
- **meta**: a JSON object in a string key.
- **connections**: every command goes through a `CommandLane`
  (``redis_lane.py``) on connections of this broker's own (``resp.py``: an
  ``asyncio.Protocol`` with hiredis), pipelined per loop pass; the pub/sub
  connection is one more such connection.
- **bursts**: commands go through a `RedisGate` (``redis_pool.py``): at most
  ``pool_size`` in flight, the rest queue (up to ``queue_timeout_s``, then
  `RedisBusyError`, which the breaker does not count); a command's
  ``op_timeout_s`` starts once it is written.
- **outages**: every command is bounded by ``op_timeout_s`` (the lane aborts a
  connection whose oldest command waited that long; opening one is bounded
  the same; no client retries, only a read sent again when the server closed
  its connection); failures raise
  `BrokerUnavailableError` and `available` turns False until Redis answers
  again (a background ``PING`` probe notices, so an idle pod becomes ready
  again too). The pub/sub reader reconnects by itself: no restart needed.

Key layout (``redis_streams.py``): ``wsf:{<channel>}:s`` (stream),
``wsf:{<channel>}:m`` (meta), ``wsf:{<channel>}:p`` (pub/sub channel). The
hash tag ``{<channel>}`` puts all three in one cluster slot.

On a Redis Cluster, `RedisClusterBroker` (``cluster_broker.py``) is this broker with
`ClusterLanes` for its commands (a lane per primary, MOVED and ASK followed) and
`ShardedFanout` for its fan-out (``SSUBSCRIBE`` per primary); its publish script ends
in ``SPUBLISH``. Per channel order still holds: one channel lives on one shard.

**presence** (``presence.py``): a sorted set per channel, written without waiting:
a join's write rides in the lane's batch with the join's history read (`join`'s
``presence``, handed down to the `_call` that sends the read), so a switch stays one
round trip; refreshes, leaves and events go with the next batch. Events travel on the
channel's pub/sub channel with a ``~`` mark (never dispatched as messages).

**durability**: with ``publish_durability="replicas"`` a publish runs its script and
``WAIT 1`` back to back on one connection and is acknowledged only once a replica has
it (`_publish_replicated`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Sequence
from typing import Any, Final

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsfleet_gateway.backends.redis.cluster import ClusterLanes
from wsfleet_gateway.backends.redis.habits import HABIT_LUA, step_args
from wsfleet_gateway.backends.redis.lane import CommandLane
from wsfleet_gateway.backends.redis.pool import RedisGate, SingleFlight
from wsfleet_gateway.backends.redis.presence import (
    event_command,
    parse_read,
    read_commands,
    refresh_commands,
    write_commands,
)
from wsfleet_gateway.backends.redis.pubsub import FanoutStats, PubSubFanout
from wsfleet_gateway.backends.redis.resp import Arg, Endpoint
from wsfleet_gateway.backends.redis.shards import ShardedFanout
from wsfleet_gateway.backends.redis.streams import (
    HISTORY_LUA,
    PUBLISH_LUA,
    StreamState,
    assess_recovery,
    check_since,
    decode_meta,
    delivery_from_entry,
    history_reply_meta,
    meta_key,
    parse_history_reply,
    pubsub_name,
    stream_key,
    ts_of,
)
from wsfleet_gateway.broker import (
    ZERO_OFFSET,
    BadRequestError,
    BrokerUnavailableError,
    Delivery,
    History,
    JSONValue,
    OnDelivery,
    OnPresenceEvent,
    PresenceOp,
    Snapshot,
    encode_data,
    encode_json,
    parse_offset,
    publish_each,
)
from wsfleet_gateway.history_ring import HistoryRings
from wsfleet_gateway.tasks import cancel_and_wait

log = structlog.get_logger("wsfleet_gateway.backends.redis.broker")

LANE_WARM: Final = 4
"""Command connections, all opened at start. The lane pipelines every command of one
loop pass in one write and multiplexes writes, so a burst needs a few, not one each."""

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
DURABILITIES: Final = ("primary", "replicas")
"""``primary``: a publish is acknowledged once its primary ran it. ``replicas``: once
``WAIT`` confirmed a replica has it too (it survives the primary's death)."""


class RedisBroker:
    """The `Broker` protocol on Redis pub/sub and Streams."""

    def __init__(
        self,
        url: str,
        *,
        history_max_len: int = 1000,
        history_max_age_s: float = 86400,
        linger_s: float = 5.0,
        op_timeout_s: float = 1.0,
        ping_interval_s: float = 5.0,
        reconnect_max_s: float = 1.0,
        pool_size: int = 32,
        queue_timeout_s: float = 5.0,
        ring_capacity: int = 64,
        ring_max_bytes: int = 16 << 20,
        publish_durability: str = "primary",
        presence_ttl_s: float = 60.0,
        habit_half_life_s: float = 86400.0,
        habit_ttl_s: float = 30 * 86400.0,
    ) -> None:
        if publish_durability not in DURABILITIES:
            raise ValueError(f"publish_durability must be one of {DURABILITIES}")
        self.url = url
        self.publish_durability = publish_durability
        self._wait_replicas = publish_durability == "replicas"
        self._publish_plain = not self._wait_replicas
        """One Redis, ``primary`` durability: `publish` runs its script inline."""
        self.wait_ms = max(1, int(op_timeout_s * 500))
        """``WAIT 1 wait_ms`` after a publish with ``replicas`` durability (half the op
        timeout: the lane aborts a connection whose command waited the whole of it)."""
        self.history_max_len = history_max_len
        self.history_max_age_ms = max(1, int(history_max_age_s * 1000))
        self.op_timeout_s = op_timeout_s
        self.endpoint = Endpoint.from_url(url)
        self.gate = RedisGate(pool_size, queue_timeout_s)
        """Bounds the commands in flight; a burst queues here instead of opening connections."""
        self._publish_sha = hashlib.sha1(PUBLISH_LUA.encode()).hexdigest()
        self._history_sha = hashlib.sha1(HISTORY_LUA.encode()).hexdigest()
        self._habit_sha = hashlib.sha1(HABIT_LUA.encode()).hexdigest()
        self.habit_half_life_s = habit_half_life_s
        self.habit_ttl_ms = max(1, int(habit_ttl_s * 1000))
        self._scripts: tuple[str, ...] = (HISTORY_LUA, PUBLISH_LUA, HABIT_LUA)
        """Loaded at start (`_warm`)."""
        self._lane: CommandLane | ClusterLanes = CommandLane(self.endpoint, LANE_WARM, op_timeout_s)
        """Every command's connections."""
        self.reads: SingleFlight[
            tuple[str, str | None, int, bool, object], tuple[History, str | None]
        ] = SingleFlight()
        """Identical concurrent stream reads (a burst joining one channel) share one script,
        as long as no message of the channel was dispatched since the read started."""
        self._commands_ok = True
        self._probe: asyncio.Task[None] | None = None
        self._closed = False
        self.rings = HistoryRings(
            ring_capacity, ring_max_bytes, self.history_max_age_ms, history_max_len
        )
        """Recent messages of attached channels (history reads without Redis)."""
        self.presence_ttl_ms = max(1, int(presence_ttl_s * 1000))
        """How long a presence record lives after its last write."""
        self._presence_publish = "PUBLISH"
        """The command that sends a presence event (``SPUBLISH`` on a cluster)."""
        self._on_presence_event: OnPresenceEvent | None = None
        self._presence_pending: set[asyncio.Future[Any]] = set()
        """Presence writes sent and not answered yet (a read of presence waits for them:
        this pod's own joins and leaves are in every presence it answers after them)."""
        self.presence_failures = 0
        """Presence writes that failed (not retried: the next refresh writes again)."""
        self._fanout: PubSubFanout | ShardedFanout = PubSubFanout(
            self.endpoint,
            self,
            linger_s=linger_s,
            op_timeout_s=op_timeout_s,
            ping_interval_s=ping_interval_s,
            backoff_max_s=reconnect_max_s,
            on_discontinuity=self.rings.invalidate,
            on_event=self._presence_event_in,
        )

    # -- lifecycle ---------------------------------------------------------

    async def start(self, on_delivery: OnDelivery) -> None:
        append = self.rings.append

        def deliver(delivery: Delivery) -> None:
            append(delivery)
            on_delivery(delivery)

        await self._fanout.start(deliver)
        await self._warm()

    async def _warm(self) -> None:
        """Open the read lane's connections and load the history script now, so the
        first burst of subscribes to a new pod (a scale-up, a drain's clients arriving)
        pays neither. Best effort: Redis may be down at start (the pod still starts)."""
        try:
            async with asyncio.timeout(self.op_timeout_s * 2):
                await self._lane.warm(LANE_WARM)
                for script in self._scripts:
                    await self._lane.execute("SCRIPT", "LOAD", script)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("redis_warm_up_skipped", error=type(exc).__name__)

    async def close(self) -> None:
        self._closed = True
        probe, self._probe = self._probe, None
        await cancel_and_wait(probe)
        self.reads.cancel_all()
        await self._lane.close()
        await self._fanout.close()
        self.rings.clear()

    @property
    def available(self) -> bool:
        return self._fanout.live and self._commands_ok

    @property
    def stats(self) -> FanoutStats:
        """Pub/sub counters: subscribes, unsubscribes, connects, caught_up, duplicates."""
        return self._fanout.stats

    def attached_channels(self) -> dict[str, int]:
        """Subscribed (or lingering) channel → local reference count."""
        return self._fanout.channels()

    @property
    def lane(self) -> CommandLane | ClusterLanes:
        """The command connections (their counters: `CommandLane.writes`, ...)."""
        return self._lane

    async def _call(
        self,
        what: str,
        *args: Arg,
        repeatable: bool = True,
        script: tuple[str, str] | None = None,
        riders: list[PresenceOp] | None = None,
    ) -> Any:
        """One command on the lane (``script``: EVALSHA of ``(sha, source)`` with ``args``
        as its keys count, keys and arguments), once a gate slot is held
        (`RedisBusyError` when none frees up). Failures become
        `BrokerUnavailableError`; a lost or stuck connection also marks Redis
        unavailable until it answers again. `riders`: presence writes sent just before
        it, in the same write (taken: the list is emptied)."""
        gate = self.gate
        await gate.acquire()
        try:
            if riders:
                self.presence_write(riders)
                riders.clear()
            if script is None:
                reply = await self._lane.execute(*args, repeatable=repeatable)
            else:
                reply = await self._lane.evalsha(script[0], script[1], *args, repeatable=repeatable)
        except _CONNECTION_ERRORS as exc:
            self._command_failed()
            raise self._unavailable(what, exc) from exc
        except RedisError as exc:
            raise BrokerUnavailableError(
                f"redis error during {what}: {type(exc).__name__}: {exc}"
            ) from exc
        except UnicodeEncodeError:  # refused by the lane before it joined a batch
            raise BadRequestError(f"{what}: an argument is not valid Unicode") from None
        finally:
            gate.release()
        self._commands_ok = True
        return reply

    def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailableError:
        """The error a lost, refused or stuck connection becomes."""
        return BrokerUnavailableError(
            f"redis unavailable during {what}: {type(exc).__name__}: {exc}"
        )

    def held_history(self, channel: str, since: str, limit: int) -> History | None:
        """The messages after `since` from the channel's ring, even while the channel is
        not subscribed (its node is down): what this pod delivered, up to its last
        offset; None when the ring does not reach back to `since`. For answers while
        Redis is out (`ProtectedBroker`), never for a live read."""
        return self.rings.read(
            channel, check_since(since), max(0, limit), time.time_ns() // 1_000_000
        )

    def _command_failed(self) -> None:
        """Mark Redis unavailable; a probe marks it available again once it answers."""
        self._commands_ok = False
        if not self._closed and (self._probe is None or self._probe.done()):
            self._probe = asyncio.create_task(self._probe_until_ok(), name="wsfleet-redis-probe")

    async def _probe_until_ok(self) -> None:
        delay = 0.05
        while not self._commands_ok:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._fanout.backoff_max_s)
            with contextlib.suppress(BrokerUnavailableError):
                await self._call("probe", "PING")

    # -- the Broker protocol -----------------------------------------------

    async def _call_many(self, what: str, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """`commands` back to back on one connection (`CommandLane.execute_many`), with
        `_call`'s gate and error mapping; error replies come back as values."""
        gate = self.gate
        await gate.acquire()
        try:
            replies = await self._lane.execute_many(commands)
        except _CONNECTION_ERRORS as exc:
            self._command_failed()
            raise self._unavailable(what, exc) from exc
        except RedisError as exc:
            raise BrokerUnavailableError(
                f"redis error during {what}: {type(exc).__name__}: {exc}"
            ) from exc
        except UnicodeEncodeError:
            raise BadRequestError(f"{what}: an argument is not valid Unicode") from None
        finally:
            gate.release()
        self._commands_ok = True
        return replies

    def _publish_script(self, channel: str, data_json: str) -> tuple[tuple[str, str], list[Arg]]:
        """The publish script and its keys count, keys and arguments."""
        args: list[Arg] = [
            2,
            stream_key(channel),
            pubsub_name(channel),
            data_json,
            self.history_max_len,
            self.history_max_age_ms,
        ]
        return (self._publish_sha, PUBLISH_LUA), args

    async def _publish_replicated(self, channel: str, data_json: str) -> str:
        """The publish script and ``WAIT 1`` on one connection: the offset once a replica
        confirmed it has the message; `BrokerUnavailableError` when none did in time
        (the message may still be kept: the client may publish it again)."""
        (sha, source), args = self._publish_script(channel, data_json)
        commands: list[tuple[Arg, ...]] = [("EVALSHA", sha, *args), ("WAIT", 1, self.wait_ms)]
        replies = await self._call_many("publish", commands)
        if isinstance(replies[0], NoScriptError):  # it did not run: load it, once
            await self._call("publish", "SCRIPT", "LOAD", source)
            replies = await self._call_many("publish", commands)
        offset, acked = replies
        if isinstance(offset, RedisError):
            raise BrokerUnavailableError(f"redis error during publish: {offset}") from offset
        if isinstance(acked, RedisError) or int(acked) < 1:
            raise BrokerUnavailableError(
                f"publish not confirmed by a replica within {self.wait_ms} ms"
                " (publish_durability=replicas): it may or may not be kept"
            )
        return str(offset)

    async def _publish_other(self, channel: str, data_json: str) -> str:
        """A publish other than one node's with ``primary`` durability (`publish`)."""
        if self._wait_replicas:
            return await self._publish_replicated(channel, data_json)
        script, args = self._publish_script(channel, data_json)
        offset = await self._call("publish", *args, script=script, repeatable=False)
        return str(offset)

    async def publish(self, channel: str, data_json: str) -> Delivery:
        if not self._publish_plain:
            offset = await self._publish_other(channel, data_json)
            self.rings.published(channel, parse_offset(offset))
            return Delivery(channel, offset, data_json, ts_of(offset))
        offset = await self._call(
            "publish",
            2,
            stream_key(channel),
            pubsub_name(channel),
            data_json,
            self.history_max_len,
            self.history_max_age_ms,
            script=(self._publish_sha, PUBLISH_LUA),
            repeatable=False,  # a second run would publish twice
        )
        offset = str(offset)
        self.rings.published(channel, parse_offset(offset))
        return Delivery(channel, offset, data_json, ts_of(offset))

    async def publish_many(
        self, channel: str, data_jsons: Sequence[str]
    ) -> list[Delivery | Exception]:
        """`publish` of each, in order. On one Redis with ``primary`` durability the
        scripts go back to back in one write on one connection, a pipeline Redis runs in
        that order (the offsets follow the list, and their pub/sub messages come back
        together: one fan-out pass for the lot); otherwise one after the other."""
        if not self._publish_plain or len(data_jsons) < 2:
            return await publish_each(self, channel, data_jsons)
        head: tuple[Arg, ...] = ("EVALSHA", self._publish_sha, 2)
        keys = (stream_key(channel), pubsub_name(channel))
        tail = (self.history_max_len, self.history_max_age_ms)
        commands = [(*head, *keys, data_json, *tail) for data_json in data_jsons]
        try:
            replies = await self._call_many("publish", commands)
        except BadRequestError:  # one has no UTF-8 form: refused before anything was sent
            return await publish_each(self, channel, data_jsons)
        if any(_no_script(reply) for reply in replies):
            # those did not run (the server lost its scripts): load it, run them again.
            # All of a batch miss alike unless the cache was flushed while it ran.
            await self._call("publish", "SCRIPT", "LOAD", PUBLISH_LUA)
            missed = [c for c, r in zip(commands, replies, strict=True) if _no_script(r)]
            redone = iter(await self._call_many("publish", missed))
            replies = [next(redone) if _no_script(reply) else reply for reply in replies]
        out: list[Delivery | Exception] = []
        for data_json, reply in zip(data_jsons, replies, strict=True):
            if isinstance(reply, RedisError):
                out.append(BrokerUnavailableError(f"redis error during publish: {reply}"))
                continue
            offset = str(reply)
            self.rings.published(channel, parse_offset(offset))
            out.append(Delivery(channel, offset, data_json, ts_of(offset)))
        return out

    async def attach(self, channel: str) -> None:
        await self._fanout.attach(channel)

    def detach(self, channel: str) -> None:
        self._fanout.detach(channel)

    def join_held(self, channel: str, since: str | None, limit: int) -> History | None:
        """`join` without metadata and without awaiting, for a channel this pod holds
        (subscribed, caught up, its ring able to answer): the common switch back.
        None, with nothing taken, when the ring cannot vouch: then await `join`."""
        held = self._ring_read(channel, since, max(0, limit))
        if held is None or not self._fanout.attach_held(channel):
            return None
        return held

    async def join(
        self,
        channel: str,
        since: str | None,
        limit: int,
        *,
        meta: bool = True,
        presence: Sequence[PresenceOp] = (),
    ) -> Snapshot:
        riders = list(presence)  # sent with the read's command (one write), else alone
        try:
            # the read below gives the fan-out its catch-up offset: no extra round trip
            if not self._fanout.attach_held(channel):
                await self._fanout.attach(channel, baseline=False)
            try:
                return await self._read(channel, since, limit, meta, riders)
            except BaseException:
                self._fanout.detach(channel)
                raise
        finally:
            if riders:  # no read took them (served here, shared, or failed before)
                self.presence_write(riders)

    async def read(
        self, channel: str, since: str | None, limit: int, *, meta: bool = True
    ) -> Snapshot:
        return await self._read(channel, since, limit, meta, None)

    async def _read(
        self,
        channel: str,
        since: str | None,
        limit: int,
        meta: bool,
        riders: list[PresenceOp] | None,
    ) -> Snapshot:
        limit = max(0, limit)
        held = self._ring_read(channel, since, limit)  # the common switch: no Redis at all
        if held is None:
            history, raw = await self._read_stream_once(channel, since, limit, meta, riders)
        elif not meta:
            return Snapshot(held, None)
        else:
            history = held
            got = await self._call("get_meta", "GET", meta_key(channel), riders=riders)
            raw = got if isinstance(got, str) else None
        if not meta:
            return Snapshot(history, None)
        return Snapshot(history, encode_json(decode_meta(raw)), raw is not None)

    async def history(self, channel: str, since: str | None, limit: int) -> History:
        return (await self.read(channel, since, limit, meta=False)).history

    def _ring_read(self, channel: str, since: str | None, limit: int) -> History | None:
        """The history from the ring of an attached channel, None when it cannot vouch."""
        since_key = None if since is None else check_since(since)
        if not self._fanout.is_ready(channel):
            return None
        return self.rings.read(channel, since_key, limit, time.time_ns() // 1_000_000)

    async def _read_stream_once(
        self,
        channel: str,
        since: str | None,
        limit: int,
        with_meta: bool,
        riders: list[PresenceOp] | None = None,
    ) -> tuple[History, str | None]:
        """`_read_stream`, shared by identical concurrent reads.

        Only while no message of the channel was dispatched here since the shared read
        started (the fan-out's `mark`): a joiner registers its buffer for live messages
        before it reads, and a message published after the shared read ran at Redis but
        dispatched before the joiner registered would be in neither (issue 17).
        """
        key = (channel, since, limit, with_meta, self._fanout.mark(channel))
        if self.reads.running(key):
            riders = None  # shared: the read is on its way already; the join sends them
        return await self.reads.run(
            key, lambda: self._read_stream(channel, since, limit, with_meta, riders)
        )

    async def _read_stream(
        self,
        channel: str,
        since: str | None,
        limit: int,
        with_meta: bool,
        riders: list[PresenceOp] | None = None,
    ) -> tuple[History, str | None]:
        """One history script run (shared by identical concurrent reads)."""
        seed = since is None and self._fanout.is_ready(channel) and channel not in self.rings
        token: object = None
        count = limit if since is None else limit + 1
        if seed:
            count = max(count, self.rings.capacity)
            token = self.rings.begin_seed(channel)
        keys = (stream_key(channel), meta_key(channel)) if with_meta else (stream_key(channel),)
        try:
            reply = await self._call(
                "history",
                len(keys),
                *keys,
                since or "",
                count,
                self.history_max_age_ms,
                script=(self._history_sha, HISTORY_LUA),
                riders=riders,
            )
        except BaseException:
            if seed:
                self.rings.abort_seed(channel, token)
            raise
        state, rows = parse_history_reply(reply)
        raw = history_reply_meta(reply)
        offset = state.last_id if state.exists else ZERO_OFFSET
        self._fanout.note_offset(channel, offset)
        if seed:
            read = [delivery_from_entry(channel, row) for row in reversed(rows)]
            self.rings.seed(channel, History(read, offset, True), limit, count, token)
            return History(read[max(0, len(read) - limit) :] if limit else [], offset, True), raw
        messages = [delivery_from_entry(channel, row) for row in reversed(rows[:limit])]
        if since is None:
            return History(messages, offset, True), raw
        return History(messages, offset, assess_recovery(state, since, len(rows), limit)), raw

    async def get_meta(self, channel: str) -> dict[str, JSONValue]:
        raw = await self._call("get_meta", "GET", meta_key(channel))
        return decode_meta(raw if isinstance(raw, str) else None)

    async def set_meta(self, channel: str, meta: dict[str, JSONValue]) -> None:
        encoded = encode_data(meta, "the metadata")  # refused alone, before the lane
        await self._call("set_meta", "SET", meta_key(channel), encoded)  # repeatable: a value

    # -- presence (the PresenceStore protocol) -----------------------------

    def presence_write(self, ops: Sequence[PresenceOp]) -> None:
        if ops:
            now_ms = time.time_ns() // 1_000_000
            self._submit_presence(write_commands(ops, now_ms, self.presence_ttl_ms))

    def presence_refresh(self, channel: str, records: Sequence[str]) -> None:
        now_ms = time.time_ns() // 1_000_000
        self._submit_presence(refresh_commands(channel, records, now_ms, self.presence_ttl_ms))

    def presence_event(self, channel: str, frame_json: str) -> None:
        self._submit_presence([event_command(self._presence_publish, channel, frame_json)])

    def on_presence_event(self, handler: OnPresenceEvent) -> None:
        self._on_presence_event = handler

    async def presence_read(self, channel: str) -> list[str]:
        if self._presence_pending:  # this pod's own writes first (their outcome: not ours)
            await asyncio.wait(list(self._presence_pending), timeout=self.op_timeout_s)
        now_ms = time.time_ns() // 1_000_000
        commands = read_commands(channel, now_ms, self.presence_ttl_ms)
        replies = await self._call_many("presence", [*commands])
        try:
            return parse_read(replies)
        except RedisError as exc:
            raise BrokerUnavailableError(f"redis error during presence: {exc}") from exc

    def _submit_presence(self, commands: Sequence[tuple[Arg, ...]]) -> None:
        """Queue presence commands on the lane without waiting (this loop pass's write);
        a failure is counted, never raised (the next refresh writes every record again)."""
        if self._closed:
            return
        lane = self._lane
        for command in commands:
            try:
                future = lane.submit(*command)
            except (RedisError, UnicodeEncodeError, RuntimeError):  # closed, or no UTF-8 form
                self.presence_failures += 1
                continue
            self._presence_pending.add(future)
            future.add_done_callback(self._presence_done)

    def _presence_done(self, future: asyncio.Future[Any]) -> None:
        self._presence_pending.discard(future)
        if future.cancelled():
            return
        if future.exception() is not None:
            self.presence_failures += 1

    def _presence_event_in(self, channel: str, frame_json: str) -> None:
        handler = self._on_presence_event
        if handler is not None:
            handler(channel, frame_json)

    # -- habits (the HabitStore protocol) ---------------------------------

    async def habit_step(
        self, user: str, came_from: str | None, to: str | None, n: int
    ) -> list[str]:
        args = step_args(
            user, came_from, to, time.time(), self.habit_half_life_s, self.habit_ttl_ms, n
        )
        reply = await self._call(
            "habits", *args, repeatable=False, script=(self._habit_sha, HABIT_LUA)
        )
        return [r.decode() if isinstance(r, bytes) else str(r) for r in reply or ()]

    # -- what PubSubFanout reads when it catches up ------------------------

    async def read_after(self, channel: str, offset: str, count: int) -> list[Delivery]:
        key = stream_key(channel)
        rows = await self._call("catch_up", "XRANGE", key, f"({offset}", "+", "COUNT", count)
        if channel in self.rings:
            await self._check_not_trimmed(channel, offset)
        return [delivery_from_entry(channel, row) for row in rows or []]

    async def _check_not_trimmed(self, channel: str, offset: str) -> None:
        """Drop the channel's ring when entries after `offset` may have been trimmed.

        Asked after the read: whatever the read could not see was trimmed before
        it, so the stream's bookkeeping then shows it (a later trim only makes
        this conservative).
        """
        try:
            reply = await self._call("catch_up", "XINFO", "STREAM", stream_key(channel))
        except BrokerUnavailableError as exc:
            if "no such key" not in str(exc).lower():
                raise
            self.rings.invalidate(channel)
            return
        info = dict(zip(reply[::2], reply[1::2], strict=True))
        state = StreamState(
            exists=True,
            length=int(info.get("length") or 0),
            entries_added=int(info.get("entries-added") or 0),
            first_id=str(info.get("recorded-first-entry-id") or ZERO_OFFSET),
            last_id=str(info.get("last-generated-id") or ZERO_OFFSET),
            max_deleted_id=str(info.get("max-deleted-entry-id") or ZERO_OFFSET),
        )
        if not assess_recovery(state, offset, 0, 0):
            self.rings.invalidate(channel)

    async def latest_offset(self, channel: str) -> str:
        rows = await self._call(
            "latest_offset", "XREVRANGE", stream_key(channel), "+", "-", "COUNT", 1
        )
        return str(rows[0][0]) if rows else ZERO_OFFSET


def _no_script(reply: object) -> bool:
    return isinstance(reply, NoScriptError)
