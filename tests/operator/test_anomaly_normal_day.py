"""A normal wedding-season Saturday raises no anomaly; the same day with incidents raises
exactly those. Two days of history and the Saturday (`normal_day.wedding_season`: three
gateway pods of a June fleet, every 5 minutes) are backfilled into a real Prometheus,
and the operator's real `AnomalyWatch` replays the Saturday against it, one check every
10 minutes (held for 10), with the default thresholds: real PromQL over real history (the latency's
seasonal expectation, the flood's one-hour baseline, the leak's one-hour trends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from wsfleet_operator.anomaly.watch import AnomalyWatch
from wsfleet_operator.prometheus import PrometheusClient
from wsfleet_operator.spec import AnomalyRecord, AnomalySignal, FleetSpec, parse_spec

from tests.operator.normal_day import (
    DAY,
    SATURDAY,
    BackfilledPrometheus,
    Incident,
    backfilled_prometheus,
    openmetrics,
    wedding_season,
)

INCIDENT = Incident()
CHECK_S = 600.0


@pytest.fixture(scope="module")
def history() -> Iterator[BackfilledPrometheus]:
    t, normal = wedding_season("chat", seed=1)
    _, incident = wedding_season("incident", seed=2, incident=INCIDENT)
    with backfilled_prometheus(openmetrics(t, normal, incident)) as prometheus:
        yield prometheus


def spec_for(url: str) -> FleetSpec:
    """The defaults, but for what a 5-minute history needs: rate() over 15 minutes, checks
    every 10 minutes held for 10, two days of latency history, 5-minute memory trends."""
    return parse_spec(
        {
            "prometheus": {"url": url, "rateWindow": "15m"},
            "anomalies": {
                "forSeconds": int(CHECK_S),
                "latency": {"historySeconds": int(2 * DAY)},
                "leak": {"stepSeconds": 300},
            },
        }
    )


@dataclass
class Day:
    raised: list[AnomalyRecord] = field(default_factory=list)
    resolved: list[AnomalyRecord] = field(default_factory=list)
    peak: dict[AnomalySignal, float] = field(default_factory=dict)
    """the highest score (size / threshold) each signal reached"""
    checks: int = 0


async def replay(url: str, service: str) -> Day:
    """The watch of fleet `weddings/<service>`, checked every 10 minutes of the Saturday."""
    spec = spec_for(url)
    day = Day()
    async with PrometheusClient(url, 10.0) as client:
        watch = AnomalyWatch(client, lambda: spec, "weddings", service)
        for now in np.arange(SATURDAY + CHECK_S, SATURDAY + DAY, CHECK_S):
            out = await watch.check(float(now))
            assert out is not None
            assert set(out.scores) == set(AnomalySignal), "a signal went unchecked"
            day.checks += 1
            day.raised += out.raised
            day.resolved += out.resolved
            for signal, score in out.scores.items():
                day.peak[signal] = max(day.peak.get(signal, 0.0), score)
        assert watch.baselines[AnomalySignal.SWITCH_LATENCY] is not None
    return day


@pytest.fixture(scope="module")
def days(history: BackfilledPrometheus) -> dict[str, Day]:
    async def both() -> list[Day]:
        return list(
            await asyncio.gather(replay(history.url, "chat"), replay(history.url, "incident"))
        )

    normal, incident = asyncio.run(both())
    print(
        "normal Saturday, highest score per signal (1 = raised):",
        {s.value: round(v, 3) for s, v in normal.peak.items()},
    )
    return {"normal": normal, "incident": incident}


def test_a_normal_wedding_season_day_raises_no_anomaly(days: dict[str, Day]) -> None:
    normal = days["normal"]
    assert normal.checks == int(DAY / CHECK_S) - 1
    assert normal.raised == [], [r.message for r in normal.raised]
    # not by luck: every signal was looked at all day and stayed under its threshold
    assert all(score < 1.0 for score in normal.peak.values())


def hour(ts: float) -> float:
    return (ts - SATURDAY) / 3600.0


def test_the_same_day_with_incidents_raises_exactly_them(days: dict[str, Day]) -> None:
    incident = days["incident"]
    got = {(r.signal, r.subject): r for r in incident.raised}
    assert set(got) == {
        (AnomalySignal.SWITCH_LATENCY, "fleet"),
        (AnomalySignal.CONNECT_FLOOD, "fleet"),
        (AnomalySignal.MEMORY_LEAK, INCIDENT.leak_pod),
    }, [r.message for r in incident.raised]
    switch = got[(AnomalySignal.SWITCH_LATENCY, "fleet")]
    start, end = INCIDENT.slow_switches
    assert start <= hour(switch.at) <= end
    flood = got[(AnomalySignal.CONNECT_FLOOD, "fleet")]
    start, end = INCIDENT.flood
    assert start <= hour(flood.at) <= end
    assert "from its top user per pod" in flood.message
    leak = got[(AnomalySignal.MEMORY_LEAK, INCIDENT.leak_pod)]
    assert INCIDENT.leak_from <= hour(leak.at) <= INCIDENT.leak_from + 2
    # the latency and the flood ended and were resolved; the leak goes on
    resolved = {(r.signal, r.subject): r for r in incident.resolved}
    assert hour(resolved[(AnomalySignal.SWITCH_LATENCY, "fleet")].resolved_at or 0) <= 15.5
    assert hour(resolved[(AnomalySignal.CONNECT_FLOOD, "fleet")].resolved_at or 0) <= 17.5
    assert (AnomalySignal.MEMORY_LEAK, INCIDENT.leak_pod) not in resolved
