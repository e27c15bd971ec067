"""Presence across a fleet (issue 22): two real gateway processes on one real Redis,
real WebSocket clients with JWTs.

- ``presence`` / ``presence_stats`` list every connection of every gateway, with its
  user, node and join time; the admin API answers the same (with the API key);
- they are allowed as a subscribe is (the token's channel patterns), and refuse bad
  input with ``bad_request``;
- ``join`` / ``leave`` events reach subscribers on both gateways, for channels that
  match the configured patterns only;
- a SIGKILLed gateway's members vanish within one TTL, with no cleanup job, while the
  survivors' members stay (refreshed by their gateway's heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest
from wsfleet_gateway.protection.jwt_auth import issue_token

from tests.support.waiting import wait_until
from wsfleet.client import Client, PresenceMember, ServerError
from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.services import RedisServer

WAIT_S = 30.0  # generous: gateway processes share two busy cores
SECRET = "presence-secret-0123456789abcdef-0123456789"
API_KEY = "presence-api-key"
TTL_S = 1.5
GATEWAY_ENV = {
    "WSFLEET_REDIS_TIMEOUT_S": "0.5",
    "WSFLEET_DRAIN_GRACE_S": "0.5",
    "WSFLEET_JWT_SECRET": SECRET,
    "WSFLEET_PRESENCE_TTL_S": str(TTL_S),
    "WSFLEET_PRESENCE_EVENTS_CHANNELS": json.dumps(["wedding-*"]),
}


def token(user: str, channels: list[str] | None = None) -> str:
    return issue_token(SECRET, user, channels=channels or ["*"], tier="paid", ttl_s=600)


@contextlib.contextmanager
def two_gateways(redis_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    pair = tuple(
        gateway_process(redis_url=redis_url, env=GATEWAY_ENV, api_key=API_KEY) for _ in range(2)
    )
    try:
        for gateway in pair:
            gateway.launch()
        for gateway in pair:
            gateway.wait_ready(WAIT_S)
        yield pair[0], pair[1]
    finally:
        for gateway in pair:
            gateway.stop()


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with RedisServer() as server, two_gateways(server.url) as pair:
        yield pair


async def connect(
    opened: list[Client], gateway: ServerProcess, user: str, channels: list[str] | None = None
) -> Client:
    client = await Client.connect(gateway.ws_url, token(user, channels), timeout_s=WAIT_S)
    opened.append(client)
    return client


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def who(members: list[PresenceMember]) -> list[tuple[str, str, str]]:
    return sorted((m.user, m.connection_id, m.node) for m in members)


def me(client: Client, user: str) -> tuple[str, str, str]:
    assert client.welcome is not None
    return user, client.welcome.connection_id, client.welcome.node


async def test_presence_lists_every_connection_of_both_gateways(
    fleet: tuple[ServerProcess, ServerProcess], clients: list[Client]
) -> None:
    g1, g2 = fleet
    channel, lobby = unique("wedding"), unique("lobby")
    ann1 = await connect(clients, g1, "ann")
    ann2 = await connect(clients, g2, "ann")
    bo = await connect(clients, g2, "bo")
    started = time.time() * 1000
    for client in (ann1, ann2, bo):
        await client.subscribe(channel)
    await bo.subscribe(lobby)
    everyone = sorted([me(ann1, "ann"), me(ann2, "ann"), me(bo, "bo")])
    assert len({node for _, _, node in everyone}) == 2

    members = await wait_until(
        lambda: _members_if(ann1, channel, 3), timeout_s=WAIT_S, message="three members"
    )
    assert who(members) == everyone
    assert [m.joined_at for m in members] == sorted(m.joined_at for m in members)
    assert all(started - 5000 <= m.joined_at <= time.time() * 1000 for m in members)
    stats = await bo.presence_stats(channel)
    assert (stats.channel, stats.connections, stats.users) == (channel, 3, 2)
    assert who(await ann2.presence(lobby)) == [me(bo, "bo")]
    # own subscribe: in the next presence this connection asks for, at once
    extra = unique("wedding")
    await ann2.subscribe(extra)
    assert who(await ann2.presence(extra)) == [me(ann2, "ann")]

    await ann2.unsubscribe(channel)
    await ann2.switch(extra, lobby)  # a switch leaves and joins
    await wait_until(lambda: _members_if(ann1, channel, 2), timeout_s=WAIT_S, message="ann2 gone")
    assert who(await ann1.presence(channel)) == sorted([me(ann1, "ann"), me(bo, "bo")])
    assert await bo.presence(extra) == []
    assert who(await bo.presence(lobby)) == sorted([me(ann2, "ann"), me(bo, "bo")])
    await bo.close()  # a closed connection leaves every channel
    await wait_until(
        lambda: _members_if(ann1, lobby, 1), timeout_s=WAIT_S, message="bo gone on close"
    )
    assert (await ann1.presence_stats(channel)).connections == 1

    # the admin API: the same members, with the API key only
    assert g1.admin_url is not None
    url = f"{g1.admin_url}/api/channels/{channel}/presence"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            assert response.status == 200
            body = await response.json()
        async with http.get(url) as response:
            assert response.status == 401
        bad = f"{g1.admin_url}/api/channels/no%20spaces/presence"
        async with http.get(bad, headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "bad_request"
    assert body["channel"] == channel
    assert (body["connections"], body["users"]) == (1, 1)
    assert [(m["user"], m["connection_id"], m["node"]) for m in body["members"]] == [
        me(ann1, "ann")
    ]


async def _members_if(client: Client, channel: str, count: int) -> list[PresenceMember] | None:
    members = await client.presence(channel)
    return members if len(members) == count else None


async def test_presence_is_allowed_as_subscribe_is_and_refuses_bad_input(
    fleet: tuple[ServerProcess, ServerProcess], clients: list[Client]
) -> None:
    g1, g2 = fleet
    channel = unique("wedding")
    host = await connect(clients, g2, "cy")
    await host.subscribe(channel)
    guest = await connect(clients, g1, "dee", channels=["lobby-*"])
    for ask in (guest.presence, guest.presence_stats, guest.subscribe):
        with pytest.raises(ServerError) as refused:
            await ask(channel)
        assert refused.value.code == "forbidden"
    assert await guest.presence(unique("lobby")) == []  # allowed: nobody there
    with pytest.raises(ServerError) as refused:
        await host.presence("not a channel")
    assert refused.value.code == "bad_request"
    with pytest.raises(ServerError) as refused:
        await host.presence_stats("{braces}")
    assert refused.value.code == "bad_request"
    for frame in ('{"id": "p", "op": "presence"}', '{"id": "s", "op": "presence_stats"}'):
        host.send_raw(frame)
        async with asyncio.timeout(WAIT_S):
            error = await host.errors.get()
        assert (error.code, error.message) == ("bad_request", "missing field `channel`")
    assert (await host.presence_stats(channel)).connections == 1  # still served


async def test_join_and_leave_events_for_matching_channels_only(
    fleet: tuple[ServerProcess, ServerProcess], clients: list[Client]
) -> None:
    g1, g2 = fleet
    wedding, lobby = unique("wedding"), unique("lobby")
    watcher_1 = await connect(clients, g1, "eve")
    watcher_2 = await connect(clients, g2, "fay")
    for watcher in (watcher_1, watcher_2):
        await watcher.subscribe(wedding)
        await watcher.subscribe(lobby)
    # the second watcher's own join reached the first one
    seen = await watcher_1.next_presence_event(WAIT_S)
    assert (seen.kind, seen.channel) == ("join", wedding)
    assert (seen.member.user, seen.member.connection_id) == me(watcher_2, "fay")[:2]

    guest = await connect(clients, g2, "gus")
    await guest.subscribe(lobby)  # no event: lobby does not match
    await guest.subscribe(wedding)
    await guest.unsubscribe(wedding)
    for watcher in (watcher_1, watcher_2):
        join = await watcher.next_presence_event(WAIT_S)
        leave = await watcher.next_presence_event(WAIT_S)
        assert (join.kind, join.channel, join.member.user) == ("join", wedding, "gus")
        assert (leave.kind, leave.channel, leave.member) == ("leave", wedding, join.member)
        assert join.member.connection_id == me(guest, "gus")[1]
        assert join.member.node == me(guest, "gus")[2]
    await guest.switch(lobby, wedding)  # joins the wedding: an event; leaving lobby: none
    await guest.close()  # leaves the wedding: an event
    for watcher in (watcher_1, watcher_2):
        join = await watcher.next_presence_event(WAIT_S)
        leave = await watcher.next_presence_event(WAIT_S)
        assert [(e.kind, e.channel) for e in (join, leave)] == [
            ("join", wedding),
            ("leave", wedding),
        ]
    assert guest.presence_events.empty()  # never its own events
    # nothing else is queued: a marker event arrives next
    marker = await connect(clients, g1, "hal")
    await marker.subscribe(wedding)
    for watcher in (watcher_1, watcher_2):
        last = await watcher.next_presence_event(WAIT_S)
        assert (last.kind, last.member.user) == ("join", "hal")
        assert watcher.presence_events.empty()


async def test_a_killed_gateways_members_vanish_within_one_ttl(
    redis_server: RedisServer, clients: list[Client]
) -> None:
    channel = unique("wedding")
    with two_gateways(redis_server.url) as (g1, g2):
        stays = await connect(clients, g1, "ivy")
        doomed = [await connect(clients, g2, f"jo{i}") for i in range(3)]
        for client in (stays, *doomed):
            await client.subscribe(channel)
        await wait_until(
            lambda: _members_if(stays, channel, 4), timeout_s=WAIT_S, message="four members"
        )
        # survive several TTLs first: the heartbeat keeps live members
        until = time.monotonic() + 2 * TTL_S
        while time.monotonic() < until:
            assert len(await stays.presence(channel)) == 4
            await asyncio.sleep(0.1)  # polling interval of a bounded loop
        os.kill(g2.pid, signal.SIGKILL)
        killed = time.monotonic()
        await wait_until(
            lambda: _members_if(stays, channel, 1),
            timeout_s=TTL_S + 5.0,
            interval_s=0.05,
            message="the killed gateway's members gone",
        )
        gone_after = time.monotonic() - killed
        assert gone_after <= TTL_S + 0.5, gone_after  # one TTL (and a poll)
        assert who(await stays.presence(channel)) == [me(stays, "ivy")]
        # and the survivor stays, refreshed, another two TTLs
        until = time.monotonic() + 2 * TTL_S
        while time.monotonic() < until:
            assert who(await stays.presence(channel)) == [me(stays, "ivy")]
            await asyncio.sleep(0.1)
