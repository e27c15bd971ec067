"""The photographer scenario with habits (issue 22): the load tool's side of prefetch."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.settings import GatewaySettings

from tests.loadtest.conftest import JWT_SECRET, running
from tests.support.waiting import wait_until
from wsfleet.loadtest import REPORT_SCHEMA, run_scenario
from wsfleet.loadtest.scenarios import Photographer, next_channel
from wsfleet.loadtest.shape import ZipfSampler
from wsfleet.services import RedisServer


def photographer(n: int, seed: int) -> Photographer:
    channels = [f"ch-{i}" for i in range(n)]
    return Photographer(0, random.Random(seed), channels, ZipfSampler(n, 1.1), channels[0])


@given(n=st.integers(2, 15), seed=st.integers(0, 1000), steps=st.integers(1, 40))
def test_with_a_full_habit_the_round_is_followed(n: int, seed: int, steps: int) -> None:
    user = photographer(n, seed)
    for step in range(1, steps + 1):
        user.current = next_channel(user, 1.0)
        assert user.current == f"ch-{step % n}"


@given(n=st.integers(2, 15), seed=st.integers(0, 1000), habit=st.floats(0, 1))
def test_a_switch_never_goes_where_it_is(n: int, seed: int, habit: float) -> None:
    user = photographer(n, seed)
    for _ in range(30):
        target = next_channel(user, habit)
        assert target != user.current
        assert target in user.channels
        user.current = target


def test_without_habit_the_choice_is_what_it_always_was() -> None:
    """habit 0 draws nothing extra from the user's random stream: runs repeat as before."""
    a, b = photographer(15, 7), photographer(15, 7)
    for _ in range(50):
        a.current = next_channel(a, 0.0)
        target = b.current
        while target == b.current:
            target = b.channels[b.preference.sample(b.rng)]
        b.current = target
        assert a.current == b.current


def test_one_channel_has_nowhere_to_go() -> None:
    user = photographer(1, 0)
    assert next_channel(user, 1.0) == "ch-0"


@pytest.fixture
async def redis_gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    settings = GatewaySettings(
        port=0,
        admin_port=0,
        log_level="warning",
        jwt_secret=JWT_SECRET,
        redis_url=redis_server.url,
        linger_s=0.0,
    )
    async with running(settings) as gw:
        yield gw


async def test_photographers_with_habits_land_on_prefetched_channels(
    redis_gateway: Gateway,
) -> None:
    report = await run_scenario(
        "photographer",
        redis_gateway.ws_url,
        {
            "jwt_secret": JWT_SECRET,
            "connections": 4,
            "channels": 40,
            "channels_per_user": 6,
            "habit": 1.0,
            "duration_s": 60.0,
            "max_requests": 4 + 4 * 30,  # bounded by count
            "think_time_s": 0.02,
            "publish_probability": 0.0,
        },
    )
    doc = report.to_dict()
    jsonschema.validate(doc, REPORT_SCHEMA)
    ops = doc["operations"]
    assert doc["errors"] == {}
    assert ops["switch-first"]["count"] >= 4 * 5  # each user's round: five first visits
    assert ops["switch-first"]["count"] < ops["switch"]["count"]
    joins = redis_gateway.metrics.prefetch_joins
    # the round repeats: after the first lap most switches land where prefetch was
    assert joins.value("prefetched") > joins.value("missed")
    assert joins.value("prefetched") >= 4 * 10
    await wait_until(lambda: redis_gateway.connections == 0, timeout_s=10, message="clients gone")
