"""Gateway settings: one pydantic-settings model, read from ``WSFLEET_*`` env vars.

Every field maps one to one onto a Helm value and a ``WSFLEET_<NAME>`` env var
(``WSFLEET_PORT``, ``WSFLEET_REDIS_URL``, ...). Units are in the names
(``_s`` seconds, ``_ms`` milliseconds, ``_bytes``) or in the docstrings.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from wsfleet_gateway.protection.settings import ProtectionSettings

SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


def read_somaxconn(path: str = SOMAXCONN_PATH) -> int | None:
    """The kernel's cap on listen backlogs, or None where it cannot be read (not Linux)."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def effective_backlog(requested: int, somaxconn: int | None) -> int:
    """Pure: the backlog to pass to listen(): `requested`, at most `somaxconn` when known."""
    if somaxconn is None or somaxconn <= 0:
        return requested
    return max(1, min(requested, somaxconn))


def default_node_name() -> str:
    """``<hostname>-<pid>``: unique per gateway process on a machine."""
    return f"{socket.gethostname()}-{os.getpid()}"


class GatewaySettings(ProtectionSettings):
    """Everything a gateway process can be told (plus `ProtectionSettings`)."""

    model_config = SettingsConfigDict(
        env_prefix="WSFLEET_", extra="ignore", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    """Interface of the public WebSocket listener (``/ws``)."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Public WebSocket port; 0 picks a free port (see `Gateway.port`)."""
    admin_host: str = "127.0.0.1"
    """Interface of the admin HTTP listener (publish API, health, metrics)."""
    admin_port: int = Field(default=9090, ge=0, le=65535)
    """Admin HTTP port; 0 picks a free port (see `Gateway.admin_port`)."""
    redis_url: str | None = None
    """Redis URL (``redis://host:port/0``); None runs the in-memory broker. With
    `redis_cluster`, one seed node of the cluster (same forms; database 0)."""
    redis_cluster: bool = False
    """`redis_url` is a node of a Redis Cluster: the gateway reads the topology, sends each
    channel's commands to the shard serving its slot and fans out by sharded pub/sub."""
    publish_durability: Literal["primary", "replicas"] = "primary"
    """``primary``: a publish is acknowledged once its primary ran it (a primary dying
    right after may lose it: replication is asynchronous). ``replicas``: only once
    ``WAIT`` confirmed a replica has it (more latency; `unavailable` when no replica
    confirms within half of `redis_timeout_s`)."""
    api_key: SecretStr | None = None
    """Bearer key for the admin write API; when unset every write gets 401."""
    node_name: str = Field(default_factory=default_node_name)
    """This gateway's name in `welcome` frames, logs and metrics."""
    reuse_port: bool = False
    """Bind the public port with SO_REUSEPORT (several local gateways, one port)."""
    listen_backlog: int = Field(default=4096, ge=1)
    """Accept queue of the public port (capped at the kernel's ``net.core.somaxconn``)."""

    history_max_len: int = Field(default=1000, ge=1)
    """Messages kept per channel history (oldest trimmed first)."""
    history_max_age_s: float = Field(default=86400.0, gt=0)
    """Seconds a message stays in a channel's history."""
    history_recent: int = Field(default=10, ge=0)
    """Messages sent in `subscribed.history` for a subscribe without `since`."""
    history_recover_limit: int = Field(default=1000, ge=1)
    """Most messages replayed for a subscribe with `since` (more: recovered=false)."""
    linger_s: float = Field(default=5.0, ge=0)
    """Seconds a channel's broker subscription outlives its last local subscriber."""
    redis_timeout_s: float = Field(default=1.0, gt=0)
    """Seconds before a Redis operation fails with `unavailable` (queueing not included)."""
    redis_pool_size: int = Field(default=32, ge=1)
    """Redis commands in flight at once per client (the pool holds a few more connections)."""
    redis_queue_timeout_s: float = Field(default=5.0, gt=0)
    """Seconds a request may queue for a Redis connection in a burst before `unavailable`."""

    max_message_bytes: int = Field(default=65536, ge=256)
    """Largest client frame accepted (bigger: close 1009) and admin publish body."""
    max_channels_per_connection: int = Field(default=100, ge=1)
    """Channels one connection may hold at once (more: `quota_exceeded`)."""
    heartbeat_s: float = Field(default=30.0, gt=0)
    """Seconds without incoming data before the server pings a client."""
    idle_timeout_s: float = Field(default=60.0, gt=0)
    """Seconds without any incoming data (pong included) before a client is dropped."""
    read_buffer_bytes: int = Field(default=2048, ge=256)
    """Initial per-connection read buffer (grows on demand; small keeps idle memory low)."""
    compression: bool = True
    """permessage-deflate for clients that offer it (no context takeover: see deflate.py)."""
    compression_min_bytes: int = Field(default=256, ge=0)
    """Messages shorter than this go uncompressed on a compressing connection."""
    compression_level: int = Field(default=6, ge=1, le=9)
    """zlib level of the compressed frames (each fan-out message is compressed once)."""

    presence: bool = True
    """Keep who is on each channel (``presence``/``presence_stats`` requests, the admin
    API): a write with every join (in the join's Redis batch: no extra round trip) and
    leave, and a refresh of every member three times per `presence_ttl_s`."""
    presence_ttl_s: float = Field(default=60.0, ge=0.3)
    """Seconds a member outlives its last refresh: a gateway that dies takes its
    members along within this long (its clients reconnect elsewhere meanwhile)."""
    presence_events_channels: list[str] = Field(default_factory=list)
    """Glob patterns (JSON list in the env var) of channels whose members' joins and
    leaves are sent to subscribers as ``join``/``leave`` events: a frame per
    subscriber per join or leave, so none by default. Needs `presence`."""

    prefetch: bool = True
    """Learn each authenticated user's next channel (a decayed first-order model in
    Redis: one command after each join, not waited for) and hold the likeliest here
    before they switch (see prefetch.py). Needs Redis; anonymous users have no habits."""
    prefetch_per_connection: int = Field(default=2, ge=0, le=5)
    """Channels prefetched after each join of a connection (0: learn, never prefetch)."""
    prefetch_max_channels: int = Field(default=2000, ge=0)
    """Most channels this pod holds for prefetch at once (more: skipped, counted)."""
    prefetch_per_s: float = Field(default=200.0, gt=0)
    """Most prefetch joins and connect-time reads per second on this pod."""
    prefetch_hold_s: float = Field(default=60.0, gt=0)
    """Seconds a prefetched channel is held after its last prediction (then it lingers
    `linger_s` more, like any channel its last subscriber left)."""
    prefetch_half_life_s: float = Field(default=86400.0, gt=0)
    """Half-life of a move in the model: yesterday's habits count half of today's."""
    prefetch_model_ttl_s: float = Field(default=30 * 86400.0, gt=0)
    """A user's model is deleted this long after their last move."""

    drain_grace_s: float = Field(default=30.0, ge=0)
    """Seconds a draining gateway waits for clients to move before closing the rest."""
    drain_reconnect_per_s: float = Field(default=500.0, gt=0)
    """Most `reconnect` frames per second sent during a drain (reconnect budget)."""

    log_level: str = "info"
    """structlog level: debug, info, warning, error."""
    log_json: bool = True
    """One JSON object per log line (False: human-readable console lines)."""

    @model_validator(mode="after")
    def _check_timeouts(self) -> GatewaySettings:
        if self.idle_timeout_s <= self.heartbeat_s:
            raise ValueError("idle_timeout_s must be greater than heartbeat_s")
        if self.redis_cluster and not self.redis_url:
            raise ValueError("redis_cluster needs redis_url (a seed node of the cluster)")
        return self

    @property
    def effective_backlog(self) -> int:
        """``listen_backlog`` capped at this kernel's ``somaxconn`` (what listen() gets)."""
        return effective_backlog(self.listen_backlog, read_somaxconn())

    @property
    def api_key_value(self) -> str | None:
        """The admin API key in clear, or None when unset or empty."""
        if self.api_key is None:
            return None
        value = self.api_key.get_secret_value()
        return value or None
