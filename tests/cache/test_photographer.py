"""The photographer workload: users switching among 15 wedding channels with Zipf skew.

Two gateway pods on one Redis, 20 photographers, 10,000 switch/subscribe operations while a
planner keeps editing channel metadata. The L1+L2 hit ratio of the channel metadata lookups
is measured from the gateways' own ``wsfleet_cache_requests_total`` and printed.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time

from wsfleet_gateway.app import Gateway

from tests.protection.support import protected_settings, running, token
from tests.protection.test_live_rules import admin, sample
from wsfleet.client import Client
from wsfleet.services import RedisServer

CHANNELS = [f"wedding-{i:02d}" for i in range(15)]
OPS = 10_000
USERS = 20
ZIPF_S = 1.1


def zipf_sampler(rng: random.Random, n: int, s: float) -> list[int]:
    weights = [1 / (rank**s) for rank in range(1, n + 1)]
    total = sum(weights)
    cumulative = list(itertools.accumulate(w / total for w in weights))
    return [bisect.bisect_left(cumulative, rng.random()) for _ in range(OPS // USERS)]


def lookups(gw: Gateway, layer: str, result: str) -> float:
    return sample(gw, "wsfleet_cache_requests_total", {"layer": layer, "result": result})


async def test_photographer_workload_hit_ratio(redis_server: RedisServer) -> None:
    rng = random.Random(20260614)
    settings = {"redis_url": redis_server.url, "user_connects_per_min": 100}
    async with (
        running(protected_settings(node_name="pod-a", **settings)) as a,
        running(protected_settings(node_name="pod-b", **settings)) as b,
    ):
        for i, channel in enumerate(CHANNELS):
            status, _ = await admin(a, "PUT", f"/api/channels/{channel}/meta", {"couple": i})
            assert status == 200
        clients = [
            await Client.connect((a, b)[u % 2].ws_url, token(f"photographer-{u}", ["wedding-*"]))
            for u in range(USERS)
        ]
        plans = [zipf_sampler(rng, len(CHANNELS), ZIPF_S) for _ in range(USERS)]
        done = 0
        edits = 0

        async def photographer(client: Client, plan: list[int]) -> None:
            nonlocal done
            current = CHANNELS[plan[0]]
            await client.subscribe(current)
            done += 1
            for index in plan[1:]:
                target = CHANNELS[index]
                if target == current:
                    await client.subscribe(target)  # re-open the same channel: a refresh
                else:
                    reply = await client.switch(current, target)
                    assert reply.meta.get("couple") == index
                    current = target
                done += 1

        async def planner() -> None:
            nonlocal edits
            while done < OPS:
                channel = rng.choice(CHANNELS)
                gw = rng.choice((a, b))
                index = CHANNELS.index(channel)
                status, _ = await admin(
                    gw, "PUT", f"/api/channels/{channel}/meta", {"couple": index, "edit": edits}
                )
                assert status == 200
                edits += 1
                await asyncio.sleep(0.05)

        started = time.perf_counter()
        try:
            edit_task = asyncio.create_task(planner())
            await asyncio.gather(*(photographer(c, p) for c, p in zip(clients, plans, strict=True)))
            await edit_task
        finally:
            for client in clients:
                await client.close()
        elapsed = time.perf_counter() - started
    assert done == OPS
    l1_hit = lookups(a, "l1", "hit") + lookups(b, "l1", "hit")
    l1_miss = lookups(a, "l1", "miss") + lookups(b, "l1", "miss")
    l2_hit = lookups(a, "l2", "hit") + lookups(b, "l2", "hit")
    l2_miss = lookups(a, "l2", "miss") + lookups(b, "l2", "miss")
    total = l1_hit + l1_miss
    assert total >= OPS  # every subscribe and switch looked the metadata up
    assert l2_hit + l2_miss == l1_miss
    ratio = (l1_hit + l2_hit) / total
    print(
        f"\nphotographer workload: {OPS} ops by {USERS} users over {len(CHANNELS)} channels "
        f"(Zipf s={ZIPF_S}), 2 pods, {edits} metadata edits, {elapsed:.1f} s: "
        f"L1 hit {l1_hit / total:.2%}, L2 hit {l2_hit}/{l1_miss:.0f} L1 misses, "
        f"L1+L2 hit ratio {ratio:.2%}"
    )
    assert ratio >= 0.95
