"""A real Prometheus holding two weeks of backfilled connection history.

The history (5-minute samples of `wsfleet_connections`) has a sharp evening rise:
~400 connections all day, rising over 17:50-18:00 UTC to ~4000 until 20:00. It is
written as OpenMetrics, turned into TSDB blocks by `promtool tsdb create-blocks-from
openmetrics`, and served by a `prometheus` process started here (long retention, so
the backfilled blocks are kept), ending at the current time so that the CLI's
`--prometheus` mode (which asks for the last `--range`) finds it.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.forecast.synthetic import DAY, FloatArray
from wsfleet.services import find_binary, free_port, stop_process, wait_for_port

STEP = 300.0
LABELS = 'namespace="weddings-ns",service="weddings"'
QUERY = f"sum(wsfleet_connections{{{LABELS}}})"
PEAK_START_H = 18.0


def evening_load(t: FloatArray) -> FloatArray:
    """Noise-free load: 400 by day, a ramp 17:50-18:00 to 4000, held to 20:00, back by 21:00."""
    h = (t % DAY) / 3600.0
    rise = np.clip((h - (PEAK_START_H - 1 / 6)) * 6.0, 0.0, 1.0)
    fall = np.clip((21.0 - h), 0.0, 1.0)
    return 400.0 + 3600.0 * np.minimum(rise, fall)


@dataclass(frozen=True)
class History:
    url: str
    query: str
    t: FloatArray
    y: FloatArray

    @property
    def end(self) -> float:
        return float(self.t[-1])


def _openmetrics(t: FloatArray, y: FloatArray) -> str:
    lines = ["# TYPE wsfleet_connections gauge"]
    lines += [f"wsfleet_connections{{{LABELS}}} {v:.1f} {s:.0f}" for s, v in zip(t, y, strict=True)]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prometheus at {url} not ready after {timeout_s}s")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def history_prometheus() -> Iterator[History]:
    promtool = find_binary("promtool", "prometheus")
    binary = find_binary("prometheus", "prometheus")
    end = np.floor(time.time() / STEP) * STEP - STEP
    t = end - STEP * np.arange(int(14 * DAY / STEP) - 1, -1, -1, dtype=np.float64)
    rng = np.random.default_rng(5)
    y = evening_load(t) * np.exp(rng.normal(0.0, 0.05, t.size))
    with tempfile.TemporaryDirectory(prefix="wsfleet-forecast-prom-") as tmp:
        work = Path(tmp)
        (work / "history.om").write_text(_openmetrics(t, y))
        subprocess.run(
            [
                promtool,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "--max-block-duration=336h",  # 3 blocks, not 169 of 2 h
                "-q",
                "history.om",
                "data",
            ],
            cwd=work,
            check=True,
            timeout=120,
            capture_output=True,
        )
        (work / "prometheus.yml").write_text(yaml.safe_dump({"global": {}}))
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=3650d",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port("127.0.0.1", port, 60.0, proc)
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, 60.0)
            yield History(url=url, query=QUERY, t=t, y=y)
        finally:
            stop_process(proc)
