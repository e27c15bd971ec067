"""What presence costs a switch (issue 22): switch p50/p99 with presence on and off.

    python -m wsfleet.bench.presence [--clients 20] [--switches 200] [--json out.json]

One Redis and one gateway process (pinned to the first CPU; the clients run here, on
the second), started twice: ``WSFLEET_PRESENCE=true`` then ``false``. Each client
plays a photographer: it cycles through its own 12 wedding channels (after the first
round every switch is to a channel the gateway holds: the common switch) and, in a
second phase, switches to channels never visited (a first visit: the history read and,
with presence, the member's write in the same Redis batch). Reported per phase and
setting: switch latency p50/p99 in ms as the client sees it (request to reply), and
the Redis commands per switch (``INFO commandstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

from wsfleet.bench.probes import percentile
from wsfleet.bench.redis_counts import redis_commands
from wsfleet.bench.results import emit_figures
from wsfleet.bench.servers import gateway_server, usable_cpus
from wsfleet.client import Client
from wsfleet.services import RedisServer

HELD_CHANNELS = 12
ENV = {
    "WSFLEET_AUTH": "disabled",
    "WSFLEET_LOG_LEVEL": "info",
    "WSFLEET_USER_CONNECTS_PER_MIN": "100000",  # every client comes from one address
}


async def _phase(
    clients: list[Client], routes: list[list[str]], redis_url: str
) -> dict[str, float]:
    """Every client walks its route (switch by switch); latencies of all switches."""
    before = sum((await redis_commands(redis_url)).values())
    samples: list[float] = []

    async def walk(client: Client, route: list[str]) -> None:
        for previous, following in itertools.pairwise(route):
            started = time.perf_counter()
            await client.switch(previous, following)
            samples.append(time.perf_counter() - started)

    await asyncio.gather(*(walk(c, r) for c, r in zip(clients, routes, strict=True)))
    spent = sum((await redis_commands(redis_url)).values()) - before
    return {
        "switches": len(samples),
        "p50_ms": round(percentile(samples, 0.50) * 1000, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1000, 3),
        "redis_commands_per_switch": round(spent / max(1, len(samples)), 2),
    }


async def _run_one(presence: bool, clients_n: int, switches: int) -> dict[str, Any]:
    cpus = usable_cpus()
    with RedisServer() as redis_server:
        env = {**ENV, "WSFLEET_PRESENCE": "true" if presence else "false"}
        server = gateway_server(cpu=cpus[0], redis_url=redis_server.url, env=env)
        server.start()
        clients: list[Client] = []
        try:
            for _ in range(clients_n):
                clients.append(await Client.connect(server.ws_url, timeout_s=30.0))
            held: list[list[str]] = []
            for i, client in enumerate(clients):
                own = [f"wedding-{i}-{k}" for k in range(HELD_CHANNELS)]
                await client.subscribe(own[0])
                for previous, following in itertools.pairwise(own):  # warm them
                    await client.switch(previous, following)
                route = [own[-1], *(own[k % HELD_CHANNELS] for k in range(switches))]
                held.append(route)
            held_phase = await _phase(clients, held, redis_server.url)
            fresh = [
                [route[-1], *(f"first-{i}-{k}" for k in range(switches))]
                for i, route in enumerate(held)
            ]
            first_phase = await _phase(clients, fresh, redis_server.url)
        finally:
            for client in clients:
                await client.close()
            server.stop()
    return {"presence": presence, "held_switch": held_phase, "first_visit": first_phase}


async def run(clients_n: int, switches: int) -> list[dict[str, Any]]:
    return [await _run_one(on, clients_n, switches) for on in (True, False)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--switches", type=int, default=200)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.clients, args.switches))
    emit_figures(figures, args.json)


if __name__ == "__main__":
    main()
