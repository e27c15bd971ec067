"""Connection admission: who may open a connection on this gateway, and the close code.

Order of checks for a new WebSocket (after the upgrade, so a refusal is a
close code the client can read):

1. node cap: ``max_connections`` open or being admitted → 4009 ``node full``;
2. failed authentication → the client IP's failure counter grows; above
   ``auth_failures_per_ip_per_min`` → 4008 (``auth_flood``), else 4001;
3. an IP over its failure limit → 4008 even with a good token;
4. the user's new-connection rate (``user_connects_per_min``, counted in Redis
   across pods) → 4008 ``rate_limited``; with auth disabled every client is
   ``anonymous``, so the count is kept per client IP instead (`connect_key`):
   one shared count would throttle every client together;

(3 and 4 are one Redis call, `RateLimiter.connect`, batched with concurrent connects)
5. accepted.

Every decision writes an audit event and counts
``wsfleet_admissions_total{result}``; every attempt is also recorded in the sliding
minute behind ``wsfleet_connects_per_minute`` and the top user and top address shares
(`connects.py`), the operator's flood signal. `Admission` holds no per-connection
state; the listener in ``server.py`` calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from wsfleet_gateway.protection.audit import AuditLog
from wsfleet_gateway.protection.auth import Principal
from wsfleet_gateway.protection.metrics import ProtectionMetrics
from wsfleet_gateway.protection.ratelimit import RateLimiter
from wsfleet_gateway.protection.settings import ProtectionSettings

CLOSE_UNAUTHORIZED: Final = 4001
CLOSE_RATE_LIMITED: Final = 4008
CLOSE_NODE_FULL: Final = 4009
CLOSE_SLOW_CONSUMER: Final = 4010

ACCEPTED: Final = "accepted"
UNAUTHORIZED: Final = "unauthorized"
AUTH_FLOOD: Final = "auth_flood"
RATE_LIMITED: Final = "rate_limited"
NODE_FULL: Final = "node_full"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one admission: accepted, or the close code and reason."""

    reason: str
    close_code: int | None = None
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.close_code is None


ACCEPT: Final = Decision(ACCEPTED)
FULL: Final = Decision(NODE_FULL, CLOSE_NODE_FULL, "node full: reconnect to another node")
RATE_LIMIT: Final = Decision(
    RATE_LIMITED, CLOSE_RATE_LIMITED, "rate limited: too many new connections"
)
FLOOD: Final = Decision(AUTH_FLOOD, CLOSE_RATE_LIMITED, "too many failed logins")


def client_ip(peer: object, headers: Mapping[str, str], trust_forwarded_for: bool) -> str:
    """The client address: the first ``X-Forwarded-For`` hop when trusted, else the peer.

    A hop that is not printable ASCII (header bytes arrive surrogate-escaped) is no
    address: the peer is used, so no counter key ever lacks a UTF-8 form."""
    if trust_forwarded_for:
        forwarded = headers.get("x-forwarded-for", "")
        first = forwarded.split(",", 1)[0].strip()
        if first and first.isascii() and first.isprintable():
            return first[:64]
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


def connect_key(user: str, ip: str, auth_disabled: bool) -> str:
    """The rate-limit name a new connection is counted under: its user, or with auth
    disabled (everyone is the one user ``anonymous``) its client IP."""
    return f"conn:anon:{ip}" if auth_disabled else f"conn:{user}"


def node_full(open_connections: int, admitting: int, max_connections: int) -> bool:
    """Pure: no room for one more connection."""
    return open_connections + admitting >= max_connections


def ready_for_more(open_connections: int, max_connections: int, fraction: float) -> bool:
    """Pure: readiness stays true below `fraction` of the cap."""
    return open_connections < max_connections * fraction


class Admission:
    """The admission rules of one gateway (see the module docstring)."""

    def __init__(
        self,
        settings: ProtectionSettings,
        limiter: RateLimiter,
        audit: AuditLog,
        metrics: ProtectionMetrics,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.audit = audit
        self.metrics = metrics

    def _count(self, decision: Decision) -> Decision:
        self.metrics.admission_results.inc(decision.reason)
        return decision

    def _attempt(self, user: str | None, ip: str) -> None:
        """Count one attempt in the flood signal (with auth disabled nobody is a user)."""
        self.metrics.connects.record(None if self.settings.auth_disabled else user, ip)

    def reject_full(self, ip: str, user: str | None) -> Decision:
        self._attempt(user, ip)
        self.audit.rejected(NODE_FULL, ip, user)
        return self._count(FULL)

    async def admit(self, principal: Principal | None, auth_error: str, ip: str) -> Decision:
        """Decide on one authenticated (or failed) connection."""
        s = self.settings
        self._attempt(principal.user if principal is not None else None, ip)
        ip_key = f"authfail:{ip}"
        if principal is None:
            failures = await self.limiter.hit(
                ip_key, s.auth_failures_per_ip_per_min, s.rate_window_s, count_rejected=True
            )
            if not failures.allowed:
                self.audit.rejected(AUTH_FLOOD, ip, None, auth_error)
                return self._count(FLOOD)
            self.audit.rejected(UNAUTHORIZED, ip, None, auth_error)
            return self._count(Decision(UNAUTHORIZED, 4001, f"unauthorized: {auth_error}"))
        _flood, rate = await self.limiter.connect(
            ip_key,
            s.auth_failures_per_ip_per_min,
            connect_key(principal.user, ip, s.auth_disabled),
            s.user_connects_per_min,
            s.rate_window_s,
        )
        if rate is None:  # the address is over its failure limit: the user is not counted
            self.audit.rejected(AUTH_FLOOD, ip, principal.user, "address blocked")
            return self._count(FLOOD)
        if not rate.allowed:
            self.audit.rejected(
                RATE_LIMITED, ip, principal.user, f"{rate.count} connections in the window"
            )
            return self._count(RATE_LIMIT)
        self.audit.accepted(principal.user, principal.tier, ip)
        return self._count(ACCEPT)
