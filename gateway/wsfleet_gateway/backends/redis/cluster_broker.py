"""`RedisClusterBroker`: the `Broker` on a Redis Cluster (``--redis-cluster``).

The same broker as `RedisBroker` (history script, rings, single-flight reads, the gate,
durability), on other connections:

- commands go through `ClusterLanes` (``cluster.py``): one `CommandLane` per primary,
  each command to the primary of its key's slot, following ``MOVED`` and ``ASK``,
  reading the topology again when it changes;
- fan-out through `ShardedFanout` (``shards.py``): sharded pub/sub, one connection per
  primary, channels moved (and caught up from their streams) when their slot moves;
- publish runs `PUBLISH_SHARDED_LUA`: the same append, trim and expiry, then
  ``SPUBLISH`` to the channel's shard channel, in one script on the one node serving the
  channel's slot (every key of a channel shares the hash tag ``{<channel>}``), so the
  order per channel holds as on one Redis;
- presence: the channel's sorted set shares its hash tag, so a join's presence write
  goes to the node (and the lane write) of its history read; events go by ``SPUBLISH``.

The URL names one seed node, in the forms `url.parse_url` reads (password, ACL user,
TLS); the other nodes are reached with the same credentials and TLS options at the
addresses ``CLUSTER SLOTS`` gives. A cluster has database 0 only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from wsfleet_gateway.backends.redis.broker import LANE_WARM, RedisBroker
from wsfleet_gateway.backends.redis.cluster import ClusterLanes, ClusterUnavailableError
from wsfleet_gateway.backends.redis.habits import HABIT_LUA
from wsfleet_gateway.backends.redis.pool import ShardUnavailableError
from wsfleet_gateway.backends.redis.resp import Arg
from wsfleet_gateway.backends.redis.shards import ShardedFanout
from wsfleet_gateway.backends.redis.streams import (
    HISTORY_LUA,
    PUBLISH_SHARDED_LUA,
    pubsub_name,
    stream_key,
)
from wsfleet_gateway.broker import BrokerUnavailableError

TOPOLOGY_REFRESH_S = 5.0
"""Seconds between topology reads when nothing asked for one sooner."""


class RedisClusterBroker(RedisBroker):
    """`RedisBroker` on a Redis Cluster (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        linger_s: float = 5.0,
        op_timeout_s: float = 1.0,
        ping_interval_s: float = 5.0,
        reconnect_max_s: float = 1.0,
        topology_refresh_s: float = TOPOLOGY_REFRESH_S,
        **options: Any,
    ) -> None:
        super().__init__(
            url,
            linger_s=linger_s,
            op_timeout_s=op_timeout_s,
            ping_interval_s=ping_interval_s,
            reconnect_max_s=reconnect_max_s,
            **options,
        )
        self.lanes = ClusterLanes(
            self.endpoint, LANE_WARM, op_timeout_s, refresh_s=topology_refresh_s
        )
        self._lane = self.lanes
        self._fanout = ShardedFanout(
            self.lanes,
            self,
            linger_s=linger_s,
            op_timeout_s=op_timeout_s,
            ping_interval_s=ping_interval_s,
            backoff_max_s=reconnect_max_s,
            on_discontinuity=self.rings.invalidate,
            on_event=self._presence_event_in,
        )
        self._presence_publish = "SPUBLISH"
        self._sharded_sha = hashlib.sha1(PUBLISH_SHARDED_LUA.encode()).hexdigest()
        self._scripts = (HISTORY_LUA, PUBLISH_SHARDED_LUA, HABIT_LUA)
        self._publish_plain = False

    @property
    def fanout(self) -> ShardedFanout:
        fanout = self._fanout
        assert isinstance(fanout, ShardedFanout)
        return fanout

    def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailableError:
        """One node out is its shard's trouble (`ShardUnavailableError`, which the breaker
        does not count); no node answering at all is the cluster's."""
        if isinstance(exc, ClusterUnavailableError):
            return super()._unavailable(what, exc)
        return ShardUnavailableError(
            f"redis cluster node unavailable during {what}: {type(exc).__name__}: {exc}"
        )

    def _publish_script(self, channel: str, data_json: str) -> tuple[tuple[str, str], list[Arg]]:
        args: list[Arg] = [
            1,
            stream_key(channel),
            data_json,
            self.history_max_len,
            self.history_max_age_ms,
            pubsub_name(channel),
        ]
        return (self._sharded_sha, PUBLISH_SHARDED_LUA), args
