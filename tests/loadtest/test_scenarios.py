"""Short real runs of every scenario against an in-process gateway."""

from __future__ import annotations

import asyncio

import jsonschema
import pytest
from wsfleet_gateway.app import Gateway

from tests.loadtest.conftest import JWT_SECRET
from tests.support.waiting import wait_until
from wsfleet.loadtest import REPORT_SCHEMA, RemoteTargetError, run_scenario


def assert_valid(doc: dict[str, object]) -> None:
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    jsonschema.validate(doc, REPORT_SCHEMA)


async def test_photographer_switches_between_wedding_channels(gateway: Gateway) -> None:
    report = await run_scenario(
        "photographer",
        gateway.ws_url,
        {
            "jwt_secret": JWT_SECRET,
            "connections": 8,
            "duration_s": 60.0,
            "max_requests": 8 + 60,  # bounded by count: the same run however slow the machine
            "think_time_s": 0.02,
            "publish_probability": 0.2,
        },
    )
    doc = report.to_dict()
    assert_valid(doc)
    assert doc["connections"] == {
        "attempted": 8,
        "opened": 8,
        "failed": 0,
        "closed_by_server": 0,
        "peak_open": 8,
    }
    ops = doc["operations"]
    assert ops["subscribe"]["count"] == 8
    assert ops["switch"]["count"] > 20
    assert ops["publish"]["count"] > 0
    assert doc["messages"]["published"] == ops["publish"]["count"]
    assert doc["messages"]["lost"] is None  # switching subscribers: loss is not knowable
    assert doc["errors"] == {}
    assert "switch" in report.summary_text()
    await wait_until(lambda: gateway.connections == 0, timeout_s=10, message="clients gone")


async def test_venue_broadcast_delivers_every_message_to_every_subscriber(
    gateway: Gateway,
) -> None:
    report = await run_scenario(
        "venue-broadcast",
        gateway.ws_url,
        {
            "jwt_secret": JWT_SECRET,
            "coordinators": 2,
            "subscribers_per_channel": 20,
            "publish_rate": 20.0,
            "duration_s": 60.0,
            "max_requests": 40 + 20,  # 40 subscribes, then 20 publishes
            "drain_s": 5.0,
        },
    )
    doc = report.to_dict()
    assert_valid(doc)
    messages = doc["messages"]
    assert messages["published"] > 0
    assert messages["expected"] == messages["published"] * 20
    assert messages["delivered"] == messages["expected"]
    assert messages["lost"] == 0
    assert doc["operations"]["delivery"]["count"] == messages["delivered"]
    assert doc["connections"]["opened"] == 42


async def test_wedding_season_ramps_to_the_evening_peak(gateway: Gateway) -> None:
    # 3,600x: an hour a second; 17:00 -> 21:00 in 4 s; base 3 -> 12 by day, 30 at 18-20
    report = await run_scenario(
        "wedding-season",
        gateway.ws_url,
        {
            "jwt_secret": JWT_SECRET,
            "connections": 3,
            "compress": 3_600.0,
            "start_hour": 17.0,
            "duration_s": 4.0,
            "think_time_s": 0.05,
            "progress_interval_s": 0.1,
        },
    )
    doc = report.to_dict()
    assert_valid(doc)
    targets = [p["target"] for p in doc["timeline"]]
    assert targets[0] < 30  # from the suppliers' hours (4x base) ...
    assert max(targets) == 30  # ... to the couples' evening peak: 10x base
    assert targets[-1] < 30  # after 20:00 the evening winds down
    assert doc["connections"]["peak_open"] >= 20
    assert doc["connections"]["failed"] == 0
    assert doc["operations"]["switch"]["count"] > 0


async def test_wedding_season_defaults_to_one_compressed_day(gateway: Gateway) -> None:
    report = await run_scenario(
        "wedding-season",
        gateway.ws_url,
        {"connections": 1, "compress": 86_400.0, "jwt_secret": JWT_SECRET},
    )
    assert report.duration_s == pytest.approx(1.0, abs=0.5)
    assert report.options["duration_s"] == 1.0


async def test_cancelling_a_run_closes_every_connection(gateway: Gateway) -> None:
    task = asyncio.create_task(
        run_scenario(
            "photographer",
            gateway.ws_url,
            {"connections": 10, "duration_s": 60.0, "jwt_secret": JWT_SECRET},
        )
    )
    await wait_until(lambda: gateway.connections == 10, timeout_s=20, message="10 connected")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: gateway.connections == 0, timeout_s=10, message="all closed")


async def test_stop_event_ends_a_run_with_a_report(gateway: Gateway) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_scenario(
            "photographer",
            gateway.ws_url,
            {
                "connections": 4,
                "duration_s": 60.0,
                "think_time_s": 0.01,
                "stop": stop,
                "jwt_secret": JWT_SECRET,
            },
        )
    )
    await wait_until(lambda: gateway.connections == 4, timeout_s=20, message="4 connected")
    stop.set()
    report = await asyncio.wait_for(task, timeout=30)
    assert report.duration_s < 60
    assert report.stats.opened == 4
    await wait_until(lambda: gateway.connections == 0, timeout_s=10, message="all closed")


async def test_run_scenario_refuses_remote_and_unknown_scenarios() -> None:
    with pytest.raises(RemoteTargetError):
        await run_scenario("photographer", "ws://192.0.2.10:8080/ws")
    with pytest.raises(ValueError, match="unknown scenario"):
        await run_scenario("nope", "ws://127.0.0.1:1/ws")


async def test_unreachable_target_counts_failed_connections() -> None:
    from wsfleet.services import free_port

    report = await run_scenario(
        "photographer",
        f"ws://127.0.0.1:{free_port()}/ws",
        {"connections": 3, "duration_s": 1.0, "connect_timeout_s": 2.0},
    )
    assert report.stats.attempted == 3
    assert report.stats.failed == 3
    assert report.stats.opened == 0
    assert sum(v for k, v in report.stats.errors.items() if k.startswith("connect:")) == 3
