"""Each protection rule on real gateways, a real Redis and real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.protection.jwt_auth import issue_token

from tests.protection.support import (
    API_KEY,
    RawClient,
    close_code_of,
    protected_settings,
    raw_client,
    running,
    token,
)
from tests.support.waiting import wait_until
from wsfleet.client import Client, ServerError
from wsfleet.services import RedisServer


def sample(gw: Gateway, name: str, labels: dict[str, str] | None = None) -> float:
    value = gw.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


async def admin(
    gw: Gateway, method: str, path: str, body: Any = None, key: str | None = API_KEY
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, gw.admin_url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_unauthorized_connections_close_4001_and_are_audited(
    redis_server: RedisServer,
) -> None:
    async with running(protected_settings(redis_url=redis_server.url)) as gw:
        with structlog.testing.capture_logs() as events:
            assert await close_code_of(gw.ws_url) == 4001
            assert await close_code_of(gw.ws_url, token("ada", ttl_s=-120)) == 4001
            assert await close_code_of(gw.ws_url, token("ada", key="x" * 40)) == 4001
            assert await close_code_of(gw.ws_url, "garbage") == 4001
            good = token("ada", ["w-*"], tier="free")
            client = await Client.connect(f"{gw.ws_url}?token={good}")
            assert client.welcome is not None
            assert client.welcome.limits["max_channels"] == 3
            await client.close()
        audit = [e for e in events if e.get("audit")]
        rejected = [e for e in audit if e["event"] == "admission_rejected"]
        assert [e["reason"] for e in rejected] == ["unauthorized"] * 4
        assert {e["detail"] for e in rejected} == {
            "missing token",
            "token expired",
            "bad token signature",
            "invalid token: DecodeError",
        }
        accepted = [e for e in audit if e["event"] == "admission_accepted"]
        assert [(e["user"], e["tier"], e["ip"]) for e in accepted] == [("ada", "free", "127.0.0.1")]
        assert good not in json.dumps(events, default=str)
        assert sample(gw, "wsfleet_rejections_total", {"reason": "unauthorized"}) == 4


async def test_wrong_channel_is_forbidden_and_the_tier_quota_holds(
    shared_redis: RedisServer,
) -> None:
    async with running(protected_settings(redis_url=shared_redis.url)) as gw:
        client = await Client.connect(gw.ws_url, token("quota-user", ["w-*"], tier="free"))
        try:
            with pytest.raises(ServerError) as forbidden:
                await client.subscribe("funeral-1")
            assert forbidden.value.code == "forbidden"
            with pytest.raises(ServerError) as forbidden_pub:
                await client.publish("funeral-1", "x")
            assert forbidden_pub.value.code == "forbidden"
            for i in range(3):
                await client.subscribe(f"w-{i}")
            with structlog.testing.capture_logs() as events, pytest.raises(ServerError) as quota:
                await client.subscribe("w-3")
            assert quota.value.code == "quota_exceeded"
            assert [e["event"] for e in events if e.get("audit")] == ["quota_exceeded"]
            assert events[0]["limit"] == 3
            # nothing else broke: the held channels still deliver, a switch still works
            await client.publish("w-0", {"n": 1})
            message = await client.next_message(timeout_s=10)
            assert (message.channel, message.data) == ("w-0", {"n": 1})
            reply = await client.switch("w-2", "w-3")
            assert reply.channel == "w-3"
            assert client.channels == {"w-0", "w-1", "w-3"}
        finally:
            await client.close()


async def test_two_pods_share_the_per_user_connection_limit(shared_redis: RedisServer) -> None:
    user = f"photographer-{time.time_ns()}"
    async with (
        running(protected_settings(redis_url=shared_redis.url, node_name="pod-a")) as a,
        running(protected_settings(redis_url=shared_redis.url, node_name="pod-b")) as b,
    ):
        clients = []
        try:
            for i in range(10):  # the default: 10 new connections per minute per user
                gw = (a, b)[i % 2]
                clients.append(await Client.connect(gw.ws_url, token(user)))
            assert await close_code_of(a.ws_url, token(user)) == 4008
            assert await close_code_of(b.ws_url, token(user)) == 4008
            other = await Client.connect(b.ws_url, token(f"{user}-colleague"))
            clients.append(other)
        finally:
            for client in clients:
                await client.close()
        rejected = sample(a, "wsfleet_admissions_total", {"result": "rate_limited"}) + sample(
            b, "wsfleet_admissions_total", {"result": "rate_limited"}
        )
        assert rejected == 2
        assert sample(a, "wsfleet_admissions_total", {"result": "accepted"}) == 5


async def test_failed_auth_flood_blocks_the_address(redis_server: RedisServer) -> None:
    settings = protected_settings(redis_url=redis_server.url, auth_failures_per_ip_per_min=3)
    async with running(settings) as gw:
        codes = [await close_code_of(gw.ws_url, "bad-token") for _ in range(4)]
        assert codes == [4001, 4001, 4001, 4008]
        assert await close_code_of(gw.ws_url, token("innocent")) == 4008  # same address
        # behind a trusted proxy the forwarded address is the one counted
    settings = protected_settings(
        redis_url=redis_server.url, trust_forwarded_for=True, node_name="proxied"
    )
    async with running(settings) as gw:
        client = await raw_client(
            "127.0.0.1",
            gw.port,
            {"Authorization": f"Bearer {token('innocent')}", "X-Forwarded-For": "10.9.8.7"},
        )
        try:
            welcome = await asyncio.to_thread(client.recv_json)
            assert welcome["type"] == "welcome"
        finally:
            client.close()


async def test_node_cap_closes_4009_and_readiness_turns_false_near_it(
    shared_redis: RedisServer,
) -> None:
    settings = protected_settings(
        redis_url=shared_redis.url,
        max_connections=4,
        ready_below_fraction=0.5,
        user_connects_per_min=100,
    )
    async with running(settings) as gw:
        user = f"cap-{time.time_ns()}"
        clients = [await Client.connect(gw.ws_url, token(user))]
        try:
            status, body = await admin(gw, "GET", "/readyz")
            assert (status, body["checks"]["capacity"]) == (200, True)
            clients.append(await Client.connect(gw.ws_url, token(user)))
            status, body = await admin(gw, "GET", "/readyz")
            assert (status, body["checks"]["capacity"]) == (503, False)
            assert body["detail"]["max_connections"] == 4
            for _ in range(2):
                clients.append(await Client.connect(gw.ws_url, token(user)))
            with structlog.testing.capture_logs() as events:
                assert await close_code_of(gw.ws_url, token(user)) == 4009
            assert [e["reason"] for e in events if e.get("audit")] == ["node_full"]
            await clients.pop().close()
            await wait_until(lambda: gw.connections == 3, timeout_s=10)
            clients.append(await Client.connect(gw.ws_url, token(user)))
        finally:
            for client in clients:
                await client.close()
        assert sample(gw, "wsfleet_rejections_total", {"reason": "node_full"}) == 1


async def test_slow_consumer_is_dropped_4010_while_100_others_keep_receiving(
    shared_redis: RedisServer,
) -> None:
    settings = protected_settings(
        redis_url=shared_redis.url,
        send_buffer_bytes=64 * 1024,
        user_connects_per_min=1000,
        bandwidth_bytes_per_s=0,  # the publisher sends 16 KB frames as fast as it can
    )
    channel = f"venue-{time.time_ns()}"
    async with running(settings) as gw:
        fast = [
            await Client.connect(gw.ws_url, token(f"guest-{i % 7}-{channel}")) for i in range(100)
        ]
        slow = await raw_client(
            "127.0.0.1", gw.port, {"Authorization": f"Bearer {token('slow')}"}, rcvbuf=4096
        )
        try:
            await asyncio.gather(*(c.subscribe(channel) for c in fast))
            await asyncio.to_thread(slow.recv_json)  # welcome
            slow.send_json({"id": 1, "op": "subscribe", "channel": channel})
            reply = await asyncio.to_thread(slow.recv_json)
            assert reply["type"] == "subscribed"
            # the slow consumer stops reading; the venue broadcasts 16 KB messages
            publisher = fast[0]
            payload = "x" * 16000
            sent = 0
            with structlog.testing.capture_logs() as events:
                while sent < 1500:
                    await publisher.publish(channel, {"i": sent, "p": payload})
                    sent += 1
                    if sent >= 50 and sample(gw, "wsfleet_slow_consumer_drops_total") >= 1:
                        break
                for _ in range(20):  # and keeps going after the drop
                    await publisher.publish(channel, {"i": sent, "p": payload})
                    sent += 1
            assert sample(gw, "wsfleet_slow_consumer_drops_total") == 1
            drops = [e for e in events if e["event"] == "slow_consumer_dropped"]
            assert len(drops) == 1
            assert drops[0]["user"] == "slow"
            assert drops[0]["buffered_bytes"] >= 64 * 1024

            async def receive_all(client: Client) -> list[int]:
                return [(await client.next_message(timeout_s=30)).data["i"] for _ in range(sent)]

            results = await asyncio.gather(*(receive_all(c) for c in fast))
            assert all(got == list(range(sent)) for got in results)
            # a consumer that reads again finds its backlog and then the 4010 close
            assert await asyncio.to_thread(slow.close_code) == 4010
            within = sample(gw, "wsfleet_message_delivery_seconds_bucket", {"le": "0.1"})
            total = sample(gw, "wsfleet_message_delivery_seconds_count")
            print(
                f"\n{sent} messages x 100 fast subscribers: all delivered in order; slow consumer "
                f"dropped at {drops[0]['buffered_bytes']} buffered bytes; "
                f"{within / total:.1%} of fan-outs written within 100 ms of the publish"
            )
        finally:
            slow.close()
            for client in fast:
                await client.close()
        await wait_until(lambda: gw.connections == 0, timeout_s=15)


async def test_rs256_gateway_accepts_its_keys_tokens_only(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file = tmp_path / "jwt.pub"
    key_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = protected_settings(jwt_secret=None, jwt_public_key_file=key_file)
    async with running(settings) as gw:
        good = issue_token(private_pem, "rs-user", channels=["*"], tier="paid", algorithm="RS256")
        client = await Client.connect(gw.ws_url, good)
        try:
            assert (await client.subscribe("rs-room")).channel == "rs-room"
        finally:
            await client.close()
        assert await close_code_of(gw.ws_url, token("rs-user")) == 4001  # an HS256 token


def first_answer(port: int, source: str) -> str:
    """Connect from loopback address `source`: ``welcome`` or the close code."""
    client = RawClient("127.0.0.1", port, source=source)
    try:
        assert client.handshake().startswith(b"HTTP/1.1 101")
        try:
            return str(client.recv_json()["type"])
        except ConnectionError as exc:
            return str(exc).rsplit(" ", 1)[-1]
    finally:
        client.close()


async def test_without_auth_the_connect_limit_counts_per_client_address(
    redis_server: RedisServer,
) -> None:
    """Issue 17 §6: with auth disabled every client is `anonymous`; the per-user connect
    limit then counts per client IP, not for all clients together (Redis-shared as before)."""
    settings = protected_settings(
        redis_url=redis_server.url, auth="disabled", user_connects_per_min=3
    )
    async with running(settings) as gw, running(settings) as other:
        ip = "127.0.17."
        answers = [await asyncio.to_thread(first_answer, gw.port, ip + "1") for _ in range(3)]
        assert answers == ["welcome"] * 3
        # the same address is over its limit, on either pod (the count is in Redis)
        assert await asyncio.to_thread(first_answer, other.port, ip + "1") == "4008"
        for host in ("2", "3"):  # other addresses are not
            answers = [await asyncio.to_thread(first_answer, gw.port, ip + host) for _ in range(3)]
            assert answers == ["welcome"] * 3
        assert await asyncio.to_thread(first_answer, gw.port, ip + "3") == "4008"
