"""Circuit breaker, pre-warm and start-up rules on real gateways and a real Redis."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wsfleet_gateway.backends.redis.streams import meta_key
from wsfleet_gateway.cache.broker import ProtectedBroker
from wsfleet_gateway.cache.prewarm import HOT_KEY

from tests.protection.support import SECRET, protected_settings, running, token
from tests.protection.test_live_rules import admin, sample
from tests.support.waiting import wait_until, wait_until_sync
from wsfleet.client import Client, ServerError
from wsfleet.services import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_breaker_fails_publishes_fast_serves_subscribes_locally_and_recovers(
    redis_server: RedisServer,
) -> None:
    settings = protected_settings(
        redis_url=redis_server.url, breaker_failures=2, breaker_reset_s=0.5
    )
    async with running(settings) as gw:
        status, _ = await admin(gw, "PUT", "/api/channels/b-1/meta", {"title": "Ada & Bo"})
        assert status == 200
        first = await Client.connect(gw.ws_url, token("breaker-a"))
        late = await Client.connect(gw.ws_url, token("breaker-b"))
        try:
            await first.subscribe("b-1")
            await first.publish("b-1", "before")
            assert (await first.next_message(timeout_s=10)).data == "before"
            redis_server.stop()
            # publishes fail (timeouts first), then fail fast once the breaker opens
            errors: list[str] = []

            async def breaker_open_error() -> bool:
                try:
                    await first.publish("b-1", "during")
                except ServerError as exc:
                    errors.append(f"{exc.code}: {exc.message}")
                    return "breaker" in exc.message
                return False

            await wait_until(breaker_open_error, timeout_s=20, interval_s=0.05)
            assert all(e.startswith("unavailable: ") for e in errors)
            started = time.perf_counter()
            with pytest.raises(ServerError) as fast:
                await first.publish("b-1", "during")
            fail_fast_ms = (time.perf_counter() - started) * 1000
            assert fast.value.code == "unavailable"
            status, body = await admin(gw, "GET", "/readyz")
            assert status == 503
            assert body["detail"]["redis_breaker"] in ("open", "half_open")
            assert sample(gw, "wsfleet_redis_breaker_state") in (1, 2)
            assert sample(gw, "wsfleet_redis_breaker_opened_total") >= 1
            # subscribes and switches are still served, metadata from L1
            reply = await late.subscribe("b-1")
            assert reply.meta == {"title": "Ada & Bo"}
            assert reply.history == []
            switched = await late.switch("b-1", "b-2")
            assert (switched.channel, switched.meta) == ("b-2", {})
            redis_server.start()

            async def published() -> bool:
                with contextlib.suppress(ServerError):
                    await late.publish("b-2", "after")
                    return True
                return False

            await wait_until(published, timeout_s=20, interval_s=0.1)
            # the channel joined during the outage is attached to Redis again
            store = gw.store
            assert isinstance(store, ProtectedBroker)
            await wait_until(lambda: not store.local_attachments, timeout_s=15)
            await late.publish("b-2", "attached")
            seen = []
            while "attached" not in seen:
                seen.append((await late.next_message(timeout_s=15)).data)
            assert set(seen) <= {"after", "attached"}
            await wait_until(lambda: gw.readiness()["broker"], timeout_s=15)
            status, body = await admin(gw, "GET", "/readyz")
            assert (status, body["detail"]["redis_breaker"]) == (200, "closed")
            assert sample(gw, "wsfleet_redis_breaker_state") == 0
            print(
                f"\npublish with the breaker open answered `unavailable` in {fail_fast_ms:.2f} ms"
            )
        finally:
            await first.close()
            await late.close()


async def test_new_pod_prewarms_the_hottest_channels_before_ready(
    shared_redis: RedisServer,
) -> None:
    prefix = f"hot-{time.time_ns()}"
    async with running(
        protected_settings(redis_url=shared_redis.url, hot_flush_s=0.1, node_name="warm-a")
    ) as a:
        for i in range(5):
            status, _ = await admin(a, "PUT", f"/api/channels/{prefix}-{i}/meta", {"i": i})
            assert status == 200
        client = await Client.connect(a.ws_url, token(f"{prefix}-user"))
        try:
            for _ in range(200):  # these get far hotter than anything else in the shared Redis
                await client.subscribe(f"{prefix}-0")
                await client.subscribe(f"{prefix}-1")
        finally:
            await client.close()
        redis = a.protection.redis if a.protection else None
        assert redis is not None

        async def tracked() -> bool:
            top = await redis.zrevrange(HOT_KEY, 0, 1)
            return set(top) == {f"{prefix}-0", f"{prefix}-1"}

        await wait_until(tracked, timeout_s=15)
        settings = protected_settings(redis_url=shared_redis.url, prewarm_top=2, node_name="b")
        async with running(settings) as b:
            assert b.protection is not None
            assert b.readiness()["cache_warm"] is True
            assert sorted(b.protection.cache.l1.keys("meta")) == [f"{prefix}-0", f"{prefix}-1"]
            # the admin endpoint warms any list (the operator calls it before a peak)
            names = [f"{prefix}-{i}" for i in range(2, 5)]
            assert await admin(b, "POST", "/api/prewarm", {"channels": names}) == (
                200,
                {"requested": 3, "loaded": 3},
            )
            assert await admin(b, "POST", "/api/prewarm", {"channels": names}, key=None) == (
                401,
                {
                    "error": "unauthorized",
                    "message": "missing or wrong Authorization: Bearer <api key>",
                },
            )
            status, body = await admin(b, "POST", "/api/prewarm", {"channels": ["a b"]})
            assert (status, body["error"]) == (400, "bad_request")
            status, body = await admin(b, "POST", "/api/prewarm", {"chans": []})
            assert status == 400
            before = sample(b, "wsfleet_cache_requests_total", {"layer": "l2", "result": "hit"})
            viewer = await Client.connect(b.ws_url, token(f"{prefix}-viewer"))
            try:
                reply = await viewer.subscribe(f"{prefix}-3")
                assert reply.meta == {"i": 3}
            finally:
                await viewer.close()
            after = sample(b, "wsfleet_cache_requests_total", {"layer": "l2", "result": "hit"})
            assert after == before  # served from the pre-warmed L1
            assert await redis.get(meta_key(f"{prefix}-3")) == json.dumps({"i": 3}).replace(" ", "")


def _gateway(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WSFLEET_")}
    full.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "wsfleet", "gateway", "--port", "0", "--admin-port", "0", *args],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_gateway_without_a_key_refuses_to_start_with_a_clear_message() -> None:
    proc = _gateway(env={})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "refusing to start" in out
    assert "WSFLEET_JWT_SECRET" in out
    assert "WSFLEET_AUTH=disabled" in out


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--no-auth",), {}),
        ((), {"WSFLEET_AUTH": "disabled"}),
        ((), {"WSFLEET_JWT_SECRET": SECRET}),
    ],
)
def test_gateway_starts_with_a_key_or_loudly_without_auth(
    args: tuple[str, ...], env: dict[str, str]
) -> None:
    lines: list[str] = []
    proc = _gateway(*args, "--port", str(free_port()), env={"WSFLEET_NODE_NAME": "cli", **env})
    assert proc.stdout is not None
    try:

        def ready() -> bool:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line and proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {lines}")
            lines.append(line)
            return "gateway_ready" in line

        wait_until_sync(ready, timeout_s=60, interval_s=0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = "".join(lines)
    disabled = bool(args) or env.get("WSFLEET_AUTH") == "disabled"
    assert ("AUTHENTICATION IS DISABLED" in text) is disabled
    assert SECRET not in text


async def test_protection_switch_off_keeps_the_core() -> None:
    settings = protected_settings(protection=False, auth="disabled")
    async with running(settings) as gw:
        assert gw.protection is None
        assert gw.store is gw.broker
        client = await Client.connect(gw.ws_url)
        try:
            await client.subscribe("plain")
            await client.publish("plain", 1)
            assert (await client.next_message(timeout_s=10)).data == 1
        finally:
            await client.close()
        status, body = await admin(gw, "GET", "/readyz")
        assert (status, body["detail"]) == (200, {"protection": False})
        assert await admin(gw, "POST", "/api/prewarm", {"channels": ["a"]}) == (
            409,
            {
                "error": "bad_request",
                "message": "the channel cache is off (WSFLEET_PROTECTION=false)",
            },
        )
