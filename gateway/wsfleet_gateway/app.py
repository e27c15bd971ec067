"""`Gateway`: one gateway process's parts wired together.

    gateway = Gateway(GatewaySettings(port=0, admin_port=0))
    await gateway.start()          # broker, WebSocket listener, admin API
    ... gateway.port, gateway.admin_port, gateway.connections ...
    await gateway.stop()           # clients closed with 1001, broker closed

With no broker given, ``settings.redis_url`` picks `RedisBroker`, else the
embedded `MemoryBroker`. With no authenticator given, one is built from the
settings (``jwt_auth.build_authenticator``): a JWT key is required unless
``auth="disabled"``, else `AuthConfigError`. With ``settings.protection``
(the default) the `ProtectionLayer` adds admission, rate limits, the circuit
breaker, the two-layer cache and audit events around the core. With
``settings.presence`` (the default) and a broker that keeps presence (both do),
members are written with every join and refreshed by the heartbeat.
"""

from __future__ import annotations

import importlib

import structlog
from aiohttp import web

from wsfleet_gateway.admin import build_admin_app
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.broker import Broker, HabitStore, PresenceStore
from wsfleet_gateway.channels import Hub
from wsfleet_gateway.drain import DrainResult, drain_gateway
from wsfleet_gateway.layer import ProtectionLayer
from wsfleet_gateway.metrics import GatewayMetrics
from wsfleet_gateway.prefetch import Prefetcher
from wsfleet_gateway.presence import event_matcher
from wsfleet_gateway.protection.auth import Authenticator
from wsfleet_gateway.protection.breaker import CLOSED
from wsfleet_gateway.protection.jwt_auth import build_authenticator
from wsfleet_gateway.server import WsServer
from wsfleet_gateway.session import SessionContext
from wsfleet_gateway.settings import GatewaySettings
from wsfleet_gateway.tasks import cancel_and_wait

log = structlog.get_logger("wsfleet_gateway.app")


def create_broker(settings: GatewaySettings) -> Broker:
    """`RedisBroker` when ``redis_url`` is set (`RedisClusterBroker` with
    ``redis_cluster``), else `MemoryBroker`."""
    if settings.redis_url:
        # imported on demand: the embedded mode never loads the Redis client
        if settings.redis_cluster:
            module = importlib.import_module("wsfleet_gateway.backends.redis.cluster_broker")
            kind = module.RedisClusterBroker
        else:
            kind = importlib.import_module("wsfleet_gateway.backends.redis.broker").RedisBroker
        broker: Broker = kind(
            settings.redis_url,
            publish_durability=settings.publish_durability,
            history_max_len=settings.history_max_len,
            history_max_age_s=settings.history_max_age_s,
            linger_s=settings.linger_s,
            op_timeout_s=settings.redis_timeout_s,
            pool_size=settings.redis_pool_size,
            queue_timeout_s=settings.redis_queue_timeout_s,
            presence_ttl_s=settings.presence_ttl_s,
            habit_half_life_s=settings.prefetch_half_life_s,
            habit_ttl_s=settings.prefetch_model_ttl_s,
        )
        return broker
    return MemoryBroker(
        history_max_len=settings.history_max_len,
        history_max_age_s=settings.history_max_age_s,
        presence_ttl_s=settings.presence_ttl_s,
    )


class Gateway:
    """A running gateway: WebSocket listener, admin API, broker, metrics."""

    def __init__(
        self,
        settings: GatewaySettings | None = None,
        broker: Broker | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.settings = settings if settings is not None else GatewaySettings()
        if authenticator is None:
            authenticator = build_authenticator(self.settings)  # AuthConfigError without a key
        self.broker: Broker = broker if broker is not None else create_broker(self.settings)
        """The message store itself (`RedisBroker` or `MemoryBroker`)."""
        self.metrics = GatewayMetrics(self.settings.node_name)
        self.protection: ProtectionLayer | None = None
        self.store: Broker = self.broker
        """What requests go through: the broker behind the breaker and cache when protected."""
        if self.settings.protection:
            self.protection = ProtectionLayer(self.settings, self.metrics, self.broker)
            self.store = self.protection.broker
        self.presence: PresenceStore | None = None
        """Where members are kept (None: ``presence`` off, or a broker without it)."""
        s = self.settings
        store, keeps = self.store, isinstance(self.broker, PresenceStore)
        if s.presence and keeps and isinstance(store, PresenceStore):
            self.presence = store
        events = event_matcher(s.presence_events_channels) if s.presence_events_channels else None
        self.hub = Hub(self.store, self.metrics, self.presence, events if self.presence else None)
        if self.presence is not None and events is not None:
            self.presence.on_presence_event(self.hub.on_presence_event)
        self.ctx = SessionContext.create(self.settings, self.hub)
        if self.protection is not None:
            self.ctx.audit = self.protection.audit
        self.ctx.prefetch = self._prefetcher()
        self.ws = WsServer(
            self.ctx,
            authenticator,
            self.protection.protection if self.protection is not None else None,
            self.metrics.socket_writes,
        )
        self.draining = False
        self.stopping = False
        self._admin_runner: web.AppRunner | None = None
        self._admin_port: int | None = None
        self._started = False

    def _prefetcher(self) -> Prefetcher | None:
        """The next-channel prefetcher, with ``prefetch`` on and a store that keeps habits."""
        s, habits = self.settings, self.broker
        if not s.prefetch or not isinstance(habits, HabitStore):
            return None
        broker, protection = self.broker, self.protection

        def allowed() -> bool:
            closed = protection is None or protection.breaker.state == CLOSED
            return closed and broker.available

        m = self.metrics
        return Prefetcher(
            habits,
            self.store,
            per_connection=s.prefetch_per_connection,
            max_channels=s.prefetch_max_channels,
            rate_per_s=s.prefetch_per_s,
            hold_s=s.prefetch_hold_s,
            history_limit=s.history_recent,
            allowed=allowed,
            results=m.prefetch,
            outcomes=m.prefetch_joins,
            held_gauge=m.prefetch_held,
        )

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the broker, the WebSocket listener and the admin API."""
        s = self.settings
        await self.store.start(self.hub.on_delivery)
        self._started = True
        try:
            if self.protection is not None:
                await self.protection.start()
            await self.ws.start()
            runner = web.AppRunner(build_admin_app(self), access_log=None, handle_signals=False)
            await runner.setup()
            self._admin_runner = runner
            site = web.TCPSite(runner, s.admin_host, s.admin_port, reuse_port=s.reuse_port)
            await site.start()
            server = site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or ()
            self._admin_port = sockets[0].getsockname()[1] if sockets else s.admin_port
        except BaseException:
            await self.stop()
            raise
        log.debug("gateway_started", node=s.node_name, port=self.port, admin_port=self.admin_port)

    async def shutdown(self) -> DrainResult | None:
        """The SIGTERM path: drain clients (see ``drain.py``), then stop."""
        result = None
        if not self.stopping and not self.draining:
            result = await drain_gateway(self)
        await self.stop()
        return result

    async def stop(self, code: int = 1001, reason: bytes = b"going away") -> None:
        """Close every client (`code`, default 1001 going away) and release everything."""
        if self.stopping:
            return
        self.stopping = True
        await self.ws.stop(code, reason)
        await cancel_and_wait(*self.ctx.workers)
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        if self._started:
            if self.ctx.prefetch is not None:
                await self.ctx.prefetch.close()
            if self.protection is not None:
                await self.protection.close()
            await self.store.close()
            self._started = False

    # --- state -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound WebSocket port (``settings.port`` 0 → the picked one)."""
        return self.ws.port

    @property
    def admin_port(self) -> int:
        """The bound admin HTTP port."""
        assert self._admin_port is not None, "gateway not started"
        return self._admin_port

    @property
    def connections(self) -> int:
        """Open WebSocket connections."""
        return len(self.ws.listeners)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}/ws"

    @property
    def admin_url(self) -> str:
        return f"http://{self.settings.admin_host}:{self.admin_port}"

    def readiness(self) -> dict[str, bool]:
        """Named readiness checks; ready when all are True."""
        checks = {
            "broker": self.broker.available,
            "accepting": self.ws.accepting and not self.draining and not self.stopping,
        }
        if self.protection is not None:
            checks.update(self.protection.readiness(self.connections))
        return checks

    def readiness_detail(self) -> dict[str, object]:
        """Extra facts for ``/readyz`` (breaker state, capacity, cache)."""
        if self.protection is None:
            return {"protection": False}
        return self.protection.detail(self.connections)
