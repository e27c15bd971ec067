"""What a load run is told: one typed options object, shared by CLI and callers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ProgressCallback = Callable[[dict[str, float]], None]


@dataclass
class ScenarioOptions:
    """Knobs of every scenario; each scenario reads the ones it needs.

    Bounds: a run stops at `duration_s` (plus `drain_s` to collect in-flight
    deliveries) or after `max_requests` requests, whichever comes first.
    """

    connections: int = 100
    """photographer: users; wedding-season: base connections (peak = base x peak_factor)."""
    duration_s: float | None = None
    """Wall-clock bound in seconds (default 10; wedding-season: one compressed day)."""
    max_requests: int = 1_000_000
    """Most requests (subscribe, switch, publish, ...) sent in the whole run."""
    channels: int = 200
    """photographer / wedding-season: size of the wedding-channel pool."""
    channels_per_user: int = 15
    """photographer: channels each user cycles through."""
    habit: float = 0.0
    """photographer: share of switches that follow the user's own round (the next of their
    channels, in order) instead of picking by popularity: a photographer with habits,
    which the gateway's prefetch learns. Switches to a channel the connection never
    visited are also timed apart, as ``switch-first``."""
    zipf_s: float = 1.1
    """Skew of channel popularity (0 = uniform)."""
    think_time_s: float = 1.0
    """Mean human pause between a user's actions (log-normal)."""
    publish_probability: float = 0.05
    """photographer: share of actions that publish to the current channel, not switch."""
    coordinators: int = 2
    """venue-broadcast: publishing coordinators, one venue channel each."""
    subscribers_per_channel: int = 100
    """venue-broadcast: subscribers of each venue channel."""
    publish_rate: float = 10.0
    """Publishes per second per coordinator."""
    coordinator_share: float = 0.02
    """wedding-season: share of users that are coordinators publishing at `publish_rate`."""
    payload_bytes: int = 64
    """Padding added to published data."""
    compress: float = 1440.0
    """wedding-season: simulated seconds per real second (1440: a day in a minute)."""
    start_hour: float = 0.0
    """wedding-season: hour of day the compressed day starts at."""
    peak_factor: float = 10.0
    """wedding-season: connections at the evening peak, as a multiple of base."""
    connect_concurrency: int = 100
    """Handshakes in flight at once."""
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 10.0
    drain_s: float = 2.0
    """After the last publish, how long to wait for deliveries still in flight."""
    seed: int = 1
    channel_prefix: str = "lt-"
    """Prefix of every channel name (keeps runs apart on a shared fleet)."""
    token: str | None = None
    """Bearer JWT sent in the Authorization header when set (one token for every connection)."""
    jwt_secret: str | None = None
    """HS256 secret: mint one token per connection instead (``sub`` = a distinct load user),
    so per-user limits (new connections per minute) see many users, as in production."""
    jwt_tier: str = "paid"
    """``tier`` claim of minted tokens."""
    compression: bool = False
    """Offer permessage-deflate on every connection (as browsers do) and inflate what comes
    compressed."""
    allow_remote: bool = False
    """Permit a non-loopback target."""
    progress_interval_s: float = 1.0
    progress: ProgressCallback | None = None
    """Called with a snapshot every interval (the CLI prints a stderr line)."""
    stop: asyncio.Event | None = None
    """Set it to end the run early; the report covers what ran."""
    process_index: int = 0
    """Index of this process in a multi-process run (keeps names and seeds apart)."""
    processes: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ScenarioOptions:
        """Options from a mapping; unknown keys are an error, not silently ignored."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown load-test options: {', '.join(unknown)}")
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The options as JSON-able values (callbacks and events left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("progress", "stop", "token", "jwt_secret"):
                continue
            out[f.name] = getattr(self, f.name)
        out["token_set"] = self.token is not None
        out["jwt_secret_set"] = self.jwt_secret is not None
        return out

    def share(self, index: int, processes: int) -> ScenarioOptions:
        """This process's slice of a multi-process run (counts split, seeds apart)."""

        def part(total: int) -> int:
            return total // processes + (1 if index < total % processes else 0)

        return dataclasses.replace(
            self,
            connections=part(self.connections),
            coordinators=part(self.coordinators),
            max_requests=max(1, part(self.max_requests)),
            seed=self.seed * 1000 + index,
            process_index=index,
            processes=processes,
            progress=None,
            stop=None,
        )
