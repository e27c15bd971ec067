"""Tier quotas: how many channels one connection of a tier may hold at once.

Pure. `TierQuotas.limit_for` feeds `Principal.max_channels`; the session
answers a subscribe above it with ``error quota_exceeded`` and nothing else
changes (the connection and its other channels stay).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class UnknownTierError(ValueError):
    """A token names a tier the gateway has no quota for."""


@dataclass(frozen=True, slots=True)
class TierQuotas:
    """Tier name → channels per connection; `default_tier` for tokens without a tier."""

    channels: Mapping[str, int] = field(default_factory=lambda: {"free": 3, "paid": 10})
    default_tier: str = "free"

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("at least one tier is needed")
        for tier, limit in self.channels.items():
            if not tier or limit < 1:
                raise ValueError(f"tier {tier!r}: the channel quota must be >= 1 (got {limit})")
        if self.default_tier not in self.channels:
            raise ValueError(
                f"default tier {self.default_tier!r} is not one of {sorted(self.channels)}"
            )

    def resolve(self, tier: str | None) -> str:
        """The tier a token's ``tier`` claim names (None: the default tier)."""
        if tier is None:
            return self.default_tier
        if tier not in self.channels:
            raise UnknownTierError(f"unknown tier {tier!r}")
        return tier

    def limit_for(self, tier: str) -> int:
        """Channels a connection of `tier` may hold at once."""
        return self.channels[self.resolve(tier)]


def may_hold(held: int, limit: int, already_member: bool, leaving: bool = False) -> bool:
    """May a connection holding `held` channels join one more (a switch first leaves one)?"""
    if already_member:
        return True
    return held - (1 if leaving else 0) < limit
