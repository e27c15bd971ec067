"""The whole loop on one machine: load → metrics → decision → scale → drain, zero loss.

A local fleet starts at its minimum (one gateway). Load rises (hundreds of
idle connections beside subscribers of busy channels and publishers); the
operator's autoscaler, reading the local Prometheus, scales up. More
subscribers join (spread over every gateway by SO_REUSEPORT). The load drops;
the autoscaler scales down, the local target drains the emptiest gateways and
their subscribers move. Every subscriber must have received every message
published to its channels after it subscribed: counted, none lost, none twice.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.localfleet.traffic import (
    Publisher,
    Subscriber,
    caught_up,
    connect,
    stream_truth,
    tally,
)
from tests.support.waiting import wait_until
from wsfleet.client import Client
from wsfleet.localfleet.fleet import FleetOptions, LocalFleet
from wsfleet.localfleet.manifest import parse_manifest

BULK = 1200
"""Idle connections that make the load (the machine is small and shared)."""
BUSY = [f"busy-{n}" for n in range(4)]

FLEET = {
    "apiVersion": "wsfleet.io/v1alpha1",
    "kind": "WebSocketFleet",
    "metadata": {"name": "e2e", "namespace": "local"},
    "spec": {
        "replicas": {"min": 1, "max": 4},
        "targets": {
            "connectionsPerPod": 250,
            "targetUtilization": 0.8,
            "scaleDownUtilization": 0.4,
            "switchLatencyP95Ms": None,
        },
        "behavior": {
            "tolerance": 0.1,
            "intervalSeconds": 1,
            "scaleUp": {"stabilizationWindowSeconds": 0, "maxPodsPerMinute": 4},
            "scaleDown": {
                "stabilizationWindowSeconds": 4,
                "maxPodsPerMinute": 4,
                "maxPercentPerMinute": 100,
            },
        },
        "limits": {"connectionsPerUserPerMinute": 100000, "maxConnectionsPerPod": 5000},
        "drain": {"gracePeriodSeconds": 15, "reconnectPerSecond": 500},
        "gateway": {
            "extraEnv": {
                "WSFLEET_HISTORY_MAX_LEN": "100000",
                "WSFLEET_HISTORY_RECOVER_LIMIT": "100000",
            }
        },
    },
}


def drain_report(log_path: Path) -> dict[str, object]:
    """The gateway's `drain_finished` log line (it drained rather than died)."""
    for line in log_path.read_text().splitlines():
        if line.startswith("{") and '"drain_finished"' in line:
            event: dict[str, object] = json.loads(line)
            return event
    raise AssertionError(f"no drain_finished in {log_path}")


async def open_bulk(url: str, count: int, token: str | None) -> list[Client]:
    gate = asyncio.Semaphore(50)

    async def one() -> Client:
        async with gate:
            return await connect(url, token)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_fleet_grows_and_shrinks_with_load_and_loses_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    fleet = LocalFleet(
        parse_manifest(FLEET),
        FleetOptions(
            port=0,
            scrape_interval_s=0.5,
            workdir=tmp_path,
            ready_timeout_s=120.0,
            dashboard_port=None,
        ),
        notify=lines.append,
    )
    subscribers: list[Subscriber] = []
    publishers: list[Publisher] = []
    bulk: list[Client] = []
    await fleet.start()
    try:
        assert fleet.supervisor is not None
        assert fleet.target is not None
        assert fleet.redis is not None
        sup, target, url = fleet.supervisor, fleet.target, fleet.ws_url
        assert [g.name for g in sup.serving()] == ["gw-1"]  # replicas.min

        # steady traffic for the whole run: subscribers of busy channels, publishers
        subscribers += [
            await Subscriber.start(url, [BUSY[n % 4], BUSY[(n + 1) % 4]], fleet.token(f"s{n}"))
            for n in range(30)
        ]
        publishers += [
            Publisher(url, BUSY[:2], pause_s=0.04, token=fleet.token("pub-a")),
            Publisher(url, BUSY[2:], pause_s=0.04, token=fleet.token("pub-b")),
        ]
        for publisher in publishers:
            publisher.start()

        # load rises: the autoscaler scales up to max
        bulk = await open_bulk(url, BULK, fleet.token("bulk", tier="free"))
        await wait_until(
            lambda: len(sup.serving()) == 4 and all(p.published_at_least(1) for p in publishers),
            timeout_s=120,
            message="four gateways (max) serving after the autoscaler scaled up",
        )
        ups = [a for a in target.actions if a[1] > a[0]]
        assert ups, target.actions
        assert all("connections" in reason for _f, _t, reason in ups), ups

        # more subscribers join, spread over all four gateways
        subscribers += [
            await Subscriber.start(url, [BUSY[n % 4]], fleet.token(f"late{n}")) for n in range(30)
        ]
        late_nodes = {s.client.welcome.node for s in subscribers[30:] if s.client.welcome}
        assert late_nodes - {"gw-1"}, "some late subscribers landed on new gateways"

        # load drops: the autoscaler scales down, the emptiest gateways drain
        for client in bulk:
            await client.close()
        bulk = []
        await wait_until(
            lambda: len(sup.active()) == 1 and not sup.draining(),
            timeout_s=150,
            message="scaled down to one gateway, drains finished",
        )
        downs = [a for a in target.actions if a[1] < a[0]]
        assert downs, target.actions
        drained = [g for g in sup.exited if g.name != "gw-1"]
        assert {g.name for g in drained} == {"gw-2", "gw-3", "gw-4"}
        assert all(g.exit_code == 0 for g in drained), [(g.name, g.exit_code) for g in drained]
        drains = [drain_report(g.log_path) for g in drained]
        assert all(d["forced"] == 0 for d in drains), drains  # every client left by itself
        assert sum(int(d["reconnects_sent"]) for d in drains) >= 1, drains
        moved = [s for s in subscribers if s.client.reconnects > 0]
        assert moved, "subscribers of drained gateways reconnected"

        # a little more traffic after the drain, then count
        marks = [len(p.acked) for p in publishers]
        await wait_until(
            lambda: all(
                p.published_at_least(m + 20) for p, m in zip(publishers, marks, strict=True)
            ),
            timeout_s=60,
            message="traffic after the drain",
        )
        for publisher in publishers:
            await publisher.stop()
            publisher.check()
        truth = await stream_truth(fleet.redis.url, BUSY)
        acked = {m for p in publishers for m in p.acked}
        assert acked <= {(c, o) for c, offs in truth.items() for o in offs}
        await wait_until(
            lambda: caught_up(subscribers, truth), timeout_s=90, message="subscribers caught up"
        )
        result = tally(subscribers, truth)
        print(f"e2e tally: {result}; moved subscribers: {len(moved)}; actions: {target.actions}")
        assert result.published >= 200
        assert result.expected >= 2000
        assert result.lost == 0
        assert result.duplicated == 0
        assert result.extra == 0
        assert result.delivered == result.expected
        assert any(line.startswith("autoscaler: 4 replicas") for line in lines), lines
    finally:
        for publisher in publishers:
            await publisher.stop()
        for sub in subscribers:
            await sub.stop()
        for client in bulk:
            await client.close()
        await fleet.stop()
    assert not fleet.gateways()
