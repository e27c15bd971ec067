"""``wsfleet up --redis-cluster 3``: the local fleet on a Redis Cluster of 3 primaries and
3 replicas; a message published through one gateway reaches subscribers on every gateway,
on channels of every shard; stopping leaves no Redis running."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from wsfleet_gateway.backends.redis.slots import channel_slot

from wsfleet.client import Client
from wsfleet.localfleet.cli import cluster_primaries
from wsfleet.localfleet.fleet import FleetOptions, LocalFleet
from wsfleet.localfleet.manifest import parse_manifest

FLEET = {
    "apiVersion": "wsfleet.io/v1alpha1",
    "kind": "WebSocketFleet",
    "metadata": {"name": "rc", "namespace": "local"},
    "spec": {"replicas": {"min": 2, "max": 2}},
}


def test_a_cluster_needs_three_primaries() -> None:
    assert cluster_primaries("0") == 0
    assert cluster_primaries("3") == 3
    with pytest.raises(argparse.ArgumentTypeError):
        cluster_primaries("2")


async def test_up_with_a_redis_cluster(tmp_path: Path) -> None:
    manifest = parse_manifest(FLEET)
    options = FleetOptions(
        port=0,
        autoscale=False,
        dashboard_port=None,
        auth=False,
        redis_cluster=3,
        workdir=tmp_path,
        scrape_interval_s=5.0,
    )
    fleet = LocalFleet(manifest, options)
    clients: list[Client] = []
    try:
        await fleet.start()
        cluster = fleet.redis_cluster
        assert cluster is not None
        assert len(cluster.nodes) == 6
        assert "Redis Cluster: 3 primaries, 3 replicas" in fleet.summary()
        assert len(fleet.gateways()) == 2
        shards = {port for port, _ in cluster.shards()}
        channels = []
        for i in range(200):  # one channel per shard
            owner = cluster.owner(channel_slot(f"up-{i}"))
            if owner in shards:
                shards.discard(owner)
                channels.append(f"up-{i}")
        for _ in range(6):  # SO_REUSEPORT spreads them over both gateways
            client = await Client.connect(fleet.ws_url)
            clients.append(client)
            for channel in channels:
                await client.subscribe(channel)
        nodes = {c.welcome.node for c in clients if c.welcome is not None}
        for channel in channels:
            await clients[0].publish(channel, {"on": channel})
        for client in clients:
            got = [await client.next_message() for _ in channels]
            assert sorted(m.channel for m in got) == sorted(channels)
        assert len(nodes) >= 1
    finally:
        for client in clients:
            await client.close()
        await fleet.stop()
    assert fleet.redis_cluster is not None
    assert all(node.proc is None for node in fleet.redis_cluster.nodes)
