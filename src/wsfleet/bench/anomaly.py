"""What anomaly detection costs the operator and Prometheus (issue 22), on vs off.

    python -m wsfleet.bench.anomaly [--checks 40] [--json F]

Anomaly detection runs in the operator, once per autoscaler tick, and off costs nothing
there (the tick skips it: no query, no fit). On, per check:

- **live**: one Redis, three real gateway processes under a light photographer load
  (`wsfleet loadtest`, its own process), a real Prometheus scraping them every second
  with the labels the default queries select on; once it holds `WARM_S` of samples, the
  operator's real `AnomalyWatch` checks `checks` times. Reported: the PromQL requests
  per check (Prometheus' own ``prometheus_http_requests_total``), the check's wall time
  p50/p99, and the CPU per check of this (the operator's) process and of Prometheus
  (above what it spends scraping, measured over as long a window without checks).
- **the latency expectation's fit** (`fit_latency_baseline`, in a worker thread once per
  ``latency.refitSeconds``, an hour by default) on the default history, 7 days at
  5-minute steps (2,016 points of a wedding-season shape): its median time over
  `FITS` fits, per signal (switch and delivery latency each have one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

import numpy as np
from wsfleet_operator.anomaly.detect import fit_latency_baseline
from wsfleet_operator.anomaly.watch import AnomalyWatch
from wsfleet_operator.prometheus import PrometheusClient
from wsfleet_operator.spec import parse_spec

from wsfleet.bench.probes import percentile
from wsfleet.bench.results import emit_figures
from wsfleet.gatewayproc import ServerProcess, cpu_seconds, gateway_process
from wsfleet.services import PrometheusServer, RedisServer

NAMESPACE, NAME = "weddings", "chat"
GATEWAYS = 3
WARM_S = 45.0
FITS = 5
DAY = 86400.0
SECRET = "bench-anomaly-secret-0123456789abcdef-0123"


def prometheus_requests(url: str) -> float:
    """Query API requests Prometheus has served so far (instant and range)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and (
            'handler="/api/v1/query"' in line or 'handler="/api/v1/query_range"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape_config(prometheus: PrometheusServer, gateways: list[ServerProcess]) -> None:
    """One file_sd group per gateway: the fleet's labels and its own ``pod``."""
    groups = []
    for i, gateway in enumerate(gateways):
        assert gateway.admin_url is not None
        target = gateway.admin_url.removeprefix("http://")
        labels = {"namespace": NAMESPACE, "service": NAME, "pod": f"gw-{i}"}
        groups.append({"targets": [target], "labels": labels})
    tmp = prometheus.targets_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(prometheus.targets_file)


def load(url: str, seconds: float) -> subprocess.Popen[bytes]:
    """A light photographer load in its own process (its CPU is not the operator's)."""
    argv = [
        sys.executable, "-m", "wsfleet", "loadtest", "photographer", "--url", url,
        "--connections", "30", "--duration", str(seconds), "--think-time", "0.5",
        "--max-requests", "1000000", "--jwt-secret", SECRET,
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def live_checks(checks: int) -> dict[str, Any]:
    env = {"WSFLEET_JWT_SECRET": SECRET, "WSFLEET_USER_CONNECTS_PER_MIN": "100000"}
    with RedisServer() as redis_server:
        gateways = [gateway_process(redis_url=redis_server.url, env=env) for _ in range(GATEWAYS)]
        prometheus = PrometheusServer(scrape_interval_s=1.0)
        loader: subprocess.Popen[bytes] | None = None
        try:
            for gateway in gateways:
                gateway.launch()
            for gateway in gateways:
                gateway.wait_ready(60.0)
            prometheus.start([])
            scrape_config(prometheus, gateways)
            loader = load(gateways[0].ws_url, WARM_S + checks * 3.0 + 60.0)
            await asyncio.sleep(WARM_S)  # history for the rate windows and trends
            spec = parse_spec(
                {"prometheus": {"url": prometheus.url, "rateWindow": "30s"}, "anomalies": {}}
            )
            async with PrometheusClient(prometheus.url, 10.0) as client:
                watch = AnomalyWatch(client, lambda: spec, NAMESPACE, NAME)
                await watch.check(time.time())  # first check: connections, fits tried
                assert prometheus.proc is not None
                prom_pid = prometheus.proc.pid
                # Prometheus' own work (scraping, compaction) at this load, with no checks
                idle_started, idle_cpu = time.perf_counter(), cpu_seconds(prom_pid)
                await asyncio.sleep(checks * 0.5)
                idle_rate = (cpu_seconds(prom_pid) - idle_cpu) / (
                    time.perf_counter() - idle_started
                )
                requests_before = prometheus_requests(prometheus.url)
                prom_cpu_before = cpu_seconds(prom_pid)
                cpu_before = time.process_time()
                window_started = time.perf_counter()
                walls: list[float] = []
                checked = 0
                for _ in range(checks):
                    started = time.perf_counter()
                    report = await watch.check(time.time())
                    walls.append(time.perf_counter() - started)
                    checked += len(report.scores) if report is not None else 0
                    await asyncio.sleep(0.5)  # ticks are seconds apart, not back to back
                cpu = time.process_time() - cpu_before
                window = time.perf_counter() - window_started
                prom_cpu = cpu_seconds(prom_pid) - prom_cpu_before - idle_rate * window
                # this read's own request is not a check's
                requests = prometheus_requests(prometheus.url) - requests_before - 1
        finally:
            if loader is not None:
                loader.terminate()
                loader.wait(30)
            prometheus.stop()
            for gateway in gateways:
                gateway.stop()
    return {
        "checks": checks,
        "signals_checked_per_check": round(checked / checks, 2),
        "promql_requests_per_check": round(requests / checks, 2),
        "wall_p50_ms": round(percentile(walls, 0.5) * 1000, 2),
        "wall_p99_ms": round(percentile(walls, 0.99) * 1000, 2),
        "operator_cpu_ms_per_check": round(cpu / checks * 1000, 2),
        "prometheus_cpu_ms_per_check": round(prom_cpu / checks * 1000, 2),
    }


def season_latency(days: float = 7.0, step_s: float = 300.0) -> tuple[np.ndarray, np.ndarray]:
    """A switch-latency p95 history: 3 ms at night to 9 ms at the evening peak, noisy."""
    rng = np.random.default_rng(1)
    t = np.arange(0.0, days * DAY, step_s) + 1_781_308_800.0  # June 2026
    hour = (t % DAY) / 3600.0
    evening = np.exp(-((hour - 19.0) ** 2) / 2.0)
    day = np.clip(np.sin((hour - 6.0) / 16.0 * math.pi), 0.0, None)
    p95 = 0.003 * (1.0 + day + 2.0 * evening) * np.exp(rng.normal(0.0, 0.15, t.size))
    return t, p95


def fit_cost() -> dict[str, Any]:
    t, v = season_latency()
    times = []
    for _ in range(FITS):
        started = time.perf_counter()
        fitted = fit_latency_baseline(t, v, min_points=24, timezone="Europe/London")
        times.append(time.perf_counter() - started)
        assert fitted is not None
    return {
        "points": int(t.size),
        "fit_median_ms": round(statistics.median(times) * 1000, 1),
        "fits_per_hour_per_fleet": 2,
        "cpu_share_of_one_core": round(2 * statistics.median(times) / 3600.0, 6),
    }


async def run(checks: int) -> dict[str, Any]:
    return {
        "off": "no query, no fit: the autoscaler tick skips detection when disabled",
        "on_live": await live_checks(checks),
        "on_fit": fit_cost(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=40)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.checks))
    emit_figures(figures, args.json)


if __name__ == "__main__":
    main()
