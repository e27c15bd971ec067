"""`python -m wsfleet.bench --redis-cluster`: one Redis vs a Redis Cluster of 3 shards.

The same gateway (every feature on, auth off) on each Redis topology, measured in the
same run, alternately (A B, then B A):

- one Redis (`RedisServer`), and
- a Redis Cluster of 3 primaries (`RedisCluster`, no replicas: neither side pays for
  replication), the gateway with ``WSFLEET_REDIS_CLUSTER=true``.

Load (the load tool's `Engine`, one process): `channels` channels spread over the
cluster's shards, `subscribers` subscribers each (every connection subscribes to
several channels), and `publishers` connections publishing round robin over the
channels, `window` publishes in flight each, `messages` in all. Figures per run:

- publishes/s: acknowledged publishes / seconds from the first send to the last reply;
- deliveries/s: deliveries / seconds from the first send to the last delivery;
- Redis CPU per publish, per node: user + system CPU seconds of each ``redis-server``
  process over the run / the publishes its shard served (the channels of that shard),
  in microseconds; plus each primary's share of the publishes and of the CPU.

And once, on a cluster of 3 primaries with one replica each, the price of
``WSFLEET_PUBLISH_DURABILITY=replicas``: two gateways, one per durability, each sent
`latency_publishes` publishes one at a time (blocks of 50, alternating between the
gateways); publish round trip p50 / p99 (send to ``published``) of each.

The gateway (one Python process) is the bottleneck on this machine, not Redis: the
throughput figures say what one gateway does on either topology; the CPU figures show
where Redis's work goes (spread over the shards in the cluster).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wsfleet_gateway.backends.redis.slots import channel_slot

from wsfleet.bench.figures import bench_options
from wsfleet.gatewayproc import ServerProcess, cpu_seconds, gateway_process
from wsfleet.loadtest.engine import Engine
from wsfleet.services import RedisCluster, RedisServer, json_slots

SINGLE = "single"
CLUSTER = "cluster-3"
ENV = {
    "WSFLEET_AUTH": "disabled",
    "WSFLEET_MAX_CONNECTIONS": "50000",
    "WSFLEET_USER_CONNECTS_PER_MIN": "1000000",
}


@dataclass(frozen=True)
class ClusterBenchConfig:
    channels: int = 30
    subscribers: int = 10
    """Subscribers per channel."""
    channels_per_subscriber: int = 10
    publishers: int = 4
    window: int = 16
    messages: int = 12000
    runs: int = 3
    timeout_s: float = 120.0
    latency_publishes: int = 2000

    @classmethod
    def quick(cls) -> ClusterBenchConfig:
        return cls(messages=3000, runs=1, latency_publishes=200)


def shard_of(cluster: RedisCluster) -> dict[int, int]:
    """Slot → primary port."""
    owners: dict[int, int] = {}
    for row in json_slots(cluster.cli(cluster.nodes[0].port, "--json", "cluster", "slots")):
        for slot in range(int(row[0]), int(row[1]) + 1):
            owners[slot] = int(row[2][1])
    return owners


def spread_channels(owners: dict[int, int], count: int) -> list[str]:
    """`count` channels, dealt evenly over the primaries."""
    primaries = sorted(set(owners.values()))
    by_primary: dict[int, list[str]] = {p: [] for p in primaries}
    i = 0
    while min(len(v) for v in by_primary.values()) < -(-count // len(primaries)):
        name = f"bc-{i}"
        i += 1
        by_primary[owners[channel_slot(name)]].append(name)
    columns = list(by_primary.values())
    return [columns[k % len(columns)][k // len(columns)] for k in range(count)]


async def drive(url: str, channels: list[str], config: ClusterBenchConfig) -> dict[str, float]:
    """Subscribe, publish `messages` over the channels, wait for the deliveries."""
    engine = Engine(url, bench_options())
    try:
        per_sub = min(config.channels_per_subscriber, len(channels))
        connections = max(1, len(channels) * config.subscribers // per_sub)
        subs = await engine.open_many(connections)
        for n, conn in enumerate(subs):
            for k in range(per_sub):
                await engine.call(conn, "subscribe", channel=channels[(n + k) % len(channels)])
        pubs = [c for c in [await engine.open() for _ in range(config.publishers)] if c]
        per_channel: dict[str, int] = dict.fromkeys(channels, 0)
        counts = {ch: 0 for ch in channels}
        for n in range(len(subs)):
            for k in range(per_sub):
                counts[channels[(n + k) % len(channels)]] += 1
        stats = engine.stats
        base = stats.delivered
        started = time.perf_counter()
        acked = 0
        last_ack = started
        sent = 0

        async def lane(conn: Any) -> None:
            nonlocal acked, last_ack, sent
            in_flight: set[asyncio.Future[dict[str, object]]] = set()
            while sent < config.messages or in_flight:
                while sent < config.messages and len(in_flight) < config.window:
                    channel = channels[sent % len(channels)]
                    sent += 1
                    per_channel[channel] += 1
                    in_flight.add(conn.request("publish", {"channel": channel, "data": sent}))
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    reply = future.result() if not future.exception() else None
                    if isinstance(reply, dict) and reply.get("type") == "published":
                        acked += 1
                        last_ack = time.perf_counter()

        await asyncio.gather(*(lane(p) for p in pubs))
        expected = sum(per_channel[ch] * counts[ch] for ch in channels)
        deadline = time.perf_counter() + config.timeout_s
        while stats.delivered - base < expected and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        ended = time.perf_counter()
        delivered = stats.delivered - base
        return {
            "publishes": float(acked),
            "publishes_per_s": acked / (last_ack - started),
            "deliveries": float(delivered),
            "deliveries_per_s": delivered / (ended - started),
            "delivered_share": delivered / expected if expected else 0.0,
        }
    finally:
        await engine.close_all()


def _redis_pids(topology: RedisServer | RedisCluster) -> dict[str, int]:
    if isinstance(topology, RedisServer):
        assert topology.proc is not None
        return {f"{topology.port}": topology.proc.pid}
    return {str(n.port): n.proc.pid for n in topology.nodes if n.proc is not None}


async def measure(kind: str, config: ClusterBenchConfig, log: Any) -> dict[str, Any]:
    """One run of one topology."""
    topology: RedisServer | RedisCluster
    env = dict(ENV)
    if kind == CLUSTER:
        topology = await asyncio.to_thread(RedisCluster(primaries=3, replicas=0).start)
        owners = await asyncio.to_thread(shard_of, topology)
        env["WSFLEET_REDIS_CLUSTER"] = "true"
        primaries = {str(p) for p, _ in await asyncio.to_thread(topology.shards)}
    else:
        topology = await asyncio.to_thread(RedisServer().start)
        owners = dict.fromkeys(range(16384), topology.port)
        primaries = {str(topology.port)}
    gateway: ServerProcess | None = None
    try:
        channels = spread_channels(owners, config.channels)
        gateway = gateway_process(redis_url=topology.url, env=env)
        await asyncio.to_thread(gateway.start, 60.0)
        pids = _redis_pids(topology)
        before = {port: cpu_seconds(pid) for port, pid in pids.items()}
        log(f"  {kind}: {config.messages} publishes over {len(channels)} channels")
        figures = await drive(gateway.ws_url, channels, config)
        cpu = {port: cpu_seconds(pid) - before[port] for port, pid in pids.items()}
        per_shard = {p: 0 for p in primaries}
        for n in range(config.messages):
            per_shard[str(owners[channel_slot(channels[n % len(channels)])])] += 1
        total_cpu = sum(cpu[p] for p in primaries)
        shards = {
            port: {
                "publishes": per_shard[port],
                "publish_share": per_shard[port] / config.messages,
                "cpu_s": round(cpu[port], 4),
                "cpu_share": cpu[port] / total_cpu if total_cpu else 0.0,
                "cpu_us_per_publish": 1e6 * cpu[port] / per_shard[port] if per_shard[port] else 0.0,
            }
            for port in sorted(primaries)
        }
        return {
            **figures,
            "shards": shards,
            "primaries_cpu_us_per_publish": 1e6 * total_cpu / config.messages,
        }
    finally:
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(topology.stop)


async def durability_latency(config: ClusterBenchConfig, log: Any) -> dict[str, Any]:
    """Publish round trips with ``primary`` vs ``replicas`` durability (see the module)."""
    cluster = await asyncio.to_thread(RedisCluster(primaries=3, replicas=1).start)
    gateways: dict[str, ServerProcess] = {}
    engines: list[Engine] = []
    try:
        for durability in ("primary", "replicas"):
            env = {**ENV, "WSFLEET_REDIS_CLUSTER": "true"}
            env["WSFLEET_PUBLISH_DURABILITY"] = durability
            gateways[durability] = gateway_process(redis_url=cluster.url, env=env)
            await asyncio.to_thread(gateways[durability].start, 60.0)
        conns = {}
        for durability, gateway in gateways.items():
            engine = Engine(gateway.ws_url, bench_options())
            engines.append(engine)
            conns[durability] = await engine.open()
        log(f"  durability: {config.latency_publishes} publishes one at a time on each")
        samples: dict[str, list[float]] = {d: [] for d in gateways}
        channels = [f"lat-{i}" for i in range(30)]
        for block in range(max(1, config.latency_publishes // 50)):
            order = ("primary", "replicas") if block % 2 == 0 else ("replicas", "primary")
            for durability in order:
                conn = conns[durability]
                assert conn is not None
                for i in range(50):
                    started = time.perf_counter()
                    try:
                        reply = await conn.request(
                            "publish", {"channel": channels[i % len(channels)], "data": i}
                        )
                    except Exception:  # an error reply: not a sample
                        continue
                    if reply.get("type") == "published":
                        samples[durability].append(1000 * (time.perf_counter() - started))
        out: dict[str, Any] = {}
        for durability, values in samples.items():
            ordered = sorted(values)
            out[durability] = {
                "publishes": len(ordered),
                "p50_ms": ordered[len(ordered) // 2] if ordered else None,
                "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
                if ordered
                else None,
            }
        return out
    finally:
        for engine in engines:
            await engine.close_all()
        for gateway in gateways.values():
            await asyncio.to_thread(gateway.stop)
        await asyncio.to_thread(cluster.stop)


async def run_cluster_bench(config: ClusterBenchConfig, log: Any) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for n in range(config.runs):
        order = (SINGLE, CLUSTER) if n % 2 == 0 else (CLUSTER, SINGLE)
        log(f"run {n + 1}/{config.runs}: {' then '.join(order)}")
        runs.append({kind: await measure(kind, config, log) for kind in order})
    latency = await durability_latency(config, log)
    return {
        "config": asdict(config),
        "runs": runs,
        "summary": summarise(runs),
        "durability": latency,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(kind: str, key: str) -> float:
        return statistics.median(float(r[kind][key]) for r in runs)

    out: dict[str, Any] = {}
    for kind in (SINGLE, CLUSTER):
        out[kind] = {
            key: med(kind, key)
            for key in (
                "publishes_per_s",
                "deliveries_per_s",
                "delivered_share",
                "primaries_cpu_us_per_publish",
            )
        }
        shares = [sorted(s["cpu_share"] for s in r[kind]["shards"].values()) for r in runs]
        out[kind]["cpu_share_per_primary"] = [
            statistics.median(s[i] for s in shares) for i in range(len(shares[0]))
        ]
        per_pub = [
            sorted(s["cpu_us_per_publish"] for s in r[kind]["shards"].values()) for r in runs
        ]
        out[kind]["cpu_us_per_publish_per_primary"] = [
            statistics.median(s[i] for s in per_pub) for i in range(len(per_pub[0]))
        ]
    out["ratios"] = {
        f"{key} cluster/single": [
            round(float(r[CLUSTER][key]) / float(r[SINGLE][key]), 3) for r in runs
        ]
        for key in ("publishes_per_s", "deliveries_per_s", "primaries_cpu_us_per_publish")
    }
    return out


def to_markdown(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    c = doc["config"]
    lines = [
        f"# Redis Cluster bench ({doc['provenance'].get('date', '')})",
        "",
        f"One gateway (features on, auth off); {c['channels']} channels dealt evenly over the",
        f"shards, {c['subscribers']} subscribers each; {c['publishers']} publishers x"
        f" {c['window']} in flight, {c['messages']} publishes; median of {c['runs']} runs,"
        " topologies alternated.",
        "",
        "| figure | one Redis | cluster, 3 shards | cluster / one (per run) |",
        "| --- | ---: | ---: | --- |",
    ]
    for key, label in (
        ("publishes_per_s", "publishes/s"),
        ("deliveries_per_s", "deliveries/s"),
        ("primaries_cpu_us_per_publish", "Redis CPU per publish, all primaries (µs)"),
    ):
        ratios = s["ratios"].get(f"{key} cluster/single", [])
        lines.append(f"| {label} | {s[SINGLE][key]:,.1f} | {s[CLUSTER][key]:,.1f} | {ratios} |")
    d = doc.get("durability", {})
    lines += [
        "",
        "Publish round trip, one at a time, on a cluster of 3 primaries with a replica each:",
        "",
        "| WSFLEET_PUBLISH_DURABILITY | publishes | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for durability in ("primary", "replicas"):
        row = d.get(durability)
        if row and row.get("p50_ms") is not None:
            lines.append(
                f"| {durability} | {row['publishes']} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} |"
            )
    lines += [
        "",
        "Per primary of the cluster (median over runs, sorted): share of Redis CPU"
        f" {[round(x, 3) for x in s[CLUSTER]['cpu_share_per_primary']]};"
        " CPU per publish it served (µs)"
        f" {[round(x, 1) for x in s[CLUSTER]['cpu_us_per_publish_per_primary']]}"
        f" (one Redis: {[round(x, 1) for x in s[SINGLE]['cpu_us_per_publish_per_primary']]}).",
        "",
        "Per run and shard: see the JSON (`runs`).",
    ]
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any], out_dir: Path, name: str | None) -> list[Path]:
    stem = name or dt.date.today().isoformat() + "-cluster"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(doc, indent=2) + "\n")
    paths[1].write_text(to_markdown(doc))
    return paths
