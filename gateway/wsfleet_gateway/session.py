"""One client connection's requests: ordering, permissions, replies, errors.

A `Session` is transport-agnostic (it writes bytes through `send`), so the
picows listener in ``server.py`` stays a thin parse-and-dispatch layer.

Requests of one connection are answered in the order they arrive: a
`ping` or `unsubscribe` that finds nothing queued is answered at once; any
request that must wait for the broker starts a short-lived worker task that
drains the connection's queue and exits when it is empty (no task per idle
connection).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

import structlog

from wsfleet_gateway.broker import (
    BadRequestError,
    BrokerUnavailableError,
    History,
    PresenceOp,
    is_text,
)
from wsfleet_gateway.channels import Hub, SendFrame, Subscription
from wsfleet_gateway.prefetch import Prefetcher
from wsfleet_gateway.presence import (
    Member,
    encode_member,
    encode_presence,
    encode_presence_stats,
    live_members,
)
from wsfleet_gateway.protection.audit import AuditLog
from wsfleet_gateway.protection.auth import ANONYMOUS, Principal
from wsfleet_gateway.protocol import (
    BAD_REQUEST,
    FORBIDDEN,
    NOT_SUBSCRIBED,
    QUOTA_EXCEEDED,
    UNAVAILABLE,
    Ping,
    Presence,
    ProtocolError,
    Publish,
    Request,
    RequestId,
    Subscribe,
    Switch,
    Unsubscribe,
    encode_error,
    encode_pong,
    encode_published,
    encode_subscribed,
    encode_unsubscribed,
    parse_request,
)
from wsfleet_gateway.settings import GatewaySettings

log = structlog.get_logger("wsfleet_gateway.session")

_ids = itertools.count(1)


def next_connection_id(node: str) -> str:
    """``<node>-<n>``: unique in the fleet while node names are."""
    return f"{node}-{next(_ids)}"


@dataclass(eq=False)
class SessionContext:
    """What every session of one gateway shares."""

    settings: GatewaySettings
    hub: Hub
    op_timeout_s: float
    workers: set[asyncio.Task[None]] = field(default_factory=set)
    sessions: set[Session] = field(default_factory=set)
    audit: AuditLog | None = None
    """Where quota hits are recorded (None: not audited)."""
    prefetch: Prefetcher | None = None
    """Learns each user's next channel and holds it here first (None: prefetch off)."""

    @classmethod
    def create(cls, settings: GatewaySettings, hub: Hub) -> SessionContext:
        # broker operations time out on their own (redis_timeout_s); this bound
        # only guarantees a reply if a broker misbehaves
        return cls(settings, hub, op_timeout_s=settings.redis_timeout_s * 3 + 1.0)

    def limits(self) -> dict[str, int | float]:
        s = self.settings
        return {
            "max_message_bytes": s.max_message_bytes,
            "max_channels": s.max_channels_per_connection,
            "heartbeat_s": s.heartbeat_s,
            "idle_timeout_s": s.idle_timeout_s,
            "history_recover_limit": s.history_recover_limit,
            "bandwidth_bytes_per_s": s.bandwidth_bytes_per_s if s.protection else 0,
        }


class Session:
    """The protocol state of one connection (see the module docstring)."""

    __slots__ = (
        "_queue",
        "_subscriptions",
        "closed",
        "ctx",
        "deliver",
        "habit",
        "id",
        "moved",
        "principal",
        "send",
    )

    def __init__(
        self,
        ctx: SessionContext,
        principal: Principal,
        send: SendFrame,
        conn_id: str,
        deliver: SendFrame | None = None,
    ) -> None:
        self.ctx = ctx
        self.principal = principal
        self.send = send
        """Replies and events: written now (behind any deliveries still queued)."""
        self.deliver = send if deliver is None else deliver
        """Live messages: queued and written with the others of the loop turn."""
        self.id = conn_id
        self._subscriptions: dict[str, Subscription] | None = None
        self.closed = False
        self.moved = False
        """Sent a drain's `reconnect` frame: no more live messages (`Hub.move`)."""
        self._queue: deque[Request] | None = None
        self.habit: tuple[str | None, tuple[str, ...]] | None = None
        """The channel joined last and those prefetched for the next join (`prefetch`)."""
        ctx.sessions.add(self)
        if ctx.prefetch is not None and principal is not ANONYMOUS:
            ctx.prefetch.connected(self, principal.user)

    def may_join(self, channel: str) -> bool:
        return self.principal.may_join(channel)

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """Channel → subscription (owned by the hub); allocated on first use, so an idle
        connection that never subscribed holds no dict."""
        subs = self._subscriptions
        if subs is None:
            subs = self._subscriptions = {}
        return subs

    # --- input -------------------------------------------------------------------

    def receive(self, payload: bytes | str) -> None:
        """Handle one text frame from the client."""
        try:
            request = parse_request(payload)
        except ProtocolError as exc:
            self.reject(exc.request_id, exc.code, exc.message)
            return
        queue = self._queue
        if queue is not None:
            queue.append(request)
        elif isinstance(request, Ping | Unsubscribe):
            self._handle_now(request)
        else:
            self._queue = deque((request,))
            task = asyncio.get_running_loop().create_task(self._work())
            self.ctx.workers.add(task)
            task.add_done_callback(self.ctx.workers.discard)

    def reject(self, rid: RequestId | None, code: str, message: str) -> None:
        """Send an `error` frame and count the rejection."""
        self.ctx.hub.metrics.reject(code)
        if not self.closed:
            self.send(encode_error(rid, code, message))

    def refuse(self, payload: bytes | None, code: str, message: str, reason: str) -> None:
        """Answer a frame that is not handled (its request id when it has one).

        Counted as ``wsfleet_rejections_total{reason}`` (`reason`, not `code`).
        """
        rid: RequestId | None = None
        if payload is not None:
            try:
                rid = parse_request(payload).id
            except ProtocolError as exc:
                rid = exc.request_id
        self.ctx.hub.metrics.reject(reason)
        if not self.closed:
            self.send(encode_error(rid, code, message))

    def close(self) -> None:
        """The connection is gone: drop subscriptions and queued requests."""
        if self.closed:
            return
        self.closed = True
        if self._queue is not None:
            self._queue.clear()
        self.ctx.hub.drop(self)
        self.ctx.sessions.discard(self)

    # --- dispatch ------------------------------------------------------------------

    def _handle_now(self, request: Ping | Unsubscribe) -> None:
        if isinstance(request, Ping):
            self.send(encode_pong(request.id, time.time_ns() // 1_000_000))
        elif self.ctx.hub.unsubscribe(self, request.channel):
            self.send(encode_unsubscribed(request.id, request.channel))
        else:
            self.reject(request.id, NOT_SUBSCRIBED, f"not subscribed to {request.channel!r}")

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        try:
            while queue and not self.closed:
                request = queue.popleft()
                run = (
                    publish_run(request, queue) if queue and isinstance(request, Publish) else None
                )
                if run is not None and len(run) > 1:
                    await self._handle_run(run)
                else:
                    await self._handle(request)
        finally:
            self._queue = None

    async def _handle(self, request: Request) -> None:
        try:
            if isinstance(request, Ping | Unsubscribe):
                self._handle_now(request)
            elif isinstance(request, Subscribe):
                await self._subscribe(request)
            elif isinstance(request, Switch):
                await self._switch(request)
            elif isinstance(request, Presence):
                await self._presence(request)
            else:
                await self._publish(request)
        except Exception as exc:
            self._failed(request, exc)

    def _failed(self, request: Request, exc: Exception) -> None:
        """The error reply of a request that raised `exc`."""
        if isinstance(exc, ProtocolError):
            self.reject(request.id, exc.code, exc.message)
        elif isinstance(exc, BadRequestError):  # the store refused it alone
            self.reject(request.id, BAD_REQUEST, str(exc))
        elif isinstance(exc, BrokerUnavailableError | TimeoutError):
            self.reject(request.id, UNAVAILABLE, f"message store unavailable: {exc or 'timeout'}")
        else:
            log.error(
                "request_failed",
                connection=self.id,
                request=repr(request)[:200],
                exc_info=exc,
            )
            self.reject(request.id, UNAVAILABLE, "internal error")

    def _check_join(self, channel: str, leaving: str | None = None) -> None:
        if not self.principal.may_join(channel):
            raise ProtocolError(FORBIDDEN, f"not allowed to join {channel!r}")
        count = len(self.subscriptions)
        if leaving is not None and leaving in self.subscriptions:
            count -= 1
        limit = self.principal.max_channels or self.ctx.settings.max_channels_per_connection
        if channel not in self.subscriptions and count >= limit:
            if self.ctx.audit is not None:
                p = self.principal
                self.ctx.audit.quota(p.user, p.tier, channel, limit)
            raise ProtocolError(QUOTA_EXCEEDED, f"at most {limit} channels per connection")

    def _limit(self, since: str | None) -> int:
        s = self.ctx.settings
        return s.history_recent if since is None else s.history_recover_limit

    async def _subscribe(self, request: Subscribe) -> None:
        started = time.perf_counter()
        self._check_join(request.channel)
        rid, channel = request.id, request.channel

        def reply(history: History, meta_json: str) -> bytes:
            return encode_subscribed(rid, channel, history, meta_json)

        async with asyncio.timeout(self.ctx.op_timeout_s):
            done = await self.ctx.hub.subscribe(
                self, channel, request.since, self._limit(request.since), reply, self._member()
            )
        if done:
            self.ctx.hub.metrics.subscribe_seconds.observe(time.perf_counter() - started)
            self._joined(None, channel)

    async def _switch(self, request: Switch) -> None:
        started = time.perf_counter()
        if request.from_ not in self.subscriptions:
            raise ProtocolError(NOT_SUBSCRIBED, f"not subscribed to {request.from_!r}")
        self._check_join(request.to, leaving=request.from_)
        rid, from_, to = request.id, request.from_, request.to

        def reply(history: History, meta_json: str) -> bytes:
            return encode_subscribed(rid, to, history, meta_json, from_=from_)

        leaving: list[PresenceOp] = []  # the leave's presence write goes with the join's
        self.ctx.hub.unsubscribe(self, from_, leaving)
        async with asyncio.timeout(self.ctx.op_timeout_s):
            done = await self.ctx.hub.subscribe(
                self, to, request.since, self._limit(request.since), reply, self._member(), leaving
            )
        if done:
            self.ctx.hub.metrics.channel_switch_seconds.observe(time.perf_counter() - started)
            self._joined(from_, to)

    def _joined(self, came_from: str | None, to: str) -> None:
        prefetch = self.ctx.prefetch
        if prefetch is not None and self.principal is not ANONYMOUS:
            prefetch.joined(self, self.principal.user, came_from, to)

    async def _publish(self, request: Publish) -> None:
        if not self.principal.may_publish(request.channel):
            raise ProtocolError(FORBIDDEN, f"not allowed to publish to {request.channel!r}")
        async with asyncio.timeout(self.ctx.op_timeout_s):
            delivery = await self.ctx.hub.broker.publish(request.channel, request.data_json)
        self.ctx.hub.metrics.messages.inc()
        if not self.closed:
            self.send(encode_published(request.id, request.channel, delivery.offset))

    async def _handle_run(self, run: list[Publish]) -> None:
        """Publishes to one channel queued back to back: one `publish_many` (a pipeline
        on Redis), each answered in order as `_publish` would answer it alone."""
        channel = run[0].channel
        try:
            if not self.principal.may_publish(channel):
                raise ProtocolError(FORBIDDEN, f"not allowed to publish to {channel!r}")
            async with asyncio.timeout(self.ctx.op_timeout_s):
                results = await self.ctx.hub.broker.publish_many(
                    channel, [request.data_json for request in run]
                )
        except Exception as exc:
            for request in run:
                self._failed(request, exc)
            return
        messages = self.ctx.hub.metrics.messages
        for request, result in zip(run, results, strict=True):
            if isinstance(result, Exception):
                self._failed(request, result)
                continue
            messages.inc()
            if not self.closed:  # queued: the run's replies leave in one write
                self.deliver(encode_published(request.id, channel, result.offset))

    # --- presence ------------------------------------------------------------------

    def _member(self) -> str | None:
        """This connection's presence record for a channel it joins now (None: off)."""
        if self.ctx.hub.presence is None:
            return None
        user = self.principal.user
        if not is_text(user):  # a lone surrogate from a token: no UTF-8 form
            user = user.encode("utf-8", "replace").decode()
        joined_ms = time.time_ns() // 1_000_000
        return encode_member(Member(joined_ms, self.id, user, self.ctx.settings.node_name))

    async def _presence(self, request: Presence) -> None:
        """``presence`` / ``presence_stats``: allowed as a subscribe to the channel is."""
        channel = request.channel
        if not self.principal.may_join(channel):
            raise ProtocolError(FORBIDDEN, f"not allowed to join {channel!r}")
        store = self.ctx.hub.presence
        if store is None:
            raise ProtocolError(BAD_REQUEST, "presence is off on this server")
        async with asyncio.timeout(self.ctx.op_timeout_s):
            members = live_members(await store.presence_read(channel))
        if self.closed:
            return
        if request.stats:
            self.send(encode_presence_stats(request.id, channel, members))
        else:
            self.send(encode_presence(request.id, channel, members))


MAX_PUBLISH_RUN = 64
"""Publishes one `publish_many` takes from a connection's queue at most."""


def publish_run(first: Publish, queue: deque[Request]) -> list[Publish]:
    """`first` and the publishes to its channel right behind it in `queue` (taken), at
    most `MAX_PUBLISH_RUN` in all: they are answered in order either way, so sending
    them together changes nothing a client can see but the time it takes."""
    run = [first]
    while queue and len(run) < MAX_PUBLISH_RUN:
        request = queue[0]
        if not isinstance(request, Publish) or request.channel != first.channel:
            break
        run.append(request)
        queue.popleft()
    return run
