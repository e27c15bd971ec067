"""Results of a suite run: medians, ratios against the baselines, JSON and markdown."""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from wsfleet.bench.peers import NODE_WS, PEER_KINDS, SOCKETIO, SOCKETIO_REDIS
from wsfleet.bench.servers import BASELINE, GATEWAY, GATEWAY_OFF
from wsfleet.bench.suite import SuiteConfig, median_of

SCHEMA_ID = "wsfleet.bench/v1"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    better: str  # "lower" or "higher"
    target: tuple[str, float] | None = None
    baseline_key: str | None = None
    """Key of the baselines' comparable figure when it differs (cross-pod vs same node)."""
    bounded: bool = False
    """One of the gateway issue's figures, which features on must keep within `ON_OFF_BOUND`
    of features off (issue 4)."""


ON_OFF_BOUND = 0.15
"""Features on may be this much worse than features off on the `bounded` figures."""
ON_OFF_SHOWN = (
    "deliveries_per_s",
    "ab_switch_p50_ms",
    "ab_switch_p99_ms",
    "fanout_cpu_us",
    "idle_switch_p50_ms",
    "idle_switch_p99_ms",
    "idle_switch_cpu_us",
    "switch_p50_ms",
    "switch_p99_ms",
    "idle_first_switch_p50_ms",
    "idle_first_switch_p99_ms",
    "first_switch_p50_ms",
    "first_switch_p99_ms",
)
"""Figures in the features on/off section of the markdown (the bounded ones first)."""


def figure_table(config: SuiteConfig) -> list[Figure]:
    n = f"{config.idle_connections:,}"
    return [
        Figure("idle_kb_per_conn", f"idle memory per connection at {n}", "KB", "lower", ("<=", 16)),
        Figure("connect_per_s", f"connect rate (to {n})", "conn/s", "higher"),
        Figure(
            "deliveries_per_s",
            f"fan-out to {config.fanout_subscribers:,} subscribers",
            "deliveries/s",
            "higher",
            (">=", 150_000),
            bounded=True,
        ),
        Figure(
            "fanout_cpu_us",
            "server CPU per fan-out delivery (server process only)",
            "µs",
            "lower",
        ),
        Figure(
            "idle_switch_p50_ms",
            f"switch p50 with {n} conns open, no traffic",
            "ms",
            "lower",
        ),
        Figure(
            "idle_switch_p99_ms",
            f"switch p99 with {n} conns open, no traffic",
            "ms",
            "lower",
            ("<=", 5),
        ),
        Figure(
            "ab_switch_p50_ms",
            f"switch p50 with {n} conns open, on and off interleaved (A/B)",
            "ms",
            "lower",
            bounded=True,
        ),
        Figure(  # no target: both gateways share the core here (the target is the above's)
            "ab_switch_p99_ms",
            f"switch p99 with {n} conns open, on and off interleaved (A/B)",
            "ms",
            "lower",
            bounded=True,
        ),
        Figure(
            "idle_switch_cpu_us",
            "server CPU per switch, no traffic (server process only)",
            "µs",
            "lower",
        ),
        Figure(
            "idle_first_switch_p50_ms",
            "first-visit switch p50 (channel new to the server), no traffic",
            "ms",
            "lower",
        ),
        Figure(
            "idle_first_switch_p99_ms",
            "first-visit switch p99 (channel new to the server), no traffic",
            "ms",
            "lower",
        ),
        Figure(
            "switch_p50_ms",
            f"switch p50 at {n} conns, {config.background_dps:,.0f} deliveries/s",
            "ms",
            "lower",
        ),
        Figure(
            "switch_p99_ms",
            f"switch p99 at {n} conns, {config.background_dps:,.0f} deliveries/s",
            "ms",
            "lower",
            ("<=", 5),
        ),
        Figure(
            "first_switch_p50_ms",
            f"first-visit switch p50, {config.background_dps:,.0f} deliveries/s",
            "ms",
            "lower",
        ),
        Figure(
            "first_switch_p99_ms",
            f"first-visit switch p99, {config.background_dps:,.0f} deliveries/s",
            "ms",
            "lower",
        ),
        Figure("background_dps", "background deliveries/s achieved", "deliveries/s", "higher"),
        Figure(
            "switch_load_lag_max_ms",
            "load process: worst loop stall during switch under traffic",
            "ms",
            "lower",
        ),
        Figure(
            "switch_load_gc_max_ms",
            "load process: longest GC pause during switch under traffic",
            "ms",
            "lower",
        ),
        Figure("delivery_p50_ms", "publish-to-delivery p50, same node", "ms", "lower"),
        Figure("delivery_p99_ms", "publish-to-delivery p99, same node", "ms", "lower"),
        Figure(
            "delivery_load_lag_max_ms",
            "load process: worst loop stall during same-node delivery",
            "ms",
            "lower",
        ),
        Figure(
            "delivery_load_gc_max_ms",
            "load process: longest GC pause during same-node delivery",
            "ms",
            "lower",
        ),
        Figure(
            "crosspod_delivery_p50_ms",
            "cross-pod delivery p50 via Redis (baselines: same node)",
            "ms",
            "lower",
            baseline_key="delivery_p50_ms",
        ),
        Figure(
            "crosspod_delivery_p99_ms",
            "cross-pod delivery p99 via Redis (baselines: same node)",
            "ms",
            "lower",
            baseline_key="delivery_p99_ms",
        ),
        Figure("cache_hit_ratio", "photographer cache hit ratio (L1 or L2)", "ratio", "higher"),
        Figure("cache_l1_hit_ratio", "photographer cache hit ratio, L1 only", "ratio", "higher"),
    ]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def provenance() -> dict[str, Any]:
    """What was measured: commit (and whether the tree had changes), version, machine."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    try:
        version = metadata.version("wsfleet")
    except metadata.PackageNotFoundError:
        version = None
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "version": version,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not math.isnan(value):
        return float(value)
    return None


def paired_ratios(runs: list[dict[str, dict[str, Any]]], key: str) -> list[float]:
    """Features on ÷ off of `key` in each run where both were measured (same run, so
    the same state of the machine)."""
    out: list[float] = []
    for run in runs:
        on, off = _num(run.get(GATEWAY, {}).get(key)), _num(run.get(GATEWAY_OFF, {}).get(key))
        if on is not None and off:
            out.append(on / off)
    return out


def on_off_verdict(ratio: float | None, better: str) -> bool | None:
    """Whether features on stay within `ON_OFF_BOUND` of off, given on ÷ off."""
    if ratio is None:
        return None
    if better == "lower":
        return ratio <= 1 + ON_OFF_BOUND
    return ratio >= 1 - ON_OFF_BOUND


def summarise(raw: dict[str, Any], config: SuiteConfig, quick: bool) -> dict[str, Any]:
    """The results document: per figure, per server kind, the runs and their median."""
    runs: list[dict[str, dict[str, Any]]] = raw["runs"]
    doc_figures: dict[str, Any] = {}
    for fig in figure_table(config):
        values: dict[str, Any] = {}
        for kind in (BASELINE, GATEWAY_OFF, GATEWAY):
            key = fig.key if kind == GATEWAY else (fig.baseline_key or fig.key)
            series = [_num(run.get(kind, {}).get(key)) for run in runs]
            clean = [v for v in series if v is not None]
            values[kind] = {
                "runs": series,
                "median": median_of(clean) if clean else None,
            }
        if values[GATEWAY]["median"] is not None:
            values[GATEWAY]["median"] = round(values[GATEWAY]["median"], 4)
        ratios: dict[str, float | None] = {}
        gw = values[GATEWAY]["median"]
        for base in (BASELINE, GATEWAY_OFF):
            ref = values[base]["median"]
            ratios[f"gateway/{base}"] = round(gw / ref, 3) if gw is not None and ref else None
        off, ref = values[GATEWAY_OFF]["median"], values[BASELINE]["median"]
        ratios["gateway-off/baseline"] = round(off / ref, 3) if off is not None and ref else None
        verdict = None
        if fig.target is not None and gw is not None:
            op, bound = fig.target
            verdict = gw <= bound if op == "<=" else gw >= bound
        paired = paired_ratios(runs, fig.key)
        paired_median = round(median_of(paired), 3) if paired else None
        doc_figures[fig.key] = {
            "on_off": {
                "runs": [round(r, 3) for r in paired],
                "median": paired_median,
                "bounded": fig.bounded,
                "within_bound": on_off_verdict(paired_median, fig.better),
            },
            "label": fig.label,
            "unit": fig.unit,
            "better": fig.better,
            "target": f"{fig.target[0]} {fig.target[1]:g}" if fig.target else None,
            "meets_target": verdict,
            "values": values,
            "ratios": ratios,
        }
    cache_status = [run.get(GATEWAY, {}).get("cache_status") for run in runs]
    return {
        "peers": peer_summary(runs),
        "peers_status": raw.get("peers", "not measured"),
        "compression": compression_summary(runs),
        "schema": SCHEMA_ID,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "provenance": provenance(),
        "pinning": raw.get("pinning"),
        "elapsed_s": raw.get("elapsed_s"),
        "config": asdict(config),
        "figures": doc_figures,
        "cache_status": next((s for s in cache_status if s), "not measured"),
        "problems": problems_seen(runs),
        "raw_runs": [
            {kind: {k: _clean(v) for k, v in values.items()} for kind, values in run.items()}
            for run in runs
        ],
    }


PEER_TARGETS: dict[str, float | None] = {
    SOCKETIO_REDIS: 1.5,
    NODE_WS: 1.3,
    SOCKETIO: None,
    BASELINE: 0.9,
    GATEWAY_OFF: None,
}
"""Issue 21: the features-on gateway's fan-out ÷ each server's, measured in the same run."""
PEER_LABELS = {
    SOCKETIO_REDIS: "socket.io 4.8 + @socket.io/redis-adapter (Node 20)",
    SOCKETIO: "socket.io 4.8 (Node 20)",
    NODE_WS: "Node `ws` 8",
    BASELINE: "plain picows server",
    GATEWAY_OFF: "gateway, features off",
    GATEWAY: "gateway, every feature on",
}
PEER_FIGURES = (
    "idle_kb_per_conn",
    "deliveries_per_s",
    "fanout_cpu_us",
    "vs_deliveries_per_s",
    "vs_fanout_cpu_us",
    "vs_gateway_ratio",
    "nv_deliveries_per_s",
    "nv_fanout_cpu_us",
    "nv_gateway_ratio",
)
INTERLEAVED = (("nv_", "interleaved, native receiver"), ("vs_", "interleaved, Python client"))
"""The interleaved fan-out runs, in the order the targets are judged on the first measured."""


def _series(runs: list[dict[str, dict[str, Any]]], kind: str, key: str) -> dict[str, Any]:
    series = [_num(run.get(kind, {}).get(key)) for run in runs]
    clean = [v for v in series if v is not None]
    return {"runs": series, "median": round(median_of(clean), 4) if clean else None}


def _paired(
    runs: list[dict[str, dict[str, Any]]], key: str, top: str, bottom: str
) -> dict[str, Any]:
    """`top` ÷ `bottom` of `key` per run where both were measured, and their median."""
    ratios = []
    for run in runs:
        a, b = _num(run.get(top, {}).get(key)), _num(run.get(bottom, {}).get(key))
        if a is not None and b:
            ratios.append(round(a / b, 3))
    return {"runs": ratios, "median": round(median_of(ratios), 3) if ratios else None}


def peer_summary(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Every server's idle memory and fan-out, and the features-on gateway's fan-out ÷
    theirs per run (the ratio the targets are read from: same run, same machine state)."""
    out: dict[str, Any] = {}
    for kind in (GATEWAY, GATEWAY_OFF, BASELINE, *PEER_KINDS):
        entry: dict[str, Any] = {key: _series(runs, kind, key) for key in PEER_FIGURES}
        if all(
            entry[f"{prefix}deliveries_per_s"]["median"] is None for prefix in ("", "vs_", "nv_")
        ):
            continue
        if kind != GATEWAY:
            # judged on the interleaved rounds (versus.py) when measured, with the native
            # receiver first; else on the sequential figure
            ratio: dict[str, Any] = {}
            cpu_key = "fanout_cpu_us"
            for prefix, how in INTERLEAVED:
                clean = [round(r, 3) for r in entry[f"{prefix}gateway_ratio"]["runs"] if r]
                if clean:
                    ratio = {"runs": clean, "median": round(median_of(clean), 3), "how": how}
                    cpu_key = f"{prefix}fanout_cpu_us"
                    break
            if not ratio:
                ratio = {**_paired(runs, "deliveries_per_s", GATEWAY, kind), "how": "sequential"}
            target = PEER_TARGETS.get(kind)
            ratio["target"] = target
            ratio["meets_target"] = (
                None if target is None or ratio["median"] is None else ratio["median"] >= target
            )
            entry["gateway_fanout_ratio"] = ratio
            entry["sequential_ratio"] = _paired(runs, "deliveries_per_s", GATEWAY, kind)
            entry["python_ratio"] = entry["vs_gateway_ratio"]
            entry["cpu_ratio"] = _paired(runs, cpu_key, kind, GATEWAY)
        out[kind] = entry
    return out


COMPRESSION_FIGURES = (
    "deliveries_per_s",
    "cpu_us",
    "wire_bytes_per_delivery",
    "plain_bytes_per_delivery",
    "saved",
    "saved_1k",
)


def compression_summary(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The features-on gateway fanning wedding messages out plain and deflated."""
    out: dict[str, Any] = {}
    for mode in ("plain", "deflate"):
        out[mode] = {
            k: _series(runs, GATEWAY, f"compression_{mode}_{k}") for k in COMPRESSION_FIGURES
        }
    cpu = []
    for run in runs:
        values = run.get(GATEWAY, {})
        on = _num(values.get("compression_deflate_cpu_us"))
        off = _num(values.get("compression_plain_cpu_us"))
        if on is not None and off:
            cpu.append(round(on / off, 3))
    out["cpu_deflate_over_plain"] = {
        "runs": cpu,
        "median": round(median_of(cpu), 3) if cpu else None,
    }
    saved = out["deflate"]["saved_1k"]["median"]
    out["meets_target"] = None if saved is None else saved >= 0.6
    return out


def _clean(value: Any) -> Any:
    """NaN (a figure that could not be measured) as JSON null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def problems_seen(runs: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Errors, losses and short deliveries during the runs: they qualify the figures."""
    seen: list[str] = []
    for index, run in enumerate(runs, start=1):
        for kind, values in run.items():
            for key, value in sorted(values.items()):
                if key.endswith("_errors") and value:
                    seen.append(f"run {index}, {kind}: {key.removesuffix('_errors')}: {value}")
                elif key.endswith("lost") and isinstance(value, int | float) and value > 0:
                    seen.append(f"run {index}, {kind}: {key} = {value:.0f} deliveries")
            share = values.get("delivered_share")
            if isinstance(share, int | float) and share < 1.0:
                seen.append(f"run {index}, {kind}: fan-out delivered only {share:.1%} in time")
    return seen


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def to_markdown(doc: dict[str, Any]) -> str:
    prov = doc["provenance"]
    lines = [
        f"# wsfleet benchmark results ({doc['date']}{', quick' if doc['quick'] else ''})",
        "",
        f"Commit `{prov['commit']}`{' (uncommitted changes)' if prov['dirty'] else ''}, "
        f"wsfleet {prov['version']}, Python {prov['python']}, {prov['machine']}. "
        f"Server CPU {doc['pinning']['server_cpu']}, load CPU {doc['pinning']['load_cpu']}; "
        f"{doc['config']['runs']} run(s), medians; {doc['elapsed_s']} s.",
        "",
        "| figure | unit | baseline (plain picows) | gateway, features off | gateway | "
        "gateway / baseline | gateway / off | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for fig in doc["figures"].values():
        v, r = fig["values"], fig["ratios"]
        target = fig["target"] or ""
        if fig["meets_target"] is not None:
            target += " ✅" if fig["meets_target"] else " ❌"
        lines.append(
            f"| {fig['label']} | {fig['unit']} | {_fmt(v[BASELINE]['median'])} | "
            f"{_fmt(v[GATEWAY_OFF]['median'])} | {_fmt(v[GATEWAY]['median'])} | "
            f"{_fmt(r['gateway/baseline'])} | {_fmt(r['gateway/gateway-off'])} | {target} |"
        )
    lines += on_off_section(doc)
    lines += peers_section(doc)
    lines += compression_section(doc)
    problems = doc.get("problems") or []
    if problems:
        lines += ["", "Problems seen during the runs (they qualify the figures above):", ""]
        lines += [f"- {p}" for p in problems]
    lines += [
        "",
        f"Cache: {doc['cache_status']}.",
        "Ratios are gateway value / baseline value: above 1 is better for rates, worse for "
        "memory and latency. The gateway column has its features on: Redis broker, JWT auth "
        "(a token per connection), protection (rate limits, quotas, cache, breaker, audit), "
        "API key. Features off: embedded in-memory broker, WSFLEET_AUTH=disabled, "
        "WSFLEET_PROTECTION=false.",
        "Switch figures: 20 clients each cycle through 15 channels of their own. The "
        "first-visit figures time each client's first cycle (all clients at once, every "
        "channel new to the server: with Redis, one SUBSCRIBE and one history read); the "
        "others time the steady state that follows (every channel already held by the "
        "server).",
        "Interleaved (A/B) switch figures: both gateways run at once, each with its "
        "connections open (held by a child process per gateway), and the 20 switchers of "
        "each alternate in short windows (A B, B A, ...), so a stall of the machine hits "
        "both alike; the on/off bound is judged on these. Their absolute values are higher "
        "than the sequential ones (the other gateway and its connections share the "
        "machine), so the gateway issue's targets are read from the sequential figures, "
        "which time each kind in its own slot of the run.",
        "Server CPU figures: user + system CPU of the server process over the figure's "
        "span, divided by its operations (for the gateway with features on, Redis's own "
        "CPU is not included: it is a separate process).",
        "",
    ]
    return "\n".join(lines)


def on_off_section(doc: dict[str, Any]) -> list[str]:
    """Markdown: features on ÷ off per run, and whether the bounded figures hold."""
    bound = f"{ON_OFF_BOUND:.0%}"
    lines = [
        "",
        f"## Features on vs off (issue 4: the gateway issue's figures within {bound})",
        "",
        "Per run, the features-on value ÷ the features-off value of that same run; the "
        "verdict uses the median of those ratios (above 1 is better for rates, worse "
        "for latency and CPU).",
        "",
        f"| figure | on ÷ off, median of runs | per run | within {bound} |",
        "| --- | ---: | --- | --- |",
    ]
    shown = sorted(
        (key for key in ON_OFF_SHOWN if key in doc["figures"]),
        key=lambda key: not doc["figures"][key]["on_off"]["bounded"],
    )
    for key in shown:
        fig = doc["figures"][key]
        pair = fig["on_off"]
        if not pair["runs"]:
            continue
        verdict = {True: "yes", False: "no", None: "n/a"}[pair["within_bound"]]
        if pair["bounded"]:
            verdict = f"**{verdict}** ✅" if pair["within_bound"] else f"**{verdict}** ❌"
        else:
            verdict += " (not bounded)"
        per_run = ", ".join(_fmt(r) for r in pair["runs"])
        lines.append(f"| {fig['label']} | {_fmt(pair['median'])} | {per_run} | {verdict} |")
    return lines


def peers_section(doc: dict[str, Any]) -> list[str]:
    """Markdown: every server by the same client in the same run, and the gateway's ratios."""
    found = doc.get("peers") or {}
    lines = [
        "",
        "## Against other servers (issue 21: the same client, the same run)",
        "",
        f"Peers: {doc.get('peers_status', 'not measured')}. Fan-out to "
        f"{doc['config']['fanout_subscribers']:,} subscribers, idle memory at "
        f"{doc['config']['idle_connections']:,} connections, server on one core and the "
        "client on the other. *Interleaved*: every server up at once, bursts of "
        f"{doc['config']['versus_messages']} publishes to each in turn, the order reversed "
        f"every round ({doc['config']['versus_rounds']} rounds per run, `versus.py`); "
        "*gateway ÷ server* is the features-on gateway's rate divided by that server's in "
        "the same round, the median of the rounds per run and then of the runs: the targets "
        "are judged on it, measured with the native (Go) receiver as the subscribers when "
        "Go is there (`native.py`: the Python client tops out near 80k deliveries/s, about "
        "what the peers serve, so it hides any server faster than that), else with the load "
        "tool's Python subscribers. *Python client*: the same rounds with the Python "
        "subscribers. *Sequential*: each server's fan-out figure in its own slot of the "
        "run (minutes apart, Python client), paired per run. *CPU ratio*: that server's CPU "
        "per delivery ÷ the gateway's, in the judged rounds.",
        "",
        "| server | KB / idle conn | deliveries/s, judged rounds | CPU µs / delivery, judged "
        "rounds | gateway ÷ server, judged (per run) | target | Python client, interleaved: "
        "deliveries/s; gateway ÷ server | sequential: deliveries/s; gateway ÷ server (per "
        "run) | CPU ratio |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | --- | ---: |",
    ]
    if not found:
        return [*lines, "| (no server measured) | | | | | | | | |"]
    for kind, entry in found.items():
        ratio = entry.get("gateway_fanout_ratio")
        shown, target = "", ""
        prefix = "nv_" if entry["nv_deliveries_per_s"]["median"] is not None else "vs_"
        if ratio is not None and ratio["median"] is not None:
            per_run = ", ".join(_fmt(r) for r in ratio["runs"])
            shown = f"**{_fmt(ratio['median'])}** ({per_run}) {ratio['how']}"
            if ratio["target"] is not None:
                target = f">= {ratio['target']:g} " + ("✅" if ratio["meets_target"] else "❌")
        python = _fmt(entry["vs_deliveries_per_s"]["median"])
        python_ratio = entry.get("python_ratio")
        if python_ratio is not None and python_ratio["median"] is not None:
            python += f"; {_fmt(python_ratio['median'])}"
        sequential = f"{_fmt(entry['deliveries_per_s']['median'])}"
        seq_ratio = entry.get("sequential_ratio")
        if seq_ratio is not None and seq_ratio["median"] is not None:
            per_run = ", ".join(_fmt(r) for r in seq_ratio["runs"])
            sequential += f"; {_fmt(seq_ratio['median'])} ({per_run})"
        cpu = entry.get("cpu_ratio", {}).get("median")
        lines.append(
            f"| {PEER_LABELS.get(kind, kind)} | {_fmt(entry['idle_kb_per_conn']['median'])} | "
            f"{_fmt(entry[prefix + 'deliveries_per_s']['median'])} | "
            f"{_fmt(entry[prefix + 'fanout_cpu_us']['median'])} | {shown} | {target} | "
            f"{python} | {sequential} | {_fmt(cpu)} |"
        )
    return lines


def compression_section(doc: dict[str, Any]) -> list[str]:
    """Markdown: wedding messages fanned out plain and with permessage-deflate."""
    found = doc.get("compression")
    if not found or found["plain"]["cpu_us"]["median"] is None:
        return []
    config = doc["config"]
    plain, deflate = found["plain"], found["deflate"]
    saved_1k = deflate["saved_1k"]["median"]
    verdict = "" if saved_1k is None else (" ✅" if saved_1k >= 0.6 else " ❌")
    rows = [
        ("fan-out deliveries/s", "deliveries_per_s", "{}"),
        ("server CPU per delivery (µs)", "cpu_us", "{}"),
        ("bytes on the wire per delivery", "wire_bytes_per_delivery", "{}"),
        ("the same messages plain, per delivery", "plain_bytes_per_delivery", "{}"),
    ]
    lines = [
        "",
        "## Compression (permessage-deflate), features-on gateway",
        "",
        f"{config['compression_messages']} realistic wedding messages (timeline updates, "
        "vendor notes, seating, RSVPs: 0.2-8 KB of JSON, `wsfleet.bench.wedding`) fanned out "
        f"to {config['compression_subscribers']} subscribers that offer permessage-deflate "
        "(and inflate) or not; bytes counted by the subscribers per delivered frame "
        "(payload, before inflating). The server compresses each message once for all "
        "subscribers.",
        "",
        "| figure | plain | deflate |",
        "| --- | ---: | ---: |",
    ]
    for label, key, _ in rows:
        lines.append(f"| {label} | {_fmt(plain[key]['median'])} | {_fmt(deflate[key]['median'])} |")
    saved = deflate["saved"]["median"]
    lines.append(f"| wire bytes saved, all messages | | {_pct(saved)} |")
    lines.append(
        f"| wire bytes saved, messages of 1 KB and up (target >= 60 %) | | "
        f"{_pct(saved_1k)}{verdict} |"
    )
    ratio = found["cpu_deflate_over_plain"]
    lines.append(
        f"| server CPU per delivery, deflate ÷ plain (per run) | | {_fmt(ratio['median'])} "
        f"({', '.join(_fmt(r) for r in ratio['runs'])}) |"
    )
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def write_results(doc: dict[str, Any], out_dir: Path, name: str | None = None) -> list[Path]:
    """Write ``<date>.json`` and ``<date>.md`` (``<date>-quick`` for quick runs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name or dt.date.today().isoformat() + ("-quick" if doc["quick"] else "")
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n")
    md_path.write_text(to_markdown(doc))
    return [json_path, md_path]


def emit_figures(figures: Any, json_path: str | None) -> None:
    """Print a side bench's figures as JSON, and write them to `json_path` when given."""
    text = json.dumps(figures, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
