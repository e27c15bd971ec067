"""Cache pre-warm before a forecast peak: the pure timing rule, and the operator driving a
real in-process gateway (real Redis) through its admin API.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_operator import kube
from wsfleet_operator.autoscaler import Autoscaler
from wsfleet_operator.forecast_provider import SeasonalForecastProvider
from wsfleet_operator.kube import Connection, KubeClient
from wsfleet_operator.prewarm import (
    HOT_KEY,
    CachePrewarmer,
    PodAddress,
    hottest_from_redis,
    kubernetes_prewarmer,
    prewarm_due,
    read_secret_key,
    ready_pod_addresses,
)
from wsfleet_operator.spec import FleetSpec, parse_spec

from tests.operator.harness import kube_api, pod_manifest, user_client
from tests.operator.test_autoscaler import FakeMetrics, FakeTarget

app = pytest.importorskip("wsfleet_gateway.app", reason="the gateway package is not installed")
gw_settings = pytest.importorskip("wsfleet_gateway.settings", reason="gateway settings")
gw_prewarm = pytest.importorskip("wsfleet_gateway.prewarm", reason="gateway prewarm")

API_KEY = "operator-prewarm-test-key"
JWT = "a-jwt-secret-for-the-prewarm-test-32b+"
# 17:30 UTC on a June day: the priors' evening peak (18:00-20:00) is inside 3 h
NOW = datetime.datetime(2026, 6, 10, 17, 30, tzinfo=datetime.UTC).timestamp()

times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
windows = st.floats(min_value=1, max_value=86400, allow_nan=False)


# --------------------------------------------------------------------------- the rule


@given(now=times, peak=times, before=windows)
def test_never_due_outside_the_window(now: float, peak: float, before: float) -> None:
    if not peak - before <= now < peak:
        assert not prewarm_due(now, peak, before, None)


@given(peak=times, before=windows, into=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_due_once_per_peak(peak: float, before: float, into: float) -> None:
    now = peak - before + into * before
    if not peak - before <= now < peak:  # float rounding at the edges
        return
    assert prewarm_due(now, peak, before, None)
    # recorded: never again for that peak, nor a refit moving it by less than the window
    for later in (now, (now + peak) / 2):
        assert not prewarm_due(later, peak, before, peak)
    assert not prewarm_due(now, peak, before, peak - before / 2)
    # the next day's peak is a new one
    assert prewarm_due(peak + 86400 - before / 2, peak + 86400, before, peak)


@given(now=times, peak=st.none() | times, done=st.none() | times)
def test_off_without_a_window_or_a_peak(now: float, peak: float | None, done: float | None) -> None:
    assert not prewarm_due(now, peak, 0, done)
    assert not prewarm_due(now, None, 3600, done)


# --------------------------------------------------------------------------- a real gateway


@pytest.fixture
async def gateway(redis_server: Any) -> AsyncIterator[Any]:
    settings = gw_settings.GatewaySettings(
        port=0,
        admin_port=0,
        node_name="prewarm-gw",
        api_key=API_KEY,
        jwt_secret=JWT,
        redis_url=redis_server.url,
        prewarm_top=0,  # nothing warmed at start: only the operator's call fills L1
    )
    gw = app.Gateway(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


CHANNELS = {"venue-0": 50, "venue-1": 40, "venue-2": 30, "venue-3": 2, "venue-4": 1}


async def _seed(gw: Any, url: str) -> None:
    """Channel metadata in L2 (not L1) and popularity counts, as gateways leave them."""
    for channel in CHANNELS:
        await gw.store.set_meta(channel, {"name": channel})
    client = aioredis.Redis.from_url(url)
    try:
        await client.zadd(HOT_KEY, dict(CHANNELS))
    finally:
        await client.aclose()
    assert gw.protection.cache.l1.keys("meta") == []


def _fleet(admin_port: int, **forecast: Any) -> FleetSpec:
    return parse_spec(
        {
            "auth": {"jwtSecretRef": {"name": "j", "key": "k"}},
            "gateway": {"adminPort": admin_port},
            "targets": {"connectionsPerPod": 100, "switchLatencyP95Ms": None},
            "forecast": {
                "enabled": True,
                "prewarmBeforeSeconds": 3 * 3600,
                "prewarmChannels": 3,
                **forecast,
            },
        }
    )


def _prewarmer(url: str, pods: list[tuple[str, str]], key: str | None) -> CachePrewarmer:
    async def pod_list() -> list[PodAddress]:
        return [PodAddress(name, host) for name, host in pods]

    async def api_key() -> str | None:
        return key

    async def hottest(n: int) -> list[str]:
        return await hottest_from_redis(url, n)

    return CachePrewarmer(pod_list, hottest, api_key, timeout_s=10.0)


async def test_operator_prewarms_the_hottest_channels_before_the_peak(
    gateway: Any, redis_server: Any
) -> None:
    assert HOT_KEY == gw_prewarm.HOT_KEY
    await _seed(gateway, redis_server.url)
    spec = _fleet(gateway.admin_port)
    forecaster = SeasonalForecastProvider(spec, baseline=1000.0)
    peak = forecaster.next_peak(NOW)
    assert peak is not None
    assert NOW < peak.at <= NOW + 3 * 3600  # the predicted evening peak is inside the window
    prewarmer = _prewarmer(redis_server.url, [("gw-0", "127.0.0.1")], API_KEY)
    scaler = Autoscaler(
        spec, FakeTarget(), FakeMetrics(connections=100), forecaster, prewarmer=prewarmer
    )
    first = await scaler.tick(NOW)
    warmed = [e for e in first.events if e.reason == "CachePrewarmed"]
    assert len(warmed) == 1, first.events
    assert "3 hottest channels on 1/1 gateway pods" in warmed[0].message
    assert sorted(gateway.protection.cache.l1.keys("meta")) == ["venue-0", "venue-1", "venue-2"]
    assert first.status_patch()["forecast"]["prewarmedFor"] == peak.at
    # the same peak a tick later: nothing again
    second = await scaler.tick(NOW + 60)
    assert not [e for e in second.events if e.reason.startswith("CachePrewarm")]
    assert second.status_patch()["forecast"]["prewarmedFor"] == peak.at
    assert API_KEY not in repr(first.events) + repr(first.status_patch())


async def test_failures_are_events_never_exceptions(gateway: Any, redis_server: Any) -> None:
    await _seed(gateway, redis_server.url)
    spec = _fleet(gateway.admin_port)
    peak = NOW + 600
    # wrong key (401) on the real gateway, and a pod nobody listens on
    bad = _prewarmer(redis_server.url, [("gw-0", "127.0.0.1"), ("gw-x", "127.0.0.2")], "nope")
    report = await bad.maybe(spec, NOW, peak)
    assert report is not None
    assert not report.ok
    assert {r.pod for r in report.failed} == {"gw-0", "gw-x"}
    assert "HTTP 401 unauthorized" in report.message()
    assert gateway.protection.cache.l1.keys("meta") == []
    assert bad.prewarmed_for == peak  # once per peak: no retry storm
    assert await bad.maybe(spec, NOW + 1, peak) is None
    # no API key configured, no channels, no pods: said so
    for prewarmer, why in (
        (_prewarmer(redis_server.url, [("p", "127.0.0.1")], None), "apiKeySecretRef"),
        (_prewarmer("redis://127.0.0.1:1/0", [("p", "127.0.0.1")], API_KEY), "popularity"),
        (_prewarmer(redis_server.url, [], API_KEY), "no ready gateway pods"),
    ):
        report = await prewarmer.maybe(spec, NOW, peak)
        assert report is not None
        assert why in str(report.problem)
    # dry run, forecast off: never
    for off in (spec.model_copy(update={"dry_run": True}), _fleet(1, enabled=False)):
        assert await _prewarmer(redis_server.url, [], API_KEY).maybe(off, NOW, peak) is None

    # a pod's own admin port (the local fleet's processes) wins over spec.gateway.adminPort
    async def local_pods() -> list[PodAddress]:
        return [PodAddress("local-0", "127.0.0.1", gateway.admin_port)]

    local = CachePrewarmer(local_pods, lambda n: _hot(), lambda: _key())
    report = await local.maybe(_fleet(1), NOW, peak)
    assert report is not None
    assert report.ok, report.message()
    assert gateway.protection.cache.l1.keys("meta") == ["venue-0"]

    async def broken() -> list[PodAddress]:
        raise RuntimeError("api down")

    crashing = CachePrewarmer(broken, lambda n: _hot(), lambda: _key())
    report = await crashing.maybe(spec, NOW, peak)
    assert report is not None
    assert "api down" in str(report.problem)

    async def leaky(n: int) -> list[str]:
        raise ValueError("bad url redis://:hunter2@redis:6379")

    report = await CachePrewarmer(local_pods, leaky, lambda: _key()).maybe(spec, NOW, peak)
    assert report is not None
    assert report.problem == "ValueError"  # a library's message never reaches an Event


async def _hot() -> list[str]:
    return ["venue-0"]


async def _key() -> str | None:
    return API_KEY


# --------------------------------------------------------------------------- Kubernetes


def _ready_pod(name: str, ip: str, ready: bool = True) -> dict[str, Any]:
    pod = pod_manifest(name, "chat")
    pod["status"] = {
        "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return pod


async def test_kubernetes_prewarmer_reads_pods_and_the_api_key_secret(
    gateway: Any, redis_server: Any
) -> None:
    await _seed(gateway, redis_server.url)
    raw = {
        "auth": {
            "jwtSecretRef": {"name": "chat-auth", "key": "jwt"},
            "apiKeySecretRef": {"name": "chat-auth", "key": "api-key"},
        },
        "redis": {"secretRef": {"name": "chat-redis", "key": "url"}},
        "gateway": {"adminPort": gateway.admin_port},
        "forecast": {"enabled": True, "prewarmChannels": 2},
    }
    spec = parse_spec(raw)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "chat-auth", "namespace": "default"},
        "data": {"api-key": base64.b64encode(API_KEY.encode()).decode()},
    }
    redis_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "chat-redis", "namespace": "default"},
        "data": {"url": base64.b64encode(redis_server.url.encode()).decode()},
    }
    async with kube_api() as (_api, url), user_client(url) as user:
        await user.create(kube.SECRETS, "default", secret)
        await user.create(kube.SECRETS, "default", redis_secret)
        await user.create(kube.PODS, "default", _ready_pod("chat-gw-0", "127.0.0.1"))
        await user.create(kube.PODS, "default", _ready_pod("chat-gw-1", "10.0.0.9", ready=False))
        async with KubeClient(Connection(url)) as client:  # the operator's RBAC applies
            assert await ready_pod_addresses(client, "default", "chat") == [
                PodAddress("chat-gw-0", "127.0.0.1")
            ]
            assert spec.auth is not None
            assert spec.auth.api_key_secret_ref is not None
            missing = spec.auth.api_key_secret_ref.model_copy(update={"key": "nope"})
            assert await read_secret_key(client, "default", missing) is None
            prewarmer = kubernetes_prewarmer(client, "default", "chat", lambda: spec)
            report = await prewarmer.maybe(spec, NOW, NOW + 60)
    assert report is not None
    assert report.ok, report.message()
    assert sorted(gateway.protection.cache.l1.keys("meta")) == ["venue-0", "venue-1"]


async def test_kubernetes_prewarmer_without_an_api_key_ref_says_so() -> None:
    spec = parse_spec({"auth": {"disabled": True}, "forecast": {"enabled": True}})
    async with kube_api() as (_api, url), KubeClient(Connection(url)) as client:
        prewarmer = kubernetes_prewarmer(client, "default", "chat", lambda: spec)
        report = await prewarmer.maybe(spec, NOW, NOW + 60)
    assert report is not None
    assert "apiKeySecretRef" in str(report.problem)
