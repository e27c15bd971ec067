"""Settings of the gateway's protection and cache features (``WSFLEET_*`` env vars).

A separate model so the protection layer stays independent of the core
settings; `GatewaySettings` can inherit it to hold both in one object. Every
field maps onto one ``WSFLEET_<NAME>`` env var (``WSFLEET_AUTH=disabled``,
``WSFLEET_JWT_SECRET``, ``WSFLEET_TIER_CHANNELS='{"free": 3, "paid": 10}'``).

Secrets are `SecretStr` (never printed in reprs or logs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TIERS: dict[str, int] = {"free": 3, "paid": 10}


class ProtectionSettings(BaseSettings):
    """Auth, rate limits, quotas, admission, back-pressure, breaker and cache settings."""

    model_config = SettingsConfigDict(
        env_prefix="WSFLEET_", extra="ignore", use_attribute_docstrings=True
    )

    # --- auth -----------------------------------------------------------------
    auth: Literal["enabled", "disabled"] = "enabled"
    """``disabled`` (or ``--no-auth``) runs without authentication: development only."""
    jwt_secret: SecretStr | None = None
    """HS256 shared secret (``WSFLEET_JWT_SECRET``)."""
    jwt_secret_file: Path | None = None
    """File holding the HS256 secret (a mounted Kubernetes Secret)."""
    jwt_public_key: SecretStr | None = None
    """RS256 public key, PEM text (``WSFLEET_JWT_PUBLIC_KEY``)."""
    jwt_public_key_file: Path | None = None
    """File holding the RS256 public key, PEM (``WSFLEET_JWT_PUBLIC_KEY_FILE``)."""
    jwt_audience: str | None = None
    """Required ``aud`` claim, when set."""
    jwt_issuer: str | None = None
    """Required ``iss`` claim, when set."""
    jwt_leeway_s: float = Field(default=5.0, ge=0)
    """Clock skew tolerated on ``exp``/``nbf`` (seconds)."""

    # --- quotas and rate limits ---------------------------------------------------
    tier_channels: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    """Tier → channels one connection may hold at once (JSON in the env var)."""
    default_tier: str = "free"
    """Tier of a token without a ``tier`` claim."""
    user_connects_per_min: int = Field(default=10, ge=1)
    """New connections per user per minute, counted in Redis across pods."""
    auth_failures_per_ip_per_min: int = Field(default=20, ge=1)
    """Failed authentications per client IP per minute before the IP is refused."""
    rate_window_s: float = Field(default=60.0, gt=0)
    """Window of both rate limits (seconds)."""

    # --- admission and back-pressure ------------------------------------------------
    max_connections: int = Field(default=10000, ge=1)
    """Connections this gateway holds at most (above: close 4009)."""
    ready_below_fraction: float = Field(default=0.9, gt=0, le=1)
    """Readiness turns false at this share of ``max_connections``."""
    trust_forwarded_for: bool = False
    """Take the client IP from ``X-Forwarded-For`` (only behind a proxy that sets it)."""
    send_buffer_bytes: int = Field(default=1 << 20, ge=1024)
    """Per-connection outgoing buffer cap; a connection above it is a slow consumer (4010)."""
    bandwidth_bytes_per_s: int = Field(default=102400, ge=0)
    """Inbound bytes per second one connection may send (0: no cap); over it: ``rate_limited``."""
    bandwidth_burst_s: float = Field(default=2.0, gt=0)
    """Bucket size in seconds of ``bandwidth_bytes_per_s`` (at least ``max_message_bytes``)."""
    bandwidth_max_strikes: int = Field(default=20, ge=1)
    """Rejections (leaking one per second) after which a connection is closed with 4008."""

    # --- circuit breaker ----------------------------------------------------------
    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive Redis failures that open the breaker."""
    breaker_window_s: float = Field(default=10.0, gt=0)
    """The `breaker_failures` must all fall within this many seconds to open it."""
    breaker_reset_s: float = Field(default=5.0, gt=0)
    """Seconds the breaker stays open before a half-open probe."""

    # --- channel cache ------------------------------------------------------------
    cache_meta_ttl_s: float = Field(default=900.0, gt=0)
    """L1 TTL of channel metadata (15 min)."""
    cache_max_bytes: int = Field(default=64 << 20, ge=1024)
    """Memory bound of the L1 cache (bytes, estimated)."""
    cache_cleanup_s: float = Field(default=300.0, gt=0)
    """Interval of the L1 sweep that drops expired entries."""
    prewarm_top: int = Field(default=200, ge=0)
    """Hottest channels loaded into L1 before the gateway reports ready."""
    hot_flush_s: float = Field(default=5.0, gt=0)
    """Interval at which channel popularity counts are flushed to Redis."""

    protection: bool = True
    """False turns off rate limits, audit, cache, breaker and back-pressure (benchmarks)."""

    @property
    def auth_disabled(self) -> bool:
        return self.auth == "disabled"
