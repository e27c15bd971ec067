"""Server-sent events, the optional token, static assets and shutdown."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from wsfleet_operator.dashboard.app import (
    DashboardServer,
    DashboardSettings,
    create_dashboard_app,
    serve_dashboard,
    start_dashboard,
)
from wsfleet_operator.dashboard.model import StaticFleetStateSource

from tests.dashboard.conftest import NAME, NAMESPACE, demo_snapshot, run_dashboard
from tests.support.waiting import wait_until

TOKEN = "s3cret-token"


async def read_events(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """Parse `count` ``fleets`` events from an SSE response."""
    events: list[dict[str, Any]] = []
    name, data = "", ""
    while len(events) < count:
        raw = await resp.content.readline()
        assert raw, "stream ended"
        text = raw.decode().rstrip("\n")
        if text.startswith("event:"):
            name = text[6:].strip()
        elif text.startswith("data:"):
            data += text[5:].strip()
        elif text == "" and data:
            if name == "fleets":
                events.append(json.loads(data))
            name, data = "", ""
    return events


async def test_events_push_updates_of_the_source() -> None:
    source = StaticFleetStateSource([demo_snapshot(desired=3)])
    async for d in run_dashboard(source, None):
        async with d.session.get(d.url + "api/events") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            (first,) = await read_events(resp, 1)
            assert first["fleets"][0]["desired_replicas"] == 3
            source.put(demo_snapshot(desired=5, ready=4))

            async def updated() -> dict[str, Any] | None:
                (event,) = await read_events(resp, 1)
                return event if event["fleets"][0]["desired_replicas"] == 5 else None

            event = await wait_until(updated, timeout_s=10, message="an SSE update with 5")
            assert event["fleets"][0]["ready_replicas"] == 4
            assert event["generated_at"] >= first["generated_at"]
            # updates keep coming without any change in the source
            more = await asyncio.wait_for(read_events(resp, 2), timeout=10)
            assert more[1]["generated_at"] > more[0]["generated_at"]


async def test_token_guards_the_api_but_not_the_page() -> None:
    source = StaticFleetStateSource([demo_snapshot()])
    async for d in run_dashboard(source, None, token=TOKEN):
        for path in ("api/fleets", f"api/fleets/{NAMESPACE}/{NAME}/series", "api/events"):
            async with d.session.get(d.url + path) as resp:
                assert resp.status == 401, path
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            async with d.session.get(d.url + path, params={"token": "wrong"}) as resp:
                assert resp.status == 401, path
        status, body = await d.get("api/fleets", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert body["fleets"][0]["name"] == NAME
        status, _ = await d.get(f"api/fleets/{NAMESPACE}/{NAME}/series", params={"token": TOKEN})
        assert status == 200
        async with d.session.get(d.url + "api/events", params={"token": TOKEN}) as resp:
            assert resp.status == 200
            (event,) = await read_events(resp, 1)
            assert event["fleets"][0]["name"] == NAME
        # the page and its assets carry no data: public, with a strict CSP
        for path, kind in (
            ("", "text/html"),
            ("static/app.js", "javascript"),
            ("static/app.css", "text/css"),
        ):
            async with d.session.get(d.url + path) as resp:
                assert resp.status == 200, path
                assert kind in resp.headers["Content-Type"]
                assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
                body_text = await resp.text()
                assert TOKEN not in body_text
                # no CDN: the only absolute URL is the SVG namespace name
                urls = set(re.findall(r"https?://[^\s\"')]+", body_text))
                assert urls <= {"http://www.w3.org/2000/svg"}, urls


async def test_page_references_only_its_own_assets() -> None:
    source = StaticFleetStateSource()
    async for d in run_dashboard(source, None):
        async with d.session.get(d.url) as resp:
            html = await resp.text()
        assert 'href="static/app.css"' in html
        assert 'src="static/app.js"' in html
        status, body = await d.get("api/fleets")
        assert status == 200
        assert body["fleets"] == []


async def test_shutdown_ends_open_streams_promptly() -> None:
    source = StaticFleetStateSource([demo_snapshot()])
    app = create_dashboard_app(source, None, interval_s=0.2)
    server = await start_dashboard(app)
    assert server.url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as session:
        resp = await session.get(server.url + "api/events")
        await read_events(resp, 1)
        # the stream is open; stopping must not wait out the shutdown timeout
        await asyncio.wait_for(server.stop(), timeout=4.5)
        rest = await resp.content.read()
        resp.release()
    assert b"event: fleets" in rest or rest == b""


async def test_serve_from_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSFLEET_DASHBOARD_PORT", "0")
    monkeypatch.setenv("WSFLEET_DASHBOARD_TOKEN", TOKEN)
    monkeypatch.setenv("WSFLEET_DASHBOARD_INTERVAL_S", "0.2")
    settings = DashboardSettings()
    assert TOKEN not in repr(settings)  # a secret, not logged
    server = await serve_dashboard(StaticFleetStateSource([demo_snapshot()]))
    try:
        assert server.port > 0
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "api/fleets") as resp:
                assert resp.status == 401
            async with session.get(server.url + "api/fleets", params={"token": TOKEN}) as resp:
                assert resp.status == 200
                body = await resp.json()
        assert body["interval_s"] == 0.2
        assert body["prometheus"]["configured"] is False
    finally:
        await server.stop()


async def test_mounted_under_a_prefix() -> None:
    parent = web.Application()
    parent.add_subapp(
        "/dashboard/", create_dashboard_app(StaticFleetStateSource([demo_snapshot()]), None)
    )
    server = await start_dashboard(parent, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            base = server.url + "dashboard/"
            for path in ("", "static/app.js", "static/app.css", "api/fleets"):
                async with session.get(base + path) as resp:
                    assert resp.status == 200, path
            async with session.get(base + "api/events") as resp:
                (event,) = await read_events(resp, 1)
                assert event["fleets"][0]["name"] == NAME
    finally:
        await asyncio.wait_for(server.stop(), timeout=4.5)


def test_url_to_open_when_listening_everywhere() -> None:
    runner = web.AppRunner(web.Application())  # never set up: nothing listens
    assert DashboardServer(runner, "0.0.0.0", 8090).url == "http://127.0.0.1:8090/"
    assert DashboardServer(runner, "::", 8090).url == "http://[::1]:8090/"
    assert DashboardServer(runner, "10.0.0.5", 80).url == "http://10.0.0.5:80/"


async def test_events_keep_alive_between_slow_samples() -> None:
    source = StaticFleetStateSource([demo_snapshot()])
    app = create_dashboard_app(source, None, interval_s=30, keepalive_s=0.1)
    server = await start_dashboard(app)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "api/events") as resp,
        ):
            (event,) = await read_events(resp, 1)
            assert event["fleets"][0]["name"] == NAME
            lines = [await resp.content.readline() for _ in range(4)]
            assert lines.count(b": keep-alive\n") >= 2, lines
    finally:
        await server.stop()


async def test_port_taken_leaves_nothing_running() -> None:
    first = await start_dashboard(create_dashboard_app(StaticFleetStateSource(), None))
    try:
        app = create_dashboard_app(StaticFleetStateSource(), None)
        with pytest.raises(OSError, match="address already in use"):
            await start_dashboard(app, "127.0.0.1", first.port)
        # the leaked-task check fails this test if the sampler kept running
    finally:
        await first.stop()
