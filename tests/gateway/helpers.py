"""Helpers shared by the gateway tests."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.broker import Delivery
from wsfleet_gateway.channels import Subscription
from wsfleet_gateway.settings import GatewaySettings

API_KEY = "test-api-key"


def make_settings(**overrides: Any) -> GatewaySettings:
    """Settings for an in-process test gateway: free ports, a known API key."""
    values: dict[str, Any] = {
        "port": 0,
        "admin_port": 0,
        "node_name": "test-node",
        "api_key": API_KEY,
        "auth": "disabled",
    }
    values.update(overrides)
    return GatewaySettings(**values)


@dataclass
class Pod:
    """One broker as one gateway pod would use it, recording every delivery."""

    broker: RedisBroker
    got: dict[str, list[Delivery]] = field(default_factory=lambda: defaultdict(list))
    fail_next: int = 0

    def on_delivery(self, delivery: Delivery) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("subscriber blew up")
        self.got[delivery.channel].append(delivery)

    def offsets(self, channel: str) -> list[str]:
        return [d.offset for d in self.got[channel]]


PodFactory = Callable[..., Awaitable[Pod]]


class HubConn:
    """A connection as the `Hub` sees it, recording the frames it is sent."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.subscriptions: dict[str, Subscription] = {}
        self.closed = False
        self.moved = False

    def send(self, frame: bytes) -> None:
        self.frames.append(json.loads(frame))

    deliver = send

    def data(self, channel: str) -> list[Any]:
        """The data of the live `message` frames of `channel`."""
        return [
            f["data"] for f in self.frames if f["type"] == "message" and f["channel"] == channel
        ]

    def seen(self, channel: str) -> list[Any]:
        """Message data in arrival order: the replies' history, then live frames."""
        out: list[Any] = []
        for frame in self.frames:
            if frame["type"] == "subscribed":
                out += [m["data"] for m in frame["history"]]
            elif frame["type"] == "message" and frame["channel"] == channel:
                out.append(frame["data"])
        return out
