"""Audit events: one structlog JSON line per security-relevant decision.

Stable event names (the ``event`` field), every line tagged ``audit=true`` and
``node``:

- ``admission_accepted`` (``user``, ``tier``, ``ip``)
- ``admission_rejected`` (``reason``: ``unauthorized``, ``rate_limited``,
  ``auth_flood``, ``node_full``; ``user``/``detail`` when known, ``ip``)
- ``quota_exceeded`` (``user``, ``tier``, ``channel``, ``limit``)
- ``slow_consumer_dropped`` (``user``, ``connection``, ``buffered_bytes``)
- ``breaker_state`` (``old``, ``new``)
- ``bandwidth_exceeded`` (``user``, ``connection``, ``action``: ``rejected`` on the
  first rejection after a quiet spell, ``closed`` when the connection is closed 4008)

Tokens and keys are never passed here.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

ACCEPTED: Final = "admission_accepted"
REJECTED: Final = "admission_rejected"
QUOTA: Final = "quota_exceeded"
SLOW_CONSUMER: Final = "slow_consumer_dropped"
BREAKER: Final = "breaker_state"
BANDWIDTH: Final = "bandwidth_exceeded"

_log = structlog.get_logger("wsfleet.audit")


class AuditLog:
    """Writes audit events of one gateway (`enabled` False: nothing is written)."""

    __slots__ = ("enabled", "node")

    def __init__(self, node: str, enabled: bool = True) -> None:
        self.node = node
        self.enabled = enabled

    def emit(self, event: str, **fields: Any) -> None:
        if self.enabled:
            _log.info(event, audit=True, node=self.node, **fields)

    def warn(self, event: str, **fields: Any) -> None:
        """`emit` at warning level: something was refused, dropped or degraded."""
        if self.enabled:
            _log.warning(event, audit=True, node=self.node, **fields)

    def accepted(self, user: str, tier: str, ip: str) -> None:
        if self.enabled:  # one per connection: no detour through `emit`
            _log.info(ACCEPTED, audit=True, node=self.node, user=user, tier=tier, ip=ip)

    def rejected(self, reason: str, ip: str, user: str | None = None, detail: str = "") -> None:
        self.warn(REJECTED, reason=reason, ip=ip, user=user, detail=detail)

    def quota(self, user: str, tier: str, channel: str, limit: int) -> None:
        self.emit(QUOTA, user=user, tier=tier, channel=channel, limit=limit)

    def slow_consumer(self, user: str, connection: str, buffered_bytes: int) -> None:
        self.warn(SLOW_CONSUMER, user=user, connection=connection, buffered_bytes=buffered_bytes)

    def breaker(self, old: str, new: str) -> None:
        self.warn(BREAKER, old=old, new=new)

    def bandwidth(self, user: str, connection: str, action: str) -> None:
        self.warn(BANDWIDTH, user=user, connection=connection, action=action)
