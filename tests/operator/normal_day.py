"""Days of a wedding-season fleet's gateway metrics, backfilled into a real Prometheus.

`wedding_season(...)` generates what three gateway pods of one fleet would have served
every `STEP_S` over a few June days ending on a Saturday: connections (night 500,
suppliers' day 2,500, couples' evening peak 5,000 at 18:00-20:00, the daily shape of
`tests.forecast.synthetic` on top), channel switch and delivery latency histograms that
slow a little with load (heavy-tailed), connection attempts with their top user and top
address shares (a drain's reconnect storm every evening at 20:40, a venue's guests
behind one address now and then), and RSS that follows the connections and keeps part of
their peak, beside the L1 cache. `Incident` adds anomalies to it on the last day.

`BackfilledPrometheus` writes that as OpenMetrics, turns it into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics` and serves them from a real `prometheus`
(30 days of retention: the test's `PrometheusServer` keeps one day).
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from tests.forecast.synthetic import hour_profile
from wsfleet.services import find_binary, free_port, stop_process, wait_for_port

DAY = 86400.0
STEP_S = 300.0
"""The backfilled scrape interval (the queries' rate window must span a few of them)."""
SATURDAY = 1781913600.0
"""Saturday 2026-06-20 00:00 UTC, the last (the tested) day."""
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
PODS = ("gw-0", "gw-1", "gw-2")
MIB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Incident:
    """Anomalies on the last day (hours of that day)."""

    slow_switches: tuple[float, float] = (14.0, 14.4)
    """switches 30x slower between these hours"""
    flood: tuple[float, float] = (16.0, 16.34)
    """one user hammering every pod (300 attempts a minute each) between these hours"""
    leak_pod: str = "gw-2"
    leak_from: float = 10.0
    """hour from which `leak_pod` leaks 150 MiB an hour"""


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _smooth_step(h: np.ndarray, start: float, end: float, ramp: float) -> np.ndarray:
    up = 1.0 / (1.0 + np.exp(-(h - start) / (ramp / 4)))
    down = 1.0 / (1.0 + np.exp((h - end) / (ramp / 4)))
    return up * down


def _day_shape(hours: np.ndarray) -> np.ndarray:
    """Share of the evening peak: night 0.1, suppliers 0.5 (9-17), couples 1.0 (18-20)."""
    shape = (
        0.1 + 0.4 * _smooth_step(hours, 9.0, 20.0, 1.0) + 0.5 * _smooth_step(hours, 18, 20, 0.75)
    )
    return shape * hour_profile(hours) / hour_profile(np.asarray(19.0))


def _histogram(
    rng: np.random.Generator, count: np.ndarray, median: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative bucket counters (time x len(BUCKETS)+1) and _count of log-normal
    observations: `count[i]` of them around `median[i]` in step i (no _sum: no query
    reads it)."""
    edges = np.asarray(BUCKETS)
    z = (np.log(edges)[None, :] - np.log(median)[:, None]) / (sigma * math.sqrt(2.0))
    cdf = 0.5 * (1.0 + _ERF(z))
    probs = np.diff(np.concatenate([np.zeros((count.size, 1)), cdf, np.ones((count.size, 1))], 1))
    per_step = rng.poisson(count[:, None] * probs)
    cumulative_le = np.cumsum(per_step, axis=1)
    return (
        np.cumsum(cumulative_le, axis=0).astype(np.float64),
        np.cumsum(cumulative_le[:, -1]).astype(np.float64),
    )


@dataclass
class Family:
    name: str
    kind: str
    series: list[tuple[dict[str, str], np.ndarray]]
    """(labels, values per step); histograms keep `le` in the labels of `_bucket`"""


def wedding_season(
    service: str,
    days: int = 3,
    seed: int = 1,
    incident: Incident | None = None,
    namespace: str = "weddings",
) -> tuple[np.ndarray, list[Family]]:
    """Step times and the metric families of one fleet (see the module docstring)."""
    rng = np.random.default_rng(seed)
    end = SATURDAY + DAY
    t = np.arange(end - days * DAY, end, STEP_S)
    hours = (t % DAY) / 3600.0
    day = ((t - t[0]) // DAY).astype(np.int64)
    level = np.asarray([1.0, 0.94, 1.04, 1.1, 1.0, 0.97, 1.08][:days])[day]
    total = 5000.0 * level * _day_shape(hours) * np.exp(rng.normal(0, 0.03, t.size))
    last = t >= SATURDAY
    last_h = np.where(last, hours, -1.0)

    def during(span: tuple[float, float]) -> np.ndarray:
        return (last_h >= span[0]) & (last_h < span[1])

    base = {"namespace": namespace, "service": service}
    families = {
        n: Family(n, k, [])
        for n, k in (
            ("wsfleet_connections", "gauge"),
            ("process_resident_memory_bytes", "gauge"),
            ("wsfleet_cache_l1_bytes", "gauge"),
            ("wsfleet_connects_per_minute", "gauge"),
            ("wsfleet_connects_top_user_share", "gauge"),
            ("wsfleet_connects_top_ip_share", "gauge"),
            ("wsfleet_channel_switch_seconds", "histogram"),
            ("wsfleet_message_delivery_seconds", "histogram"),
            ("wsfleet_drain_in_progress", "gauge"),
        )
    }
    storm = (hours >= 20.66) & (hours < 20.66 + STEP_S / 3600.0)
    for pod in PODS:
        labels = {**base, "pod": pod}
        conns = np.round(total * (1 / 3) * np.exp(rng.normal(0, 0.02, t.size)))
        families["wsfleet_connections"].series.append((labels, conns))
        families["wsfleet_drain_in_progress"].series.append((labels, np.zeros(t.size)))
        # attempts in the last minute: churn (30-minute sessions), arrivals, the storm
        arrivals = np.maximum(np.diff(conns, prepend=conns[0]), 0.0) / (STEP_S / 60.0)
        attempts = rng.poisson(conns / 30.0 + arrivals).astype(np.float64)
        attempts += np.where(storm, 600.0, 0.0)
        top_user = np.minimum(1.0 + rng.poisson(1.0, t.size), np.maximum(attempts, 1.0))
        venue = (hours >= 17) & (rng.random(t.size) < 0.3)
        ip_share = np.where(venue, rng.uniform(0.1, 0.35, t.size), 0.0)
        if incident is not None:
            flood = during(incident.flood)
            top_user = np.where(flood, top_user + 300.0, top_user)
            attempts = np.where(flood, attempts + 300.0, attempts)
        user_share = np.where(attempts > 0, top_user / np.maximum(attempts, 1.0), 0.0)
        ip_share = np.maximum(ip_share, user_share)
        families["wsfleet_connects_per_minute"].series.append((labels, attempts))
        families["wsfleet_connects_top_user_share"].series.append((labels, user_share))
        families["wsfleet_connects_top_ip_share"].series.append((labels, ip_share))
        # memory: follows the connections, keeps part of the day's peak; the L1 cache
        day_start = (t - t[0]) // DAY
        peak = np.zeros(t.size)
        for d in np.unique(day_start):
            sel = day_start == d
            peak[sel] = np.maximum.accumulate(conns[sel])
        cache = (5.0 + 35.0 * _day_shape(hours)) * MIB
        rss = 90 * MIB + 14_000.0 * (0.7 * conns + 0.3 * peak) + cache
        rss += rng.normal(0, 1.0 * MIB, t.size)
        if incident is not None and pod == incident.leak_pod:
            leaking = np.clip(last_h - incident.leak_from, 0.0, None)
            rss += np.where(last_h >= incident.leak_from, 150 * MIB * leaking, 0.0)
        families["process_resident_memory_bytes"].series.append((labels, rss))
        families["wsfleet_cache_l1_bytes"].series.append((labels, cache))
        # latency: a little slower under load, heavy tails; switches every 2 minutes a user
        switch_median = 0.0015 * (1.0 + conns / 1500.0)
        if incident is not None:
            switch_median = np.where(
                during(incident.slow_switches), 30 * switch_median, switch_median
            )
        for family, count, median in (
            ("wsfleet_channel_switch_seconds", conns * (STEP_S / 120.0), switch_median),
            (
                "wsfleet_message_delivery_seconds",
                conns * 0.4 * (STEP_S / 60.0),
                0.002 * (1.0 + conns / 2000.0),
            ),
        ):
            buckets, total_count = _histogram(rng, count, median, 0.6)
            series = families[family].series
            for j, le in enumerate([*(f"{b:g}" for b in BUCKETS), "+Inf"]):
                series.append(({**labels, "le": le}, buckets[:, j]))
            series.append(({**labels, "__suffix": "_count"}, total_count))
    return t, list(families.values())


def openmetrics(t: np.ndarray, *fleets: list[Family]) -> str:
    """The fleets' families as OpenMetrics text (one family per name, every series'
    samples in time order)."""
    merged: dict[str, Family] = {}
    for families in fleets:
        for family in families:
            into = merged.setdefault(family.name, Family(family.name, family.kind, []))
            into.series.extend(family.series)
    out: list[str] = []
    stamps = [f"{x:.0f}" for x in t]
    for family in merged.values():
        out.append(f"# TYPE {family.name} {family.kind}")
        for labels, values in family.series:
            labels = dict(labels)
            suffix = labels.pop("__suffix", "_bucket" if "le" in labels else "")
            text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            head = f"{family.name}{suffix}{{{text}}} "
            out.extend(f"{head}{v:.6g} {s}" for v, s in zip(values, stamps, strict=True))
    out.append("# EOF")
    return "\n".join(out) + "\n"


@dataclass
class BackfilledPrometheus:
    url: str
    blocks: int


@contextmanager
def backfilled_prometheus(text: str) -> Iterator[BackfilledPrometheus]:
    """A real Prometheus serving `text` (OpenMetrics) as history; nothing is scraped."""
    workdir = Path(tempfile.mkdtemp(prefix="wsfleet-backfill-"))
    data = workdir / "data"
    source = workdir / "history.om"
    source.write_text(text)
    subprocess.run(
        [find_binary("promtool", "prometheus"), "tsdb", "create-blocks-from", "openmetrics",
         "--quiet", str(source), str(data)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    source.unlink()
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1m"}}))
    port = free_port()
    proc = subprocess.Popen(
        [
            find_binary("prometheus", "prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, 60.0, proc)  # type: ignore[arg-type]
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        blocks = sum(1 for p in data.iterdir() if (p / "meta.json").exists())
        yield BackfilledPrometheus(url, blocks)
    finally:
        stop_process(proc)  # type: ignore[arg-type]
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    from tests.support.waiting import wait_until_sync

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("prometheus exited while loading the backfilled blocks")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    wait_until_sync(ready, timeout_s=60.0, interval_s=0.1, message="prometheus ready")
