"""Issue 20's protocol acceptance: the protocol suite on one Redis and on a Redis Cluster.

The tests of the wire protocol and the admin API that `test_server.py` and
`test_admin.py` run against an in-process gateway on the in-memory broker run here
again, unchanged, on a gateway with every feature on (protection, two-layer cache)
whose broker is Redis: one real redis-server, and the session's real Redis Cluster of
3 primaries and 3 replicas (``WSFLEET_REDIS_CLUSTER=true``: sharded pub/sub, MOVED and
ASK followed, redis-py's RedisCluster for the cache and limits). Subscribe, switch,
publish, ``since`` recovery, metadata and the admin API must behave the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.redis.broker import RedisBroker
from wsfleet_gateway.backends.redis.cluster_broker import RedisClusterBroker

from tests.gateway.helpers import make_settings
from tests.gateway.test_admin import (  # noqa: F401  (collected here again)
    test_bad_admin_requests,
    test_metrics_contract,
    test_publish_and_meta_reach_clients,
    test_server_only_channel_publish_over_http,
    test_writes_need_the_api_key,
)
from tests.gateway.test_server import (  # noqa: F401  (collected here again)
    test_errors_keep_the_connection_working,
    test_pipelined_requests_are_answered_in_order,
    test_publish_reaches_subscribers_once_in_order,
    test_recovery_with_since_after_a_disconnect,
    test_server_only_channel_gets_admin_publishes,
    test_subscribe_reply_has_meta_and_recent_history,
    test_switch_in_one_round_trip_and_no_old_message_after,
    test_welcome,
)
from wsfleet.services import RedisCluster, RedisServer


@pytest.fixture(params=["redis", "cluster"])
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    """An in-process gateway, every feature on, on one Redis or on the Redis Cluster."""
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        await asyncio.to_thread(cluster.flushall)
        settings = make_settings(redis_url=cluster.url, redis_cluster=True, redis_timeout_s=2.0)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = make_settings(redis_url=server.url, redis_timeout_s=2.0)
    gw = Gateway(settings)
    kind = RedisClusterBroker if request.param == "cluster" else RedisBroker
    assert type(gw.broker) is kind
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
