"""The report of a load run: JSON for comparing runs, a text summary, a PNG chart."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.stats import RunStats

SCHEMA_ID = "wsfleet.loadtest.report/v1"

_MS = {"type": ["number", "null"]}
_OP_SCHEMA = {
    "type": "object",
    "required": ["count", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"],
    "properties": {
        "count": {"type": "integer", "minimum": 0},
        "mean_ms": _MS,
        "p50_ms": _MS,
        "p95_ms": _MS,
        "p99_ms": _MS,
        "max_ms": _MS,
    },
}
_COUNT = {"type": "integer", "minimum": 0}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "wsfleet load-test report",
    "type": "object",
    "required": [
        "schema",
        "scenario",
        "url",
        "started_at",
        "duration_s",
        "processes",
        "options",
        "connections",
        "messages",
        "operations",
        "throughput",
        "errors",
        "timeline",
    ],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "scenario": {"enum": ["photographer", "venue-broadcast", "wedding-season"]},
        "url": {"type": "string"},
        "started_at": {"type": "string"},
        "duration_s": {"type": "number", "minimum": 0},
        "processes": {"type": "integer", "minimum": 1},
        "options": {"type": "object"},
        "connections": {
            "type": "object",
            "required": ["attempted", "opened", "failed", "closed_by_server", "peak_open"],
            "properties": {
                k: _COUNT
                for k in ("attempted", "opened", "failed", "closed_by_server", "peak_open")
            },
        },
        "messages": {
            "type": "object",
            "required": ["sent", "replies", "published", "delivered", "expected", "lost"],
            "properties": {
                "sent": _COUNT,
                "replies": _COUNT,
                "published": _COUNT,
                "delivered": _COUNT,
                "expected": {"type": ["integer", "null"], "minimum": 0},
                "lost": {"type": ["integer", "null"], "minimum": 0},
                "request_timeouts": _COUNT,
            },
        },
        "operations": {"type": "object", "additionalProperties": _OP_SCHEMA},
        "throughput": {
            "type": "object",
            "required": ["requests_per_s", "deliveries_per_s"],
            "properties": {
                "requests_per_s": {"type": "number", "minimum": 0},
                "deliveries_per_s": {"type": "number", "minimum": 0},
            },
        },
        "errors": {"type": "object", "additionalProperties": _COUNT},
        "timeline": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["t", "open", "target"],
                "additionalProperties": {"type": "number"},
            },
        },
    },
}


@dataclass
class Report:
    """One run's figures; `to_dict` is the JSON document (see `REPORT_SCHEMA`)."""

    scenario: str
    url: str
    started_at: str
    duration_s: float
    processes: int
    options: dict[str, Any]
    stats: RunStats
    extra: dict[str, Any] = field(default_factory=dict)

    def operation(self, op: str) -> dict[str, float | int | None]:
        return self.stats.latency(op).summary()

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        span = self.duration_s if self.duration_s > 0 else 1.0
        doc: dict[str, Any] = {
            "schema": SCHEMA_ID,
            "scenario": self.scenario,
            "url": self.url,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "processes": self.processes,
            "options": self.options,
            "connections": {
                "attempted": s.attempted,
                "opened": s.opened,
                "failed": s.failed,
                "closed_by_server": s.closed_by_server,
                "peak_open": s.peak_open,
            },
            "messages": {
                "sent": s.sent,
                "replies": s.replies,
                "published": s.published,
                "delivered": s.delivered,
                "expected": s.expected_deliveries if s.loss_measured else None,
                "lost": s.lost,
                "request_timeouts": s.request_timeouts,
            },
            "operations": {op: rec.summary() for op, rec in sorted(s.latencies.items())},
            "throughput": {
                "requests_per_s": round(s.sent / span, 2),
                "deliveries_per_s": round(s.delivered / span, 2),
            },
            "errors": dict(sorted(s.errors.items())),
            "timeline": s.timeline,
        }
        doc.update(self.extra)
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def summary_text(self) -> str:
        doc = self.to_dict()
        c, m, t = doc["connections"], doc["messages"], doc["throughput"]
        lines = [
            f"scenario {self.scenario} against {self.url}: {self.duration_s:.1f} s, "
            f"{self.processes} process(es)",
            f"connections attempted {c['attempted']} opened {c['opened']} failed {c['failed']} "
            f"closed by server {c['closed_by_server']} peak open {c['peak_open']}",
            f"messages sent {m['sent']} published {m['published']} delivered {m['delivered']} "
            f"lost {'not measured' if m['lost'] is None else m['lost']} "
            f"timeouts {m['request_timeouts']}",
            f"throughput {t['requests_per_s']:.0f} requests/s, "
            f"{t['deliveries_per_s']:.0f} deliveries/s",
        ]
        for op, summary in doc["operations"].items():
            if summary["p50_ms"] is None:
                continue
            lines.append(
                f"  {op:<10} n={summary['count']:<8} p50 {summary['p50_ms']:.2f} ms  "
                f"p95 {summary['p95_ms']:.2f} ms  p99 {summary['p99_ms']:.2f} ms  "
                f"max {summary['max_ms']:.2f} ms"
            )
        if doc["errors"]:
            lines.append("errors " + ", ".join(f"{k}={v}" for k, v in doc["errors"].items()))
        return "\n".join(lines)


def build_report(
    scenario: str,
    url: str,
    options: ScenarioOptions,
    stats: RunStats,
    started_at: dt.datetime,
    duration_s: float,
    processes: int = 1,
) -> Report:
    public = options.public()
    public["processes"] = processes
    return Report(
        scenario=scenario,
        url=url,
        started_at=started_at.isoformat(timespec="seconds"),
        duration_s=duration_s,
        processes=processes,
        options=public,
        stats=stats,
    )


def write_chart(report: Report, path: Path) -> Path:
    """A PNG of open connections (and target) and deliveries over time (needs matplotlib)."""
    try:
        import matplotlib  # lazily: only the chart needs it (the `plot` extra)
    except ModuleNotFoundError as exc:
        raise RuntimeError("charts need matplotlib: pip install 'wsfleet[plot]'") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report.stats.timeline
    times = [p["t"] for p in timeline]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(times, [p["open"] for p in timeline], label="open connections")
    top.plot(times, [p["target"] for p in timeline], label="target", linestyle="--")
    top.set_ylabel("connections")
    top.legend(loc="upper left")
    rates = [0.0]
    for prev, cur in itertools.pairwise(timeline):
        span = cur["t"] - prev["t"]
        rates.append((cur.get("delivered", 0.0) - prev.get("delivered", 0.0)) / span if span else 0)
    bottom.plot(times, rates[: len(times)], color="tab:green", label="deliveries/s")
    bottom.set_ylabel("deliveries/s")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left")
    fig.suptitle(f"wsfleet loadtest {report.scenario} ({report.started_at})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
