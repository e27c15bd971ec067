"""What next-channel prefetch buys and costs (issue 22): prefetch on vs off.

    python -m wsfleet.bench.prefetch [--users 40] [--switches 60] [--repeats 2] [--json F]

One Redis and one gateway process (features on, JWT auth) pinned to the first CPU; the
load tool's photographer scenario with habits (``habit``: the share of switches that
follow the user's own round of 12 channels) on the other. Runs alternate
``WSFLEET_PREFETCH=true`` and ``false``, `repeats` times each, each on a fresh Redis
(the model starts empty: a run's first laps are first visits and learning).

Time is compressed like a wedding day in the load tool: a channel left lingers
``LINGER_S`` (production: 5 s) and users think ``THINK_S`` on average between actions
(production: tens of seconds), so a switch back to a channel left a while ago finds it
unsubscribed, as it would in production, unless prefetch holds it.

Reported per setting (medians over the repeats):

- the share of switches that landed on a channel prefetched for that connection
  (``wsfleet_prefetch_joins_total``);
- switch p50/p99 in ms as the client sees it, for every switch and for first visits
  (a channel the connection had not visited);
- Redis commands per switch (``INFO commandstats`` over the run, publishes and presence
  included: the difference between the settings is what prefetch adds).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from wsfleet.bench.redis_counts import SentCommands, redis_commands
from wsfleet.bench.results import emit_figures
from wsfleet.bench.servers import gateway_server, usable_cpus
from wsfleet.loadtest import run_scenario
from wsfleet.services import RedisServer

SECRET = "bench-prefetch-secret-0123456789abcdef-0123"
LINGER_S = 0.25
THINK_S = 0.4
HOLD_S = 10.0
CHANNELS_PER_USER = 12
HABIT = 0.8
ENV = {
    "WSFLEET_JWT_SECRET": SECRET,
    "WSFLEET_USER_CONNECTS_PER_MIN": "100000",
    "WSFLEET_LINGER_S": str(LINGER_S),
    "WSFLEET_PREFETCH_HOLD_S": str(HOLD_S),
}


async def prefetch_counts(admin_url: str) -> dict[str, dict[str, float]]:
    """``wsfleet_prefetch_joins_total`` by outcome and ``wsfleet_prefetch_total`` by result."""
    async with aiohttp.ClientSession() as session, session.get(f"{admin_url}/metrics") as reply:
        text = await reply.text()
    out: dict[str, dict[str, float]] = {"joins": {}, "results": {}}
    wanted = {
        "wsfleet_prefetch_joins": ("joins", "outcome"),
        "wsfleet_prefetch": ("results", "result"),
    }
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            into, label = wanted[family.name]
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[into][sample.labels[label]] = sample.value
    return out


async def run_once(prefetch: bool, users: int, switches: int) -> dict[str, Any]:
    cpus = usable_cpus()
    with RedisServer() as redis_server:
        env = {**ENV, "WSFLEET_PREFETCH": "true" if prefetch else "false"}
        server = gateway_server(cpu=cpus[0], redis_url=redis_server.url, env=env)
        server.start()
        try:
            before = await redis_commands(redis_server.url)
            async with SentCommands(redis_server.url) as sent:
                report = await run_scenario(
                    "photographer",
                    server.ws_url,
                    {
                        "jwt_secret": SECRET,
                        "connections": users,
                        "channels": users * CHANNELS_PER_USER,
                        "channels_per_user": CHANNELS_PER_USER,
                        "habit": HABIT,
                        "zipf_s": 0.0,  # own rounds: little sharing between users
                        "think_time_s": THINK_S,
                        "publish_probability": 0.05,
                        "max_requests": users * (switches + 1),
                        "duration_s": 600.0,
                        "seed": 7,
                    },
                )
            after = await redis_commands(redis_server.url)
            by_command = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
            assert server.admin_url is not None
            counts = await prefetch_counts(server.admin_url)
        finally:
            server.stop()
    doc = report.to_dict()
    ops = doc["operations"]
    switch, first = ops["switch"], ops.get("switch-first", {})
    count = int(switch["count"])
    joins, results = counts["joins"], counts["results"]
    landed = joins.get("prefetched", 0.0)
    return {
        "prefetch": prefetch,
        "switches": count,
        "first_visits": int(first.get("count", 0)),
        "landed_on_prefetched": round(landed / max(1, sum(joins.values())), 3) if joins else 0.0,
        "switch_p50_ms": switch["p50_ms"],
        "switch_p99_ms": switch["p99_ms"],
        "first_visit_p50_ms": first.get("p50_ms"),
        "first_visit_p99_ms": first.get("p99_ms"),
        "redis_commands_per_switch": round(sum(sent.counts.values()) / max(1, count), 2),
        "redis_commands_by_name_per_switch": {
            k: round(n / max(1, count), 3) for k, n in sorted(sent.counts.items())
        },
        "redis_commands_run_per_switch": round(sum(by_command.values()) / max(1, count), 2),
        "prefetch_joins_per_switch": round(results.get("fetched", 0.0) / max(1, count), 3),
        "errors": doc["errors"],
    }


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"prefetch": rows[0]["prefetch"], "runs": len(rows)}
    for key, value in rows[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [r[key] for r in rows if r[key] is not None]
            out[key] = round(statistics.median(values), 3) if values else None
    out["errors"] = [r["errors"] for r in rows]
    return out


async def run(users: int, switches: int, repeats: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for _ in range(repeats):
        for setting in (True, False):
            runs.append(await run_once(setting, users, switches))
    on = median_row([r for r in runs if r["prefetch"]])
    off = median_row([r for r in runs if not r["prefetch"]])
    ratios = {
        key: round(on[key] / off[key], 3)
        for key in ("switch_p50_ms", "switch_p99_ms", "first_visit_p50_ms", "first_visit_p99_ms")
        if on.get(key) and off.get(key)
    }
    extra = round(on["redis_commands_per_switch"] - off["redis_commands_per_switch"], 2)
    return {
        "setup": {
            "users": users,
            "switches_per_user": switches,
            "repeats": repeats,
            "habit": HABIT,
            "channels_per_user": CHANNELS_PER_USER,
            "linger_s": LINGER_S,
            "think_time_s": THINK_S,
            "prefetch_hold_s": HOLD_S,
        },
        "on": on,
        "off": off,
        "on_over_off": ratios,
        "extra_redis_commands_per_switch": extra,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--switches", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.users, args.switches, args.repeats))
    emit_figures(figures, args.json)


if __name__ == "__main__":
    main()
