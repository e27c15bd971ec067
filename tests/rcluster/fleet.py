"""Gateway processes on a Redis Cluster, and outside-style clients that time their acks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wsfleet_gateway.backends.redis.slots import channel_slot
from wsfleet_gateway.broker import parse_offset

from tests.chaos.follower import Follower, Publisher, faults
from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.services import RedisCluster

WAIT_S = 60.0
CLUSTER_ENV = {
    "WSFLEET_AUTH": "disabled",
    "WSFLEET_REDIS_CLUSTER": "true",
    "WSFLEET_USER_CONNECTS_PER_MIN": "1000000",
    "WSFLEET_HISTORY_MAX_LEN": "100000",
    "WSFLEET_HISTORY_RECOVER_LIMIT": "100000",
    "WSFLEET_DRAIN_GRACE_S": "1",
    "WSFLEET_LOG_LEVEL": "info",
}


@contextlib.contextmanager
def cluster_gateways(
    cluster: RedisCluster, count: int = 2, **env: str
) -> Iterator[list[ServerProcess]]:
    """`count` ready gateway processes with ``WSFLEET_REDIS_CLUSTER=true`` on `cluster`."""
    gateways = [
        gateway_process(
            redis_url=cluster.url,
            env={**CLUSTER_ENV, "WSFLEET_NODE_NAME": f"rc-gw-{i}", **env},
        )
        for i in range(count)
    ]
    try:
        for gateway in gateways:
            gateway.launch()
        for gateway in gateways:
            gateway.wait_ready(WAIT_S)
            assert gateway.ready["broker"] == "RedisClusterBroker"
        yield gateways
        for gateway in gateways:
            assert gateway.running, f"gateway died: {gateway.log_tail(10)}"
    finally:
        for gateway in gateways:
            gateway.stop()


@dataclass
class TimedPublisher(Publisher):
    """A `Publisher` that also keeps when each publish was acknowledged."""

    acked_at: list[tuple[float, str, str]] = field(default_factory=list)
    """(monotonic time, channel, offset) per acknowledged publish."""
    failed_at: list[tuple[float, str]] = field(default_factory=list)

    async def publish(self, channel: str, data: Any) -> str | None:
        offset = await super().publish(channel, data)
        if offset is None:
            self.failed_at.append((time.monotonic(), channel))
        else:
            self.acked_at.append((time.monotonic(), channel, offset))
        return offset


def merged(publishers: list[Publisher], channels: list[str]) -> dict[str, list[str]]:
    """Every acknowledged offset per channel, in offset order."""
    out: dict[str, list[str]] = {ch: [] for ch in channels}
    for publisher in publishers:
        for channel, offsets in publisher.acked.items():
            out[channel] += offsets
    return {ch: sorted(o, key=parse_offset) for ch, o in out.items()}


def count_faults(
    followers: list[Follower], acked: dict[str, list[str]]
) -> tuple[dict[str, int], int]:
    """Lost, duplicated and out-of-order acknowledged publishes over every follower and
    channel (counted from each follower's first subscribe reply); and the deliveries."""
    totals = {"lost": 0, "duplicated": 0, "out_of_order": 0}
    deliveries = 0
    for follower in followers:
        for channel in follower.channels:
            start = parse_offset(follower.start[channel])
            expected = [o for o in acked[channel] if parse_offset(o) > start]
            got = follower.got.get(channel, [])
            deliveries += len(got)
            for key, value in faults(expected, got).items():
                totals[key] += value
    return totals, deliveries


def channels_on_every_shard(cluster: RedisCluster, count: int, prefix: str) -> list[str]:
    """`count` channel names, dealt round-robin over the cluster's primaries."""
    owners = {port: [] for port, _ in cluster.shards()}  # type: dict[int, list[str]]
    slots = {}
    for line in cluster.cli(cluster.shards()[0][0], "cluster", "nodes").splitlines():
        fields = line.split()
        if "master" not in fields[2] or len(fields) < 9:
            continue
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for part in fields[8:]:
            if part.startswith("["):
                continue
            lo, _, hi = part.partition("-")
            for slot in range(int(lo), int(hi or lo) + 1):
                slots[slot] = port
    i = 0
    while min(len(v) for v in owners.values()) < -(-count // len(owners)):
        name = f"{prefix}-{i}"
        i += 1
        owners[slots[channel_slot(name)]].append(name)
    dealt: list[str] = []
    columns = list(owners.values())
    for k in range(count):
        dealt.append(columns[k % len(columns)][k // len(columns)])
    return dealt
