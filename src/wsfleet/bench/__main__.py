"""`python -m wsfleet.bench [--quick]`: run the benchmark suite, write bench/results/."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path

from wsfleet.bench.peers import PEER_KINDS
from wsfleet.bench.results import summarise, to_markdown, write_results
from wsfleet.bench.suite import KINDS, SuiteConfig, run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wsfleet.bench",
        description="Run wsfleet's benchmark suite (server pinned to one CPU, load on another) "
        "and write bench/results/<date>.json and .md.",
    )
    parser.add_argument("--quick", action="store_true", help="< 1 minute smoke, one run")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instead of the suite: instructions per operation under callgrind, features "
        "on vs off (about 15 minutes; writes <date>-instructions.json and .md)",
    )
    parser.add_argument(
        "--forecast",
        action="store_true",
        help="instead of the suite: the forecaster's fit time on 90 days of 5-minute data"
        " (writes <date>-forecast.json and .md)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="instead of the suite: one gateway on one Redis vs on a Redis Cluster of 3"
        " shards: publishes/s, deliveries/s, Redis CPU per publish per shard (writes"
        " <date>-cluster.json and .md)",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="results dir")
    parser.add_argument("--name", default=None, help="file stem (default: the date)")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="comma-separated server kinds to measure (default: all three)",
    )
    parser.add_argument(
        "--peers",
        default=None,
        help="comma-separated Node peers to measure beside the gateway (default: all of "
        "socketio-redis,socketio,node-ws; empty: none). They need node and npm",
    )
    args = parser.parse_args(argv)
    if args.instructions:
        return count_instructions(args.out, args.name, tiny=args.tiny)
    if args.redis_cluster:
        return cluster_bench(args.out, args.name, args.runs, quick=args.quick)
    if args.forecast:
        return forecast_fit(args.out, args.name, runs=args.runs or 5)
    config = (
        SuiteConfig.tiny() if args.tiny else SuiteConfig.quick() if args.quick else SuiteConfig()
    )
    if args.runs is not None:
        config = dataclasses.replace(config, runs=max(1, args.runs))
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {KINDS}")
    config = dataclasses.replace(config, kinds=kinds)
    if args.peers is not None:
        peers = tuple(k for k in args.peers.split(",") if k)
        if set(peers) - set(PEER_KINDS):
            parser.error(f"unknown peers {sorted(set(peers) - set(PEER_KINDS))}")
        config = dataclasses.replace(config, peers=peers)

    import uvloop

    raw = uvloop.run(run_suite(config))
    doc = summarise(raw, config, quick=args.quick or args.tiny)
    paths = write_results(doc, args.out, args.name)
    print(to_markdown(doc))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    failed = [p for p in doc["problems"] if ": suite:" in p or ": crosspod:" in p]
    if failed:
        print("servers failed to be measured:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    return 0


def count_instructions(out_dir: Path, name: str | None, tiny: bool = False) -> int:
    """`--instructions`: see `wsfleet.bench.instructions`."""
    import uvloop

    from wsfleet.bench import instructions
    from wsfleet.bench.results import provenance
    from wsfleet.bench.suite import gateway_env, secret_for, start_redis

    reason = instructions.unavailable()
    if reason is not None:
        print(f"cannot count instructions: {reason}", file=sys.stderr)
        return 2
    sizes = instructions.Sizes(30, 10, 3, 10) if tiny else instructions.Sizes()

    async def run() -> dict[str, object]:
        redis = await asyncio.to_thread(start_redis, None)
        try:
            return await instructions.measure(
                redis.url,
                gateway_env,
                secret_for,
                sizes,
                log=lambda line: print(line, file=sys.stderr),
            )
        finally:
            await asyncio.to_thread(redis.stop)

    made = provenance()
    doc = {"provenance": made, **uvloop.run(run())}
    stem = name or dt.date.today().isoformat() + "-instructions"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    markdown = instructions.to_markdown(doc)
    dirty = " (uncommitted changes)" if made["dirty"] else ""
    (out_dir / f"{stem}.md").write_text(f"Commit `{made['commit']}`{dirty}.\n\n{markdown}")
    print(markdown)
    return 0


def cluster_bench(out_dir: Path, name: str | None, runs: int | None, quick: bool) -> int:
    """`--redis-cluster`: see `wsfleet.bench.cluster`."""
    import uvloop

    from wsfleet.bench import cluster
    from wsfleet.bench.results import provenance

    config = cluster.ClusterBenchConfig.quick() if quick else cluster.ClusterBenchConfig()
    if runs is not None:
        config = dataclasses.replace(config, runs=max(1, runs))
    made = {**provenance(), "date": dt.date.today().isoformat()}
    result = uvloop.run(
        cluster.run_cluster_bench(config, lambda line: print(line, file=sys.stderr))
    )
    doc = {"provenance": made, **result}
    for path in cluster.write(doc, out_dir, name):
        print(f"wrote {path}", file=sys.stderr)
    print(cluster.to_markdown(doc))
    return 0


def forecast_fit(out_dir: Path, name: str | None, runs: int) -> int:
    """`--forecast`: see `wsfleet.bench.forecast`."""
    from wsfleet.bench import forecast
    from wsfleet.bench.results import provenance

    doc = {"provenance": provenance(), **forecast.measure(runs=runs)}
    stem = name or dt.date.today().isoformat() + "-forecast"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    markdown = forecast.to_markdown(doc)
    (out_dir / f"{stem}.md").write_text(f"Commit `{doc['provenance']['commit']}`.\n\n{markdown}")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
