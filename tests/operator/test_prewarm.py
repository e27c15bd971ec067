"""Cache pre-warm before a forecast peak: the pure timing rule, and the operator driving a
real in-process gateway (real Redis) through its admin API.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.cache import prewarm as gw_prewarm
from wsfleet_operator.autoscaler import Autoscaler
from wsfleet_operator.forecast.provider import SeasonalForecastProvider
from wsfleet_operator.prewarm import (
    HOT_KEY,
    CachePrewarmer,
    PodAddress,
    hottest_from_redis,
    prewarm_due,
)
from wsfleet_operator.spec import FleetSpec, parse_spec

from tests.operator.test_autoscaler import FakeMetrics, FakeTarget
from tests.support.prewarm_gateway import API_KEY, NOW, seed

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
    await seed(gateway, redis_server.url)
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
    await seed(gateway, redis_server.url)
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
