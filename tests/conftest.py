"""Shared fixtures: real Redis and Prometheus servers, leaked-task check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from wsfleet.services import PrometheusServer, RedisCluster, RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh real redis-server per test on a free port."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One real redis-server for tests that only need isolation by key."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One real Redis Cluster for the session: 3 primaries, 3 replicas, on loopback.

    Tests share it (each empties it first when it needs to): starting one takes
    seconds. Tests that kill or move nodes start their own.
    """
    with RedisCluster(primaries=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def prometheus_server() -> Iterator[PrometheusServer]:
    """A real Prometheus scraping file_sd targets every 0.5 s."""
    server = PrometheusServer(scrape_interval_s=0.5)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """Apply the leaked-task check to every asyncio test."""
    if request.node.get_closest_marker("asyncio") is not None:
        request.getfixturevalue("_leaked_task_check")


@pytest.fixture
async def _leaked_task_check() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running on its loop."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        # give cancellations a moment to complete
        for _ in range(50):
            await asyncio.sleep(0.01)
            leaked = [t for t in leaked if not t.done()]
            if not leaked:
                break
    assert not leaked, f"test leaked asyncio tasks: {[t.get_name() for t in leaked]}"
