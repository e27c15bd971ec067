"""The seed URL of a cluster in the forms one Redis takes: an ACL user and password, and
TLS (``rediss://`` with the CA), read once by `url.parse_url` for both of the gateway's
clients: the broker's own connections to every node and redis-py's RedisCluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from wsfleet_gateway.backends.redis.cluster_broker import RedisClusterBroker
from wsfleet_gateway.backends.redis.pool import make_client
from wsfleet_gateway.broker import BrokerUnavailableError, Delivery
from wsfleet_gateway.cache.prewarm import HotTracker

from tests.support.certs import write_certs
from tests.support.waiting import wait_until
from wsfleet.services import RedisCluster


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """3 primaries (no replicas) speaking only TLS, an ACL user required."""
    certs = write_certs(tmp_path_factory.mktemp("certs"))
    with RedisCluster(
        primaries=3,
        replicas=0,
        username="gateway",
        password="s3cret-pw",
        tls=(certs.ca, certs.cert, certs.key),
    ) as cluster:
        yield cluster


async def test_both_clients_reach_every_node_with_user_password_and_tls(
    secure_cluster: RedisCluster,
) -> None:
    url = secure_cluster.url
    assert url.startswith("rediss://gateway:s3cret-pw@")
    got: list[Delivery] = []
    broker = RedisClusterBroker(url, op_timeout_s=3.0)
    await broker.start(got.append)
    client = make_client(url, 3.0, 4, cluster=True)
    try:
        assert broker.available
        assert len(broker.lanes.map.primaries if broker.lanes.map else []) == 3
        channels = [f"tls-{i}" for i in range(12)]  # a few per shard
        for channel in channels:
            await broker.join(channel, None, 5)
        sent = [await broker.publish(c, '"x"') for c in channels]
        await wait_until(lambda: len(got) == len(sent), message="deliveries over TLS")
        assert {d.offset for d in got} == {d.offset for d in sent}
        hot = HotTracker(client)
        for channel in channels:
            hot.touch(channel)
        assert await hot.flush() == len(channels)
        assert set(await hot.top(20)) == set(channels)
        for channel in channels:
            broker.detach(channel)
    finally:
        await client.aclose()
        await broker.close()


async def test_a_wrong_password_or_an_unknown_ca_is_refused(
    secure_cluster: RedisCluster, tmp_path: Path
) -> None:
    wrong = secure_cluster.url.replace("s3cret-pw", "wrong")
    other_ca = write_certs(tmp_path).ca
    untrusted = secure_cluster.url.split("?")[0] + f"?ssl_ca_certs={other_ca}"
    for url in (wrong, untrusted):
        broker = RedisClusterBroker(url, op_timeout_s=1.0)
        await broker.start(lambda d: None)
        try:
            assert not broker.available
            with pytest.raises(BrokerUnavailableError):
                await broker.publish("tls-0", '"x"')
        finally:
            await broker.close()


def test_a_cluster_seed_is_tcp_and_database_0() -> None:
    with pytest.raises(ValueError, match="database 0"):
        RedisClusterBroker("redis://127.0.0.1:1/2")
    with pytest.raises(ValueError, match="TCP"):
        RedisClusterBroker("unix:///tmp/redis.sock")
    with pytest.raises(ValueError, match="database 0"):
        make_client("redis://127.0.0.1:1/2", 1.0, 1, cluster=True)
