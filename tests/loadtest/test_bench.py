"""The benchmark suite: results summarised honestly, files written (a tiny real run)."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from tests.support.waiting import wait_until
from wsfleet.bench.figures import cache_counts
from wsfleet.bench.probes import (
    GcPauses,
    LoopLag,
    calm_gc,
    percentile,
    probe_figures,
    release_gc,
)
from wsfleet.bench.results import summarise, to_markdown
from wsfleet.bench.suite import SuiteConfig


def test_summary_takes_medians_and_ratios_against_the_baselines() -> None:
    runs = [
        {
            "baseline": {"idle_kb_per_conn": 10.0, "deliveries_per_s": 200_000.0},
            "gateway-off": {"idle_kb_per_conn": 12.0, "deliveries_per_s": 180_000.0},
            "gateway": {
                "idle_kb_per_conn": v,
                "deliveries_per_s": 150_000.0 + v,
                "switch_p99_ms": float("nan"),
                "fanout_errors": "unavailable=3" if v == 20.0 else "",
            },
        }
        for v in (13.0, 20.0, 14.0)
    ]
    doc = summarise({"runs": runs, "elapsed_s": 1.0, "pinning": {}}, SuiteConfig(), quick=False)
    mem = doc["figures"]["idle_kb_per_conn"]
    assert mem["values"]["gateway"]["runs"] == [13.0, 20.0, 14.0]
    assert mem["values"]["gateway"]["median"] == 14.0
    assert mem["ratios"]["gateway/baseline"] == 1.4
    assert mem["ratios"]["gateway/gateway-off"] == round(14 / 12, 3)
    assert mem["meets_target"] is True  # <= 16 KB
    fan = doc["figures"]["deliveries_per_s"]
    assert fan["values"]["gateway"]["median"] == 150_014.0
    assert fan["meets_target"] is True
    # figures nobody measured stay empty rather than invented
    cache = doc["figures"]["cache_hit_ratio"]
    assert cache["values"]["gateway"]["median"] is None
    assert doc["cache_status"] == "not measured"
    assert doc["figures"]["switch_p99_ms"]["values"]["gateway"]["median"] is None
    assert doc["raw_runs"][0]["gateway"]["switch_p99_ms"] is None  # NaN -> null
    json.dumps(doc, allow_nan=False)
    assert doc["problems"] == ["run 2, gateway: fanout: unavailable=3"]
    assert "| idle memory per connection at 10,000 | KB | 10.0 | 12.0 | 14.0 | 1.4 |" in (
        to_markdown({**doc, "pinning": {"server_cpu": 0, "load_cpu": 1}})
    )


def test_tiny_suite_run_writes_results_files(tmp_path: Path) -> None:
    """Every figure of every server kind, tiny sizes, as `make bench` runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "wsfleet.bench", "--tiny", "--out", str(tmp_path), "--name", "t"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["schema"] == "wsfleet.bench/v1"
    assert doc["provenance"]["commit"]
    keys = ("idle_kb_per_conn", "connect_per_s", "deliveries_per_s", "switch_p99_ms")
    keys += ("idle_switch_p99_ms", "background_dps")  # background: from its own process
    keys += ("idle_first_switch_p99_ms", "first_switch_p99_ms")  # first visits, timed apart
    for key in keys:
        for kind in ("baseline", "gateway-off", "gateway"):
            value = doc["figures"][key]["values"][kind]["median"]
            assert (value or 0) > 0, (key, kind, value)
    crosspod = doc["figures"]["crosspod_delivery_p50_ms"]["values"]["gateway"]["median"]
    assert (crosspod or 0) > 0
    assert doc["figures"]["switch_p99_ms"]["ratios"]["gateway/baseline"] is not None
    markdown = (tmp_path / "t.md").read_text()
    assert "| figure |" in markdown
    assert "cross-pod delivery p50" in markdown
    assert "first-visit switch p99" in markdown
    # every client's first cycle: 14 switches to channels new to the server
    for kind in ("baseline", "gateway-off", "gateway"):
        assert doc["raw_runs"][0][kind]["idle_first_switches"] == 14 * 5, kind


def test_cache_counts_per_layer_from_the_metrics_text() -> None:
    text = "\n".join(
        [
            "# HELP wsfleet_cache_requests_total Channel cache lookups",
            'wsfleet_cache_requests_total{layer="l1",result="hit"} 5.0',
            'wsfleet_cache_requests_total{layer="l1",result="miss"} 3.0',
            'wsfleet_cache_requests_total{layer="l2",result="hit"} 2.0',
            'wsfleet_cache_requests_total{layer="l2",result="miss"} 1.0',
            'wsfleet_deliveries_total{node="n"} 9.0',
        ]
    )
    assert cache_counts(text) == {"l1_total": 8.0, "l1_hit": 5.0, "l2_total": 3.0, "l2_hit": 2.0}
    assert cache_counts('wsfleet_deliveries_total{node="n"} 9.0') is None


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 0.5) == 51.0
    assert percentile(samples, 0.99) == 100.0
    assert math.isnan(percentile([], 0.5))


def test_calm_gc_freezes_and_release_gc_undoes_it() -> None:
    before = gc.get_threshold()
    saved = calm_gc(gen0=12_345)
    try:
        assert saved == before
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_freeze_count() > 0
    finally:
        release_gc(saved)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_probes_see_gc_pauses_and_loop_stalls() -> None:
    with GcPauses() as pauses:
        async with LoopLag() as lag:
            await asyncio.sleep(0)  # the probe takes its first timer
            gc.collect()
            stall_until = time.perf_counter() + 0.02  # a stall of this loop, to be seen
            while time.perf_counter() < stall_until:
                pass
            await wait_until(lambda: lag.lags_s, timeout_s=30, message="a lag sample")
    figures = probe_figures("x", lag, pauses)
    assert pauses.by_generation.get(2, 0) >= 1
    assert figures["x_load_gc_gen2"] >= 1
    assert figures["x_load_lag_max_ms"] >= 15.0
    assert gc.callbacks.count(pauses._callback) == 0
