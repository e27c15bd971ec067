"""The benchmark suite: results summarised honestly, files written (a tiny real run)."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.waiting import wait_until, wait_until_sync
from wsfleet.bench import native
from wsfleet.bench.figures import cache_counts
from wsfleet.bench.probes import (
    GcPauses,
    LoopLag,
    calm_gc,
    percentile,
    probe_figures,
    release_gc,
)
from wsfleet.bench.results import ON_OFF_BOUND, on_off_verdict, summarise, to_markdown
from wsfleet.bench.suite import KINDS, SuiteConfig, run_order
from wsfleet.gatewayproc import cpu_seconds


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


def test_on_off_section_pairs_each_run_and_judges_the_bounded_figures() -> None:
    """Issue 4's check: per-run on ÷ off (same run, same machine state), median, verdict."""
    runs = [
        {
            "gateway-off": {"deliveries_per_s": 100.0, "ab_switch_p99_ms": 1.0},
            "gateway": {"deliveries_per_s": on_rate, "ab_switch_p99_ms": on_p99},
        }
        for on_rate, on_p99 in ((90.0, 1.1), (80.0, 1.3), (95.0, 1.2))
    ]
    runs.append({"gateway": {"deliveries_per_s": 1.0}})  # no features-off value: not paired
    doc = summarise({"runs": runs, "elapsed_s": 1.0, "pinning": {}}, SuiteConfig(), quick=False)
    fan = doc["figures"]["deliveries_per_s"]["on_off"]
    assert fan == {"runs": [0.9, 0.8, 0.95], "median": 0.9, "bounded": True, "within_bound": True}
    p99 = doc["figures"]["ab_switch_p99_ms"]["on_off"]
    assert p99["runs"] == [1.1, 1.3, 1.2]
    assert p99["median"] == 1.2
    assert p99["within_bound"] is False  # 1.2 > 1.15
    assert doc["figures"]["switch_p99_ms"]["on_off"]["bounded"] is False
    assert doc["figures"]["idle_switch_p99_ms"]["on_off"]["bounded"] is False  # sequential
    markdown = to_markdown({**doc, "pinning": {"server_cpu": 0, "load_cpu": 1}})
    section = markdown.split("## Features on vs off", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| fan-out")]
    assert rows == ["| fan-out to 1,000 subscribers | 0.9 | 0.9, 0.8, 0.95 | **yes** ✅ |"]
    assert "| 1.2 | 1.1, 1.3, 1.2 | **no** ❌ |" in section
    # the bound both ways: rates may drop by 15 %, latencies and CPU may grow by 15 %
    assert on_off_verdict(1 + ON_OFF_BOUND, "lower") is True
    assert on_off_verdict(1.16, "lower") is False
    assert on_off_verdict(1 - ON_OFF_BOUND, "higher") is True
    assert on_off_verdict(0.84, "higher") is False
    assert on_off_verdict(None, "higher") is None


def test_runs_alternate_the_order_of_the_server_kinds() -> None:
    assert run_order(KINDS, 0) == KINDS
    assert run_order(KINDS, 1) == tuple(reversed(KINDS))
    assert run_order(KINDS, 2) == KINDS


def test_cpu_seconds_of_another_process_counts_its_work() -> None:
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass\ninput()"],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_sync(lambda: cpu_seconds(busy.pid) >= 0.3, timeout_s=30)
        clock = cpu_seconds(busy.pid)
        with open(f"/proc/{busy.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        assert abs(clock - ticks) < 0.1  # the same CPU time, at finer resolution
    finally:
        busy.kill()
        busy.wait()


def test_cpu_seconds_falls_back_to_proc_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cpu_clock(clock_id: int) -> float:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(time, "clock_gettime", no_cpu_clock)
    own = os.times()
    assert abs(cpu_seconds(os.getpid()) - (own.user + own.system)) < 0.1


def test_tiny_suite_run_writes_results_files(tmp_path: Path) -> None:
    """Every figure of every server kind, tiny sizes, as `make bench` runs it."""
    argv = [sys.executable, "-m", "wsfleet.bench", "--tiny", "--out", str(tmp_path), "--name", "t"]
    proc = subprocess.run(
        [*argv, "--peers", ""],  # the Node peers: tests/loadtest/test_bench_peers.py
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
    keys += ("fanout_cpu_us", "idle_switch_cpu_us")  # the server process's CPU per operation
    for key in keys:
        for kind in ("baseline", "gateway-off", "gateway"):
            value = doc["figures"][key]["values"][kind]["median"]
            assert (value or 0) > 0, (key, kind, value)
    for kind in ("gateway-off", "gateway"):  # both at once, switches interleaved
        run = doc["raw_runs"][0][kind]
        assert run["ab_switch_p50_ms"] > 0, kind
        assert run["ab_switch_p99_ms"] >= run["ab_switch_p50_ms"], kind
        assert run["ab_switches"] >= 4 * 5, kind  # every switcher in every window
        assert run["ab_open"] == 100, kind  # the idle connections held by the child too
    assert "ab_switch_p50_ms" not in doc["raw_runs"][0]["baseline"]
    assert doc["figures"]["ab_switch_p99_ms"]["on_off"]["bounded"]
    crosspod = doc["figures"]["crosspod_delivery_p50_ms"]["values"]["gateway"]["median"]
    assert (crosspod or 0) > 0
    assert doc["figures"]["switch_p99_ms"]["ratios"]["gateway/baseline"] is not None
    markdown = (tmp_path / "t.md").read_text()
    assert "| figure |" in markdown
    assert "cross-pod delivery p50" in markdown
    assert "first-visit switch p99" in markdown
    assert "## Features on vs off" in markdown
    assert doc["figures"]["deliveries_per_s"]["on_off"]["runs"]  # paired within the run
    # every client's first cycle: 14 switches to channels new to the server
    for kind in ("baseline", "gateway-off", "gateway"):
        assert doc["raw_runs"][0][kind]["idle_first_switches"] == 14 * 5, kind
    # wedding messages, plain and deflated: every delivery made, fewer bytes compressed
    squeezed = doc["compression"]
    for mode in ("plain", "deflate"):
        assert doc["raw_runs"][0]["gateway"][f"compression_{mode}_delivered_share"] == 1.0
        assert (squeezed[mode]["cpu_us"]["median"] or 0) > 0, mode
    assert squeezed["plain"]["saved"]["median"] == 0.0
    assert squeezed["deflate"]["saved_1k"]["median"] >= 0.6
    assert "## Compression (permessage-deflate)" in markdown
    assert doc["peers_status"] == "not asked for"
    # every server at once, fan-out bursts in alternating rounds (versus.py)
    # with the Python subscribers, and with the native (Go) receiver where Go is
    without_go = native.unavailable()
    prefixes = ("vs_",) if without_go else ("vs_", "nv_")
    for kind in ("baseline", "gateway-off", "gateway"):
        run = doc["raw_runs"][0][kind]
        for prefix in prefixes:
            assert run[f"{prefix}deliveries_per_s"] > 0, (kind, prefix)
            assert run[f"{prefix}rounds"] == 2, (kind, prefix)
            assert run[f"{prefix}errors"] == "", (kind, prefix)
    for prefix in prefixes:
        assert doc["raw_runs"][0]["gateway"][f"{prefix}gateway_ratio"] == 1.0
    judged = doc["peers"]["baseline"]["gateway_fanout_ratio"]["how"]
    if without_go:
        assert judged == "interleaved, Python client"
        assert without_go in doc["raw_runs"][0]["gateway"]["nv_errors"]
    else:
        assert judged == "interleaved, native receiver"
        assert (
            doc["raw_runs"][0]["gateway"]["nv_subscribers"] == doc["config"]["fanout_subscribers"]
        )
    assert "delivery_load_lag_max_ms" in doc["raw_runs"][0]["gateway"]


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


def test_emit_figures_prints_and_writes_the_same_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from wsfleet.bench.results import emit_figures

    out = tmp_path / "figures.json"
    emit_figures({"on": {"p50_ms": 1.5}}, str(out))
    printed = capsys.readouterr().out
    assert json.loads(printed) == json.loads(out.read_text()) == {"on": {"p50_ms": 1.5}}
    emit_figures([1, 2], None)  # no file asked for: printed only
    assert json.loads(capsys.readouterr().out) == [1, 2]
